//! The csv codec: comma-separated rows, the first row of a stream naming the fields.
//!
//! Decoding keeps the header per stream (a [`crate::Decoder`] is one stream) and turns every
//! later row into an object of strings. A frame may hold several rows (a whole HTTP body), so
//! rows, not frames, are the unit. Encoding writes a header from the first object's keys before
//! the first row, then rows in header order; rows have no terminator of their own, because the
//! framing interceptor (usually `lines`) adds the delimiter.

use std::borrow::Cow;

use csv::{ByteRecord, ReaderBuilder};
use tb_event::{KeyString, ObjectMap, Value};

use super::value_kind_name;
use crate::error::{DecodeError, Decoded, EncodeError};

const UTF8_BYTE_ORDER_MARK: &[u8] = b"\xef\xbb\xbf";

/// The csv reader's buffer for large frames; small frames get a buffer their own size.
const CSV_READ_BUFFER_BYTES: usize = 8 * 1024;

/// Per-stream csv decoding state: the header row, once seen.
pub(crate) struct CsvRowDecoder {
    header: Option<Vec<KeyString>>,
    reader_builder: ReaderBuilder,
    record: ByteRecord,
}

impl CsvRowDecoder {
    pub(crate) fn new() -> Self {
        let mut reader_builder = ReaderBuilder::new();
        // Rows of the wrong width are reported by us, per row, instead of failing the frame.
        reader_builder.has_headers(false).flexible(true);
        Self {
            header: None,
            reader_builder,
            record: ByteRecord::new(),
        }
    }

    pub(crate) fn reset(&mut self) {
        self.header = None;
    }

    /// Decodes every row of `frame`; the stream's first row is taken as the header.
    pub(crate) fn decode_frame(&mut self, frame: &[u8], out: &mut Decoded) {
        let buffer_bytes = frame.len().clamp(16, CSV_READ_BUFFER_BYTES);
        let mut reader = self
            .reader_builder
            .buffer_capacity(buffer_bytes)
            .from_reader(frame);
        loop {
            let row_start = byte_offset(reader.position().byte());
            match reader.read_byte_record(&mut self.record) {
                Ok(true) => {
                    let row_end = byte_offset(reader.position().byte());
                    let raw_row = frame.get(row_start..row_end).unwrap_or(frame);
                    self.accept_row(raw_row, out);
                }
                Ok(false) => break,
                Err(error) => {
                    out.errors
                        .push(DecodeError::invalid(format!("invalid csv: {error}"), frame));
                    break;
                }
            }
        }
    }

    fn accept_row(&mut self, raw_row: &[u8], out: &mut Decoded) {
        let Some(header) = &self.header else {
            self.header = Some(self.record.iter().map(field_name).collect());
            return;
        };
        if self.record.len() != header.len() {
            out.errors.push(DecodeError::invalid(
                format!(
                    "csv row has {} fields but the header has {}",
                    self.record.len(),
                    header.len()
                ),
                raw_row,
            ));
            return;
        }
        let object: ObjectMap = header
            .iter()
            .zip(self.record.iter())
            .map(|(name, field)| (name.clone(), field_value(field)))
            .collect();
        out.values.push(Value::Object(object));
    }
}

fn byte_offset(position: u64) -> usize {
    usize::try_from(position).unwrap_or(usize::MAX)
}

fn field_name(field: &[u8]) -> KeyString {
    KeyString::from(String::from_utf8_lossy(field))
}

/// A field as a string, or as bytes when it is not UTF-8 (nothing is lost either way).
fn field_value(field: &[u8]) -> Value {
    match std::str::from_utf8(field) {
        Ok(text) => Value::from(text),
        Err(_) => Value::Bytes(bytes::Bytes::copy_from_slice(field)),
    }
}

/// Per-stream csv encoding state: the header, once written.
pub(crate) struct CsvRowEncoder {
    header: Option<Vec<KeyString>>,
    field_text: Vec<u8>,
}

