//! A top-level JSON array read an element at a time, so a body of millions of elements
//! never becomes millions of values at once.
//!
//! The json codec decodes a frame that is an array into one value per element, all at once.
//! [`JsonArrayReader`] gives the same values from a whole body held in memory, a few at a
//! time: each element is parsed straight into a VRL value by serde_json (with its nesting
//! limit), and the reader keeps only its position.

use tb_event::Value;

use crate::error::{DecodeError, Decoded};

/// Reads the elements of the JSON array that makes up `body`, in order.
pub struct JsonArrayReader<'a> {
    body: &'a [u8],
    position: usize,
    state: ReaderState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ReaderState {
    /// Before the first element (just after `[`).
    First,
    /// After an element: a `,` or the closing `]` comes next.
    Between,
    /// The array was closed, or a problem was reported.
    Done,
}

impl<'a> JsonArrayReader<'a> {
    /// A reader for `body` if, after leading whitespace, it opens a JSON array.
    pub fn new(body: &'a [u8]) -> Option<Self> {
        let start = skip_whitespace(body, 0);
        (body.get(start) == Some(&b'[')).then_some(Self {
            body,
            position: start + 1,
            state: ReaderState::First,
        })
    }

    /// Whether every element has been read (or a problem ended the reading).
    pub fn is_done(&self) -> bool {
        self.state == ReaderState::Done
    }

    /// Reads up to `max` more elements into `out`. A syntax error is reported once, as the
    /// last thing in `out.errors`, and ends the reading.
    pub fn read(&mut self, max: usize, out: &mut Decoded) {
        for _ in 0..max {
            match self.next_element() {
                Ok(Some(value)) => out.values.push(value),
                Ok(None) => return,
                Err(error) => {
                    self.state = ReaderState::Done;
                    out.errors.push(error);
                    return;
                }
            }
        }
    }

    fn next_element(&mut self) -> Result<Option<Value>, DecodeError> {
        self.position = skip_whitespace(self.body, self.position);
        match (self.state, self.body.get(self.position)) {
            (ReaderState::Done, _) => return Ok(None),
            (_, Some(b']')) => return self.close(),
            (ReaderState::Between, Some(b',')) => {
                self.position = skip_whitespace(self.body, self.position + 1);
            }
            (ReaderState::Between, _) => {
                return Err(self.invalid("expected `,` or `]` after an array element"));
            }
            (ReaderState::First, _) => {}
        }
        let rest = &self.body[self.position..];
        let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
        match stream.next() {
            Some(Ok(value)) => {
                self.position += stream.byte_offset();
                self.state = ReaderState::Between;
                Ok(Some(value))
            }
            Some(Err(error)) => Err(self.invalid(&format!("invalid json: {error}"))),
            None => Err(self.invalid("the array is not closed")),
        }
    }

    /// Reads the closing `]`: only whitespace may follow it.
    fn close(&mut self) -> Result<Option<Value>, DecodeError> {
        self.state = ReaderState::Done;
        let after = skip_whitespace(self.body, self.position + 1);
        if after < self.body.len() {
            self.position = after;
            return Err(self.invalid("trailing characters after the array"));
        }
        Ok(None)
    }

    /// A problem at the current position, with the text from there as its raw bytes.
    fn invalid(&self, reason: &str) -> DecodeError {
        let offset = self.position.min(self.body.len());
        DecodeError::invalid(
            format!("{reason} (at byte {offset} of the array)"),
            &self.body[offset..],
        )
    }
}

fn skip_whitespace(body: &[u8], mut position: usize) -> usize {
    while body
        .get(position)
        .is_some_and(|byte| matches!(byte, b' ' | b'\n' | b'\r' | b'\t'))
    {
        position += 1;
    }
    position
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(body: &str, step: usize) -> Decoded {
        let mut reader = JsonArrayReader::new(body.as_bytes()).expect("an array");
        let mut out = Decoded::default();
        while !reader.is_done() {
            let before = (out.values.len(), out.errors.len());
            reader.read(step, &mut out);
            if (out.values.len(), out.errors.len()) == before && !reader.is_done() {
                panic!("no progress");
            }
        }
        out
    }

    #[test]
    fn elements_come_a_few_at_a_time_in_order() {
        let out = read_all(r#" [ {"a":1}, 2 ,"three",[4,5], null ] "#, 2);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.values.len(), 5);
        assert_eq!(out.values[1], Value::from(2));
        assert_eq!(
            out.values[3],
            Value::Array(vec![Value::from(4), Value::from(5)])
        );
    }

    #[test]
    fn an_empty_array_has_no_elements() {
        let out = read_all("[]", 10);
        assert!(out.values.is_empty() && out.errors.is_empty());
    }

    #[test]
    fn a_bad_element_stops_the_reading_with_one_error() {
        let out = read_all(r#"[1, {"a":}, 3]"#, 10);
        assert_eq!(out.values, vec![Value::from(1)]);
        assert_eq!(out.errors.len(), 1);
        assert!(
            out.errors[0].reason.contains("invalid json"),
            "{:?}",
            out.errors
        );
    }

    #[test]
    fn missing_commas_unclosed_arrays_and_trailing_text_are_errors() {
        for body in ["[1 2]", "[1,", "[1] x", "[1,]"] {
            let out = read_all(body, 10);
            assert_eq!(out.errors.len(), 1, "{body}: {:?}", out.errors);
        }
    }

    #[test]
    fn only_an_array_gets_a_reader() {
        assert!(JsonArrayReader::new(br#"{"a":1}"#).is_none());
        assert!(JsonArrayReader::new(b"  [1]").is_some());
    }
}
