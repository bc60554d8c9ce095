//! The config model: top-level settings and one [`ComponentSpec`] per connector or pipeline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde_json::Value as Tree;
use tb_pipeline::{PipelineConfig, StepConfig};

use super::interpolate::interpolate;
use super::parse::parse;
use super::problem::{Problem, Problems};
use super::source::{Format, Places, Segment, SourceFile, parse_path};

mod keys;

pub use keys::{KeyProblem, closest, read_every_key, unknown_key_message};

/// Keys allowed at the top of a config file.
const TOP_LEVEL_KEYS: &[&str] = &[
    "data_dir",
    "api",
    "shutdown_grace",
    "store",
    "connectors",
    "pipelines",
    "destinations",
];

/// `[store]`: where durable delivery keeps its jobs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreConfig {
    /// `sqlite://PATH`; `None` for `tightbeam.db` in `data_dir`.
    pub url: Option<String>,
    /// `full` (the default: a stored job survives power loss) or `normal`.
    pub durability: tb_store::Durability,
}

/// The API listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfig {
    /// Where to listen; `None` when `address = "off"`.
    pub address: Option<String>,
    /// How long a connection may take to send a request's headers, idle time after the
    /// previous response included; past it the connection is closed.
    pub header_timeout: Duration,
    /// How long a pushed config may take to arrive; past it, 408.
    pub body_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            address: Some("127.0.0.1:7878".to_owned()),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
        }
    }
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
    /// A destination of durable delivery.
    Destination(Box<tb_delivery::DestinationConfig>),
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
            ComponentClass::Destination(_) => "destinations",
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
    /// The job store.
    pub store: StoreConfig,
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
        api: ApiConfig::default(),
        store: StoreConfig::default(),
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
            "api" => {
                let (api, found) = api_config(&value);
                config.api = api;
                for (path, message) in found {
                    problems.push(at(&format!("api.{path}"), message));
                }
            }
            "store" => {
                let (store, found) = store_config(&value);
                config.store = store;
                for (path, message) in found {
                    problems.push(at(&format!("store.{path}"), message));
                }
            }
            "connectors" | "pipelines" | "destinations" => match value {
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
        let (spec, found) = component_spec(&section, &id, table, source);
        for (path, message) in found {
            // A connector's messages name it already; a pipeline's come from serde.
            let message = match section.as_str() {
                "pipelines" => format!("pipeline {id}: {message}"),
                "destinations" => format!("destination {id}: {message}"),
                _ => message,
            };
            problems.push(at(&format!("{section}.{id}.{path}"), message));
        }
        let Some(spec) = spec else {
            config.broken.insert(id);
            continue;
        };
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
}

/// The API settings, and a problem for each key that is wrong (the default stands in).
fn api_config(value: &Tree) -> (ApiConfig, Vec<KeyProblem>) {
    let mut api = ApiConfig::default();
    let Tree::Object(table) = value else {
        return (api, vec![(String::new(), "api must be a table".to_owned())]);
    };
    let mut problems = Vec::new();
    for (key, value) in table {
        match (key.as_str(), value.as_str()) {
            ("address", Some("off")) => api.address = None,
            ("address", Some(address)) => api.address = Some(address.to_owned()),
            ("address", None) => problems.push((
                key.clone(),
                "address must be \"host:port\" or \"off\"".to_owned(),
            )),
            (name @ ("header_timeout" | "body_timeout"), text) => {
                match text.map(humantime::parse_duration) {
                    Some(Ok(timeout)) if name == "header_timeout" => api.header_timeout = timeout,
                    Some(Ok(timeout)) => api.body_timeout = timeout,
                    _ => problems.push((
                        key.clone(),
                        format!("{name} must be a duration such as \"30s\" or \"500ms\""),
                    )),
                }
            }
            (unknown, _) => problems.push((
                unknown.to_owned(),
                unknown_key_message(unknown, &["address", "header_timeout", "body_timeout"]),
            )),
        }
    }
    (api, problems)
}

/// The store settings, and a problem for each key that is wrong.
fn store_config(value: &Tree) -> (StoreConfig, Vec<KeyProblem>) {
    let mut store = StoreConfig::default();
    let Tree::Object(table) = value else {
        return (
            store,
            vec![(String::new(), "store must be a table".to_owned())],
        );
    };
    let mut problems = Vec::new();
    for (key, value) in table {
        match (key.as_str(), value.as_str()) {
            ("url", Some(url)) => store.url = Some(url.to_owned()),
            ("durability", Some("full")) => store.durability = tb_store::Durability::Full,
            ("durability", Some("normal")) => store.durability = tb_store::Durability::Normal,
            ("url", _) => problems.push((
                key.clone(),
                "url must be a string such as \"sqlite://data/tightbeam.db\"".to_owned(),
            )),
            ("durability", _) => problems.push((
                key.clone(),
                "durability must be \"full\" (a stored job survives power loss) or \"normal\" (faster; the last transactions may be lost to power loss, not to a crash)".to_owned(),
            )),
            (unknown, _) => problems.push((
                unknown.to_owned(),
                unknown_key_message(unknown, &["url", "durability"]),
            )),
        }
    }
    (store, problems)
}

