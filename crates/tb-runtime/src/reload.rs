//! Live reload: SIGHUP, `--watch` on the config files, and configs pushed through the API.
//!
//! A new config is loaded and built first, exactly as `validate` does; if it has problems
//! nothing changes and the problems are reported (as a list for the API, one log line each
//! for a signal or a file change). Otherwise the engine reconciles to it (see
//! `Engine::reconcile`): untouched components keep running with their sockets and state.
//! Reloads are applied one at a time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use tb_connectors::core::{REDACTED, is_credential_name, redact_url};

use crate::config::{ComponentClass, Config, Problems, load, load_pushed};
use crate::graph::Topology;
use crate::run::{Engine, RunningTopology};

/// A request to reload, pushed through the API.
#[derive(Debug)]
pub enum ReloadRequest {
    /// A whole config as text.
    Text {
        /// The config.
        text: String,
        /// `toml`, `yaml` or `json`.
        format: String,
        /// Where the outcome goes.
        reply: oneshot::Sender<ReloadOutcome>,
    },
}

/// What a reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Components that started.
    pub added: Vec<String>,
    /// Components replaced by their new config.
    pub changed: Vec<String>,
    /// Components stopped and gone.
    pub removed: Vec<String>,
    /// Components that kept running untouched.
    pub unchanged: Vec<String>,
    /// How long the reconcile took.
    pub took: Duration,
}

/// How a reload ended.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The new config runs.
    Applied(ReloadSummary),
    /// The new config has problems; the running topology goes on unchanged.
    Invalid(Problems),
    /// The engine is shutting down and takes no reloads.
    Unavailable,
}

/// Applies reloads to a running engine.
#[derive(Clone)]
pub struct Reloader {
    engine: Arc<Mutex<Engine>>,
    paths: Vec<PathBuf>,
}

impl RunningTopology {
    /// A reloader for this engine, reading `paths` on SIGHUP and `--watch`.
    pub fn reloader(&self, paths: Vec<PathBuf>) -> Reloader {
        Reloader {
            engine: self.engine.clone(),
            paths,
        }
    }
}

impl Reloader {
    /// Loads the config files again (with `${VAR}` from the environment) and reconciles.
    pub async fn reload_files(&self) -> ReloadOutcome {
        self.apply(load(&self.paths)).await
    }

    /// Reconciles to a config given as text; `${...}` in it is never expanded.
    pub async fn reload_text(&self, text: String, format: &str) -> ReloadOutcome {
        let extension = match format {
            "yaml" | "yml" => "yaml",
            "json" => "json",
            _ => "toml",
        };
        let name = PathBuf::from(format!("api-config.{extension}"));
        self.apply(load_pushed(name, text)).await
    }

    async fn apply(&self, loaded: Result<Config, Problems>) -> ReloadOutcome {
        let config = match loaded {
            Ok(config) => config,
            Err(problems) => return ReloadOutcome::Invalid(problems),
        };
        let mut engine = self.engine.lock().await;
        if engine.is_shutting_down() {
            return ReloadOutcome::Unavailable;
        }
        warn_about_settings_that_need_a_restart(&engine.config, &config);
        let builders = engine.builders().clone();
        match Topology::build(config, &builders) {
            Ok(topology) => ReloadOutcome::Applied(engine.reconcile(topology).await),
            Err(problems) => ReloadOutcome::Invalid(problems),
        }
    }

    /// Serves reloads until `stop`: pushed requests, SIGHUP, and (when `watch` is set) a
    /// change to any config file, checked at that interval.
    pub async fn run(
        self,
        mut requests: mpsc::Receiver<ReloadRequest>,
        watch: Option<Duration>,
        stop: CancellationToken,
    ) {
        let mut hangups = hangup_signals();
        let mut watched = FileWatch::new(&self.paths);
        let mut ticks = tokio::time::interval(watch.unwrap_or(Duration::from_secs(3600)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                Some(request) = requests.recv() => match request {
                    ReloadRequest::Text { text, format, reply } => {
                        let outcome = self.reload_text(text, &format).await;
                        log_outcome("api", &outcome);
                        let _ = reply.send(outcome);
                    }
                },
                Some(()) = next_hangup(&mut hangups) => {
                    tracing::info!("SIGHUP received; reloading the config files.");
                    log_outcome("SIGHUP", &self.reload_files().await);
                }
                _ = ticks.tick(), if watch.is_some() => {
                    if watched.changed() {
                        tracing::info!("A config file changed; reloading.");
                        log_outcome("watch", &self.reload_files().await);
                    }
                }
            }
        }
    }
}

impl Engine {
    pub(crate) fn builders(&self) -> &crate::supervise::Builders {
        &self.builders
    }
}

