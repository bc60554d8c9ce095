//! The topology graph: every component built, every input resolved to an output port, and
//! checks that need the whole graph (inputs that name nothing, cycles).

use tb_connectors::{Connector, ConnectorBuilder};
use tb_event::ComponentId;
use tb_pipeline::{BuildError as PipelineBuildError, Pipeline};

use crate::config::model_support::{closest, read_every_key};
use crate::config::{ComponentClass, ComponentSpec, Config, Problem, Problems};
use crate::supervise::Builders;

/// A connector or pipeline, built and ready to start.
pub(crate) enum Body {
    /// A connector and its kind.
    Connector {
        kind: String,
        connector: Box<dyn Connector>,
    },
    /// A compiled pipeline.
    Pipeline(Pipeline),
    /// A destination, built and checked.
    Destination(Box<tb_delivery::Destination>),
}

/// One component of the graph.
pub(crate) struct Node {
    pub(crate) id: ComponentId,
    pub(crate) body: Body,
    /// Output port names; `""` is the main output.
    pub(crate) ports: Vec<String>,
    /// (node index, port index) of every output this node reads.
    pub(crate) inputs: Vec<(usize, usize)>,
}

/// A built, checked topology: the config it came from and its components.
pub struct Topology {
    pub(crate) config: Config,
    pub(crate) nodes: Vec<Node>,
    /// The connector kinds it was built with, kept to build components again (restarts).
    pub(crate) builders: Builders,
}

impl Topology {
    /// Builds every component of `config` with the connector kinds in `builders`.
    ///
    /// # Errors
    ///
    /// Every problem found, each pointing into the config files.
    pub fn build(config: Config, builders: &Builders) -> Result<Self, Problems> {
        let mut problems = config.problems.clone();
        let mut broken = config.broken.clone();
        let mut nodes = Vec::new();
        for spec in config.components.values() {
            match build_node(&config, spec, builders) {
                Ok(node) => nodes.push(node),
                Err(mut found) => {
                    broken.insert(spec.id.clone());
                    problems.append(&mut found);
                }
            }
        }
        // Checks of the whole graph run on what did build, so one bad component does not
        // hide the rest; inputs naming a component already reported are not reported again.
        resolve_inputs(&config, &mut nodes, &broken, &mut problems);
        check_chains(&config, &nodes, &broken, &mut problems);
        find_cycles(&config, &nodes, &mut problems);
        if problems.is_empty() {
            Ok(Self {
                config,
                nodes,
                builders: builders.clone(),
            })
        } else {
            problems.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            Err(Problems(problems))
        }
    }

    /// Checks what can be checked of this machine without running: addresses that cannot be
    /// bound, input files that cannot be read, output folders that cannot be written. Used
    /// by `validate`; a run finds the same at start.
    ///
    /// # Errors
    ///
    /// Every problem found, each pointing into the config files.
    pub fn check_environment(&self) -> Result<(), Problems> {
        let mut problems = Vec::new();
        for node in &self.nodes {
            let Body::Connector { connector, .. } = &node.body else {
                continue;
            };
            let spec = &self.config.components[node.id.as_str()];
            for error in connector.check_environment() {
                let message = format!("connector {}: {}", spec.id, error.message);
                problems.push(self.config.problem_at(spec, &error.path, message));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Problems(problems))
        }
    }

