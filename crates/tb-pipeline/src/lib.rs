//! Tightbeam's pipelines: ordered VRL steps that transform, filter and route events.
//!
//! A [`Pipeline`] is compiled once from its [`PipelineConfig`] (every VRL program is checked
//! at build time, so no config error waits for the first event) and then runs batch after
//! batch on one task. Each batch is sorted into the pipeline's [`OutputPorts`]: the main
//! output, one per route, `_unmatched` and `_errors`.
//!
//! Design choices: events are processed in batches so per-event costs stay small; the VRL
//! metadata view (`%tightbeam`) is only built for programs that read it; a filtered event is
//! acknowledged as done explicitly, and a failing event goes to `_errors` with its message,
//! so nothing leaves a pipeline without a status and a count.
#![deny(missing_docs)]

mod config;
mod functions;
mod pipeline;
mod step;

pub use config::{PipelineConfig, StepConfig};
pub use functions::{RESTRICTED_FUNCTIONS, function_registry};
pub use pipeline::{OutputPorts, Pipeline, PipelineCounts, PortId};
pub use step::{BuildError, VrlDiagnostic};
