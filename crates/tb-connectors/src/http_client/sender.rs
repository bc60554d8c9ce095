//! Batching events and sending them.

use std::sync::Arc;
use std::time::Instant;

use tb_codec::{CodecKind, Encoder};
use tb_event::{AckStatus, Event, Value};

use super::config::{BodyShape, HttpClientConfig, Prepared};
use crate::core::{
    Connector, ConnectorContext, ConnectorMetrics, InputQueue, StartFuture, complete_events,
    complete_written, encode_batch,
};

pub(super) struct HttpClient {
    config: HttpClientConfig,
    prepared: Prepared,
}

impl HttpClient {
    pub(super) fn new(config: HttpClientConfig, prepared: Prepared) -> Self {
        Self { config, prepared }
    }
}

impl Connector for HttpClient {
    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        Box::pin(async move {
            let client = crate::core::http_client_builder()
                .timeout(self.config.request_timeout)
                .build()
                .map_err(|error| crate::ConnectorError::Io {
                    context: "cannot build the HTTP client".to_owned(),
                    source: std::io::Error::other(error.without_url()),
                })?;
            let running: crate::RunningConnector = Box::pin(async move {
                if let Some(input) = context.input {
                    let sender = Sender {
                        client,
                        id: context.id.clone(),
                        shown_url: crate::core::redact_url(self.prepared.url.as_str()),
                        config: self.config,
                        prepared: self.prepared,
                        metrics: context.metrics,
                    };
                    sender.run(input).await;
                }
                Ok(())
            });
            Ok(running)
        })
    }
}

struct Sender {
    client: reqwest::Client,
    id: tb_event::ComponentId,
    /// The URL as logs may show it: credentials redacted.
    shown_url: String,
    config: HttpClientConfig,
    prepared: Prepared,
    metrics: ConnectorMetrics,
}

impl Sender {
    /// Collects events into batches of `batch_max_events`, sending a partial batch once it
    /// is `batch_timeout` old, until the input closes.
    async fn run(self, mut input: InputQueue) {
        let mut pending: Vec<Event> = Vec::new();
        let mut oldest = Instant::now();
        loop {
            let deadline = oldest + self.config.batch_timeout;
            tokio::select! {
                received = input.recv() => match received {
                    Some(batch) => {
                        self.metrics.input.inc_by(batch.len() as u64);
                        if pending.is_empty() {
                            oldest = Instant::now();
                        }
                        pending.extend(batch);
                        while pending.len() >= self.config.batch_max_events {
                            let rest = pending.split_off(self.config.batch_max_events);
                            self.send(std::mem::replace(&mut pending, rest)).await;
                            oldest = Instant::now();
                        }
                    }
                    None => break,
                },
                () = tokio::time::sleep_until(deadline.into()), if !pending.is_empty() => {
                    self.send(std::mem::take(&mut pending)).await;
                }
            }
        }
        if !pending.is_empty() {
            self.send(pending).await;
        }
    }

    async fn send(&self, events: Vec<Event>) {
        let (events, body) = self.body(events);
        if events.is_empty() {
            return;
        }
        let request = self
            .client
            .request(self.prepared.method.clone(), self.prepared.url.clone())
            .headers(self.prepared.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, self.content_type())
            .body(body);
        let (status, reason) = match request.send().await {
            Ok(response) if response.status().is_success() => (AckStatus::Delivered, None),
            Ok(response) => {
                let code = response.status();
                let status = response_outcome(code);
                tracing::warn!(connector = %self.id, url = %self.shown_url, status = %code, outcome = status.as_str(), count = events.len(), "HTTP receiver refused a batch.");
                (
                    status,
                    Some(Arc::from(format!("the receiver answered {code}"))),
                )
            }
            Err(error) => {
                let error = crate::core::error_chain(&error.without_url());
                tracing::warn!(connector = %self.id, url = %self.shown_url, %error, count = events.len(), "HTTP request failed; its events are errored.");
                (
                    AckStatus::Errored,
                    Some(Arc::from(format!("request failed: {error}"))),
                )
            }
        };
        complete_events(events, status, reason, &self.metrics);
    }

    fn body(&self, events: Vec<Event>) -> (Vec<Event>, Vec<u8>) {
        let mut body = Vec::new();
        match self.config.body {
            BodyShape::Stream => {
                let mut encoder = Encoder::new(self.config.codec, &self.config.interceptors);
                let events = encode_batch(&mut encoder, events, &mut body, &self.metrics);
                if encoder.finish(&mut body).is_err() {
                    tracing::warn!("Request body could not be finished.");
                }
                (events, body)
            }
            BodyShape::Array => {
                let array = Value::Array(events.iter().map(|event| event.value.clone()).collect());
                let mut encoder = Encoder::new(CodecKind::Json, &[]);
                match encoder.encode(&array, &mut body) {
                    Ok(()) => (events, body),
                    Err(error) => {
                        tracing::warn!(%error, "Batch could not be encoded as a JSON array.");
                        complete_written(events, false, &self.metrics);
                        (Vec::new(), Vec::new())
                    }
                }
            }
        }
    }

    fn content_type(&self) -> &'static str {
        match self.config.body {
            BodyShape::Array => "application/json",
            BodyShape::Stream => {
                Encoder::new(self.config.codec, &self.config.interceptors).content_type()
            }
        }
    }
}

/// What a refusal means for the events: 408, 429 and 5xx may pass another time; any other
/// answer (a 4xx) will not, as the events are.
fn response_outcome(code: reqwest::StatusCode) -> AckStatus {
    let retryable = code.is_server_error()
        || code == reqwest::StatusCode::REQUEST_TIMEOUT
        || code == reqwest::StatusCode::TOO_MANY_REQUESTS;
    if retryable {
        AckStatus::Errored
    } else {
        AckStatus::Rejected
    }
}
