//! Request path templates: `/users/{{ .user_id }}`. Each `{{ ... }}` is a read-only VRL
//! expression over the event; its value is percent-encoded, so an event can fill a path
//! segment but never add one, change the query, or reach another host.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tb_pipeline::{Expression, ExpressionRuntime, VrlDiagnostic};
use vrl::value::Value;

/// Every byte but the unreserved ones of RFC 3986 is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

enum Part {
    Text(String),
    Value {
        source: String,
        expression: Box<Expression>,
    },
}

/// A compiled template.
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Compiles `text`; diagnostics name `location` and point into the text.
    ///
    /// # Errors
    ///
    /// An unclosed `{{`, or a VRL problem in one of the expressions.
    pub fn compile(text: &str, location: &str) -> Result<Self, VrlDiagnostic> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let Some(length) = rest[start..].find("}}") else {
                return Err(VrlDiagnostic {
                    location: location.to_owned(),
                    offset: Some(offset + start),
                    message: "`{{` is not closed by `}}`".to_owned(),
                });
            };
            let source = rest[start + 2..start + length].trim();
            let expression =
                Expression::compile(source, location.to_owned()).map_err(|mut problem| {
                    problem.offset = Some(offset + start + 2);
                    problem
                })?;
            parts.push(Part::Value {
                source: source.to_owned(),
                expression: Box::new(expression),
            });
            offset += start + length + 2;
            rest = &rest[start + length + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The template filled from `event`.
    ///
    /// # Errors
    ///
    /// Which expression failed or gave a value that is not a string, number or boolean.
    pub fn render(
        &self,
        event: &Value,
        metadata: &dyn Fn() -> Value,
        runtime: &mut ExpressionRuntime,
    ) -> Result<String, String> {
        let mut rendered = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => rendered.push_str(text),
                Part::Value { source, expression } => {
                    let value = expression
                        .evaluate(event, metadata, runtime)
                        .map_err(|error| format!("`{{{{ {source} }}}}` failed: {error}"))?;
                    let text = match &value {
                        Value::Bytes(_) | Value::String(_) => value
                            .to_str_lossy()
                            .map(|text| text.into_owned())
                            .unwrap_or_default(),
                        Value::Integer(_) | Value::Float(_) | Value::Boolean(_) => {
                            value.to_string()
                        }
                        other => {
                            return Err(format!(
                                "`{{{{ {source} }}}}` gave {}, not a string or number",
                                other.kind_str()
                            ));
                        }
                    };
                    if text.is_empty() {
                        return Err(format!("`{{{{ {source} }}}}` gave an empty string"));
                    }
                    rendered.extend(utf8_percent_encode(&text, SEGMENT));
                }
            }
        }
        Ok(rendered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, event: serde_json::Value) -> Result<String, String> {
        let template = Template::compile(template, "path").expect("compiles");
        let event = Value::from(event);
        template.render(&event, &|| Value::Null, &mut ExpressionRuntime::default())
    }

    #[test]
    fn values_fill_the_path_and_cannot_leave_their_segment() {
        let event = serde_json::json!({ "id": 42, "name": "a/b?c=../d" });
        assert_eq!(
            render("/users/{{ .id }}", event.clone()).as_deref(),
            Ok("/users/42")
        );
        assert_eq!(
            render("/n/{{.name}}/x", event.clone()).as_deref(),
            Ok("/n/a%2Fb%3Fc%3D..%2Fd/x")
        );
        assert!(render("/users/{{ .missing }}", event).is_err());
    }

    #[test]
    fn an_unclosed_template_is_a_problem_at_its_place() {
        let Err(problem) = Template::compile("/a/{{ .id", "path") else {
            panic!("should not compile");
        };
        assert_eq!(problem.offset, Some(3));
    }
}
