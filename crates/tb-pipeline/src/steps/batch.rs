//! `batch`: gathers events into one event `{"events": [...], "count": n}` per group.
//!
//! One batch is open per group: the values of the `group_by` expressions, and with
//! `per_stream` the source stream `(connector, stream)`. A batch closes when it reaches
//! `max_events`, when the next event would take it past `max_bytes` (it closes first, and
//! the event starts the next batch; an event of `max_bytes` or more makes a batch alone),
//! `timeout` after its first event, or on flush. The batch event carries the first event's
//! metadata and a handle joining every original's acknowledgement, so completing it
//! completes them all with the same outcome.
//!
//! Design choice: sizes are an estimate of the JSON length ([`estimated_json_bytes`]),
//! computed only when `max_bytes` is set, so a batch by count costs no serialisation.
//! Deadlines are kept in opening order (the timeout is the same for every batch and time
//! does not go back), so the next deadline is the front of a queue; a batch that closed
//! early leaves a stale entry there, which costs at most one early timer call.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tb_event::{AckHandle, ComponentId, Event, EventMeta, KeyString, ObjectMap, StreamId, Value};

use crate::program::{CompiledProgram, RunOutcome};
use crate::step::{Step, StepContext};

/// The settings of a batch step, checked at build time.
#[derive(Clone)]
pub(crate) struct BatchSettings {
    // Invariant: at least 1.
    pub(crate) max_events: usize,
    pub(crate) max_bytes: Option<usize>,
    pub(crate) timeout: Duration,
    // Invariant: names are distinct and neither `events` nor `count`.
    pub(crate) group_by: Vec<(String, CompiledProgram)>,
    pub(crate) per_stream: bool,
}

/// Which open batch an event joins.
#[derive(Clone, PartialEq, Eq, Hash)]
struct BatchKey {
    stream: Option<(ComponentId, StreamId)>,
    group: Vec<Value>,
}

struct OpenBatch {
    // Distinguishes this batch from an earlier one of the same key in the deadline queue.
    serial: u64,
    input: usize,
    // Invariant: the first event's metadata.
    meta: EventMeta,
    values: Vec<Value>,
    acks: Vec<AckHandle>,
    bytes: usize,
}

/// Holds open batches between pipeline batches.
pub(crate) struct BatchStep {
    settings: BatchSettings,
    open: HashMap<BatchKey, OpenBatch>,
    // Invariant: in opening order, so deadlines are non-decreasing; entries whose serial no
    // longer matches an open batch are stale and skipped.
    deadlines: VecDeque<(Instant, BatchKey, u64)>,
    next_serial: u64,
}

impl BatchStep {
    pub(crate) fn new(settings: BatchSettings) -> Self {
        Self {
            settings,
            open: HashMap::new(),
            deadlines: VecDeque::new(),
            next_serial: 0,
        }
    }

    /// Evaluates the `group_by` expressions; the error names the failing one.
    fn group_of(
        &self,
        event: &mut Event,
        context: &mut StepContext<'_>,
    ) -> Result<Vec<Value>, String> {
        let mut group = Vec::with_capacity(self.settings.group_by.len());
        for (name, program) in &self.settings.group_by {
            let value = std::mem::replace(&mut event.value, Value::Null);
            let meta = &event.meta;
            match program.run(value, || meta.to_vrl_metadata(), context.vrl) {
                RunOutcome::Finished { value, result } => {
                    event.value = value;
                    group.push(result);
                }
                RunOutcome::Failed { value, message } => {
                    event.value = value;
                    return Err(format!("batch group_by `{name}` failed: {message}"));
                }
            }
        }
        Ok(group)
    }

    /// Closes the open batch of `key`, if any, and passes its event on.
    fn close(&mut self, key: &BatchKey, context: &mut StepContext<'_>) {
        let Some((key, batch)) = self.open.remove_entry(key) else {
            return;
        };
        let mut value = ObjectMap::new();
        value.insert(
            KeyString::from("count"),
            Value::from(batch.values.len() as i64),
        );
        value.insert(KeyString::from("events"), Value::Array(batch.values));
        for ((name, _), group_value) in self.settings.group_by.iter().zip(key.group) {
            value.insert(KeyString::from(name.as_str()), group_value);
        }
        let event = Event::new(
            Value::Object(value),
            batch.meta,
            AckHandle::join(batch.acks),
        );
        context.pass_from(batch.input, event);
    }
}