impl CsvRowEncoder {
    pub(crate) fn new() -> Self {
        Self {
            header: None,
            field_text: Vec::new(),
        }
    }

    pub(crate) fn reset(&mut self) {
        self.header = None;
    }

    /// Appends one row for `value` (an object), preceded by the header row on the first call.
    pub(crate) fn encode(&mut self, value: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let Value::Object(object) = value else {
            return Err(EncodeError::CsvNotAnObject {
                kind: value_kind_name(value),
            });
        };
        let header_is_new = self.header.is_none();
        let result = self.encode_row(object, out);
        // The caller drops a failed encoding, header row included, so the next row must
        // write the header again.
        if result.is_err() && header_is_new {
            self.header = None;
        }
        result
    }

    fn encode_row(&mut self, object: &ObjectMap, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let header = match &mut self.header {
            Some(header) => header,
            empty_header => empty_header.insert(write_header_row(object, out)?),
        };
        if let Some(unknown) = object.keys().find(|key| !header.contains(key)) {
            return Err(EncodeError::CsvFieldNotInHeader {
                field: unknown.to_string(),
            });
        }
        let lone_field = header.len() == 1;
        for (index, name) in header.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            self.field_text.clear();
            let field = match object.get(name) {
                Some(field) => field_bytes(field, &mut self.field_text)?,
                None => Cow::Borrowed(&[][..]),
            };
            write_csv_field(&field, lone_field, out);
        }
        Ok(())
    }
}

/// Writes the header row (the object's keys, in order) and returns it.
fn write_header_row(object: &ObjectMap, out: &mut Vec<u8>) -> Result<Vec<KeyString>, EncodeError> {
    if object.is_empty() {
        return Err(EncodeError::CsvNoFields);
    }
    let lone_field = object.len() == 1;
    for (index, name) in object.keys().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_csv_field(name.as_bytes(), lone_field, out);
    }
    out.push(b'\n');
    Ok(object.keys().cloned().collect())
}

/// The text of one field: strings raw, null empty, scalars as text, the rest as JSON.
fn field_bytes<'value>(
    field: &'value Value,
    scratch: &'value mut Vec<u8>,
) -> Result<Cow<'value, [u8]>, EncodeError> {
    Ok(match field {
        Value::Bytes(bytes) => Cow::Borrowed(&bytes[..]),
        Value::String(string) => Cow::Borrowed(string.as_bytes()),
        Value::Null => Cow::Borrowed(&[][..]),
        Value::Integer(integer) => Cow::Owned(integer.to_string().into_bytes()),
        Value::Boolean(boolean) => Cow::Owned(boolean.to_string().into_bytes()),
        other => {
            serde_json::to_writer(&mut *scratch, other)?;
            Cow::Borrowed(&scratch[..])
        }
    })
}

