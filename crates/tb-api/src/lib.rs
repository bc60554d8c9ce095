//! Tightbeam's HTTP API: `/health` (liveness), `/ready` (every component running),
//! `/metrics` (Prometheus text), `/api/v1/topology`, and `/api/v1/config` (read the running
//! config with secrets masked; replace it with a live reload), `/api/v1/destinations` and
//! `/api/v1/jobs` (durable delivery's jobs and dead letters).
//!
//! This is the only crate that turns runtime types into JSON: the runtime exposes a narrow
//! read-only [`RuntimeHandle`], and the shapes clients see are defined here.
#![deny(missing_docs)]

mod config;
mod jobs;
mod topology;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tb_runtime::{MetricsFormat, RuntimeHandle};

pub use topology::TopologyDto;

/// The API's routes over a running topology; a pushed config must arrive within
/// `body_timeout`.
pub fn router(handle: RuntimeHandle, body_timeout: std::time::Duration) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/ready", get(ready))
        .route("/api/v1/topology", get(topology))
        .route("/api/v1/destinations", get(jobs::destinations))
        .route("/api/v1/jobs", get(jobs::list))
        .route("/api/v1/jobs/retry", post(jobs::retry_matching))
        .route("/api/v1/jobs/{id}", get(jobs::show).delete(jobs::delete))
        .route("/api/v1/jobs/{id}/retry", post(jobs::retry))
        .route("/api/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route(
            "/api/v1/config",
            get(config::get_config).put(config::put_config),
        )
        .with_state(handle)
        .layer(axum::Extension(config::BodyTimeout(body_timeout)))
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// 200 when every component is running (or has finished), else 503 naming each component
/// that is not, with its status, since when, and its last error.
async fn ready(State(handle): State<RuntimeHandle>) -> impl IntoResponse {
    let not_ready: Vec<serde_json::Value> = handle
        .not_ready()
        .into_iter()
        .map(|(id, record)| {
            serde_json::json!({
                "id": id,
                "status": record.status.as_str(),
                "since": record.since.to_rfc3339(),
                "last_error": record.last_error,
            })
        })
        .collect();
    if not_ready.is_empty() {
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "status": "ready" })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "not ready", "components": not_ready })),
        )
    }
}

/// The Prometheus text format by default; OpenMetrics when the scraper's `Accept` asks.
async fn metrics(State(handle): State<RuntimeHandle>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let format = MetricsFormat::from_accept(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        handle.render_metrics(format),
    )
}

async fn topology(State(handle): State<RuntimeHandle>) -> impl IntoResponse {
    axum::Json(TopologyDto::from_handle(&handle))
}

/// Serves the API on `listener`, as `api` says, until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: RuntimeHandle,
    api: &tb_runtime::config::ApiConfig,
    stop: tokio_util::sync::CancellationToken,
) {
    let router = router(handle, api.body_timeout);
    tb_connectors::core::serve_http(listener, router, api.header_timeout, stop).await;
}