/// A component's spec, or `None` when there can be none, and every problem found in its
/// table. A pipeline whose steps have problems still has a spec, so that its other steps are
/// checked too; a config with problems never runs.
fn component_spec(
    section: &str,
    id: &str,
    table: Tree,
    source: usize,
) -> (Option<ComponentSpec>, Vec<KeyProblem>) {
    let refuse = |path: &str, message: String| (None, vec![(path.to_owned(), message)]);
    if id.is_empty() || id.contains('.') || id.starts_with('_') {
        return refuse(
            "",
            format!("component id `{id}` must be non-empty, contain no `.` and not start with `_`"),
        );
    }
    let raw = table.clone();
    let Tree::Object(mut table) = table else {
        return refuse("", format!("{section}.{id} must be a table"));
    };
    let inputs: Vec<String> = match table.get("inputs") {
        None => Vec::new(),
        Some(inputs) => match serde_json::from_value(inputs.clone()) {
            Ok(inputs) => inputs,
            Err(_) => {
                return refuse(
                    "inputs",
                    "inputs must be a list of output names such as [\"web\", \"enrich.hot\"]"
                        .to_owned(),
                );
            }
        },
    };
    let (class, problems) = if section == "connectors" {
        table.remove("inputs");
        let Some(Tree::String(kind)) = table.remove("kind") else {
            return refuse(
                "",
                format!("connector `{id}` needs a `kind`, such as kind = \"http_server\""),
            );
        };
        let settings = Tree::Object(table);
        (ComponentClass::Connector { kind, settings }, Vec::new())
    } else if section == "destinations" {
        match read_every_key(&Tree::Object(table), "", &[], |tree| {
            tb_delivery::DestinationConfig::read(&tree)
        }) {
            Ok(config) => {
                let inputs = config.inputs();
                let spec = ComponentSpec {
                    id: id.to_owned(),
                    class: ComponentClass::Destination(Box::new(config)),
                    inputs,
                    source,
                    raw,
                };
                return (Some(spec), Vec::new());
            }
            Err(problems) => return (None, problems),
        }
    } else {
        match pipeline_config(table) {
            (Some(config), problems) => (ComponentClass::Pipeline(config), problems),
            (None, problems) => return (None, problems),
        }
    };
    let spec = ComponentSpec {
        id: id.to_owned(),
        class,
        inputs,
        source,
        raw,
    };
    (Some(spec), problems)
}

/// Reads a pipeline's table, reporting every bad key. Each step is read on its own, so one
/// that cannot be read (an unknown kind, a misspelt key) does not hide the problems of the
/// others: it stands as a filter that keeps every event, and the others keep their indices
/// when they are compiled and their VRL checked.
fn pipeline_config(
    mut table: serde_json::Map<String, Tree>,
) -> (Option<PipelineConfig>, Vec<KeyProblem>) {
    let steps = table.remove("steps");
    let mut problems = Vec::new();
    let mut config = read_every_key(&Tree::Object(table), "", &[], read::<PipelineConfig>)
        .map_err(|found| problems.extend(found))
        .ok();
    let steps = match steps {
        None => Vec::new(),
        Some(Tree::Array(steps)) => steps,
        Some(_) => {
            problems.push((
                "steps".to_owned(),
                "steps must be a list of steps such as [{ kind = \"transform\", source = \".a = 1\" }]"
                    .to_owned(),
            ));
            Vec::new()
        }
    };
    let steps = steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let at = format!("steps[{index}]");
            read_every_key(step, &at, &[], read::<StepConfig>).unwrap_or_else(|found| {
                problems.extend(found);
                StepConfig::Filter {
                    condition: "true".to_owned(),
                }
            })
        })
        .collect();
    if let Some(config) = &mut config {
        config.steps = steps;
    }
    (config, problems)
}

/// Deserializes a `T`, keeping the path of the key that does not fit.
fn read<T: DeserializeOwned>(tree: Tree) -> Result<T, KeyProblem> {
    serde_path_to_error::deserialize(tree)
        .map_err(|error| (error.path().to_string(), error.inner().to_string()))
}

#[cfg(test)]
mod tests;
