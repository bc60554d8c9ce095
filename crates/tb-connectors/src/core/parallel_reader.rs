//! Decoding runs of whole lines on several threads, in order.
//!
//! W1-shaped work spends most of its time turning JSON into values, and a single reading
//! task would make that the ceiling of every byte-stream source. When a stream's chain is
//! just `lines` and its codec keeps no state between frames, the reader cuts each chunk at
//! its last delimiter, decodes those whole lines on the runtime's other threads, and takes
//! the results back in input order (a `FuturesOrdered`), so sequence numbers, ordering and
//! the acknowledgement high-water mark are exactly those of the sequential reader.

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tb_codec::{DecodeError, Decoded};
use tb_event::Acknowledgement;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::ingest::StreamDecoder;
use super::reader::{
    AtEnd, CHUNK_SIZE, ChunkAck, FOLLOW_POLL, Handed, IngestTarget, MAX_UNACKNOWLEDGED_CHUNKS,
    forward, wait_at,
};

/// Runs of lines being decoded at once, beyond the one being handed on.
const DECODES_IN_FLIGHT: usize = 4;

/// The framing this reader splits by.
pub(crate) struct LineSplit {
    pub(crate) delimiter: Vec<u8>,
    pub(crate) max_length: usize,
}

/// Bytes read but not yet handed to a decode: a partial last line, or the remains of an
/// overlong line being skipped.
pub(crate) struct Carry {
    bytes: Vec<u8>,
    // Invariant: true while skipping an overlong line up to its delimiter.
    discarding: bool,
}

type DecodeJob = super::tasks::OwnedTask<(Decoded, u64)>;

/// [`super::ingest_reader`] for line-framed, stateless codecs. Same contract.
pub(super) async fn ingest_lines_in_parallel<R, F>(
    mut reader: R,
    decoder: &mut StreamDecoder,
    lines: LineSplit,
    target: IngestTarget<'_>,
    mut offset: u64,
    at_end: AtEnd,
    mut acknowledged: F,
) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    F: FnMut(ChunkAck),
{
    let mut buffer = vec![0u8; CHUNK_SIZE];
    let mut carry = Carry::new();
    let mut decoding: FuturesOrdered<DecodeJob> = FuturesOrdered::new();
    let mut pending = FuturesOrdered::new();
    let mut at_eof = false;
    let mut result = Ok(());
    loop {
        if at_eof && decoding.is_empty() {
            if at_end == AtEnd::Last {
                target.finish_outputs();
            }
            break;
        }
        let may_read = !at_eof
            && decoding.len() < DECODES_IN_FLIGHT
            && pending.len() < MAX_UNACKNOWLEDGED_CHUNKS;
        tokio::select! {
            biased;
            () = target.intake.cancelled() => break,
            Some(chunk) = pending.next(), if !pending.is_empty() => acknowledged(chunk),
            Some(job) = decoding.next(), if !decoding.is_empty() => {
                let Ok((mut decoded, end)) = job else {
                    tracing::error!(connector = %target.id, "A decode task failed; its lines are not acknowledged.");
                    break;
                };
                if let Some(waiting) = hand_on_decoded(decoder, &mut decoded, end, &target).await {
                    pending.push_back(waiting);
                }
            }
            read = reader.read(&mut buffer), if may_read => match read {
                Ok(0) if at_end == AtEnd::Follow => {
                    tokio::select! {
                        () = target.intake.cancelled() => break,
                        () = tokio::time::sleep(FOLLOW_POLL) => {}
                    }
                }
                Ok(0) => {
                    at_eof = true;
                    if !carry.held().is_empty() {
                        let rest = carry.held().to_vec();
                        decoding.push_back(spawn_decode(decoder, rest, offset));
                    }
                }
                Ok(count) => {
                    offset += count as u64;
                    if let Some(job) = take_whole_lines(&mut carry, &buffer[..count], &lines, decoder, offset) {
                        decoding.push_back(job);
                    }
                }
                Err(error) => {
                    result = Err(error);
                    break;
                }
            },
        }
    }
    while let Some(chunk) = pending.next().await {
        acknowledged(chunk);
    }
    result.map(|()| offset)
}

