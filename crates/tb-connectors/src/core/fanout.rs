//! Fan-out from one output port to every component that reads it, changeable while events
//! flow.
//!
//! An [`OutputSender`] is what a component sends with; the runtime keeps a [`FanoutControl`]
//! (a weak reference, so a finished component's output still closes its readers' queues) and
//! adds, removes or pauses subscribers on the live output. A send takes a snapshot of the
//! subscriber list (one `Arc` clone per batch), so a change never tears a batch: it applies
//! from the next batch on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use tb_event::{AckStatus, EventBatch};
use tokio::sync::{mpsc, watch};

use super::input::InputBatch;

/// A reading component's place on an output: its id, the position of this output in its
/// `inputs`, and its queue.
#[derive(Clone, Debug)]
pub struct Subscription {
    /// The reading component's id (or a tap's name).
    pub reader: String,
    /// Position of this output in the reader's `inputs`.
    pub input: usize,
    /// The reader's queue.
    pub sender: mpsc::Sender<InputBatch>,
}

/// Why a batch could not be handed on.
#[derive(Debug)]
pub enum SendRejected {
    /// A subscriber stayed full past the deadline; the batch is given back untouched.
    Full(EventBatch),
    /// A subscriber has stopped; the events were failed.
    Closed,
}

/// What happens to events sent to an output that nothing reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unconnected {
    /// They are done: nobody asked for them (a main output, a connector's `_errors`, which
    /// are counted where they arise).
    Complete,
    /// They are rejected, so their source does not confirm them: a pipeline's `_errors`
    /// unread would otherwise lose events silently.
    Fail,
}

#[derive(Clone)]
struct Subscriber {
    /// The reading component's id (or a tap's name).
    name: Arc<str>,
    input: usize,
    sender: mpsc::Sender<InputBatch>,
    // Invariant: `true` while the subscriber is paused; sends wait until it is `false`.
    paused: Arc<watch::Sender<bool>>,
}

struct Fanout {
    subscribers: RwLock<Arc<[Subscriber]>>,
    unconnected: Unconnected,
    // Invariant: once true, the subscriber list is empty and stays so.
    finished: AtomicBool,
}

impl Fanout {
    fn snapshot(&self) -> Arc<[Subscriber]> {
        self.subscribers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, change: impl FnOnce(&mut Vec<Subscriber>)) {
        let mut subscribers = self
            .subscribers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut list = subscribers.to_vec();
        change(&mut list);
        *subscribers = list.into();
    }
}

/// Sends batches from one output port to every component that reads it.
///
/// With several subscribers each gets its own copy of the events, and the source waits for
/// every copy. With none, the events are complete (or rejected, per [`Unconnected`]).
#[derive(Clone)]
pub struct OutputSender {
    fanout: Arc<Fanout>,
}

impl std::fmt::Debug for OutputSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .fanout
            .snapshot()
            .iter()
            .map(|subscriber| subscriber.name.to_string())
            .collect();
        f.debug_struct("OutputSender")
            .field("subscribers", &names)
            .finish()
    }
}

impl OutputSender {
    /// A sender to these subscribers' input channels, named by the reading components.
    pub fn new(subscriptions: Vec<Subscription>, unconnected: Unconnected) -> Self {
        let subscribers: Vec<Subscriber> = subscriptions.into_iter().map(new_subscriber).collect();
        Self {
            fanout: Arc::new(Fanout {
                subscribers: RwLock::new(subscribers.into()),
                unconnected,
                finished: AtomicBool::new(false),
            }),
        }
    }

    /// A sender with no subscribers.
    pub fn disconnected() -> Self {
        Self::new(Vec::new(), Unconnected::Complete)
    }

    /// The runtime's handle for changing this output's subscribers while it runs.
    pub fn control(&self) -> FanoutControl {
        FanoutControl {
            fanout: Arc::downgrade(&self.fanout),
        }
    }

    /// Ends this output for every clone of it: its readers' queues lose this feeder (and
    /// close once nothing else feeds them), so they can drain. A source calls it when it has
    /// nothing more to send (the end of its input) *before* it waits for acknowledgements:
    /// a step that holds events (a batch) only lets go of them once its input ends. Later
    /// sends are refused and their events errored.
    pub fn finish(&self) {
        self.fanout.finished.store(true, Ordering::Release);
        self.fanout.update(Vec::clear);
    }

