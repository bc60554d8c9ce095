//! The `base64` interceptor: standard alphabet, padded or unpadded on receive, padded on send.
//!
//! The text is decoded in complete 4-character groups, with the incomplete rest carried to the
//! next chunk (per frame, the frame is simply the whole stream). ASCII whitespace is ignored, so
//! MIME-style line breaks and a `"\r"` left by CRLF line endings do no harm, and a padded group
//! ends one base64 run, so a stream that was flushed mid-way (padding in the middle) still
//! decodes.

use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::ByteSink;
use super::transform::ByteTransform;
use crate::error::{DecodeError, Decoded};

/// Decodes with or without padding and tolerates non-zero trailing bits; encodes with padding.
const BASE64_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

const GROUP_CHARS: usize = 4;
const GROUP_BYTES: usize = 3;

/// Base64 decoding as a [`ByteTransform`].
pub(crate) struct Base64Decoder {
    /// Stream mode: characters not yet decoded (no whitespace). Frame mode: unused.
    pending_text: Vec<u8>,
    decoded: Vec<u8>,
}

impl Base64Decoder {
    pub(crate) fn new() -> Self {
        Self {
            pending_text: Vec::new(),
            decoded: Vec::new(),
        }
    }

    /// Decodes the complete groups at the front of `pending_text` and passes them on.
    fn decode_complete_groups(
        &mut self,
        chunk: &[u8],
        out: &mut Decoded,
        sink: &mut ByteSink<'_>,
    ) -> Result<(), DecodeError> {
        let mut start = 0;
        loop {
            let rest = self.pending_text.get(start..).unwrap_or_default();
            let run_end = match memchr::memchr(b'=', rest) {
                // A padded group ends a run: decode up to the end of the group holding the
                // first `=` (which holds the second one too, when there is one).
                Some(padding) => {
                    let group_end = (padding / GROUP_CHARS + 1) * GROUP_CHARS;
                    if group_end > rest.len() {
                        break;
                    }
                    group_end
                }
                None => rest.len() / GROUP_CHARS * GROUP_CHARS,
            };
            if run_end == 0 {
                break;
            }
            let run = rest.get(..run_end).unwrap_or_default();
            decode_run(run, &mut self.decoded, chunk)?;
            sink(&self.decoded, out);
            start += run_end;
        }
        self.pending_text.drain(..start);
        Ok(())
    }
}

fn decode_run(run: &[u8], decoded: &mut Vec<u8>, chunk: &[u8]) -> Result<(), DecodeError> {
    decoded.clear();
    BASE64_ENGINE
        .decode_vec(run, decoded)
        .map_err(|error| DecodeError::invalid(format!("invalid base64: {error}"), chunk))
}

impl ByteTransform for Base64Decoder {
    fn push(
        &mut self,
        chunk: &[u8],
        out: &mut Decoded,
        sink: &mut ByteSink<'_>,
    ) -> Result<(), DecodeError> {
        self.pending_text.extend(
            chunk
                .iter()
                .copied()
                .filter(|byte| !byte.is_ascii_whitespace()),
        );
        self.decode_complete_groups(chunk, out, sink)
    }

    fn finish(&mut self, out: &mut Decoded, sink: &mut ByteSink<'_>) -> Result<(), DecodeError> {
        if self.pending_text.is_empty() {
            return Ok(());
        }
        // The unpadded last group of an unpadded stream.
        let rest = std::mem::take(&mut self.pending_text);
        let result = decode_run(&rest, &mut self.decoded, &rest);
        self.pending_text = rest;
        result?;
        sink(&self.decoded, out);
        Ok(())
    }

    fn reset(&mut self) {
        self.pending_text.clear();
        self.decoded.clear();
    }
}

/// Appends `input` as padded base64.
pub(crate) fn encode_base64(input: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let encoded_length = input.len().div_ceil(GROUP_BYTES) * GROUP_CHARS;
    out.resize(start + encoded_length, 0);
    if let Some(target) = out.get_mut(start..) {
        let written = BASE64_ENGINE
            .encode_slice(input, target)
            .unwrap_or_default();
        out.truncate(start + written);
    }
}

