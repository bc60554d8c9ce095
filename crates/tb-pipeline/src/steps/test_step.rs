//! A step that exists only in tests, to show what the step interface allows: state kept
//! between batches, a timer, a port of its own and the input an event came from.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tb_event::{Event, KeyString, Value};

use crate::pipeline::{OutputPorts, PortId};
use crate::step::{Step, StepContext};

/// How long [`DelayStep`] holds an event.
pub(crate) const DELAY: Duration = Duration::from_millis(10);

/// Holds each event for [`DELAY`], numbering them in arrival order (`.seen`); events from
/// input 1 go straight to its own `_late` port.
pub(crate) struct DelayStep {
    seen: i64,
    held: VecDeque<(Instant, usize, Event)>,
    late_port: Option<PortId>,
}

impl DelayStep {
    pub(crate) fn new() -> Self {
        Self {
            seen: 0,
            held: VecDeque::new(),
            late_port: None,
        }
    }
}

impl Step for DelayStep {
    fn extra_ports(&self) -> &'static [&'static str] {
        &["_late"]
    }

    fn bind_ports(&mut self, ports: &OutputPorts) {
        self.late_port = ports.find("_late");
    }

    fn holds_events(&self) -> bool {
        true
    }

    fn process(&mut self, mut event: Event, input: usize, context: &mut StepContext<'_>) {
        self.seen += 1;
        if let Value::Object(fields) = &mut event.value {
            fields.insert(KeyString::from("seen"), Value::from(self.seen));
        }
        match (input, self.late_port) {
            (1, Some(port)) => context.send(port, event),
            _ => self.held.push_back((context.now() + DELAY, input, event)),
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.held.front().map(|(deadline, _, _)| *deadline)
    }

    fn on_timer(&mut self, now: Instant, context: &mut StepContext<'_>) {
        while self
            .held
            .front()
            .is_some_and(|(deadline, _, _)| *deadline <= now)
        {
            if let Some((_, input, event)) = self.held.pop_front() {
                context.pass_from(input, event);
            }
        }
    }

    fn flush(&mut self, context: &mut StepContext<'_>) {
        for (_, input, event) in self.held.drain(..) {
            context.pass_from(input, event);
        }
    }

    fn fresh_copy(&self) -> Box<dyn Step> {
        Box::new(Self::new())
    }
}
