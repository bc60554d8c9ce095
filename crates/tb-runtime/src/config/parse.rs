//! Parsing a config file into a tree of values and the place of every key in it.
//!
//! TOML is read by the `toml` crate's span-keeping parser (`DeTable`), YAML (and JSON, which
//! YAML contains) by `serde-saphyr` with a `Spanned` around every node. Both reject a key
//! written twice in one table, which is reported as a problem naming the key. Values become
//! a `serde_json::Value` tree, which the rest of the loader reads; places go into the
//! file's [`Places`].

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Tree;
use serde_saphyr::{Location, MessageFormatter, Spanned, UserMessageFormatter};

use super::problem::Problem;
use super::source::{Format, Place, Places, Segment, SourceFile};

/// Parses `file`'s text into a tree of values, filling in `file.places`.
///
/// # Errors
///
/// A syntax error or a duplicate key, at its place in the file.
pub(super) fn parse(file: &mut SourceFile) -> Result<Tree, Problem> {
    let mut places = Places::new();
    let tree = match file.format {
        Format::Toml => parse_toml(file, &mut places)?,
        Format::Yaml => parse_yaml(file, &mut places)?,
    };
    file.places = places;
    Ok(tree)
}

fn problem_at(file: &SourceFile, offset: usize, message: String) -> Problem {
    let (line, column) = file.line_column(offset);
    Problem {
        file: file.path.clone(),
        line,
        column,
        message,
    }
}

fn parse_toml(file: &SourceFile, places: &mut Places) -> Result<Tree, Problem> {
    let toml_problem = |error: toml::de::Error| {
        let span = error.span().unwrap_or(0..0);
        let message = match error.message().trim() {
            "duplicate key" => {
                let key = file.text.get(span.clone()).unwrap_or_default();
                format!("duplicate key `{}`", key.trim_matches(['"', '\'']))
            }
            other => format!("invalid TOML: {other}"),
        };
        problem_at(file, span.start, message)
    };
    let root = toml::de::DeTable::parse(&file.text).map_err(toml_problem)?;
    record_toml_table(root.get_ref(), &mut Vec::new(), places);
    Tree::deserialize(toml::de::Deserializer::from(root)).map_err(toml_problem)
}

fn record_toml_table(table: &toml::de::DeTable<'_>, path: &mut Vec<Segment>, places: &mut Places) {
    for (key, value) in table {
        path.push(Segment::Key(key.get_ref().to_string()));
        places.insert(
            path.clone(),
            Place {
                key_start: key.span().start,
                key_end: key.span().end,
                value_start: value.span().start,
            },
        );
        record_toml_value(value, path, places);
        path.pop();
    }
}

fn record_toml_value(
    value: &toml::Spanned<toml::de::DeValue<'_>>,
    path: &mut Vec<Segment>,
    places: &mut Places,
) {
    match value.get_ref() {
        toml::de::DeValue::Table(table) => record_toml_table(table, path, places),
        toml::de::DeValue::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                path.push(Segment::Index(index));
                places.insert(path.clone(), Place::element(item.span().start));
                record_toml_value(item, path, places);
                path.pop();
            }
        }
        _ => {}
    }
}

fn parse_yaml(file: &SourceFile, places: &mut Places) -> Result<Tree, Problem> {
    // YAML 1.2 booleans: `on`, `yes` and `n` stay strings, as the spec and serde_yaml had it.
    let options = serde_saphyr::options! { strict_booleans: true };
    let root: YamlNode =
        serde_saphyr::from_str_with_options(&file.text, options).map_err(|error| {
            let error = error.without_snippet();
            let offset = error
                .location()
                .map_or(0, |location| byte_offset(&file.text, location));
            let message = match error {
                serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } => {
                    format!("duplicate key `{key}`")
                }
                other => format!(
                    "invalid YAML: {}",
                    UserMessageFormatter.format_message(other)
                ),
            };
            problem_at(file, offset, message)
        })?;
    Ok(match root.into_tree(&file.text, &mut Vec::new(), places) {
        // An empty file (or one of comments only) configures nothing.
        Tree::Null => Tree::Object(Default::default()),
        tree => tree,
    })
}

/// The byte offset of a YAML location: serde-saphyr gives it for text read from a string;
/// otherwise it is counted from the line and column.
fn byte_offset(text: &str, location: Location) -> usize {
    if let Some(offset) = location.span().byte_offset() {
        return usize::try_from(offset)
            .unwrap_or(text.len())
            .min(text.len());
    }
    let line = usize::try_from(location.line()).unwrap_or(0);
    let column = usize::try_from(location.column()).unwrap_or(0);
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let within: usize = text[line_start..]
        .chars()
        .take(column.saturating_sub(1))
        .map(char::len_utf8)
        .sum();
    line_start + within
}

/// A YAML node and its place, with the places of everything under it.
struct YamlNode(Spanned<YamlValue>);

enum YamlValue {
    Scalar(Tree),
    Sequence(Vec<YamlNode>),
    Mapping(Vec<(Spanned<String>, YamlNode)>),
}

