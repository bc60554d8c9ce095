//! Tightbeam's pipelines: ordered steps that transform, filter, route, partition and batch
//! events.
//!
//! A [`Pipeline`] is compiled once from its [`PipelineConfig`] (every VRL program is checked
//! at build time, so no config error waits for the first event) and then runs batch after
//! batch on one task. Each batch is sorted into the pipeline's [`OutputPorts`]: the main
//! output, one per route, ports steps add for themselves, `_unmatched` and `_errors`.
//! Steps may hold events between batches; the runtime asks [`Pipeline::next_deadline`],
//! calls [`Pipeline::on_timer`] then, and [`Pipeline::flush`] on drain and reload. A
//! pipeline with a `partition` step splits ([`Pipeline::split_lanes`]) into a head and lanes
//! the runtime runs in parallel.
//!
//! Design choices: events are processed in batches so per-event costs stay small; the VRL
//! metadata view (`%tightbeam`) is only built for programs that read it; conditions and key
//! expressions are compiled read-only; a filtered event is acknowledged as done explicitly,
//! and a failing event goes to `_errors` with its message, so nothing leaves a pipeline
//! without a status and a count.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

mod config;
mod error;
mod expression;
mod functions;
mod pipeline;
mod program;
mod step;
mod steps;

pub use config::{PipelineConfig, StepConfig};
pub use error::{BuildError, VrlDiagnostic};
pub use expression::{Expression, ExpressionRuntime};
pub use functions::{RESTRICTED_FUNCTIONS, function_registry};
pub use pipeline::{OutputPorts, Outputs, Pipeline, PipelineCounts, PortId};
