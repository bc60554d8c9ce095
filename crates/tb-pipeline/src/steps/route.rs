//! `route`: sends a copy of the event to each route whose read-only condition is `true`
//! and takes it out of the main flow; an event matching none goes on, owing `_unmatched`
//! a copy.

use tb_event::{Event, Value};

use crate::pipeline::PortId;
use crate::program::{CompiledProgram, RunOutcome};
use crate::step::{Step, StepContext};

/// Tests every route's condition on every event.
#[derive(Clone)]
pub(crate) struct RouteStep {
    routes: Vec<(PortId, CompiledProgram)>,
    // Reused between events so matching allocates nothing after the first batch.
    matched: Vec<PortId>,
}

impl RouteStep {
    pub(crate) fn new(routes: Vec<(PortId, CompiledProgram)>) -> Self {
        Self {
            routes,
            matched: Vec::new(),
        }
    }
}

impl Step for RouteStep {
    fn process(&mut self, mut event: Event, _input: usize, context: &mut StepContext<'_>) {
        // The value passes through each condition in turn rather than being cloned for
        // each: a condition reads the event, it is not a copy of it.
        let mut value = std::mem::replace(&mut event.value, Value::Null);
        self.matched.clear();
        for (port, program) in &self.routes {
            let meta = &event.meta;
            match program.run(value, || meta.to_vrl_metadata(), context.vrl) {
                RunOutcome::Finished {
                    value: after,
                    result,
                } => {
                    value = after;
                    if result == Value::Boolean(true) {
                        self.matched.push(*port);
                    }
                }
                RunOutcome::Failed {
                    value: original,
                    message,
                } => {
                    event.value = original;
                    return context.fail(event, message);
                }
            }
        }
        event.value = value;
        match self.matched.split_last() {
            Some((last, rest)) => {
                for port in rest {
                    context.send(*port, event.fork());
                }
                context.send(*last, event);
            }
            None => context.pass_unmatched(event),
        }
    }

    fn fresh_copy(&self) -> Box<dyn Step> {
        Box::new(self.clone())
    }
}
