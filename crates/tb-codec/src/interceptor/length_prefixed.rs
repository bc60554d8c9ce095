//! The `length_prefixed` framer: a 4-byte big-endian length, then that many bytes.
//!
//! A frame that is complete inside a chunk is passed on as a slice of it; otherwise its bytes
//! are gathered in a carry buffer. A length over the limit cannot be skipped safely (if the
//! length is garbage, so is everything after it), so the framer reports it once and then drops
//! the rest of the stream.

use super::ByteSink;
use crate::error::{DecodeError, Decoded, EncodeError};

const PREFIX_BYTES: usize = 4;

/// Cuts a stream into length-prefixed frames. One per stream; [`LengthPrefixedFramer::finish`]
/// resets it.
pub(crate) struct LengthPrefixedFramer {
    max_length: usize,
    prefix: [u8; PREFIX_BYTES],
    prefix_filled: usize,
    /// The length of the frame being read, once its prefix is complete.
    frame_length: Option<usize>,
    /// Invariant: empty unless `frame_length` is set, and shorter than it.
    partial_frame: Vec<u8>,
    dropping_rest_of_stream: bool,
}

impl LengthPrefixedFramer {
    pub(crate) fn new(max_length: usize) -> Self {
        Self {
            max_length,
            prefix: [0; PREFIX_BYTES],
            prefix_filled: 0,
            frame_length: None,
            partial_frame: Vec::new(),
            dropping_rest_of_stream: false,
        }
    }

    /// Feeds the next chunk; every frame it completes goes to `sink`.
    pub(crate) fn push(&mut self, chunk: &[u8], out: &mut Decoded, sink: &mut ByteSink<'_>) {
        let mut rest = chunk;
        while !rest.is_empty() && !self.dropping_rest_of_stream {
            rest = match self.frame_length {
                None => self.read_prefix(rest, out, sink),
                Some(frame_length) => self.read_payload(frame_length, rest, out, sink),
            };
        }
    }

    /// End of stream: a frame cut short is reported as invalid. Resets the framer.
    pub(crate) fn finish(&mut self, out: &mut Decoded) {
        if !self.dropping_rest_of_stream {
            if let Some(frame_length) = self.frame_length {
                out.errors.push(DecodeError::invalid(
                    format!(
                        "truncated length-prefixed frame: expected {frame_length} bytes, got {}",
                        self.partial_frame.len()
                    ),
                    &self.partial_frame,
                ));
            } else if self.prefix_filled > 0 {
                out.errors.push(DecodeError::invalid(
                    format!(
                        "truncated length prefix: got {} of {PREFIX_BYTES} bytes",
                        self.prefix_filled
                    ),
                    self.prefix.get(..self.prefix_filled).unwrap_or_default(),
                ));
            }
        }
        self.reset();
    }

    /// Forgets any partial frame and the dropped state.
    pub(crate) fn reset(&mut self) {
        self.prefix_filled = 0;
        self.frame_length = None;
        self.partial_frame.clear();
        self.dropping_rest_of_stream = false;
    }

    /// Reads prefix bytes; returns what is left of `chunk`.
    fn read_prefix<'chunk>(
        &mut self,
        chunk: &'chunk [u8],
        out: &mut Decoded,
        sink: &mut ByteSink<'_>,
    ) -> &'chunk [u8] {
        let wanted = PREFIX_BYTES - self.prefix_filled;
        let (prefix_part, rest) = chunk.split_at(wanted.min(chunk.len()));
        if let Some(slot) = self
            .prefix
            .get_mut(self.prefix_filled..self.prefix_filled + prefix_part.len())
        {
            slot.copy_from_slice(prefix_part);
        }
        self.prefix_filled += prefix_part.len();
        if self.prefix_filled < PREFIX_BYTES {
            return rest;
        }
        self.prefix_filled = 0;
        let frame_length = usize::try_from(u32::from_be_bytes(self.prefix)).unwrap_or(usize::MAX);
        if frame_length > self.max_length {
            out.errors.push(DecodeError::too_large_split(
                format!(
                    "frame of {frame_length} bytes is over max_length of {} bytes; \
                     dropping the rest of the stream",
                    self.max_length
                ),
                &self.prefix,
                rest,
            ));
            self.dropping_rest_of_stream = true;
            return &[];
        }
        if frame_length == 0 {
            sink(&[], out);
        } else {
            self.frame_length = Some(frame_length);
        }
        rest
    }

    /// Reads payload bytes of a frame of `frame_length`; returns what is left of `chunk`.
    fn read_payload<'chunk>(
        &mut self,
        frame_length: usize,
        chunk: &'chunk [u8],
        out: &mut Decoded,
        sink: &mut ByteSink<'_>,
    ) -> &'chunk [u8] {
        if self.partial_frame.is_empty() && chunk.len() >= frame_length {
            let (frame, rest) = chunk.split_at(frame_length);
            self.frame_length = None;
            sink(frame, out);
            return rest;
        }
        let wanted = frame_length - self.partial_frame.len();
        let (payload_part, rest) = chunk.split_at(wanted.min(chunk.len()));
        self.partial_frame.extend_from_slice(payload_part);
        if self.partial_frame.len() == frame_length {
            self.frame_length = None;
            sink(&self.partial_frame, out);
            self.partial_frame.clear();
        }
        rest
    }
}

