//! A destination's circuit breaker: after `consecutive_failures` failed loads in a row it
//! opens, and loads pause (jobs wait without spending their retries); after `cool_down` one
//! probe load is let through, and its outcome closes the circuit or opens it again.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::CircuitBreakerConfig;

/// The breaker's state, as the API and metrics show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    /// Loads run.
    Closed,
    /// Loads are paused until the cool-down ends.
    Open,
    /// One probe load runs; its outcome decides.
    HalfOpen,
}

impl CircuitState {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: CircuitState,
    failures: u32,
    open_until: Option<Instant>,
}

/// A breaker; clones share it (the destination's run and the API).
#[derive(Clone, Debug)]
pub struct Breaker {
    config: Option<CircuitBreakerConfig>,
    inner: Arc<Mutex<Inner>>,
}

/// What the breaker allows now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowance {
    /// As many loads as there is room for.
    Any,
    /// One probe load.
    Probe,
    /// None, until this long has passed.
    Wait(Duration),
}

impl Breaker {
    /// A closed breaker; without `config` it never opens.
    pub fn new(config: Option<CircuitBreakerConfig>) -> Self {
        Self {
            config,
            inner: Arc::new(Mutex::new(Inner {
                state: CircuitState::Closed,
                failures: 0,
                open_until: None,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Its state.
    pub fn state(&self) -> CircuitState {
        self.lock().state
    }

    /// Whether loads may start now (`in_flight` are running). An open circuit whose cool-down
    /// is over turns half-open and lets one probe through once nothing else is in flight.
    pub fn allowance(&self, now: Instant, in_flight: usize) -> Allowance {
        let mut inner = self.lock();
        match inner.state {
            CircuitState::Closed => Allowance::Any,
            CircuitState::HalfOpen => Allowance::Wait(Duration::from_millis(100)),
            CircuitState::Open => match inner.open_until {
                Some(until) if until > now => Allowance::Wait(until - now),
                _ if in_flight > 0 => Allowance::Wait(Duration::from_millis(100)),
                _ => {
                    inner.state = CircuitState::HalfOpen;
                    Allowance::Probe
                }
            },
        }
    }

    /// Records a load's outcome (`failed`: it failed in a way worth retrying); returns
    /// whether the circuit changed between open and closed.
    pub fn record(&self, failed: bool, now: Instant) -> bool {
        let Some(config) = &self.config else {
            return false;
        };
        let mut inner = self.lock();
        let was_open = inner.state != CircuitState::Closed;
        if !failed {
            inner.failures = 0;
            inner.state = CircuitState::Closed;
            inner.open_until = None;
            return was_open;
        }
        inner.failures = inner.failures.saturating_add(1);
        if inner.state == CircuitState::HalfOpen || inner.failures >= config.consecutive_failures {
            inner.state = CircuitState::Open;
            inner.open_until = Some(now + config.cool_down);
            return !was_open;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_circuit_opens_after_failures_in_a_row_and_a_probe_closes_it() {
        let breaker = Breaker::new(Some(CircuitBreakerConfig {
            consecutive_failures: 3,
            cool_down: Duration::from_secs(30),
        }));
        let start = Instant::now();
        breaker.record(true, start);
        breaker.record(false, start);
        breaker.record(true, start);
        breaker.record(true, start);
        assert_eq!(
            breaker.state(),
            CircuitState::Closed,
            "a success in between resets"
        );
        assert!(breaker.record(true, start), "the third in a row opens it");
        assert_eq!(
            breaker.allowance(start + Duration::from_secs(10), 0),
            Allowance::Wait(Duration::from_secs(20))
        );
        let later = start + Duration::from_secs(31);
        assert_eq!(
            breaker.allowance(later, 1),
            Allowance::Wait(Duration::from_millis(100)),
            "waits for loads in flight"
        );
        assert_eq!(breaker.allowance(later, 0), Allowance::Probe);
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        assert!(
            !breaker.record(true, later),
            "a failed probe opens it again"
        );
        assert_eq!(breaker.state(), CircuitState::Open);
        assert_eq!(
            breaker.allowance(later + Duration::from_secs(31), 0),
            Allowance::Probe
        );
        assert!(breaker.record(false, later), "a good probe closes it");
        assert_eq!(breaker.state(), CircuitState::Closed);
    }
}
