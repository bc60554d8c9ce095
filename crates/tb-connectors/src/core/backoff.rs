//! Connecting, and reconnecting with doubling backoff and jitter, for client connectors and
//! the runtime's supervisor.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

use super::status::{ComponentStatus, StatusCell};

/// Waits that double from `min` to `max`, each with jitter, and start over after a success.
///
/// The schedule and its jitter are backon's; backon adds its jitter on top of a delay (up to
/// twice it), so it is given half of `min` and `max`: each wait falls between half and all
/// of its nominal delay, and never past `max`.
#[derive(Debug)]
pub struct Backoff {
    schedule: ExponentialBuilder,
    delays: backon::ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// Starts at `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        let schedule = ExponentialBuilder::new()
            .with_min_delay(min / 2)
            .with_max_delay(max / 2)
            .with_jitter()
            .without_max_times();
        Self {
            delays: schedule.build(),
            schedule,
            max,
        }
    }

    /// After a success: the next failure waits about `min` again.
    pub fn reset(&mut self) {
        self.delays = self.schedule.build();
    }

    /// The wait before the next attempt; the nominal delay doubles each time, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max).min(self.max)
    }
}

/// Calls `connect` until it succeeds, waiting per `backoff` between attempts and logging
/// each failure against `peer` and showing it in `status` (`reconnecting`, then `running`). Returns `None` when `stop` is cancelled first; `stop` is
/// only watched when `stoppable` (a client that still has input to send keeps trying, so
/// nothing it holds is lost).
pub async fn connect_with_backoff<T, E, F, Fut>(
    mut connect: F,
    backoff: &mut Backoff,
    stop: &CancellationToken,
    stoppable: bool,
    connector: &(dyn Display + Sync),
    peer: &(dyn Display + Sync),
    status: &StatusCell,
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
                status.set(ComponentStatus::Running);
                return Some(connection);
            }
            Err(error) => {
                status.set_with_error(
                    ComponentStatus::Reconnecting,
                    format!("cannot connect to {peer}: {error}"),
                );
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
    fn delays_double_up_to_max_with_jitter_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        for nominal in [100u128, 200, 350, 350, 350] {
            let delay = backoff.next_delay().as_millis();
            assert!(
                (nominal / 2..=nominal).contains(&delay),
                "{delay} ms is not within the jitter of {nominal} ms"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
        let mut capped = Backoff::new(Duration::from_secs(1), Duration::from_secs(2));
        for _ in 0..10 {
            assert!(
                capped.next_delay() <= Duration::from_secs(2),
                "never past max"
            );
        }
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
            &StatusCell::new(),
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
            &StatusCell::new(),
        )
        .await;
        assert_eq!(connected, None);
    }
}
