//! [`Expression`]: one VRL program used outside a pipeline (a destination's `marshal`, the
//! `{{ ... }}` parts of a request path), compiled at build time and run on one event.

use vrl::value::Value;

use crate::error::VrlDiagnostic;
use crate::functions::function_registry;
use crate::program::{CompiledProgram, ProgramRole, RunOutcome, VrlRuntime};

/// A compiled program whose *result* is what its user wants. It reads the event (and its
/// `%tightbeam` metadata) and never changes it.
#[derive(Clone)]
pub struct Expression {
    program: CompiledProgram,
}

/// The VRL runtime expressions run with; one per task, reused for every event.
#[derive(Default)]
pub struct ExpressionRuntime(VrlRuntime);

impl Expression {
    /// Compiles `source`, read-only; diagnostics name `location`.
    ///
    /// # Errors
    ///
    /// VRL's diagnostics, with the offset of the first problem in `source`.
    pub fn compile(source: &str, location: String) -> Result<Self, VrlDiagnostic> {
        let functions = function_registry(&[]);
        CompiledProgram::compile(source, &functions, location, &[], ProgramRole::Expression)
            .map(|program| Self { program })
    }

    /// The program's result on `value`; the metadata view is built only if it is read.
    ///
    /// # Errors
    ///
    /// The program's run-time error.
    pub fn evaluate(
        &self,
        value: &Value,
        metadata: impl FnOnce() -> Value,
        runtime: &mut ExpressionRuntime,
    ) -> Result<Value, String> {
        match self.program.run(value.clone(), metadata, &mut runtime.0) {
            RunOutcome::Finished { result, .. } => Ok(result),
            RunOutcome::Failed { message, .. } => Err(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Value {
        let mut object = vrl::value::ObjectMap::new();
        object.insert("user_id".into(), Value::from(42));
        Value::Object(object)
    }

    #[test]
    fn an_expression_gives_its_result_and_leaves_the_event_alone() {
        let expression =
            Expression::compile(r#"{ "id": .user_id }"#, "marshal".to_owned()).expect("compiles");
        let mut runtime = ExpressionRuntime::default();
        let result = expression
            .evaluate(&event(), || Value::Null, &mut runtime)
            .expect("runs");
        assert_eq!(result.to_string(), r#"{ "id": 42 }"#);
    }

    #[test]
    fn an_expression_cannot_change_the_event() {
        let error = Expression::compile(".user_id = 1", "marshal".to_owned())
            .err()
            .expect("read-only");
        assert!(
            error.message.contains("cannot change it"),
            "{}",
            error.message
        );
    }
}
