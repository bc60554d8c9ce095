//! The `lines` framer: splits a byte stream at a delimiter of one or more bytes.
//!
//! Lines that lie wholly inside a chunk are passed on as slices of that chunk; only the
//! unterminated tail is copied into a carry buffer, so the common case (many short lines per
//! read) copies nothing. A delimiter may straddle two chunks, which is checked for explicitly.
//! An over-long line is reported once, when it first passes the limit, and then skipped up to
//! the next delimiter without being buffered, so memory stays bounded by `max_length`.

use memchr::memmem::Finder;

use super::ByteSink;
use crate::error::{DecodeError, Decoded};

/// Splits a stream into lines. One per stream; [`LinesFramer::finish`] resets it.
pub(crate) struct LinesFramer {
    delimiter: Vec<u8>,
    finder: Finder<'static>,
    max_length: usize,
    /// Invariant: never holds a whole delimiter. While `skipping_long_line` is false it holds the
    /// bytes of the current unterminated line (at most `max_length`, plus up to
    /// `delimiter.len() - 1` bytes that may begin a delimiter); while it is true, only the last
    /// `delimiter.len() - 1` bytes seen, enough to spot a delimiter split across chunks.
    pending: Vec<u8>,
    skipping_long_line: bool,
}

/// Where the line that was pending before a chunk ends.
struct PendingLineEnd {
    /// Bytes of `pending` that belong to the line.
    bytes_from_pending: usize,
    /// Bytes at the start of the chunk that belong to the line.
    bytes_from_chunk: usize,
    /// Offset in the chunk just after the delimiter.
    resume_at: usize,
}

impl LinesFramer {
    /// A framer for `delimiter`; an empty delimiter (rejected by config validation) falls back
    /// to `"\n"` rather than matching everywhere.
    pub(crate) fn new(delimiter: &[u8], max_length: usize) -> Self {
        let delimiter = if delimiter.is_empty() {
            b"\n".to_vec()
        } else {
            delimiter.to_vec()
        };
        Self {
            finder: Finder::new(&delimiter).into_owned(),
            delimiter,
            max_length,
            pending: Vec::new(),
            skipping_long_line: false,
        }
    }

    /// Feeds the next chunk; every line it completes goes to `sink`.
    pub(crate) fn push(&mut self, chunk: &[u8], out: &mut Decoded, sink: &mut ByteSink<'_>) {
        let mut rest = chunk;
        if self.skipping_long_line || !self.pending.is_empty() {
            let Some(end) = self.find_pending_line_end(chunk) else {
                self.carry_unterminated(chunk, out);
                return;
            };
            self.complete_pending_line(chunk, &end, out, sink);
            rest = chunk.get(end.resume_at..).unwrap_or_default();
        }
        let mut line_start = 0;
        for delimiter_start in self.finder.find_iter(rest) {
            let line = rest.get(line_start..delimiter_start).unwrap_or_default();
            self.emit_line(line, out, sink);
            line_start = delimiter_start + self.delimiter.len();
        }
        let tail = rest.get(line_start..).unwrap_or_default();
        self.carry_unterminated(tail, out);
    }

