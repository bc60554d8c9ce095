//! A config file as read: its text before and after `${VAR}` substitution, and where each
//! key and list element sits in it, to point problems at a line and column.
//!
//! The places come from the parser (`parse.rs`), which records the span of every key and
//! element while it reads the file, so a key path (`connectors.web.interceptors[0].kind`) is
//! looked up, never searched for in the text. A path that names nothing in the file (a
//! missing key) falls back to its deepest parent that is there. Offsets are in the parsed
//! text; [`SourceFile::line_column`] maps them back to the text as written.

use std::collections::HashMap;
use std::path::PathBuf;

use super::interpolate::Substitution;

/// The syntax of a config file, chosen by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.toml`
    Toml,
    /// `.yaml`, `.yml`, or `.json` (JSON is read as YAML, which contains it)
    Yaml,
}

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A table key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// Where one key or list element sits in the parsed text, as byte offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// Where the key starts (for a list element, where the element starts).
    pub key_start: usize,
    /// Where the key ends (for a list element, where the element starts).
    pub key_end: usize,
    /// Where its value starts: for a string, at its opening quote, or at the first line of
    /// a YAML block (`|`, `>`).
    pub value_start: usize,
}

impl Place {
    /// The place of a list element starting at `start`: it has no key of its own.
    pub fn element(start: usize) -> Self {
        Self {
            key_start: start,
            key_end: start,
            value_start: start,
        }
    }
}

/// The place of every key path of a file, as its parser saw it.
pub type Places = HashMap<Vec<Segment>, Place>;

/// One config file's text after interpolation, and where its keys are.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The path as given.
    pub path: PathBuf,
    /// The text that was parsed (after `${VAR}` substitution).
    pub text: String,
    /// Its syntax.
    pub format: Format,
    /// The text as written, which lines and columns refer to.
    pub original: String,
    /// Where substitution changed the text, in order.
    pub substitutions: Vec<Substitution>,
    /// Where each key path sits in `text`; empty until the file is parsed.
    pub places: Places,
}

/// Splits `a.b[2].c` into segments; serde_path_to_error writes paths this way.
pub fn parse_path(path: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    for part in path.split('.').filter(|part| !part.is_empty()) {
        let mut rest = part;
        if let Some(bracket) = rest.find('[') {
            if bracket > 0 {
                segments.push(Segment::Key(rest[..bracket].to_owned()));
            }
            rest = &rest[bracket..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(end) = stripped.find(']') else { break };
                if let Ok(index) = stripped[..end].parse() {
                    segments.push(Segment::Index(index));
                }
                rest = &stripped[end + 1..];
            }
        } else {
            segments.push(Segment::Key(rest.to_owned()));
        }
    }
    segments
}

impl SourceFile {
    /// A file whose text is parsed as written, with no places yet.
    pub fn new(path: PathBuf, text: String, format: Format) -> Self {
        Self {
            path,
            original: text.clone(),
            text,
            format,
            substitutions: Vec::new(),
            places: Places::new(),
        }
    }

