//! The position tracker: what a source that confirms by position (a file offset, a stream
//! id, a sequence number, a sync marker) may confirm, when acknowledgements arrive in any
//! order.
//!
//! Each unit handed on is tracked with the position just past it, in read order. A unit is
//! settled when its acknowledgement is final (delivered, or rejected and recorded). The
//! confirmed position is the end of the longest run of settled units from the start: it
//! never passes a unit that is not settled yet, however late that unit's acknowledgement
//! comes. The tracker also caps the events not yet settled: that cap is the source's
//! prefetch.

use std::collections::VecDeque;

/// A tracked unit, to settle later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

struct Tracked<P> {
    end: P,
    events: u64,
    settled: bool,
}

/// Tracks units in read order and the position that may be confirmed.
pub struct PositionTracker<P> {
    confirmed: P,
    // Invariant: `pending[i]` is the unit of ticket `first_ticket + i`, in read order, and
    // the front is never settled (settled fronts are popped at once).
    pending: VecDeque<Tracked<P>>,
    first_ticket: u64,
    unsettled_events: u64,
    max_unsettled_events: u64,
}

impl<P: Clone> PositionTracker<P> {
    /// Starts at `start` (the position already confirmed), holding at most
    /// `max_unsettled_events` events unsettled before [`Self::has_room`] says no.
    pub fn new(start: P, max_unsettled_events: u64) -> Self {
        Self {
            confirmed: start,
            pending: VecDeque::new(),
            first_ticket: 0,
            unsettled_events: 0,
            max_unsettled_events: max_unsettled_events.max(1),
        }
    }

    /// Tracks the next unit read, with `events` events, ending at `end`.
    pub fn track(&mut self, end: P, events: u64) -> Ticket {
        let ticket = Ticket(self.first_ticket + self.pending.len() as u64);
        self.pending.push_back(Tracked {
            end,
            events,
            settled: false,
        });
        self.unsettled_events += events;
        ticket
    }

    /// Settles a unit. Returns the new confirmed position if it moved.
    pub fn settle(&mut self, ticket: Ticket) -> Option<P> {
        let index = ticket.0.checked_sub(self.first_ticket)?;
        let unit = self.pending.get_mut(usize::try_from(index).ok()?)?;
        if unit.settled {
            return None;
        }
        unit.settled = true;
        self.unsettled_events -= unit.events;
        let mut moved = false;
        while self.pending.front().is_some_and(|unit| unit.settled) {
            if let Some(unit) = self.pending.pop_front() {
                self.confirmed = unit.end;
                self.first_ticket += 1;
                moved = true;
            }
        }
        moved.then(|| self.confirmed.clone())
    }

    /// The position up to which everything is settled.
    pub fn confirmed(&self) -> &P {
        &self.confirmed
    }

    /// Whether another unit may be read: the events not settled are under the prefetch cap.
    pub fn has_room(&self) -> bool {
        self.unsettled_events < self.max_unsettled_events
    }

    /// Units tracked and not yet behind the confirmed position.
    pub fn pending_units(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn confirmed_waits_for_the_gap_then_jumps() {
        let mut tracker = PositionTracker::new(0u64, 100);
        let first = tracker.track(10, 1);
        let second = tracker.track(20, 1);
        let third = tracker.track(30, 1);
        assert_eq!(tracker.settle(third), None);
        assert_eq!(tracker.settle(second), None);
        assert_eq!(*tracker.confirmed(), 0);
        assert_eq!(tracker.settle(first), Some(30));
        assert_eq!(tracker.pending_units(), 0);
    }

    #[test]
    fn the_prefetch_cap_counts_unsettled_events() {
        let mut tracker = PositionTracker::new(0u64, 10);
        let first = tracker.track(1, 6);
        assert!(tracker.has_room());
        tracker.track(2, 4);
        assert!(!tracker.has_room());
        tracker.settle(first);
        assert!(tracker.has_room());
    }

    #[test]
    fn settling_twice_or_an_unknown_ticket_changes_nothing() {
        let mut tracker = PositionTracker::new(0u64, 10);
        let first = tracker.track(5, 1);
        assert_eq!(tracker.settle(first), Some(5));
        assert_eq!(tracker.settle(first), None);
        assert_eq!(tracker.settle(Ticket(99)), None);
        assert_eq!(*tracker.confirmed(), 5);
    }

    proptest! {
        /// However acknowledgements are ordered, the confirmed position is always the end of
        /// the longest settled prefix: it never passes a unit that is not settled.
        #[test]
        fn confirmed_never_passes_an_unsettled_unit(
            sizes in proptest::collection::vec(1u64..50, 1..60),
            order in proptest::collection::vec(any::<proptest::sample::Index>(), 0..60),
        ) {
            let mut tracker = PositionTracker::new(0u64, u64::MAX);
            let mut ends = Vec::new();
            let mut position = 0;
            let tickets: Vec<Ticket> = sizes.iter().map(|size| {
                position += size;
                ends.push(position);
                tracker.track(position, 1)
            }).collect();
            let mut settled = vec![false; tickets.len()];
            for index in order {
                let unit = index.index(tickets.len());
                tracker.settle(tickets[unit]);
                settled[unit] = true;
                let prefix = settled.iter().take_while(|done| **done).count();
                let expected = if prefix == 0 { 0 } else { ends[prefix - 1] };
                prop_assert_eq!(*tracker.confirmed(), expected);
            }
        }
    }
}
