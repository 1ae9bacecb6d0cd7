//! A switch egress queue: FIFO of packet handles with a byte capacity, allocated once
//! at construction. A full queue refuses; it never grows.

use std::collections::VecDeque;

/// One queued packet: the driver's handle for it, its wire size and where it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<H> {
    pub handle: H,
    pub bytes: u32,
    pub in_port: u16,
    pub enqueued_at: u64,
    /// ECN-capable and not yet marked: a candidate for marking at dequeue.
    pub ect: bool,
}

/// A bounded FIFO.
#[derive(Debug, Clone)]
pub struct EgressQueue<H> {
    entries: VecDeque<Entry<H>>,
    slots: usize,
    bytes: u64,
    cap_bytes: u64,
}

/// The queue had no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl<H: Copy> EgressQueue<H> {
    /// A queue of `cap_bytes`, with slots for that many minimum-size (60-byte) frames.
    pub fn new(cap_bytes: u64) -> Self {
        let slots = (cap_bytes / 60 + 1) as usize;
        EgressQueue {
            entries: VecDeque::with_capacity(slots),
            slots,
            bytes: 0,
            cap_bytes,
        }
    }

    /// Whether `bytes` more would fit.
    pub fn fits(&self, bytes: u32) -> bool {
        self.bytes + u64::from(bytes) <= self.cap_bytes && self.entries.len() < self.slots
    }

    pub fn push(&mut self, e: Entry<H>) -> Result<(), Full> {
        if !self.fits(e.bytes) {
            return Err(Full);
        }
        self.bytes += u64::from(e.bytes);
        self.entries.push_back(e);
        Ok(())
    }

    /// Like [`push`](Self::push) but ignoring the byte capacity (lossless ports rely
    /// on PFC headroom); still bounded by the slot count.
    pub fn push_over(&mut self, e: Entry<H>) -> Result<(), Full> {
        if self.entries.len() >= self.slots {
            return Err(Full);
        }
        self.bytes += u64::from(e.bytes);
        self.entries.push_back(e);
        Ok(())
    }

    pub fn pop(&mut self) -> Option<Entry<H>> {
        let e = self.entries.pop_front()?;
        self.bytes -= u64::from(e.bytes);
        Some(e)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn cap_bytes(&self) -> u64 {
        self.cap_bytes
    }
    /// Removes every packet (a link went down); the caller frees the handles.
    pub fn drain(&mut self) -> impl Iterator<Item = Entry<H>> + '_ {
        self.bytes = 0;
        self.entries.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(h: u32, bytes: u32) -> Entry<u32> {
        Entry {
            handle: h,
            bytes,
            in_port: 0,
            enqueued_at: 0,
            ect: false,
        }
    }

    #[test]
    fn refuses_past_capacity_and_is_fifo() {
        let mut q = EgressQueue::new(3000);
        q.push(e(1, 1500)).unwrap();
        q.push(e(2, 1500)).unwrap();
        assert_eq!(q.push(e(3, 1)), Err(Full));
        assert_eq!(q.bytes(), 3000);
        assert_eq!(q.pop().unwrap().handle, 1);
        assert_eq!(q.bytes(), 1500);
        q.push(e(3, 100)).unwrap();
        assert_eq!(q.pop().unwrap().handle, 2);
        assert_eq!(q.pop().unwrap().handle, 3);
        assert!(q.pop().is_none());
    }
}
