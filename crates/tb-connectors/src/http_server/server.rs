//! The listening server and the request handler.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use tb_codec::{DecodeError, DecodeErrorKind, Encoder, InterceptorConfig};
use tb_event::{AckStatus, Acknowledgement, ComponentId, KeyString, ObjectMap, StreamId, Value};

use super::config::HttpServerConfig;
use super::replies::{OpenSlot, PendingReplies};
use crate::core::{
    Connector, ConnectorContext, ConnectorMetrics, OutputSender, SendRejected, StartFuture,
    StreamDecoder, bind, decode_error_event, serve_router,
};

pub(super) struct HttpServer {
    config: HttpServerConfig,
    replies: bool,
}

impl HttpServer {
    pub(super) fn new(config: HttpServerConfig, replies: bool) -> Self {
        Self { config, replies }
    }
}

/// What every request handler shares.
struct Shared {
    id: ComponentId,
    config: HttpServerConfig,
    output: OutputSender,
    errors: OutputSender,
    metrics: ConnectorMetrics,
    next_stream: AtomicU64,
    replies: Option<PendingReplies>,
}

impl Connector for HttpServer {
    fn check_environment(&self) -> Vec<crate::core::BuildError> {
        crate::core::check_bindable("address", &self.config.address)
            .err()
            .into_iter()
            .collect()
    }

    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        Box::pin(async move {
            let listener = bind(&self.config.address).await?;
            let header_timeout = self.config.header_timeout;
            let replies = self.replies.then(PendingReplies::default);
            let dispatcher = match (&replies, context.input) {
                (Some(replies), Some(input)) => Some(crate::core::spawn_owned(
                    replies
                        .clone()
                        .dispatch(context.id.clone(), input, context.metrics.clone()),
                )),
                _ => None,
            };
            let shared = Arc::new(Shared {
                id: context.id.clone(),
                config: self.config,
                output: context.output,
                errors: context.errors,
                metrics: context.metrics,
                next_stream: AtomicU64::new(0),
                replies,
            });
            let router = admission(
                &shared,
                Router::new().fallback(handle).with_state(shared.clone()),
            );
            let intake = context.intake.clone();
            let running: crate::RunningConnector = Box::pin(async move {
                serve_router(listener, router, header_timeout, intake, dispatcher).await
            });
            Ok(running)
        })
    }
}

/// Each request holds its decoded events in memory until they are acknowledged: past
/// `max_requests` at once, a request is turned away with 503 before its body is read
/// (tower's concurrency limit, shedding load instead of queueing it).
fn admission(shared: &Shared, router: Router) -> Router {
    let max_requests = shared.config.max_requests;
    router.layer(
        tower::ServiceBuilder::new()
            .layer(HandleErrorLayer::new(move |_: BoxError| {
                std::future::ready(retry_later_response(&format!(
                    "too many requests in flight (max_requests is {max_requests}); retry later"
                )))
            }))
            .load_shed()
            .concurrency_limit(max_requests),
    )
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    if !matches!(*request.method(), Method::POST | Method::PUT) {
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "send events with POST or PUT",
        );
    }
    let started = Instant::now();
    let stream = StreamId(shared.next_stream.fetch_add(1, Ordering::Relaxed));
    let fields = request_fields(&request, remote);
    let interceptors = match decoding_chain(request.headers(), &shared.config) {
        Ok(interceptors) => interceptors,
        Err(response) => {
            shared.metrics.errors.inc();
            return *response;
        }
    };
    if declared_length(request.headers()).is_some_and(|length| length > shared.config.max_body) {
        // Refused before a byte of the body is read.
        shared.metrics.errors.inc();
        let reason = format!(
            "Content-Length is larger than max_body ({} bytes)",
            shared.config.max_body
        );
        return error_response(StatusCode::PAYLOAD_TOO_LARGE, &reason);
    }
    let reading = axum::body::to_bytes(request.into_body(), shared.config.max_body);
    let Ok(read) = tokio::time::timeout(shared.config.body_timeout, reading).await else {
        shared.metrics.errors.inc();
        let reason = format!(
            "the request body did not arrive within body_timeout ({:?})",
            shared.config.body_timeout
        );
        return error_response(StatusCode::REQUEST_TIMEOUT, &reason);
    };
    let body = match read {
        Ok(body) => body,
        Err(error) => {
            shared.metrics.errors.inc();
            let inner = error.into_inner();
            if inner.is::<http_body_util::LengthLimitError>() {
                let reason = format!(
                    "request body is larger than max_body ({} bytes)",
                    shared.config.max_body
                );
                return error_response(StatusCode::PAYLOAD_TOO_LARGE, &reason);
            }
            let reason = format!("cannot read the request body: {inner}");
            return error_response(StatusCode::BAD_REQUEST, &reason);
        }
    };
    let response = ingest(&shared, stream, fields, &interceptors, &body).await;
    shared
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The `Content-Length` a request declares, if it declares one.
fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()
        .map(|length| usize::try_from(length).unwrap_or(usize::MAX))
}

