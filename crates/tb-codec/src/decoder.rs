//! [`Decoder`]: one input stream's interceptor chain and codec, from chunks to values.
//!
//! The chain runs in receive order. Each stage pushes its output straight into the next one
//! through a sink closure, so a chunk flows through the whole chain in one call without
//! intermediate buffers, and a line complete inside a chunk reaches the codec as a slice of that
//! chunk. Stages before the first framer see the byte stream; the first framer turns it into
//! frames; stages after it work on one frame at a time. With no framer, the stream is gathered
//! (up to a cap) and decoded as one frame at the end.

use crate::codec::CodecDecoder;
use crate::config::{CodecKind, DEFAULT_MAX_DECOMPRESSED, InterceptorConfig};
use crate::error::{DecodeError, Decoded};
use crate::interceptor::ByteSink;
use crate::interceptor::base64_text::Base64Decoder;
use crate::interceptor::gzip::GzipDecompressor;
use crate::interceptor::length_prefixed::LengthPrefixedFramer;
use crate::interceptor::lines::LinesFramer;
use crate::interceptor::transform::{ByteTransform, TransformStage};
use crate::interceptor::zstandard::ZstdDecompressor;

/// Capacity kept by the whole-stream buffer between streams: 1 MiB.
const RETAINED_WHOLE_STREAM_BYTES: usize = 1024 * 1024;

/// One per stream (TCP connection, HTTP request, file): holds that stream's framing and codec
/// state.
///
/// Feed it with [`Decoder::decode_chunk`] as bytes arrive and call [`Decoder::finish`] at the
/// end of the stream; `finish` also resets it, so it can be reused for the next stream.
/// Decoding never panics and never stops: bad frames become [`DecodeError`]s in the output.
pub struct Decoder {
    codec_kind: CodecKind,
    stages: Vec<DecodeStage>,
    tail: DecodeTail,
}

/// One interceptor's decoding state.
enum DecodeStage {
    Lines(LinesFramer),
    LengthPrefixed(LengthPrefixedFramer),
    Gzip(TransformStage<GzipDecompressor>),
    Zstd(TransformStage<ZstdDecompressor>),
    Base64(TransformStage<Base64Decoder>),
}

/// What sits after the last stage: the codec, and the buffer for a chain without framer.
struct DecodeTail {
    codec: CodecDecoder,
    whole_stream: WholeStreamBuffer,
}

impl Decoder {
    /// A decoder for `codec` behind `interceptors` (in receive order).
    pub fn new(codec: CodecKind, interceptors: &[InterceptorConfig]) -> Self {
        Self {
            codec_kind: codec,
            stages: interceptors.iter().map(DecodeStage::new).collect(),
            tail: DecodeTail {
                codec: CodecDecoder::new(codec),
                whole_stream: WholeStreamBuffer::new(whole_stream_limit(interceptors)),
            },
        }
    }

    /// The codec this decoder ends in.
    pub fn codec(&self) -> CodecKind {
        self.codec_kind
    }

    /// Feeds the next chunk of the stream. Complete frames are decoded into `out`.
    pub fn decode_chunk(&mut self, chunk: &[u8], out: &mut Decoded) {
        feed_stream(&mut self.stages, &mut self.tail, chunk, out);
    }

    /// End of stream: flushes a final unterminated frame (a last line with no delimiter), reports
    /// truncated gzip/zstd streams and length-prefixed frames, and decodes the whole stream when
    /// there is no framer. Then resets, ready for a new stream.
    pub fn finish(&mut self, out: &mut Decoded) {
        finish_stream(&mut self.stages, &mut self.tail, out);
        self.reset();
    }

    /// Drops everything held for the current stream without decoding it.
    pub fn reset(&mut self) {
        for stage in &mut self.stages {
            stage.reset();
        }
        self.tail.codec.reset();
        self.tail.whole_stream.reset();
    }
}

/// The cap on a stream buffered whole: the last decompressor's limit, or the default.
fn whole_stream_limit(interceptors: &[InterceptorConfig]) -> usize {
    interceptors
        .iter()
        .rev()
        .find_map(|interceptor| match interceptor {
            InterceptorConfig::Gzip { max_decompressed }
            | InterceptorConfig::Zstd { max_decompressed } => Some(*max_decompressed),
            _ => None,
        })
        .unwrap_or(DEFAULT_MAX_DECOMPRESSED)
}

