//! The `gzip` interceptor: streaming gunzip on receive, gzip on send.
//!
//! Decoding parses the gzip member framing itself (header, raw deflate body, CRC trailer) around
//! flate2's raw inflater instead of using flate2's `Write` decoders, for two reasons: output is
//! produced into a fixed 32 KiB window and handed on at once, so a decompression bomb is stopped
//! at `max_decompressed` having cost that window and no more; and every state (between members,
//! mid-header, mid-body) is visible, so a truncated stream is reported precisely at the end.
//! Concatenated members are decoded one after another, as `MultiGzDecoder` would.

use flate2::{Compress, Compression, Crc, Decompress, FlushCompress, FlushDecompress, Status};

use super::ByteSink;
use super::transform::ByteTransform;
use crate::error::{DecodeError, Decoded, EncodeError};

/// Decompressed bytes produced per inflate step.
const OUTPUT_WINDOW_BYTES: usize = 32 * 1024;
/// Spare room made in the output before each deflate step.
const DEFLATE_OUTPUT_STEP_BYTES: usize = 32 * 1024;

/// Magic, deflate method, no flags, no mtime, no extra flags, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
const TRAILER_BYTES: usize = 8;

const FLAG_HEADER_CRC: u8 = 0x02;
const FLAG_EXTRA: u8 = 0x04;
const FLAG_FILE_NAME: u8 = 0x08;
const FLAG_COMMENT: u8 = 0x10;
const FLAGS_RESERVED: u8 = 0xe0;

/// Where the decoder is inside the current gzip member.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MemberPart {
    Header,
    Body,
    Trailer,
}

/// Streaming gzip decoder with a cap on total output.
pub(crate) struct GzipDecompressor {
    inflater: Decompress,
    crc: Crc,
    member_part: MemberPart,
    header: GzipHeaderReader,
    trailer: [u8; TRAILER_BYTES],
    trailer_filled: usize,
    output_window: Vec<u8>,
    /// Invariant: never above `max_decompressed`; reaching past it is an error.
    decompressed_total: usize,
    max_decompressed: usize,
}

/// What one inflate call did.
struct InflateStep {
    consumed: usize,
    produced: usize,
    member_body_ended: bool,
}

impl GzipDecompressor {
    pub(crate) fn new(max_decompressed: usize) -> Self {
        Self {
            inflater: Decompress::new(false),
            crc: Crc::new(),
            member_part: MemberPart::Header,
            header: GzipHeaderReader::new(),
            trailer: [0; TRAILER_BYTES],
            trailer_filled: 0,
            output_window: vec![0; OUTPUT_WINDOW_BYTES],
            decompressed_total: 0,
            max_decompressed,
        }
    }

    /// Reads header bytes; returns how many were used.
    fn read_header(&mut self, rest: &[u8], chunk: &[u8]) -> Result<usize, DecodeError> {
        let consumed = self
            .header
            .read(rest)
            .map_err(|reason| DecodeError::invalid(reason, chunk))?;
        if self.header.is_complete() {
            self.inflater.reset(false);
            self.crc.reset();
            self.member_part = MemberPart::Body;
        }
        Ok(consumed)
    }

    /// Inflates what it can of `rest` into the window and passes the output on.
    fn inflate_step(
        &mut self,
        rest: &[u8],
        chunk: &[u8],
        out: &mut Decoded,
        sink: &mut ByteSink<'_>,
    ) -> Result<InflateStep, DecodeError> {
        let before_in = self.inflater.total_in();
        let before_out = self.inflater.total_out();
        let status = self
            .inflater
            .decompress(rest, &mut self.output_window, FlushDecompress::None)
            .map_err(|error| {
                DecodeError::invalid(format!("corrupt gzip stream: {error}"), chunk)
            })?;
        let consumed = byte_count(self.inflater.total_in() - before_in);
        let produced = byte_count(self.inflater.total_out() - before_out);
        self.decompressed_total = self.decompressed_total.saturating_add(produced);
        if self.decompressed_total > self.max_decompressed {
            return Err(DecodeError::too_large(
                format!(
                    "gzip data decompresses to more than max_decompressed of {} bytes",
                    self.max_decompressed
                ),
                chunk,
            ));
        }
        let output = self.output_window.get(..produced).unwrap_or_default();
        self.crc.update(output);
        sink(output, out);
        Ok(InflateStep {
            consumed,
            produced,
            member_body_ended: status == Status::StreamEnd,
        })
    }

