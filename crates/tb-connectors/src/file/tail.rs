//! `mode = "tail"`: follow a file as it grows, confirming by position.
//!
//! Whole lines are read in chunks; each chunk's events go on under one acknowledgement and
//! the chunk is tracked by a [`PositionTracker`] with the offset just past its last line.
//! The checkpoint is the tracker's confirmed position, so it never passes a chunk whose
//! events are not settled, however the acknowledgements are ordered. A chunk that ends
//! *errored* (a sink that may accept it later) is sent again after a backoff, as often as it
//! takes: delivery is at least once, and every resend is counted in `redelivered`. A chunk
//! that ends *rejected* (it will never pass as it is) is passed: a record of it goes to
//! `<id>._errors`, so one bad line never freezes the checkpoint for good.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tb_codec::{CodecKind, InterceptorConfig};
use tb_event::{
    AckHandle, AckOutcome, AckStatus, Acknowledgement, ComponentId, Event, EventMeta, KeyString,
    ObjectMap, StreamId, Value,
};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::checkpoint::Checkpoint;
use crate::core::parallel_reader::{Carry, LineSplit, Split};
use crate::core::reader::{CHUNK_SIZE, FOLLOW_POLL, forward};
use crate::core::{
    Backoff, ConnectorContext, ConnectorMetrics, IngestTarget, OutputSender, PositionTracker,
    StreamDecoder, Ticket, decode_error_event,
};

/// Events read but not settled before the tail stops reading: its prefetch.
pub(super) const TAIL_PREFETCH_EVENTS: u64 = 100_000;
/// The first wait before an errored chunk is sent again; it doubles up to the max.
const RESEND_BACKOFF_MIN: Duration = Duration::from_millis(200);
/// The longest wait between two sends of an errored chunk.
const RESEND_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What sending a chunk's lines (again) needs, owned so a resend can run on its own.
#[derive(Clone)]
struct ChunkSender {
    id: ComponentId,
    output: OutputSender,
    errors: OutputSender,
    metrics: ConnectorMetrics,
    intake: CancellationToken,
    codec: CodecKind,
    interceptors: Arc<[InterceptorConfig]>,
    fields: Option<Arc<ObjectMap>>,
}

/// A chunk's final outcome.
struct Settled {
    ticket: Ticket,
    start: u64,
    end: u64,
    outcome: AckOutcome,
}

impl ChunkSender {
    fn target(&self) -> IngestTarget<'_> {
        IngestTarget {
            id: &self.id,
            output: &self.output,
            errors: &self.errors,
            metrics: &self.metrics,
            intake: &self.intake,
        }
    }

    /// Decodes `lines` with `decoder` and hands the events on; the receipt and how many
    /// events went, or `None` if the lines held nothing.
    async fn send(
        &self,
        decoder: &mut StreamDecoder,
        lines: &[u8],
    ) -> Option<(tb_event::AckReceipt, u64)> {
        let (ack, receipt) = Acknowledgement::new_unit();
        let mut events = Vec::new();
        let mut failures = Vec::new();
        decoder.decode(lines, &ack, &mut events, &mut failures);
        let count = forward(decoder, ack, events, failures, &self.target()).await?;
        Some((receipt, count))
    }

    /// Waits for a chunk's acknowledgement, sending its lines again after a backoff while
    /// it ends errored (until intake stops: then it stays unconfirmed, for the next start).
    async fn settle(
        self,
        ticket: Ticket,
        (start, end): (u64, u64),
        lines: Vec<u8>,
        (mut receipt, events): (tb_event::AckReceipt, u64),
    ) -> Settled {
        let started = Instant::now();
        let mut backoff = Backoff::new(RESEND_BACKOFF_MIN, RESEND_BACKOFF_MAX);
        let outcome = loop {
            let outcome = receipt.wait().await;
            self.metrics.settled.inc_by(events);
            if outcome.status != AckStatus::Errored || self.intake.is_cancelled() {
                break outcome;
            }
            let delay = backoff.next_delay();
            tracing::warn!(start, end, reason = outcome.reason_or_status(), retry_in = ?delay, "Lines were not delivered; sending them again.");
            tokio::select! {
                () = self.intake.cancelled() => break outcome,
                () = tokio::time::sleep(delay) => {}
            }
            let mut decoder = StreamDecoder::new(
                self.id.clone(),
                StreamId(0),
                self.codec,
                &self.interceptors,
                self.fields.clone(),
            );
            match self.send(&mut decoder, &lines).await {
                Some((again, _)) => {
                    self.metrics.redelivered.inc_by(events);
                    receipt = again;
                }
                None => break AckOutcome::DELIVERED,
            }
        };
        self.metrics
            .latency
            .observe(started.elapsed().as_secs_f64());
        if !outcome.is_delivered() {
            self.metrics.unconfirmed.inc_by(events);
        }
        Settled {
            ticket,
            start,
            end,
            outcome,
        }
    }

    /// Puts a record of a rejected chunk on `<id>._errors`: which bytes were passed over,
    /// and why.
    async fn record_rejected(&self, path: &str, settled: &Settled) {
        let mut error = ObjectMap::new();
        error.insert(
            KeyString::from("message"),
            Value::from(format!(
                "lines were rejected and passed over: {}",
                settled.outcome.reason_or_status()
            )),
        );
        error.insert(KeyString::from("connector"), Value::from(self.id.as_str()));
        let mut record = ObjectMap::new();
        record.insert(KeyString::from("error"), Value::Object(error));
        record.insert(KeyString::from("path"), Value::from(path));
        record.insert(KeyString::from("start"), Value::from(settled.start));
        record.insert(KeyString::from("end"), Value::from(settled.end));
        let event = Event::new(
            Value::Object(record),
            EventMeta::new(self.id.clone(), StreamId(0), 0),
            AckHandle::untracked(),
        );
        self.metrics.errors.inc();
        let _ = self.errors.send(vec![event]).await;
    }
}

