//! Codecs: one frame's bytes to values, and one value to a frame's bytes.
//!
//! Each codec lives in its own module; this one only dispatches on [`CodecKind`] so the decoder
//! and encoder hold one small enum instead of a boxed trait object on the hot path. Codecs see
//! complete frames only: framing, decompression and base64 happened before (see
//! [`crate::interceptor`]).

mod csv_table;
mod json;
mod json_array;
mod json_writer;

pub use json_writer::write_value as write_json;
mod msgpack;
mod text;

pub use json_array::JsonArrayReader;

use tb_event::Value;

use crate::config::CodecKind;
use crate::error::{Decoded, EncodeError};

/// The per-stream decoding state of one codec. Only csv has any (its header row).
pub(crate) enum CodecDecoder {
    Json,
    Msgpack,
    Csv(csv_table::CsvRowDecoder),
    String,
    Bytes,
}

impl CodecDecoder {
    pub(crate) fn new(codec: CodecKind) -> Self {
        match codec {
            CodecKind::Json => Self::Json,
            CodecKind::Msgpack => Self::Msgpack,
            CodecKind::Csv => Self::Csv(csv_table::CsvRowDecoder::new()),
            CodecKind::String => Self::String,
            CodecKind::Bytes => Self::Bytes,
        }
    }

    /// Decodes one complete frame, appending its values (or an error) to `out`.
    pub(crate) fn decode_frame(&mut self, frame: &[u8], out: &mut Decoded) {
        match self {
            Self::Json => json::decode_json_frame(frame, out),
            Self::Msgpack => msgpack::decode_msgpack_frame(frame, out),
            Self::Csv(rows) => rows.decode_frame(frame, out),
            Self::String => text::decode_string_frame(frame, out),
            Self::Bytes => text::decode_bytes_frame(frame, out),
        }
    }

    /// Forgets per-stream state (the csv header) so the next frame starts a new stream.
    pub(crate) fn reset(&mut self) {
        if let Self::Csv(rows) = self {
            rows.reset();
        }
    }
}

/// The per-stream encoding state of one codec. Only csv has any (whether the header was written).
pub(crate) enum CodecEncoder {
    Json,
    Msgpack,
    Csv(csv_table::CsvRowEncoder),
    String,
    Bytes,
}

impl CodecEncoder {
    pub(crate) fn new(codec: CodecKind) -> Self {
        match codec {
            CodecKind::Json => Self::Json,
            CodecKind::Msgpack => Self::Msgpack,
            CodecKind::Csv => Self::Csv(csv_table::CsvRowEncoder::new()),
            CodecKind::String => Self::String,
            CodecKind::Bytes => Self::Bytes,
        }
    }

    /// Appends the encoding of `value` to `out`. On error `out` may hold a partial encoding; the
    /// caller truncates it.
    pub(crate) fn encode(&mut self, value: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Self::Json => json::encode_json(value, out),
            Self::Msgpack => msgpack::encode_msgpack(value, out),
            Self::Csv(rows) => rows.encode(value, out),
            Self::String | Self::Bytes => text::encode_raw_or_json(value, out),
        }
    }

    /// Forgets per-stream state, so the next stream gets its csv header again.
    pub(crate) fn reset(&mut self) {
        if let Self::Csv(rows) = self {
            rows.reset();
        }
    }
}

/// Pushes a decoded value, or each element of a top-level array, so that a batch sent as one
/// JSON or MessagePack array becomes one value per element.
fn push_value_or_elements(value: Value, out: &mut Decoded) {
    match value {
        Value::Array(elements) => out.values.extend(elements),
        other => out.values.push(other),
    }
}

/// A short name for the kind of `value`, for error messages.
pub(crate) fn value_kind_name(value: &Value) -> &'static str {
    match value {
        Value::Bytes(_) | Value::String(_) => "string",
        Value::Regex(_) => "regex",
        Value::Integer(_) => "integer",
        Value::Float(_) => "float",
        Value::Boolean(_) => "boolean",
        Value::Timestamp(_) => "timestamp",
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::Null => "null",
    }
}
