//! `[destinations.<id>]` settings: the destination's connection and defaults, and its
//! actions. A destination with one job to do may write `inputs` and the action's keys on
//! itself: that is one action named `default`.

use std::collections::BTreeMap;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

/// The name of the action a destination has when its action's keys are on itself.
pub const DEFAULT_ACTION: &str = "default";

/// A destination as configured.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// What it loads into: `http`, `postgres`, or `connector` (a sending connector of the
    /// core: file, stdout, tcp_client, ws_client, http_client).
    pub kind: String,
    /// `http`: the base URL; an action's `path` is appended. The host always comes from
    /// here, so an event cannot point a request elsewhere. `postgres`: the database URL.
    #[serde(default)]
    pub url: String,
    /// `connector`: a sending connector's table (`kind` and its keys), which loads the jobs.
    #[serde(default)]
    pub connector: Option<serde_json::Value>,
    /// `postgres`: the table rows go to (`schema.table`).
    #[serde(default)]
    pub table: Option<String>,
    /// `postgres`: the columns of a unique key to upsert on; none for plain inserts.
    #[serde(default)]
    pub key: Vec<String>,
    /// Request headers for every action.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `realtime` (load each job once stored), `@every 10m`, or a cron expression with
    /// seconds (`0 */5 * * * *`): jobs wait and are loaded together at each tick.
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// How failed jobs are retried.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Loads at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Most loads started per period, such as `200/s` or `1000/m`.
    #[serde(default)]
    pub rate_limit: Option<String>,
    /// Pauses loads after failures in a row.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// Standard Webhooks signatures on every request.
    #[serde(default)]
    pub signing: Option<SigningConfig>,
    /// How long a load may take before it counts as failed (and is retried).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Jobs per request: 1 sends one request per job; more sends a batch as `body` says.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// A batch's body: `ndjson` (one payload per line) or `array` (a JSON array).
    #[serde(default)]
    pub batch_body: BatchBody,
    /// How long a claim holds a job unless renewed (every third of it while the load runs);
    /// a job whose process died is taken up again this long after its last renewal.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
    /// How long a succeeded job is kept before it is pruned.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// Actions by name.
    #[serde(default)]
    pub actions: IndexMap<String, ActionConfig>,
}

/// The keys of an action, which a destination with one action may write on itself.
pub const ACTION_KEYS: &[&str] = &[
    "inputs",
    "marshal",
    "method",
    "path",
    "version",
    "deprecated_after",
    "retry_on",
    "on_succeeded",
    "on_failed",
    "on_discarded",
];

/// How a batch of jobs is sent in one request.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BatchBody {
    /// One JSON payload per line.
    #[default]
    Ndjson,
    /// One JSON array of payloads.
    Array,
}

/// One action of a destination.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// Outputs it reads.
    pub inputs: Vec<String>,
    /// VRL whose result is the job's payload; without it the payload is the event.
    #[serde(default)]
    pub marshal: Option<String>,
    /// HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Path after the destination's URL; `{{ VRL }}` parts are filled from the event (and
    /// percent-encoded), once, when the job is stored.
    #[serde(default)]
    pub path: String,
    /// The action's version, recorded on each job.
    #[serde(default)]
    pub version: Option<String>,
    /// When the version is deprecated (RFC 3339 date or time); `validate` warns past it.
    #[serde(default)]
    pub deprecated_after: Option<String>,
    /// 4xx codes retried instead of discarded (408 and 429 always are).
    #[serde(default)]
    pub retry_on: Vec<u16>,
    /// Actions (`destination.action`, or `action` of this destination) given a job when one
    /// of this action's jobs succeeds.
    #[serde(default)]
    pub on_succeeded: Vec<String>,
    /// ... when an attempt fails and will be retried.
    #[serde(default)]
    pub on_failed: Vec<String>,
    /// ... when a job is discarded (retries exhausted, or a permanent error).
    #[serde(default)]
    pub on_discarded: Vec<String>,
}

/// `retry = { ... }`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt; then the job is discarded.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// The wait before the first retry; it doubles each time.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Spread each wait by ±20 %, so jobs that failed together do not retry together.
    #[serde(default = "default_true")]
    pub jitter: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: default_max_retries(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            jitter: true,
        }
    }
}

/// `circuit_breaker = { ... }`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Failed loads in a row that open the circuit.
    pub consecutive_failures: u32,
    /// How long it stays open before one probe load is let through.
    #[serde(with = "humantime_serde")]
    pub cool_down: Duration,
}

/// `signing = { secret = "whsec_..." }` or `{ secrets = [...] }` while rotating.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// One secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// Several secrets, each signing every request (for rotation).
    #[serde(default)]
    pub secrets: Vec<String>,
}

fn default_schedule() -> String {
    "realtime".to_owned()
}

fn default_concurrency() -> u32 {
    8
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_batch_size() -> u32 {
    1
}

fn default_lease() -> Duration {
    Duration::from_secs(15)
}

fn default_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_method() -> String {
    "POST".to_owned()
}

/// With 5 s doubling up to 10 h, 19 retries span about 71 hours: about three days, as
/// Svix's schedule and the Standard Webhooks spec keep a failing message.
fn default_max_retries() -> u32 {
    19
}

fn default_initial_backoff() -> Duration {
    Duration::from_secs(5)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(10 * 3600)
}

fn default_true() -> bool {
    true
}

impl DestinationConfig {
    /// Reads a destination's table (without `kind`'s siblings removed). Action keys
    /// written on the destination itself become the action [`DEFAULT_ACTION`]; a problem's
    /// path is the key's path as written.
    ///
    /// # Errors
    ///
    /// The path of the first key that does not fit, and what is wrong with it.
    pub fn read(table: &serde_json::Value) -> Result<Self, (String, String)> {
        let mut table = table.clone();
        let mut shorthand = false;
        if let Some(object) = table.as_object_mut()
            && object.contains_key("inputs")
        {
            let mut action = serde_json::Map::new();
            for key in ACTION_KEYS {
                if let Some(value) = object.remove(*key) {
                    action.insert((*key).to_owned(), value);
                }
            }
            if object.contains_key("actions") {
                return Err((
                    "inputs".to_owned(),
                    "a destination with `actions` takes its inputs in each action; move `inputs` (and the action's keys) into one".to_owned(),
                ));
            }
            let mut actions = serde_json::Map::new();
            actions.insert(DEFAULT_ACTION.to_owned(), serde_json::Value::Object(action));
            object.insert("actions".to_owned(), serde_json::Value::Object(actions));
            shorthand = true;
        }
        let config: Self = serde_path_to_error::deserialize(table).map_err(|error| {
            let mut path = error.path().to_string();
            if shorthand {
                let prefix = format!("actions.{DEFAULT_ACTION}.");
                if let Some(key) = path.strip_prefix(&prefix) {
                    path = key.to_owned();
                }
            }
            (path, error.inner().to_string())
        })?;
        if config.actions.is_empty() {
            return Err((
                String::new(),
                "a destination needs an action: give it `inputs` (and the action's keys), or [destinations.<id>.actions.<name>] tables".to_owned(),
            ));
        }
        Ok(config)
    }

    /// Every output the destination reads, each once, in the order the actions name them.
    pub fn inputs(&self) -> Vec<String> {
        let mut inputs: Vec<String> = Vec::new();
        for action in self.actions.values() {
            for input in &action.inputs {
                if !inputs.contains(input) {
                    inputs.push(input.clone());
                }
            }
        }
        inputs
    }
}
