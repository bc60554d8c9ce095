//! The common source loop for byte streams (stdin, files, TCP connections): read a chunk,
//! decode it, hand the events on, and learn in order when each chunk is acknowledged.
//!
//! Acknowledgements arrive out of order; positions must only advance to the lowest chunk not
//! yet acknowledged. Awaiting receipts through a `FuturesOrdered` gives exactly that.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tb_event::{AckOutcome, AckStatus, Acknowledgement, ComponentId, Event};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use super::fanout::OutputSender;
use super::ingest::{StreamDecoder, decode_error_event};
use super::metrics::ConnectorMetrics;

/// Where decoded events go, and what is counted.
pub struct IngestTarget<'a> {
    /// The connector's id.
    pub id: &'a ComponentId,
    /// `<id>`.
    pub output: &'a OutputSender,
    /// `<id>._errors`.
    pub errors: &'a OutputSender,
    /// Counters.
    pub metrics: &'a ConnectorMetrics,
    /// Cancelled when intake must stop.
    pub intake: &'a CancellationToken,
}

/// How a read loop behaves at the end of its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtEnd {
    /// Finish the stream: flush the decoder, wait for acknowledgements, return.
    Finish,
    /// As `Finish`, and the end of this stream is the end of the connector's output (a file
    /// read, stdin): the outputs are finished before waiting, so steps downstream that hold
    /// events (a batch) flush them.
    Last,
    /// Keep polling for appended bytes until intake stops (`tail -f`).
    Follow,
}

/// Read chunk size: large enough that per-chunk costs vanish, small enough to stay cache-warm.
pub(crate) const CHUNK_SIZE: usize = 128 * 1024;
/// Chunks handed on but not yet acknowledged; bounds memory along with channel capacities.
pub(super) const MAX_UNACKNOWLEDGED_CHUNKS: usize = 256;
/// How often a followed input is polled for new bytes.
pub(crate) const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Reads `reader` to its end (or forever when following), starting at byte `offset`.
/// `acknowledged` is called in input order as each chunk resolves, with a [`ChunkAck`].
/// Returns the offset reached.
///
/// # Errors
///
/// A read error; chunks already handed on are still awaited first.
pub async fn ingest_reader<R, F>(
    mut reader: R,
    decoder: &mut StreamDecoder,
    target: IngestTarget<'_>,
    mut offset: u64,
    at_end: AtEnd,
    mut acknowledged: F,
) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    F: FnMut(ChunkAck),
{
    if let Some((delimiter, max_length)) = decoder.parallel_lines() {
        let lines = super::parallel_reader::LineSplit {
            delimiter,
            max_length,
        };
        return super::parallel_reader::ingest_lines_in_parallel(
            reader,
            decoder,
            lines,
            target,
            offset,
            at_end,
            acknowledged,
        )
        .await;
    }
    let mut buffer = vec![0u8; CHUNK_SIZE];
    let mut pending = FuturesOrdered::new();
    let mut result = Ok(());
    loop {
        while pending.len() >= MAX_UNACKNOWLEDGED_CHUNKS {
            if let Some(chunk) = pending.next().await {
                acknowledged(chunk);
            }
        }
        let read = tokio::select! {
            biased;
            () = target.intake.cancelled() => break,
            Some(chunk) = pending.next(), if !pending.is_empty() => {
                acknowledged(chunk);
                continue;
            }
            read = reader.read(&mut buffer) => read,
        };
        let count = match read {
            Ok(0) if at_end == AtEnd::Follow => {
                tokio::select! {
                    () = target.intake.cancelled() => break,
                    () = tokio::time::sleep(FOLLOW_POLL) => continue,
                }
            }
            Ok(0) => {
                if let Some(receipt) = hand_on(decoder, None, &target).await {
                    pending.push_back(wait_at(receipt, offset, decoder.events_decoded()));
                }
                if at_end == AtEnd::Last {
                    target.finish_outputs();
                }
                break;
            }
            Ok(count) => count,
            Err(error) => {
                result = Err(error);
                break;
            }
        };
        offset += count as u64;
        if let Some(receipt) = hand_on(decoder, Some(&buffer[..count]), &target).await {
            pending.push_back(wait_at(receipt, offset, decoder.events_decoded()));
        }
    }
    while let Some(chunk) = pending.next().await {
        acknowledged(chunk);
    }
    result.map(|()| offset)
}

impl IngestTarget<'_> {
    /// Finishes both outputs: this source has nothing more to send.
    pub fn finish_outputs(&self) {
        self.output.finish();
        self.errors.finish();
    }
}

/// A chunk whose acknowledgement resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkAck {
    /// Byte offset just past the chunk.
    pub end: u64,
    /// Events decoded on this stream up to and including the chunk.
    pub events_through: u64,
    /// Delivered, errored or rejected, with the reason.
    pub outcome: AckOutcome,
}

/// A chunk's events, handed on: what waiting for their acknowledgement needs.
pub(super) struct Handed {
    receipt: tb_event::AckReceipt,
    started: Instant,
    events: u64,
    metrics: ConnectorMetrics,
}

impl Handed {
    pub(super) fn new(
        receipt: tb_event::AckReceipt,
        events: u64,
        metrics: &ConnectorMetrics,
    ) -> Self {
        Self {
            receipt,
            started: Instant::now(),
            events,
            metrics: metrics.clone(),
        }
    }

    /// Waits for the acknowledgement, observing latency and counting events not delivered.
    pub(super) async fn wait(self) -> AckOutcome {
        let outcome = self.receipt.wait().await;
        self.metrics
            .latency
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics.settle(self.events, &outcome);
        outcome
    }
}