impl DecodeStage {
    fn new(config: &InterceptorConfig) -> Self {
        match config {
            InterceptorConfig::Lines {
                delimiter,
                max_length,
            } => Self::Lines(LinesFramer::new(delimiter.as_bytes(), *max_length)),
            InterceptorConfig::LengthPrefixed { max_length } => {
                Self::LengthPrefixed(LengthPrefixedFramer::new(*max_length))
            }
            InterceptorConfig::Gzip { max_decompressed } => Self::Gzip(TransformStage::new(
                GzipDecompressor::new(*max_decompressed),
            )),
            InterceptorConfig::Zstd { max_decompressed } => Self::Zstd(TransformStage::new(
                ZstdDecompressor::new(*max_decompressed),
            )),
            InterceptorConfig::Base64 => Self::Base64(TransformStage::new(Base64Decoder::new())),
        }
    }

    fn reset(&mut self) {
        match self {
            Self::Lines(framer) => framer.reset(),
            Self::LengthPrefixed(framer) => framer.reset(),
            Self::Gzip(stage) => stage.reset(),
            Self::Zstd(stage) => stage.reset(),
            Self::Base64(stage) => stage.reset(),
        }
    }
}

/// Sends a piece of the byte stream through `stages` (all in stream mode up to the first framer).
fn feed_stream(stages: &mut [DecodeStage], tail: &mut DecodeTail, piece: &[u8], out: &mut Decoded) {
    let Some((stage, later)) = stages.split_first_mut() else {
        tail.whole_stream.push(piece, out);
        return;
    };
    let mut to_frames = |frame: &[u8], out: &mut Decoded| feed_frame(later, tail, frame, out);
    match stage {
        DecodeStage::Lines(framer) => framer.push(piece, out, &mut to_frames),
        DecodeStage::LengthPrefixed(framer) => framer.push(piece, out, &mut to_frames),
        DecodeStage::Gzip(transform) => push_transform_stream(transform, later, tail, piece, out),
        DecodeStage::Zstd(transform) => push_transform_stream(transform, later, tail, piece, out),
        DecodeStage::Base64(transform) => push_transform_stream(transform, later, tail, piece, out),
    }
}

fn push_transform_stream<T: ByteTransform>(
    transform: &mut TransformStage<T>,
    later: &mut [DecodeStage],
    tail: &mut DecodeTail,
    piece: &[u8],
    out: &mut Decoded,
) {
    let mut to_stream = |output: &[u8], out: &mut Decoded| feed_stream(later, tail, output, out);
    transform.push_stream(piece, out, &mut to_stream);
}

/// Sends one complete frame through `stages` (all in frame mode) to the codec.
fn feed_frame(stages: &mut [DecodeStage], tail: &mut DecodeTail, frame: &[u8], out: &mut Decoded) {
    let Some((stage, later)) = stages.split_first_mut() else {
        tail.codec.decode_frame(frame, out);
        return;
    };
    let mut to_frames =
        |sub_frame: &[u8], out: &mut Decoded| feed_frame(later, tail, sub_frame, out);
    match stage {
        // A framer after a framer splits each frame as a stream of its own.
        DecodeStage::Lines(framer) => {
            framer.push(frame, out, &mut to_frames);
            framer.finish(out, &mut to_frames);
        }
        DecodeStage::LengthPrefixed(framer) => {
            framer.push(frame, out, &mut to_frames);
            framer.finish(out);
        }
        DecodeStage::Gzip(transform) => transform_one_frame(transform, frame, out, &mut to_frames),
        DecodeStage::Zstd(transform) => transform_one_frame(transform, frame, out, &mut to_frames),
        DecodeStage::Base64(transform) => {
            transform_one_frame(transform, frame, out, &mut to_frames);
        }
    }
}

fn transform_one_frame<T: ByteTransform>(
    transform: &mut TransformStage<T>,
    frame: &[u8],
    out: &mut Decoded,
    next: &mut ByteSink<'_>,
) {
    if let Some(output) = transform.transform_frame(frame, out) {
        next(output, out);
    }
}

