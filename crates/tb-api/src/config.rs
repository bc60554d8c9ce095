//! `/api/v1/config`: the running config (secrets masked), and a new one pushed as TOML, YAML
//! or JSON, applied by a live reload.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use tb_runtime::{ReloadOutcome, RuntimeHandle};

/// `GET`: the running config as JSON, with secrets masked.
pub(crate) async fn get_config(State(handle): State<RuntimeHandle>) -> impl IntoResponse {
    axum::Json(handle.config())
}

#[derive(Deserialize)]
pub(crate) struct FormatQuery {
    format: Option<String>,
}

/// The largest config that may be pushed.
const MAX_CONFIG_BYTES: usize = 2 * 1024 * 1024;

/// How long a pushed config may take to arrive (`api.body_timeout`).
#[derive(Clone, Copy)]
pub(crate) struct BodyTimeout(pub(crate) std::time::Duration);

/// Reads a pushed config: 413 past [`MAX_CONFIG_BYTES`], 408 when it does not arrive within
/// `timeout`, 400 when it is not UTF-8.
async fn read_body(
    body: axum::body::Body,
    timeout: std::time::Duration,
) -> Result<String, (StatusCode, axum::Json<serde_json::Value>)> {
    let refuse = |status, error: String| {
        (
            status,
            axum::Json(serde_json::json!({ "status": "invalid", "error": error })),
        )
    };
    let reading = axum::body::to_bytes(body, MAX_CONFIG_BYTES);
    let Ok(read) = tokio::time::timeout(timeout, reading).await else {
        return Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            format!("the config did not arrive within body_timeout ({timeout:?})"),
        ));
    };
    let bytes = read.map_err(|error| {
        let inner = error.into_inner();
        if inner.is::<http_body_util::LengthLimitError>() {
            refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a config may be at most {MAX_CONFIG_BYTES} bytes"),
            )
        } else {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("cannot read the config: {inner}"),
            )
        }
    })?;
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        refuse(
            StatusCode::BAD_REQUEST,
            "the config is not UTF-8 text".to_owned(),
        )
    })
}

/// `PUT`: replaces the running config. 200 with what changed; 400 with every problem (as
/// `validate` reports them) and nothing changed; 503 while shutting down.
pub(crate) async fn put_config(
    State(handle): State<RuntimeHandle>,
    Query(query): Query<FormatQuery>,
    axum::Extension(BodyTimeout(timeout)): axum::Extension<BodyTimeout>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> impl IntoResponse {
    let body = match read_body(body, timeout).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let format = query
        .format
        .unwrap_or_else(|| format_from_content_type(&headers).to_owned());
    if !matches!(format.as_str(), "toml" | "yaml" | "yml" | "json") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({
                "status": "invalid",
                "error": format!("unknown format `{format}`; use toml, yaml or json (?format= or Content-Type)"),
            })),
        );
    }
    match handle.reload(body, &format).await {
        ReloadOutcome::Applied(summary) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({
                "status": "applied",
                "added": summary.added,
                "changed": summary.changed,
                "removed": summary.removed,
                "unchanged": summary.unchanged,
                "took_ms": summary.took.as_secs_f64() * 1000.0,
            })),
        ),
        ReloadOutcome::Invalid(problems) => {
            let problems: Vec<serde_json::Value> = problems
                .0
                .iter()
                .map(|problem| {
                    serde_json::json!({
                        "file": problem.file.display().to_string(),
                        "line": problem.line,
                        "column": problem.column,
                        "message": problem.message,
                        "text": problem.to_string(),
                    })
                })
                .collect();
            (
                StatusCode::BAD_REQUEST,
                axum::Json(serde_json::json!({ "status": "invalid", "problems": problems })),
            )
        }
        ReloadOutcome::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "status": "unavailable",
                "error": "the engine is shutting down and takes no reloads",
            })),
        ),
    }
}

fn format_from_content_type(headers: &HeaderMap) -> &'static str {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if content_type.contains("json") {
        "json"
    } else if content_type.contains("yaml") {
        "yaml"
    } else {
        "toml"
    }
}
