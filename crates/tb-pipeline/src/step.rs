//! The interface every step implements, and what a step can do with an event.
//!
//! A step receives events one at a time with the index of the pipeline input they came from,
//! and through its [`StepContext`] passes each on to the next step, sends it to a port,
//! fails it to `_errors`, drops it as done, or writes it to a lane. A step may keep events
//! and state between batches, ask for a timer ([`Step::next_deadline`]) and emit when it
//! fires ([`Step::on_timer`]), and must give back everything it holds on
//! [`Step::flush`] (drain and reload). It may declare ports of its own, which the pipeline
//! adds to its [`OutputPorts`] before `_unmatched` and `_errors`.
//!
//! Design choice: the runner moves whole batches through one step at a time (a step's
//! output becomes the next step's input buffer), so the per-event cost of the interface is
//! one dynamic call and one push into a reused vector.

use std::time::Instant;

use tb_event::{AckStatus, Event, KeyString, ObjectMap, Value};

use crate::pipeline::{OutputPorts, Outputs, PipelineCounts, PortId};
use crate::program::VrlRuntime;

/// One step of a compiled pipeline.
pub(crate) trait Step: Send {
    /// Names of ports this step adds to the pipeline (`_late`, `_timeout`...). Steps that
    /// name the same port share it.
    fn extra_ports(&self) -> &'static [&'static str] {
        &[]
    }

    /// Learns the [`PortId`]s of the pipeline, once its ports are known.
    fn bind_ports(&mut self, _ports: &OutputPorts) {}

    /// Whether this step keeps events or hands them to lanes. An event that an earlier
    /// route step did not match gets its `_unmatched` copy as it enters such a step, since
    /// it will not reach the end of this pipeline as itself.
    fn holds_events(&self) -> bool {
        false
    }

    /// Handles one event that came from pipeline input `input`; every event must leave
    /// through `context` (or be kept, to leave later).
    fn process(&mut self, event: Event, input: usize, context: &mut StepContext<'_>);

    /// When this step next wants [`Step::on_timer`]; `None` when it holds nothing timed.
    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// Emits whatever is due at `now`.
    fn on_timer(&mut self, _now: Instant, _context: &mut StepContext<'_>) {}

    /// Emits everything this step holds.
    fn flush(&mut self, _context: &mut StepContext<'_>) {}

    /// A copy with the same settings and none of the state, for the lanes of a
    /// partitioned pipeline.
    fn fresh_copy(&self) -> Box<dyn Step>;
}

/// An event between steps, with where it came from and whether it owes `_unmatched` a copy.
pub(crate) struct Flow {
    pub(crate) event: Event,
    pub(crate) input: usize,
    pub(crate) unmatched: bool,
}

/// What a step can do with events; built by the runner for each step and batch.
pub(crate) struct StepContext<'a> {
    /// The pipeline's VRL runtime, for steps that run programs.
    pub(crate) vrl: &'a mut VrlRuntime,
    pub(crate) next: &'a mut Vec<Flow>,
    pub(crate) outputs: &'a mut Outputs,
    pub(crate) counts: &'a mut PipelineCounts,
    pub(crate) ports: &'a OutputPorts,
    pub(crate) pipeline_id: &'a str,
    /// Position of the step in the pipeline's config, for error envelopes.
    pub(crate) step_index: usize,
    /// The time this batch or timer call is handled at.
    pub(crate) now: Instant,
    /// Input and `_unmatched` debt of the event being processed; events passed on inherit
    /// them.
    pub(crate) input: usize,
    pub(crate) unmatched: bool,
}

impl StepContext<'_> {
    /// The time this batch or timer call is handled at: the same for every event of it.
    pub(crate) fn now(&self) -> Instant {
        self.now
    }

    /// Passes `event` on to the next step, from the same input as the event processed.
    pub(crate) fn pass(&mut self, event: Event) {
        self.next.push(Flow {
            event,
            input: self.input,
            unmatched: self.unmatched,
        });
    }

    /// Passes `event` on, noting that a route step did not match it.
    pub(crate) fn pass_unmatched(&mut self, event: Event) {
        self.next.push(Flow {
            event,
            input: self.input,
            unmatched: true,
        });
    }

    /// Passes on an event a step held, as having come from pipeline input `input`.
    pub(crate) fn pass_from(&mut self, input: usize, event: Event) {
        self.next.push(Flow {
            event,
            input,
            unmatched: false,
        });
    }

    /// Sends `event` to `port`, out of the pipeline.
    pub(crate) fn send(&mut self, port: PortId, event: Event) {
        if port != self.ports.errors() && port != self.ports.unmatched() {
            self.counts.output += 1;
        }
        self.outputs.ports[port].push(event);
    }

    /// Writes `event` to `lane` when the pipeline is the head of a split pipeline; when it
    /// is not split, every step runs on this task, so the event simply goes on.
    pub(crate) fn send_to_lane(&mut self, lane: usize, event: Event) {
        match self.outputs.lanes.len() {
            0 => self.pass(event),
            lanes => self.outputs.lanes[lane % lanes].push(event),
        }
    }

    /// Drops `event` as done (a filter said no), counting it.
    pub(crate) fn drop_done(&mut self, event: Event) {
        self.counts.dropped += 1;
        event.complete(AckStatus::Delivered);
    }

    /// Sends `event`, as it entered this step, to `_errors` with `message`.
    pub(crate) fn fail(&mut self, mut event: Event, message: String) {
        self.counts.errors += 1;
        let original = std::mem::replace(&mut event.value, Value::Null);
        event.value = error_envelope(self.pipeline_id, self.step_index, message, original);
        self.outputs.ports[self.ports.errors()].push(event);
    }
}

/// The shape of an event on `<pipeline>._errors`: the reason, and the event as it entered
/// the failing step, so a person can read it and replay it.
fn error_envelope(pipeline: &str, step_index: usize, message: String, original: Value) -> Value {
    let mut error = ObjectMap::new();
    error.insert(KeyString::from("message"), Value::from(message));
    error.insert(KeyString::from("pipeline"), Value::from(pipeline));
    error.insert(KeyString::from("step"), Value::from(step_index as i64));
    let mut envelope = ObjectMap::new();
    envelope.insert(KeyString::from("error"), Value::Object(error));
    envelope.insert(KeyString::from("event"), original);
    Value::Object(envelope)
}
