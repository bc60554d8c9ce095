//! The listening server and the request handler.

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
use http_body_util::BodyExt;
use tb_codec::{DecodeError, DecodeErrorKind, Encoder, InterceptorConfig};
use tb_event::{
    AckHandle, AckStatus, Acknowledgement, ComponentId, Event, KeyString, ObjectMap, StreamId,
    Value,
};

use super::body::{self, BodyError, BodyEvents, Encoding};
use super::budget::{BodyBudget, Held};
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
    budget: BodyBudget,
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
            let budget = BodyBudget::new(self.config.max_buffered);
            let shared = Arc::new(Shared {
                id: context.id.clone(),
                config: self.config,
                output: context.output,
                errors: context.errors,
                metrics: context.metrics,
                next_stream: AtomicU64::new(0),
                replies,
                budget,
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
                std::future::ready(closing(retry_later_response(&format!(
                    "too many requests in flight (max_requests is {max_requests}); retry later"
                ))))
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
        return closing(error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "send events with POST or PUT",
        ));
    }
    let started = Instant::now();
    let stream = StreamId(shared.next_stream.fetch_add(1, Ordering::Relaxed));
    let fields = request_fields(&request, remote);
    let encoding = match Encoding::of(request.headers()) {
        Ok(encoding) => encoding,
        Err(reason) => {
            shared.metrics.errors.inc();
            return closing(error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, &reason));
        }
    };
    if declared_length(request.headers()).is_some_and(|length| length > shared.config.max_body) {
        // Refused before a byte of the body is read.
        shared.metrics.errors.inc();
        let reason = format!(
            "Content-Length is larger than max_body ({} bytes)",
            shared.config.max_body
        );
        return closing(error_response(StatusCode::PAYLOAD_TOO_LARGE, &reason));
    }
    let declared = declared_length(request.headers());
    let (body, mut held) = match read_body(&shared, request.into_body(), declared).await {
        Ok(read) => read,
        Err(response) => {
            shared.metrics.errors.inc();
            return closing(response);
        }
    };
    let response = match expanded_body(&shared, encoding, &body, &mut held) {
        Ok(None) => ingest(&shared, stream, fields, encoding, &body).await,
        Ok(Some(expanded)) => ingest(&shared, stream, fields, Encoding::Identity, &expanded).await,
        Err(ExpandError::Body(error)) => {
            reject(&shared, stream, vec![body_failure(error)], None, 0).await
        }
        Err(ExpandError::OverBudget) => budget_refusal(&shared),
    };
    drop(held);
    shared
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Marks an answer given before the request's body was read: the connection closes after
/// it, and says so, so that a client does not send its next request on a connection the
/// server is closing.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
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

/// Reads a body within `body_timeout` and `max_body`, taking its bytes from the server's
/// budget: all at once for a declared length, else as they arrive.
async fn read_body(
    shared: &Shared,
    body: Body,
    declared: Option<usize>,
) -> Result<(bytes::Bytes, Held), Response> {
    let mut held = Held::default();
    if let Some(length) = declared
        && !shared.budget.take(&mut held, length)
    {
        return Err(budget_refusal(shared));
    }
    let max_body = shared.config.max_body;
    let reading = async {
        let mut body = body;
        let mut buffer = bytes::BytesMut::with_capacity(declared.unwrap_or(0));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| {
                error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read the request body: {error}"),
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buffer.len() + data.len() > max_body {
                let reason = format!("request body is larger than max_body ({max_body} bytes)");
                return Err(error_response(StatusCode::PAYLOAD_TOO_LARGE, &reason));
            }
            if declared.is_none() && !shared.budget.take(&mut held, data.len()) {
                return Err(budget_refusal(shared));
            }
            buffer.extend_from_slice(&data);
        }
        Ok(buffer.freeze())
    };
    match tokio::time::timeout(shared.config.body_timeout, reading).await {
        Ok(Ok(body)) => Ok((body, held)),
        Ok(Err(response)) => Err(response),
        Err(_elapsed) => Err(error_response(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the request body did not arrive within body_timeout ({:?})",
                shared.config.body_timeout
            ),
        )),
    }
}

/// 503 for a body that does not fit in what is left of `max_buffered`.
fn budget_refusal(shared: &Shared) -> Response {
    retry_later_response(&format!(
        "too many request bytes held at once (max_buffered is {} bytes); retry later",
        shared.budget.max_bytes()
    ))
}

/// Why a body could not be made ready for decoding.
enum ExpandError {
    Body(BodyError),
    OverBudget,
}

/// Checks a compressed body (sound, and within `max_decompressed`) before any of it is
/// decoded; a JSON body with no framing is expanded here (its bytes taken from the budget
/// into `held`), to be read as an array an element at a time.
fn expanded_body(
    shared: &Shared,
    encoding: Encoding,
    body: &[u8],
    held: &mut Held,
) -> Result<Option<Vec<u8>>, ExpandError> {
    let config = &shared.config;
    let size = body::check_expansion(body, encoding, config.max_decompressed)
        .map_err(ExpandError::Body)?;
    if !BodyEvents::wants_expanded(encoding, config) {
        return Ok(None);
    }
    if !shared.budget.take(held, size) {
        return Err(ExpandError::OverBudget);
    }
    body::expand(body, encoding, config.max_decompressed)
        .map(Some)
        .map_err(ExpandError::Body)
}