    /// Reads trailer bytes and checks them once complete; returns how many were used.
    fn read_trailer(&mut self, rest: &[u8], chunk: &[u8]) -> Result<usize, DecodeError> {
        let wanted = (TRAILER_BYTES - self.trailer_filled).min(rest.len());
        let (trailer_part, _) = rest.split_at(wanted);
        if let Some(slot) = self
            .trailer
            .get_mut(self.trailer_filled..self.trailer_filled + wanted)
        {
            slot.copy_from_slice(trailer_part);
        }
        self.trailer_filled += wanted;
        if self.trailer_filled == TRAILER_BYTES {
            self.check_trailer(chunk)?;
            self.trailer_filled = 0;
            self.header.reset();
            self.member_part = MemberPart::Header;
        }
        Ok(wanted)
    }

    fn check_trailer(&self, chunk: &[u8]) -> Result<(), DecodeError> {
        let [c0, c1, c2, c3, s0, s1, s2, s3] = self.trailer;
        let expected_crc = u32::from_le_bytes([c0, c1, c2, c3]);
        let expected_size = u32::from_le_bytes([s0, s1, s2, s3]);
        if expected_crc != self.crc.sum() || expected_size != self.crc.amount() {
            return Err(DecodeError::invalid(
                "corrupt gzip stream: checksum or length mismatch",
                chunk,
            ));
        }
        Ok(())
    }
}

fn byte_count(count: u64) -> usize {
    usize::try_from(count).unwrap_or(usize::MAX)
}

impl ByteTransform for GzipDecompressor {
    fn push(
        &mut self,
        chunk: &[u8],
        out: &mut Decoded,
        sink: &mut ByteSink<'_>,
    ) -> Result<(), DecodeError> {
        let mut rest = chunk;
        loop {
            let consumed = match self.member_part {
                MemberPart::Header | MemberPart::Trailer if rest.is_empty() => return Ok(()),
                MemberPart::Header => self.read_header(rest, chunk)?,
                MemberPart::Trailer => self.read_trailer(rest, chunk)?,
                MemberPart::Body => {
                    let step = self.inflate_step(rest, chunk, out, sink)?;
                    if step.member_body_ended {
                        self.member_part = MemberPart::Trailer;
                    } else if step.produced < OUTPUT_WINDOW_BYTES {
                        // The window was not filled, so the inflater holds no more output.
                        if rest.len() == step.consumed {
                            return Ok(());
                        }
                        if step.consumed == 0 {
                            return Err(DecodeError::invalid(
                                "corrupt gzip stream: inflater made no progress",
                                chunk,
                            ));
                        }
                    }
                    step.consumed
                }
            };
            rest = rest.get(consumed..).unwrap_or_default();
        }
    }

    fn finish(&mut self, _out: &mut Decoded, _sink: &mut ByteSink<'_>) -> Result<(), DecodeError> {
        if self.member_part == MemberPart::Header && self.header.is_untouched() {
            return Ok(());
        }
        Err(DecodeError::invalid("truncated gzip stream", &[]))
    }

    fn reset(&mut self) {
        self.inflater.reset(false);
        self.crc.reset();
        self.member_part = MemberPart::Header;
        self.header.reset();
        self.trailer_filled = 0;
        self.decompressed_total = 0;
    }
}

/// The parts of a gzip header, in order; the optional ones are present when their flag is set.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HeaderPart {
    Fixed,
    ExtraLength,
    Extra,
    FileName,
    Comment,
    HeaderCrc,
    Complete,
}

/// Reads a gzip member header incrementally, across any chunking, without buffering the
/// variable parts (extra field, name, comment), which are skipped.
struct GzipHeaderReader {
    part: HeaderPart,
    fixed: [u8; 10],
    fixed_filled: usize,
    flags: u8,
    extra_length: [u8; 2],
    extra_length_filled: usize,
    bytes_to_skip: usize,
}

