//! The msgpack codec: one MessagePack value per frame.
//!
//! Decoding reads straight into VRL's [`Value`] like the json codec, and a top-level array
//! likewise yields one value per element. Nesting is capped so hostile input cannot exhaust the
//! stack, and bytes left over after the value are an error, as they are for JSON.

use std::io::Cursor;

use serde::Deserialize;
use tb_event::Value;

use super::push_value_or_elements;
use crate::error::{DecodeError, Decoded, EncodeError};

/// Deepest nesting accepted, the same as serde_json's default recursion limit.
const MAX_NESTING_DEPTH: usize = 128;

/// Decodes one frame; an empty frame carries no value and is skipped.
pub(super) fn decode_msgpack_frame(frame: &[u8], out: &mut Decoded) {
    if frame.is_empty() {
        return;
    }
    match read_one_msgpack_value(frame) {
        Ok(value) => push_value_or_elements(value, out),
        Err(reason) => out.errors.push(DecodeError::invalid(reason, frame)),
    }
}

fn read_one_msgpack_value(frame: &[u8]) -> Result<Value, String> {
    // The reader-based deserializer copies each string through a buffer that grows as bytes
    // arrive, so a lying length prefix cannot make it allocate gigabytes up front.
    let mut deserializer = rmp_serde::Deserializer::new(Cursor::new(frame));
    deserializer.set_max_depth(MAX_NESTING_DEPTH);
    let value = Value::deserialize(&mut deserializer)
        .map_err(|error| format!("invalid msgpack: {error}"))?;
    let consumed = deserializer.position();
    if consumed != frame.len() as u64 {
        return Err(format!(
            "invalid msgpack: {} trailing bytes after the value",
            (frame.len() as u64).saturating_sub(consumed)
        ));
    }
    Ok(value)
}

/// Appends `value` as MessagePack with objects as maps keyed by field name.
pub(super) fn encode_msgpack(value: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    rmp_serde::encode::write_named(out, value)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DecodeErrorKind;

    fn decode(frame: &[u8]) -> Decoded {
        let mut out = Decoded::default();
        decode_msgpack_frame(frame, &mut out);
        out
    }

    fn encode(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_msgpack(value, &mut out).unwrap();
        out
    }

    #[test]
    fn msgpack_object_round_trips() {
        let value = Value::Object(
            [
                ("name".into(), Value::from("x")),
                ("count".into(), Value::from(-3)),
                ("ok".into(), Value::from(true)),
                (
                    "list".into(),
                    Value::Array(vec![Value::from(1), Value::Null]),
                ),
            ]
            .into(),
        );
        assert_eq!(decode(&encode(&value)).values, vec![value]);
    }

    #[test]
    fn msgpack_top_level_array_yields_one_value_per_element() {
        let array = Value::Array(vec![Value::from(1), Value::from("two")]);
        assert_eq!(
            decode(&encode(&array)).values,
            vec![Value::from(1), Value::from("two")]
        );
    }

    #[test]
    fn msgpack_trailing_bytes_are_invalid() {
        let mut frame = encode(&Value::from(1));
        frame.push(0x01);
        let out = decode(&frame);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].kind, DecodeErrorKind::Invalid);
    }

    #[test]
    fn msgpack_truncated_value_is_invalid() {
        // fixstr of length 5 with only two bytes present.
        assert_eq!(decode(&[0xa5, b'a', b'b']).errors.len(), 1);
    }

    #[test]
    fn msgpack_lying_string_length_is_invalid_without_huge_allocation() {
        // str32 claiming 4 GiB.
        assert_eq!(
            decode(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'a']).errors.len(),
            1
        );
    }

    #[test]
    fn msgpack_deep_nesting_is_an_error_not_a_stack_overflow() {
        // 10,000 nested one-element arrays.
        assert_eq!(decode(&[0x91; 10_000]).errors.len(), 1);
    }

    #[test]
    fn msgpack_empty_frame_is_skipped() {
        assert!(decode(b"").is_empty());
    }
}
