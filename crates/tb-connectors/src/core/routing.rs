//! Reply routing: the one rule of every connector that takes events back to the streams it
//! reads (tcp connections, WebSocket sessions, http requests). An event born on the
//! connector is a reply and goes back to its own stream; an event from elsewhere goes where
//! the connector's [`Foreign`] policy says. An event with nowhere to go is errored, with the
//! reason its [`ReplyStreams`] gives, and counted in `err`.
//!
//! The rule lives here once; a connector supplies only its table of open streams and how
//! an event is handed to one of them.

use std::future::Future;

use tb_event::{AckStatus, ComponentId, Event, StreamId};

use super::input::InputQueue;
use super::metrics::ConnectorMetrics;

/// Where an event that is no reply (it was born elsewhere) goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Foreign {
    /// To every open stream: a broadcast (tcp and WebSocket servers).
    Broadcast,
    /// Nowhere: it is errored (an http response answers only its own request).
    Refuse,
}

/// A connector's open streams, as replies reach them.
pub trait ReplyStreams: Sync {
    /// What one stream's events are handed to (a writer's queue, a pending response).
    type Target: Send + Sync;

    /// Why an event with no open stream to go to is errored.
    const NOWHERE: &'static str;

    /// The target of `stream`, if it is still open.
    fn target(&self, stream: StreamId) -> Option<Self::Target>;

    /// The targets of every open stream.
    fn every_target(&self) -> Vec<Self::Target>;

    /// Hands `event` to `target`, which completes it (or fails and counts it).
    fn deliver(
        &self,
        target: &Self::Target,
        event: Event,
        metrics: &ConnectorMetrics,
    ) -> impl Future<Output = ()> + Send;
}

/// Routes every event from `input` to `streams` until the input closes, counting each in
/// `in`.
pub async fn route_replies<S: ReplyStreams>(
    streams: S,
    foreign: Foreign,
    id: ComponentId,
    mut input: InputQueue,
    metrics: ConnectorMetrics,
) {
    while let Some(batch) = input.recv().await {
        metrics.input.inc_by(batch.len() as u64);
        for event in batch {
            let targets = targets(&streams, foreign, &id, &event);
            let Some((last, rest)) = targets.split_last() else {
                tracing::debug!(connector = %id, stream = %event.meta.id.stream, reason = S::NOWHERE, "Event has no open stream to go to; it is failed.");
                metrics.errors.inc();
                event.complete_with(AckStatus::Errored, S::NOWHERE);
                continue;
            };
            for target in rest {
                streams.deliver(target, event.fork(), &metrics).await;
            }
            streams.deliver(last, event, &metrics).await;
        }
    }
}

/// The streams `event` goes to: its own if it is a reply, else as `foreign` says.
fn targets<S: ReplyStreams>(
    streams: &S,
    foreign: Foreign,
    id: &ComponentId,
    event: &Event,
) -> Vec<S::Target> {
    if event.is_from(id) {
        return streams.target(event.meta.id.stream).into_iter().collect();
    }
    match foreign {
        Foreign::Broadcast => streams.every_target(),
        Foreign::Refuse => Vec::new(),
    }
}