impl GzipHeaderReader {
    fn new() -> Self {
        Self {
            part: HeaderPart::Fixed,
            fixed: [0; 10],
            fixed_filled: 0,
            flags: 0,
            extra_length: [0; 2],
            extra_length_filled: 0,
            bytes_to_skip: 0,
        }
    }

    fn reset(&mut self) {
        *self = Self::new();
    }

    fn is_complete(&self) -> bool {
        self.part == HeaderPart::Complete
    }

    /// No byte of this header seen yet: the stream is between members (or empty).
    fn is_untouched(&self) -> bool {
        self.part == HeaderPart::Fixed && self.fixed_filled == 0
    }

    /// Reads header bytes from `input`; returns how many belong to the header.
    fn read(&mut self, input: &[u8]) -> Result<usize, &'static str> {
        let mut consumed = 0;
        while !self.is_complete() {
            let Some(rest) = input.get(consumed..).filter(|rest| !rest.is_empty()) else {
                break;
            };
            consumed += self.read_part(rest)?;
        }
        Ok(consumed)
    }

    fn read_part(&mut self, rest: &[u8]) -> Result<usize, &'static str> {
        match self.part {
            HeaderPart::Fixed => self.read_fixed(rest),
            HeaderPart::ExtraLength => Ok(self.read_extra_length(rest)),
            HeaderPart::Extra | HeaderPart::HeaderCrc => Ok(self.skip(rest)),
            HeaderPart::FileName | HeaderPart::Comment => Ok(self.skip_zero_terminated(rest)),
            HeaderPart::Complete => Ok(0),
        }
    }

    fn read_fixed(&mut self, rest: &[u8]) -> Result<usize, &'static str> {
        let wanted = (self.fixed.len() - self.fixed_filled).min(rest.len());
        if let Some(slot) = self
            .fixed
            .get_mut(self.fixed_filled..self.fixed_filled + wanted)
        {
            slot.copy_from_slice(rest.get(..wanted).unwrap_or_default());
        }
        self.fixed_filled += wanted;
        if self.fixed_filled == self.fixed.len() {
            let [magic1, magic2, method, flags, ..] = self.fixed;
            if [magic1, magic2] != [0x1f, 0x8b] {
                return Err("invalid gzip header: bad magic bytes");
            }
            if method != 8 {
                return Err("invalid gzip header: compression method is not deflate");
            }
            if flags & FLAGS_RESERVED != 0 {
                return Err("invalid gzip header: reserved flags set");
            }
            self.flags = flags;
            self.enter_part_after(HeaderPart::Fixed);
        }
        Ok(wanted)
    }

    fn read_extra_length(&mut self, rest: &[u8]) -> usize {
        let wanted = (2 - self.extra_length_filled).min(rest.len());
        if let Some(slot) = self
            .extra_length
            .get_mut(self.extra_length_filled..self.extra_length_filled + wanted)
        {
            slot.copy_from_slice(rest.get(..wanted).unwrap_or_default());
        }
        self.extra_length_filled += wanted;
        if self.extra_length_filled == 2 {
            self.bytes_to_skip = usize::from(u16::from_le_bytes(self.extra_length));
            self.part = HeaderPart::Extra;
            if self.bytes_to_skip == 0 {
                self.enter_part_after(HeaderPart::Extra);
            }
        }
        wanted
    }

    fn skip(&mut self, rest: &[u8]) -> usize {
        let skipped = self.bytes_to_skip.min(rest.len());
        self.bytes_to_skip -= skipped;
        if self.bytes_to_skip == 0 {
            self.enter_part_after(self.part);
        }
        skipped
    }

    fn skip_zero_terminated(&mut self, rest: &[u8]) -> usize {
        match memchr::memchr(0, rest) {
            Some(terminator) => {
                self.enter_part_after(self.part);
                terminator + 1
            }
            None => rest.len(),
        }
    }

    /// Moves to the next part after `finished` whose flag is set.
    fn enter_part_after(&mut self, finished: HeaderPart) {
        const OPTIONAL_PARTS: [(HeaderPart, u8); 4] = [
            (HeaderPart::ExtraLength, FLAG_EXTRA),
            (HeaderPart::FileName, FLAG_FILE_NAME),
            (HeaderPart::Comment, FLAG_COMMENT),
            (HeaderPart::HeaderCrc, FLAG_HEADER_CRC),
        ];
        let first_candidate = match finished {
            HeaderPart::Fixed => 0,
            HeaderPart::ExtraLength | HeaderPart::Extra => 1,
            HeaderPart::FileName => 2,
            HeaderPart::Comment => 3,
            HeaderPart::HeaderCrc | HeaderPart::Complete => OPTIONAL_PARTS.len(),
        };
        let next = OPTIONAL_PARTS
            .iter()
            .skip(first_candidate)
            .find(|(_, flag)| self.flags & flag != 0)
            .map_or(HeaderPart::Complete, |(part, _)| *part);
        self.part = next;
        match next {
            HeaderPart::ExtraLength => self.extra_length_filled = 0,
            HeaderPart::HeaderCrc => self.bytes_to_skip = 2,
            _ => {}
        }
    }
}

