//! `http_stream`, the relay: a long-lived HTTP GET whose response streams envelopes, as
//! NDJSON lines or server-sent events. `DATA` carries a message that becomes events;
//! `PING` keeps the connection alive (with nothing at all for `heartbeat_timeout`, it is
//! made again); `SYNC` carries a marker. The position tracker holds the confirmed marker
//! behind every event not yet acknowledged; once it moves, the marker is POSTed to
//! `sync_url`, and a new connection resumes from it (`Last-Event-ID`, and `resume_query`).
//!
//! An errored event ends the connection: the feed sends again from the last confirmed
//! marker. At least once, then. It only receives.

mod config;
mod frames;

pub use config::{EnvelopeFields, FeedFormat, HttpStreamConfig};

use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use reqwest::header::HeaderMap;
use tb_event::{AckStatus, ComponentId, StreamId};

use crate::core::{
    Backoff, BuildError, Connector, ConnectorBuilder, ConnectorContext, IngestTarget, MessageIn,
    OutputSender, PositionTracker, Remote, Roles, StartFuture, StreamDecoder, Ticket,
    ingest_messages, parse_config, pause, start_running,
};
use frames::{Frame, Framer};

/// How long the feed may take to answer the GET with its headers, and a sync POST in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds `http_stream` connectors.
pub struct HttpStreamBuilder;

impl ConnectorBuilder for HttpStreamBuilder {
    fn kind(&self) -> &'static str {
        "http_stream"
    }

    fn roles(&self, _has_inputs: bool) -> Roles {
        Roles::SOURCE
    }

    fn build(
        &self,
        _id: &ComponentId,
        config: serde_json::Value,
        has_inputs: bool,
    ) -> Result<Box<dyn Connector>, BuildError> {
        let config: HttpStreamConfig = parse_config(config)?;
        if has_inputs {
            return Err(BuildError::at(
                "inputs",
                "an http_stream connector only receives; send with http_client",
            ));
        }
        let url = crate::core::http_url("url", &config.url)?;
        let sync_url = config
            .sync_url
            .as_deref()
            .map(|url| crate::core::http_url("sync_url", url))
            .transpose()?;
        let headers = crate::core::header_map(&config.headers)?;
        if config.heartbeat_timeout < Duration::from_millis(100) {
            return Err(BuildError::at(
                "heartbeat_timeout",
                "heartbeat_timeout must be at least 100ms",
            ));
        }
        if config.max_line == 0 || config.max_pending == 0 {
            return Err(BuildError::at(
                "max_line",
                "`max_line` and `max_pending` must be at least 1",
            ));
        }
        Ok(Box::new(HttpStream {
            config,
            url,
            sync_url,
            headers,
        }))
    }
}

/// A built `http_stream` connector.
struct HttpStream {
    config: HttpStreamConfig,
    url: reqwest::Url,
    sync_url: Option<reqwest::Url>,
    headers: HeaderMap,
}

impl Connector for HttpStream {
    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        start_running(async move {
            let client = crate::core::http_client_builder()
                .connect_timeout(REQUEST_TIMEOUT)
                .build()
                .map_err(|error| crate::ConnectorError::Io {
                    context: "cannot build the HTTP client".to_owned(),
                    source: std::io::Error::other(error.without_url()),
                })?;
            let feed = Feed {
                remote: Remote::new(
                    context.id,
                    self.url.as_str(),
                    context.status,
                    context.metrics,
                    context.intake,
                ),
                config: self.config,
                url: self.url,
                sync_url: self.sync_url,
                headers: self.headers,
                client,
            };
            feed.run(&context.output, &context.errors).await;
            Ok(())
        })
    }
}

/// Why a connection ended.
enum End {
    /// Intake stopped, and what was in flight is settled.
    Stopped,
    /// The feed went silent, ended, failed, or an event errored: connect again.
    Lost(String),
}

/// A message's acknowledgement: its ticket in the tracker and the outcome.
type Settled = (Ticket, AckStatus);

