//! The one write path of every output: encode events, write the bytes, complete the events
//! as delivered (or errored if the write failed), and after a failed write fail everything
//! that follows, since what a failed write left behind (part of a frame, of a compressed
//! block) makes anything written after it unreadable.
//!
//! [`EventWriter`] is that path; a [`WritePolicy`] holds what differs between a sink's file
//! or pipe (a write takes as long as it takes) and one stream of a server (a peer that
//! stalls past its `write_timeout` counts as gone, costing only its own events).
//! [`FrameWriter`] is where the bytes go: a byte stream ([`ByteStream`]) or a transport of
//! messages. [`write_batches`] runs the path over a sink's input, `write_outgoing` over one
//! stream's queue.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tb_codec::Encoder;
use tb_event::{AckStatus, Event, EventBatch};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::input::InputQueue;
use super::metrics::ConnectorMetrics;

/// Encodes `batch` into `buffer` (cleared first). Events that cannot be encoded are failed
/// and counted; the rest are returned, to be completed once the bytes are written.
pub fn encode_batch(
    encoder: &mut Encoder,
    batch: EventBatch,
    buffer: &mut Vec<u8>,
    metrics: &ConnectorMetrics,
) -> Vec<Event> {
    buffer.clear();
    let mut encoded = Vec::with_capacity(batch.len());
    for event in batch {
        match encoder.encode(&event.value, buffer) {
            Ok(()) => encoded.push(event),
            Err(error) => {
                tracing::warn!(%error, "Event could not be encoded.");
                metrics.errors.inc();
                event.complete_with(AckStatus::Rejected, format!("cannot be encoded: {error}"));
            }
        }
    }
    if let Err(error) = encoder.flush(buffer) {
        // The buffer may hold a partial frame: nothing in it can be called delivered.
        tracing::warn!(%error, "Encoder could not flush; the batch is failed.");
        complete_written(std::mem::take(&mut encoded), false, metrics);
        buffer.clear();
    }
    encoded
}

/// One event encoded as a message of its own (a broker message, a stream entry): the
/// encoder is flushed after it. The error says why, for a rejection.
pub fn encode_message(encoder: &mut Encoder, value: &tb_event::Value) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    encoder
        .encode(value, &mut body)
        .and_then(|()| encoder.flush(&mut body))
        .map_err(|error| format!("cannot be encoded: {error}"))?;
    Ok(body)
}

/// Completes written events as delivered, or errored (worth retrying) if the write failed.
pub fn complete_written(events: Vec<Event>, written: bool, metrics: &ConnectorMetrics) {
    if written {
        complete_events(events, AckStatus::Delivered, None, metrics);
    } else {
        complete_events(
            events,
            AckStatus::Errored,
            Some(std::sync::Arc::from("the write failed")),
            metrics,
        );
    }
}

/// Completes sent events with one outcome, counting them as sent or as errors.
pub fn complete_events(
    events: Vec<Event>,
    status: AckStatus,
    reason: Option<std::sync::Arc<str>>,
    metrics: &ConnectorMetrics,
) {
    let count = events.len() as u64;
    if status == AckStatus::Delivered {
        metrics.sent.inc_by(count);
    } else {
        metrics.errors.inc_by(count);
    }
    for event in events {
        let (_value, _meta, ack) = event.into_parts();
        ack.complete_with(status, reason.clone());
    }
}

/// Where an [`EventWriter`] puts encoded bytes.
pub trait FrameWriter: Send {
    /// Writes `bytes` (one message, for a message transport) and flushes them.
    fn write_frame(&mut self, bytes: &[u8]) -> impl Future<Output = std::io::Result<()>> + Send;

    /// Ends the output after its last write (a socket's shutdown, a WebSocket close frame).
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// A byte stream (a file, stdout, a socket's write half) as a [`FrameWriter`].
pub struct ByteStream<W>(pub W);

impl<W: AsyncWrite + Unpin + Send> FrameWriter for ByteStream<W> {
    async fn write_frame(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write_all(bytes).await?;
        self.0.flush().await
    }

    async fn close(&mut self) {
        let _ = self.0.shutdown().await;
    }
}

/// What differs between the outputs an [`EventWriter`] serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePolicy {
    /// A sink's file or pipe: a write takes as long as it takes (its slowness is
    /// backpressure), and a failed one is an error worth a log line.
    Sink,
    /// One stream of a server: a write that stalls past the given time means the peer
    /// stopped reading, and a peer that goes away is routine.
    Stream(Duration),
}

impl WritePolicy {
    fn deadline(self) -> Option<Duration> {
        match self {
            Self::Sink => None,
            Self::Stream(timeout) => Some(timeout),
        }
    }
}

/// Encodes events, writes them to a [`FrameWriter`] and completes them; dead after its first
/// failed write.
pub struct EventWriter<W> {
    encoder: Encoder,
    writer: W,
    policy: WritePolicy,
    buffer: Vec<u8>,
    // Invariant: once set, nothing more is written.
    failure: Option<std::io::Error>,
}

impl<W: FrameWriter> EventWriter<W> {
    /// A writer that encodes with `encoder` and writes to `writer` as `policy` says.
    pub fn new(encoder: Encoder, writer: W, policy: WritePolicy) -> Self {
        Self {
            encoder,
            writer,
            policy,
            buffer: Vec::new(),
            failure: None,
        }
    }