pub(super) async fn wait_at(handed: Handed, end: u64, events_through: u64) -> ChunkAck {
    let outcome = handed.wait().await;
    ChunkAck {
        end,
        events_through,
        outcome,
    }
}

/// Decodes one self-contained message (a WebSocket message: the decoder is finished after
/// it, ready for the next), hands its events on, and returns a future that resolves when
/// they are acknowledged, or `None` if the message held nothing.
pub async fn ingest_message(
    decoder: &mut StreamDecoder,
    message: &[u8],
    target: &IngestTarget<'_>,
) -> Option<impl std::future::Future<Output = ChunkAck> + use<>> {
    let fields = decoder.fields();
    let mut acks = ingest_messages(decoder, &[(message, fields)], target).await;
    acks.pop().flatten().map(MessageAck::wait)
}

/// One message of a batch given to [`ingest_messages`]: its body and the `%tightbeam`
/// fields of its events.
pub type MessageIn<'a> = (&'a [u8], Option<std::sync::Arc<tb_event::ObjectMap>>);

/// The events of one message, handed on: wait for their acknowledgement.
pub struct MessageAck {
    handed: Handed,
    events_through: u64,
}

impl MessageAck {
    /// Resolves when the message's events are acknowledged.
    pub async fn wait(self) -> ChunkAck {
        wait_at(self.handed, 0, self.events_through).await
    }
}

/// `first` and whatever else `messages` has ready right now, up to `max` in all: a burst a
/// broker already delivered, to be ingested as one batch.
pub fn take_ready<S: futures::Stream + Unpin>(
    messages: &mut S,
    first: S::Item,
    max: usize,
) -> Vec<S::Item> {
    use futures::FutureExt;
    let mut ready = vec![first];
    while ready.len() < max {
        match messages.next().now_or_never() {
            Some(Some(message)) => ready.push(message),
            Some(None) | None => break,
        }
    }
    ready
}

/// Messages a broker source decodes and sends on together, at most.
pub const MAX_MESSAGES_PER_BATCH: usize = 512;

/// Decodes messages that arrived together (each self-contained, with its own
/// acknowledgement) and hands all their events on in one batch, so a broker's burst costs
/// one send downstream, not one per message. Returns, in order, each message's
/// acknowledgement to wait for, or `None` for a message that held nothing.
pub async fn ingest_messages(
    decoder: &mut StreamDecoder,
    messages: &[MessageIn<'_>],
    target: &IngestTarget<'_>,
) -> Vec<Option<MessageAck>> {
    let mut acks = Vec::with_capacity(messages.len());
    let mut events = Vec::new();
    let mut error_events = Vec::new();
    let mut failures = Vec::new();
    for (body, fields) in messages {
        decoder.set_fields(fields.clone());
        let (ack, receipt) = Acknowledgement::new_unit();
        let before = events.len();
        decoder.decode(body, &ack, &mut events, &mut failures);
        decoder.finish(&ack, &mut events, &mut failures);
        let count = (events.len() - before) as u64;
        let held_something = count > 0 || !failures.is_empty();
        error_events.extend(
            failures.drain(..).map(|failure| {
                decode_error_event(target.id, decoder.stream(), &failure, ack.clone())
            }),
        );
        ack.complete(AckStatus::Delivered);
        acks.push(held_something.then(|| MessageAck {
            handed: Handed::new(receipt, count, target.metrics),
            events_through: decoder.events_decoded(),
        }));
    }
    send_decoded(events, error_events, target).await;
    acks
}

/// Decodes one chunk (or the end of the stream when `chunk` is `None`), sends the events
/// and error events on, and returns the chunk's receipt, or `None` if it produced nothing.
async fn hand_on(
    decoder: &mut StreamDecoder,
    chunk: Option<&[u8]>,
    target: &IngestTarget<'_>,
) -> Option<Handed> {
    let (ack, receipt) = Acknowledgement::new_unit();
    let mut events = Vec::new();
    let mut failures = Vec::new();
    match chunk {
        Some(chunk) => decoder.decode(chunk, &ack, &mut events, &mut failures),
        None => decoder.finish(&ack, &mut events, &mut failures),
    }
    let count = forward(decoder, ack, events, failures, target).await?;
    Some(Handed::new(receipt, count, target.metrics))
}

/// Sends decoded events and error events on; returns how many events were decoded, or
/// `None` when there was nothing to send.
pub(crate) async fn forward(
    decoder: &StreamDecoder,
    ack: tb_event::AckHandle,
    events: Vec<Event>,
    failures: Vec<tb_codec::DecodeError>,
    target: &IngestTarget<'_>,
) -> Option<u64> {
    if events.is_empty() && failures.is_empty() {
        ack.complete(AckStatus::Delivered);
        return None;
    }
    let error_events: Vec<Event> = failures
        .iter()
        .map(|failure| decode_error_event(target.id, decoder.stream(), failure, ack.clone()))
        .collect();
    ack.complete(AckStatus::Delivered);
    let count = events.len() as u64;
    send_decoded(events, error_events, target).await;
    Some(count)
}

/// Counts and sends decoded events and error events on (each output only when it has
/// something for it).
async fn send_decoded(events: Vec<Event>, error_events: Vec<Event>, target: &IngestTarget<'_>) {
    target.metrics.received.inc_by(events.len() as u64);
    target.metrics.errors.inc_by(error_events.len() as u64);
    target.metrics.output.inc_by(events.len() as u64);
    // A closed output fails the events, which the receipts report; nothing to add here.
    if !error_events.is_empty() {
        let _ = target.errors.send(error_events).await;
    }
    if !events.is_empty() {
        let _ = target.output.send(events).await;
    }
}