    /// End of stream: a last line without a delimiter is still a line. Resets the framer.
    pub(crate) fn finish(&mut self, out: &mut Decoded, sink: &mut ByteSink<'_>) {
        if !self.skipping_long_line && !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit_line(&line, out, sink);
            self.pending = line;
        }
        self.reset();
    }

    /// Forgets any partial line.
    pub(crate) fn reset(&mut self) {
        self.pending.clear();
        self.skipping_long_line = false;
    }

    /// Finds the delimiter ending the pending line: one straddling the boundary (which always
    /// ends earlier than any found wholly inside the chunk), else the first one in the chunk.
    fn find_pending_line_end(&self, chunk: &[u8]) -> Option<PendingLineEnd> {
        let delimiter = &self.delimiter[..];
        for bytes_in_pending in (1..delimiter.len()).rev() {
            let (head, tail) = delimiter.split_at(bytes_in_pending);
            if self.pending.ends_with(head) && chunk.starts_with(tail) {
                return Some(PendingLineEnd {
                    bytes_from_pending: self.pending.len() - bytes_in_pending,
                    bytes_from_chunk: 0,
                    resume_at: tail.len(),
                });
            }
        }
        let delimiter_start = self.finder.find(chunk)?;
        Some(PendingLineEnd {
            bytes_from_pending: self.pending.len(),
            bytes_from_chunk: delimiter_start,
            resume_at: delimiter_start + delimiter.len(),
        })
    }

    fn complete_pending_line(
        &mut self,
        chunk: &[u8],
        end: &PendingLineEnd,
        out: &mut Decoded,
        sink: &mut ByteSink<'_>,
    ) {
        if self.skipping_long_line {
            self.skipping_long_line = false;
            self.pending.clear();
            return;
        }
        let from_chunk = chunk.get(..end.bytes_from_chunk).unwrap_or_default();
        self.pending.truncate(end.bytes_from_pending);
        if self.pending.len() + from_chunk.len() > self.max_length {
            out.errors
                .push(self.line_too_large(&self.pending, from_chunk));
        } else {
            self.pending.extend_from_slice(from_chunk);
            let line = std::mem::take(&mut self.pending);
            self.emit_line(&line, out, sink);
            self.pending = line;
        }
        self.pending.clear();
    }

    /// Keeps bytes that no delimiter ended yet, switching to skipping once the line passes
    /// `max_length`.
    fn carry_unterminated(&mut self, bytes: &[u8], out: &mut Decoded) {
        // Up to `delimiter.len() - 1` trailing bytes may be the start of a delimiter, so only
        // past that allowance is the line certainly too long.
        let certainly_too_long = self.max_length.saturating_add(self.delimiter.len() - 1);
        if !self.skipping_long_line && self.pending.len() + bytes.len() > certainly_too_long {
            out.errors.push(self.line_too_large(&self.pending, bytes));
            self.skipping_long_line = true;
        }
        if self.skipping_long_line {
            self.keep_possible_delimiter_start(bytes);
        } else {
            self.pending.extend_from_slice(bytes);
        }
    }

    /// While skipping, keeps only the last `delimiter.len() - 1` bytes seen.
    fn keep_possible_delimiter_start(&mut self, bytes: &[u8]) {
        let keep = self.delimiter.len() - 1;
        if bytes.len() >= keep {
            self.pending.clear();
            self.pending
                .extend_from_slice(bytes.get(bytes.len() - keep..).unwrap_or_default());
        } else {
            self.pending.extend_from_slice(bytes);
            let excess = self.pending.len().saturating_sub(keep);
            self.pending.drain(..excess);
        }
    }

    fn emit_line(&self, line: &[u8], out: &mut Decoded, sink: &mut ByteSink<'_>) {
        if line.is_empty() {
            return;
        }
        if line.len() > self.max_length {
            out.errors.push(self.line_too_large(line, &[]));
            return;
        }
        sink(line, out);
    }

    fn line_too_large(&self, first: &[u8], second: &[u8]) -> DecodeError {
        DecodeError::too_large_split(
            format!("line is over max_length of {} bytes", self.max_length),
            first,
            second,
        )
    }
}

