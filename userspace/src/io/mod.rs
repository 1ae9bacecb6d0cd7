//! Packet I/O for the userspace datapath: the [`PacketIo`] trait a single-threaded
//! event loop drives for every port, and its backends: AF_XDP ([`AfXdp`], copy
//! mode, fed by an XDP program) and AF_PACKET ([`AfPacket`], memory-mapped rings).
//!
//! The shape is made for one thread serving many ports (sockets in many network
//! namespaces): each port exposes a file descriptor for epoll, hands received frames
//! to a callback straight out of a kernel ring (no allocation, no syscall per frame)
//! and queues outgoing frames in a ring that one `flush` hands to the kernel.

pub mod afpacket;
pub mod afxdp;
#[cfg(test)]
pub(crate) mod testkit;

pub use afpacket::{AfPacket, AfPacketConfig, RxRing};
pub use afxdp::AfXdp;

/// Per-port counters. All are totals since the port was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Frames handed to `recv` callbacks.
    pub rx_frames: u64,
    /// Frames the kernel accepted for transmission (counted by `flush`).
    pub tx_frames: u64,
    /// Frames the kernel dropped because the receive ring was full (`tp_drops`).
    pub rx_kernel_drops: u64,
    /// Received frames dropped because they did not fit a ring slot (the kernel
    /// truncated them); never handed to a callback.
    pub rx_truncated: u64,
    /// Frames `send` refused (too short, bigger than a TX slot or the MTU).
    pub tx_errors: u64,
}

impl IoStats {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &IoStats) {
        self.rx_frames += other.rx_frames;
        self.tx_frames += other.tx_frames;
        self.rx_kernel_drops += other.rx_kernel_drops;
        self.rx_truncated += other.rx_truncated;
        self.tx_errors += other.tx_errors;
    }
}

/// A port some other thread (or program) serves: it never has frames and discards
/// what it is given. A datapath thread holds one for each port it does not own.
#[derive(Debug)]
pub struct Unserved(String);

impl Unserved {
    pub fn new(ifname: &str) -> Unserved {
        Unserved(ifname.to_string())
    }
}

impl PacketIo for Unserved {
    fn name(&self) -> &str {
        &self.0
    }
    fn fd(&self) -> std::os::fd::RawFd {
        // poll(2) ignores negative descriptors.
        -1
    }
    fn recv(&mut self, _max: usize, _f: &mut dyn FnMut(&[u8])) -> std::io::Result<usize> {
        Ok(0)
    }
    fn send(&mut self, _frame: &[u8]) -> std::io::Result<bool> {
        Ok(true)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn stats(&self) -> IoStats {
        IoStats::default()
    }
}

/// A port the datapath reads frames from and writes frames to.
///
/// Meant for a single-threaded, level-triggered epoll loop: wait on [`fd`](Self::fd),
/// call [`recv`](Self::recv) until it returns fewer than `max`, [`send`](Self::send)
/// what the logic produces, then [`flush`](Self::flush) once per batch.
pub trait PacketIo: std::fmt::Debug + Send {
    /// Name of the interface, for errors and stats.
    fn name(&self) -> &str;

    /// A file descriptor for epoll: readable (`EPOLLIN`) while received frames
    /// wait, writable (`EPOLLOUT`) when the kernel has a free TX slot again.
    fn fd(&self) -> std::os::fd::RawFd;

    /// Hands up to `max` received frames to `f`, oldest first, and returns how many.
    /// Each frame is borrowed from the receive ring and valid only during its call.
    /// Never blocks; returns `Ok(0)` when nothing waits.
    fn recv(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> std::io::Result<usize>;

    /// Queues one frame for transmission (copied into the TX ring). Nothing is sent
    /// before [`flush`](Self::flush).
    ///
    /// - `Ok(true)`: queued.
    /// - `Ok(false)`: the TX ring is full right now; the caller keeps the frame,
    ///   flushes, and retries (once the kernel has freed a slot, see [`fd`](Self::fd)).
    /// - `Err(_)`: this frame can never be sent (shorter than an Ethernet header:
    ///   `InvalidInput`; longer than a TX slot or the interface MTU: `EMSGSIZE`).
    ///   It is counted in `tx_errors` and dropped; the port stays usable.
    fn send(&mut self, frame: &[u8]) -> std::io::Result<bool>;

    /// Hands every queued frame to the kernel with one syscall.
    ///
    /// `Ok(())` when all were taken. `Err` with kind `WouldBlock` when the kernel
    /// took only some (device busy, socket buffer full): the rest stay queued, in
    /// order, for the next `flush`. Any other error (interface down, ...) also leaves
    /// the untaken frames queued.
    fn flush(&mut self) -> std::io::Result<()>;

    /// The counters. May make one syscall (to collect the kernel's drop counter),
    /// so call it from the control path, not per frame.
    fn stats(&self) -> IoStats;
}