fn log_outcome(trigger: &str, outcome: &ReloadOutcome) {
    match outcome {
        ReloadOutcome::Applied(summary) => tracing::info!(
            trigger,
            added = ?summary.added,
            changed = ?summary.changed,
            removed = ?summary.removed,
            unchanged = summary.unchanged.len(),
            took = ?summary.took,
            "Config reloaded."
        ),
        ReloadOutcome::Invalid(problems) => {
            for problem in &problems.0 {
                tracing::error!(trigger, %problem, "Reload refused: the new config has a problem; the running topology goes on unchanged.");
            }
        }
        ReloadOutcome::Unavailable => {}
    }
}

fn warn_about_settings_that_need_a_restart(running: &Config, new: &Config) {
    if running.api != new.api {
        tracing::warn!("api.address changes take effect at the next start, not on reload.");
    }
    if running.data_dir != new.data_dir {
        tracing::warn!(
            "data_dir changes apply to components started from now on; running ones keep theirs."
        );
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

#[cfg(unix)]
fn hangup_signals() -> Hangups {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "SIGHUP handler could not be installed; reload through the API or --watch.");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signals() -> Hangups {
    None
}

#[cfg(unix)]
async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    match hangups {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_hangups: &mut Hangups) -> Option<()> {
    std::future::pending().await
}

/// The config files' contents as last seen, to tell when one changed. Contents, not
/// modification times: editors that write a new file and rename it, and clocks with coarse
/// resolution, both fool mtimes.
struct FileWatch {
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl FileWatch {
    fn new(paths: &[PathBuf]) -> Self {
        Self {
            files: paths
                .iter()
                .map(|path| (path.clone(), std::fs::read(path).ok()))
                .collect(),
        }
    }

    fn changed(&mut self) -> bool {
        let mut changed = false;
        for (path, seen) in &mut self.files {
            let now = std::fs::read(&*path).ok();
            if now != *seen {
                *seen = now;
                changed = true;
            }
        }
        changed
    }
}

/// The running config as JSON, with every connector value under a credential-looking key
/// masked, and userinfo passwords and credential query values masked in URLs. Pipelines
/// are shown as written: their keys (`key`, `source`) name VRL, not secrets.
pub(crate) fn masked_config(config: &Config) -> serde_json::Value {
    let mut connectors = serde_json::Map::new();
    let mut pipelines = serde_json::Map::new();
    let mut destinations = serde_json::Map::new();
    for spec in config.components.values() {
        match spec.class {
            ComponentClass::Connector { .. } => {
                connectors.insert(spec.id.clone(), mask(&spec.raw, None))
            }
            ComponentClass::Destination(_) => {
                destinations.insert(spec.id.clone(), mask(&spec.raw, None))
            }
            ComponentClass::Pipeline(_) => pipelines.insert(spec.id.clone(), spec.raw.clone()),
        };
    }
    serde_json::json!({
        "data_dir": config.data_dir.display().to_string(),
        "shutdown_grace": humantime::format_duration(config.shutdown_grace).to_string(),
        "api": { "address": config.api.address.clone().unwrap_or_else(|| "off".to_owned()) },
        "store": {
            "url": config.store.url.as_deref().map(redact_url),
            "durability": match config.store.durability {
                tb_store::Durability::Full => "full",
                tb_store::Durability::Normal => "normal",
            },
        },
        "connectors": connectors,
        "pipelines": pipelines,
        "destinations": destinations,
    })
}

fn mask(value: &serde_json::Value, key: Option<&str>) -> serde_json::Value {
    use serde_json::Value;
    if key.is_some_and(is_credential_name) && !value.is_object() && !value.is_array() {
        return Value::String(REDACTED.to_owned());
    }
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(name, inner)| (name.clone(), mask(inner, Some(name))))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|item| mask(item, key)).collect()),
        Value::String(text) if text.contains("://") || text.contains('?') => {
            Value::String(redact_url(text))
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_keys_and_urls() {
        let value = serde_json::json!({
            "url": "ws://user:hunter2@127.0.0.1:9000/feed?apikey=abc&topic=x",
            "headers": { "Authorization": "Bearer abc", "Accept": "json" },
            "password": "hunter2",
            "api_token": "t0k3n",
            "keys": ["a", "b"],
        });
        let masked = mask(&value, None).to_string();
        for secret in ["hunter2", "abc", "t0k3n", "Bearer"] {
            assert!(!masked.contains(secret), "{secret} shown in {masked}");
        }
        assert!(masked.contains("topic=x"));
        assert!(masked.contains("\"Accept\":\"json\""));
        assert!(
            masked.contains("[\"a\",\"b\"]"),
            "a list under a plain key stays: {masked}"
        );
    }
}
