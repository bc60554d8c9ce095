//! The config model: top-level settings and one [`ComponentSpec`] per connector or pipeline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value as Tree;
use tb_pipeline::PipelineConfig;

use super::interpolate::interpolate;
use super::parse::parse;
use super::problem::{Problem, Problems};
use super::source::{Format, Places, Segment, SourceFile, parse_path};

/// Keys allowed at the top of a config file.
const TOP_LEVEL_KEYS: &[&str] = &[
    "data_dir",
    "api",
    "shutdown_grace",
    "connectors",
    "pipelines",
];

/// The API listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfig {
    /// Where to listen; `None` when `address = "off"`.
    pub address: Option<String>,
}

/// What a component is.
#[derive(Clone, Debug)]
pub enum ComponentClass {
    /// A connector of some `kind`, with the rest of its table for the kind's builder.
    Connector {
        /// The `kind` key.
        kind: String,
        /// Every key but `kind` and `inputs`.
        settings: Tree,
    },
    /// A pipeline.
    Pipeline(PipelineConfig),
}

/// One connector or pipeline as configured.
#[derive(Clone, Debug)]
pub struct ComponentSpec {
    /// Its id.
    pub id: String,
    /// Connector or pipeline.
    pub class: ComponentClass,
    /// Outputs it reads.
    pub inputs: Vec<String>,
    /// Index into [`Config::sources`] of the file that defines it.
    pub source: usize,
    /// The component's table as written (after `${VAR}` substitution): a reload compares
    /// these to tell a changed component from an untouched one.
    pub raw: Tree,
}

impl ComponentSpec {
    /// `connectors` or `pipelines`: the table the component sits in.
    pub fn section(&self) -> &'static str {
        match self.class {
            ComponentClass::Connector { .. } => "connectors",
            ComponentClass::Pipeline(_) => "pipelines",
        }
    }
}

/// The whole, merged config.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where state (checkpoints) is kept.
    pub data_dir: PathBuf,
    /// The HTTP API.
    pub api: ApiConfig,
    /// How long shutdown waits for in-flight events before giving up on them.
    pub shutdown_grace: Duration,
    /// Every component, in file order.
    pub components: IndexMap<String, ComponentSpec>,
    /// The files, for pointing at problems.
    pub sources: Vec<SourceFile>,
    /// Problems found while reading that did not stop the reading: the topology check adds
    /// its own and reports them all together.
    pub problems: Vec<Problem>,
    /// Components whose table could not be read; references to them are not reported again.
    pub broken: std::collections::BTreeSet<String>,
}

impl Config {
    /// A problem at `path` (dotted, relative to the component) inside `component`.
    pub fn problem_at(&self, component: &ComponentSpec, path: &str, message: String) -> Problem {
        let mut segments = vec![
            Segment::Key(component.section().to_owned()),
            Segment::Key(component.id.clone()),
        ];
        segments.extend(parse_path(path));
        let file = &self.sources[component.source];
        let (line, column) = file.line_column(file.locate(&segments));
        Problem {
            file: file.path.clone(),
            line,
            column,
            message,
        }
    }

    /// A problem at a byte `offset` within the string value of `path` in `component` (for
    /// VRL diagnostics, which point into the program).
    pub fn problem_in_string(
        &self,
        component: &ComponentSpec,
        path: &str,
        offset: Option<usize>,
        message: String,
    ) -> Problem {
        let mut problem = self.problem_at(component, path, message);
        let file = &self.sources[component.source];
        let mut segments = vec![
            Segment::Key(component.section().to_owned()),
            Segment::Key(component.id.clone()),
        ];
        segments.extend(parse_path(path));
        if let Some(raw) = offset.and_then(|offset| file.offset_in_string(&segments, offset)) {
            (problem.line, problem.column) = file.line_column(raw);
        }
        problem
    }
}

/// Reads, interpolates, parses and merges config files.
///
/// # Errors
///
/// Every problem found, each with its file, line and column.
pub fn load(paths: &[PathBuf]) -> Result<Config, Problems> {
    let mut sources = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match std::fs::read_to_string(path) {
            Ok(text) => sources.push((path.clone(), text)),
            Err(error) => problems.push(Problem {
                file: path.clone(),
                line: 1,
                column: 1,
                message: format!("cannot read config file: {error}"),
            }),
        }
    }
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    load_from_sources(sources, |name| std::env::var(name).ok())
}

