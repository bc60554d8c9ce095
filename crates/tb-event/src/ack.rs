//! End-to-end acknowledgements.
//!
//! A source makes one [`Acknowledgement`] per unit it confirms upstream (an HTTP request, a
//! chunk of a file, a broker delivery) and gives each event a clone of its [`AckHandle`].
//! Fan-out clones the handle; every clone must be completed. When the last handle is gone the
//! source's [`AckReceipt`] resolves with the merged status: [`AckStatus::Failed`] if any clone
//! failed *or was dropped without a status*, otherwise [`AckStatus::Delivered`].
//!
//! Cost: one allocation per acknowledgement unit and one atomic increment per clone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The merged outcome of an acknowledgement unit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AckStatus {
    /// Every destination has the event durably or delivered it, or a step filtered it out.
    Delivered,
    /// At least one destination failed, or an event vanished without a status.
    Failed,
}

struct AckShared {
    failed: AtomicBool,
    // Invariant: `Some` until the last handle drops; then the merged status is sent once.
    notify: Mutex<Option<oneshot::Sender<AckStatus>>>,
}

impl Drop for AckShared {
    fn drop(&mut self) {
        let status = if self.failed.load(Ordering::Acquire) {
            AckStatus::Failed
        } else {
            AckStatus::Delivered
        };
        let sender = match self.notify.get_mut() {
            Ok(slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(sender) = sender {
            // The source may have stopped waiting (shutdown); nothing to tell then.
            let _ = sender.send(status);
        }
    }
}

/// Creates acknowledgement units.
pub struct Acknowledgement;

impl Acknowledgement {
    /// Starts a unit: the handle goes with the events, the receipt stays with the source.
    pub fn new_unit() -> (AckHandle, AckReceipt) {
        let (sender, receiver) = oneshot::channel();
        let shared = Arc::new(AckShared {
            failed: AtomicBool::new(false),
            notify: Mutex::new(Some(sender)),
        });
        (
            AckHandle {
                shared: Some(shared),
            },
            AckReceipt { receiver },
        )
    }
}

/// One reference to an acknowledgement unit, carried by an event.
///
/// Dropping a handle without [`AckHandle::complete`] marks the unit failed.
pub struct AckHandle {
    shared: Option<Arc<AckShared>>,
}

impl AckHandle {
    /// A handle that tracks nothing, for sources that confirm nothing upstream.
    pub fn untracked() -> Self {
        Self { shared: None }
    }

    /// Whether a source is waiting on this handle.
    pub fn is_tracked(&self) -> bool {
        self.shared.is_some()
    }

    /// Records this reference's outcome and releases it.
    pub fn complete(mut self, status: AckStatus) {
        if let Some(shared) = self.shared.take()
            && status == AckStatus::Failed
        {
            shared.failed.store(true, Ordering::Release);
        }
    }
}

impl Clone for AckHandle {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for AckHandle {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.failed.store(true, Ordering::Release);
        }
    }
}

impl std::fmt::Debug for AckHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckHandle")
            .field("tracked", &self.is_tracked())
            .finish()
    }
}

/// The source's side of an acknowledgement unit.
pub struct AckReceipt {
    receiver: oneshot::Receiver<AckStatus>,
}

impl AckReceipt {
    /// Waits until every handle of the unit is completed or dropped.
    pub async fn wait(self) -> AckStatus {
        // The sender lives in the shared state and always sends on drop, so a closed
        // channel can only mean the unit was torn down abnormally: treat it as failed.
        self.receiver.await.unwrap_or(AckStatus::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn receipt_resolves_delivered_when_every_clone_completes() {
        let (handle, receipt) = Acknowledgement::new_unit();
        let second = handle.clone();
        handle.complete(AckStatus::Delivered);
        second.complete(AckStatus::Delivered);
        assert_eq!(receipt.wait().await, AckStatus::Delivered);
    }

    #[tokio::test]
    async fn one_failed_clone_fails_the_unit() {
        let (handle, receipt) = Acknowledgement::new_unit();
        let second = handle.clone();
        handle.complete(AckStatus::Failed);
        second.complete(AckStatus::Delivered);
        assert_eq!(receipt.wait().await, AckStatus::Failed);
    }

    #[tokio::test]
    async fn handle_dropped_without_status_counts_as_failed() {
        let (handle, receipt) = Acknowledgement::new_unit();
        let second = handle.clone();
        handle.complete(AckStatus::Delivered);
        drop(second);
        assert_eq!(receipt.wait().await, AckStatus::Failed);
    }

    #[tokio::test]
    async fn receipt_waits_for_the_last_clone() {
        let (handle, receipt) = Acknowledgement::new_unit();
        let second = handle.clone();
        handle.complete(AckStatus::Delivered);
        let mut wait = Box::pin(receipt.wait());
        assert!(futures_poll_once(&mut wait).is_none());
        second.complete(AckStatus::Delivered);
        assert_eq!(wait.await, AckStatus::Delivered);
    }

    fn futures_poll_once<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(future).poll(&mut context) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        }
    }
}