/// Appends the 4-byte big-endian prefix for a frame of `frame_length` bytes: the encoding half
/// of `length_prefixed`.
///
/// # Errors
///
/// [`EncodeError::FrameTooLarge`] over `max_length` or over what a u32 holds.
pub(crate) fn frame_length_prefix(
    frame_length: usize,
    max_length: usize,
) -> Result<[u8; PREFIX_BYTES], EncodeError> {
    let too_large = EncodeError::FrameTooLarge {
        length: frame_length,
        max_length,
    };
    if frame_length > max_length {
        return Err(too_large);
    }
    let length = u32::try_from(frame_length).map_err(|_| too_large)?;
    Ok(length.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DecodeErrorKind;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut stream = Vec::new();
        for payload in payloads {
            stream.extend_from_slice(&frame_length_prefix(payload.len(), usize::MAX).unwrap());
            stream.extend_from_slice(payload);
        }
        stream
    }

    fn split(max_length: usize, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Decoded) {
        let mut framer = LengthPrefixedFramer::new(max_length);
        let mut out = Decoded::default();
        let mut frames = Vec::new();
        let mut sink = |frame: &[u8], _: &mut Decoded| frames.push(frame.to_vec());
        for chunk in chunks {
            framer.push(chunk, &mut out, &mut sink);
        }
        framer.finish(&mut out);
        (frames, out)
    }

    #[test]
    fn length_prefixed_frames_inside_one_chunk_decode() {
        let stream = framed(&[b"abc", b"", b"de"]);
        let (frames, out) = split(100, &[&stream]);
        assert_eq!(frames, vec![b"abc".to_vec(), Vec::new(), b"de".to_vec()]);
        assert!(out.errors.is_empty());
    }

    #[test]
    fn length_prefix_split_across_chunks_decodes() {
        let stream = framed(&[b"hello", b"world!"]);
        for split_at in 0..stream.len() {
            let (first, second) = stream.split_at(split_at);
            let (frames, out) = split(100, &[first, second]);
            assert_eq!(frames, vec![b"hello".to_vec(), b"world!".to_vec()]);
            assert!(out.errors.is_empty());
        }
        let byte_chunks: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(split(100, &byte_chunks).0.len(), 2);
    }

    #[test]
    fn length_over_max_is_too_large_and_drops_rest_of_stream() {
        let mut stream = framed(&[b"ok", b"far too long"]);
        stream.extend_from_slice(&framed(&[b"lost"]));
        let (frames, out) = split(5, &[&stream]);
        assert_eq!(frames, vec![b"ok".to_vec()]);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].kind, DecodeErrorKind::TooLarge);
        assert!(out.errors[0].raw.starts_with(&[0, 0, 0, 12]));
    }

    #[test]
    fn truncated_frame_at_finish_is_invalid() {
        let stream = framed(&[b"complete", b"cut short"]);
        let (frames, out) = split(100, &[&stream[..stream.len() - 3]]);
        assert_eq!(frames, vec![b"complete".to_vec()]);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].kind, DecodeErrorKind::Invalid);
        assert_eq!(&out.errors[0].raw[..], b"cut sh");
    }

    #[test]
    fn truncated_prefix_at_finish_is_invalid() {
        let (_, out) = split(100, &[&[0, 0]]);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].kind, DecodeErrorKind::Invalid);
    }

    #[test]
    fn encoding_prefix_over_max_length_is_an_error() {
        assert!(matches!(
            frame_length_prefix(11, 10),
            Err(EncodeError::FrameTooLarge {
                length: 11,
                max_length: 10
            })
        ));
        assert_eq!(frame_length_prefix(258, 1000).unwrap(), [0, 0, 1, 2]);
    }
}