impl Step for BatchStep {
    fn holds_events(&self) -> bool {
        true
    }

    fn process(&mut self, mut event: Event, input: usize, context: &mut StepContext<'_>) {
        let group = match self.group_of(&mut event, context) {
            Ok(group) => group,
            Err(message) => return context.fail(event, message),
        };
        let key = BatchKey {
            stream: self
                .settings
                .per_stream
                .then(|| (event.meta.id.connector.clone(), event.meta.id.stream)),
            group,
        };
        let size = match self.settings.max_bytes {
            Some(_) => estimated_json_bytes(&event.value),
            None => 0,
        };
        if let Some(max_bytes) = self.settings.max_bytes
            && let Some(batch) = self.open.get(&key)
            && batch.bytes + size > max_bytes
        {
            self.close(&key, context);
        }
        let (value, meta, ack) = event.into_parts();
        let now = context.now();
        let Self {
            settings,
            open,
            deadlines,
            next_serial,
        } = self;
        let batch = open.entry(key.clone()).or_insert_with(|| {
            let serial = *next_serial;
            *next_serial += 1;
            deadlines.push_back((now + settings.timeout, key.clone(), serial));
            OpenBatch {
                serial,
                input,
                meta,
                values: Vec::new(),
                acks: Vec::new(),
                bytes: 0,
            }
        });
        batch.values.push(value);
        batch.acks.push(ack);
        batch.bytes += size;
        let full = batch.values.len() >= self.settings.max_events
            || self
                .settings
                .max_bytes
                .is_some_and(|max_bytes| batch.bytes >= max_bytes);
        if full {
            self.close(&key, context);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|(deadline, _, _)| *deadline)
    }

    fn on_timer(&mut self, now: Instant, context: &mut StepContext<'_>) {
        while let Some((deadline, _, _)) = self.deadlines.front()
            && *deadline <= now
        {
            let Some((_, key, serial)) = self.deadlines.pop_front() else {
                break;
            };
            if self
                .open
                .get(&key)
                .is_some_and(|batch| batch.serial == serial)
            {
                self.close(&key, context);
            }
        }
    }

    fn flush(&mut self, context: &mut StepContext<'_>) {
        while let Some((_, key, serial)) = self.deadlines.pop_front() {
            if self
                .open
                .get(&key)
                .is_some_and(|batch| batch.serial == serial)
            {
                self.close(&key, context);
            }
        }
        // Every open batch has a live queue entry, so nothing should be left; if the
        // invariant were broken, the events still leave rather than being dropped.
        let keys: Vec<BatchKey> = self.open.keys().cloned().collect();
        for key in keys {
            self.close(&key, context);
        }
    }

    fn fresh_copy(&self) -> Box<dyn Step> {
        Box::new(Self::new(self.settings.clone()))
    }
}

/// About the length of `value` as compact JSON: exact for structure, integers, booleans,
/// null and strings without escapes; floats count 16 and timestamps 32 (a quoted RFC 3339
/// time with fraction). Cheap: one walk of the value, no allocation.
pub(crate) fn estimated_json_bytes(value: &Value) -> usize {
    match value {
        Value::Bytes(bytes) => bytes.len() + 2,
        Value::String(string) => string.len() + 2,
        Value::Regex(regex) => regex.as_str().len() + 2,
        Value::Integer(integer) => {
            let digits = integer
                .unsigned_abs()
                .checked_ilog10()
                .map_or(1, |log| log as usize + 1);
            digits + usize::from(*integer < 0)
        }
        Value::Float(_) => 16,
        Value::Boolean(true) => 4,
        Value::Boolean(false) => 5,
        Value::Timestamp(_) => 32,
        Value::Null => 4,
        Value::Array(values) => {
            2 + values.len().saturating_sub(1)
                + values.iter().map(estimated_json_bytes).sum::<usize>()
        }
        Value::Object(fields) => {
            2 + fields.len().saturating_sub(1)
                + fields
                    .iter()
                    .map(|(key, value)| key.len() + 3 + estimated_json_bytes(value))
                    .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests;