/// The connector at run time.
struct Feed {
    remote: Remote,
    config: HttpStreamConfig,
    url: reqwest::Url,
    sync_url: Option<reqwest::Url>,
    headers: HeaderMap,
    client: reqwest::Client,
}

/// One connection's state: the tracker of what was handed on, and their acknowledgements.
struct Session {
    tracker: PositionTracker<Option<String>>,
    pending: FuturesUnordered<BoxFuture<'static, Settled>>,
    /// The last marker the feed sent on this connection.
    latest: Option<String>,
}

impl Feed {
    /// Connects, reads and reconnects until intake stops; then finishes the outputs.
    async fn run(&self, output: &OutputSender, errors: &OutputSender) {
        let mut decoder = self
            .remote
            .message_decoder(self.config.codec, &self.config.interceptors);
        let target = self.remote.ingest_target(output, errors);
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        // The marker confirmed last: where a new connection resumes.
        let mut confirmed: Option<String> = None;
        loop {
            let opened = self
                .remote
                .with_backoff(|| self.open(confirmed.as_deref()), &mut backoff, true)
                .await;
            let Some(response) = opened else { break };
            match self
                .read(response, &mut confirmed, &mut decoder, &target)
                .await
            {
                End::Stopped => return,
                End::Lost(error) => {
                    let resume = format!("connecting again, to resume from marker {confirmed:?}");
                    self.remote.report_lost(&error, &resume);
                    pause(backoff.next_delay(), &self.remote.intake, true).await;
                }
            }
        }
        target.finish_outputs();
    }

