//! `/api/v1/destinations` and `/api/v1/jobs`: what durable delivery holds, and the doors a
//! person uses on dead letters (retry one or many, cancel, delete).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tb_runtime::{ComponentMetrics, RuntimeHandle};
use tb_store::{JobFilter, JobId, JobRecord, JobStatus, Store, now_ms};

/// The most jobs one page lists.
const MAX_PAGE: u32 = 1_000;

/// An answer that is not a success: its status and the reason, as `{"error": ...}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn problem(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(status, message.into())
}

fn store_of(handle: &RuntimeHandle) -> Result<Store, ApiError> {
    handle.store().ok_or_else(|| {
        problem(
            StatusCode::NOT_FOUND,
            "no job store: the config has no destination",
        )
    })
}

fn store_failed(error: &tb_store::StoreError) -> Response {
    problem(StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response()
}

/// `GET /api/v1/destinations`: each destination with its actions, circuit state, status
/// and job counts by status.
pub(crate) async fn destinations(State(handle): State<RuntimeHandle>) -> Response {
    let store = handle.store();
    let mut listed = Vec::new();
    for component in handle.components() {
        let ComponentMetrics::Destination { actions, breaker } = &component.metrics else {
            continue;
        };
        let mut counts = serde_json::Map::new();
        if let Some(store) = &store {
            match store.counts(&component.id).await {
                Ok(found) => {
                    for (status, count) in found {
                        counts.insert(status.as_str().to_owned(), count.into());
                    }
                }
                Err(error) => return store_failed(&error),
            }
        }
        let record = component.status_record();
        listed.push(serde_json::json!({
            "id": component.id,
            "kind": component.kind,
            "status": record.status.as_str(),
            "last_error": record.last_error,
            "actions": actions,
            "circuit": breaker.state().as_str(),
            "jobs": counts,
        }));
    }
    Json(serde_json::json!({ "destinations": listed })).into_response()
}

/// Filters of the listing and of the bulk retry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterQuery {
    destination: Option<String>,
    action: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

impl FilterQuery {
    fn filter(&self) -> Result<JobFilter, ApiError> {
        let status = match self.status.as_deref() {
            None => None,
            Some(name) => Some(JobStatus::parse(name).ok_or_else(|| {
                let names: Vec<&str> = JobStatus::ALL
                    .iter()
                    .map(|status| status.as_str())
                    .collect();
                problem(
                    StatusCode::BAD_REQUEST,
                    format!("unknown status `{name}`; one of: {}", names.join(", ")),
                )
            })?),
        };
        Ok(JobFilter {
            destination: self.destination.clone(),
            action: self.action.clone(),
            status,
        })
    }
}

fn job_json(job: &JobRecord) -> serde_json::Value {
    let attempts: Vec<serde_json::Value> = job
        .attempts
        .iter()
        .map(|(attempt, fenced)| {
            serde_json::json!({
                "started_at": attempt.started_at,
                "duration_ms": attempt.duration_ms,
                "code": attempt.code,
                "error": attempt.error,
                "body_excerpt": attempt.body_excerpt,
                "fenced": fenced,
            })
        })
        .collect();
    serde_json::json!({
        "id": job.id.to_string(),
        "destination": job.destination,
        "action": job.action,
        "version": job.version,
        "status": job.status.as_str(),
        "attempt": job.attempt,
        "next_attempt_at": job.next_attempt_at,
        "last_error": job.last_error,
        "payload": job.payload,
        "context": job.context,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "attempts": attempts,
    })
}

/// A job in a listing: everything but its attempts (`GET /api/v1/jobs/{id}` has them).
fn job_summary_json(job: &JobRecord) -> serde_json::Value {
    let mut json = job_json(job);
    if let Some(object) = json.as_object_mut() {
        object.remove("attempts");
    }
    json
}

/// `GET /api/v1/jobs?destination=&action=&status=&limit=&cursor=`: a page of jobs, oldest
/// first, and the cursor of the next page.
pub(crate) async fn list(
    State(handle): State<RuntimeHandle>,
    Query(query): Query<FilterQuery>,
) -> Response {
    let (store, filter) = match (store_of(&handle), query.filter()) {
        (Ok(store), Ok(filter)) => (store, filter),
        (Err(error), _) | (_, Err(error)) => return error.into_response(),
    };
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    match store.list(filter, limit, query.cursor.clone()).await {
        Ok(page) => Json(serde_json::json!({
            "jobs": page.jobs.iter().map(job_summary_json).collect::<Vec<_>>(),
            "next_cursor": page.next_cursor,
        }))
        .into_response(),
        Err(error) => store_failed(&error),
    }
}

/// `GET /api/v1/jobs/{id}`: one job with its attempts.
pub(crate) async fn show(State(handle): State<RuntimeHandle>, Path(id): Path<String>) -> Response {
    let store = match store_of(&handle) {
        Ok(store) => store,
        Err(error) => return error.into_response(),
    };
    match store.get(JobId(id.clone())).await {
        Ok(Some(job)) => Json(job_json(&job)).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, format!("no job `{id}`")).into_response(),
        Err(error) => store_failed(&error),
    }
}

