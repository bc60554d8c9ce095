//! A compiled pipeline and the batch runner.

use std::collections::BTreeMap;

use tb_event::{AckStatus, Event, KeyString, ObjectMap, Value};
use vrl::compiler::{TimeZone, runtime::Runtime};

use crate::config::{PipelineConfig, StepConfig};
use crate::functions::{RESTRICTED_FUNCTIONS, function_registry};
use crate::step::{BuildError, CompiledProgram, ProgramRole, RunOutcome};

/// Index of an output port of a pipeline; see [`OutputPorts`].
pub type PortId = usize;

/// The names of a pipeline's outputs, by [`PortId`]: `main` first, then each route in
/// config order, then `_unmatched`, then `_errors`.
#[derive(Clone, Debug)]
pub struct OutputPorts {
    names: Vec<String>,
}

impl OutputPorts {
    /// Port of the main output `<id>`.
    pub const MAIN: PortId = 0;

    /// Every port name, in [`PortId`] order; the main port's name is empty.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Port of `_unmatched`.
    pub fn unmatched(&self) -> PortId {
        self.names.len() - 2
    }

    /// Port of `_errors`.
    pub fn errors(&self) -> PortId {
        self.names.len() - 1
    }

    /// Port for an output name (`""` for main, `hot`, `_errors`...).
    pub fn find(&self, name: &str) -> Option<PortId> {
        self.names.iter().position(|port| port == name)
    }
}

/// What one batch did, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineCounts {
    /// Events that came in.
    pub input: u64,
    /// Events emitted on the main output and routes (not `_errors`, and not the
    /// `_unmatched` copies, which also go on to the main output).
    pub output: u64,
    /// Events a filter dropped.
    pub dropped: u64,
    /// Events sent to `_errors`.
    pub errors: u64,
}

enum CompiledStep {
    Transform(CompiledProgram),
    Filter(CompiledProgram),
    Route(Vec<(PortId, CompiledProgram)>),
}

/// A pipeline ready to run: compiled steps and a VRL runtime.
pub struct Pipeline {
    id: String,
    steps: Vec<CompiledStep>,
    ports: OutputPorts,
    runtime: Runtime,
    timezone: TimeZone,
}