    /// The GET, resuming from `marker`, answered 2xx.
    async fn open(&self, marker: Option<&str>) -> Result<reqwest::Response, String> {
        let mut url = self.url.clone();
        if let (Some(marker), Some(name)) = (marker, &self.config.resume_query) {
            url.query_pairs_mut().append_pair(name, marker);
        }
        let mut request = self.client.get(url).headers(self.headers.clone());
        if let Some(marker) = marker {
            request = request.header("last-event-id", marker);
        }
        let response = tokio::time::timeout(REQUEST_TIMEOUT, request.send())
            .await
            .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
            .map_err(|error| crate::core::error_chain(&error.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the feed answered {status}"));
        }
        tracing::info!(connector = %self.remote.id, url = %self.remote.shown_url, resume_from = ?marker, "Connected to the feed.");
        Ok(response)
    }

    /// Reads one connection until it ends or intake stops.
    async fn read(
        &self,
        mut response: reqwest::Response,
        confirmed: &mut Option<String>,
        decoder: &mut StreamDecoder,
        target: &IngestTarget<'_>,
    ) -> End {
        let mut session = Session {
            tracker: PositionTracker::new(confirmed.clone(), self.config.max_pending),
            pending: FuturesUnordered::new(),
            latest: confirmed.clone(),
        };
        let mut framer = Framer::new(self.config.format, self.config.max_line);
        let mut frames = Vec::new();
        let mut heard = Instant::now();
        loop {
            let room = session.tracker.has_room();
            let silence = tokio::time::sleep_until((heard + self.config.heartbeat_timeout).into());
            tokio::select! {
                biased;
                () = self.remote.intake.cancelled() => {
                    self.stop(&mut session, confirmed, target).await;
                    return End::Stopped;
                }
                Some(settled) = session.pending.next(), if !session.pending.is_empty() => {
                    if let Err(error) = self.settle(&mut session, settled, confirmed).await {
                        return End::Lost(error);
                    }
                    if !room {
                        // Reading was paused, not the feed silent.
                        heard = Instant::now();
                    }
                }
                () = silence, if room => {
                    let error = format!(
                        "nothing arrived for {:?} (heartbeat_timeout)",
                        self.config.heartbeat_timeout
                    );
                    return self.settle_in_flight(&mut session, confirmed, error).await;
                }
                chunk = response.chunk(), if room => {
                    let chunk = match chunk {
                        Ok(Some(chunk)) => chunk,
                        Ok(None) => {
                            let error = "the feed ended the response".to_owned();
                            return self.settle_in_flight(&mut session, confirmed, error).await;
                        }
                        Err(error) => {
                            let error = crate::core::error_chain(&error.without_url());
                            return self.settle_in_flight(&mut session, confirmed, error).await;
                        }
                    };
                    heard = Instant::now();
                    if let Err(error) = framer.push(&chunk, &mut frames) {
                        return End::Lost(error);
                    }
                    if let Err(error) = self.take(&mut frames, &mut session, confirmed, decoder, target).await {
                        return End::Lost(error);
                    }
                }
            }
        }
    }

    /// Handles complete envelopes: `DATA` messages handed on (those before a `SYNC`
    /// first), markers tracked, anything else counted and put on `_errors`.
    async fn take(
        &self,
        frames: &mut Vec<Frame>,
        session: &mut Session,
        confirmed: &mut Option<String>,
        decoder: &mut StreamDecoder,
        target: &IngestTarget<'_>,
    ) -> Result<(), String> {
        let mut messages: Vec<Vec<u8>> = Vec::new();
        for frame in frames.drain(..) {
            match envelope_of(&frame, &self.config.envelope) {
                Ok(Envelope::Data(message)) => messages.push(message),
                Ok(Envelope::Ping) => {}
                Ok(Envelope::Sync(marker)) => {
                    self.hand_on(&mut messages, session, decoder, target).await;
                    session.latest = Some(marker.clone());
                    let ticket = session.tracker.track(Some(marker), 0);
                    self.settle(session, (ticket, AckStatus::Delivered), confirmed)
                        .await?;
                }
                Err(reason) => self.report_bad(&frame, &reason, target).await,
            }
        }
        self.hand_on(&mut messages, session, decoder, target).await;
        Ok(())
    }

    /// Decodes `messages` and sends their events on as one batch, each message tracked.
    async fn hand_on(
        &self,
        messages: &mut Vec<Vec<u8>>,
        session: &mut Session,
        decoder: &mut StreamDecoder,
        target: &IngestTarget<'_>,
    ) {
        if messages.is_empty() {
            return;
        }
        let batch: Vec<MessageIn<'_>> = messages
            .iter()
            .map(|message| (message.as_slice(), None))
            .collect();
        let acks = ingest_messages(decoder, &batch, target).await;
        for ack in acks.into_iter().flatten() {
            let ticket = session.tracker.track(session.latest.clone(), 1);
            session
                .pending
                .push(async move { (ticket, ack.wait().await.outcome.status) }.boxed());
        }
        messages.clear();
    }

    /// Settles a unit; when the confirmed marker moves, POSTs it to `sync_url`. An errored
    /// event ends the connection, so the feed sends it again.
    async fn settle(
        &self,
        session: &mut Session,
        (ticket, status): Settled,
        confirmed: &mut Option<String>,
    ) -> Result<(), String> {
        if status == AckStatus::Errored {
            return Err(format!(
                "an event was not delivered; reconnecting to have the feed send again from marker {confirmed:?}"
            ));
        }
        if let Some(Some(marker)) = session.tracker.settle(ticket)
            && confirmed.as_deref() != Some(marker.as_str())
        {
            *confirmed = Some(marker.clone());
            self.sync(&marker).await;
        }
        Ok(())
    }

    /// POSTs a confirmed marker to `sync_url`. A failure is logged: the next marker says as
    /// much, and the feed resumes from the last one it saved at worst.
    async fn sync(&self, marker: &str) {
        let Some(url) = &self.sync_url else { return };
        let mut body = serde_json::Map::new();
        body.insert(
            self.config.envelope.marker.clone(),
            serde_json::Value::String(marker.to_owned()),
        );
        let request = self
            .client
            .post(url.clone())
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::Value::Object(body).to_string())
            .timeout(REQUEST_TIMEOUT);
        let failure = match request.send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => format!("sync_url answered {}", response.status()),
            Err(error) => crate::core::error_chain(&error.without_url()),
        };
        self.remote.metrics.errors.inc();
        tracing::warn!(connector = %self.remote.id, marker, error = %failure, "Could not save the feed's position.");
    }

    /// An envelope that cannot be read: counted, logged and put on `_errors`.
    async fn report_bad(&self, frame: &Frame, reason: &str, target: &IngestTarget<'_>) {
        tracing::warn!(connector = %self.remote.id, %reason, "The feed sent an envelope that cannot be read.");
        self.remote.metrics.errors.inc();
        let error = tb_codec::DecodeError::invalid(reason, frame.text.as_bytes());
        let (ack, _receipt) = tb_event::Acknowledgement::new_unit();
        let event =
            crate::core::decode_error_event(&self.remote.id, StreamId(0), &error, ack.clone());
        ack.complete(AckStatus::Delivered);
        let _ = target.errors.send(vec![event]).await;
    }

    /// After the connection was lost: what is in flight is settled first (unless intake
    /// stops, or an event errored), so the next connection resumes from the furthest
    /// marker it confirms, not send it all again.
    async fn settle_in_flight(
        &self,
        session: &mut Session,
        confirmed: &mut Option<String>,
        error: String,
    ) -> End {
        match self
            .settle_all(session, confirmed, Some(&self.remote.intake))
            .await
        {
            Ok(()) => End::Lost(error),
            Err(errored) => End::Lost(format!("{error}; {errored}")),
        }
    }

    /// At a stop: the outputs are finished, and the acknowledgements of what is in flight
    /// awaited, so the last marker they confirm is saved. An errored event ends it: the
    /// feed sends again from there next time.
    async fn stop(
        &self,
        session: &mut Session,
        confirmed: &mut Option<String>,
        target: &IngestTarget<'_>,
    ) {
        target.finish_outputs();
        let _ = self.settle_all(session, confirmed, None).await;
    }

    /// Settles the acknowledgements in flight as they come (the confirmed marker moves, and
    /// is synced), until none is left, one is errored (its error), or `stop` is cancelled.
    async fn settle_all(
        &self,
        session: &mut Session,
        confirmed: &mut Option<String>,
        stop: Option<&tokio_util::sync::CancellationToken>,
    ) -> Result<(), String> {
        loop {
            let settled = match stop {
                Some(stop) => tokio::select! {
                    biased;
                    () = stop.cancelled() => return Ok(()),
                    settled = session.pending.next() => settled,
                },
                None => session.pending.next().await,
            };
            let Some(settled) = settled else {
                return Ok(());
            };
            self.settle(session, settled, confirmed).await?;
        }
    }
}

