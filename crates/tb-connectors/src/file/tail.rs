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
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;

use std::path::Path;

use super::checkpoint::{Checkpoint, FileIdentity, Position};
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

/// The file being read and where: the watched path's file, or the rotated one it replaced.
pub(super) struct Segment {
    pub(super) file: tokio::fs::File,
    pub(super) identity: Option<FileIdentity>,
    pub(super) offset: u64,
}

/// What a poll at the end of the file found at the watched path.
enum AtEnd {
    /// The same file, not shorter: wait for more.
    Same,
    /// The same file, shorter than what was read: it was truncated (copytruncate).
    Truncated,
    /// Another file: the one being read was rotated away.
    Replaced,
    /// Nothing at the path for now.
    Gone,
}

fn look_at_path(path: &Path, segment: &Segment) -> AtEnd {
    let Some(current) = FileIdentity::of(path) else {
        return AtEnd::Gone;
    };
    let same = segment.identity.as_ref().is_none_or(|identity| {
        identity.device == current.device && identity.inode == current.inode
    });
    if !same {
        return AtEnd::Replaced;
    }
    // Same inode: shorter than what was read, or starting with other bytes than it did
    // (truncated, then written past the old offset before this poll), it was truncated.
    let rewritten = segment
        .identity
        .as_ref()
        .is_some_and(|identity| !identity.same_file(&current));
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.len() < segment.offset || rewritten => AtEnd::Truncated,
        _ => AtEnd::Same,
    }
}

/// Positions are (generation, offset): each file read (or re-read after a truncation) is a
/// generation of its own, so the tracker orders chunks across files.
type TailPosition = (u64, u64);

/// What follows the generations: which file each one read.
struct Generations {
    current: u64,
    files: Vec<(u64, Option<FileIdentity>)>,
}

impl Generations {
    fn start(&mut self, identity: Option<FileIdentity>) {
        self.current += 1;
        self.files.push((self.current, identity));
    }

    /// The checkpoint position of a confirmed tracker position; older generations go.
    fn position(&mut self, (generation, offset): TailPosition) -> Position {
        self.files.retain(|(kept, _)| *kept >= generation);
        let file = self
            .files
            .iter()
            .find(|(kept, _)| *kept == generation)
            .and_then(|(_, identity)| identity.clone());
        Position { file, offset }
    }
}

