//! Pipeline configuration as written under `[pipelines.<id>]`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One pipeline: where its events come from and the steps they run through.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Outputs this pipeline reads from: `<connector>`, `<pipeline>`, `<pipeline>.<route>`,
    /// `<id>._errors`, `<pipeline>._unmatched`.
    pub inputs: Vec<String>,
    /// Steps, run in order on every event.
    #[serde(default)]
    pub steps: Vec<StepConfig>,
    /// VRL functions that reach outside the process (`http_request`, `dns_lookup`,
    /// `reverse_dns`, `get_hostname`, `get_env_var`) are disabled unless named here.
    #[serde(default)]
    pub allow_functions: Vec<String>,
}

/// One step of a pipeline.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepConfig {
    /// Runs a VRL program that rewrites the event in place (`.field = ...`). If the program
    /// leaves an array at the root, each element becomes an event.
    Transform {
        /// The VRL program.
        source: String,
    },
    /// Keeps events for which the VRL condition is `true`; the others are dropped, counted,
    /// and acknowledged as done.
    Filter {
        /// A VRL expression returning a boolean.
        condition: String,
    },
    /// Sends a copy of the event to `<pipeline>.<route>` for every route whose condition is
    /// `true`, and takes it out of the main flow. An event that matches no route goes on to
    /// the next step (and so to `<pipeline>`), and a copy goes to `<pipeline>._unmatched`
    /// if anything reads it.
    Route {
        /// Route name to VRL condition.
        routes: BTreeMap<String, String>,
    },
}