/// Streaming gzip encoder. Each [`GzipCompressor::finish`] ends a member; writing again starts
/// a new one, which decoders read as a concatenation.
pub(crate) struct GzipCompressor {
    deflater: Compress,
    crc: Crc,
    member_started: bool,
}

impl GzipCompressor {
    pub(crate) fn new() -> Self {
        Self {
            deflater: Compress::new(Compression::default(), false),
            crc: Crc::new(),
            member_started: false,
        }
    }

    /// Compresses `input`, appending what the compressor releases to `out`.
    pub(crate) fn write(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if !self.member_started {
            out.extend_from_slice(&GZIP_HEADER);
            self.member_started = true;
        }
        self.crc.update(input);
        deflate_into(&mut self.deflater, input, FlushCompress::None, out)
    }

    /// Sync flush: everything written so far becomes decodable by the peer.
    pub(crate) fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if !self.member_started {
            return Ok(());
        }
        deflate_into(&mut self.deflater, &[], FlushCompress::Sync, out)
    }

    /// Ends the member with its trailer. Does nothing when nothing was written.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if !self.member_started {
            return Ok(());
        }
        deflate_into(&mut self.deflater, &[], FlushCompress::Finish, out)?;
        out.extend_from_slice(&self.crc.sum().to_le_bytes());
        out.extend_from_slice(&self.crc.amount().to_le_bytes());
        self.deflater.reset();
        self.crc.reset();
        self.member_started = false;
        Ok(())
    }

    /// Compresses one whole frame into a complete member.
    pub(crate) fn compress_frame(
        &mut self,
        frame: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        self.write(frame, out)?;
        self.finish(out)
    }
}

/// Runs the deflater over `input` with `flush`, growing `out` as needed.
fn deflate_into(
    deflater: &mut Compress,
    input: &[u8],
    flush: FlushCompress,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let mut rest = input;
    loop {
        if out.capacity() - out.len() < DEFLATE_OUTPUT_STEP_BYTES / 4 {
            out.reserve(DEFLATE_OUTPUT_STEP_BYTES);
        }
        let before_in = deflater.total_in();
        let before_out = deflater.total_out();
        let status = deflater
            .compress_vec(rest, out, flush)
            .map_err(|error| gzip_error(error.to_string()))?;
        let consumed = byte_count(deflater.total_in() - before_in);
        let produced = byte_count(deflater.total_out() - before_out);
        rest = rest.get(consumed..).unwrap_or_default();
        let output_full = out.len() == out.capacity();
        let done = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            _ => rest.is_empty() && !output_full,
        };
        if done {
            return Ok(());
        }
        if consumed == 0 && produced == 0 && !output_full {
            return Err(gzip_error("deflater made no progress".to_owned()));
        }
    }
}

