//! The receiver's reorder buffer: a ring bitmap over a bounded window of packet
//! sequence numbers, in the spirit of smoltcp's bounded assembler.
//!
//! It answers one question per arriving packet: deliver it (and everything it
//! unblocks) now, hold it, or drop it as a duplicate or as beyond the window. The
//! payload storage itself belongs to the driver (the simulator has none, the emu
//! datapath keeps a ring of `window` payload slots indexed by `index % window`); this
//! type guarantees that every index is delivered exactly once and in order.

use crate::wire::ack::{SackBitmap, MAX_SACK_PSNS};
use crate::wire::U24_MASK;

/// What to do with an arriving packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Deliver packets `from..to` (by index) in order: the arrival filled the head
    /// of the window, possibly releasing held packets behind it.
    Deliver { from: u64, to: u64 },
    /// Held until the gap before it fills.
    Held,
    /// Already delivered or already held: drop it.
    Duplicate,
    /// Too far ahead to hold: drop it (the sender will retransmit).
    BeyondWindow,
}

/// A bounded reorder buffer over 24-bit PSNs.
#[derive(Debug, Clone)]
pub struct ReorderBuffer {
    /// Next index to deliver; every index below it was delivered once.
    expected: u64,
    bits: Vec<u64>,
    window: u64,
    held: u32,
    /// Packets that arrived ahead of a gap.
    pub out_of_order: u64,
    pub duplicates: u64,
    pub beyond_window: u64,
    /// Most packets held at once.
    pub max_held: u32,
}

impl ReorderBuffer {
    /// A buffer that holds up to `window` packets ahead of the next expected one
    /// (1 ..= 2²³, so that 24-bit PSNs unwrap unambiguously).
    pub fn new(window: u32) -> ReorderBuffer {
        let window = u64::from(window.clamp(1, 1 << 23));
        ReorderBuffer {
            expected: 0,
            bits: vec![0; window.div_ceil(64) as usize],
            window,
            held: 0,
            out_of_order: 0,
            duplicates: 0,
            beyond_window: 0,
            max_held: 0,
        }
    }

    pub fn expected(&self) -> u64 {
        self.expected
    }
    pub fn held(&self) -> u32 {
        self.held
    }
    pub fn window(&self) -> u64 {
        self.window
    }

    /// The index a 24-bit PSN stands for, taken as the nearest one to `expected`
    /// (serial-number arithmetic): up to 2²³ − 1 ahead or 2²³ behind. Indices that
    /// would be negative (before the first packet) are `None`.
    pub fn unwrap_psn(&self, psn: u32) -> Option<u64> {
        let here = (self.expected & u64::from(U24_MASK)) as u32;
        let ahead = psn.wrapping_sub(here) & U24_MASK;
        if ahead < (1 << 23) {
            Some(self.expected + u64::from(ahead))
        } else {
            self.expected.checked_sub(u64::from((1 << 24) - ahead))
        }
    }

