//! Open streams of a multi-stream server (TCP connections, WebSocket sessions) and routing
//! events to them: a reply goes back to the stream it came from; an event from elsewhere
//! goes to every open stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tb_event::{AckStatus, ComponentId, Event, EventBatch, StreamId};
use tokio::sync::mpsc;

use super::metrics::ConnectorMetrics;

/// Something to write to one stream.
#[derive(Debug)]
pub enum Outgoing {
    /// An event to encode and send; completed once written.
    Event(Event),
    /// Bytes the connector itself sends (an acknowledgement line).
    Raw(Bytes),
}

/// Per-stream outgoing queue depth.
const STREAM_QUEUE: usize = 64;

/// The writers of a connector's open streams, by stream id.
#[derive(Clone, Default)]
pub struct StreamWriters {
    writers: Arc<Mutex<HashMap<StreamId, mpsc::Sender<Outgoing>>>>,
}

impl StreamWriters {
    /// Opens `stream` and returns the queue its writer reads.
    pub fn register(&self, stream: StreamId) -> mpsc::Receiver<Outgoing> {
        let (sender, receiver) = mpsc::channel(STREAM_QUEUE);
        self.lock().insert(stream, sender);
        receiver
    }

    /// Closes `stream`: its writer finishes what is queued, and later replies fail.
    pub fn remove(&self, stream: StreamId) {
        self.lock().remove(&stream);
    }

    /// Queues bytes for `stream` without waiting; dropped if its queue is full.
    pub fn try_send_raw(&self, stream: StreamId, bytes: Bytes) {
        if let Some(sender) = self.lock().get(&stream) {
            let _ = sender.try_send(Outgoing::Raw(bytes));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, mpsc::Sender<Outgoing>>> {
        self.writers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn targets(&self, id: &ComponentId, event: &Event) -> Vec<mpsc::Sender<Outgoing>> {
        let writers = self.lock();
        if event.is_from(id) {
            writers
                .get(&event.meta.id.stream)
                .cloned()
                .into_iter()
                .collect()
        } else {
            writers.values().cloned().collect()
        }
    }

    /// Routes every event from `input` until it closes.
    pub async fn dispatch(
        self,
        id: ComponentId,
        mut input: mpsc::Receiver<EventBatch>,
        metrics: ConnectorMetrics,
    ) {
        while let Some(batch) = input.recv().await {
            metrics.input.inc_by(batch.len() as u64);
            for event in batch {
                let targets = self.targets(&id, &event);
                let Some((last, rest)) = targets.split_last() else {
                    tracing::debug!(connector = %id, stream = %event.meta.id.stream, "Event has no open stream to go to; it is failed.");
                    metrics.errors.inc();
                    event.complete(AckStatus::Failed);
                    continue;
                };
                for target in rest {
                    if let Err(closed) = target.send(Outgoing::Event(event.fork())).await {
                        fail_outgoing(closed.0, &metrics);
                    }
                }
                if let Err(closed) = last.send(Outgoing::Event(event)).await {
                    fail_outgoing(closed.0, &metrics);
                }
            }
        }
    }
}

/// Fails an event whose stream closed before it could be written.
pub fn fail_outgoing(outgoing: Outgoing, metrics: &ConnectorMetrics) {
    if let Outgoing::Event(event) = outgoing {
        metrics.errors.inc();
        event.complete(AckStatus::Failed);
    }
}