fn gzip_error(reason: String) -> EncodeError {
    EncodeError::Compression {
        algorithm: "gzip",
        reason,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::error::DecodeErrorKind;
    use crate::interceptor::transform::TransformStage;

    fn gzip_with_flate2(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// Decodes `chunks` as one gzip stream; returns the output and the errors.
    fn gunzip(max_decompressed: usize, chunks: &[&[u8]]) -> (Vec<u8>, Decoded) {
        let mut stage = TransformStage::new(GzipDecompressor::new(max_decompressed));
        let mut out = Decoded::default();
        let mut output = Vec::new();
        let mut sink = |piece: &[u8], _: &mut Decoded| output.extend_from_slice(piece);
        for chunk in chunks {
            stage.push_stream(chunk, &mut out, &mut sink);
        }
        stage.finish_stream(&mut out, &mut sink);
        (output, out)
    }

    #[test]
    fn gzip_stream_decodes_under_any_two_way_split() {
        let data = b"hello gzip world, hello gzip world".repeat(10);
        let compressed = gzip_with_flate2(&data);
        for split_at in 0..=compressed.len() {
            let (first, second) = compressed.split_at(split_at);
            let (output, out) = gunzip(usize::MAX, &[first, second]);
            assert_eq!(output, data);
            assert!(out.errors.is_empty());
        }
    }

    #[test]
    fn concatenated_gzip_members_decode_in_order() {
        let mut compressed = gzip_with_flate2(b"first ");
        compressed.extend(gzip_with_flate2(b"second"));
        let (output, out) = gunzip(usize::MAX, &[&compressed]);
        assert_eq!(output, b"first second");
        assert!(out.errors.is_empty());
    }

    #[test]
    fn gzip_header_with_name_comment_extra_and_crc_is_skipped() {
        let mut encoder = flate2::GzBuilder::new()
            .filename("data.txt")
            .comment("a comment")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), Compression::fast());
        encoder.write_all(b"payload").unwrap();
        let compressed = encoder.finish().unwrap();
        let chunks: Vec<&[u8]> = compressed.chunks(1).collect();
        let (output, out) = gunzip(usize::MAX, &chunks);
        assert_eq!(output, b"payload");
        assert!(out.errors.is_empty());
    }

    #[test]
    fn gzip_bomb_over_max_decompressed_is_too_large_error() {
        let compressed = gzip_with_flate2(&vec![0; 10 * 1024 * 1024]);
        let (output, out) = gunzip(1024 * 1024, &[&compressed]);
        assert!(output.len() <= 1024 * 1024);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].kind, DecodeErrorKind::TooLarge);
    }

    #[test]
    fn truncated_gzip_is_reported_at_finish() {
        let compressed = gzip_with_flate2(b"some data that will be cut");
        let (_, out) = gunzip(usize::MAX, &[&compressed[..compressed.len() - 4]]);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].kind, DecodeErrorKind::Invalid);
        assert_eq!(out.errors[0].reason, "truncated gzip stream");
    }

    #[test]
    fn corrupt_gzip_is_invalid_and_rest_of_stream_is_dropped() {
        let (output, out) = gunzip(usize::MAX, &[b"not gzip at all", b"more"]);
        assert!(output.is_empty());
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].kind, DecodeErrorKind::Invalid);
    }

    #[test]
    fn gzip_checksum_mismatch_is_invalid() {
        let mut compressed = gzip_with_flate2(b"checked");
        let crc_position = compressed.len() - 8;
        compressed[crc_position] ^= 0xff;
        let (_, out) = gunzip(usize::MAX, &[&compressed]);
        assert_eq!(out.errors.len(), 1);
        assert!(out.errors[0].reason.contains("checksum"));
    }

    #[test]
    fn empty_gzip_stream_is_not_an_error() {
        let (output, out) = gunzip(usize::MAX, &[]);
        assert!(output.is_empty() && out.errors.is_empty());
    }

    #[test]
    fn gzip_compressor_output_decodes_with_flate2_after_flush_and_finish() {
        let mut compressor = GzipCompressor::new();
        let mut compressed = Vec::new();
        compressor.write(b"part one, ", &mut compressed).unwrap();
        compressor.flush(&mut compressed).unwrap();
        let mut decoder = flate2::write::GzDecoder::new(Vec::new());
        decoder.write_all(&compressed).unwrap();
        decoder.flush().unwrap();
        assert_eq!(decoder.get_ref().as_slice(), b"part one, ");
        compressor.write(b"part two", &mut compressed).unwrap();
        compressor.finish(&mut compressed).unwrap();
        compressor
            .compress_frame(b" and a member", &mut compressed)
            .unwrap();
        let mut multi = flate2::write::MultiGzDecoder::new(Vec::new());
        multi.write_all(&compressed).unwrap();
        assert_eq!(
            multi.finish().unwrap(),
            b"part one, part two and a member".to_vec()
        );
    }
}