impl YamlNode {
    fn start(&self, text: &str) -> usize {
        byte_offset(text, self.0.referenced)
    }

    /// The node as a value tree, recording the place of each key and element in `places`.
    fn into_tree(self, text: &str, path: &mut Vec<Segment>, places: &mut Places) -> Tree {
        match self.0.value {
            YamlValue::Scalar(tree) => tree,
            YamlValue::Sequence(items) => Tree::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(index, item)| {
                        path.push(Segment::Index(index));
                        places.insert(path.clone(), Place::element(item.start(text)));
                        let tree = item.into_tree(text, path, places);
                        path.pop();
                        tree
                    })
                    .collect(),
            ),
            YamlValue::Mapping(entries) => {
                let mut map = serde_json::Map::new();
                for (key, value) in entries {
                    let key_start = byte_offset(text, key.referenced);
                    let key_length = key.referenced.span().byte_len().unwrap_or(0);
                    path.push(Segment::Key(key.value.clone()));
                    places.insert(
                        path.clone(),
                        Place {
                            key_start,
                            key_end: key_start + usize::try_from(key_length).unwrap_or(0),
                            value_start: value.start(text),
                        },
                    );
                    let tree = value.into_tree(text, path, places);
                    path.pop();
                    map.insert(key.value, tree);
                }
                Tree::Object(map)
            }
        }
    }
}

impl<'de> Deserialize<'de> for YamlNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Spanned::deserialize(deserializer).map(Self)
    }
}

impl<'de> Deserialize<'de> for YamlValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(YamlValueVisitor)
    }
}

struct YamlValueVisitor;

impl<'de> Visitor<'de> for YamlValueVisitor {
    type Value = YamlValue;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a YAML value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<YamlValue, E> {
        Ok(YamlValue::Scalar(value.into()))
    }

