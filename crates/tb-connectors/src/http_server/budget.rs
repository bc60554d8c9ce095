//! The bytes of request bodies one server holds at once, bounded by `max_buffered`.
//!
//! `max_requests` bounds how many requests are handled at once, but each may hold a body of
//! `max_body` (and a compressed JSON array expanded to `max_decompressed`): a few hundred
//! clients at once would hold gigabytes. Every body therefore takes its bytes from one
//! budget as it is read, and gives them back when its request is answered; a body that does
//! not fit is answered 503 with Retry-After instead of waiting.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budget is counted in units of this many bytes (a semaphore takes at most `u32` at once).
const UNIT: usize = 1024;

/// A server's body budget.
#[derive(Clone)]
pub(super) struct BodyBudget {
    units: Arc<Semaphore>,
    max_bytes: usize,
}

/// Bytes taken from the budget, given back when dropped.
#[derive(Default)]
pub(super) struct Held {
    permits: Vec<OwnedSemaphorePermit>,
}

impl BodyBudget {
    /// A budget of `max_bytes`.
    pub(super) fn new(max_bytes: usize) -> Self {
        Self {
            units: Arc::new(Semaphore::new(units(max_bytes).max(1))),
            max_bytes,
        }
    }

    /// The budget's size in bytes.
    pub(super) fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Takes `bytes` more into `held`, if the budget has them now.
    pub(super) fn take(&self, held: &mut Held, bytes: usize) -> bool {
        let wanted = u32::try_from(units(bytes)).unwrap_or(u32::MAX);
        if wanted == 0 {
            return true;
        }
        match self.units.clone().try_acquire_many_owned(wanted) {
            Ok(permit) => {
                held.permits.push(permit);
                true
            }
            Err(_) => false,
        }
    }
}

fn units(bytes: usize) -> usize {
    bytes.div_ceil(UNIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_held_are_given_back_when_dropped() {
        let budget = BodyBudget::new(10 * UNIT);
        let mut first = Held::default();
        assert!(budget.take(&mut first, 6 * UNIT));
        let mut second = Held::default();
        assert!(!budget.take(&mut second, 6 * UNIT), "only 4 units are left");
        assert!(budget.take(&mut second, 4 * UNIT));
        drop(first);
        assert!(
            budget.take(&mut second, 6 * UNIT),
            "the first body's bytes came back"
        );
    }
}
