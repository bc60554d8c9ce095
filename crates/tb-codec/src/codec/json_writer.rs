//! VRL values written as compact JSON directly, byte for byte what serde_json writes for
//! them, without serde's machinery: the encoding half of the hot path.
//!
//! Strings are scanned eight bytes at a time for the bytes JSON must escape (`"`, `\` and
//! controls) and copied in runs; UTF-8 is checked only when a byte past ASCII is seen, and
//! text that is not UTF-8 is written lossily, as VRL's own serialisation does.

use tb_event::Value;

/// What follows the backslash for each byte: 0 for none (written as is), `u` for `\u00XX`.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `value` as compact JSON, byte for byte as serde_json writes it (so always
/// UTF-8: invalid bytes in a string are written as U+FFFD).
pub fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Boolean(true) => out.extend_from_slice(b"true"),
        Value::Boolean(false) => out.extend_from_slice(b"false"),
        Value::Integer(integer) => write_scalar(integer, out),
        Value::Float(float) => write_scalar(&float.into_inner(), out),
        Value::Bytes(bytes) => write_text(bytes, out),
        // VRL's JSON decoding makes strings of this kind: UTF-8 already.
        Value::String(text) => {
            write_str(text.as_bytes(), out);
        }
        // Rare in events: serde_json writes them, as it always did.
        Value::Regex(_) | Value::Timestamp(_) => write_scalar(value, out),
        Value::Object(fields) => {
            out.push(b'{');
            for (index, (key, field)) in fields.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_str(key.as_str().as_bytes(), out);
                out.push(b':');
                write_value(field, out);
            }
            out.push(b'}');
        }
        Value::Array(elements) => {
            out.push(b'[');
            for (index, element) in elements.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_value(element, out);
            }
            out.push(b']');
        }
    }
}

/// What serde_json writes for `scalar` (non-finite floats as `null`).
fn write_scalar(scalar: &impl serde::Serialize, out: &mut Vec<u8>) {
    // Writing a number to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, scalar);
}

/// Bytes as a JSON string: as they are when they are UTF-8, lossily when not.
fn write_text(bytes: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    if write_str(bytes, out) {
        return;
    }
    // A byte past ASCII was seen: keep what was written only if the whole is UTF-8.
    if std::str::from_utf8(bytes).is_err() {
        out.truncate(start);
        write_str(String::from_utf8_lossy(bytes).as_bytes(), out);
    }
}

/// Writes `text` quoted and escaped; returns whether it was all ASCII.
fn write_str(text: &[u8], out: &mut Vec<u8>) -> bool {
    out.reserve(text.len() + 2);
    out.push(b'"');
    // Most strings need no escape at all: find the first byte that does, eight at a time.
    let mut high = 0u64;
    let mut index = 0;
    while let Some(word) = text.get(index..index + 8) {
        let word = u64::from_le_bytes([
            word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
        ]);
        if needs_escape(word) {
            break;
        }
        high |= word;
        index += 8;
    }
    while let Some(&byte) = text.get(index) {
        if ESCAPE[usize::from(byte)] != 0 {
            break;
        }
        high |= u64::from(byte);
        index += 1;
    }
    out.extend_from_slice(&text[..index]);
    let mut ascii = high & 0x8080_8080_8080_8080 == 0;
    if index < text.len() {
        ascii &= write_escaped(&text[index..], out);
    }
    out.push(b'"');
    ascii
}

/// The rest of a string from its first byte that needs escaping, a byte at a time; returns
/// whether it was all ASCII.
fn write_escaped(text: &[u8], out: &mut Vec<u8>) -> bool {
    let mut high = 0u8;
    let mut run_start = 0;
    for (index, &byte) in text.iter().enumerate() {
        high |= byte;
        let escape = ESCAPE[usize::from(byte)];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&text[run_start..index]);
        out.push(b'\\');
        out.push(escape);
        if escape == b'u' {
            out.extend_from_slice(b"00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        }
        run_start = index + 1;
    }
    out.extend_from_slice(&text[run_start..]);
    high & 0x80 == 0
}

/// Whether any byte of `word` is a control (< 0x20), `"` or `\`.
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let quote = has_zero(word ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
    (below_space | quote | backslash) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(value: &Value) -> (String, String) {
        let mut ours = Vec::new();
        write_value(value, &mut ours);
        let theirs = serde_json::to_string(value).expect("serde_json");
        (String::from_utf8(ours).expect("utf-8"), theirs)
    }

    #[test]
    fn every_escape_and_every_byte_below_0x80_is_written_as_serde_json_writes_it() {
        let all: Vec<u8> = (0u8..0x80).collect();
        for length in [0, 1, 7, 8, 9, 16, 33] {
            let text: Vec<u8> = all
                .iter()
                .cycle()
                .skip(length)
                .take(length * 5)
                .copied()
                .collect();
            let (ours, theirs) = both(&Value::Bytes(text.into()));
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn non_ascii_and_invalid_utf8_are_written_as_serde_json_writes_them() {
        for text in [
            &b"caf\xc3\xa9 \xe2\x82\xac long enough to span words"[..],
            b"bad \xff\xfe here",
            b"\xc3",
        ] {
            let (ours, theirs) = both(&Value::Bytes(bytes::Bytes::copy_from_slice(text)));
            assert_eq!(ours, theirs, "{text:?}");
        }
    }

    #[test]
    fn nested_objects_arrays_and_numbers_match_serde_json() {
        let value: Value = serde_json::from_str(
            r#"{"a":[1,-2,3.5,1e300,true,null,{"k\"ey":"v\n"}],"b":{},"c":[],"d":0.1}"#,
        )
        .expect("json");
        let (ours, theirs) = both(&value);
        assert_eq!(ours, theirs);
    }
}
