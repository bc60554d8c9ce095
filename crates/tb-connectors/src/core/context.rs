//! The run context a connector receives, and the fan-out sender for its outputs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tb_event::{AckStatus, ComponentId, EventBatch};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::metrics::ConnectorMetrics;

/// Everything a running connector may touch; no globals.
pub struct ConnectorContext {
    /// The connector's id.
    pub id: ComponentId,
    /// The main output, `<id>`.
    pub output: OutputSender,
    /// The error output, `<id>._errors`.
    pub errors: OutputSender,
    /// Events routed to this connector to send out; `None` when it has no `inputs`.
    pub input: Option<mpsc::Receiver<EventBatch>>,
    /// Cancelled when shutdown begins: stop taking new input, finish what is in flight.
    pub intake: CancellationToken,
    /// This connector's counters.
    pub metrics: ConnectorMetrics,
    /// Where connectors keep state (checkpoints).
    pub data_dir: PathBuf,
}

/// Why a batch could not be handed on.
#[derive(Debug)]
pub enum SendRejected {
    /// A subscriber stayed full past the deadline; the batch is given back untouched.
    Full(EventBatch),
    /// A subscriber has stopped; the events were failed.
    Closed,
}

/// Sends batches from one output port to every component that reads it.
///
/// With several subscribers each gets its own copy of the events, and the source waits for
/// every copy. With none, the events are complete: nothing reads that output.
#[derive(Clone, Debug)]
pub struct OutputSender {
    subscribers: Arc<[mpsc::Sender<EventBatch>]>,
    unconnected: Unconnected,
}

/// What happens to events sent to an output that nothing reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unconnected {
    /// They are done: nobody asked for them (a main output, a connector's `_errors`, which
    /// are counted where they arise).
    Complete,
    /// They are rejected, so their source does not confirm them: a pipeline's `_errors` unread
    /// would otherwise lose events silently.
    Fail,
}

impl OutputSender {
    /// A sender to these subscribers' input channels.
    pub fn new(subscribers: Vec<mpsc::Sender<EventBatch>>, unconnected: Unconnected) -> Self {
        Self {
            subscribers: subscribers.into(),
            unconnected,
        }
    }

    /// A sender with no subscribers.
    pub fn disconnected() -> Self {
        Self::new(Vec::new(), Unconnected::Complete)
    }

    /// Whether anything reads this output.
    pub fn is_connected(&self) -> bool {
        !self.subscribers.is_empty()
    }

    /// Sends a batch, waiting as long as a subscriber is full: this is backpressure.
    ///
    /// # Errors
    ///
    /// [`SendRejected::Closed`] if a subscriber has stopped (its copies are failed).
    pub async fn send(&self, batch: EventBatch) -> Result<(), SendRejected> {
        match self.send_within(batch, None).await {
            Err(SendRejected::Full(_)) => Err(SendRejected::Closed),
            other => other,
        }
    }

    /// Sends a batch, giving it back if a subscriber is still full after `patience`.
    ///
    /// # Errors
    ///
    /// [`SendRejected::Full`] with the batch, or [`SendRejected::Closed`].
    pub async fn send_within(
        &self,
        batch: EventBatch,
        patience: Option<Duration>,
    ) -> Result<(), SendRejected> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.subscribers.is_empty() {
            match self.unconnected {
                Unconnected::Complete => batch
                    .into_iter()
                    .for_each(|event| event.complete(AckStatus::Delivered)),
                Unconnected::Fail => {
                    let reason: Arc<str> = Arc::from("nothing reads the output it was sent to");
                    batch.into_iter().for_each(|event| {
                        event.complete_with(AckStatus::Rejected, reason.clone())
                    });
                }
            }
            return Ok(());
        }
        let mut permits = Vec::with_capacity(self.subscribers.len());
        for subscriber in self.subscribers.iter() {
            let reserve = subscriber.reserve();
            let permit = match patience {
                Some(patience) => match tokio::time::timeout(patience, reserve).await {
                    Ok(permit) => permit,
                    Err(_elapsed) => return Err(SendRejected::Full(batch)),
                },
                None => reserve.await,
            };
            match permit {
                Ok(permit) => permits.push(permit),
                // Dropping the batch fails every event in it: the source will not confirm.
                Err(_closed) => return Err(SendRejected::Closed),
            }
        }
        let last = permits.pop();
        for permit in permits {
            permit.send(batch.iter().map(|event| event.fork()).collect());
        }
        if let Some(permit) = last {
            permit.send(batch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tb_event::{Acknowledgement, Event, EventMeta, StreamId, Value};

    fn event() -> (Event, tb_event::AckReceipt) {
        let (ack, receipt) = Acknowledgement::new_unit();
        let meta = EventMeta::new(ComponentId::new("src"), StreamId(0), 0);
        (Event::new(Value::from(1), meta, ack), receipt)
    }

    #[tokio::test]
    async fn fan_out_waits_for_every_copy() {
        let (first_tx, mut first_rx) = mpsc::channel(1);
        let (second_tx, mut second_rx) = mpsc::channel(1);
        let sender = OutputSender::new(vec![first_tx, second_tx], Unconnected::Complete);
        let (event, receipt) = event();
        sender.send(vec![event]).await.expect("send");
        let first = first_rx.recv().await.expect("first copy");
        let second = second_rx.recv().await.expect("second copy");
        first
            .into_iter()
            .for_each(|e| e.complete(AckStatus::Delivered));
        drop(second);
        assert_eq!(receipt.wait().await.status, AckStatus::Errored);
    }

    #[tokio::test]
    async fn full_subscriber_gives_the_batch_back_after_patience() {
        let (tx, _rx) = mpsc::channel(1);
        let sender = OutputSender::new(vec![tx], Unconnected::Complete);
        let (first, _r1) = event();
        sender.send(vec![first]).await.expect("first fits");
        let (second, _r2) = event();
        let rejected = sender
            .send_within(vec![second], Some(Duration::from_millis(10)))
            .await;
        assert!(matches!(rejected, Err(SendRejected::Full(batch)) if batch.len() == 1));
    }
}
