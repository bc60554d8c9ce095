//! End-to-end acknowledgements with graded outcomes.
//!
//! A source makes one [`Acknowledgement`] per unit it confirms upstream (an HTTP request, a
//! chunk of a file, a broker delivery) and gives each event a clone of its [`AckHandle`].
//! Fan-out clones the handle; every clone must be completed. When the last handle is gone the
//! source's [`AckReceipt`] resolves with the merged [`AckOutcome`].
//!
//! Outcomes merge by severity, [`AckStatus::Delivered`] < [`AckStatus::Errored`] <
//! [`AckStatus::Rejected`], and the first reason given at the worst severity is kept. A
//! handle dropped without a status counts as *errored* (a component died with the event in
//! flight, or a bug lost it): the source does not confirm it, and a broker redelivers it.
//!
//! An output built from many inputs (a batch, a window result) carries a handle made by
//! [`AckHandle::join`]: when it completes, every parent completes with its outcome.
//!
//! Cost: one allocation per acknowledgement unit and one atomic increment per clone; the
//! reason lock is taken only by completions that are not `Delivered`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;

/// How an event (or a whole unit) ended, ordered by severity.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
#[repr(u8)]
pub enum AckStatus {
    /// Every destination has the event durably or delivered it, or a step filtered it out.
    Delivered = 0,
    /// It may succeed if tried again: a sink's 5xx or timeout, a broken connection, a
    /// component that died with the event in flight.
    Errored = 1,
    /// It will never succeed as it is: a VRL error or a 4xx when nothing reads `_errors`.
    Rejected = 2,
}

impl AckStatus {
    /// Lowercase name, for logs, protocol lines and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Errored => "errored",
            Self::Rejected => "rejected",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Delivered,
            1 => Self::Errored,
            _ => Self::Rejected,
        }
    }
}

/// The merged outcome of a unit: its worst status and the first reason given at it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AckOutcome {
    /// The worst status of any clone.
    pub status: AckStatus,
    /// Why, when not delivered (the first reason at that severity).
    pub reason: Option<Arc<str>>,
}

impl AckOutcome {
    /// A delivered outcome.
    pub const DELIVERED: Self = Self {
        status: AckStatus::Delivered,
        reason: None,
    };

    /// Whether every clone was delivered.
    pub fn is_delivered(&self) -> bool {
        self.status == AckStatus::Delivered
    }

    /// The reason, or a word for the status when none was given.
    pub fn reason_or_status(&self) -> &str {
        self.reason.as_deref().unwrap_or(self.status.as_str())
    }
}

/// Why a handle dropped without a status failed its unit.
const DROPPED_REASON: &str = "an event was dropped before it was delivered";

/// Who hears the merged outcome when the last handle goes.
enum AckTarget {
    /// A source waiting on its receipt.
    Source(Option<oneshot::Sender<AckOutcome>>),
    /// The handles of the events this one was built from.
    Parents(Vec<AckHandle>),
}

struct AckShared {
    status: AtomicU8,
    // Invariant: the reason for `status`, set under this lock by the first completion that
    // reached the current severity with a reason. `target` is only taken on drop.
    merged: Mutex<MergeState>,
}

struct MergeState {
    reason: Option<Arc<str>>,
    target: AckTarget,
}

impl AckShared {
    fn new(target: AckTarget) -> Arc<Self> {
        Arc::new(Self {
            status: AtomicU8::new(AckStatus::Delivered as u8),
            merged: Mutex::new(MergeState {
                reason: None,
                target,
            }),
        })
    }

    fn record(&self, status: AckStatus, reason: Option<Arc<str>>) {
        if status == AckStatus::Delivered {
            return;
        }
        let mut merged = self.merged.lock().unwrap_or_else(PoisonError::into_inner);
        let current = AckStatus::from_u8(self.status.load(Ordering::Acquire));
        if status > current {
            self.status.store(status as u8, Ordering::Release);
            merged.reason = reason;
        } else if status == current && merged.reason.is_none() {
            merged.reason = reason;
        }
    }
}

impl Drop for AckShared {
    fn drop(&mut self) {
        let status = AckStatus::from_u8(*self.status.get_mut());
        let merged = self
            .merged
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let reason = merged.reason.take();
        match std::mem::replace(&mut merged.target, AckTarget::Parents(Vec::new())) {
            AckTarget::Source(sender) => {
                if let Some(sender) = sender {
                    // The source may have stopped waiting (shutdown); nothing to tell then.
                    let _ = sender.send(AckOutcome { status, reason });
                }
            }
            AckTarget::Parents(parents) => {
                for parent in parents {
                    parent.complete_with(status, reason.clone());
                }
            }
        }
    }
}

/// Creates acknowledgement units.
pub struct Acknowledgement;

