//! An action, compiled: what turns an event into a job (`marshal`, the path template) and
//! what its jobs need when they are loaded and settled.

use tb_event::Event;
use tb_pipeline::{Expression, ExpressionRuntime};
use tb_store::{JobId, JsonText, NewJob};
use vrl::value::Value;

use crate::config::{ActionConfig, DEFAULT_ACTION};
use crate::template::Template;

/// A chained action: the destination and action a new job goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The destination.
    pub destination: String,
    /// Its action.
    pub action: String,
}

/// One action of a destination, ready to make and load jobs.
pub struct Action {
    /// Its name.
    pub name: String,
    marshal: Option<Expression>,
    path: Template,
    /// The HTTP method of its requests.
    pub method: reqwest::Method,
    /// The version its jobs record.
    pub version: Option<String>,
    /// When that version stops being supported.
    pub deprecated_after: Option<chrono::DateTime<chrono::Utc>>,
    /// 4xx codes retried rather than discarded.
    pub retry_on: Vec<u16>,
    /// Chained actions, by outcome.
    pub on_succeeded: Vec<Target>,
    /// ... after a failed attempt that will be retried.
    pub on_failed: Vec<Target>,
    /// ... after a job is discarded.
    pub on_discarded: Vec<Target>,
}

/// A problem with a key of the destination's table: its path and what is wrong.
pub type KeyProblem = (String, String);

impl Action {
    /// Compiles `config`, named `name`, of destination `destination`; `prefix` is where
    /// its keys are written (`actions.<name>.` or nothing, for the shorthand).
    ///
    /// # Errors
    ///
    /// Every problem, each with its key's path.
    pub fn build(
        destination: &str,
        name: &str,
        config: &ActionConfig,
    ) -> Result<Self, Vec<KeyProblem>> {
        let prefix = if name == DEFAULT_ACTION {
            String::new()
        } else {
            format!("actions.{name}.")
        };
        let mut problems = Vec::new();
        let marshal = match &config.marshal {
            None => None,
            Some(source) => Expression::compile(source, format!("{destination}.{name}.marshal"))
                .map_err(|problem| problems.push((format!("{prefix}marshal"), problem.message)))
                .ok(),
        };
        let path = Template::compile(&config.path, &format!("{destination}.{name}.path"))
            .map_err(|problem| problems.push((format!("{prefix}path"), problem.message)))
            .ok();
        if !config.path.is_empty() && !config.path.starts_with('/') {
            problems.push((
                format!("{prefix}path"),
                format!("path `{}` must start with `/`", config.path),
            ));
        }
        let method = reqwest::Method::from_bytes(config.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                problems.push((
                    format!("{prefix}method"),
                    format!("`{}` is not an HTTP method", config.method),
                ))
            })
            .ok();
        let deprecated_after = match config.deprecated_after.as_deref().map(parse_date) {
            None => None,
            Some(Ok(at)) => Some(at),
            Some(Err(())) => {
                problems.push((
                    format!("{prefix}deprecated_after"),
                    "deprecated_after must be a date such as \"2026-12-31\" or an RFC 3339 time"
                        .to_owned(),
                ));
                None
            }
        };
        let mut targets = |key: &str, names: &[String]| {
            names
                .iter()
                .enumerate()
                .filter_map(|(index, target)| match target.split_once('.') {
                    Some((destination, action)) if !destination.is_empty() && !action.is_empty() => Some(Target {
                        destination: destination.to_owned(),
                        action: action.to_owned(),
                    }),
                    None if !target.is_empty() => Some(Target {
                        destination: destination.to_owned(),
                        action: target.clone(),
                    }),
                    _ => {
                        problems.push((
                            format!("{prefix}{key}[{index}]"),
                            format!("`{target}` must name an action as \"destination.action\" (or \"action\" of this destination)"),
                        ));
                        None
                    }
                })
                .collect::<Vec<_>>()
        };
        let on_succeeded = targets("on_succeeded", &config.on_succeeded);
        let on_failed = targets("on_failed", &config.on_failed);
        let on_discarded = targets("on_discarded", &config.on_discarded);
        let (Some(path), Some(method), true) = (path, method, problems.is_empty()) else {
            return Err(problems);
        };
        Ok(Self {
            name: name.to_owned(),
            marshal,
            path,
            method,
            version: config.version.clone(),
            deprecated_after,
            retry_on: config.retry_on.clone(),
            on_succeeded,
            on_failed,
            on_discarded,
        })
    }

    /// Every chained target with the key that names it (`on_succeeded[0]`), for checks of
    /// the whole config.
    pub fn targets(&self) -> Vec<(String, &Target)> {
        [
            ("on_succeeded", &self.on_succeeded),
            ("on_failed", &self.on_failed),
            ("on_discarded", &self.on_discarded),
        ]
        .into_iter()
        .flat_map(|(key, targets)| {
            targets
                .iter()
                .enumerate()
                .map(move |(index, target)| (format!("{key}[{index}]"), target))
        })
        .collect()
    }

    /// The request path for a job stored without one (a chained job): the template filled
    /// from its payload.
    ///
    /// # Errors
    ///
    /// As [`Template::render`].
    pub fn path_for(
        &self,
        payload: &Value,
        runtime: &mut ExpressionRuntime,
    ) -> Result<String, String> {
        self.path.render(payload, &|| Value::Null, runtime)
    }

    /// The job for `event`: its payload (marshalled) and, in its context, the request path
    /// and where the event came from.
    ///
    /// # Errors
    ///
    /// Why the event cannot become a job (marshal failed, a path value is missing).
    pub fn job(
        &self,
        destination: &str,
        event: &Event,
        runtime: &mut ExpressionRuntime,
    ) -> Result<NewJob, String> {
        let metadata = || event.meta.to_vrl_metadata();
        let mut payload = Vec::with_capacity(256);
        match &self.marshal {
            None => tb_codec::write_json(&event.value, &mut payload),
            Some(marshal) => {
                let marshalled = marshal
                    .evaluate(&event.value, metadata, runtime)
                    .map_err(|error| format!("marshal failed: {error}"))?;
                tb_codec::write_json(&marshalled, &mut payload);
            }
        }
        // The writer writes UTF-8 only (invalid bytes as U+FFFD, as serde_json does).
        let payload =
            String::from_utf8(payload).map_err(|_| "the payload is not UTF-8".to_owned())?;
        let path = self
            .path
            .render(&event.value, &metadata, runtime)
            .map_err(|error| format!("path: {error}"))?;
        let context = JobContext {
            connector: event.meta.id.connector.as_str(),
            received_at: event.meta.received_at.to_rfc3339(),
            path: &path,
        };
        let context = serde_json::to_string(&context)
            .map_err(|error| format!("the job's context: {error}"))?;
        Ok(NewJob {
            id: JobId::new(),
            destination: destination.to_owned(),
            action: self.name.clone(),
            version: self.version.clone(),
            payload: JsonText::from_trusted(payload),
            context: JsonText::from_trusted(context),
            run_at: None,
        })
    }
}

/// What a job keeps of where it came from, written straight to JSON.
#[derive(serde::Serialize)]
struct JobContext<'a> {
    connector: &'a str,
    received_at: String,
    path: &'a str,
}

/// `2026-12-31` (midnight UTC) or an RFC 3339 time.
fn parse_date(text: &str) -> Result<chrono::DateTime<chrono::Utc>, ()> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|time| time.and_utc())
        .ok_or(())
}