    /// What is allowed but deserves a warning: actions whose version is deprecated.
    pub fn warnings(&self) -> Vec<Problem> {
        let now = chrono::Utc::now();
        self.nodes
            .iter()
            .filter_map(|node| match &node.body {
                Body::Destination(destination) => Some((node, destination)),
                _ => None,
            })
            .flat_map(|(node, destination)| {
                let spec = &self.config.components[node.id.as_str()];
                destination
                    .deprecations(now)
                    .into_iter()
                    .map(|(key, message)| self.config.problem_at(spec, &key, message))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The config this topology was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every edge as (`from` output name, `to` component id).
    pub fn edges(&self) -> Vec<(String, String)> {
        let mut edges = Vec::new();
        for node in &self.nodes {
            for (from, port) in &node.inputs {
                edges.push((output_name(&self.nodes[*from], *port), node.id.to_string()));
            }
        }
        edges
    }

    /// The topology as Graphviz DOT.
    pub fn to_dot(&self) -> String {
        let mut dot = String::from("digraph tightbeam {\n  rankdir=LR;\n");
        for node in &self.nodes {
            let (shape, label) = match &node.body {
                Body::Connector { kind, .. } => ("box", format!("{}\\n({kind})", node.id)),
                Body::Pipeline(_) => ("ellipse", format!("{}\\n(pipeline)", node.id)),
                Body::Destination(_) => ("cylinder", format!("{}\\n(destination)", node.id)),
            };
            dot.push_str(&format!(
                "  \"{}\" [shape={shape}, label=\"{label}\"];\n",
                node.id
            ));
        }
        for node in &self.nodes {
            for (from, port) in &node.inputs {
                let from_node = &self.nodes[*from];
                let port_name = &from_node.ports[*port];
                let label = if port_name.is_empty() {
                    String::new()
                } else {
                    format!(" [label=\"{port_name}\"]")
                };
                dot.push_str(&format!(
                    "  \"{}\" -> \"{}\"{label};\n",
                    from_node.id, node.id
                ));
            }
        }
        dot.push_str("}\n");
        dot
    }
}

/// `id` for the main port, `id.port` for the others.
pub(crate) fn output_name(node: &Node, port: usize) -> String {
    match node.ports[port].as_str() {
        "" => node.id.to_string(),
        name => format!("{}.{name}", node.id),
    }
}

fn build_node(
    config: &Config,
    spec: &ComponentSpec,
    builders: &[Box<dyn ConnectorBuilder>],
) -> Result<Node, Vec<Problem>> {
    let id = ComponentId::new(&spec.id);
    let has_inputs = !spec.inputs.is_empty();
    match &spec.class {
        ComponentClass::Connector { kind, settings } => {
            let Some(builder) = builders.iter().find(|builder| builder.kind() == kind) else {
                let kinds: Vec<&str> = builders
                    .iter()
                    .filter(|builder| !builder.is_hidden())
                    .map(|builder| builder.kind())
                    .collect();
                let mut message = format!("unknown connector kind `{kind}`");
                if let Some(suggestion) = closest(kind, &kinds) {
                    message.push_str(&format!(" (did you mean `{suggestion}`?)"));
                }
                message.push_str(&format!("; known kinds: {}", kinds.join(", ")));
                return Err(vec![config.problem_at(spec, "kind", message)]);
            };
            let roles = builder.roles(has_inputs);
            if has_inputs && !roles.consumes {
                let message = format!("`{kind}` connectors take no inputs; remove `inputs`");
                return Err(vec![config.problem_at(spec, "inputs", message)]);
            }
            // Every bad key is reported: the table is built again without each one found.
            let connector = read_every_key(settings, "", &["kind", "inputs"], |settings| {
                builder
                    .build(&id, settings, has_inputs)
                    .map_err(|error| (error.path, error.message))
            })
            .map_err(|found| {
                found
                    .into_iter()
                    .map(|(path, message)| {
                        let message = format!("connector {}: {message}", spec.id);
                        config.problem_at(spec, &path, message)
                    })
                    .collect::<Vec<_>>()
            })?;
            let ports = if roles.produces {
                vec![String::new(), "_errors".to_owned()]
            } else {
                Vec::new()
            };
            Ok(Node {
                id,
                body: Body::Connector {
                    kind: kind.clone(),
                    connector,
                },
                ports,
                inputs: Vec::new(),
            })
        }
        ComponentClass::Pipeline(pipeline_config) => {
            let pipeline = Pipeline::build(&spec.id, pipeline_config).map_err(|errors| {
                errors
                    .into_iter()
                    .map(|error| pipeline_problem(config, spec, error))
                    .collect::<Vec<_>>()
            })?;
            let ports = pipeline.ports().names().to_vec();
            Ok(Node {
                id,
                body: Body::Pipeline(pipeline),
                ports,
                inputs: Vec::new(),
            })
        }
        ComponentClass::Destination(destination_config) => {
            let destination =
                tb_delivery::Destination::build(&spec.id, (**destination_config).clone()).map_err(
                    |found| {
                        found
                            .into_iter()
                            .map(|(path, message)| {
                                let message = format!("destination {}: {message}", spec.id);
                                config.problem_at(spec, &path, message)
                            })
                            .collect::<Vec<_>>()
                    },
                )?;
            Ok(Node {
                id,
                body: Body::Destination(Box::new(destination)),
                ports: Vec::new(),
                inputs: Vec::new(),
            })
        }
    }
}

/// Every chained action (`on_succeeded` and the rest) must name an action of a destination.
fn check_chains(
    config: &Config,
    nodes: &[Node],
    broken: &std::collections::BTreeSet<String>,
    problems: &mut Vec<Problem>,
) {
    let actions_of = |id: &str| {
        nodes.iter().find_map(|node| match &node.body {
            Body::Destination(destination) if node.id.as_str() == id => {
                Some(destination.action_names())
            }
            _ => None,
        })
    };
    for node in nodes {
        let Body::Destination(destination) = &node.body else {
            continue;
        };
        let spec = &config.components[node.id.as_str()];
        for (key, target) in destination.targets() {
            if broken.contains(&target.destination) {
                continue;
            }
            let message = match actions_of(&target.destination) {
                None => format!(
                    "destination {}: `{}.{}` names no destination `{}`",
                    spec.id, target.destination, target.action, target.destination
                ),
                Some(actions) if !actions.contains(&target.action) => format!(
                    "destination {}: destination `{}` has no action `{}`; its actions: {}",
                    spec.id,
                    target.destination,
                    target.action,
                    actions.join(", ")
                ),
                Some(_) => continue,
            };
            problems.push(config.problem_at(spec, &key, message));
        }
    }
}

fn pipeline_problem(config: &Config, spec: &ComponentSpec, error: PipelineBuildError) -> Problem {
    match &error {
        PipelineBuildError::Vrl { diagnostic, .. } => config.problem_in_string(
            spec,
            &diagnostic.location,
            diagnostic.offset,
            format!(
                "pipeline {}: VRL in {} does not compile:\n{}",
                spec.id,
                diagnostic.location,
                diagnostic.message.trim_end()
            ),
        ),
        PipelineBuildError::RouteName { location, .. } => {
            config.problem_at(spec, location, error.to_string())
        }
        PipelineBuildError::UnknownAllowedFunction { .. } => {
            config.problem_at(spec, "allow_functions", error.to_string())
        }
        PipelineBuildError::StepSetting { location, .. } => {
            config.problem_at(spec, location, error.to_string())
        }
    }
}

fn resolve_inputs(
    config: &Config,
    nodes: &mut [Node],
    broken: &std::collections::BTreeSet<String>,
    problems: &mut Vec<Problem>,
) {
    let outputs: Vec<String> = nodes
        .iter()
        .flat_map(|node| (0..node.ports.len()).map(|port| output_name(node, port)))
        .collect();
    for index in 0..nodes.len() {
        let spec = &config.components[nodes[index].id.as_str()];
        let mut resolved = Vec::new();
        for input in &spec.inputs {
            let named = input.split_once('.').map_or(input.as_str(), |(id, _)| id);
            match find_output(nodes, input) {
                Some(found) => resolved.push(found),
                None if broken.contains(named) => {}
                None => {
                    let candidates: Vec<&str> = outputs.iter().map(String::as_str).collect();
                    let mut message = format!("input `{input}` names no output");
                    if let Some(suggestion) = closest(input, &candidates) {
                        message.push_str(&format!(" (did you mean `{suggestion}`?)"));
                    }
                    message.push_str(&format!("; outputs are: {}", candidates.join(", ")));
                    problems.push(config.problem_at(spec, "inputs", message));
                }
            }
        }
        nodes[index].inputs = resolved;
    }
}

fn find_output(nodes: &[Node], input: &str) -> Option<(usize, usize)> {
    let (id, port) = input.split_once('.').unwrap_or((input, ""));
    let node = nodes.iter().position(|node| node.id.as_str() == id)?;
    let port = nodes[node].ports.iter().position(|name| name == port)?;
    Some((node, port))
}

/// Data cannot loop through pipelines alone. Connectors are boundaries: what enters one
/// leaves the process, so request/response through a connector is not a cycle.
///
/// A depth-first search with three colours: each pipeline is visited once, and a back edge
/// to a pipeline still on the path closes a cycle, reported with that path.
fn find_cycles(config: &Config, nodes: &[Node], problems: &mut Vec<Problem>) {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Colour {
        Unvisited,
        OnPath,
        Done,
    }
    let is_pipeline = |index: usize| matches!(nodes[index].body, Body::Pipeline(_));
    let mut colour = vec![Colour::Unvisited; nodes.len()];
    for start in (0..nodes.len()).filter(|index| is_pipeline(*index)) {
        if colour[start] != Colour::Unvisited {
            continue;
        }
        // Each frame: a node and how many of its inputs have been followed.
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        colour[start] = Colour::OnPath;
        while let Some((node, next_input)) = path.last_mut() {
            let node = *node;
            let Some(&(from, _)) = nodes[node].inputs.get(*next_input) else {
                colour[node] = Colour::Done;
                path.pop();
                continue;
            };
            *next_input += 1;
            if !is_pipeline(from) {
                continue;
            }
            match colour[from] {
                Colour::Unvisited => {
                    colour[from] = Colour::OnPath;
                    path.push((from, 0));
                }
                Colour::OnPath => {
                    let position = path
                        .iter()
                        .position(|(index, _)| *index == from)
                        .unwrap_or(0);
                    let mut names: Vec<&str> = path[position..]
                        .iter()
                        .rev()
                        .map(|(index, _)| nodes[*index].id.as_str())
                        .collect();
                    names.push(
                        nodes[path.last().map_or(from, |(index, _)| *index)]
                            .id
                            .as_str(),
                    );
                    let spec = &config.components[nodes[from].id.as_str()];
                    let message = format!("pipelines form a cycle: {}", names.join(" -> "));
                    problems.push(config.problem_at(spec, "inputs", message));
                }
                Colour::Done => {}
            }
        }
    }
}