/// [`load`] on texts already read, with `lookup` for `${VAR}`.
///
/// # Errors
///
/// Every problem found when a file cannot be read, interpolated or parsed; other problems
/// are kept in [`Config::problems`] so they are reported with the topology's.
pub fn load_from_sources(
    texts: Vec<(PathBuf, String)>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Config, Problems> {
    load_texts(texts, Some(&lookup))
}

/// A config pushed as text (through the API). It never reads the process's environment (that
/// would let whoever may push a config read its secrets): `${VAR:-default}` takes its default,
/// and `${VAR}` without one is a problem. `name` stands for the file in problems, and its
/// extension picks the format (`.json` is read as YAML, which contains it).
///
/// # Errors
///
/// As [`load_from_sources`].
pub fn load_pushed(name: PathBuf, text: String) -> Result<Config, Problems> {
    load_texts(vec![(name, text)], None)
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn load_texts(
    texts: Vec<(PathBuf, String)>,
    lookup: Option<Lookup<'_>>,
) -> Result<Config, Problems> {
    let mut problems = Vec::new();
    let mut structural = Vec::new();
    let mut config = Config {
        data_dir: PathBuf::from("data"),
        api: ApiConfig {
            address: Some("127.0.0.1:7878".to_owned()),
        },
        shutdown_grace: Duration::from_secs(30),
        components: IndexMap::new(),
        sources: Vec::new(),
        problems: Vec::new(),
        broken: Default::default(),
    };
    for (path, text) in texts {
        let format = format_of(&path);
        let no_environment = |_: &str| None;
        let interpolated = match interpolate(&text, lookup.unwrap_or(&no_environment)) {
            Ok(interpolated) => interpolated,
            Err(missing) => {
                let file = SourceFile::new(path.clone(), text, format);
                for variable in missing {
                    let (line, column) = file.line_column(variable.offset);
                    let message = missing_variable_message(&variable.name, lookup.is_none());
                    problems.push(Problem {
                        file: path.clone(),
                        line,
                        column,
                        message,
                    });
                }
                continue;
            }
        };
        let mut file = SourceFile {
            path,
            text: interpolated.text,
            format,
            original: text,
            substitutions: interpolated.substitutions,
            places: Places::new(),
        };
        match parse(&mut file) {
            Ok(tree) => {
                config.sources.push(file);
                let source = config.sources.len() - 1;
                merge_file(&mut config, tree, source, &mut structural);
            }
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        config.problems = structural;
        Ok(config)
    } else {
        problems.extend(structural);
        problems.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        Err(Problems(problems))
    }
}

fn missing_variable_message(name: &str, pushed: bool) -> String {
    if pushed {
        format!(
            "a pushed config does not read the environment: write the value of `{name}`, or give a default as ${{{name}:-value}}"
        )
    } else {
        format!(
            "environment variable `{name}` is not set; set it, or give a default as ${{{name}:-value}}"
        )
    }
}

fn format_of(path: &Path) -> Format {
    match path.extension().and_then(|extension| extension.to_str()) {
        Some("yaml" | "yml" | "json") => Format::Yaml,
        _ => Format::Toml,
    }
}

fn merge_file(config: &mut Config, tree: Tree, source: usize, problems: &mut Vec<Problem>) {
    let file = config.sources[source].clone();
    let at = |path: &str, message: String| {
        let (line, column) = file.line_column(file.locate(&parse_path(path)));
        Problem {
            file: file.path.clone(),
            line,
            column,
            message,
        }
    };
    let Tree::Object(top) = tree else {
        problems.push(at(
            "",
            "a config file must be a table of settings".to_owned(),
        ));
        return;
    };
    let mut specs = Vec::new();
    for (key, value) in top {
        match key.as_str() {
            "data_dir" => match value.as_str() {
                Some(dir) => config.data_dir = PathBuf::from(dir),
                None => problems.push(at("data_dir", "data_dir must be a path string".to_owned())),
            },
            "shutdown_grace" => match value.as_str().map(humantime::parse_duration) {
                Some(Ok(grace)) => config.shutdown_grace = grace,
                _ => problems.push(at(
                    "shutdown_grace",
                    "shutdown_grace must be a duration such as \"30s\" or \"500ms\"".to_owned(),
                )),
            },
            "api" => match api_config(&value) {
                Ok(api) => config.api = api,
                Err((path, message)) => problems.push(at(&format!("api.{path}"), message)),
            },
            "connectors" | "pipelines" => match value {
                Tree::Object(components) => specs.extend(
                    components
                        .into_iter()
                        .map(|(id, table)| (key.clone(), id, table)),
                ),
                _ => problems.push(at(&key, format!("{key} must be a table of components"))),
            },
            unknown => problems.push(at(unknown, unknown_key_message(unknown, TOP_LEVEL_KEYS))),
        }
    }
    for (section, id, table) in specs {
        match component_spec(&section, &id, table, source) {
            Ok(spec) => {
                if let Some(existing) = config.components.get(&id) {
                    let first = config.sources[existing.source].path.display().to_string();
                    problems.push(at(
                        &format!("{section}.{id}"),
                        format!("component id `{id}` is already defined (in {first}); ids are shared by connectors and pipelines and must be unique"),
                    ));
                } else {
                    config.components.insert(id, spec);
                }
            }
            Err((path, message)) => {
                config.broken.insert(id.clone());
                // A connector's messages name it already; a pipeline's come from serde.
                let message = if section == "pipelines" {
                    format!("pipeline {id}: {message}")
                } else {
                    message
                };
                problems.push(at(&format!("{section}.{id}.{path}"), message))
            }
        }
    }
}

fn api_config(value: &Tree) -> Result<ApiConfig, (String, String)> {
    let Tree::Object(table) = value else {
        return Err((String::new(), "api must be a table".to_owned()));
    };
    let mut api = ApiConfig {
        address: Some("127.0.0.1:7878".to_owned()),
    };
    for (key, value) in table {
        match (key.as_str(), value.as_str()) {
            ("address", Some("off")) => api.address = None,
            ("address", Some(address)) => api.address = Some(address.to_owned()),
            ("address", None) => {
                return Err((
                    key.clone(),
                    "address must be \"host:port\" or \"off\"".to_owned(),
                ));
            }
            (unknown, _) => {
                return Err((
                    unknown.to_owned(),
                    unknown_key_message(unknown, &["address"]),
                ));
            }
        }
    }
    Ok(api)
}

fn component_spec(
    section: &str,
    id: &str,
    table: Tree,
    source: usize,
) -> Result<ComponentSpec, (String, String)> {
    if id.is_empty() || id.contains('.') || id.starts_with('_') {
        return Err((
            String::new(),
            format!("component id `{id}` must be non-empty, contain no `.` and not start with `_`"),
        ));
    }
    let raw = table.clone();
    let Tree::Object(mut table) = table else {
        return Err((String::new(), format!("{section}.{id} must be a table")));
    };
    let inputs: Vec<String> = match table.get("inputs") {
        None => Vec::new(),
        Some(inputs) => serde_json::from_value(inputs.clone()).map_err(|_| {
            (
                "inputs".to_owned(),
                "inputs must be a list of output names such as [\"web\", \"enrich.hot\"]"
                    .to_owned(),
            )
        })?,
    };
    let class = if section == "connectors" {
        table.remove("inputs");
        let kind = match table.remove("kind") {
            Some(Tree::String(kind)) => kind,
            _ => {
                return Err((
                    String::new(),
                    format!("connector `{id}` needs a `kind`, such as kind = \"http_server\""),
                ));
            }
        };
        ComponentClass::Connector {
            kind,
            settings: Tree::Object(table),
        }
    } else {
        let config: PipelineConfig = serde_path_to_error::deserialize(Tree::Object(table))
            .map_err(|error| {
                describe_serde_error(&error.path().to_string(), &error.inner().to_string())
            })?;
        ComponentClass::Pipeline(config)
    };
    Ok(ComponentSpec {
        id: id.to_owned(),
        class,
        inputs,
        source,
        raw,
    })
}

/// Turns a serde error into (key path, message), pointing at an unknown key itself and
/// adding a "did you mean" when a known key is close.
pub fn describe_serde_error(path: &str, message: &str) -> (String, String) {
    describe_component_error(path, message, &[])
}

/// [`describe_serde_error`] for a component's own table, where `component_keys` (`kind`,
/// `inputs`) are taken out before the kind's settings are read: an unknown key at the top is
/// compared with them too, so `input` gets "did you mean `inputs`?".
pub fn describe_component_error(
    path: &str,
    message: &str,
    component_keys: &[&str],
) -> (String, String) {
    let path = if path == "." { "" } else { path };
    let Some(unknown) = between(message, "unknown field `", "`") else {
        let message = message.split(" at line ").next().unwrap_or(message);
        let message = without_values(message);
        // Name the key: "invalid value: integer, expected u64" alone does not say where.
        let message = if path.is_empty() {
            message
        } else {
            format!("`{path}`: {message}")
        };
        return (path.to_owned(), message);
    };
    let mut expected: Vec<&str> = message
        .split_once("expected")
        .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default();
    // serde_path_to_error may name the unknown key itself as the path.
    let at_top = path.is_empty() || path == unknown;
    if at_top {
        for key in component_keys {
            if !expected.contains(key) {
                expected.push(key);
            }
        }
    }
    let full_path = if at_top {
        unknown.to_owned()
    } else {
        format!("{path}.{unknown}")
    };
    (full_path, unknown_key_message(unknown, &expected))
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
mod tests;

#[cfg(test)]
mod value_tests {
    use super::*;

    #[test]
    fn serde_messages_keep_the_type_but_not_the_value() {
        let (_, message) = describe_serde_error(
            "headers.authorization",
            "invalid type: string \"hunter2\", expected u16",
        );
        assert_eq!(
            message,
            "`headers.authorization`: invalid type: string, expected u16"
        );
        let (_, message) =
            describe_serde_error("port", "invalid value: integer `99999`, expected u16");
        assert_eq!(message, "`port`: invalid value: integer, expected u16");
    }
}