/// End of stream for `stages` (in stream mode) and the tail.
fn finish_stream(stages: &mut [DecodeStage], tail: &mut DecodeTail, out: &mut Decoded) {
    let Some((stage, later)) = stages.split_first_mut() else {
        tail.whole_stream.finish(&mut tail.codec, out);
        return;
    };
    match stage {
        DecodeStage::Lines(framer) => {
            framer.finish(out, &mut |frame, out| feed_frame(later, tail, frame, out));
        }
        DecodeStage::LengthPrefixed(framer) => framer.finish(out),
        DecodeStage::Gzip(transform) => finish_transform_stream(transform, later, tail, out),
        DecodeStage::Zstd(transform) => finish_transform_stream(transform, later, tail, out),
        DecodeStage::Base64(transform) => finish_transform_stream(transform, later, tail, out),
    }
}

/// Finishes a stream transform, then the stages after it, unless the transform's stream was cut
/// off or corrupt: then what the later stages hold is a fragment, and is dropped by the reset
/// that follows every finish.
fn finish_transform_stream<T: ByteTransform>(
    transform: &mut TransformStage<T>,
    later: &mut [DecodeStage],
    tail: &mut DecodeTail,
    out: &mut Decoded,
) {
    let ended_cleanly = transform.finish_stream(out, &mut |output, out| {
        feed_stream(later, tail, output, out)
    });
    if ended_cleanly {
        finish_stream(later, tail, out);
    }
}

/// The whole stream, gathered to be decoded as one frame when there is no framer.
struct WholeStreamBuffer {
    bytes: Vec<u8>,
    max_bytes: usize,
    /// Set once the stream passed `max_bytes`: the rest is dropped until the stream ends.
    over_limit: bool,
}

impl WholeStreamBuffer {
    fn new(max_bytes: usize) -> Self {
        Self {
            bytes: Vec::new(),
            max_bytes,
            over_limit: false,
        }
    }

    fn push(&mut self, piece: &[u8], out: &mut Decoded) {
        if self.over_limit {
            return;
        }
        if self.bytes.len().saturating_add(piece.len()) > self.max_bytes {
            out.errors.push(DecodeError::too_large_split(
                format!(
                    "stream is over the {} byte limit for one frame",
                    self.max_bytes
                ),
                &self.bytes,
                piece,
            ));
            self.over_limit = true;
            self.bytes = Vec::new();
            return;
        }
        self.bytes.extend_from_slice(piece);
    }

    fn finish(&mut self, codec: &mut CodecDecoder, out: &mut Decoded) {
        if !self.over_limit && !self.bytes.is_empty() {
            codec.decode_frame(&self.bytes, out);
        }
        self.reset();
    }

    fn reset(&mut self) {
        self.bytes.clear();
        self.bytes.shrink_to(RETAINED_WHOLE_STREAM_BYTES);
        self.over_limit = false;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tb_event::Value;

    use super::*;
    use crate::error::DecodeErrorKind;

    fn lines() -> InterceptorConfig {
        InterceptorConfig::Lines {
            delimiter: "\n".into(),
            max_length: 1024,
        }
    }

    fn gzip(max_decompressed: usize) -> InterceptorConfig {
        InterceptorConfig::Gzip { max_decompressed }
    }

    fn gzipped(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn decode_all(decoder: &mut Decoder, chunks: &[&[u8]]) -> Decoded {
        let mut out = Decoded::default();
        for chunk in chunks {
            decoder.decode_chunk(chunk, &mut out);
        }
        decoder.finish(&mut out);
        out
    }

    #[test]
    fn json_lines_decode_one_value_per_line() {
        let mut decoder = Decoder::new(CodecKind::Json, &[lines()]);
        let out = decode_all(&mut decoder, &[b"{\"a\":1}\n{\"a\"", b":2}\n3"]);
        assert_eq!(out.values.len(), 3);
        assert_eq!(out.values[2], Value::from(3));
        assert!(out.errors.is_empty());
    }

    #[test]
    fn bad_line_is_reported_and_next_line_still_decodes() {
        let mut decoder = Decoder::new(CodecKind::Json, &[lines()]);
        let out = decode_all(&mut decoder, &[b"{bad\n{\"ok\":true}\n"]);
        assert_eq!(out.values.len(), 1);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(&out.errors[0].raw[..], b"{bad");
    }

    #[test]
    fn without_framing_the_whole_stream_is_one_frame() {
        let mut decoder = Decoder::new(CodecKind::Json, &[]);
        let out = decode_all(&mut decoder, &[b"[1,", b"2,3", b"]"]);
        assert_eq!(
            out.values,
            vec![Value::from(1), Value::from(2), Value::from(3)]
        );
    }

    #[test]
    fn without_framing_stream_over_limit_is_too_large_and_dropped() {
        let mut decoder = Decoder::new(CodecKind::Bytes, &[gzip(10)]);
        let out = decode_all(&mut decoder, &[&gzipped(b"more than ten bytes")]);
        assert!(out.values.is_empty());
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].kind, DecodeErrorKind::TooLarge);
    }

