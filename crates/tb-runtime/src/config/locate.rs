//! Finding where a key lives in a config file, to point problems at a line and column.
//!
//! The locator walks a key path (`connectors.web.interceptors[0].kind`) through the text:
//! each name is found as a whole word used as a key (followed by `=`, `:`, `.` or `]`), each
//! index by skipping that many list elements. It is a search, not a second parser, so it is
//! the same for TOML and YAML; when it cannot find a key it falls back to the parent's place.

use std::path::PathBuf;

use super::interpolate::Substitution;

/// The syntax of a config file, chosen by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.toml`
    Toml,
    /// `.yaml` or `.yml`
    Yaml,
}

/// One config file's text after interpolation.
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
}

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A table key.
    Key(String),
    /// A list index.
    Index(usize),
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
    /// A file whose text was parsed as written.
    pub fn new(path: PathBuf, text: String, format: Format) -> Self {
        Self {
            path,
            original: text.clone(),
            text,
            format,
            substitutions: Vec::new(),
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

    /// Byte offset of the deepest segment of `path` that can be found.
    pub fn locate(&self, path: &[Segment]) -> usize {
        let mut position = 0;
        let mut found = 0;
        for segment in path {
            let next = match segment {
                Segment::Key(key) => self.find_key(key, position),
                Segment::Index(index) => self.skip_elements(*index, position),
            };
            match next {
                Some(next) => {
                    position = next;
                    found = next;
                }
                None => break,
            }
        }
        found
    }

    /// Where the byte at `parsed_offset` of the parsed string value of the key at
    /// `key_offset` sits in the file: escapes (`\"`, `\u00e9`) and the indentation that a
    /// YAML block strips from each line are walked over, so a VRL diagnostic inside such a
    /// string still points at the right column.
    pub fn offset_in_string_value(&self, key_offset: usize, parsed_offset: usize) -> Option<usize> {
        let (start, style) = self.string_value(key_offset)?;
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
            let character = self.text[raw..].chars().next()?;
            let (raw_length, parsed_length) = match (style, character) {
                (StringStyle::Escaped, '\\') => escape_lengths(&self.text[raw..]),
                _ => (character.len_utf8(), character.len_utf8()),
            };
            at_line_start = character == '\n';
            raw += raw_length;
            parsed += parsed_length;
        }
        Some(raw)
    }

    fn string_value(&self, key_offset: usize) -> Option<(usize, StringStyle)> {
        let rest = &self.text[key_offset..];
        let separator = rest.find(['=', ':'])?;
        let mut position = key_offset + separator + 1;
        let bytes = self.text.as_bytes();
        while position < bytes.len() && bytes[position] == b' ' {
            position += 1;
        }
        let after = &self.text[position..];
        for (opener, style) in [
            ("'''", StringStyle::Literal),
            ("\"\"\"", StringStyle::Escaped),
        ] {
            if after.starts_with(opener) {
                let mut start = position + 3;
                if self.text[start..].starts_with('\n') {
                    start += 1;
                }
                return Some((start, style));
            }
        }
        if after.starts_with('\'') {
            return Some((position + 1, StringStyle::Literal));
        }
        if after.starts_with('"') {
            return Some((position + 1, StringStyle::Escaped));
        }
        if after.starts_with(['|', '>']) {
            let newline = after.find('\n')?;
            let body = position + newline + 1;
            let indent = self.text[body..].len() - self.text[body..].trim_start_matches(' ').len();
            return Some((body + indent, StringStyle::Block { indent }));
        }
        Some((position, StringStyle::Literal))
    }

    fn find_key(&self, key: &str, from: usize) -> Option<usize> {
        let text = &self.text;
        let mut search = from;
        while let Some(found) = text[search..].find(key) {
            let start = search + found;
            let end = start + key.len();
            search = end;
            let before = text[..start].chars().next_back();
            let quoted_before = matches!(before, Some('"' | '\''));
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-') {
                continue;
            }
            let after = text[end..].trim_start_matches(['"', '\'']);
            let after = if quoted_before { after } else { &text[end..] };
            let after = after.trim_start_matches([' ', '\t']);
            // `]` ends a key only in a table header (`[connectors.web]`), never a quoted
            // value in a list (`inputs = ["web"]`).
            let ends_key = after.starts_with(['=', ':', '.'])
                || (after.starts_with(']') && matches!(before, Some('.' | '[')));
            if ends_key && !is_in_comment(text, start) {
                return Some(start);
            }
        }
        None
    }

    fn skip_elements(&self, index: usize, from: usize) -> Option<usize> {
        let text = &self.text[from..];
        let opener = [("{", 1), ("[[", 2), ("- ", 2)]
            .into_iter()
            .filter_map(|(opener, _)| text.find(opener).map(|at| (at, opener)))
            .min_by_key(|(at, _)| *at)?
            .1;
        if opener == "{" {
            return self.nth_inline_table(index, from);
        }
        let mut position = from;
        for _ in 0..=index {
            let found = self.text[position..].find(opener)?;
            position += found + opener.len();
        }
        Some(position - opener.len())
    }

    /// The `index`th inline table of the array that starts after `from`, counting only the
    /// array's own elements: a table nested in an element (`routes = { ... }`) and braces
    /// inside strings are not elements.
    fn nth_inline_table(&self, index: usize, from: usize) -> Option<usize> {
        let bytes = self.text.as_bytes();
        let mut position = from + self.text[from..].find('[')?;
        let mut depth = 0usize;
        let mut quote: Option<u8> = None;
        let mut seen = 0;
        while position < bytes.len() {
            let byte = bytes[position];
            match (quote, byte) {
                (Some(open), _) if byte == open => quote = None,
                (Some(b'"'), b'\\') => position += 1,
                (Some(_), _) => {}
                (None, b'"' | b'\'') => quote = Some(byte),
                (None, b'#') => {
                    position += self.text[position..].find('\n').unwrap_or(0);
                }
                (None, b'[' | b'{') => {
                    if byte == b'{' && depth == 1 {
                        if seen == index {
                            return Some(position);
                        }
                        seen += 1;
                    }
                    depth += 1;
                }
                (None, b']' | b'}') => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return None;
                    }
                }
                (None, _) => {}
            }
            position += 1;
        }
        None
    }
}