/// Appends each encoded frame's line delimiter: the encoding half of `lines`.
pub(crate) fn append_line_delimiter(delimiter: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(delimiter);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DecodeErrorKind;

    /// Runs `chunks` through a framer and returns the lines and the errors' raw bytes.
    fn split(delimiter: &str, max_length: usize, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut framer = LinesFramer::new(delimiter.as_bytes(), max_length);
        let mut out = Decoded::default();
        let mut lines = Vec::new();
        let mut sink = |line: &[u8], _: &mut Decoded| lines.push(line.to_vec());
        for chunk in chunks {
            framer.push(chunk, &mut out, &mut sink);
        }
        framer.finish(&mut out, &mut sink);
        for error in &out.errors {
            assert_eq!(error.kind, DecodeErrorKind::TooLarge);
        }
        let errors = out.errors.iter().map(|error| error.raw.to_vec()).collect();
        (lines, errors)
    }

    fn owned(lines: &[&str]) -> Vec<Vec<u8>> {
        lines.iter().map(|line| line.as_bytes().to_vec()).collect()
    }

    #[test]
    fn lines_split_inside_one_chunk() {
        let (lines, errors) = split("\n", 100, &[b"a\nbb\nccc\n"]);
        assert_eq!(lines, owned(&["a", "bb", "ccc"]));
        assert!(errors.is_empty());
    }

    #[test]
    fn lines_skip_empty_lines() {
        let (lines, _) = split("\n", 100, &[b"\n\na\n\n", b"\nb\n"]);
        assert_eq!(lines, owned(&["a", "b"]));
    }

    #[test]
    fn lines_final_line_without_delimiter_is_emitted_at_finish() {
        let (lines, _) = split("\n", 100, &[b"a\nb", b"c"]);
        assert_eq!(lines, owned(&["a", "bc"]));
    }

    #[test]
    fn lines_keep_carriage_return_bytes() {
        let (lines, _) = split("\n", 100, &[b"a\r\nb\r\n"]);
        assert_eq!(lines, owned(&["a\r", "b\r"]));
    }

    #[test]
    fn multi_byte_delimiter_split_across_chunks_is_found() {
        let (lines, _) = split("\r\n", 100, &[b"ab\r", b"\ncd\r", b"\n"]);
        assert_eq!(lines, owned(&["ab", "cd"]));
        let (lines, _) = split("<END>", 100, &[b"ab<E", b"N", b"D>cd<END", b">"]);
        assert_eq!(lines, owned(&["ab", "cd"]));
    }

    #[test]
    fn partial_delimiter_that_does_not_complete_stays_in_the_line() {
        let (lines, _) = split("\r\n", 100, &[b"ab\r", b"x\r\n"]);
        assert_eq!(lines, owned(&["ab\rx"]));
    }

    #[test]
    fn lines_byte_by_byte_give_same_lines() {
        let input = b"first\r\nsecond\r\n\r\nthird";
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        let (lines, _) = split("\r\n", 100, &chunks);
        assert_eq!(lines, owned(&["first", "second", "third"]));
    }

    #[test]
    fn lines_discards_line_over_max_length_and_keeps_next() {
        let (lines, errors) = split("\n", 4, &[b"ok\ntoolong\nfine\n"]);
        assert_eq!(lines, owned(&["ok", "fine"]));
        assert_eq!(errors, owned(&["toolong"]));
    }

    #[test]
    fn long_line_spanning_chunks_is_reported_once_and_skipped() {
        let (lines, errors) = split("\n", 4, &[b"ok\nabc", b"defgh", b"ijk", b"l\nnext\n"]);
        assert_eq!(lines, owned(&["ok", "next"]));
        assert_eq!(errors, owned(&["abcdefgh"]));
    }

    #[test]
    fn long_line_ended_by_straddling_delimiter_resumes_after_it() {
        let (lines, errors) = split("\r\n", 3, &[b"abcdef\r", b"\nxy\r\n"]);
        assert_eq!(lines, owned(&["xy"]));
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn line_of_exactly_max_length_with_delimiter_split_across_chunks_is_kept() {
        let (lines, errors) = split("\r\n", 6, &[b"abcdef\r", b"\nxy"]);
        assert_eq!(lines, owned(&["abcdef", "xy"]));
        assert!(errors.is_empty());
    }

    #[test]
    fn pending_line_completed_over_max_length_is_reported() {
        let (lines, errors) = split("\n", 4, &[b"abc", b"de\nf\n"]);
        assert_eq!(lines, owned(&["f"]));
        assert_eq!(errors, owned(&["abcde"]));
    }

    #[test]
    fn long_unterminated_last_line_is_not_emitted_at_finish() {
        let (lines, errors) = split("\n", 2, &[b"a\nbcdef"]);
        assert_eq!(lines, owned(&["a"]));
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn too_large_line_raw_is_capped_at_64_kib() {
        let long = vec![b'x'; 200 * 1024];
        let (_, errors) = split("\n", 10, &[&long, b"\n"]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].len(), crate::error::MAX_RAW_ERROR_BYTES);
    }
}