/// What a one-job door did: 200 with the job, 404 when there is none, 409 when its status
/// does not allow it.
async fn on_one(
    handle: &RuntimeHandle,
    id: String,
    what: &str,
    done: Result<bool, tb_store::StoreError>,
) -> Response {
    let Ok(store) = store_of(handle) else {
        return problem(StatusCode::NOT_FOUND, "no job store").into_response();
    };
    match (done, store.get(JobId(id.clone())).await) {
        (Err(error), _) | (_, Err(error)) => store_failed(&error),
        (Ok(_), Ok(None)) => {
            problem(StatusCode::NOT_FOUND, format!("no job `{id}`")).into_response()
        }
        (Ok(true), Ok(Some(job))) => Json(job_json(&job)).into_response(),
        (Ok(false), Ok(Some(job))) => problem(
            StatusCode::CONFLICT,
            format!("job `{id}` is {}; {what}", job.status.as_str()),
        )
        .into_response(),
    }
}

/// `POST /api/v1/jobs/{id}/retry`: a dead letter (discarded or cancelled) is tried again
/// at once, with a fresh budget of retries.
pub(crate) async fn retry(State(handle): State<RuntimeHandle>, Path(id): Path<String>) -> Response {
    let done = match store_of(&handle) {
        Ok(store) => store.replay(JobId(id.clone()), now_ms()).await,
        Err(error) => return error.into_response(),
    };
    on_one(
        &handle,
        id,
        "only a discarded or cancelled job can be retried",
        done,
    )
    .await
}

/// `POST /api/v1/jobs/{id}/cancel`: a job that has not ended stops; a load in flight is
/// fenced.
pub(crate) async fn cancel(
    State(handle): State<RuntimeHandle>,
    Path(id): Path<String>,
) -> Response {
    let done = match store_of(&handle) {
        Ok(store) => store.cancel(JobId(id.clone()), now_ms()).await,
        Err(error) => return error.into_response(),
    };
    on_one(
        &handle,
        id,
        "only a job that has not ended can be cancelled",
        done,
    )
    .await
}

/// `DELETE /api/v1/jobs/{id}`: 204; a running job must be cancelled first (409).
pub(crate) async fn delete(
    State(handle): State<RuntimeHandle>,
    Path(id): Path<String>,
) -> Response {
    let store = match store_of(&handle) {
        Ok(store) => store,
        Err(error) => return error.into_response(),
    };
    match store.delete(JobId(id.clone())).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => match store.get(JobId(id.clone())).await {
            Ok(Some(_)) => problem(
                StatusCode::CONFLICT,
                format!("job `{id}` is running; cancel it first"),
            )
            .into_response(),
            Ok(None) => problem(StatusCode::NOT_FOUND, format!("no job `{id}`")).into_response(),
            Err(error) => store_failed(&error),
        },
        Err(error) => store_failed(&error),
    }
}

/// `POST /api/v1/jobs/retry` with a filter (`{"destination": "crm", "status":
/// "discarded"}`, every key optional): every matching dead letter is retried.
pub(crate) async fn retry_matching(
    State(handle): State<RuntimeHandle>,
    body: Option<Json<FilterQuery>>,
) -> Response {
    let query = body.map(|Json(query)| query).unwrap_or_default();
    let (store, filter) = match (store_of(&handle), query.filter()) {
        (Ok(store), Ok(filter)) => (store, filter),
        (Err(error), _) | (_, Err(error)) => return error.into_response(),
    };
    match store.replay_matching(filter, now_ms()).await {
        Ok(count) => Json(serde_json::json!({ "retried": count })).into_response(),
        Err(error) => store_failed(&error),
    }
}