/// The interceptors for one request: a `Content-Encoding` of gzip or zstd decompresses the
/// body first (bounded by `max_decompressed`), then the configured chain applies.
fn decoding_chain<'a>(
    headers: &HeaderMap,
    config: &'a HttpServerConfig,
) -> Result<Cow<'a, [InterceptorConfig]>, Box<Response>> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("").trim().to_ascii_lowercase());
    let decompress = match encoding.as_deref() {
        // The usual request: the configured chain, borrowed, not copied.
        None | Some("" | "identity") => return Ok(Cow::Borrowed(&config.interceptors)),
        Some("gzip" | "x-gzip") => InterceptorConfig::Gzip {
            max_decompressed: config.max_decompressed,
        },
        Some("zstd") => InterceptorConfig::Zstd {
            max_decompressed: config.max_decompressed,
        },
        Some(other) => {
            return Err(Box::new(error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("Content-Encoding `{other}` is not supported; send gzip, zstd or none"),
            )));
        }
    };
    let mut chain = Vec::with_capacity(config.interceptors.len() + 1);
    chain.push(decompress);
    chain.extend(config.interceptors.iter().cloned());
    Ok(Cow::Owned(chain))
}

async fn ingest(
    shared: &Shared,
    stream: StreamId,
    fields: ObjectMap,
    interceptors: &[InterceptorConfig],
    body: &[u8],
) -> Response {
    let (ack, receipt) = Acknowledgement::new_unit();
    let mut decoder = StreamDecoder::new(
        shared.id.clone(),
        stream,
        shared.config.codec,
        interceptors,
        Some(Arc::new(fields)),
    );
    let mut events = Vec::new();
    let mut failures = Vec::new();
    decoder.decode(body, &ack, &mut events, &mut failures);
    decoder.finish(&ack, &mut events, &mut failures);
    ack.complete(AckStatus::Delivered);
    if !failures.is_empty() {
        drop(events);
        let line = line_of_first_failure(body, interceptors, &failures);
        return reject(shared, stream, failures, line).await;
    }
    let accepted = events.len();
    if accepted == 0 {
        // Nothing to deliver: a request/response server has no reply to give (204), an
        // ingest server accepted nothing.
        return match shared.replies {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => accepted_response(0),
        };
    }
    let slot = shared.replies.as_ref().map(|replies| replies.open(stream));
    let sent = shared
        .output
        .send_within(events, Some(shared.config.queue_timeout))
        .await;
    if let Err(rejected) = sent {
        drop(slot);
        return backpressure_response(rejected);
    }
    // Counted once taken: events refused with a 503 were never received.
    shared.metrics.received.inc_by(accepted as u64);
    shared.metrics.output.inc_by(accepted as u64);
    let timeout = match shared.replies {
        Some(_) => shared.config.reply_timeout,
        None => shared.config.ack_timeout,
    };
    let outcome = tokio::time::timeout(timeout, receipt.wait()).await;
    if let Ok(outcome) = &outcome {
        shared.metrics.settle(accepted as u64, outcome);
    }
    let replies = slot.map(OpenSlot::close);
    match (outcome, replies) {
        (Err(_elapsed), _) => error_response(
            StatusCode::GATEWAY_TIMEOUT,
            "timed out waiting for the events to be acknowledged",
        ),
        (Ok(outcome), replies) => match (outcome.status, replies) {
            (AckStatus::Delivered, None) => accepted_response(accepted),
            (AckStatus::Delivered, Some(values)) => reply_response(shared, &values),
            (AckStatus::Errored, _) => retry_later_response(&format!(
                "delivery failed and may succeed if retried: {}",
                outcome.reason_or_status()
            )),
            (AckStatus::Rejected, _) => error_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!(
                    "the events were rejected and will not be accepted as they are: {}",
                    outcome.reason_or_status()
                ),
            ),
        },
    }
}