impl Pipeline {
    /// Compiles every step of `config`.
    ///
    /// # Errors
    ///
    /// Every VRL program that does not compile and every bad route name, all at once.
    pub fn build(id: &str, config: &PipelineConfig) -> Result<Self, Vec<BuildError>> {
        let mut errors = Vec::new();
        for function in &config.allow_functions {
            if !RESTRICTED_FUNCTIONS.contains(&function.as_str()) {
                errors.push(BuildError::UnknownAllowedFunction {
                    pipeline: id.to_owned(),
                    function: function.clone(),
                });
            }
        }
        let ports = output_ports(id, &config.steps, &mut errors);
        let functions = function_registry(&config.allow_functions);
        let mut steps = Vec::new();
        for (index, step) in config.steps.iter().enumerate() {
            let mut compile = |source: &str, location: String, role: ProgramRole| {
                CompiledProgram::compile(
                    source,
                    &functions,
                    location,
                    &config.allow_functions,
                    role,
                )
                .map_err(|diagnostic| {
                    errors.push(BuildError::Vrl {
                        pipeline: id.to_owned(),
                        diagnostic,
                    })
                })
                .ok()
            };
            let compiled = match step {
                StepConfig::Transform { source } => compile(
                    source,
                    format!("steps[{index}].source"),
                    ProgramRole::Transform,
                )
                .map(CompiledStep::Transform),
                StepConfig::Filter { condition } => compile(
                    condition,
                    format!("steps[{index}].condition"),
                    ProgramRole::Condition,
                )
                .map(CompiledStep::Filter),
                StepConfig::Route { routes } => {
                    let compiled: Vec<_> = routes
                        .iter()
                        .filter_map(|(name, condition)| {
                            let program = compile(
                                condition,
                                format!("steps[{index}].routes.{name}"),
                                ProgramRole::Condition,
                            )?;
                            Some((ports.find(name)?, program))
                        })
                        .collect();
                    (compiled.len() == routes.len()).then_some(CompiledStep::Route(compiled))
                }
            };
            steps.extend(compiled);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            id: id.to_owned(),
            steps,
            ports,
            runtime: Runtime::default(),
            timezone: TimeZone::default(),
        })
    }

    /// The pipeline's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The pipeline's output ports.
    pub fn ports(&self) -> &OutputPorts {
        &self.ports
    }

    /// Runs every event of `batch` through the steps, appending results to `outputs`
    /// (indexed by [`PortId`], which must hold one vector per port). Filtered events are
    /// acknowledged as done here.
    pub fn process(&mut self, batch: Vec<Event>, outputs: &mut [Vec<Event>]) -> PipelineCounts {
        let mut counts = PipelineCounts {
            input: batch.len() as u64,
            ..PipelineCounts::default()
        };
        for event in batch {
            self.process_event(event, 0, false, outputs, &mut counts);
        }
        counts.output = outputs
            .iter()
            .enumerate()
            .filter(|(port, _)| *port != self.ports.errors() && *port != self.ports.unmatched())
            .map(|(_, events)| events.len() as u64)
            .sum();
        counts
    }

    /// Runs `event` from `first_step` on. `unmatched` says it has already passed a route
    /// step without matching, so it owes `_unmatched` one copy when it reaches the end.
    fn process_event(
        &mut self,
        mut event: Event,
        first_step: usize,
        mut unmatched: bool,
        outputs: &mut [Vec<Event>],
        counts: &mut PipelineCounts,
    ) {
        for step_index in first_step..self.steps.len() {
            let value = std::mem::replace(&mut event.value, Value::Null);
            let meta = &event.meta;
            let metadata = || meta.to_vrl_metadata();
            match &self.steps[step_index] {
                CompiledStep::Transform(program) => {
                    match program.run(value, metadata, &mut self.runtime, &self.timezone) {
                        RunOutcome::Finished {
                            value: Value::Array(values),
                            ..
                        } => {
                            if values.is_empty() {
                                // An empty array leaves nothing: the event is done, like a
                                // filtered one, and counted the same way.
                                counts.dropped += 1;
                            }
                            for value in values {
                                let mut copy = event.fork();
                                copy.value = value;
                                self.process_event(
                                    copy,
                                    step_index + 1,
                                    unmatched,
                                    outputs,
                                    counts,
                                );
                            }
                            event.complete(AckStatus::Delivered);
                            return;
                        }
                        RunOutcome::Finished { value, .. } => event.value = value,
                        RunOutcome::Failed { value, message } => {
                            event.value = value;
                            return self.fail(event, step_index, message, outputs, counts);
                        }
                    }
                }
                CompiledStep::Filter(program) => {
                    match program.run(value, metadata, &mut self.runtime, &self.timezone) {
                        RunOutcome::Finished { value, result } => {
                            event.value = value;
                            match result {
                                Value::Boolean(true) => {}
                                Value::Boolean(false) => {
                                    counts.dropped += 1;
                                    event.complete(AckStatus::Delivered);
                                    return;
                                }
                                other => {
                                    let message = format!(
                                        "filter condition returned {}, expected a boolean",
                                        other.kind()
                                    );
                                    return self.fail(event, step_index, message, outputs, counts);
                                }
                            }
                        }
                        RunOutcome::Failed { value, message } => {
                            event.value = value;
                            return self.fail(event, step_index, message, outputs, counts);
                        }
                    }
                }
                CompiledStep::Route(routes) => {
                    // The value passes through each condition in turn rather than being
                    // cloned for each: a condition reads the event, it is not a copy of it.
                    let mut value = value;
                    let mut matched = Vec::new();
                    for (port, program) in routes {
                        let meta = &event.meta;
                        let metadata = || meta.to_vrl_metadata();
                        match program.run(value, metadata, &mut self.runtime, &self.timezone) {
                            RunOutcome::Finished {
                                value: after,
                                result,
                            } => {
                                value = after;
                                if result == Value::Boolean(true) {
                                    matched.push(*port);
                                }
                            }
                            RunOutcome::Failed {
                                value: original,
                                message,
                            } => {
                                event.value = original;
                                return self.fail(event, step_index, message, outputs, counts);
                            }
                        }
                    }
                    event.value = value;
                    if let Some((last, rest)) = matched.split_last() {
                        for port in rest {
                            outputs[*port].push(event.fork());
                        }
                        outputs[*last].push(event);
                        return;
                    }
                    unmatched = true;
                }
            }
        }
        if unmatched {
            outputs[self.ports.unmatched()].push(event.fork());
        }
        outputs[OutputPorts::MAIN].push(event);
    }

    fn fail(
        &self,
        mut event: Event,
        step_index: usize,
        message: String,
        outputs: &mut [Vec<Event>],
        counts: &mut PipelineCounts,
    ) {
        counts.errors += 1;
        let original = std::mem::replace(&mut event.value, Value::Null);
        event.value = error_envelope(&self.id, step_index, message, original);
        outputs[self.ports.errors()].push(event);
    }
}

/// The shape of an event on `<pipeline>._errors`: the reason, and the event as it entered
/// the failing step, so a person can read it and replay it.
fn error_envelope(pipeline: &str, step_index: usize, message: String, original: Value) -> Value {
    let mut error = ObjectMap::new();
    error.insert(KeyString::from("message"), Value::from(message));
    error.insert(KeyString::from("pipeline"), Value::from(pipeline));
    error.insert(KeyString::from("step"), Value::from(step_index as i64));
    let mut envelope = ObjectMap::new();
    envelope.insert(KeyString::from("error"), Value::Object(error));
    envelope.insert(KeyString::from("event"), original);
    Value::Object(envelope)
}

fn output_ports(id: &str, steps: &[StepConfig], errors: &mut Vec<BuildError>) -> OutputPorts {
    let mut names = vec![String::new()];
    let mut seen = BTreeMap::new();
    for step in steps {
        let StepConfig::Route { routes } = step else {
            continue;
        };
        for name in routes.keys() {
            let reason = if name.starts_with('_') {
                Some("is reserved: names starting with `_` are Tightbeam's own outputs")
            } else if name.is_empty() || name.contains('.') {
                Some("must be non-empty and contain no `.`")
            } else if seen.insert(name.clone(), ()).is_some() {
                Some("is used by two route steps")
            } else {
                None
            };
            match reason {
                Some(reason) => errors.push(BuildError::RouteName {
                    pipeline: id.to_owned(),
                    route: name.clone(),
                    reason,
                }),
                None => names.push(name.clone()),
            }
        }
    }
    names.push("_unmatched".to_owned());
    names.push("_errors".to_owned());
    OutputPorts { names }
}

#[cfg(test)]
mod tests;
