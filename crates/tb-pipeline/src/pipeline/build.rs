//! Building a pipeline's steps from its config, collecting every problem.

use std::collections::BTreeMap;

use vrl::compiler::Function;

use super::{PartitionPlace, PlacedStep};
use crate::config::{PipelineConfig, StepConfig};
use crate::error::BuildError;
use crate::functions::{RESTRICTED_FUNCTIONS, function_registry};
use crate::program::{CompiledProgram, ProgramRole};
use crate::step::Step;
use crate::steps::batch::{BatchSettings, BatchStep};
use crate::steps::filter::FilterStep;
use crate::steps::partition::PartitionStep;
use crate::steps::route::RouteStep;
use crate::steps::transform::TransformStep;

/// Field names a batch event sets itself, which `group_by` cannot use.
const BATCH_FIELDS: &[&str] = &["events", "count"];

/// The steps of a pipeline, and what the pipeline needs to know about them.
pub(super) struct BuiltSteps {
    pub(super) steps: Vec<PlacedStep>,
    /// Route names in config order: ports 1, 2...
    pub(super) route_names: Vec<String>,
    pub(super) partition: Option<PartitionPlace>,
}

/// Compiles every step of `config`.
pub(super) fn build_steps(
    id: &str,
    config: &PipelineConfig,
) -> Result<BuiltSteps, Vec<BuildError>> {
    let mut errors = Vec::new();
    for function in &config.allow_functions {
        if !RESTRICTED_FUNCTIONS.contains(&function.as_str()) {
            errors.push(BuildError::UnknownAllowedFunction {
                pipeline: id.to_owned(),
                function: function.clone(),
            });
        }
    }
    let route_names = route_names(id, &config.steps, &mut errors);
    let mut builder = StepBuilder {
        id,
        functions: function_registry(&config.allow_functions),
        allowed: &config.allow_functions,
        errors,
    };
    let mut steps = Vec::new();
    let mut partition: Option<(usize, PartitionPlace)> = None;
    for (index, step_config) in config.steps.iter().enumerate() {
        if let StepConfig::Partition { lanes, .. } = step_config {
            match partition {
                // Located at the key, which every partition step has.
                Some((first, _)) => builder.setting(
                    format!("steps[{index}].key"),
                    format!(
                        "belongs to a second `partition` step (steps[{first}] is the first); a \
                         pipeline may hold at most one"
                    ),
                ),
                None => {
                    partition = Some((
                        index,
                        PartitionPlace {
                            position: steps.len(),
                            lanes: (*lanes).max(1),
                        },
                    ))
                }
            }
        }
        if let Some(step) = builder.step(index, step_config, &route_names) {
            steps.push(PlacedStep {
                config_index: index,
                step,
            });
        }
    }
    if !builder.errors.is_empty() {
        return Err(builder.errors);
    }
    Ok(BuiltSteps {
        steps,
        route_names,
        partition: partition.map(|(_, place)| place),
    })
}

struct StepBuilder<'a> {
    id: &'a str,
    functions: Vec<Box<dyn Function>>,
    allowed: &'a [String],
    errors: Vec<BuildError>,
}

impl StepBuilder<'_> {
    fn compile(
        &mut self,
        source: &str,
        location: String,
        role: ProgramRole,
    ) -> Option<CompiledProgram> {
        CompiledProgram::compile(source, &self.functions, location, self.allowed, role)
            .map_err(|diagnostic| {
                self.errors.push(BuildError::Vrl {
                    pipeline: self.id.to_owned(),
                    diagnostic,
                })
            })
            .ok()
    }

    fn setting(&mut self, location: String, message: String) {
        self.errors.push(BuildError::StepSetting {
            pipeline: self.id.to_owned(),
            location,
            message,
        });
    }

    /// Builds one step; `None` when it has problems, which are recorded.
    fn step(
        &mut self,
        index: usize,
        step_config: &StepConfig,
        route_names: &[String],
    ) -> Option<Box<dyn Step>> {
        match step_config {
            StepConfig::Transform { source } => self
                .compile(
                    source,
                    format!("steps[{index}].source"),
                    ProgramRole::Transform,
                )
                .map(|program| Box::new(TransformStep::new(program)) as Box<dyn Step>),
            StepConfig::Filter { condition } => self
                .compile(
                    condition,
                    format!("steps[{index}].condition"),
                    ProgramRole::Condition,
                )
                .map(|program| Box::new(FilterStep::new(program)) as Box<dyn Step>),
            StepConfig::Route { routes } => {
                let compiled: Vec<_> = routes
                    .iter()
                    .filter_map(|(name, condition)| {
                        let program = self.compile(
                            condition,
                            format!("steps[{index}].routes.{name}"),
                            ProgramRole::Condition,
                        )?;
                        // Route ports follow the main port, in config order.
                        let port = route_names.iter().position(|route| route == name)? + 1;
                        Some((port, program))
                    })
                    .collect();
                (compiled.len() == routes.len())
                    .then(|| Box::new(RouteStep::new(compiled)) as Box<dyn Step>)
            }
            StepConfig::Partition { key, lanes } => {
                if *lanes == 0 {
                    self.setting(
                        format!("steps[{index}].lanes"),
                        "must be at least 1".to_owned(),
                    );
                }
                let key = self.compile(key, format!("steps[{index}].key"), ProgramRole::Expression);
                let key = key?;
                (*lanes > 0).then(|| Box::new(PartitionStep::new(key, *lanes)) as Box<dyn Step>)
            }
            StepConfig::Batch {
                max_events,
                max_bytes,
                timeout,
                group_by,
                per_stream,
            } => {
                let mut valid = true;
                if *max_events == 0 {
                    valid = false;
                    self.setting(
                        format!("steps[{index}].max_events"),
                        "must be at least 1".to_owned(),
                    );
                }
                if *max_bytes == Some(0) {
                    valid = false;
                    self.setting(
                        format!("steps[{index}].max_bytes"),
                        "must be at least 1 (leave it out for no limit)".to_owned(),
                    );
                }
                let mut groups = Vec::new();
                for (name, expression) in group_by {
                    if BATCH_FIELDS.contains(&name.as_str()) {
                        valid = false;
                        self.setting(
                            format!("steps[{index}].group_by.{name}"),
                            format!(
                                "is a field the batch event sets itself ({}); choose another name",
                                BATCH_FIELDS.join(", ")
                            ),
                        );
                    }
                    match self.compile(
                        expression,
                        format!("steps[{index}].group_by.{name}"),
                        ProgramRole::Expression,
                    ) {
                        Some(program) => groups.push((name.clone(), program)),
                        None => valid = false,
                    }
                }
                valid.then(|| {
                    Box::new(BatchStep::new(BatchSettings {
                        max_events: *max_events,
                        max_bytes: *max_bytes,
                        timeout: *timeout,
                        group_by: groups,
                        per_stream: *per_stream,
                    })) as Box<dyn Step>
                })
            }
        }
    }
}

/// Route names in config order, with every bad one reported.
fn route_names(id: &str, steps: &[StepConfig], errors: &mut Vec<BuildError>) -> Vec<String> {
    let mut names = Vec::new();
    let mut seen = BTreeMap::new();
    for (index, step) in steps.iter().enumerate() {
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
                    location: format!("steps[{index}].routes.{name}"),
                    reason,
                }),
                None => names.push(name.clone()),
            }
        }
    }
    names
}
