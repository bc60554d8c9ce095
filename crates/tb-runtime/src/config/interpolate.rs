//! `${VAR}` and `${VAR:-default}` substitution from the environment, before parsing, so it
//! works the same in TOML and YAML. `$${` writes a literal `${`.

/// A `${VAR}` with no value and no default, at a byte offset of the original text.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct MissingVariable {
    pub(super) name: String,
    pub(super) offset: usize,
}

/// One stretch of the original text that substitution replaced, for mapping positions in
/// the substituted text back to the file the user wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Substitution {
    /// Where the replacement starts in the substituted text.
    pub substituted_start: usize,
    /// Its length there.
    pub substituted_len: usize,
    /// Where the reference (`${...}`) starts in the original text.
    pub original_start: usize,
    /// Its length there.
    pub original_len: usize,
}

/// The substituted text and where it differs from the original.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Interpolated {
    pub(super) text: String,
    pub(super) substitutions: Vec<Substitution>,
}

/// Substitutes every reference in `text`, looking names up with `lookup`.
pub(super) fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Interpolated, Vec<MissingVariable>> {
    let mut substitutions = Vec::new();
    let mut output = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    let mut consumed = 0;
    while let Some(start) = rest.find("${") {
        if start > 0 && rest.as_bytes()[start - 1] == b'$' {
            output.push_str(&rest[..start - 1]);
            substitutions.push(Substitution {
                substituted_start: output.len(),
                substituted_len: 2,
                original_start: consumed + start - 1,
                original_len: 3,
            });
            output.push_str("${");
            consumed += start + 2;
            rest = &rest[start + 2..];
            continue;
        }
        output.push_str(&rest[..start]);
        let Some(length) = rest[start..].find('}') else {
            output.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let reference = &rest[start + 2..start + length];
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        let substituted_start = output.len();
        match lookup(name).filter(|value| !value.is_empty() || default.is_none()) {
            Some(value) => output.push_str(&value),
            None => match default {
                Some(default) => output.push_str(default),
                None => missing.push(MissingVariable {
                    name: name.to_owned(),
                    offset: consumed + start,
                }),
            },
        }
        substitutions.push(Substitution {
            substituted_start,
            substituted_len: output.len() - substituted_start,
            original_start: consumed + start,
            original_len: length + 1,
        });
        consumed += start + length + 1;
        rest = &rest[start + length + 1..];
    }
    output.push_str(rest);
    if missing.is_empty() {
        Ok(Interpolated {
            text: output,
            substitutions,
        })
    } else {
        Err(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PORT").then(|| "9000".to_owned())
    }

    #[test]
    fn substitutes_set_variables_and_defaults() {
        let text = "a = \"${PORT}\"\nb = \"${HOST:-127.0.0.1}\"";
        assert_eq!(
            interpolate(text, env).expect("no missing").text,
            "a = \"9000\"\nb = \"127.0.0.1\""
        );
    }

    #[test]
    fn reports_unset_variable_without_default_at_its_offset() {
        let missing = interpolate("x = 1\ny = \"${NOPE}\"", env).expect_err("missing");
        assert_eq!(
            missing,
            vec![MissingVariable {
                name: "NOPE".to_owned(),
                offset: 11
            }]
        );
    }

    #[test]
    fn double_dollar_escapes() {
        assert_eq!(
            interpolate("v = '$${PORT}'", env).expect("ok").text,
            "v = '${PORT}'"
        );
    }
}
