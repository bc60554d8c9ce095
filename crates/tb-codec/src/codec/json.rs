//! The json codec: one JSON document per frame.
//!
//! Decoding goes straight from bytes into VRL's [`Value`] through its `Deserialize` impl, with no
//! intermediate `serde_json::Value`: this is the hot path (newline-delimited JSON at a million
//! events a second). A top-level array yields one value per element.

use tb_event::Value;

use super::push_value_or_elements;
use crate::error::{DecodeError, Decoded, EncodeError};

/// Decodes one frame. A frame of only whitespace (a `"\r"` left by CRLF line endings, padding)
/// is skipped rather than reported.
pub(super) fn decode_json_frame(frame: &[u8], out: &mut Decoded) {
    // UTF-8 checked once for the frame, not once for each string in it: serde_json reading
    // a `str` skips its own check. A frame that is not UTF-8 is read as bytes, for the error.
    let parsed = match std::str::from_utf8(frame) {
        Ok(text) => serde_json::from_str::<Value>(text),
        Err(_) => serde_json::from_slice::<Value>(frame),
    };
    match parsed {
        Ok(value) => push_value_or_elements(value, out),
        // Checked only on the error path, so valid frames pay nothing for it.
        Err(_) if frame.trim_ascii().is_empty() => {}
        Err(error) => out.errors.push(DecodeError::invalid(
            format!("invalid json: {error}"),
            frame,
        )),
    }
}

/// Appends `value` as compact JSON.
pub(super) fn encode_json(value: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    super::json_writer::write_value(value, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DecodeErrorKind;

    fn decode(frame: &[u8]) -> Decoded {
        let mut out = Decoded::default();
        decode_json_frame(frame, &mut out);
        out
    }

    #[test]
    fn json_object_frame_decodes_to_one_object() {
        let out = decode(br#"{"a":1,"b":"x","c":[true,null],"d":1.5}"#);
        assert_eq!(out.values.len(), 1);
        let object = out.values[0].as_object().unwrap();
        assert_eq!(object.get("a"), Some(&Value::from(1)));
        assert_eq!(object.get("b"), Some(&Value::from("x")));
        assert_eq!(
            object.get("c"),
            Some(&Value::Array(vec![Value::from(true), Value::Null]))
        );
        assert!(matches!(object.get("d"), Some(Value::Float(float)) if float.into_inner() == 1.5));
    }

    #[test]
    fn json_top_level_array_yields_one_value_per_element() {
        let out = decode(br#"[{"a":1},2,"three"]"#);
        assert_eq!(
            out.values,
            vec![
                Value::Object([("a".into(), Value::from(1))].into()),
                Value::from(2),
                Value::from("three")
            ]
        );
    }

    #[test]
    fn json_invalid_frame_is_invalid_error_with_raw_bytes() {
        let out = decode(b"{\"a\":");
        assert!(out.values.is_empty());
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].kind, DecodeErrorKind::Invalid);
        assert_eq!(&out.errors[0].raw[..], b"{\"a\":");
        assert!(out.errors[0].reason.starts_with("invalid json: "));
    }

    #[test]
    fn json_tolerates_surrounding_whitespace_and_skips_blank_frames() {
        assert_eq!(decode(b" 1\r").values, vec![Value::from(1)]);
        assert!(decode(b" \r\t").is_empty());
    }

    #[test]
    fn json_trailing_garbage_is_invalid() {
        assert_eq!(decode(b"1 2").errors.len(), 1);
    }

    #[test]
    fn json_deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "[".repeat(100_000);
        assert_eq!(decode(deep.as_bytes()).errors.len(), 1);
    }

    #[test]
    fn json_encode_writes_compact_json() {
        let mut out = Vec::new();
        let value = Value::Object([("k".into(), Value::from("v"))].into());
        encode_json(&value, &mut out).unwrap();
        assert_eq!(out, br#"{"k":"v"}"#);
    }
}