/// Answers a request whose body did not decode, after putting the bad bytes on `_errors`.
/// For an NDJSON body (a chain of just `lines`), the body's line number (1-based) of the
/// first frame that did not decode: the codec's own "line 1 column 2" is within the frame.
fn line_of_first_failure(
    body: &[u8],
    interceptors: &[InterceptorConfig],
    failures: &[DecodeError],
) -> Option<usize> {
    let [InterceptorConfig::Lines { delimiter, .. }] = interceptors else {
        return None;
    };
    let raw = &failures.first()?.raw;
    if raw.is_empty() || delimiter.is_empty() {
        return None;
    }
    let at = memchr::memmem::find(body, raw)?;
    Some(memchr::memmem::find_iter(&body[..at], delimiter.as_bytes()).count() + 1)
}

async fn reject(
    shared: &Shared,
    stream: StreamId,
    failures: Vec<DecodeError>,
    line: Option<usize>,
) -> Response {
    shared.metrics.errors.inc_by(failures.len() as u64);
    let status = if failures.iter().any(|f| f.kind == DecodeErrorKind::TooLarge) {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    };
    let reason = failures.first().map_or_else(
        || "invalid body".to_owned(),
        |failure| match line {
            Some(line) => format!("line {line} of the body: {}", failure.reason),
            None => failure.reason.clone(),
        },
    );
    let (ack, receipt) = Acknowledgement::new_unit();
    let error_events = failures
        .iter()
        .map(|failure| decode_error_event(&shared.id, stream, failure, ack.clone()))
        .collect();
    ack.complete(AckStatus::Delivered);
    // The rejected bytes are on `_errors` (where a person can find them) before the client
    // hears of it; the client is told either way.
    if shared.errors.send(error_events).await.is_ok() {
        let _ = tokio::time::timeout(shared.config.ack_timeout, receipt.wait()).await;
    }
    error_response(status, &reason)
}

fn request_fields(request: &Request, remote: SocketAddr) -> ObjectMap {
    let mut fields = ObjectMap::new();
    fields.insert(
        KeyString::from("method"),
        Value::from(request.method().as_str()),
    );
    fields.insert(KeyString::from("path"), Value::from(request.uri().path()));
    if let Some(query) = request.uri().query() {
        fields.insert(
            KeyString::from("query"),
            Value::from(crate::core::redact_query(query)),
        );
    }
    fields.insert(
        KeyString::from("remote_address"),
        Value::from(remote.to_string()),
    );
    fields.insert(
        KeyString::from("headers"),
        Value::Object(header_fields(request.headers())),
    );
    fields
}

/// Request headers for `%tightbeam.headers`, with credentials redacted.
fn header_fields(headers: &HeaderMap) -> ObjectMap {
    headers
        .iter()
        .map(|(name, value)| {
            let value = if crate::core::is_credential_name(name.as_str()) {
                Value::from(crate::core::REDACTED)
            } else {
                Value::from(String::from_utf8_lossy(value.as_bytes()).into_owned())
            };
            (KeyString::from(name.as_str()), value)
        })
        .collect()
}

fn accepted_response(accepted: usize) -> Response {
    json_response(StatusCode::OK, serde_json::json!({ "accepted": accepted }))
}

fn reply_response(shared: &Shared, values: &[Value]) -> Response {
    if values.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let mut encoder = Encoder::new(shared.config.codec, &shared.config.interceptors);
    let mut body = Vec::new();
    // JSON with no framing holds one document: several replies are one array, not JSON
    // objects run together under `application/json`.
    let array;
    let values = if values.len() > 1 && encoder.content_type() == "application/json" {
        array = [Value::Array(values.to_vec())];
        &array[..]
    } else {
        values
    };
    let encoded = values
        .iter()
        .try_for_each(|value| encoder.encode(value, &mut body))
        .and_then(|()| encoder.finish(&mut body));
    match encoded {
        Ok(()) => {
            let mut response = Response::new(Body::from(body));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(encoder.content_type()),
            );
            response
        }
        Err(error) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("reply could not be encoded: {error}"),
        ),
    }
}

fn backpressure_response(rejected: SendRejected) -> Response {
    let reason = match rejected {
        SendRejected::Full(batch) => {
            drop(batch);
            "the pipeline is full; retry later"
        }
        SendRejected::Closed => "the server is shutting down; retry later",
    };
    retry_later_response(reason)
}

/// 503 with `Retry-After`: the request may succeed if sent again.
fn retry_later_response(reason: &str) -> Response {
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, reason);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn error_response(status: StatusCode, reason: &str) -> Response {
    json_response(status, serde_json::json!({ "error": reason }))
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}
