//! Fan-out from one output port to every component that reads it, changeable while events
//! flow.
//!
//! An [`OutputSender`] is what a component sends with; the runtime keeps a [`FanoutControl`]
//! (a weak reference, so a finished component's output still closes its readers' queues) and
//! adds, removes or pauses subscribers on the live output. A send takes a snapshot of the
//! subscriber list (one `Arc` clone per batch), so a change never tears a batch: it applies
//! from the next batch on.

use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use tb_event::{AckStatus, EventBatch};
use tokio::sync::{mpsc, watch};

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
    sender: mpsc::Sender<EventBatch>,
    // Invariant: `true` while the subscriber is paused; sends wait until it is `false`.
    paused: Arc<watch::Sender<bool>>,
}

struct Fanout {
    subscribers: RwLock<Arc<[Subscriber]>>,
    unconnected: Unconnected,
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
    pub fn new(
        subscribers: Vec<(String, mpsc::Sender<EventBatch>)>,
        unconnected: Unconnected,
    ) -> Self {
        let subscribers: Vec<Subscriber> = subscribers
            .into_iter()
            .map(|(name, sender)| new_subscriber(&name, sender))
            .collect();
        Self {
            fanout: Arc::new(Fanout {
                subscribers: RwLock::new(subscribers.into()),
                unconnected,
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
        for permit in permits {
            permit.send(batch.iter().map(|event| event.fork()).collect());
        }
        if let Some(permit) = last {
            permit.send(batch);
        }
        Ok(())
    }
}

fn new_subscriber(name: &str, sender: mpsc::Sender<EventBatch>) -> Subscriber {
    Subscriber {
        name: Arc::from(name),
        sender,
        paused: Arc::new(watch::channel(false).0),
    }
}

/// A permit from every subscriber (each waiting while it is paused), or `None` if one has
/// closed.
async fn reserve_all(subscribers: &[Subscriber]) -> Option<Vec<mpsc::Permit<'_, EventBatch>>> {
    let mut permits = Vec::with_capacity(subscribers.len());
    for subscriber in subscribers {
        if *subscriber.paused.borrow() {
            let mut paused = subscriber.paused.subscribe();
            // The sender lives in the subscriber, so this cannot fail while we hold it.
            let _ = paused.wait_for(|paused| !*paused).await;
        }
        permits.push(subscriber.sender.reserve().await.ok()?);
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
    /// Adds (or replaces) the subscriber `name`. Returns `false` if the output is gone.
    pub fn add(&self, name: &str, sender: mpsc::Sender<EventBatch>) -> bool {
        self.with(|fanout| {
            fanout.update(|list| {
                list.retain(|subscriber| &*subscriber.name != name);
                list.push(new_subscriber(name, sender));
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
            Some(fanout) => {
                change(&fanout);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tb_event::{Acknowledgement, ComponentId, Event, EventMeta, StreamId, Value};

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
            vec![("a".to_owned(), first_tx), ("b".to_owned(), second_tx)],
            Unconnected::Complete,
        );
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
        let sender = OutputSender::new(vec![("a".to_owned(), tx)], Unconnected::Complete);
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
        let sender = OutputSender::new(vec![("a".to_owned(), first_tx)], Unconnected::Complete);
        let control = sender.control();
        assert!(control.add("b", second_tx));
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
        let sender = OutputSender::new(vec![("a".to_owned(), tx)], Unconnected::Complete);
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
    async fn control_lets_go_when_every_sender_is_gone() {
        let (tx, mut rx) = mpsc::channel::<EventBatch>(1);
        let sender = OutputSender::new(vec![("a".to_owned(), tx)], Unconnected::Complete);
        let control = sender.control();
        drop(sender);
        assert!(rx.recv().await.is_none(), "the reader's queue closed");
        assert!(!control.add("b", mpsc::channel(1).0));
    }
}
