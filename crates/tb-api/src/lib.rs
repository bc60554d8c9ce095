//! Tightbeam's HTTP API: `/health`, `/metrics` (Prometheus text) and `/api/v1/topology`.
//!
//! This is the only crate that turns runtime types into JSON: the runtime exposes a narrow
//! read-only [`RuntimeHandle`], and the shapes clients see are defined here.
#![deny(missing_docs)]

mod topology;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tb_runtime::RuntimeHandle;

pub use topology::TopologyDto;

/// The API's routes over a running topology.
pub fn router(handle: RuntimeHandle) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/topology", get(topology))
        .with_state(handle)
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn metrics(State(handle): State<RuntimeHandle>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        handle.render_metrics(),
    )
}

async fn topology(State(handle): State<RuntimeHandle>) -> impl IntoResponse {
    axum::Json(TopologyDto::from_handle(&handle))
}

/// Serves the API on `listener` until `shutdown` resolves.
///
/// # Errors
///
/// The server's I/O error.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: RuntimeHandle,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(handle))
        .with_graceful_shutdown(shutdown)
        .await
}
