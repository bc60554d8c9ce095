//! [`Encoder`]: one output stream's codec and interceptor chain, from values to bytes.
//!
//! The chain runs backwards from receive order: the codec encodes a value into a frame, the
//! stages after the first framer transform that frame (last first), the first framer adds its
//! delimiter or length prefix, and the stages before it transform the byte stream (last first).
//! For the common chains (`lines` alone, or nothing) the value is encoded straight into the
//! caller's buffer with no copy.

use crate::codec::CodecEncoder;
use crate::config::{CodecKind, InterceptorConfig};
use crate::error::EncodeError;
use crate::interceptor::base64_text::{Base64StreamEncoder, encode_base64};
use crate::interceptor::gzip::GzipCompressor;
use crate::interceptor::length_prefixed::frame_length_prefix;
use crate::interceptor::lines::append_line_delimiter;
use crate::interceptor::zstandard::ZstdCompressor;
use tb_event::Value;

/// One per output stream (a file, a TCP connection, an HTTP request body).
///
/// [`Encoder::finish`] ends the stream (gzip/zstd trailers) and resets the encoder, so the next
/// value starts a new stream (with a new csv header).
pub struct Encoder {
    codec: CodecEncoder,
    /// Receive-order stages before the first framer; applied last to first on the stream.
    stream_stages: Vec<StreamEncodeStage>,
    /// The first framer in receive order, if any.
    framing: Option<FrameDelimiting>,
    /// Receive-order stages after the first framer; applied last to first on each frame.
    frame_stages: Vec<FrameEncodeStage>,
    frame_buffer: Vec<u8>,
    frame_scratch: Vec<u8>,
    stream_input: Vec<u8>,
    content_type: &'static str,
    content_encoding: Option<&'static str>,
}

/// What marks where a frame ends.
enum FrameDelimiting {
    Lines { delimiter: Vec<u8> },
    LengthPrefixed { max_length: usize },
}

/// A transform applied to each whole frame.
enum FrameEncodeStage {
    Delimiting(FrameDelimiting),
    Gzip(GzipCompressor),
    Zstd(ZstdCompressor),
    Base64,
}

/// A transform applied to the byte stream, with its output buffer.
struct StreamEncodeStage {
    transform: StreamTransform,
    output: Vec<u8>,
}

enum StreamTransform {
    Gzip(GzipCompressor),
    Zstd(ZstdCompressor),
    Base64(Base64StreamEncoder),
}

/// What a pass through the stream stages does after writing its input.
#[derive(Clone, Copy)]
enum StreamStep {
    Write,
    Flush,
    Finish,
}

impl Encoder {
    /// An encoder for `codec` behind `interceptors` (in receive order; applied in reverse).
    pub fn new(codec: CodecKind, interceptors: &[InterceptorConfig]) -> Self {
        let first_framer = interceptors
            .iter()
            .position(InterceptorConfig::is_framing)
            .unwrap_or(interceptors.len());
        let (before_framer, framer_and_after) = interceptors.split_at(first_framer);
        let (framing, after_framer) = match framer_and_after.split_first() {
            Some((framer, after)) => (FrameDelimiting::new(framer), after),
            None => (None, &[][..]),
        };
        Self {
            codec: CodecEncoder::new(codec),
            stream_stages: before_framer
                .iter()
                .filter_map(StreamEncodeStage::new)
                .collect(),
            framing,
            frame_stages: after_framer.iter().map(FrameEncodeStage::new).collect(),
            frame_buffer: Vec::new(),
            frame_scratch: Vec::new(),
            stream_input: Vec::new(),
            content_type: content_type_for(codec, interceptors),
            content_encoding: content_encoding_for(interceptors),
        }
    }

    /// Appends the encoded frame for `value` to `out` (output of streaming compressors may lag
    /// until flush/finish).
    ///
    /// # Errors
    ///
    /// The codec cannot encode the value (csv given a non-object, say), the frame is over the
    /// `length_prefixed` limit, or a compressor failed. `out` is left as it was, unless a stream
    /// compressor failed, after which the stream is unusable anyway.
    pub fn encode(&mut self, value: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.stream_stages.is_empty() {
            return self.encode_frame_into(value, out);
        }
        let mut stream_input = std::mem::take(&mut self.stream_input);
        stream_input.clear();
        let result = self
            .encode_frame_into(value, &mut stream_input)
            .and_then(|()| {
                pass_through_stream_stages(
                    &mut self.stream_stages,
                    &stream_input,
                    StreamStep::Write,
                    out,
                )
            });
        self.stream_input = stream_input;
        result
    }

