//! A component's input queue as one run of the component sees it.
//!
//! The queue itself belongs to the runtime and outlives any one run: after a crash the
//! restarted component takes the same queue, with what was waiting in it. A run holds the
//! queue's lock for its whole life, and the lock is released when the run ends, however it
//! ends (an unwinding panic drops the guard too). A run can also be told to stop taking from
//! the queue without the queue closing, so a replacement can go on where it stopped.

use std::sync::Arc;

use tb_event::EventBatch;

/// A batch in a component's input queue, with the input it came through: its position in
/// the component's `inputs`.
#[derive(Debug)]
pub struct InputBatch {
    /// Position in the reading component's `inputs`.
    pub input: usize,
    /// The events.
    pub events: EventBatch,
}
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc};
use tokio_util::sync::CancellationToken;

/// The receiving end of a component's input, for one run.
pub struct InputQueue {
    receiver: OwnedMutexGuard<mpsc::Receiver<InputBatch>>,
    stop: CancellationToken,
}

impl InputQueue {
    /// One run's hold on a queue; `stop` ends its reading without closing the queue.
    pub fn new(
        receiver: OwnedMutexGuard<mpsc::Receiver<InputBatch>>,
        stop: CancellationToken,
    ) -> Self {
        Self { receiver, stop }
    }

    /// A queue of its own over `receiver`, for tests and tools outside a runtime.
    pub fn standalone(receiver: mpsc::Receiver<InputBatch>) -> Self {
        let shared = Arc::new(Mutex::new(receiver));
        // A new mutex that nothing else has seen cannot be locked.
        let guard = match shared.try_lock_owned() {
            Ok(guard) => guard,
            Err(_locked) => unreachable!("a fresh mutex is unlocked"),
        };
        Self::new(guard, CancellationToken::new())
    }

    /// The next batch; `None` once every sender is gone (the upstream finished) or this run
    /// was told to stop. Cancel-safe: a batch is never lost to a cancelled `recv`.
    pub async fn recv(&mut self) -> Option<EventBatch> {
        self.recv_from().await.map(|batch| batch.events)
    }

    /// A batch already waiting, without waiting for one; `None` when none is (or this run
    /// was told to stop). For readers that gather what waits into one write.
    pub fn try_recv_from(&mut self) -> Option<InputBatch> {
        if self.stop.is_cancelled() {
            return None;
        }
        self.receiver.try_recv().ok()
    }

    /// [`Self::recv`], with the input the batch came through.
    pub async fn recv_from(&mut self) -> Option<InputBatch> {
        tokio::select! {
            biased;
            () = self.stop.cancelled() => None,
            batch = self.receiver.recv() => batch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stopped_run_leaves_the_rest_of_the_queue_to_the_next() {
        let (sender, receiver) = mpsc::channel(4);
        let shared = Arc::new(Mutex::new(receiver));
        let stop = CancellationToken::new();
        let mut first = InputQueue::new(shared.clone().lock_owned().await, stop.clone());
        let empty = || InputBatch {
            input: 0,
            events: Vec::new(),
        };
        sender.send(empty()).await.expect("send");
        sender.send(empty()).await.expect("send");
        assert!(first.recv().await.is_some());
        stop.cancel();
        assert!(first.recv().await.is_none());
        drop(first);
        let mut second = InputQueue::new(shared.lock_owned().await, CancellationToken::new());
        assert!(
            second.recv().await.is_some(),
            "the second batch waited for the next run"
        );
        drop(sender);
        assert!(second.recv().await.is_none());
    }
}