/// Follows the watched file from `segment` until intake stops, moving `checkpoint` with the
/// confirmed position. A file rotated away (`mv`) is read to its end, then the new file at
/// the path from its start; a truncated file is read again from its start.
///
/// # Errors
///
/// A read error; chunks in flight are still settled first.
pub(super) async fn follow(
    mut segment: Segment,
    context: &ConnectorContext,
    (codec, interceptors): (CodecKind, &[InterceptorConfig]),
    lines: LineSplit,
    watched: &Path,
    checkpoint: &mut Checkpoint,
) -> std::io::Result<()> {
    let path = watched.display().to_string();
    let path = path.as_str();
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
    let mut progress = Progress {
        tracker: PositionTracker::new((0, segment.offset), TAIL_PREFETCH_EVENTS),
        settling: FuturesUnordered::new(),
        generations: Generations {
            current: 0,
            files: vec![(0, segment.identity.clone())],
        },
        checkpoint,
    };
    let mut carry = Carry::new();
    let mut buffer = vec![0u8; CHUNK_SIZE];
    let mut rotation_seen = false;
    let mut result = Ok(());
    loop {
        let may_read = progress.tracker.has_room();
        tokio::select! {
            biased;
            () = context.intake.cancelled() => break,
            Some(settled) = progress.settling.next(), if !progress.settling.is_empty() => {
                progress.settle(&sender, path, settled).await;
            }
            read = segment.file.read(&mut buffer), if may_read => match read {
                Ok(0) => match look_at_path(watched, &segment) {
                    AtEnd::Replaced if rotation_seen => {
                        // Read to its end twice, a poll apart: the old file is done. What
                        // it ends with unterminated is its last line.
                        rotation_seen = false;
                        let rest = carry.held().to_vec();
                        if !rest.is_empty() {
                            let mut line = rest;
                            line.extend_from_slice(&lines.delimiter);
                            let end = (progress.generations.current, segment.offset);
                            send_lines(&sender, &mut decoder, &mut progress, line, (segment.offset, end)).await;
                        }
                        match open_watched(watched).await {
                            Ok(next) => {
                                tracing::info!(path, "The file was rotated; reading the new one from its start.");
                                segment = next;
                                progress.generations.start(segment.identity.clone());
                                carry = Carry::new();
                            }
                            Err(error) => tracing::debug!(path, %error, "The new file cannot be opened yet."),
                        }
                    }
                    AtEnd::Truncated => {
                        if let Err(error) = restart_truncated(&mut segment, watched, &mut progress.generations, &mut carry).await {
                            result = Err(error);
                            break;
                        }
                    }
                    state => {
                        rotation_seen = matches!(state, AtEnd::Replaced);
                        tokio::select! {
                            () = context.intake.cancelled() => break,
                            () = tokio::time::sleep(FOLLOW_POLL) => {}
                        }
                    }
                },
                // What was just read may come from a rewrite past the old offset: checked
                // after the read, so such bytes are never handed on.
                Ok(_) if matches!(look_at_path(watched, &segment), AtEnd::Truncated) => {
                    if let Err(error) = restart_truncated(&mut segment, watched, &mut progress.generations, &mut carry).await {
                        result = Err(error);
                        break;
                    }
                }
                Ok(count) => {
                    let start = segment.offset - carry.held().len() as u64;
                    segment.offset += count as u64;
                    match carry.split(&buffer[..count], &lines, segment.offset) {
                        None => {}
                        Some(Split::Lines { bytes, end }) => {
                            let end = (progress.generations.current, end);
                            send_lines(&sender, &mut decoder, &mut progress, bytes, (start, end)).await;
                        }
                        Some(Split::Overlong { error, end }) => {
                            let event = decode_error_event(&sender.id, StreamId(0), &error, AckHandle::untracked());
                            sender.metrics.errors.inc();
                            let _ = sender.errors.send(vec![event]).await;
                            let end = (progress.generations.current, end);
                            progress.pass(end).await;
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
    while let Some(settled) = progress.settling.next().await {
        progress.settle(&sender, path, settled).await;
    }
    result
}

/// Reads a truncated file again from its start, as a new generation.
async fn restart_truncated(
    segment: &mut Segment,
    watched: &Path,
    generations: &mut Generations,
    carry: &mut Carry,
) -> std::io::Result<()> {
    tracing::warn!(path = %watched.display(), offset = segment.offset, "The file was truncated; reading it again from its start.");
    segment.file.seek(std::io::SeekFrom::Start(0)).await?;
    segment.offset = 0;
    segment.identity = FileIdentity::of(watched);
    generations.start(segment.identity.clone());
    *carry = Carry::new();
    Ok(())
}

/// Opens the file now at the watched path, from its start.
async fn open_watched(watched: &Path) -> std::io::Result<Segment> {
    let file = tokio::fs::File::open(watched).await?;
    Ok(Segment {
        file,
        identity: FileIdentity::of(watched),
        offset: 0,
    })
}

type Settling =
    FuturesUnordered<std::pin::Pin<Box<dyn std::future::Future<Output = Settled> + Send>>>;

/// The tail loop's place in the file: positions handed on and not yet settled, the chunks
/// whose outcomes are awaited, the files read so far, and the checkpoint they move.
struct Progress<'a> {
    tracker: PositionTracker<TailPosition>,
    settling: Settling,
    generations: Generations,
    checkpoint: &'a mut Checkpoint,
}

impl Progress<'_> {
    /// Passes bytes ending at `end` that carry no events (blank lines, an overlong line
    /// recorded elsewhere): settled at once.
    async fn pass(&mut self, end: TailPosition) {
        let ticket = self.tracker.track(end, 0);
        self.advance(ticket).await;
    }

    /// Applies a chunk's final outcome: delivered moves the position; rejected is recorded
    /// and passed; errored (only left so when stopping) keeps the position before it.
    async fn settle(&mut self, sender: &ChunkSender, path: &str, settled: Settled) {
        match settled.outcome.status {
            AckStatus::Errored => return,
            AckStatus::Rejected => sender.record_rejected(path, &settled).await,
            AckStatus::Delivered => {}
        }
        self.advance(settled.ticket).await;
    }

    /// Settles `ticket` and moves the checkpoint to the new confirmed position, if any.
    async fn advance(&mut self, ticket: Ticket) {
        if let Some(confirmed) = self.tracker.settle(ticket) {
            self.checkpoint
                .advance(self.generations.position(confirmed))
                .await;
        }
    }
}

/// Sends whole `lines` (from byte `start`, ending at position `end`) and tracks them.
async fn send_lines(
    sender: &ChunkSender,
    decoder: &mut StreamDecoder,
    progress: &mut Progress<'_>,
    lines: Vec<u8>,
    (start, end): (u64, TailPosition),
) {
    match sender.send(decoder, &lines).await {
        Some(sent) => {
            let ticket = progress.tracker.track(end, sent.1);
            progress.settling.push(Box::pin(sender.clone().settle(
                ticket,
                (start, end.1),
                lines,
                sent,
            )));
        }
        // Nothing to deliver (blank lines): passed at once.
        None => progress.pass(end).await,
    }
}
