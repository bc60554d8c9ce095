//! `partition`: computes a key per event and writes the event to lane `hash(key) % lanes`,
//! so the steps after it can run in parallel lanes while events of one key stay in order.
//!
//! The hash is computed from the key's value with a fixed-key hasher, so the same key goes
//! to the same lane for the life of the process. In a pipeline that was not split
//! ([`crate::Pipeline::split_lanes`]), every event simply goes on to the next step.

use std::hash::{Hash, Hasher};

use tb_event::{Event, Value};

use crate::program::{CompiledProgram, RunOutcome};
use crate::step::{Step, StepContext};

/// Sorts events into lanes by key.
#[derive(Clone)]
pub(crate) struct PartitionStep {
    key: CompiledProgram,
    // Invariant: at least 1.
    lanes: usize,
}

impl PartitionStep {
    pub(crate) fn new(key: CompiledProgram, lanes: usize) -> Self {
        Self {
            key,
            lanes: lanes.max(1),
        }
    }
}

/// The lane for `key` among `lanes`.
pub(crate) fn lane_for(key: &Value, lanes: usize) -> usize {
    // `DefaultHasher::new` uses fixed keys: the same key hashes the same in every lane
    // and every batch, unlike a `RandomState`.
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % lanes.max(1) as u64) as usize
}

impl Step for PartitionStep {
    fn holds_events(&self) -> bool {
        true
    }

    fn process(&mut self, mut event: Event, _input: usize, context: &mut StepContext<'_>) {
        let value = std::mem::replace(&mut event.value, Value::Null);
        let meta = &event.meta;
        match self.key.run(value, || meta.to_vrl_metadata(), context.vrl) {
            RunOutcome::Finished { value, result } => {
                event.value = value;
                context.send_to_lane(lane_for(&result, self.lanes), event);
            }
            RunOutcome::Failed { value, message } => {
                event.value = value;
                context.fail(event, format!("partition key failed: {message}"));
            }
        }
    }

    fn fresh_copy(&self) -> Box<dyn Step> {
        Box::new(self.clone())
    }
}