impl Acknowledgement {
    /// Starts a unit: the handle goes with the events, the receipt stays with the source.
    pub fn new_unit() -> (AckHandle, AckReceipt) {
        let (sender, receiver) = oneshot::channel();
        let shared = AckShared::new(AckTarget::Source(Some(sender)));
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
/// Dropping a handle without [`AckHandle::complete`] marks the unit errored.
pub struct AckHandle {
    shared: Option<Arc<AckShared>>,
}

impl AckHandle {
    /// A handle that tracks nothing, for sources that confirm nothing upstream.
    pub fn untracked() -> Self {
        Self { shared: None }
    }

    /// A handle for an event built from several: completing it completes every parent with
    /// the same outcome. Untracked parents are left out; one tracked parent is returned as is.
    pub fn join(parents: impl IntoIterator<Item = AckHandle>) -> Self {
        let mut tracked: Vec<AckHandle> =
            parents.into_iter().filter(AckHandle::is_tracked).collect();
        match tracked.len() {
            0 => Self::untracked(),
            1 => tracked.pop().unwrap_or_else(Self::untracked),
            _ => Self {
                shared: Some(AckShared::new(AckTarget::Parents(tracked))),
            },
        }
    }

    /// Whether a source is waiting on this handle.
    pub fn is_tracked(&self) -> bool {
        self.shared.is_some()
    }

    /// Records this reference's outcome and releases it.
    pub fn complete(self, status: AckStatus) {
        self.complete_with(status, None);
    }

    /// Records this reference's outcome with the reason, and releases it.
    pub fn complete_with(mut self, status: AckStatus, reason: Option<Arc<str>>) {
        if let Some(shared) = self.shared.take() {
            shared.record(status, reason);
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
            shared.record(AckStatus::Errored, Some(Arc::from(DROPPED_REASON)));
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
    receiver: oneshot::Receiver<AckOutcome>,
}

impl AckReceipt {
    /// Waits until every handle of the unit is completed or dropped.
    pub async fn wait(self) -> AckOutcome {
        // The sender lives in the shared state and always sends on drop, so a closed
        // channel can only mean the unit was torn down abnormally: treat it as errored.
        self.receiver.await.unwrap_or_else(|_closed| AckOutcome {
            status: AckStatus::Errored,
            reason: Some(Arc::from(DROPPED_REASON)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> Option<Arc<str>> {
        Some(Arc::from(text))
    }

    #[tokio::test]
    async fn receipt_resolves_delivered_when_every_clone_completes() {
        let (handle, receipt) = Acknowledgement::new_unit();
        let second = handle.clone();
        handle.complete(AckStatus::Delivered);
        second.complete(AckStatus::Delivered);
        assert_eq!(receipt.wait().await, AckOutcome::DELIVERED);
    }

    #[tokio::test]
    async fn worst_status_wins_and_keeps_its_first_reason() {
        let (handle, receipt) = Acknowledgement::new_unit();
        let clones: Vec<AckHandle> = (0..3).map(|_| handle.clone()).collect();
        let mut clones = clones.into_iter();
        handle.complete_with(AckStatus::Errored, reason("timeout"));
        clones
            .next()
            .expect("clone")
            .complete_with(AckStatus::Rejected, reason("4xx"));
        clones
            .next()
            .expect("clone")
            .complete_with(AckStatus::Rejected, reason("second 4xx"));
        clones
            .next()
            .expect("clone")
            .complete_with(AckStatus::Errored, reason("later timeout"));
        let outcome = receipt.wait().await;
        assert_eq!(outcome.status, AckStatus::Rejected);
        assert_eq!(outcome.reason.as_deref(), Some("4xx"));
    }

    #[tokio::test]
    async fn handle_dropped_without_status_counts_as_errored() {
        let (handle, receipt) = Acknowledgement::new_unit();
        let second = handle.clone();
        handle.complete(AckStatus::Delivered);
        drop(second);
        let outcome = receipt.wait().await;
        assert_eq!(outcome.status, AckStatus::Errored);
        assert_eq!(outcome.reason.as_deref(), Some(DROPPED_REASON));
    }

    #[tokio::test]
    async fn receipt_waits_for_the_last_clone() {
        let (handle, receipt) = Acknowledgement::new_unit();
        let second = handle.clone();
        handle.complete(AckStatus::Delivered);
        let mut wait = Box::pin(receipt.wait());
        assert!(futures_poll_once(&mut wait).is_none());
        second.complete(AckStatus::Delivered);
        assert_eq!(wait.await, AckOutcome::DELIVERED);
    }

    #[tokio::test]
    async fn joined_handle_completes_every_parent_with_its_outcome() {
        let (first, first_receipt) = Acknowledgement::new_unit();
        let (second, second_receipt) = Acknowledgement::new_unit();
        let joined = AckHandle::join([first, second, AckHandle::untracked()]);
        let mut waiting = Box::pin(first_receipt.wait());
        assert!(futures_poll_once(&mut waiting).is_none());
        joined.complete_with(AckStatus::Rejected, reason("bad batch"));
        let first = waiting.await;
        let second = second_receipt.wait().await;
        for outcome in [first, second] {
            assert_eq!(outcome.status, AckStatus::Rejected);
            assert_eq!(outcome.reason.as_deref(), Some("bad batch"));
        }
    }

    #[tokio::test]
    async fn joined_handle_dropped_errors_its_parents() {
        let (parent, receipt) = Acknowledgement::new_unit();
        let (other, _other_receipt) = Acknowledgement::new_unit();
        drop(AckHandle::join([parent, other]));
        assert_eq!(receipt.wait().await.status, AckStatus::Errored);
    }

    #[test]
    fn statuses_order_by_severity() {
        assert!(AckStatus::Delivered < AckStatus::Errored);
        assert!(AckStatus::Errored < AckStatus::Rejected);
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