/// Appends `chunk` to the carry and, if it now holds whole lines, starts decoding them.
/// `offset` is the stream offset just past `chunk`.
fn take_whole_lines(
    carry: &mut Carry,
    chunk: &[u8],
    lines: &LineSplit,
    decoder: &StreamDecoder,
    offset: u64,
) -> Option<DecodeJob> {
    match carry.split(chunk, lines, offset)? {
        Split::Lines { bytes, end } => Some(spawn_decode(decoder, bytes, end)),
        Split::Overlong { error, end } => {
            let mut decoded = Decoded::default();
            decoded.errors.push(error);
            Some(super::tasks::spawn_owned(async move { (decoded, end) }))
        }
    }
}

/// What a chunk completed.
pub(crate) enum Split {
    /// Whole lines (delimiters included), ending at stream offset `end`.
    Lines { bytes: Vec<u8>, end: u64 },
    /// A line longer than `max_length` with no delimiter in sight: it is reported once, as
    /// the sequential `lines` decoder does, and skipped up to its delimiter.
    Overlong { error: DecodeError, end: u64 },
}

impl Carry {
    pub(crate) fn new() -> Self {
        Self {
            bytes: Vec::new(),
            discarding: false,
        }
    }

    /// Bytes held back: a partial last line.
    pub(crate) fn held(&self) -> &[u8] {
        if self.discarding { &[] } else { &self.bytes }
    }

    /// Appends `chunk` (which ends at stream offset `offset`) and takes whatever whole lines
    /// the carry now holds.
    pub(crate) fn split(&mut self, chunk: &[u8], lines: &LineSplit, offset: u64) -> Option<Split> {
        self.bytes.extend_from_slice(chunk);
        if self.discarding {
            // The carry keeps the last few bytes of what was skipped, so a delimiter split
            // across two reads is still found.
            match memchr::memmem::find(&self.bytes, &lines.delimiter) {
                Some(end) => {
                    self.bytes.drain(..end + lines.delimiter.len());
                    self.discarding = false;
                }
                None => {
                    let keep = lines.delimiter.len().saturating_sub(1);
                    let drop_to = self.bytes.len().saturating_sub(keep);
                    self.bytes.drain(..drop_to);
                    return None;
                }
            }
        }
        let Some(last) = find_last(&self.bytes, &lines.delimiter) else {
            if self.bytes.len() > lines.max_length + lines.delimiter.len() {
                let error = DecodeError::too_large(
                    format!(
                        "line longer than max_length of {} bytes; it was skipped",
                        lines.max_length
                    ),
                    &self.bytes,
                );
                self.bytes.clear();
                self.discarding = true;
                return Some(Split::Overlong { error, end: offset });
            }
            return None;
        };
        let rest = self.bytes.split_off(last + lines.delimiter.len());
        let bytes = std::mem::replace(&mut self.bytes, rest);
        let end = offset - self.bytes.len() as u64;
        Some(Split::Lines { bytes, end })
    }
}

fn spawn_decode(decoder: &StreamDecoder, lines: Vec<u8>, end: u64) -> DecodeJob {
    let mut detached = decoder.detached_decoder();
    super::tasks::spawn_owned(async move {
        let mut decoded = Decoded::default();
        detached.decode_chunk(&lines, &mut decoded);
        detached.finish(&mut decoded);
        (decoded, end)
    })
}

fn find_last(haystack: &[u8], delimiter: &[u8]) -> Option<usize> {
    memchr::memmem::rfind(haystack, delimiter)
}

/// Makes events of a decoded run, hands them on, and returns the run's acknowledgement.
async fn hand_on_decoded(
    decoder: &mut StreamDecoder,
    decoded: &mut Decoded,
    end: u64,
    target: &IngestTarget<'_>,
) -> Option<impl std::future::Future<Output = ChunkAck> + use<>> {
    let (ack, receipt) = Acknowledgement::new_unit();
    let mut events = Vec::new();
    let mut failures = Vec::new();
    decoder.adopt(decoded, &ack, &mut events, &mut failures);
    let count = forward(decoder, ack, events, failures, target).await?;
    let events_through = decoder.events_decoded();
    Some(wait_at(
        Handed::new(receipt, count, target.metrics),
        end,
        events_through,
    ))
}