    fn visit_i64<E>(self, value: i64) -> Result<YamlValue, E> {
        Ok(YamlValue::Scalar(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<YamlValue, E> {
        Ok(YamlValue::Scalar(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<YamlValue, E> {
        Ok(YamlValue::Scalar(value.into()))
    }

    fn visit_str<E>(self, value: &str) -> Result<YamlValue, E> {
        Ok(YamlValue::Scalar(value.into()))
    }

    fn visit_string<E>(self, value: String) -> Result<YamlValue, E> {
        Ok(YamlValue::Scalar(value.into()))
    }

    fn visit_unit<E>(self) -> Result<YamlValue, E> {
        Ok(YamlValue::Scalar(Tree::Null))
    }

    fn visit_none<E>(self) -> Result<YamlValue, E> {
        Ok(YamlValue::Scalar(Tree::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<YamlValue, D::Error> {
        YamlValue::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut sequence: A) -> Result<YamlValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = sequence.next_element()? {
            items.push(item);
        }
        Ok(YamlValue::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<YamlValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(YamlValue::Mapping(entries))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::source::parse_path;

    /// A file named `name`, read as TOML or YAML by its extension.
    fn source(name: &str, text: &str) -> SourceFile {
        let format = if name.ends_with(".toml") {
            Format::Toml
        } else {
            Format::Yaml
        };
        SourceFile::new(PathBuf::from(name), text.to_owned(), format)
    }

    fn parsed(name: &str, text: &str) -> SourceFile {
        let mut file = source(name, text);
        parse(&mut file).expect("valid");
        file
    }

    /// (line, column) of the key at `path`.
    fn place(file: &SourceFile, path: &str) -> (usize, usize) {
        file.line_column(file.locate(&parse_path(path)))
    }

    fn check_place(name: &str, text: &str, path: &str, expected: (usize, usize)) {
        assert_eq!(place(&parsed(name, text), path), expected, "{path}");
    }

    fn problem(name: &str, text: &str) -> String {
        parse(&mut source(name, text))
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn locates_key_inside_dotted_table_header() {
        let file = parsed(
            "t.toml",
            "[connectors.web]\nkind = \"http_server\"\nadress = \"x\"\n",
        );
        assert_eq!(place(&file, "connectors.web.adress"), (3, 1));
        assert_eq!(place(&file, "connectors.web"), (1, 13));
    }

    #[test]
    fn nested_tables_and_strings_do_not_count_as_elements() {
        check_place(
            "t.toml",
            "[pipelines.p]\nsteps = [\n  { kind = \"route\", routes = { a = '{x}' } },\n  { kind = \"partition\", key = \".a\" },\n  { kind = \"partition\", key = \".b\" },\n]\n",
            "pipelines.p.steps[2].key",
            (5, 25),
        );
    }

    #[test]
    fn locates_key_in_nth_inline_table_and_its_string() {
        let file = parsed(
            "t.toml",
            "[pipelines.p]\nsteps = [\n  { kind = \"filter\", condition = 'a' },\n  { kind = \"transform\", source = '.x = 1' },\n]\n",
        );
        let path = parse_path("pipelines.p.steps[1].source");
        assert_eq!(file.line_column(file.locate(&path)), (4, 25));
        let start = file.offset_in_string(&path, 0).expect("value");
        assert_eq!(&file.text[start..start + 6], ".x = 1");
    }

    #[test]
    fn quoted_input_reference_is_not_taken_for_a_table_key() {
        check_place(
            "t.toml",
            "[connectors.sink]\ninputs = [\"web\"]\n\n[connectors.web]\naddress = \"bad\"\n",
            "connectors.web.address",
            (5, 1),
        );
    }

    #[test]
    fn a_missing_key_is_placed_at_its_own_component_not_a_later_one() {
        // A text search would have found `codec` in the second connector.
        check_place(
            "t.toml",
            "[connectors.a]\nkind = \"stdin\"\n\n[connectors.b]\nkind = \"stdout\"\ncodec = \"json\"\n",
            "connectors.a.codec",
            (1, 13),
        );
    }

    #[test]
    fn array_of_tables_elements_have_places() {
        check_place(
            "t.toml",
            "[connectors.in]\nkind = \"stdin\"\n\n[[connectors.in.interceptors]]\nkind = \"lines\"\n\n[[connectors.in.interceptors]]\nkind = \"gzip\"\n",
            "connectors.in.interceptors[1].kind",
            (8, 1),
        );
    }

    #[test]
    fn yaml_keys_elements_and_aliases_have_places() {
        let file = parsed(
            "c.yaml",
            "connectors:\n  in:\n    kind: stdin\n    interceptors:\n      - kind: lines\n      - kind: gzip\n  other: &same\n    kind: stdout\n  again: *same\n",
        );
        assert_eq!(place(&file, "connectors.in.kind"), (3, 5));
        assert_eq!(place(&file, "connectors.in.interceptors[1]"), (6, 9));
        assert_eq!(place(&file, "connectors.in.interceptors[1].kind"), (6, 9));
        assert_eq!(place(&file, "connectors.again"), (9, 3));
    }

    #[test]
    fn offsets_walk_over_escapes_and_block_indentation() {
        // Parsed: say("hi") + nope()  -> `nope` at parsed byte 12.
        let file = parsed("t.toml", r#"source = "say(\"hi\") + nope()""#);
        let raw = file
            .offset_in_string(&parse_path("source"), 12)
            .expect("offset");
        assert_eq!(&file.text[raw..raw + 4], "nope");
        // Parsed: ".a = 1\n.b = nope()\n" -> `nope` at parsed byte 12.
        let yaml = parsed("c.yaml", "source: |\n  .a = 1\n  .b = nope()\n");
        let raw = yaml
            .offset_in_string(&parse_path("source"), 12)
            .expect("offset");
        assert_eq!(&yaml.text[raw..raw + 4], "nope");
        // Parsed: it's nope() -> `nope` at parsed byte 5.
        let yaml = parsed("c.yaml", "source: 'it''s nope()'\n");
        let raw = yaml
            .offset_in_string(&parse_path("source"), 5)
            .expect("offset");
        assert_eq!(&yaml.text[raw..raw + 4], "nope");
    }

    #[test]
    fn yaml_reads_booleans_as_yaml_1_2_does() {
        let tree = parse(&mut source("c.yaml", "a: on\nb: yes\nc: true\n")).expect("valid");
        assert_eq!(tree, serde_json::json!({"a": "on", "b": "yes", "c": true}));
    }

    #[test]
    fn json_with_tabs_is_read_as_yaml() {
        let mut file = source(
            "c.json",
            "{\n\t\"connectors\": {\n\t\t\"gen\": {\"kind\": \"generator\", \"count\": 3}\n\t}\n}\n",
        );
        let tree = parse(&mut file).expect("valid");
        assert_eq!(tree["connectors"]["gen"]["count"], 3);
        assert_eq!(place(&file, "connectors.gen.count"), (3, 32));
    }

    /// Issue 7: a key written twice was accepted in YAML, the last one silently winning.
    #[test]
    fn duplicate_keys_are_problems_naming_the_key() {
        assert_eq!(
            problem(
                "config.yaml",
                "connectors:\n  web:\n    kind: http_server\n    address: x\n    kind: file\n"
            ),
            "config.yaml:5:5: duplicate key `kind`"
        );
        assert_eq!(
            problem(
                "config.json",
                "{\"connectors\": {\"a\": {\"kind\": \"stdin\", \"kind\": \"stdout\"}}}"
            ),
            "config.json:1:40: duplicate key `kind`"
        );
        assert_eq!(
            problem(
                "config.toml",
                "[connectors.web]\nkind = \"http_server\"\nkind = \"file\"\n"
            ),
            "config.toml:3:1: duplicate key `kind`"
        );
        assert_eq!(
            problem(
                "config.toml",
                "[connectors.web]\nkind = \"stdin\"\n\n[connectors.web]\nkind = \"stdout\"\n"
            ),
            "config.toml:4:13: duplicate key `web`"
        );
    }

    #[test]
    fn yaml_syntax_error_has_line_and_column() {
        let message = problem("s.yaml", "a:\n  b: [1, 2\nc: d\n");
        assert!(message.starts_with("s.yaml:3:"), "{message}");
        assert!(message.contains("invalid YAML"), "{message}");
    }
}
