//! `transform`: a VRL program that rewrites the event; an array at the root becomes one
//! event per element.

use tb_event::{AckStatus, Event, Value};

use crate::program::{CompiledProgram, RunOutcome};
use crate::step::{Step, StepContext};

/// Runs its program on every event.
#[derive(Clone)]
pub(crate) struct TransformStep {
    program: CompiledProgram,
}

impl TransformStep {
    pub(crate) fn new(program: CompiledProgram) -> Self {
        Self { program }
    }
}

impl Step for TransformStep {
    fn process(&mut self, mut event: Event, _input: usize, context: &mut StepContext<'_>) {
        let value = std::mem::replace(&mut event.value, Value::Null);
        let meta = &event.meta;
        match self
            .program
            .run(value, || meta.to_vrl_metadata(), context.vrl)
        {
            RunOutcome::Finished {
                value: Value::Array(values),
                ..
            } => {
                if values.is_empty() {
                    // An empty array leaves nothing: the event is done, like a filtered
                    // one, and counted the same way.
                    context.counts.dropped += 1;
                }
                for value in values {
                    let mut copy = event.fork();
                    copy.value = value;
                    context.pass(copy);
                }
                event.complete(AckStatus::Delivered);
            }
            RunOutcome::Finished { value, .. } => {
                event.value = value;
                context.pass(event);
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
