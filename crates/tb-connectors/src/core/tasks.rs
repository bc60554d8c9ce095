//! Tasks a connector spawns: in the component's tracing span, and owned by whoever spawned
//! them, so a connector that stops or dies takes its helpers with it.
//!
//! A plain `tokio::spawn` would outlive a connector that panicked: a dispatcher still holding
//! the input queue would keep the restarted connector from ever reading it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::task::{JoinError, JoinHandle};
use tracing::Instrument;

/// A spawned task that is aborted when this handle is dropped.
pub struct OwnedTask<T> {
    handle: JoinHandle<T>,
}

/// Spawns `future` on the runtime, in the current span, owned by the returned handle.
pub fn spawn_owned<F>(future: F) -> OwnedTask<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    OwnedTask {
        handle: tokio::spawn(future.in_current_span()),
    }
}

impl<T> Future for OwnedTask<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.handle).poll(context)
    }
}

impl<T> Drop for OwnedTask<T> {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_the_handle_stops_the_task() {
        let (sender, receiver) = tokio::sync::oneshot::channel::<()>();
        let task = spawn_owned(async move {
            let _keep = sender;
            std::future::pending::<()>().await;
        });
        drop(task);
        assert!(
            receiver.await.is_err(),
            "the task was aborted and dropped its sender"
        );
    }
}
