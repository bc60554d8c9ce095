//! Open streams of a multi-stream server (TCP connections, WebSocket sessions): each one's
//! writer queue, by stream id. Replies reach them by the rule in `routing.rs`, with events
//! from elsewhere broadcast to every open stream.
//!
//! The routing task serves every stream, so it must never wait long on one: a stream whose
//! queue stays full for [`LAG_GRACE`] is marked lagging, and from then on its events are
//! failed at once (errored, counted in `err`) until its queue has room again. A healthy peer
//! that is briefly full still gets backpressure, not losses; a peer that stopped reading
//! costs only its own events, and is closed once a write to it stalls past the server's
//! `write_timeout`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tb_event::{AckStatus, Event, StreamId};
use tokio::sync::mpsc;

use super::metrics::ConnectorMetrics;
use super::routing::ReplyStreams;

/// Per-stream outgoing queue depth, in events.
const STREAM_QUEUE: usize = 256;

/// How long the routing task waits for room in one stream's queue before it marks the
/// stream lagging and stops waiting for it.
pub const LAG_GRACE: Duration = Duration::from_millis(500);

/// The writers of a connector's open streams, by stream id.
#[derive(Clone, Default)]
pub struct StreamWriters {
    writers: Arc<Mutex<HashMap<StreamId, StreamQueue>>>,
}

/// One open stream's outgoing queue, as the routing task sees it.
#[derive(Clone)]
pub struct StreamQueue {
    stream: StreamId,
    sender: mpsc::Sender<Event>,
    /// Set once the queue stayed full past [`LAG_GRACE`]; cleared when it takes an event.
    lagging: Arc<AtomicBool>,
}

impl StreamWriters {
    /// Opens `stream` and returns the queue its writer reads.
    pub fn register(&self, stream: StreamId) -> mpsc::Receiver<Event> {
        let (sender, receiver) = mpsc::channel(STREAM_QUEUE);
        let queue = StreamQueue {
            stream,
            sender,
            lagging: Arc::default(),
        };
        self.lock().insert(stream, queue);
        receiver
    }

    /// Closes `stream`: its writer finishes what is queued, and later replies fail.
    pub fn remove(&self, stream: StreamId) {
        self.lock().remove(&stream);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, StreamQueue>> {
        self.writers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ReplyStreams for StreamWriters {
    type Target = StreamQueue;

    const NOWHERE: &'static str = "the stream it replies to has closed";

    fn target(&self, stream: StreamId) -> Option<StreamQueue> {
        self.lock().get(&stream).cloned()
    }

    fn every_target(&self) -> Vec<StreamQueue> {
        self.lock().values().cloned().collect()
    }

    async fn deliver(&self, target: &StreamQueue, event: Event, metrics: &ConnectorMetrics) {
        target.send(event, metrics).await;
    }
}

impl StreamQueue {
    /// Queues `event` for this stream; fails it if the stream is gone, or is lagging and
    /// still full.
    async fn send(&self, event: Event, metrics: &ConnectorMetrics) {
        let event = match self.sender.try_send(event) {
            Ok(()) => {
                self.lagging.store(false, Ordering::Relaxed);
                return;
            }
            Err(mpsc::error::TrySendError::Closed(event)) => {
                return fail_outgoing(event, metrics);
            }
            Err(mpsc::error::TrySendError::Full(event)) => event,
        };
        if self.lagging.load(Ordering::Relaxed) {
            return fail_lagging(event, metrics);
        }
        match self.sender.send_timeout(event, LAG_GRACE).await {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Closed(event)) => fail_outgoing(event, metrics),
            Err(mpsc::error::SendTimeoutError::Timeout(event)) => {
                self.lagging.store(true, Ordering::Relaxed);
                tracing::warn!(stream = %self.stream, queued = STREAM_QUEUE, "Stream is not keeping up; its events are failed until it reads again.");
                fail_lagging(event, metrics);
            }
        }
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

/// Fails an event for a stream that is not keeping up.
fn fail_lagging(event: Event, metrics: &ConnectorMetrics) {
    metrics.errors.inc();
    event.complete_with(
        AckStatus::Errored,
        "the stream is not reading fast enough: its queue is full",
    );
}
