//! What decoding and encoding report, and the output buffer decoding fills.
//!
//! Decoding never fails as a whole: a bad frame becomes a [`DecodeError`] next to the values
//! that did decode, carrying the raw bytes so the caller can dead-letter them (an `_errors`
//! output) and carry on with the rest of the stream. Encoding works on values the engine made, so
//! a failure there is an ordinary `Result`.

use bytes::Bytes;
use tb_event::Value;

/// Most raw bytes a [`DecodeError`] keeps: 64 KiB. Enough to see what went wrong without letting
/// one huge bad frame pin its whole size in memory.
pub const MAX_RAW_ERROR_BYTES: usize = 64 * 1024;

/// Why a [`DecodeError`] happened, in the terms a caller answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// A frame or decompressed size over its limit (HTTP answers 413).
    TooLarge,
    /// Anything else (HTTP answers 400).
    Invalid,
}

/// One frame (or chunk) that could not be decoded. Decoding carries on after it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct DecodeError {
    /// What was wrong, in lowercase words.
    pub reason: String,
    /// The raw bytes of the frame (or chunk) that could not be decoded, capped at 64 KiB.
    pub raw: Bytes,
    /// Whether a limit was hit or the bytes were invalid.
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    /// An invalid frame, keeping at most [`MAX_RAW_ERROR_BYTES`] of `raw`.
    pub fn invalid(reason: impl Into<String>, raw: &[u8]) -> Self {
        Self::with_kind(DecodeErrorKind::Invalid, reason.into(), raw)
    }

    /// A frame or stream over a size limit, keeping at most [`MAX_RAW_ERROR_BYTES`] of `raw`.
    pub fn too_large(reason: impl Into<String>, raw: &[u8]) -> Self {
        Self::with_kind(DecodeErrorKind::TooLarge, reason.into(), raw)
    }

    fn with_kind(kind: DecodeErrorKind, reason: String, raw: &[u8]) -> Self {
        Self {
            reason,
            raw: copy_capped_raw(raw, &[]),
            kind,
        }
    }

    /// Like [`DecodeError::too_large`] for a frame whose bytes sit in two pieces (a carried
    /// partial frame and the chunk that continues it).
    pub(crate) fn too_large_split(reason: String, first: &[u8], second: &[u8]) -> Self {
        Self {
            reason,
            raw: copy_capped_raw(first, second),
            kind: DecodeErrorKind::TooLarge,
        }
    }
}

/// Copies at most [`MAX_RAW_ERROR_BYTES`] of `raw`, for a [`DecodeError::raw`].
pub(crate) fn capped_raw_bytes(raw: &[u8]) -> Bytes {
    copy_capped_raw(raw, &[])
}

/// Copies the first [`MAX_RAW_ERROR_BYTES`] of `first` followed by `second`.
fn copy_capped_raw(first: &[u8], second: &[u8]) -> Bytes {
    let first_part = first.get(..MAX_RAW_ERROR_BYTES).unwrap_or(first);
    let room_left = MAX_RAW_ERROR_BYTES - first_part.len();
    let second_part = second.get(..room_left).unwrap_or(second);
    let mut raw = Vec::with_capacity(first_part.len() + second_part.len());
    raw.extend_from_slice(first_part);
    raw.extend_from_slice(second_part);
    Bytes::from(raw)
}

/// Decoded output of one call; values in input order.
///
/// Reuse one per stream and [`Decoded::clear`] it between calls, so its vectors keep their
/// capacity.
#[derive(Default, Debug)]
pub struct Decoded {
    /// The values decoded, in the order their frames arrived.
    pub values: Vec<Value>,
    /// The frames that could not be decoded, in the order they arrived.
    pub errors: Vec<DecodeError>,
}

impl Decoded {
    /// Empties both lists, keeping their capacity.
    pub fn clear(&mut self) {
        self.values.clear();
        self.errors.clear();
    }

    /// Whether nothing was decoded and nothing went wrong.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.errors.is_empty()
    }
}

/// A value that could not be encoded, or a compressor that failed.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// serde_json refused the value.
    #[error("could not encode value as json: {0}")]
    Json(#[from] serde_json::Error),
    /// rmp-serde refused the value.
    #[error("could not encode value as msgpack: {0}")]
    Msgpack(#[from] rmp_serde::encode::Error),
    /// The csv codec writes objects only.
    #[error("the csv codec encodes objects only, got {kind}")]
    CsvNotAnObject {
        /// The kind of value given, such as `"array"`.
        kind: &'static str,
    },
    /// The csv codec cannot write a row without fields.
    #[error("the csv codec cannot encode an object without fields")]
    CsvNoFields,
    /// An object has a field the stream's csv header (taken from the first object) lacks.
    #[error("field {field:?} is not in the csv header")]
    CsvFieldNotInHeader {
        /// The field that is not in the header.
        field: String,
    },
    /// A frame is over the `length_prefixed` limit (or over 4 GiB, what a u32 prefix holds).
    #[error("frame of {length} bytes is over max_length of {max_length} bytes")]
    FrameTooLarge {
        /// The encoded frame's length.
        length: usize,
        /// The largest frame allowed.
        max_length: usize,
    },
    /// The gzip or zstd compressor failed.
    #[error("{algorithm} compression failed: {reason}")]
    Compression {
        /// `"gzip"` or `"zstd"`.
        algorithm: &'static str,
        /// What the compressor said.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_error_raw_is_capped_at_64_kib() {
        let huge = vec![b'x'; MAX_RAW_ERROR_BYTES * 2];
        let error = DecodeError::invalid("bad", &huge);
        assert_eq!(error.raw.len(), MAX_RAW_ERROR_BYTES);
        assert_eq!(error.to_string(), "bad");
        assert_eq!(error.kind, DecodeErrorKind::Invalid);
    }

    #[test]
    fn split_raw_joins_both_pieces_under_the_cap() {
        let error = DecodeError::too_large_split("big".into(), b"ab", b"cd");
        assert_eq!(&error.raw[..], b"abcd");
        assert_eq!(error.kind, DecodeErrorKind::TooLarge);
        let first = vec![b'a'; MAX_RAW_ERROR_BYTES - 1];
        let error = DecodeError::too_large_split("big".into(), &first, b"bcd");
        assert_eq!(error.raw.len(), MAX_RAW_ERROR_BYTES);
        assert_eq!(error.raw.last(), Some(&b'b'));
    }

    #[test]
    fn decoded_clear_empties_values_and_errors() {
        let mut decoded = Decoded::default();
        decoded.values.push(Value::from(1));
        decoded.errors.push(DecodeError::invalid("bad", b""));
        decoded.clear();
        assert!(decoded.is_empty());
    }
}