    /// Whether anything reads this output.
    pub fn is_connected(&self) -> bool {
        !self.fanout.snapshot().is_empty()
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

    /// Sends a batch, giving it back if a subscriber is still full (or paused) after
    /// `patience`.
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
        if self.fanout.finished.load(Ordering::Acquire) {
            let reason: Arc<str> = Arc::from("the output was finished before it was sent");
            for event in batch {
                event.complete_with(AckStatus::Errored, reason.clone());
            }
            return Err(SendRejected::Closed);
        }
        let subscribers = self.fanout.snapshot();
        if subscribers.is_empty() {
            complete_unread(batch, self.fanout.unconnected);
            return Ok(());
        }
        let reserving = reserve_all(&subscribers);
        let permits = match patience {
            Some(patience) => match tokio::time::timeout(patience, reserving).await {
                Ok(permits) => permits,
                Err(_elapsed) => return Err(SendRejected::Full(batch)),
            },
            None => reserving.await,
        };
        // Dropping the batch on a closed subscriber fails every event in it: the source
        // will not confirm them.
        let mut permits = permits.ok_or(SendRejected::Closed)?;
        let last = permits.pop();
        for (permit, input) in permits {
            permit.send(InputBatch {
                input,
                events: batch.iter().map(|event| event.fork()).collect(),
            });
        }
        if let Some((permit, input)) = last {
            permit.send(InputBatch {
                input,
                events: batch,
            });
        }
        Ok(())
    }
}

fn new_subscriber(subscription: Subscription) -> Subscriber {
    Subscriber {
        name: Arc::from(subscription.reader),
        input: subscription.input,
        sender: subscription.sender,
        paused: Arc::new(watch::channel(false).0),
    }
}

/// A permit from every subscriber (each waiting while it is paused), or `None` if one has
/// closed.
async fn reserve_all(
    subscribers: &[Subscriber],
) -> Option<Vec<(mpsc::Permit<'_, InputBatch>, usize)>> {
    let mut permits = Vec::with_capacity(subscribers.len());
    for subscriber in subscribers {
        if *subscriber.paused.borrow() {
            let mut paused = subscriber.paused.subscribe();
            // The sender lives in the subscriber, so this cannot fail while we hold it.
            let _ = paused.wait_for(|paused| !*paused).await;
        }
        permits.push((subscriber.sender.reserve().await.ok()?, subscriber.input));
    }
    Some(permits)
}

fn complete_unread(batch: EventBatch, unconnected: Unconnected) {
    match unconnected {
        Unconnected::Complete => batch
            .into_iter()
            .for_each(|event| event.complete(AckStatus::Delivered)),
        Unconnected::Fail => {
            let reason: Arc<str> = Arc::from("nothing reads the output it was sent to");
            batch
                .into_iter()
                .for_each(|event| event.complete_with(AckStatus::Rejected, reason.clone()));
        }
    }
}

/// The runtime's handle on a live output: weak, so it never keeps readers' queues open
/// after the component that sends on it has gone.
#[derive(Clone, Debug)]
pub struct FanoutControl {
    fanout: Weak<Fanout>,
}

impl FanoutControl {
    /// Adds (or replaces) a subscriber. Returns `false` if the output is gone.
    pub fn add(&self, subscription: Subscription) -> bool {
        self.with(|fanout| {
            fanout.update(|list| {
                list.retain(|subscriber| *subscriber.name != *subscription.reader);
                list.push(new_subscriber(subscription));
            })
        })
    }

    /// Removes the subscriber `name`; batches already sent to it stay with it.
    pub fn remove(&self, name: &str) -> bool {
        self.with(|fanout| fanout.update(|list| list.retain(|s| &*s.name != name)))
    }

    /// Pauses (sends wait) or resumes the subscriber `name`.
    pub fn set_paused(&self, name: &str, paused: bool) -> bool {
        self.with(|fanout| {
            for subscriber in fanout.snapshot().iter() {
                if &*subscriber.name == name {
                    subscriber.paused.send_replace(paused);
                }
            }
        })
    }

