//! Problems with the keys of a table: serde's messages turned into ours (the key named, a
//! "did you mean", no secret values), and every bad key of a table reported, not only the
//! first.
//!
//! serde stops at the first key that does not fit, so [`read_every_key`] reads a table
//! again after taking that key out, until it reads or nothing is left to take out. serde
//! reports a missing key only once it has read all the others, so a table that misses a key
//! hides nothing else in it.

use serde_json::Value as Tree;

use crate::config::source::{Segment, parse_path};

/// A problem at a key path of a component, as (path, message) for `Config::problem_at`.
pub type KeyProblem = (String, String);

/// Reads `table` (found at `at` in its component: `""`, or `steps[2]`) with `read`, and
/// reports every key of it that does not fit. `read` returns its error as (key path within
/// `table`, serde message); the problems found come back with paths within the component.
/// `component_keys` are keys taken out of `table` before `read` sees it (`kind`, `inputs`),
/// which an unknown key at the top is compared with too.
///
/// # Errors
///
/// Every problem found, when `table` does not read.
pub fn read_every_key<T>(
    table: &Tree,
    at: &str,
    component_keys: &[&str],
    mut read: impl FnMut(Tree) -> Result<T, KeyProblem>,
) -> Result<T, Vec<KeyProblem>> {
    let mut table = table.clone();
    let mut problems = Vec::new();
    // Keys already reported, taken out, or offered as a "did you mean": a later "missing
    // field" for one of them tells the user nothing new.
    let mut accounted: Vec<String> = Vec::new();
    loop {
        let (path, message) = match read(table.clone()) {
            Ok(value) if problems.is_empty() => return Ok(value),
            Ok(_) => return Err(problems),
            Err(error) => error,
        };
        let path = if path == "." { String::new() } else { path };
        let described = describe(at, &path, &message, component_keys);
        let culprit = match between(&message, "missing field `", "`") {
            Some(field) => {
                if !accounted.contains(&join(at, &join(&path, field))) {
                    problems.push((described.path, described.message));
                }
                // Only the table that misses a key is left to take out.
                path
            }
            None => {
                accounted.extend(described.meant);
                problems.push((described.path, described.message));
                described.relative_path
            }
        };
        if !take_out(&mut table, &culprit) {
            return Err(problems);
        }
        accounted.push(join(at, &culprit));
    }
}

/// Takes the key at `path` out of `table`; a list element is taken out with its whole list,
/// so the indices of the elements left do not change. False when there is no such key.
fn take_out(table: &mut Tree, path: &str) -> bool {
    let mut segments = parse_path(path);
    while matches!(segments.last(), Some(Segment::Index(_))) {
        segments.pop();
    }
    let Some(Segment::Key(key)) = segments.pop() else {
        return false;
    };
    let mut parent = table;
    for segment in &segments {
        let child = match segment {
            Segment::Key(name) => parent.get_mut(name.as_str()),
            Segment::Index(index) => parent.get_mut(*index),
        };
        let Some(child) = child else { return false };
        parent = child;
    }
    parent
        .as_object_mut()
        .is_some_and(|object| object.remove(&key).is_some())
}

/// `parent.key`, or `key` at the top.
fn join(parent: &str, key: &str) -> String {
    match (parent.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (_, true) => parent.to_owned(),
        _ => format!("{parent}.{key}"),
    }
}

/// A serde error made ours.
struct Described {
    /// The key at fault, within the component.
    path: String,
    /// The same within the table read.
    relative_path: String,
    message: String,
    /// For an unknown key, the known key it is likely a typo of, within the component.
    meant: Option<String>,
}

fn describe(at: &str, path: &str, message: &str, component_keys: &[&str]) -> Described {
    let path = if path == "." { "" } else { path };
    let Some(unknown) = between(message, "unknown field `", "`") else {
        let message = message.split(" at line ").next().unwrap_or(message);
        let message = without_values(message);
        let full_path = join(at, path);
        // Name the key: "invalid value: integer, expected u64" alone does not say where.
        let message = if full_path.is_empty() {
            message
        } else {
            format!("`{full_path}`: {message}")
        };
        return Described {
            path: full_path,
            relative_path: path.to_owned(),
            message,
            meant: None,
        };
    };
    let mut expected: Vec<&str> = message
        .split_once("expected")
        .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default();
    // serde_path_to_error may end the path with the unknown key itself.
    let parent = match path.strip_suffix(unknown) {
        Some("") => "",
        Some(parent) => parent.strip_suffix('.').unwrap_or(path),
        None => path,
    };
    if parent.is_empty() {
        for key in component_keys {
            if !expected.contains(key) {
                expected.push(key);
            }
        }
    }
    let relative_path = join(parent, unknown);
    Described {
        path: join(at, &relative_path),
        relative_path,
        message: unknown_key_message(unknown, &expected),
        meant: closest(unknown, &expected).map(|meant| join(at, &join(parent, meant))),
    }
}

