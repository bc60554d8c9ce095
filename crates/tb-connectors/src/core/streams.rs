//! Open streams of a multi-stream server (TCP connections, WebSocket sessions): each one's
//! writer queue, by stream id. Replies reach them by the rule in `routing.rs`, with events
//! from elsewhere broadcast to every open stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tb_event::{AckStatus, Event, StreamId};
use tokio::sync::mpsc;

use super::metrics::ConnectorMetrics;
use super::routing::ReplyStreams;

/// Per-stream outgoing queue depth.
const STREAM_QUEUE: usize = 64;

/// How long an event waits for room in one stream's queue. A peer that stops reading must
/// not stall replies and broadcasts to every other stream (nor shutdown): past this, the
/// event is failed for that stream.
pub const STREAM_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The writers of a connector's open streams, by stream id.
#[derive(Clone, Default)]
pub struct StreamWriters {
    writers: Arc<Mutex<HashMap<StreamId, mpsc::Sender<Event>>>>,
}

impl StreamWriters {
    /// Opens `stream` and returns the queue its writer reads.
    pub fn register(&self, stream: StreamId) -> mpsc::Receiver<Event> {
        let (sender, receiver) = mpsc::channel(STREAM_QUEUE);
        self.lock().insert(stream, sender);
        receiver
    }

    /// Closes `stream`: its writer finishes what is queued, and later replies fail.
    pub fn remove(&self, stream: StreamId) {
        self.lock().remove(&stream);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, mpsc::Sender<Event>>> {
        self.writers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ReplyStreams for StreamWriters {
    type Target = mpsc::Sender<Event>;

    const NOWHERE: &'static str = "the stream it replies to has closed";

    fn target(&self, stream: StreamId) -> Option<mpsc::Sender<Event>> {
        self.lock().get(&stream).cloned()
    }

    fn every_target(&self) -> Vec<mpsc::Sender<Event>> {
        self.lock().values().cloned().collect()
    }

    async fn deliver(
        &self,
        target: &mpsc::Sender<Event>,
        event: Event,
        metrics: &ConnectorMetrics,
    ) {
        send_to_stream(target, event, metrics).await;
    }
}

/// Queues `event` for one stream, failing it if the stream is gone or stays full.
async fn send_to_stream(target: &mpsc::Sender<Event>, event: Event, metrics: &ConnectorMetrics) {
    match target.send_timeout(event, STREAM_SEND_TIMEOUT).await {
        Ok(()) => {}
        Err(
            mpsc::error::SendTimeoutError::Timeout(event)
            | mpsc::error::SendTimeoutError::Closed(event),
        ) => fail_outgoing(event, metrics),
    }
}

/// Fails an event (as errored: it may go through another time) whose stream closed, or
/// stalled, before it could be written.
pub fn fail_outgoing(event: Event, metrics: &ConnectorMetrics) {
    metrics.errors.inc();
    event.complete_with(
        AckStatus::Errored,
        "the stream closed or stopped reading before it was written",
    );
}