/// Writes a field, quoted when it holds a comma, quote or line break, when it is the empty only
/// field of its row (unquoted, that row would be a blank line, which readers skip), or when it
/// starts with a byte-order mark (which readers strip at the start of a frame).
fn write_csv_field(field: &[u8], lone_field: bool, out: &mut Vec<u8>) {
    let needs_quotes = (lone_field && field.is_empty())
        || field.starts_with(UTF8_BYTE_ORDER_MARK)
        || field
            .iter()
            .any(|byte| matches!(byte, b',' | b'"' | b'\n' | b'\r'));
    if !needs_quotes {
        out.extend_from_slice(field);
        return;
    }
    out.push(b'"');
    for &byte in field {
        if byte == b'"' {
            out.push(b'"');
        }
        out.push(byte);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DecodeErrorKind;

    fn object(pairs: &[(&str, &str)]) -> Value {
        Value::Object(
            pairs
                .iter()
                .map(|(key, value)| (KeyString::from(*key), Value::from(*value)))
                .collect(),
        )
    }

    #[test]
    fn csv_header_row_names_fields() {
        let mut decoder = CsvRowDecoder::new();
        let mut out = Decoded::default();
        decoder.decode_frame(b"name,temp", &mut out);
        decoder.decode_frame(b"s1,12.5", &mut out);
        decoder.decode_frame(b"\"s,2\",\"1\"\"3\"", &mut out);
        assert_eq!(
            out.values,
            vec![
                object(&[("name", "s1"), ("temp", "12.5")]),
                object(&[("name", "s,2"), ("temp", "1\"3")])
            ]
        );
    }

    #[test]
    fn csv_frame_with_several_rows_uses_first_row_as_header() {
        let mut decoder = CsvRowDecoder::new();
        let mut out = Decoded::default();
        decoder.decode_frame(b"a,b\r\n1,2\n\n3,4\n", &mut out);
        assert_eq!(
            out.values,
            vec![
                object(&[("a", "1"), ("b", "2")]),
                object(&[("a", "3"), ("b", "4")])
            ]
        );
    }

    #[test]
    fn csv_row_with_wrong_field_count_is_invalid_and_next_row_still_decodes() {
        let mut decoder = CsvRowDecoder::new();
        let mut out = Decoded::default();
        decoder.decode_frame(b"a,b\n1,2,3\n4,5\n", &mut out);
        assert_eq!(out.values, vec![object(&[("a", "4"), ("b", "5")])]);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].kind, DecodeErrorKind::Invalid);
        assert_eq!(&out.errors[0].raw[..], b"1,2,3\n");
    }

    #[test]
    fn csv_reset_makes_next_row_a_header_again() {
        let mut decoder = CsvRowDecoder::new();
        let mut out = Decoded::default();
        decoder.decode_frame(b"a\n1", &mut out);
        decoder.reset();
        decoder.decode_frame(b"b\n2", &mut out);
        assert_eq!(
            out.values,
            vec![object(&[("a", "1")]), object(&[("b", "2")])]
        );
    }

    #[test]
    fn csv_encode_writes_header_before_first_row_only() {
        let mut encoder = CsvRowEncoder::new();
        let mut out = Vec::new();
        encoder
            .encode(&object(&[("b", "x,y"), ("a", "1")]), &mut out)
            .unwrap();
        out.push(b'\n');
        encoder.encode(&object(&[("a", "2")]), &mut out).unwrap();
        assert_eq!(out, b"a,b\n1,\"x,y\"\n2,");
    }

    #[test]
    fn csv_field_starting_with_byte_order_mark_round_trips() {
        let mut encoder = CsvRowEncoder::new();
        let mut frame = Vec::new();
        let value = object(&[("a", "\u{feff}x"), ("b", "")]);
        encoder.encode(&value, &mut frame).unwrap();
        let mut decoder = CsvRowDecoder::new();
        let mut out = Decoded::default();
        for row in frame.split(|byte| *byte == b'\n') {
            decoder.decode_frame(row, &mut out);
        }
        assert_eq!(out.values, vec![value]);
    }

    #[test]
    fn csv_encode_rejects_non_objects_and_unknown_fields() {
        let mut encoder = CsvRowEncoder::new();
        let mut out = Vec::new();
        assert!(matches!(
            encoder.encode(&Value::from(1), &mut out),
            Err(EncodeError::CsvNotAnObject { kind: "integer" })
        ));
        encoder.encode(&object(&[("a", "1")]), &mut out).unwrap();
        assert!(matches!(
            encoder.encode(&object(&[("z", "1")]), &mut out),
            Err(EncodeError::CsvFieldNotInHeader { .. })
        ));
    }

    #[test]
    fn csv_encode_writes_scalars_as_text_and_nested_values_as_json() {
        let mut encoder = CsvRowEncoder::new();
        let mut out = Vec::new();
        let value = Value::Object(
            [
                ("i".into(), Value::from(7)),
                ("n".into(), Value::Null),
                ("o".into(), Value::Array(vec![Value::from("q")])),
            ]
            .into(),
        );
        encoder.encode(&value, &mut out).unwrap();
        assert_eq!(out, b"i,n,o\n7,,\"[\"\"q\"\"]\"");
    }
}