    /// The names of the current subscribers.
    pub fn subscribers(&self) -> Vec<String> {
        self.fanout
            .upgrade()
            .map(|fanout| {
                fanout
                    .snapshot()
                    .iter()
                    .map(|s| s.name.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn with(&self, change: impl FnOnce(&Fanout)) -> bool {
        match self.fanout.upgrade() {
            Some(fanout) if !fanout.finished.load(Ordering::Acquire) => {
                change(&fanout);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tb_event::{Acknowledgement, ComponentId, Event, EventMeta, StreamId, Value};

    fn subscription(reader: &str, sender: mpsc::Sender<InputBatch>) -> Subscription {
        Subscription {
            reader: reader.to_owned(),
            input: 0,
            sender,
        }
    }

    fn event() -> (Event, tb_event::AckReceipt) {
        let (ack, receipt) = Acknowledgement::new_unit();
        let meta = EventMeta::new(ComponentId::new("src"), StreamId(0), 0);
        (Event::new(Value::from(1), meta, ack), receipt)
    }

    #[tokio::test]
    async fn fan_out_waits_for_every_copy() {
        let (first_tx, mut first_rx) = mpsc::channel(1);
        let (second_tx, mut second_rx) = mpsc::channel(1);
        let sender = OutputSender::new(
            vec![subscription("a", first_tx), subscription("b", second_tx)],
            Unconnected::Complete,
        );
        let (event, receipt) = event();
        sender.send(vec![event]).await.expect("send");
        let first = first_rx.recv().await.expect("first copy");
        let second = second_rx.recv().await.expect("second copy");
        first
            .events
            .into_iter()
            .for_each(|e| e.complete(AckStatus::Delivered));
        drop(second);
        assert_eq!(receipt.wait().await.status, AckStatus::Errored);
    }

    #[tokio::test]
    async fn full_subscriber_gives_the_batch_back_after_patience() {
        let (tx, _rx) = mpsc::channel(1);
        let sender = OutputSender::new(vec![subscription("a", tx)], Unconnected::Complete);
        let (first, _r1) = event();
        sender.send(vec![first]).await.expect("first fits");
        let (second, _r2) = event();
        let rejected = sender
            .send_within(vec![second], Some(Duration::from_millis(10)))
            .await;
        assert!(matches!(rejected, Err(SendRejected::Full(batch)) if batch.len() == 1));
    }

    #[tokio::test]
    async fn subscribers_change_while_the_output_is_live() {
        let (first_tx, mut first_rx) = mpsc::channel(4);
        let (second_tx, mut second_rx) = mpsc::channel(4);
        let sender = OutputSender::new(vec![subscription("a", first_tx)], Unconnected::Complete);
        let control = sender.control();
        assert!(control.add(subscription("b", second_tx)));
        assert_eq!(control.subscribers(), vec!["a".to_owned(), "b".to_owned()]);
        sender.send(vec![event().0]).await.expect("send");
        assert!(first_rx.recv().await.is_some());
        assert!(second_rx.recv().await.is_some());
        assert!(control.remove("a"));
        sender.send(vec![event().0]).await.expect("send");
        assert!(second_rx.recv().await.is_some());
        assert!(
            first_rx.recv().await.is_none(),
            "a's queue closed when it was removed"
        );
    }

    #[tokio::test]
    async fn a_paused_subscriber_holds_sends_until_resumed() {
        let (tx, mut rx) = mpsc::channel(4);
        let sender = OutputSender::new(vec![subscription("a", tx)], Unconnected::Complete);
        let control = sender.control();
        control.set_paused("a", true);
        let sending = tokio::spawn(async move { sender.send(vec![event().0]).await.is_ok() });
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "nothing passes while paused");
        control.set_paused("a", false);
        assert!(sending.await.expect("join"));
        assert!(rx.recv().await.is_some());
    }

    #[tokio::test]
    async fn a_finished_output_closes_its_readers_queues_and_refuses_later_sends() {
        let (tx, mut rx) = mpsc::channel(4);
        let sender = OutputSender::new(vec![subscription("a", tx)], Unconnected::Complete);
        let clone = sender.clone();
        sender.send(vec![event().0]).await.expect("send");
        clone.finish();
        assert!(rx.recv().await.is_some(), "what was sent stays");
        assert!(
            rx.recv().await.is_none(),
            "then the queue closes, though a clone is alive"
        );
        let (late, receipt) = event();
        assert!(sender.send(vec![late]).await.is_err());
        assert_eq!(receipt.wait().await.status, AckStatus::Errored);
        assert!(!sender.control().add(subscription("b", mpsc::channel(1).0)));
    }

    #[tokio::test]
    async fn control_lets_go_when_every_sender_is_gone() {
        let (tx, mut rx) = mpsc::channel::<InputBatch>(1);
        let sender = OutputSender::new(vec![subscription("a", tx)], Unconnected::Complete);
        let control = sender.control();
        drop(sender);
        assert!(rx.recv().await.is_none(), "the reader's queue closed");
        assert!(!control.add(subscription("b", mpsc::channel(1).0)));
    }
}
