//! Cutting a feed's bytes into envelopes: NDJSON lines, or server-sent events whose `data`
//! lines hold the envelope. Both are line based, and no line (nor event) may grow past
//! `max_line`, so a feed that never ends a line cannot take the memory.

use super::FeedFormat;

/// One envelope's text, and its SSE `id` when it had one.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Frame {
    pub(super) text: String,
    pub(super) id: Option<String>,
}

/// The bytes of a line not yet ended, and the SSE event being read.
pub(super) struct Framer {
    format: FeedFormat,
    max_line: usize,
    partial: Vec<u8>,
    data: String,
    id: Option<String>,
}

impl Framer {
    pub(super) fn new(format: FeedFormat, max_line: usize) -> Self {
        Self {
            format,
            max_line,
            partial: Vec::new(),
            data: String::new(),
            id: None,
        }
    }

    /// Takes the next chunk, appending each envelope it completes to `frames`.
    ///
    /// # Errors
    ///
    /// A line or event longer than `max_line`, or text that is not UTF-8.
    pub(super) fn push(&mut self, chunk: &[u8], frames: &mut Vec<Frame>) -> Result<(), String> {
        let mut rest = chunk;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            self.partial.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            let mut line = std::mem::take(&mut self.partial);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8(line)
                .map_err(|_| "the feed sent a line that is not UTF-8".to_owned())?;
            self.line(line, frames)?;
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > self.max_line {
            return Err(format!(
                "the feed sent a line longer than max_line ({} bytes)",
                self.max_line
            ));
        }
        Ok(())
    }

    fn line(&mut self, line: String, frames: &mut Vec<Frame>) -> Result<(), String> {
        match self.format {
            FeedFormat::Ndjson if line.trim().is_empty() => {}
            FeedFormat::Ndjson => frames.push(Frame {
                text: line,
                id: None,
            }),
            FeedFormat::Sse => self.sse_line(&line, frames)?,
        }
        Ok(())
    }

    /// One line of server-sent events: a field, a comment, or the blank line that ends an
    /// event.
    fn sse_line(&mut self, line: &str, frames: &mut Vec<Frame>) -> Result<(), String> {
        if line.is_empty() {
            if !self.data.is_empty() {
                frames.push(Frame {
                    text: std::mem::take(&mut self.data),
                    id: self.id.take(),
                });
            }
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                if self.data.len() > self.max_line {
                    return Err(format!(
                        "the feed sent an event longer than max_line ({} bytes)",
                        self.max_line
                    ));
                }
            }
            "id" => self.id = Some(value.to_owned()),
            // Comments (an empty field name), `event`, `retry` and unknown fields.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(format: FeedFormat, chunks: &[&str]) -> Vec<Frame> {
        let mut framer = Framer::new(format, 64);
        let mut frames = Vec::new();
        for chunk in chunks {
            framer.push(chunk.as_bytes(), &mut frames).expect("frames");
        }
        frames
    }

    #[test]
    fn ndjson_lines_split_anywhere_become_frames() {
        let found = frames(
            FeedFormat::Ndjson,
            &["{\"a\":", "1}\r\n\n{\"b\"", ":2}\n{\"c\""],
        );
        let texts: Vec<&str> = found.iter().map(|frame| frame.text.as_str()).collect();
        assert_eq!(texts, ["{\"a\":1}", "{\"b\":2}"]);
    }

    #[test]
    fn sse_events_join_data_lines_and_keep_their_id() {
        let found = frames(
            FeedFormat::Sse,
            &[
                ": hello\n",
                "id: m10\ndata: {\"a\":\ndata:1}\n\n",
                "data: x\n",
                "\n",
            ],
        );
        assert_eq!(
            found,
            [
                Frame {
                    text: "{\"a\":\n1}".to_owned(),
                    id: Some("m10".to_owned())
                },
                Frame {
                    text: "x".to_owned(),
                    id: None
                },
            ]
        );
    }

    #[test]
    fn a_line_past_max_line_is_an_error_not_memory() {
        let mut framer = Framer::new(FeedFormat::Ndjson, 64);
        let mut frames = Vec::new();
        let long = "x".repeat(65);
        let error = framer
            .push(long.as_bytes(), &mut frames)
            .expect_err("too long");
        assert!(error.contains("max_line"), "{error}");
        let mut sse = Framer::new(FeedFormat::Sse, 8);
        let error = sse
            .push(b"data: 12345\ndata: 6789\n", &mut frames)
            .expect_err("too long");
        assert!(error.contains("max_line"), "{error}");
    }
}
