//! `filter`: keeps events for which a read-only VRL condition is `true`; the others are
//! dropped, counted, and acknowledged as delivered.

use tb_event::{Event, Value};

use crate::program::{CompiledProgram, RunOutcome};
use crate::step::{Step, StepContext};

/// Tests its condition on every event.
#[derive(Clone)]
pub(crate) struct FilterStep {
    condition: CompiledProgram,
}

impl FilterStep {
    pub(crate) fn new(condition: CompiledProgram) -> Self {
        Self { condition }
    }
}

impl Step for FilterStep {
    fn process(&mut self, mut event: Event, _input: usize, context: &mut StepContext<'_>) {
        let value = std::mem::replace(&mut event.value, Value::Null);
        let meta = &event.meta;
        match self
            .condition
            .run(value, || meta.to_vrl_metadata(), context.vrl)
        {
            RunOutcome::Finished { value, result } => {
                event.value = value;
                match result {
                    Value::Boolean(true) => context.pass(event),
                    Value::Boolean(false) => context.drop_done(event),
                    // The build only checks that a boolean is possible (`.flag` may hold
                    // anything), so the other kinds are still answered here.
                    other => {
                        let message = format!(
                            "filter condition returned {}, expected a boolean",
                            other.kind()
                        );
                        context.fail(event, message);
                    }
                }
            }
            RunOutcome::Failed { value, message } => {
                event.value = value;
                context.fail(event, message);
            }
        }
    }

    fn fresh_copy(&self) -> Box<dyn Step> {
        Box::new(self.clone())
    }
}