    /// Forces buffered compressor output out (sync flush) so a peer can read what was sent so
    /// far.
    ///
    /// # Errors
    ///
    /// A compressor failed.
    pub fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        pass_through_stream_stages(&mut self.stream_stages, &[], StreamStep::Flush, out)
    }

    /// Ends the stream (gzip/zstd trailer) and resets, so the next value starts a new stream.
    ///
    /// # Errors
    ///
    /// A compressor failed.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.codec.reset();
        pass_through_stream_stages(&mut self.stream_stages, &[], StreamStep::Finish, out)
    }

    /// Content-Type for HTTP: application/json, application/x-ndjson (json + lines),
    /// application/msgpack, text/csv, text/plain, application/octet-stream.
    pub fn content_type(&self) -> &'static str {
        self.content_type
    }

    /// Content-Encoding for HTTP: `gzip` or `zstd` when the outermost interceptor (the first in
    /// receive order) compresses the whole stream, else `None`.
    pub fn content_encoding(&self) -> Option<&'static str> {
        self.content_encoding
    }

    /// Encodes `value` as one complete frame (delimiter or prefix included) at the end of
    /// `target`; on error, `target` is truncated back to where it was.
    fn encode_frame_into(
        &mut self,
        value: &Value,
        target: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let start = target.len();
        let result = self.write_framed_value(value, target);
        if result.is_err() {
            target.truncate(start);
        }
        result
    }

    fn write_framed_value(
        &mut self,
        value: &Value,
        target: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let Some(framing) = &self.framing else {
            return self.codec.encode(value, target);
        };
        if self.frame_stages.is_empty() {
            let frame_start = framing.begin_frame(target);
            self.codec.encode(value, target)?;
            return framing.end_frame(target, frame_start);
        }
        self.frame_buffer.clear();
        self.codec.encode(value, &mut self.frame_buffer)?;
        for stage in self.frame_stages.iter_mut().rev() {
            self.frame_scratch.clear();
            stage.encode_frame(&self.frame_buffer, &mut self.frame_scratch)?;
            std::mem::swap(&mut self.frame_buffer, &mut self.frame_scratch);
        }
        framing.wrap_frame(&self.frame_buffer, target)
    }
}

/// Runs `input` through the stream stages, last first, appending the result to `out`.
fn pass_through_stream_stages(
    stages: &mut [StreamEncodeStage],
    input: &[u8],
    step: StreamStep,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let Some((last, earlier)) = stages.split_last_mut() else {
        out.extend_from_slice(input);
        return Ok(());
    };
    last.output.clear();
    last.transform.apply(input, step, &mut last.output)?;
    pass_through_stream_stages(earlier, &last.output, step, out)
}

fn content_type_for(codec: CodecKind, interceptors: &[InterceptorConfig]) -> &'static str {
    match codec {
        CodecKind::Json
            if interceptors
                .iter()
                .any(|interceptor| matches!(interceptor, InterceptorConfig::Lines { .. })) =>
        {
            "application/x-ndjson"
        }
        CodecKind::Json => "application/json",
        CodecKind::Msgpack => "application/msgpack",
        CodecKind::Csv => "text/csv",
        CodecKind::String => "text/plain",
        CodecKind::Bytes => "application/octet-stream",
    }
}

fn content_encoding_for(interceptors: &[InterceptorConfig]) -> Option<&'static str> {
    match interceptors.first() {
        Some(InterceptorConfig::Gzip { .. }) => Some("gzip"),
        Some(InterceptorConfig::Zstd { .. }) => Some("zstd"),
        _ => None,
    }
}

impl FrameDelimiting {
    fn new(config: &InterceptorConfig) -> Option<Self> {
        match config {
            InterceptorConfig::Lines { delimiter, .. } => Some(Self::lines(delimiter)),
            InterceptorConfig::LengthPrefixed { max_length } => Some(Self::LengthPrefixed {
                max_length: *max_length,
            }),
            _ => None,
        }
    }

    /// Lines ending in `delimiter`; an empty one (rejected by config validation) falls back to
    /// `"\n"`, as the decoder does.
    fn lines(delimiter: &str) -> Self {
        let delimiter = if delimiter.is_empty() {
            "\n"
        } else {
            delimiter
        };
        Self::Lines {
            delimiter: delimiter.as_bytes().to_vec(),
        }
    }

    /// Reserves room for a prefix before the frame is encoded in place; returns where the frame
    /// (prefix included) starts.
    fn begin_frame(&self, target: &mut Vec<u8>) -> usize {
        let frame_start = target.len();
        if let Self::LengthPrefixed { .. } = self {
            target.extend_from_slice(&[0; 4]);
        }
        frame_start
    }

    /// Completes a frame encoded in place after [`FrameDelimiting::begin_frame`].
    fn end_frame(&self, target: &mut Vec<u8>, frame_start: usize) -> Result<(), EncodeError> {
        match self {
            Self::Lines { delimiter } => append_line_delimiter(delimiter, target),
            Self::LengthPrefixed { max_length } => {
                let payload_length = target.len() - frame_start - 4;
                let prefix = frame_length_prefix(payload_length, *max_length)?;
                if let Some(slot) = target.get_mut(frame_start..frame_start + 4) {
                    slot.copy_from_slice(&prefix);
                }
            }
        }
        Ok(())
    }