    #[test]
    fn gzip_then_lines_gunzips_the_stream_then_splits_lines() {
        let compressed = gzipped(b"\"a\"\n\"b\"\n\"c\"");
        let chunks: Vec<&[u8]> = compressed.chunks(3).collect();
        let mut decoder = Decoder::new(CodecKind::Json, &[gzip(1024), lines()]);
        let out = decode_all(&mut decoder, &chunks);
        assert_eq!(
            out.values,
            vec![Value::from("a"), Value::from("b"), Value::from("c")]
        );
    }

    #[test]
    fn lines_then_gzip_gunzips_each_line_on_its_own() {
        let mut decoder = Decoder::new(
            CodecKind::String,
            &[
                InterceptorConfig::LengthPrefixed { max_length: 1024 },
                gzip(1024),
            ],
        );
        let mut stream = Vec::new();
        for text in [&b"one"[..], b"two"] {
            let member = gzipped(text);
            stream.extend_from_slice(&u32::try_from(member.len()).unwrap().to_be_bytes());
            stream.extend_from_slice(&member);
        }
        stream.extend_from_slice(&[0, 0, 0, 3, b'b', b'a', b'd']);
        let out = decode_all(&mut decoder, &[&stream]);
        assert_eq!(out.values, vec![Value::from("one"), Value::from("two")]);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(&out.errors[0].raw[..], b"bad");
    }

    #[test]
    fn lines_then_base64_decodes_each_line() {
        let mut decoder = Decoder::new(CodecKind::Json, &[lines(), InterceptorConfig::Base64]);
        let out = decode_all(&mut decoder, &[b"eyJrIjoxfQ==\nMg\n"]);
        assert_eq!(out.values.len(), 2);
        assert_eq!(out.values[1], Value::from(2));
    }

    #[test]
    fn truncated_gzip_drops_the_partial_last_line() {
        let compressed = gzipped(b"1\n2\n3");
        let mut decoder = Decoder::new(CodecKind::Json, &[gzip(1024), lines()]);
        let out = decode_all(&mut decoder, &[&compressed[..compressed.len() - 8]]);
        assert_eq!(out.values, vec![Value::from(1), Value::from(2)]);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].reason, "truncated gzip stream");
    }

    #[test]
    fn finish_resets_so_the_decoder_serves_the_next_stream() {
        let mut decoder = Decoder::new(CodecKind::Csv, &[lines()]);
        let first = decode_all(&mut decoder, &[b"a\n1\npartial"]);
        assert_eq!(first.values.len(), 2);
        let second = decode_all(&mut decoder, &[b"b\n2\n"]);
        assert_eq!(second.values.len(), 1);
        assert!(second.values[0].as_object().unwrap().contains_key("b"));
    }

    #[test]
    fn framer_after_framer_splits_each_frame_again() {
        let mut decoder = Decoder::new(
            CodecKind::Json,
            &[
                InterceptorConfig::LengthPrefixed { max_length: 100 },
                lines(),
            ],
        );
        let out = decode_all(&mut decoder, &[&[0, 0, 0, 3, b'1', b'\n', b'2']]);
        assert_eq!(out.values, vec![Value::from(1), Value::from(2)]);
    }

    #[test]
    fn whole_stream_limit_uses_last_decompressor_or_default() {
        assert_eq!(whole_stream_limit(&[]), DEFAULT_MAX_DECOMPRESSED);
        assert_eq!(
            whole_stream_limit(&[
                gzip(5),
                InterceptorConfig::Zstd {
                    max_decompressed: 7
                }
            ]),
            7
        );
    }

    #[test]
    fn decoder_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<Decoder>();
    }
}
