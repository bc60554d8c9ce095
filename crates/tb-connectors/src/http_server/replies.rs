//! Responses waiting for their events to come back: one slot per pending request stream.
//! Replies reach them by core's reply routing with [`Foreign::Refuse`]: a response answers
//! only its own request, so an event from elsewhere has nowhere to go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tb_event::{AckStatus, ComponentId, Event, StreamId, Value};

use crate::core::{ConnectorMetrics, Foreign, InputQueue, ReplyStreams, route_replies};

/// Pending requests by stream, each collecting the values routed back to it.
#[derive(Clone, Default)]
pub(super) struct PendingReplies {
    slots: Arc<Mutex<HashMap<StreamId, Vec<Value>>>>,
}

/// A pending request's slot, open while the request waits. Dropping it (the client went
/// away and the request's handler with it) closes the slot, so a reply that comes later
/// has nowhere to go: it is counted in `err` and errored, not sent to nobody.
pub(super) struct OpenSlot {
    replies: PendingReplies,
    stream: StreamId,
}

impl OpenSlot {
    /// Closes the slot and returns what came back.
    pub(super) fn close(self) -> Vec<Value> {
        self.replies.take(self.stream)
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.replies.take(self.stream);
    }
}

impl PendingReplies {
    /// Opens the slot of `stream` for as long as the returned guard lives.
    pub(super) fn open(&self, stream: StreamId) -> OpenSlot {
        self.lock().insert(stream, Vec::new());
        OpenSlot {
            replies: self.clone(),
            stream,
        }
    }

    fn take(&self, stream: StreamId) -> Vec<Value> {
        self.lock().remove(&stream).unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, Vec<Value>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes events routed to this connector until `input` closes: a reply joins its
    /// pending request's response; anything else is failed and counted.
    pub(super) async fn dispatch(
        self,
        id: ComponentId,
        input: InputQueue,
        metrics: ConnectorMetrics,
    ) {
        route_replies(self, Foreign::Refuse, id, input, metrics).await;
    }
}

impl ReplyStreams for PendingReplies {
    /// The request's stream: its slot is looked up again as the reply joins it, since the
    /// request may stop waiting in between.
    type Target = StreamId;

    const NOWHERE: &'static str = "the request it replies to is no longer waiting";

    fn target(&self, stream: StreamId) -> Option<StreamId> {
        self.lock().contains_key(&stream).then_some(stream)
    }

    fn every_target(&self) -> Vec<StreamId> {
        self.lock().keys().copied().collect()
    }

    async fn deliver(&self, stream: &StreamId, event: Event, metrics: &ConnectorMetrics) {
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(stream) else {
            drop(slots);
            metrics.errors.inc();
            event.complete_with(AckStatus::Errored, Self::NOWHERE);
            return;
        };
        let (value, _meta, ack) = event.into_parts();
        slot.push(value);
        metrics.sent.inc();
        ack.complete(AckStatus::Delivered);
    }
}