/// serde quotes the offending value ("invalid type: string \"hunter2\", expected u16"); a
/// config value may be a secret, so the message keeps its type and drops its text.
fn without_values(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.split_once(", expected")
        {
            let kind = found.split([' ', '`', '"']).next().unwrap_or(found);
            return format!("{prefix}{kind}, expected{expected}");
        }
    }
    message.to_owned()
}

/// "unknown key `adress` (did you mean `address`?); expected one of ..."
pub fn unknown_key_message(unknown: &str, expected: &[&str]) -> String {
    let mut message = format!("unknown key `{unknown}`");
    if let Some(suggestion) = closest(unknown, expected) {
        message.push_str(&format!(" (did you mean `{suggestion}`?)"));
    }
    if !expected.is_empty() {
        message.push_str(&format!("; expected one of: {}", expected.join(", ")));
    }
    message
}

/// The candidate closest to `word`, if any is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|candidate| (strsim::jaro_winkler(word, candidate), *candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let length = text[from..].find(end)?;
    Some(&text[from..from + length])
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[test]
    fn serde_messages_keep_the_type_but_not_the_value() {
        let described = describe(
            "",
            "headers.authorization",
            "invalid type: string \"hunter2\", expected u16",
            &[],
        );
        assert_eq!(
            described.message,
            "`headers.authorization`: invalid type: string, expected u16"
        );
        let described = describe(
            "",
            "port",
            "invalid value: integer `99999`, expected u16",
            &[],
        );
        assert_eq!(
            described.message,
            "`port`: invalid value: integer, expected u16"
        );
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only read to find problems")]
    struct Settings {
        path: String,
        #[serde(default)]
        count: u64,
        #[serde(default)]
        nested: Vec<Nested>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only read to find problems")]
    struct Nested {
        kind: String,
    }

    fn check(table: serde_json::Value, expected: &[(&str, &str)]) {
        let problems = read_every_key(&table, "", &[], |tree| {
            serde_path_to_error::deserialize::<_, Settings>(tree)
                .map(drop)
                .map_err(|error| (error.path().to_string(), error.inner().to_string()))
        })
        .expect_err("problems");
        let mut paths: Vec<(&str, &str)> = problems
            .iter()
            .map(|(path, message)| (path.as_str(), message.as_str()))
            .collect();
        // Found in the order serde reads keys; reported in file order, so either will do.
        paths.sort();
        assert_eq!(paths, expected);
    }

    #[test]
    fn every_unknown_key_is_reported_and_a_meant_key_is_not_missing_too() {
        check(
            serde_json::json!({"pth": "x", "cuont": 1, "nested": [{"kind": "a", "knd": "b"}]}),
            &[
                (
                    "cuont",
                    "unknown key `cuont` (did you mean `count`?); expected one of: path, count, nested",
                ),
                (
                    "nested[0].knd",
                    "unknown key `knd` (did you mean `kind`?); expected one of: kind",
                ),
                (
                    "pth",
                    "unknown key `pth` (did you mean `path`?); expected one of: path, count, nested",
                ),
            ],
        );
    }

    #[test]
    fn a_bad_value_is_reported_and_the_keys_after_it_still_read() {
        check(
            serde_json::json!({"count": -5, "nested": [{"kind": 1}], "path": 2}),
            &[
                ("count", "`count`: invalid value: integer, expected u64"),
                (
                    "nested[0].kind",
                    "`nested[0].kind`: invalid type: integer, expected a string",
                ),
                ("path", "`path`: invalid type: integer, expected a string"),
            ],
        );
    }

    #[test]
    fn a_key_missing_from_the_start_is_reported() {
        check(
            serde_json::json!({"count": 1}),
            &[("", "missing field `path`")],
        );
    }
}
