//! The event queue: virtual time in integer nanoseconds, and a total order on events
//! (time, then the order they were scheduled in), so that a seed fixes a run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::packet::Nanos;

/// A deterministic priority queue of events.
#[derive(Debug)]
pub struct EventQueue<E> {
    /// Keyed by `time << 64 | sequence`: one integer comparison orders two events.
    heap: BinaryHeap<Reverse<(u128, Slot<E>)>>,
    seq: u64,
    now: Nanos,
    popped: u64,
}

/// Wraps an event so that only (time, sequence) order the heap.
#[derive(Debug)]
struct Slot<E>(E);

impl<E> PartialEq for Slot<E> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<E> Eq for Slot<E> {}
impl<E> PartialOrd for Slot<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Slot<E> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0,
            popped: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// Schedules `e` at `at` (never before now).
    pub fn schedule(&mut self, at: Nanos, e: E) {
        self.seq += 1;
        let key = (u128::from(at.max(self.now)) << 64) | u128::from(self.seq);
        self.heap.push(Reverse((key, Slot(e))));
    }

    /// The next event, advancing the clock to it.
    pub fn pop(&mut self) -> Option<(Nanos, E)> {
        let Reverse((key, Slot(e))) = self.heap.pop()?;
        let t = (key >> 64) as Nanos;
        self.now = t;
        self.popped += 1;
        Some((t, e))
    }

    pub fn now(&self) -> Nanos {
        self.now
    }
    /// Events processed so far.
    pub fn processed(&self) -> u64 {
        self.popped
    }
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a sorted reference: interleaved schedules (never in the past) and
        /// pops come out in (time, scheduling order).
        #[test]
        fn matches_a_sorted_reference(ops in proptest::collection::vec((any::<bool>(), 0u64..1_000), 1..400)) {
            let mut q = EventQueue::default();
            let mut reference: Vec<(Nanos, u64)> = Vec::new();
            let mut id = 0u64;
            for (push, dt) in ops {
                if push || reference.is_empty() {
                    let at = q.now() + dt;
                    q.schedule(at, id);
                    reference.push((at, id));
                    id += 1;
                } else {
                    reference.sort();
                    let want = reference.remove(0);
                    prop_assert_eq!(q.pop(), Some(want));
                }
            }
            reference.sort();
            for want in reference {
                prop_assert_eq!(q.pop(), Some(want));
            }
            prop_assert!(q.pop().is_none());
        }
    }

    #[test]
    fn orders_by_time_then_by_scheduling_order() {
        let mut q = EventQueue::default();
        q.schedule(20, "c");
        q.schedule(10, "a");
        q.schedule(10, "b");
        let order: Vec<&str> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, ["a", "b", "c"]);
        assert_eq!(q.now(), 20);
        q.schedule(5, "late");
        assert_eq!(q.pop(), Some((20, "late")), "the past is clamped to now");
    }
}