/// How a string value is written, for mapping offsets in its parsed text back to the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StringStyle {
    /// Every character stands for itself (`'...'`, `'''...'''`, YAML plain).
    Literal,
    /// Backslash escapes (`"..."`, `"""..."""`).
    Escaped,
    /// A YAML block (`|`, `>`): each line loses `indent` leading spaces.
    Block { indent: usize },
}

/// (bytes in the file, bytes in the parsed string) of the escape that `text` starts with.
fn escape_lengths(text: &str) -> (usize, usize) {
    match text.chars().nth(1) {
        Some(code @ ('u' | 'U')) => {
            let digits = if code == 'u' { 4 } else { 8 };
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

fn is_in_comment(text: &str, offset: usize) -> bool {
    let line_start = text[..offset].rfind('\n').map_or(0, |newline| newline + 1);
    text[line_start..offset].contains('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml(text: &str) -> SourceFile {
        SourceFile::new(PathBuf::from("t.toml"), text.to_owned(), Format::Toml)
    }

    #[test]
    fn locates_key_inside_dotted_table_header() {
        let file = toml("[connectors.web]\nkind = \"http_server\"\nadress = \"x\"\n");
        let path = parse_path("connectors.web.adress");
        assert_eq!(file.line_column(file.locate(&path)), (3, 1));
    }

    #[test]
    fn nested_tables_and_strings_do_not_count_as_elements() {
        let file = toml(
            "[pipelines.p]\nsteps = [\n  { kind = \"route\", routes = { a = '{x}' } },\n  { kind = \"partition\", key = \".a\" },\n  { kind = \"partition\", key = \".b\" },\n]\n",
        );
        let offset = file.locate(&parse_path("pipelines.p.steps[2].key"));
        assert_eq!(file.line_column(offset), (5, 25));
    }

    #[test]
    fn locates_key_in_nth_inline_table() {
        let file = toml(
            "[pipelines.p]\nsteps = [\n  { kind = \"filter\", condition = 'a' },\n  { kind = \"transform\", source = '.x = 1' },\n]\n",
        );
        let offset = file.locate(&parse_path("pipelines.p.steps[1].source"));
        assert_eq!(file.line_column(offset), (4, 25));
        let start = file.offset_in_string_value(offset, 0).expect("value");
        assert_eq!(&file.text[start..start + 6], ".x = 1");
    }

    #[test]
    fn quoted_input_reference_is_not_taken_for_a_table_key() {
        let file =
            toml("[connectors.sink]\ninputs = [\"web\"]\n\n[connectors.web]\naddress = \"bad\"\n");
        let offset = file.locate(&parse_path("connectors.web.address"));
        assert_eq!(file.line_column(offset), (5, 1));
    }

    #[test]
    fn line_column_of_an_offset_inside_a_character_is_safe() {
        let file = toml("a = \"é\"\n");
        assert_eq!(file.line_column(6), (1, 6));
    }

    #[test]
    fn offsets_walk_over_escapes_and_block_indentation() {
        // Parsed: say("hi") + nope()  -> `nope` at parsed byte 12.
        let file = toml(r#"source = "say(\"hi\") + nope()""#);
        let raw = file.offset_in_string_value(0, 12).expect("offset");
        assert_eq!(&file.text[raw..raw + 4], "nope");
        // Parsed: ".a = 1\n.b = nope()\n" -> `nope` at parsed byte 12.
        let yaml = SourceFile::new(
            PathBuf::from("c.yaml"),
            "source: |\n  .a = 1\n  .b = nope()\n".to_owned(),
            Format::Yaml,
        );
        let raw = yaml.offset_in_string_value(0, 12).expect("offset");
        assert_eq!(&yaml.text[raw..raw + 4], "nope");
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