/// Follows `file` from `offset` until intake stops, moving `checkpoint` with the confirmed
/// position.
///
/// # Errors
///
/// A read error; chunks in flight are still settled first.
pub(super) async fn follow(
    mut file: tokio::fs::File,
    context: &ConnectorContext,
    (codec, interceptors): (CodecKind, &[InterceptorConfig]),
    lines: LineSplit,
    path: &str,
    mut offset: u64,
    checkpoint: &mut Checkpoint,
) -> std::io::Result<()> {
    let mut fields = ObjectMap::new();
    fields.insert(KeyString::from("path"), Value::from(path));
    let sender = ChunkSender {
        id: context.id.clone(),
        output: context.output.clone(),
        errors: context.errors.clone(),
        metrics: context.metrics.clone(),
        intake: context.intake.clone(),
        codec,
        interceptors: interceptors.into(),
        fields: Some(Arc::new(fields)),
    };
    let mut decoder = StreamDecoder::new(
        sender.id.clone(),
        StreamId(0),
        codec,
        interceptors,
        sender.fields.clone(),
    );
    let mut tracker = PositionTracker::new(offset, TAIL_PREFETCH_EVENTS);
    let mut settling = FuturesUnordered::new();
    let mut carry = Carry::new();
    let mut buffer = vec![0u8; CHUNK_SIZE];
    let mut result = Ok(());
    loop {
        let may_read = tracker.has_room();
        tokio::select! {
            biased;
            () = context.intake.cancelled() => break,
            Some(settled) = settling.next(), if !settling.is_empty() => {
                settle(&mut tracker, checkpoint, &sender, path, settled).await;
            }
            read = file.read(&mut buffer), if may_read => match read {
                Ok(0) => {
                    tokio::select! {
                        () = context.intake.cancelled() => break,
                        () = tokio::time::sleep(FOLLOW_POLL) => {}
                    }
                }
                Ok(count) => {
                    let start = offset - carry.held().len() as u64;
                    offset += count as u64;
                    match carry.split(&buffer[..count], &lines, offset) {
                        None => {}
                        Some(Split::Lines { bytes, end }) => {
                            match sender.send(&mut decoder, &bytes).await {
                                Some(sent) => {
                                    let ticket = tracker.track(end, sent.1);
                                    settling.push(sender.clone().settle(ticket, (start, end), bytes, sent));
                                }
                                None => {
                                    // Nothing to deliver (blank lines): passed at once.
                                    let ticket = tracker.track(end, 0);
                                    if let Some(confirmed) = tracker.settle(ticket) {
                                        checkpoint.advance(confirmed);
                                    }
                                }
                            }
                        }
                        Some(Split::Overlong { error, end }) => {
                            let event = decode_error_event(&sender.id, StreamId(0), &error, AckHandle::untracked());
                            sender.metrics.errors.inc();
                            let _ = sender.errors.send(vec![event]).await;
                            let ticket = tracker.track(end, 0);
                            if let Some(confirmed) = tracker.settle(ticket) {
                                checkpoint.advance(confirmed);
                            }
                        }
                    }
                }
                Err(error) => {
                    result = Err(error);
                    break;
                }
            },
        }
    }
    while let Some(settled) = settling.next().await {
        settle(&mut tracker, checkpoint, &sender, path, settled).await;
    }
    result
}

/// Applies a chunk's final outcome: delivered moves the position; rejected is recorded and
/// passed; errored (only left so when stopping) keeps the position before it.
async fn settle(
    tracker: &mut PositionTracker<u64>,
    checkpoint: &mut Checkpoint,
    sender: &ChunkSender,
    path: &str,
    settled: Settled,
) {
    match settled.outcome.status {
        AckStatus::Errored => return,
        AckStatus::Rejected => sender.record_rejected(path, &settled).await,
        AckStatus::Delivered => {}
    }
    if let Some(confirmed) = tracker.settle(settled.ticket) {
        checkpoint.advance(confirmed);
    }
}