    fn slot(&self, index: u64) -> (usize, u64) {
        let i = index % self.window;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    fn is_held(&self, index: u64) -> bool {
        let (w, b) = self.slot(index);
        self.bits[w] & b != 0
    }

    /// A packet with this PSN arrived.
    pub fn arrive(&mut self, psn: u32) -> Arrival {
        let Some(index) = self.unwrap_psn(psn) else {
            self.duplicates += 1;
            return Arrival::Duplicate;
        };
        if index < self.expected {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        if index >= self.expected + self.window {
            self.beyond_window += 1;
            return Arrival::BeyondWindow;
        }
        if index > self.expected {
            if self.is_held(index) {
                self.duplicates += 1;
                return Arrival::Duplicate;
            }
            let (w, b) = self.slot(index);
            self.bits[w] |= b;
            self.held += 1;
            self.out_of_order += 1;
            self.max_held = self.max_held.max(self.held);
            return Arrival::Held;
        }
        let from = self.expected;
        self.expected += 1;
        while self.held > 0 && self.is_held(self.expected) {
            let (w, b) = self.slot(self.expected);
            self.bits[w] &= !b;
            self.held -= 1;
            self.expected += 1;
        }
        Arrival::Deliver {
            from,
            to: self.expected,
        }
    }

    /// The SACK bitmap for an ACK: bit k set when index `expected + 1 + k` is held.
    pub fn sack(&self) -> SackBitmap {
        let mut s = SackBitmap::default();
        if self.held == 0 {
            return s;
        }
        let span = (self.window - 1).min(MAX_SACK_PSNS as u64);
        let mut left = self.held;
        for k in 0..span {
            if left == 0 {
                break;
            }
            if self.is_held(self.expected + 1 + k) {
                s.set(k as usize);
                left -= 1;
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_delivers_one_by_one() {
        let mut r = ReorderBuffer::new(8);
        assert_eq!(r.arrive(0), Arrival::Deliver { from: 0, to: 1 });
        assert_eq!(r.arrive(1), Arrival::Deliver { from: 1, to: 2 });
        assert_eq!(r.out_of_order, 0);
    }

    #[test]
    fn gap_fill_releases_held_packets() {
        let mut r = ReorderBuffer::new(8);
        assert_eq!(r.arrive(2), Arrival::Held);
        assert_eq!(r.arrive(1), Arrival::Held);
        assert_eq!(r.sack().iter().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(r.arrive(2), Arrival::Duplicate);
        assert_eq!(r.arrive(0), Arrival::Deliver { from: 0, to: 3 });
        assert_eq!(r.held(), 0);
        assert_eq!(r.arrive(0), Arrival::Duplicate);
        assert_eq!((r.out_of_order, r.duplicates, r.max_held), (2, 2, 2));
    }

    #[test]
    fn beyond_window_is_dropped_and_counted() {
        let mut r = ReorderBuffer::new(4);
        assert_eq!(r.arrive(4), Arrival::BeyondWindow);
        assert_eq!(r.arrive(3), Arrival::Held);
        assert_eq!(r.beyond_window, 1);
    }

    #[test]
    fn psns_wrap_at_24_bits() {
        let mut r = ReorderBuffer::new(16);
        r.expected = (1 << 24) - 2;
        assert_eq!(r.arrive(0xff_ffff), Arrival::Held);
        assert_eq!(r.arrive(0), Arrival::Held);
        assert_eq!(
            r.arrive(0xff_fffe),
            Arrival::Deliver {
                from: (1 << 24) - 2,
                to: (1 << 24) + 1
            }
        );
        assert_eq!(r.unwrap_psn(0xff_fffe), Some((1 << 24) - 2));
        assert_eq!(r.arrive(0xff_fffe), Arrival::Duplicate);
    }

    proptest! {
        /// Whatever the arrival order, duplication and loss, every index is delivered
        /// at most once, in order, and exactly the prefix that arrived is delivered.
        #[test]
        fn delivers_each_index_once_in_order(
            n in 1u64..300,
            window in 1u32..64,
            swaps in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..200),
            dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..50),
            resend_rounds in 1usize..6,
        ) {
            let mut r = ReorderBuffer::new(window);
            let mut delivered: Vec<u64> = Vec::new();
            // Each round the sender resends everything not yet delivered, in a
            // shuffled order with duplicates; beyond-window drops recover next round.
            for _ in 0..resend_rounds {
                let mut order: Vec<u64> = (r.expected()..n).collect();
                if order.is_empty() { break; }
                for (a, b) in &swaps {
                    let (i, j) = (a.index(order.len()), b.index(order.len()));
                    order.swap(i, j);
                }
                for d in &dups {
                    let i = d.index(order.len());
                    order.push(order[i]);
                }
                for idx in order {
                    if let Arrival::Deliver { from, to } = r.arrive((idx & u64::from(U24_MASK)) as u32) {
                        delivered.extend(from..to);
                    }
                }
            }
            let expected: Vec<u64> = (0..delivered.len() as u64).collect();
            prop_assert_eq!(&delivered, &expected);
            prop_assert!(r.held() as u64 <= r.window());
        }
    }
}