/// Events sent on as one batch while a body is decoded. A body of at most this many events
/// is all or nothing: a bad frame in it sends none of them.
const SLICE_EVENTS: usize = 1024;

/// Decodes `body` in bounded steps and sends its events on in slices of [`SLICE_EVENTS`] as
/// they come, then answers once they are acknowledged (or replied to).
///
/// Events are decoded untracked and take the request's acknowledgement only when their
/// slice is sent, so those dropped after a bad frame do not count against the rest.
async fn ingest(
    shared: &Shared,
    stream: StreamId,
    fields: ObjectMap,
    encoding: Encoding,
    body: &[u8],
) -> Response {
    let mut decoder = StreamDecoder::new(
        shared.id.clone(),
        stream,
        shared.config.codec,
        &shared.config.interceptors,
        Some(Arc::new(fields)),
    );
    let mut source = match BodyEvents::new(body, encoding, &shared.config) {
        Ok(source) => source,
        Err(error) => return reject(shared, stream, vec![body_failure(error)], None, 0).await,
    };
    let (ack, receipt) = Acknowledgement::new_unit();
    let slot = shared.replies.as_ref().map(|replies| replies.open(stream));
    let untracked = AckHandle::untracked();
    let (mut events, mut failures, mut sent) = (Vec::new(), Vec::new(), 0);
    let mut refused = None;
    'body: loop {
        let more = source.step(&mut decoder, &untracked, &mut events, &mut failures);
        if !failures.is_empty() {
            break;
        }
        while events.len() >= SLICE_EVENTS || (!more && !events.is_empty()) {
            let slice: Vec<Event> = events
                .drain(..events.len().min(SLICE_EVENTS))
                .map(|event| {
                    let (value, meta, _untracked) = event.into_parts();
                    Event::new(value, meta, ack.clone())
                })
                .collect();
            let count = slice.len();
            // Only the first slice may be turned away by a full pipeline; once part of the
            // body is on its way, the rest waits for room.
            let patience = (sent == 0).then_some(shared.config.queue_timeout);
            if let Err(rejected) = shared.output.send_within(slice, patience).await {
                refused = Some(rejected);
                break 'body;
            }
            // Counted once taken: events refused with a 503 were never received.
            shared.metrics.received.inc_by(count as u64);
            shared.metrics.output.inc_by(count as u64);
            sent += count;
        }
        if !more {
            break;
        }
    }
    ack.complete(AckStatus::Delivered);
    drop(events);
    // Lines of the body are known only for a body read as it came (not decompressed).
    let failure_line = |failures: &[DecodeError]| {
        (encoding == Encoding::Identity)
            .then(|| line_of_first_failure(body, &shared.config.interceptors, failures))
            .flatten()
    };
    if sent == 0 {
        drop(slot);
        if let Some(rejected) = refused {
            return backpressure_response(rejected);
        }
        if !failures.is_empty() {
            let line = failure_line(&failures);
            return reject(shared, stream, failures, line, 0).await;
        }
        // Nothing to deliver: a request/response server has no reply to give (204), an
        // ingest server accepted nothing.
        return match shared.replies {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => accepted_response(0),
        };
    }
    let timeout = match shared.replies {
        Some(_) => shared.config.reply_timeout,
        None => shared.config.ack_timeout,
    };
    let outcome = tokio::time::timeout(timeout, receipt.wait()).await;
    if let Ok(outcome) = &outcome {
        shared.metrics.settle(sent as u64, outcome);
    }
    let replies = slot.map(OpenSlot::close);
    if let Some(rejected) = refused {
        return backpressure_response(rejected);
    }
    if !failures.is_empty() {
        // Part of the body went on before the bad frame was reached.
        let taken = matches!(&outcome, Ok(outcome) if outcome.status == AckStatus::Delivered);
        let line = failure_line(&failures);
        let accepted = if taken { sent } else { 0 };
        return reject(shared, stream, failures, line, accepted).await;
    }
    match (outcome, replies) {
        (Err(_elapsed), _) => error_response(
            StatusCode::GATEWAY_TIMEOUT,
            "timed out waiting for the events to be acknowledged",
        ),
        (Ok(outcome), replies) => match (outcome.status, replies) {
            (AckStatus::Delivered, None) => accepted_response(sent),
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

/// The decode failure a body that cannot be read at all stands for.
fn body_failure(error: BodyError) -> DecodeError {
    match error {
        BodyError::TooLarge(reason) => DecodeError::too_large(reason, &[]),
        BodyError::Corrupt(reason) => DecodeError::invalid(reason, &[]),
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

///
/// `accepted` counts the events of the body that went on (and were delivered) before the
/// bad frame was reached: none, for a body of at most one slice.
async fn reject(
    shared: &Shared,
    stream: StreamId,
    failures: Vec<DecodeError>,
    line: Option<usize>,
    accepted: usize,
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
    json_response(
        status,
        serde_json::json!({ "error": reason, "accepted": accepted }),
    )
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