    /// 1-based line and column, in the text as written, of a byte offset of the parsed text.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let text = &self.original;
        let mut offset = self.to_original(offset).min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        let column = text[line_start..offset].chars().count() + 1;
        (line, column)
    }

    /// Maps an offset of the substituted text to the text as written; an offset inside a
    /// substituted value maps to its `${`.
    fn to_original(&self, offset: usize) -> usize {
        let mut shift: isize = 0;
        for substitution in &self.substitutions {
            if offset < substitution.substituted_start {
                break;
            }
            let substituted_end = substitution.substituted_start + substitution.substituted_len;
            if offset < substituted_end {
                return substitution.original_start;
            }
            shift = (substitution.original_start + substitution.original_len) as isize
                - substituted_end as isize;
        }
        offset.saturating_add_signed(shift)
    }

    /// Byte offset (in the parsed text) of the key at `path`, or of its deepest parent in
    /// the file when the key itself is not there; the start of the file for none.
    pub fn locate(&self, path: &[Segment]) -> usize {
        (0..=path.len())
            .rev()
            .find_map(|length| self.places.get(&path[..length]))
            .map_or(0, |place| place.key_start)
    }

    /// Where the byte at `parsed_offset` of the string value at `path` sits in the parsed
    /// text: escapes (`\"`, `\u00e9`, YAML's `''`) and the indentation that a YAML block
    /// strips from each line are walked over, so a VRL diagnostic inside such a string still
    /// points at the right column. `None` when `path` is not in the file.
    pub fn offset_in_string(&self, path: &[Segment], parsed_offset: usize) -> Option<usize> {
        let (start, style) = self.string_start(*self.places.get(path)?);
        let mut parsed = 0;
        let mut raw = start;
        let mut at_line_start = false;
        while parsed < parsed_offset && raw < self.text.len() {
            if let StringStyle::Block { indent } = style
                && at_line_start
            {
                let line = &self.text[raw..];
                let spaces = line.len() - line.trim_start_matches(' ').len();
                raw += spaces.min(indent);
                at_line_start = false;
                continue;
            }
            let rest = &self.text[raw..];
            let character = rest.chars().next()?;
            let (raw_length, parsed_length) = match (style, character) {
                (StringStyle::Escaped, '\\') => escape_lengths(rest),
                (StringStyle::SingleQuoted, '\'') if rest.starts_with("''") => (2, 1),
                _ => (character.len_utf8(), character.len_utf8()),
            };
            at_line_start = character == '\n';
            raw += raw_length;
            parsed += parsed_length;
        }
        Some(raw)
    }

    /// Where the characters of the string value at `place` start, and how it is written.
    fn string_start(&self, place: Place) -> (usize, StringStyle) {
        let start = place.value_start.min(self.text.len());
        let value = &self.text[start..];
        match self.format {
            Format::Toml => {
                for (opener, style) in [
                    ("'''", StringStyle::Literal),
                    ("\"\"\"", StringStyle::Escaped),
                    ("'", StringStyle::Literal),
                    ("\"", StringStyle::Escaped),
                ] {
                    if value.starts_with(opener) {
                        let mut start = start + opener.len();
                        // A newline right after `'''` or `"""` is not part of the string.
                        if opener.len() == 3 && self.text[start..].starts_with('\n') {
                            start += 1;
                        }
                        return (start, style);
                    }
                }
                (start, StringStyle::Literal)
            }
            Format::Yaml => {
                if value.starts_with('"') {
                    return (start + 1, StringStyle::Escaped);
                }
                if value.starts_with('\'') {
                    return (start + 1, StringStyle::SingleQuoted);
                }
                // A block's indicator (`|`, `>`) sits between the key and the first line,
                // where the parser puts the value's start.
                let between = self
                    .text
                    .get(place.key_end..start)
                    .unwrap_or("")
                    .trim_start_matches([':', ' ', '\t']);
                if between.starts_with(['|', '>']) {
                    let line_start = self.text[..start].rfind('\n').map_or(0, |at| at + 1);
                    return (
                        start,
                        StringStyle::Block {
                            indent: start - line_start,
                        },
                    );
                }
                (start, StringStyle::Literal)
            }
        }
    }
}

/// How a string value is written, for mapping offsets in its parsed text back to the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StringStyle {
    /// Every character stands for itself (TOML `'...'` and `'''...'''`, YAML plain).
    Literal,
    /// Backslash escapes (`"..."`, `"""..."""`).
    Escaped,
    /// YAML `'...'`, where `''` stands for `'`.
    SingleQuoted,
    /// A YAML block (`|`, `>`): each line loses `indent` leading spaces.
    Block { indent: usize },
}

/// (bytes in the file, bytes in the parsed string) of the escape that `text` starts with.
fn escape_lengths(text: &str) -> (usize, usize) {
    match text.chars().nth(1) {
        Some(code @ ('x' | 'u' | 'U')) => {
            let digits = match code {
                'x' => 2,
                'u' => 4,
                _ => 8,
            };
            let parsed = text
                .get(2..2 + digits)
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .and_then(char::from_u32)
                .map_or(1, char::len_utf8);
            (2 + digits, parsed)
        }
        Some(other) => (1 + other.len_utf8(), 1),
        None => (1, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_of_an_offset_inside_a_character_is_safe() {
        let file = SourceFile::new(PathBuf::from("t.toml"), "a = \"é\"\n".into(), Format::Toml);
        assert_eq!(file.line_column(6), (1, 6));
    }

    #[test]
    fn a_missing_key_falls_back_to_its_parent() {
        let mut file =
            SourceFile::new(PathBuf::from("t.toml"), "[a]\nb = 1\n".into(), Format::Toml);
        file.places.insert(
            vec![Segment::Key("a".into())],
            Place {
                key_start: 1,
                key_end: 2,
                value_start: 0,
            },
        );
        assert_eq!(file.locate(&parse_path("a.nope[3].x")), 1);
        assert_eq!(file.locate(&parse_path("other")), 0);
    }

    #[test]
    fn parse_path_reads_indices() {
        assert_eq!(
            parse_path("a.b[2].c"),
            vec![
                Segment::Key("a".into()),
                Segment::Key("b".into()),
                Segment::Index(2),
                Segment::Key("c".into())
            ]
        );
    }
}
