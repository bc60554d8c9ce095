//! Field templates: `orders.{{ .region }}.{{ .kind }}`, a routing key, subject or topic made
//! from the event a sink sends. Each `{{ }}` holds a path into the event (`.a.b`, or `.` for
//! the whole value when it is a string); strings go in as they are, numbers and booleans as
//! written. Not a language: a path lookup, checked when the connector is built, so sending
//! costs no interpreter.

use tb_event::Value;

use super::errors::BuildError;

/// A compiled template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTemplate {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    /// The keys to follow from the event's root.
    Path(Vec<String>),
}

impl FieldTemplate {
    /// Compiles `text`, for the config key `key`.
    ///
    /// # Errors
    ///
    /// An unclosed `{{`, or a `{{ }}` that is not a path such as `.user.id`.
    pub fn compile(key: &str, text: &str) -> Result<Self, BuildError> {
        let wrong = |message: String| BuildError {
            path: key.to_owned(),
            message,
        };
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let Some(length) = rest[start..].find("}}") else {
                return Err(wrong(format!("`{{{{` is not closed by `}}}}` in `{text}`")));
            };
            let path = rest[start + 2..start + length].trim();
            parts.push(Part::Path(parse_path(path).ok_or_else(|| {
                wrong(format!(
                    "`{{{{ {path} }}}}` must be a path into the event, such as `{{{{ .user.id }}}}`"
                ))
            })?));
            rest = &rest[start + length + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The text for `value`.
    ///
    /// # Errors
    ///
    /// Why a path gives nothing to write (missing, null, an object or an array).
    pub fn render(&self, value: &Value) -> Result<String, String> {
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Text(fixed) => text.push_str(fixed),
                Part::Path(keys) => {
                    let found = keys
                        .iter()
                        .try_fold(value, |value, key| match value {
                            Value::Object(object) => object.get(key.as_str()),
                            _ => None,
                        })
                        .ok_or_else(|| format!("the event has no .{}", keys.join(".")))?;
                    if let Some(string) = found.to_str_lossy() {
                        text.push_str(&string);
                        continue;
                    }
                    match found {
                        Value::Integer(number) => text.push_str(&number.to_string()),
                        Value::Float(number) => text.push_str(&number.to_string()),
                        Value::Boolean(flag) => text.push_str(if *flag { "true" } else { "false" }),
                        _ => {
                            return Err(format!(
                                ".{} is not a string, number or boolean",
                                keys.join(".")
                            ));
                        }
                    }
                }
            }
        }
        Ok(text)
    }
}

/// `.a.b` as `["a", "b"]`, `.` as no keys; `None` for anything else.
fn parse_path(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix('.')?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    rest.split('.')
        .map(|key| {
            let valid = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
            valid.then(|| key.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> Value {
        let value: serde_json::Value = serde_json::from_str(json).expect("json");
        Value::from(value)
    }

    #[test]
    fn paths_fill_the_text_and_fixed_text_stays() {
        let template =
            FieldTemplate::compile("routing_key", "orders.{{ .region }}.{{.n}}").expect("compiles");
        let rendered = template.render(&event(r#"{"region":"eu","n":7}"#));
        assert_eq!(rendered.as_deref(), Ok("orders.eu.7"));
        let plain = FieldTemplate::compile("k", "plain").expect("compiles");
        assert_eq!(plain.render(&event("{}")).as_deref(), Ok("plain"));
    }

    #[test]
    fn a_missing_or_unwritable_value_is_an_error_naming_its_path() {
        let template = FieldTemplate::compile("k", "{{ .user.id }}").expect("compiles");
        assert_eq!(
            template.render(&event(r#"{"user":{}}"#)),
            Err("the event has no .user.id".to_owned())
        );
        let wrong = template.render(&event(r#"{"user":{"id":{"a":1}}}"#));
        assert!(wrong.is_err_and(|error| error.contains("not a string")));
    }

    #[test]
    fn a_template_that_is_not_a_path_names_its_key() {
        for text in ["{{ .a", "{{ upcase(.a) }}", "{{ a }}"] {
            let error = FieldTemplate::compile("routing_key", text).expect_err(text);
            assert_eq!(error.path, "routing_key", "{text}");
        }
    }
}