/// What an envelope says.
enum Envelope {
    Data(Vec<u8>),
    Ping,
    Sync(String),
}

/// Reads an envelope. A `DATA` message that is a JSON string is its text; any other JSON
/// value is its JSON. A `SYNC` without a marker field takes the SSE event's id.
fn envelope_of(frame: &Frame, fields: &EnvelopeFields) -> Result<Envelope, String> {
    let value: serde_json::Value = serde_json::from_str(&frame.text)
        .map_err(|error| format!("the envelope is not JSON: {error}"))?;
    let kind = value
        .get(&fields.kind)
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| format!("the envelope has no `{}` text", fields.kind))?;
    match kind {
        "DATA" => match value.get(&fields.message) {
            Some(serde_json::Value::String(text)) => Ok(Envelope::Data(text.as_bytes().to_vec())),
            Some(message) => Ok(Envelope::Data(message.to_string().into_bytes())),
            None => Err(format!("a DATA envelope without `{}`", fields.message)),
        },
        "PING" => Ok(Envelope::Ping),
        "SYNC" => match (value.get(&fields.marker), &frame.id) {
            (Some(serde_json::Value::String(marker)), _) => Ok(Envelope::Sync(marker.clone())),
            (Some(marker), _) if !marker.is_null() => Ok(Envelope::Sync(marker.to_string())),
            (_, Some(id)) if !id.is_empty() => Ok(Envelope::Sync(id.clone())),
            _ => Err(format!("a SYNC envelope without `{}`", fields.marker)),
        },
        other => Err(format!(
            "unknown envelope type `{other}`: DATA, PING or SYNC"
        )),
    }
}
