//! Pipeline configuration as written under `[pipelines.<id>]`.

use std::collections::BTreeMap;
use std::time::Duration;

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
    /// Sorts events into `lanes` by a key, so the steps after this one run in parallel
    /// lanes while events of one key keep their order. At most one per pipeline.
    Partition {
        /// A read-only VRL expression giving the key (`.user_id`); events with the same
        /// key always go to the same lane. A key that fails at run time sends the event to
        /// `<pipeline>._errors`.
        key: String,
        /// Number of lanes, at least 1; defaults to the number of CPUs available.
        #[serde(default = "default_lanes")]
        lanes: usize,
    },
    /// Gathers events into one event `{"events": [...], "count": n}` (plus the `group_by`
    /// fields) whose acknowledgement completes every original.
    Batch {
        /// A batch closes when it holds this many events.
        #[serde(default = "default_max_events")]
        max_events: usize,
        /// A batch closes before an event would take its estimated JSON size past this; an
        /// event this large or larger makes a batch alone. No limit when absent.
        #[serde(default)]
        max_bytes: Option<usize>,
        /// A batch closes this long after its first event (`"500ms"`, `"1s"`, `"2m"`).
        #[serde(default = "default_batch_timeout", with = "humantime_serde")]
        timeout: Duration,
        /// Field name to read-only VRL expression: one batch is open per distinct tuple of
        /// values, and each value is set on the batch event under its name. An expression
        /// that fails at run time sends the event to `<pipeline>._errors`.
        #[serde(default)]
        group_by: BTreeMap<String, String>,
        /// When true, one batch is open per source stream (connector and stream id), so a
        /// batch never mixes events of two connections or requests.
        #[serde(default)]
        per_stream: bool,
    },
}

/// One lane per CPU the process may use, and at least one.
pub(crate) fn default_lanes() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

fn default_max_events() -> usize {
    1000
}

fn default_batch_timeout() -> Duration {
    Duration::from_secs(1)
}