    /// Appends `frame` with its delimiter or prefix.
    fn wrap_frame(&self, frame: &[u8], target: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Self::Lines { delimiter } => {
                target.extend_from_slice(frame);
                append_line_delimiter(delimiter, target);
            }
            Self::LengthPrefixed { max_length } => {
                target.extend_from_slice(&frame_length_prefix(frame.len(), *max_length)?);
                target.extend_from_slice(frame);
            }
        }
        Ok(())
    }
}

impl FrameEncodeStage {
    fn new(config: &InterceptorConfig) -> Self {
        match config {
            InterceptorConfig::Gzip { .. } => Self::Gzip(GzipCompressor::new()),
            InterceptorConfig::Zstd { .. } => Self::Zstd(ZstdCompressor::new()),
            InterceptorConfig::Base64 => Self::Base64,
            InterceptorConfig::Lines { delimiter, .. } => {
                Self::Delimiting(FrameDelimiting::lines(delimiter))
            }
            InterceptorConfig::LengthPrefixed { max_length } => {
                Self::Delimiting(FrameDelimiting::LengthPrefixed {
                    max_length: *max_length,
                })
            }
        }
    }

    fn encode_frame(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Self::Delimiting(delimiting) => delimiting.wrap_frame(frame, out),
            Self::Gzip(compressor) => compressor.compress_frame(frame, out),
            Self::Zstd(compressor) => compressor.compress_frame(frame, out),
            Self::Base64 => {
                encode_base64(frame, out);
                Ok(())
            }
        }
    }
}

impl StreamEncodeStage {
    /// The stream stage for a non-framing interceptor; `None` for a framer (never before the
    /// first framer, by construction).
    fn new(config: &InterceptorConfig) -> Option<Self> {
        let transform = match config {
            InterceptorConfig::Gzip { .. } => StreamTransform::Gzip(GzipCompressor::new()),
            InterceptorConfig::Zstd { .. } => StreamTransform::Zstd(ZstdCompressor::new()),
            InterceptorConfig::Base64 => StreamTransform::Base64(Base64StreamEncoder::new()),
            InterceptorConfig::Lines { .. } | InterceptorConfig::LengthPrefixed { .. } => {
                return None;
            }
        };
        Some(Self {
            transform,
            output: Vec::new(),
        })
    }
}

