//! The string and bytes codecs: the frame itself is the value.
//!
//! `string` insists on UTF-8 (a VRL string), `bytes` takes anything. Both encode strings and
//! bytes as their raw bytes and every other value as its JSON text, so a sink configured for
//! plain text never fails on a structured event.

use bytes::Bytes;
use tb_event::Value;

use crate::error::{DecodeError, Decoded, EncodeError};

/// Decodes one frame as a UTF-8 string value.
pub(super) fn decode_string_frame(frame: &[u8], out: &mut Decoded) {
    match std::str::from_utf8(frame) {
        Ok(text) => out.values.push(Value::from(text)),
        Err(error) => out.errors.push(DecodeError::invalid(
            format!("frame is not valid utf-8: {error}"),
            frame,
        )),
    }
}

/// Decodes one frame as a bytes value, unchanged.
pub(super) fn decode_bytes_frame(frame: &[u8], out: &mut Decoded) {
    out.values.push(Value::Bytes(Bytes::copy_from_slice(frame)));
}

/// Appends strings and bytes raw, anything else as JSON text.
pub(super) fn encode_raw_or_json(value: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match value {
        Value::Bytes(bytes) => out.extend_from_slice(bytes),
        Value::String(string) => out.extend_from_slice(string.as_bytes()),
        other => serde_json::to_writer(out, other)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DecodeErrorKind;

    #[test]
    fn string_frame_must_be_utf8() {
        let mut out = Decoded::default();
        decode_string_frame("héllo".as_bytes(), &mut out);
        decode_string_frame(&[0xff, 0xfe], &mut out);
        assert_eq!(out.values, vec![Value::from("héllo")]);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].kind, DecodeErrorKind::Invalid);
        assert_eq!(&out.errors[0].raw[..], &[0xff, 0xfe]);
    }

    #[test]
    fn bytes_frame_is_kept_as_is() {
        let mut out = Decoded::default();
        decode_bytes_frame(&[0xff, 0x00], &mut out);
        assert_eq!(
            out.values,
            vec![Value::Bytes(Bytes::from_static(&[0xff, 0x00]))]
        );
    }

    #[test]
    fn raw_encoding_writes_strings_raw_and_other_values_as_json() {
        let mut out = Vec::new();
        encode_raw_or_json(&Value::from("a\"b"), &mut out).unwrap();
        out.push(b'|');
        encode_raw_or_json(&Value::Bytes(Bytes::from_static(b"\xff")), &mut out).unwrap();
        out.push(b'|');
        encode_raw_or_json(&Value::Array(vec![Value::from(1)]), &mut out).unwrap();
        assert_eq!(out, b"a\"b|\xff|[1]");
    }
}