/// Base64 encoding of a byte stream: whole 3-byte groups go out at once, the remainder waits
/// for more input or for a flush, which pads it.
pub(crate) struct Base64StreamEncoder {
    /// Invariant: fewer than 3 bytes.
    pending_bytes: Vec<u8>,
}

impl Base64StreamEncoder {
    pub(crate) fn new() -> Self {
        Self {
            pending_bytes: Vec::with_capacity(GROUP_BYTES),
        }
    }

    pub(crate) fn write(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut rest = input;
        if !self.pending_bytes.is_empty() {
            let wanted = (GROUP_BYTES - self.pending_bytes.len()).min(rest.len());
            let (head, tail) = rest.split_at(wanted);
            self.pending_bytes.extend_from_slice(head);
            rest = tail;
            if self.pending_bytes.len() < GROUP_BYTES {
                return;
            }
            encode_base64(&self.pending_bytes, out);
            self.pending_bytes.clear();
        }
        let whole_groups = rest.len() / GROUP_BYTES * GROUP_BYTES;
        let (groups, remainder) = rest.split_at(whole_groups);
        encode_base64(groups, out);
        self.pending_bytes.extend_from_slice(remainder);
    }

    /// Writes the held remainder, padded. The peer decodes padding mid-stream as the end of one
    /// base64 run and the start of the next.
    pub(crate) fn flush(&mut self, out: &mut Vec<u8>) {
        encode_base64(&self.pending_bytes, out);
        self.pending_bytes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DecodeErrorKind;
    use crate::interceptor::transform::TransformStage;

    fn decode_stream(chunks: &[&[u8]]) -> (Vec<u8>, Decoded) {
        let mut stage = TransformStage::new(Base64Decoder::new());
        let mut out = Decoded::default();
        let mut output = Vec::new();
        let mut sink = |piece: &[u8], _: &mut Decoded| output.extend_from_slice(piece);
        for chunk in chunks {
            stage.push_stream(chunk, &mut out, &mut sink);
        }
        stage.finish_stream(&mut out, &mut sink);
        (output, out)
    }

    fn encoded(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_base64(input, &mut out);
        out
    }

    #[test]
    fn base64_encode_is_padded_standard_alphabet() {
        assert_eq!(encoded(b"a"), b"YQ==");
        assert_eq!(encoded(b"\xfb\xff"), b"+/8=");
        assert_eq!(encoded(b""), b"");
    }

    #[test]
    fn base64_decodes_padded_and_unpadded() {
        assert_eq!(decode_stream(&[b"YWI="]).0, b"ab");
        assert_eq!(decode_stream(&[b"YWI\r"]).0, b"ab");
    }

    #[test]
    fn base64_invalid_input_is_invalid_error() {
        let (_, out) = decode_stream(&[b"not*base64"]);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].kind, DecodeErrorKind::Invalid);
        assert_eq!(&out.errors[0].raw[..], b"not*base64");
    }

    #[test]
    fn base64_stream_decodes_under_any_chunking_with_line_breaks() {
        let text = b"aGVsbG8g\r\nYmFzZTY0IHN0cmVhbQ";
        for split_at in 0..=text.len() {
            let (first, second) = text.split_at(split_at);
            let (output, out) = decode_stream(&[first, second]);
            assert_eq!(output, b"hello base64 stream");
            assert!(out.errors.is_empty());
        }
    }

    #[test]
    fn base64_stream_with_padding_mid_stream_decodes() {
        let (output, out) = decode_stream(&[b"YQ==Yg", b"==YWJj"]);
        assert_eq!(output, b"ababc");
        assert!(out.errors.is_empty());
    }

    #[test]
    fn base64_stream_encoder_matches_one_shot_encoding_after_flush() {
        let mut encoder = Base64StreamEncoder::new();
        let mut out = Vec::new();
        encoder.write(b"he", &mut out);
        encoder.write(b"llo w", &mut out);
        encoder.write(b"orld", &mut out);
        encoder.flush(&mut out);
        assert_eq!(out, encoded(b"hello world"));
    }
}