    /// Whether a write has failed, so that every later event fails.
    pub fn is_broken(&self) -> bool {
        self.failure.is_some()
    }

    /// Encodes and writes `events` in one write, completing them as delivered once written
    /// or errored if the write fails; those that cannot be encoded are rejected. Once a
    /// write has failed, events are errored without being written.
    pub async fn write_events(&mut self, events: Vec<Event>, metrics: &ConnectorMetrics) {
        if self.is_broken() {
            complete_written(events, false, metrics);
            return;
        }
        let events = encode_batch(&mut self.encoder, events, &mut self.buffer, metrics);
        if events.is_empty() {
            return;
        }
        self.write_buffer().await;
        complete_written(events, !self.is_broken(), metrics);
    }

    /// Writes `bytes` that are no event (an acknowledgement line), unless a write has failed.
    pub async fn write_bytes(&mut self, bytes: &[u8]) {
        if self.is_broken() || bytes.is_empty() {
            return;
        }
        self.buffer.clear();
        self.buffer.extend_from_slice(bytes);
        self.write_buffer().await;
    }

    /// Ends the encoder's stream (a compressor's trailer) and writes what that leaves.
    ///
    /// # Errors
    ///
    /// The first failed write, or the failure of this last one.
    pub async fn finish(mut self) -> std::io::Result<()> {
        if let Some(error) = self.failure.take() {
            return Err(error);
        }
        self.buffer.clear();
        if self.encoder.finish(&mut self.buffer).is_ok() {
            self.write_buffer().await;
        }
        self.failure.map_or(Ok(()), Err)
    }

    /// Closes the writer, unless a write failed: a peer that stopped reading would not
    /// read the close either.
    pub async fn close(mut self) {
        if self.is_broken() {
            return;
        }
        let _ = within(self.policy.deadline(), async {
            self.writer.close().await;
            Ok(())
        })
        .await;
    }

    async fn write_buffer(&mut self) {
        let written = within(
            self.policy.deadline(),
            self.writer.write_frame(&self.buffer),
        )
        .await;
        let Err(error) = written else { return };
        match self.policy {
            WritePolicy::Sink => {
                tracing::error!(%error, "Write failed; this output fails every event from now on.");
            }
            WritePolicy::Stream(_) => {
                tracing::debug!(%error, "Stream write failed; its queued events are failed.");
            }
        }
        self.failure = Some(error);
    }
}

/// Runs `write`, failing it as timed out once `deadline` (if any) has passed.
async fn within(
    deadline: Option<Duration>,
    write: impl Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    let Some(deadline) = deadline else {
        return write.await;
    };
    match tokio::time::timeout(deadline, write).await {
        Ok(written) => written,
        Err(_elapsed) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "peer stopped reading",
        )),
    }
}

/// Writes every batch from `input` to `writer` until the input closes, then ends the
/// encoder's stream.
///
/// After a failed write the sink is dead: that batch and every later one are failed (their
/// sources do not confirm them), and the error is returned once the input closes.
///
/// # Errors
///
/// The first failed write.
pub async fn write_batches<W: AsyncWrite + Unpin + Send>(
    mut input: InputQueue,
    encoder: Encoder,
    writer: W,
    metrics: &ConnectorMetrics,
) -> std::io::Result<()> {
    let mut output = EventWriter::new(encoder, ByteStream(writer), WritePolicy::Sink);
    while let Some(batch) = input.recv().await {
        metrics.input.inc_by(batch.len() as u64);
        output.write_events(batch, metrics).await;
    }
    output.finish().await
}

/// Writes one stream's outgoing queue until the queue closes, one event per write (a
/// message transport sends each write as one message). `acks`,
/// when given, carries the stream's latest acknowledgement line, written whenever it
/// changes (only the newest matters: each line covers all before it). A write that fails
/// or stalls kills the stream: the rest of the queue is failed.
pub(super) async fn write_outgoing<W: FrameWriter>(
    mut outgoing: mpsc::Receiver<Event>,
    mut acks: Option<watch::Receiver<Bytes>>,
    mut output: EventWriter<W>,
    metrics: &ConnectorMetrics,
) {
    while !output.is_broken() {
        tokio::select! {
            biased;
            event = outgoing.recv() => match event {
                Some(event) => output.write_events(vec![event], metrics).await,
                None => break,
            },
            line = changed_ack(&mut acks), if acks.is_some() => match line {
                Some(line) => output.write_bytes(&line).await,
                None => acks = None,
            },
        }
    }
    if output.is_broken() {
        return fail_rest(&mut outgoing, metrics).await;
    }
    // The stream is closing after its last acknowledgement: make sure the client sees it.
    if let Some(mut acks) = acks
        && acks.has_changed().unwrap_or(false)
    {
        let line = acks.borrow_and_update().clone();
        output.write_bytes(&line).await;
    }
    output.close().await;
}

async fn changed_ack(acks: &mut Option<watch::Receiver<Bytes>>) -> Option<Bytes> {
    let acks = acks.as_mut()?;
    acks.changed().await.ok()?;
    Some(acks.borrow_and_update().clone())
}

/// Closes a dead stream's queue and fails what it still holds.
async fn fail_rest(outgoing: &mut mpsc::Receiver<Event>, metrics: &ConnectorMetrics) {
    outgoing.close();
    while let Some(event) = outgoing.recv().await {
        super::streams::fail_outgoing(event, metrics);
    }
}
