//! Connecting, and reconnecting with doubling backoff, for client connectors.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Waits that double from `min` to `max`, and start over after a success.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// After a success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// The wait before the next attempt; the one after it is twice as long, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }
}

/// Calls `connect` until it succeeds, waiting per `backoff` between attempts and logging
/// each failure against `peer`. Returns `None` when `stop` is cancelled first; `stop` is
/// only watched when `stoppable` (a client that still has input to send keeps trying, so
/// nothing it holds is lost).
pub async fn connect_with_backoff<T, E, F, Fut>(
    mut connect: F,
    backoff: &mut Backoff,
    stop: &CancellationToken,
    stoppable: bool,
    connector: &(dyn Display + Sync),
    peer: &(dyn Display + Sync),
) -> Option<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        let attempt = tokio::select! {
            biased;
            () = stop.cancelled(), if stoppable => return None,
            attempt = connect() => attempt,
        };
        match attempt {
            Ok(connection) => {
                backoff.reset();
                return Some(connection);
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(connector = %connector, peer = %peer, %error, retry_in = ?delay, "Cannot connect; retrying.");
                tokio::select! {
                    biased;
                    () = stop.cancelled(), if stoppable => return None,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Sleeps `delay`, or less if `stop` is cancelled while `stoppable`.
pub async fn pause(delay: Duration, stop: &CancellationToken, stoppable: bool) {
    tokio::select! {
        biased;
        () = stop.cancelled(), if stoppable => {}
        () = tokio::time::sleep(delay) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_max_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<u128> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn connect_retries_until_success() {
        let mut attempts = 0;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let stop = CancellationToken::new();
        let connected = connect_with_backoff(
            || {
                attempts += 1;
                let result = if attempts < 3 {
                    Err("refused")
                } else {
                    Ok(attempts)
                };
                async move { result }
            },
            &mut backoff,
            &stop,
            true,
            &"client",
            &"127.0.0.1:1",
        )
        .await;
        assert_eq!(connected, Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_the_attempts_when_stoppable() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let stop = CancellationToken::new();
        stop.cancel();
        let connected: Option<()> = connect_with_backoff(
            || async { Err("refused") },
            &mut backoff,
            &stop,
            true,
            &"client",
            &"127.0.0.1:1",
        )
        .await;
        assert_eq!(connected, None);
    }
}
