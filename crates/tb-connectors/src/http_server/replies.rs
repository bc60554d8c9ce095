//! Responses waiting for their events to come back: one slot per pending request stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tb_event::{AckStatus, ComponentId, StreamId, Value};

use crate::core::{ConnectorMetrics, InputQueue};

/// Pending requests by stream, each collecting the values routed back to it.
#[derive(Clone, Default)]
pub(super) struct PendingReplies {
    slots: Arc<Mutex<HashMap<StreamId, Vec<Value>>>>,
}

impl PendingReplies {
    pub(super) fn open(&self, stream: StreamId) {
        self.lock().insert(stream, Vec::new());
    }

    /// Closes the slot and returns what came back.
    pub(super) fn close(&self, stream: StreamId) -> Vec<Value> {
        self.lock().remove(&stream).unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, Vec<Value>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes events routed to this connector: an event from one of its pending requests joins
    /// that response; anything else has no stream to go to, and is failed and counted.
    pub(super) async fn dispatch(
        self,
        id: ComponentId,
        mut input: InputQueue,
        metrics: ConnectorMetrics,
    ) {
        while let Some(batch) = input.recv().await {
            metrics.input.inc_by(batch.len() as u64);
            let mut slots = self.lock();
            for event in batch {
                let slot = event
                    .is_from(&id)
                    .then(|| slots.get_mut(&event.meta.id.stream))
                    .flatten();
                match slot {
                    Some(slot) => {
                        let (value, _meta, ack) = event.into_parts();
                        slot.push(value);
                        metrics.sent.inc();
                        ack.complete(AckStatus::Delivered);
                    }
                    None => {
                        tracing::warn!(connector = %id, stream = %event.meta.id.stream, "Reply has no pending request; it is failed.");
                        metrics.errors.inc();
                        event.complete_with(
                            AckStatus::Errored,
                            "the request it replies to is no longer waiting",
                        );
                    }
                }
            }
        }
    }
}