impl StreamTransform {
    fn apply(
        &mut self,
        input: &[u8],
        step: StreamStep,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        match self {
            Self::Gzip(compressor) => {
                if !input.is_empty() {
                    compressor.write(input, out)?;
                }
                match step {
                    StreamStep::Write => Ok(()),
                    StreamStep::Flush => compressor.flush(out),
                    StreamStep::Finish => compressor.finish(out),
                }
            }
            Self::Zstd(compressor) => {
                if !input.is_empty() {
                    compressor.write(input, out)?;
                }
                match step {
                    StreamStep::Write => Ok(()),
                    StreamStep::Flush => compressor.flush(out),
                    StreamStep::Finish => compressor.finish(out),
                }
            }
            Self::Base64(encoder) => {
                encoder.write(input, out);
                if !matches!(step, StreamStep::Write) {
                    encoder.flush(out);
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::Decoder;
    use crate::error::Decoded;

    fn lines() -> InterceptorConfig {
        InterceptorConfig::Lines {
            delimiter: "\n".into(),
            max_length: 1024,
        }
    }

    fn object(key: &str, value: i64) -> Value {
        Value::Object([(key.into(), Value::from(value))].into())
    }

    fn encode_all(encoder: &mut Encoder, values: &[Value]) -> Vec<u8> {
        let mut out = Vec::new();
        for value in values {
            encoder.encode(value, &mut out).unwrap();
        }
        encoder.finish(&mut out).unwrap();
        out
    }

    fn decode(codec: CodecKind, interceptors: &[InterceptorConfig], bytes: &[u8]) -> Decoded {
        let mut decoder = Decoder::new(codec, interceptors);
        let mut out = Decoded::default();
        decoder.decode_chunk(bytes, &mut out);
        decoder.finish(&mut out);
        out
    }

    #[test]
    fn json_lines_encode_appends_newline_per_value() {
        let mut encoder = Encoder::new(CodecKind::Json, &[lines()]);
        let bytes = encode_all(&mut encoder, &[object("a", 1), object("b", 2)]);
        assert_eq!(bytes, b"{\"a\":1}\n{\"b\":2}\n");
    }

    #[test]
    fn length_prefixed_encode_writes_big_endian_length() {
        let mut encoder = Encoder::new(
            CodecKind::String,
            &[InterceptorConfig::LengthPrefixed { max_length: 10 }],
        );
        let bytes = encode_all(&mut encoder, &[Value::from("abc")]);
        assert_eq!(bytes, [0, 0, 0, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn frame_over_length_prefixed_max_is_error_and_leaves_output_unchanged() {
        let mut encoder = Encoder::new(
            CodecKind::String,
            &[InterceptorConfig::LengthPrefixed { max_length: 2 }],
        );
        let mut out = b"kept".to_vec();
        assert!(matches!(
            encoder.encode(&Value::from("abc"), &mut out),
            Err(EncodeError::FrameTooLarge { length: 3, .. })
        ));
        assert_eq!(out, b"kept");
    }

    #[test]
    fn gzip_lines_encode_gzips_the_delimited_stream() {
        let chain = [
            InterceptorConfig::Gzip {
                max_decompressed: 1024,
            },
            lines(),
        ];
        let mut encoder = Encoder::new(CodecKind::Json, &chain);
        let bytes = encode_all(&mut encoder, &[object("a", 1), object("a", 2)]);
        assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
        let out = decode(CodecKind::Json, &chain, &bytes);
        assert_eq!(out.values, vec![object("a", 1), object("a", 2)]);
    }

    #[test]
    fn flush_makes_gzip_output_decodable_before_finish() {
        let chain = [
            InterceptorConfig::Gzip {
                max_decompressed: 1024,
            },
            lines(),
        ];
        let mut encoder = Encoder::new(CodecKind::Json, &chain);
        let mut out = Vec::new();
        encoder.encode(&object("a", 1), &mut out).unwrap();
        encoder.flush(&mut out).unwrap();
        let mut decoder = Decoder::new(CodecKind::Json, &chain);
        let mut decoded = Decoded::default();
        decoder.decode_chunk(&out, &mut decoded);
        assert_eq!(decoded.values, vec![object("a", 1)]);
    }

    #[test]
    fn lines_base64_encode_base64s_each_frame() {
        let chain = [lines(), InterceptorConfig::Base64];
        let mut encoder = Encoder::new(CodecKind::String, &chain);
        let bytes = encode_all(&mut encoder, &[Value::from("a"), Value::from("bc")]);
        assert_eq!(bytes, b"YQ==\nYmM=\n");
    }

    #[test]
    fn base64_before_lines_encodes_the_stream() {
        let chain = [InterceptorConfig::Base64, lines()];
        let mut encoder = Encoder::new(CodecKind::String, &chain);
        let bytes = encode_all(&mut encoder, &[Value::from("a"), Value::from("bc")]);
        let out = decode(CodecKind::String, &chain, &bytes);
        assert_eq!(out.values, vec![Value::from("a"), Value::from("bc")]);
    }

    #[test]
    fn csv_encode_error_keeps_output_and_header_state() {
        let mut encoder = Encoder::new(CodecKind::Csv, &[lines()]);
        let mut out = Vec::new();
        assert!(encoder.encode(&Value::from(1), &mut out).is_err());
        assert!(out.is_empty());
        encoder.encode(&object("a", 1), &mut out).unwrap();
        assert_eq!(out, b"a\n1\n");
    }

    #[test]
    fn finish_resets_so_next_stream_gets_a_new_csv_header() {
        let mut encoder = Encoder::new(CodecKind::Csv, &[lines()]);
        let first = encode_all(&mut encoder, &[object("a", 1), object("a", 2)]);
        let second = encode_all(&mut encoder, &[object("a", 3)]);
        assert_eq!(first, b"a\n1\n2\n");
        assert_eq!(second, b"a\n3\n");
    }

    #[test]
    fn content_type_follows_codec_and_lines() {
        let cases = [
            (CodecKind::Json, vec![lines()], "application/x-ndjson"),
            (CodecKind::Json, vec![], "application/json"),
            (CodecKind::Msgpack, vec![], "application/msgpack"),
            (CodecKind::Csv, vec![lines()], "text/csv"),
            (CodecKind::String, vec![], "text/plain"),
            (CodecKind::Bytes, vec![], "application/octet-stream"),
        ];
        for (codec, chain, expected) in cases {
            assert_eq!(Encoder::new(codec, &chain).content_type(), expected);
        }
    }

    #[test]
    fn content_encoding_names_outermost_compression_only() {
        let gzip = InterceptorConfig::Gzip {
            max_decompressed: 1,
        };
        assert_eq!(
            Encoder::new(CodecKind::Json, &[gzip.clone(), lines()]).content_encoding(),
            Some("gzip")
        );
        assert_eq!(
            Encoder::new(CodecKind::Json, &[lines(), gzip]).content_encoding(),
            None
        );
    }

    #[test]
    fn encoder_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<Encoder>();
    }
}
