//! AF_PACKET backend for [`PacketIo`]: one raw socket per port with an mmap'd receive
//! ring and an mmap'd TX ring (`PACKET_TX_RING`) flushed by one `sendto` per batch.
//!
//! Choices (measured on the 2-core test machine with the `measure_*` tests below):
//! - RX uses `TPACKET_V2` by default: every frame is visible to userspace (and wakes
//!   epoll) the moment the kernel has copied it. With `TPACKET_V3` a frame becomes
//!   visible only when its block is full or the block-retire timer fires (1 ms at
//!   best), so at low rates every frame waits for the timer. Round trip of one
//!   64-byte frame over a veth pair with an echo (two hops, both sides asleep in
//!   poll): V2 p50 5.3 us / p99 7.9 us; V3 (1 ms) p50 1000 us. V3 moves about 10%
//!   more 64-byte frames per second (one thread: 1.3 vs 1.2 Mpps) and packs small
//!   frames densely (a 4 MiB V3 ring holds ~40k 64-byte frames, the default V2 ring
//!   448 of any size), so [`RxRing::V3`] stays available for bulk or capture use.
//! - One socket version applies to both rings, so the TX ring uses the same version:
//!   fixed-size slots, `tp_next_offset == 0` for V3.
//! - `PACKET_IGNORE_OUTGOING`: the socket never sees frames sent on its interface
//!   (the datapath reads and writes the same port).
//! - `PACKET_QDISC_BYPASS` (configurable): frames go straight to the driver. This also
//!   skips tc egress programs and taps (`tcpdump`) on the sending interface.
//! - `PACKET_LOSS`: a frame the kernel rejects is skipped instead of wedging the TX ring
//!   at that slot. `send` validates length against the slot and the MTU first, so such
//!   frames are counted as `tx_errors` instead of vanishing.
//! - The kernel moves an 802.1Q/802.1ad tag out of a received frame into metadata
//!   (`skb_vlan_untag` runs before taps). `recv` puts it back in place, using the
//!   headroom the ring leaves in front of each frame, so frames are forwarded tagged.
//!
//! The socket belongs to the network namespace of the thread that calls
//! [`AfPacket::open`] and keeps it when moved to another thread.

use std::cell::Cell;
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

use super::{IoStats, PacketIo};

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_8021Q: u16 = 0x8100;
/// Smallest slot we accept: the V3 header (68 bytes) plus room for a minimum frame.
const MIN_FRAME_SIZE: u32 = 256;

const SLL_LEN: usize = size_of::<libc::sockaddr_ll>();

// TPACKET_V2 frame header (struct tpacket2_hdr).
const V2_HDRLEN: usize = libc::TPACKET2_HDRLEN;
const V2_STATUS: usize = offset_of!(libc::tpacket2_hdr, tp_status);
const V2_LEN: usize = offset_of!(libc::tpacket2_hdr, tp_len);
const V2_SNAPLEN: usize = offset_of!(libc::tpacket2_hdr, tp_snaplen);
const V2_MAC: usize = offset_of!(libc::tpacket2_hdr, tp_mac);
const V2_VLAN_TCI: usize = offset_of!(libc::tpacket2_hdr, tp_vlan_tci);
const V2_VLAN_TPID: usize = offset_of!(libc::tpacket2_hdr, tp_vlan_tpid);

// TPACKET_V3 frame header (struct tpacket3_hdr).
const V3_HDRLEN: usize = libc::TPACKET3_HDRLEN;
const V3_NEXT: usize = offset_of!(libc::tpacket3_hdr, tp_next_offset);
const V3_STATUS: usize = offset_of!(libc::tpacket3_hdr, tp_status);
const V3_LEN: usize = offset_of!(libc::tpacket3_hdr, tp_len);
const V3_SNAPLEN: usize = offset_of!(libc::tpacket3_hdr, tp_snaplen);
const V3_MAC: usize = offset_of!(libc::tpacket3_hdr, tp_mac);
const V3_VLAN_TCI: usize = offset_of!(libc::tpacket3_hdr, hv1.tp_vlan_tci);
const V3_VLAN_TPID: usize = offset_of!(libc::tpacket3_hdr, hv1.tp_vlan_tpid);

// TPACKET_V3 block descriptor (struct tpacket_block_desc, header variant 1).
const BLK_HDR: usize = offset_of!(libc::tpacket_block_desc, hdr);
const BLK_STATUS: usize = BLK_HDR + offset_of!(libc::tpacket_hdr_v1, block_status);
const BLK_NUM_PKTS: usize = BLK_HDR + offset_of!(libc::tpacket_hdr_v1, num_pkts);
const BLK_FIRST_PKT: usize = BLK_HDR + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt);

/// Which TPACKET version the socket's rings use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxRing {
    /// Fixed-size frame slots; each frame is visible as soon as the kernel copied it.
    /// Lowest latency; the default.
    V2,
    /// Frames packed into blocks; a block is visible only when full or after
    /// `retire_timeout_ms` (at least 1; the kernel's timer granularity applies).
    V3 { retire_timeout_ms: u32 },
}

/// Ring geometry. Both rings use `block_size` and `frame_size`; the receive ring has
/// `rx_blocks` blocks, the TX ring `tx_blocks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfPacketConfig {
    pub rx_ring: RxRing,
    /// Bytes per block: a multiple of the page size. A power of two wastes nothing,
    /// as the kernel allocates each block as one power-of-two page run.
    pub block_size: u32,
    /// Bytes per frame slot, header included: a multiple of 16, at most `block_size`.
    /// The largest frame a slot holds is about `frame_size - 66` on receive (V2) and
    /// `frame_size - 32` on transmit (V2; 48 for V3).
    pub frame_size: u32,
    pub rx_blocks: u32,
    pub tx_blocks: u32,
    /// Set `PACKET_QDISC_BYPASS` (skips the qdisc, tc egress and taps on send).
    pub qdisc_bypass: bool,
}

impl Default for AfPacketConfig {
    /// Jumbo-capable: 9216-byte slots (frames up to 9150 bytes received, 9184 sent),
    /// 64 KiB blocks of 7 slots; 448 receive slots (4 MiB) and 224 TX slots (2 MiB).
    fn default() -> Self {
        AfPacketConfig {
            rx_ring: RxRing::V2,
            block_size: 1 << 16,
            frame_size: 9216,
            rx_blocks: 64,
            tx_blocks: 32,
            qdisc_bypass: true,
        }
    }
}

impl AfPacketConfig {
    /// For ports with a 1500-byte MTU: 2 KiB slots, 512 receive slots (1 MiB) and
    /// 256 TX slots (512 KiB). Larger received frames are dropped (`rx_truncated`).
    pub fn standard_mtu() -> Self {
        AfPacketConfig {
            frame_size: 2048,
            rx_blocks: 16,
            tx_blocks: 8,
            ..AfPacketConfig::default()
        }
    }

    /// Slots sized for an interface MTU (a whole Ethernet frame, a VLAN tag and the
    /// ring's own header fit), 64 KiB blocks, and at least 256 receive and 128 TX
    /// slots: far less memory than the jumbo default for the emu's many ports (the
    /// kernel zeroes every ring page when the socket opens).
    pub fn for_mtu(mtu: u32) -> Self {
        // Frame header (V2: 32 bytes, aligned to 16) + sockaddr_ll padding + MAC
        // header + VLAN tag + the MTU, rounded up to 16.
        let frame_size = (mtu + 14 + 4 + 80).next_multiple_of(16).max(MIN_FRAME_SIZE);
        let block_size = (frame_size.next_power_of_two()).max(1 << 16);
        let per_block = block_size / frame_size;
        AfPacketConfig {
            frame_size,
            block_size,
            rx_blocks: 256u32.div_ceil(per_block),
            tx_blocks: 128u32.div_ceil(per_block),
            ..AfPacketConfig::default()
        }
    }

    fn frames_per_block(&self) -> usize {
        (self.block_size / self.frame_size) as usize
    }

    /// Frame slots in the TX ring (how many frames `send` queues before `Ok(false)`).
    pub fn tx_slots(&self) -> usize {
        self.frames_per_block() * self.tx_blocks as usize
    }

    /// Frame slots in the receive ring (V2; for V3 the ring holds
    /// `rx_blocks * block_size` bytes of frames).
    pub fn rx_slots(&self) -> usize {
        self.frames_per_block() * self.rx_blocks as usize
    }

    /// Kernel memory both rings take.
    pub fn ring_bytes(&self) -> usize {
        self.block_size as usize * (self.rx_blocks + self.tx_blocks) as usize
    }

    fn validate(&self) -> Result<(), String> {
        if self.block_size == 0 || !self.block_size.is_multiple_of(4096) {
            return Err(format!(
                "block_size {} must be a non-zero multiple of the page size",
                self.block_size
            ));
        }
        if !self.frame_size.is_multiple_of(16)
            || self.frame_size < MIN_FRAME_SIZE
            || self.frame_size > self.block_size
        {
            return Err(format!(
                "frame_size {} must be a multiple of 16, at least {MIN_FRAME_SIZE} and at most \
                 block_size {}",
                self.frame_size, self.block_size
            ));
        }
        if self.rx_blocks == 0 || self.tx_blocks == 0 {
            return Err("rx_blocks and tx_blocks must be at least 1".into());
        }
        if let RxRing::V3 { retire_timeout_ms } = self.rx_ring {
            if retire_timeout_ms == 0 {
                return Err("V3 retire_timeout_ms must be at least 1".into());
            }
        }
        Ok(())
    }
}

/// The shared mapping of both rings (receive ring first, then the TX ring).
#[derive(Debug)]
struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned exclusively by this value (no aliases outside it) and
// has no thread affinity; moving it to another thread moves sole ownership with it.
unsafe impl Send for Mmap {}

impl Mmap {
    /// The 32-bit ring word at `off`, which the kernel reads and writes concurrently.
    fn u32_at(&self, off: usize) -> &AtomicU32 {
        assert!(
            off.is_multiple_of(4) && off + 4 <= self.len,
            "ring offset {off} out of range"
        );
        // SAFETY: in bounds and 4-aligned (the mapping is page-aligned); the mapping
        // outlives the borrow of `self`. The kernel accesses ring header words with
        // single aligned loads/stores (READ_ONCE/WRITE_ONCE plus barriers), so atomics
        // are the right view of them.
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().wrapping_add(off).cast()) }
    }

    /// The 16-bit ring word at `off` (see [`Mmap::u32_at`]).
    fn u16_at(&self, off: usize) -> &AtomicU16 {
        assert!(
            off.is_multiple_of(2) && off + 2 <= self.len,
            "ring offset {off} out of range"
        );
        // SAFETY: as in `u32_at`, with 2-byte alignment.
        unsafe { AtomicU16::from_ptr(self.ptr.as_ptr().wrapping_add(off).cast()) }
    }

    /// Frame bytes `off..off + len`.
    ///
    /// # Safety
    /// Userspace must own the range (its slot or block status is `TP_STATUS_USER`
    /// on receive) for as long as the returned slice lives, so the kernel does not
    /// write to it meanwhile.
    unsafe fn bytes(&self, off: usize, len: usize) -> &[u8] {
        assert!(off.checked_add(len).is_some_and(|end| end <= self.len));
        // SAFETY: in bounds (checked above); the caller guarantees no concurrent writer.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().wrapping_add(off), len) }
    }

    /// Frame bytes `off..off + len`, writable.
    ///
    /// # Safety
    /// Userspace must own the range (receive slot status `TP_STATUS_USER`, or TX slot
    /// status `TP_STATUS_AVAILABLE`) while the slice lives, so the kernel neither reads
    /// nor writes it meanwhile.
    unsafe fn bytes_mut(&mut self, off: usize, len: usize) -> &mut [u8] {
        assert!(off.checked_add(len).is_some_and(|end| end <= self.len));
        // SAFETY: in bounds (checked above); `&mut self` excludes other userspace
        // borrows and the caller guarantees the kernel does not touch the range.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().wrapping_add(off), len) }
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping made by `mmap` in `AfPacket::open`
        // and owned only by this value; nothing borrows it any more.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Where frame slot `i` of a fixed-slot ring lives in the mapping.
#[derive(Debug, Clone, Copy)]
struct Slots {
    base: usize,
    block_size: usize,
    frame_size: usize,
    per_block: usize,
    count: usize,
}

impl Slots {
    fn new(base: usize, cfg: &AfPacketConfig, blocks: u32) -> Self {
        Slots {
            base,
            block_size: cfg.block_size as usize,
            frame_size: cfg.frame_size as usize,
            per_block: cfg.frames_per_block(),
            count: cfg.frames_per_block() * blocks as usize,
        }
    }

    fn offset(&self, i: usize) -> usize {
        self.base + (i / self.per_block) * self.block_size + (i % self.per_block) * self.frame_size
    }
}

#[derive(Debug)]
enum Rx {
    V2 {
        slots: Slots,
        next: usize,
    },
    V3 {
        base: usize,
        block_size: usize,
        blocks: usize,
        /// Block being read.
        block: usize,
        /// Frames of that block not handed out yet (0: block not opened).
        left: u32,
        /// Offset in the block of the next frame.
        pkt: usize,
    },
}

#[derive(Debug)]
struct Tx {
    slots: Slots,
    status: usize,
    len: usize,
    data: usize,
    /// Next slot `send` fills.
    head: usize,
    /// Filled slots not yet taken by the kernel (the ones just before `head`).
    queued: usize,
}

/// An AF_PACKET port: a raw socket bound to one interface with mmap'd RX and TX rings.
#[derive(Debug)]
pub struct AfPacket {
    // Field order matters: `map` drops (munmap) before `fd` (close).
    map: Mmap,
    fd: OwnedFd,
    name: String,
    ifindex: i32,
    mtu: usize,
    rx: Rx,
    tx: Tx,
    counters: IoStats,
    /// `tp_drops` collected so far (the kernel counter is reset on every read).
    kernel_drops: Cell<u64>,
}

fn os_error(ifname: &str, what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("AF_PACKET {ifname}: {what}: {e}"))
}

fn setsockopt<T>(
    fd: RawFd,
    ifname: &str,
    level: i32,
    name: i32,
    what: &str,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of exactly the length passed; the kernel
    // only reads it during the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(os_error(ifname, what));
    }
    Ok(())
}

/// Runs an interface ioctl (`SIOCGIFINDEX`, `SIOCGIFMTU`) on `fd`, in the socket's
/// network namespace, and returns the integer result.
pub(super) fn ifreq_int(
    fd: RawFd,
    ifname: &str,
    request: libc::c_ulong,
    what: &str,
) -> io::Result<i32> {
    // SAFETY: `ifreq` is plain old data (a name array and a union of integers and
    // plain structs); all-zero bytes are a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `ifr` is a valid, NUL-terminated `ifreq` (name shorter than IFNAMSIZ,
    // checked by the caller) that the kernel reads and writes during the call only.
    let r = unsafe { libc::ioctl(fd, request, &mut ifr) };
    if r < 0 {
        return Err(os_error(ifname, what));
    }
    // SAFETY: both requests fill the union's int member (ifru_ifindex / ifru_mtu,
    // which share the same storage and type).
    Ok(unsafe { ifr.ifr_ifru.ifru_ifindex })
}

impl AfPacket {
    /// Opens `ifname` in the calling thread's current network namespace.
    pub fn open(ifname: &str, cfg: &AfPacketConfig) -> io::Result<AfPacket> {
        if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("AF_PACKET: invalid interface name {ifname:?}"),
            ));
        }
        cfg.validate().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("AF_PACKET {ifname}: {e}"),
            )
        })?;

        // Protocol 0: the socket receives nothing until `bind` below, so no frame
        // from another interface slips in while the rings are being set up.
        // SAFETY: plain syscall with constant arguments.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(os_error(ifname, "socket(AF_PACKET)"));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = fd.as_raw_fd();

        let ifindex = ifreq_int(s, ifname, libc::SIOCGIFINDEX, "no such interface")?;
        let mtu = ifreq_int(s, ifname, libc::SIOCGIFMTU, "SIOCGIFMTU")? as usize;

        let version = match cfg.rx_ring {
            RxRing::V2 => libc::tpacket_versions::TPACKET_V2,
            RxRing::V3 { .. } => libc::tpacket_versions::TPACKET_V3,
        } as libc::c_int;
        let sol = libc::SOL_PACKET;
        setsockopt(
            s,
            ifname,
            sol,
            libc::PACKET_VERSION,
            "PACKET_VERSION",
            &version,
        )?;
        let one: libc::c_int = 1;
        setsockopt(
            s,
            ifname,
            sol,
            libc::PACKET_IGNORE_OUTGOING,
            "PACKET_IGNORE_OUTGOING (needs Linux >= 4.20)",
            &one,
        )?;
        if cfg.qdisc_bypass {
            setsockopt(
                s,
                ifname,
                sol,
                libc::PACKET_QDISC_BYPASS,
                "PACKET_QDISC_BYPASS",
                &one,
            )?;
        }
        setsockopt(s, ifname, sol, libc::PACKET_LOSS, "PACKET_LOSS", &one)?;

        let per_block = cfg.frames_per_block() as u32;
        let req = |blocks: u32, retire_ms: u32| libc::tpacket_req3 {
            tp_block_size: cfg.block_size,
            tp_block_nr: blocks,
            tp_frame_size: cfg.frame_size,
            tp_frame_nr: per_block * blocks,
            tp_retire_blk_tov: retire_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        let v2 = |r: libc::tpacket_req3| libc::tpacket_req {
            tp_block_size: r.tp_block_size,
            tp_block_nr: r.tp_block_nr,
            tp_frame_size: r.tp_frame_size,
            tp_frame_nr: r.tp_frame_nr,
        };
        // V3 adds a block-retire timeout to the receive ring; V2 takes the older,
        // shorter request for both rings.
        let retire_ms = match cfg.rx_ring {
            RxRing::V2 => 0,
            RxRing::V3 { retire_timeout_ms } => retire_timeout_ms,
        };
        let rings = [
            (
                libc::PACKET_RX_RING,
                "PACKET_RX_RING",
                req(cfg.rx_blocks, retire_ms),
            ),
            (
                libc::PACKET_TX_RING,
                "PACKET_TX_RING",
                req(cfg.tx_blocks, 0),
            ),
        ];
        for (name, what, r) in rings {
            match cfg.rx_ring {
                RxRing::V2 => setsockopt(s, ifname, sol, name, what, &v2(r))?,
                RxRing::V3 { .. } => setsockopt(s, ifname, sol, name, what, &r)?,
            }
        }

        let rx_len = cfg.block_size as usize * cfg.rx_blocks as usize;
        let len = cfg.ring_bytes();
        // SAFETY: asks for a new shared mapping of the rings just configured on `s`;
        // it overlaps no existing Rust object (null hint, no MAP_FIXED).
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                s,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os_error(ifname, "mmap of the rings"));
        }
        let map = Mmap {
            ptr: NonNull::new(p.cast()).expect("mmap returned NULL"),
            len,
        };

        let sll = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
            sll_ifindex: ifindex,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        // SAFETY: `sll` is a valid sockaddr_ll of the length passed, read during the call.
        let r = unsafe {
            libc::bind(
                s,
                (&sll as *const libc::sockaddr_ll).cast(),
                SLL_LEN as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(os_error(ifname, "bind"));
        }

        let rx = match cfg.rx_ring {
            RxRing::V2 => Rx::V2 {
                slots: Slots::new(0, cfg, cfg.rx_blocks),
                next: 0,
            },
            RxRing::V3 { .. } => Rx::V3 {
                base: 0,
                block_size: cfg.block_size as usize,
                blocks: cfg.rx_blocks as usize,
                block: 0,
                left: 0,
                pkt: 0,
            },
        };
        let tx = match cfg.rx_ring {
            RxRing::V2 => Tx {
                slots: Slots::new(rx_len, cfg, cfg.tx_blocks),
                status: V2_STATUS,
                len: V2_LEN,
                data: V2_HDRLEN - SLL_LEN,
                head: 0,
                queued: 0,
            },
            RxRing::V3 { .. } => Tx {
                slots: Slots::new(rx_len, cfg, cfg.tx_blocks),
                status: V3_STATUS,
                len: V3_LEN,
                data: V3_HDRLEN - SLL_LEN,
                head: 0,
                queued: 0,
            },
        };
        Ok(AfPacket {
            map,
            fd,
            name: ifname.to_string(),
            ifindex,
            mtu,
            rx,
            tx,
            counters: IoStats::default(),
            kernel_drops: Cell::new(0),
        })
    }

    /// The interface index (in the socket's namespace).
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    /// The interface MTU read at open (frames up to MTU + 14, or + 18 when tagged,
    /// are accepted by `send`).
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Frames queued by `send` and not yet taken by the kernel.
    pub fn tx_queued(&self) -> usize {
        self.tx.queued
    }
}

/// A received frame's location and metadata, read from its ring header.
struct RxFrame {
    /// Ring offset of the frame header; bytes from `hdr + hdrlen` on may be rewritten.
    hdr: usize,
    hdrlen: usize,
    /// Ring offset one past the last byte userspace owns (end of slot or block).
    end: usize,
    mac: usize,
    snaplen: usize,
    len: usize,
    /// TPID and TCI of a tag the kernel took out of the frame.
    vlan: Option<(u16, u16)>,
}

/// Hands `fr` to `f`, re-inserting its VLAN tag. Returns false when the frame is
/// truncated or does not fit (dropped).
fn deliver(map: &mut Mmap, fr: &RxFrame, f: &mut dyn FnMut(&[u8])) -> bool {
    let start = fr.hdr + fr.mac;
    if fr.snaplen < fr.len || fr.snaplen < 2 * 6 || start + fr.snaplen > fr.end {
        return false;
    }
    match fr.vlan {
        None => {
            // SAFETY: the caller owns the slot/block (status TP_STATUS_USER) until it
            // hands it back after this function returns.
            f(unsafe { map.bytes(start, fr.snaplen) });
        }
        Some((tpid, tci)) => {
            if fr.mac < fr.hdrlen + VLAN_HLEN {
                return false;
            }
            // SAFETY: as above; the 4 bytes before the frame lie between the kernel's
            // header (which we do not touch) and the frame, in the same slot/block.
            let buf = unsafe { map.bytes_mut(start - VLAN_HLEN, fr.snaplen + VLAN_HLEN) };
            buf.copy_within(VLAN_HLEN..VLAN_HLEN + 12, 0);
            buf[12..14].copy_from_slice(&tpid.to_be_bytes());
            buf[14..16].copy_from_slice(&tci.to_be_bytes());
            f(buf);
        }
    }
    true
}

fn vlan_of(status: u32, tpid: u16, tci: u16) -> Option<(u16, u16)> {
    (status & libc::TP_STATUS_VLAN_VALID != 0).then(|| {
        let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
            tpid
        } else {
            ETH_P_8021Q
        };
        (tpid, tci)
    })
}

impl AfPacket {
    fn recv_v2(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> usize {
        let Rx::V2 { slots, next } = &mut self.rx else {
            unreachable!()
        };
        let mut delivered = 0;
        while delivered < max {
            let hdr = slots.offset(*next);
            let status = self.map.u32_at(hdr + V2_STATUS).load(Ordering::Acquire);
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            let fr = RxFrame {
                hdr,
                hdrlen: V2_HDRLEN,
                end: hdr + slots.frame_size,
                mac: self.map.u16_at(hdr + V2_MAC).load(Ordering::Relaxed) as usize,
                snaplen: self.map.u32_at(hdr + V2_SNAPLEN).load(Ordering::Relaxed) as usize,
                len: self.map.u32_at(hdr + V2_LEN).load(Ordering::Relaxed) as usize,
                vlan: vlan_of(
                    status,
                    self.map.u16_at(hdr + V2_VLAN_TPID).load(Ordering::Relaxed),
                    self.map.u16_at(hdr + V2_VLAN_TCI).load(Ordering::Relaxed),
                ),
            };
            if deliver(&mut self.map, &fr, f) {
                delivered += 1;
                self.counters.rx_frames += 1;
            } else {
                self.counters.rx_truncated += 1;
            }
            // Hand the slot back; Release orders our reads (and VLAN rewrite) before it.
            self.map
                .u32_at(hdr + V2_STATUS)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            *next = (*next + 1) % slots.count;
        }
        delivered
    }

    fn recv_v3(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> usize {
        let Rx::V3 {
            base,
            block_size,
            blocks,
            block,
            left,
            pkt,
        } = &mut self.rx
        else {
            unreachable!()
        };
        let mut delivered = 0;
        while delivered < max {
            let blk = *base + *block * *block_size;
            if *left == 0 {
                let status = self.map.u32_at(blk + BLK_STATUS).load(Ordering::Acquire);
                if status & libc::TP_STATUS_USER == 0 {
                    break;
                }
                *left = self.map.u32_at(blk + BLK_NUM_PKTS).load(Ordering::Relaxed);
                *pkt = self.map.u32_at(blk + BLK_FIRST_PKT).load(Ordering::Relaxed) as usize;
            }
            if *left > 0 && *pkt + V3_HDRLEN <= *block_size && pkt.is_multiple_of(8) {
                let hdr = blk + *pkt;
                let status = self.map.u32_at(hdr + V3_STATUS).load(Ordering::Relaxed);
                let fr = RxFrame {
                    hdr,
                    hdrlen: V3_HDRLEN,
                    end: blk + *block_size,
                    mac: self.map.u16_at(hdr + V3_MAC).load(Ordering::Relaxed) as usize,
                    snaplen: self.map.u32_at(hdr + V3_SNAPLEN).load(Ordering::Relaxed) as usize,
                    len: self.map.u32_at(hdr + V3_LEN).load(Ordering::Relaxed) as usize,
                    vlan: vlan_of(
                        status,
                        self.map.u16_at(hdr + V3_VLAN_TPID).load(Ordering::Relaxed),
                        self.map.u32_at(hdr + V3_VLAN_TCI).load(Ordering::Relaxed) as u16,
                    ),
                };
                if deliver(&mut self.map, &fr, f) {
                    delivered += 1;
                    self.counters.rx_frames += 1;
                } else {
                    self.counters.rx_truncated += 1;
                }
                *pkt += self.map.u32_at(hdr + V3_NEXT).load(Ordering::Relaxed) as usize;
                *left -= 1;
            } else {
                // Empty or malformed block (frames are 8-byte aligned): skip the rest.
                *left = 0;
            }
            if *left == 0 {
                self.map
                    .u32_at(blk + BLK_STATUS)
                    .store(libc::TP_STATUS_KERNEL, Ordering::Release);
                *block = (*block + 1) % *blocks;
            }
        }
        delivered
    }

    /// Largest frame `send` accepts: the slot and the MTU both bound it. Like the
    /// kernel (`packet_extra_vlan_len_allowed`), only an 802.1Q outer tag earns the
    /// extra 4 bytes, not 802.1ad.
    fn tx_limit(&self, frame: &[u8]) -> usize {
        let slot = self.tx.slots.frame_size - self.tx.data;
        let tagged =
            frame.len() >= ETH_HLEN && u16::from_be_bytes([frame[12], frame[13]]) == ETH_P_8021Q;
        let wire = self.mtu + ETH_HLEN + if tagged { VLAN_HLEN } else { 0 };
        slot.min(wire)
    }
}

impl PacketIo for AfPacket {
    fn name(&self) -> &str {
        &self.name
    }

    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn recv(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> io::Result<usize> {
        Ok(match self.rx {
            Rx::V2 { .. } => self.recv_v2(max, f),
            Rx::V3 { .. } => self.recv_v3(max, f),
        })
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        if frame.len() < ETH_HLEN {
            self.counters.tx_errors += 1;
            return Err(io::ErrorKind::InvalidInput.into());
        }
        if frame.len() > self.tx_limit(frame) {
            self.counters.tx_errors += 1;
            return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
        }
        let slot = self.tx.slots.offset(self.tx.head);
        let status = self
            .map
            .u32_at(slot + self.tx.status)
            .load(Ordering::Acquire);
        if status & (libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING) != 0 {
            return Ok(false);
        }
        // SAFETY: the slot's status is TP_STATUS_AVAILABLE, so the kernel neither reads
        // nor writes it until we set TP_STATUS_SEND_REQUEST below; the range lies in
        // the slot (length checked against the slot size above).
        unsafe { self.map.bytes_mut(slot + self.tx.data, frame.len()) }.copy_from_slice(frame);
        self.map
            .u32_at(slot + self.tx.len)
            .store(frame.len() as u32, Ordering::Relaxed);
        // Release: the frame bytes and length are visible before the kernel sees the request.
        self.map
            .u32_at(slot + self.tx.status)
            .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.tx.head = (self.tx.head + 1) % self.tx.slots.count;
        self.tx.queued += 1;
        Ok(true)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.tx.queued == 0 {
            return Ok(());
        }
        // SAFETY: a TX-ring kick: no buffer and no address are passed.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                ptr::null(),
                0,
            )
        };
        let err = (r < 0).then(io::Error::last_os_error);
        // The kernel takes frames strictly in ring order and stops at the first it
        // cannot take (resetting it to SEND_REQUEST), so count from the oldest queued.
        let n = self.tx.slots.count;
        let first = (self.tx.head + n - self.tx.queued) % n;
        let mut taken = 0;
        while taken < self.tx.queued {
            let slot = self.tx.slots.offset((first + taken) % n);
            let status = self
                .map
                .u32_at(slot + self.tx.status)
                .load(Ordering::Acquire);
            if status & libc::TP_STATUS_SEND_REQUEST != 0 {
                break;
            }
            taken += 1;
        }
        self.tx.queued -= taken;
        self.counters.tx_frames += taken as u64;
        match err {
            Some(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR)
                ) =>
            {
                Err(io::ErrorKind::WouldBlock.into())
            }
            Some(e) => Err(io::Error::new(
                e.kind(),
                format!("AF_PACKET {}: send: {e}", self.name),
            )),
            None if self.tx.queued > 0 => Err(io::ErrorKind::WouldBlock.into()),
            None => Ok(()),
        }
    }

    fn stats(&self) -> IoStats {
        let mut st = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `st` and `len` are valid for writes for the call; the kernel writes at
        // most `len` bytes (a tpacket_stats or tpacket_stats_v3, both prefixes of `st`).
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        if r == 0 {
            self.kernel_drops
                .set(self.kernel_drops.get() + u64::from(st.tp_drops));
        }
        IoStats {
            rx_kernel_drops: self.kernel_drops.get(),
            ..self.counters
        }
    }
}

#[cfg(test)]
mod tests {
    //! Root-only: each test builds a veth pair in a fresh network namespace owned by
    //! one thread (`unshare(CLONE_NEWNET)`); the namespace and its links disappear
    //! when the thread ends, also on failure. Not root: skipped, or a failure with
    //! `CI=true`.

    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn rings_for_an_mtu_hold_its_frames_and_are_valid() {
        for mtu in [1500, 4412, 9000] {
            let c = AfPacketConfig::for_mtu(mtu);
            c.validate().unwrap();
            // A whole frame with a VLAN tag fits a receive slot (V2 header: 66 bytes).
            assert!(c.frame_size as usize - 66 >= mtu as usize + 18, "{c:?}");
            assert!(c.rx_slots() >= 256 && c.tx_slots() >= 128, "{c:?}");
        }
        // Much less memory than the jumbo default at the emu's usual MTU.
        let small = AfPacketConfig::for_mtu(4412);
        let d = AfPacketConfig::default();
        assert!(2 * (small.rx_blocks + small.tx_blocks) <= d.rx_blocks + d.tx_blocks);
    }

    use crate::io::testkit::{build, flush_ok, parse, with_veth};

    const ETH_P_8021AD: u16 = 0x88a8;

    fn both_ways(cfg: AfPacketConfig, tag: &'static str) {
        crate::io::testkit::both_ways(tag, 9000, move |ifname| {
            Box::new(AfPacket::open(ifname, &cfg).unwrap())
        });
    }

    #[test]
    fn both_ways_in_order_v2() {
        both_ways(AfPacketConfig::default(), "a");
    }

    /// Frames other senders transmit on the port (another socket here; the
    /// namespace's own stack in the emulator) stay out of the receive ring. (A socket
    /// never sees its own frames anyway: the kernel skips the sender among the taps.)
    #[test]
    fn outgoing_frames_of_other_senders_are_ignored() {
        with_veth("o", |v| {
            let cfg = AfPacketConfig {
                qdisc_bypass: false,
                ..AfPacketConfig::standard_mtu()
            };
            let mut port = AfPacket::open(&v.a, &cfg).unwrap();
            let mut other = AfPacket::open(&v.a, &cfg).unwrap();
            let mut peer = AfPacket::open(&v.b, &cfg).unwrap();
            let mut buf = Vec::new();
            for seq in 0..10 {
                build(&mut buf, 0, seq, 60);
                assert!(other.send(&buf).unwrap());
            }
            other.flush().unwrap();
            let mut at_peer = 0;
            let deadline = Instant::now() + Duration::from_secs(2);
            while at_peer < 10 && Instant::now() < deadline {
                peer.recv(16, &mut |_| at_peer += 1).unwrap();
            }
            assert_eq!(at_peer, 10);
            let seen = port.recv(usize::MAX, &mut |_| {}).unwrap();
            assert_eq!(
                seen, 0,
                "the port's socket saw frames sent out of its interface"
            );
        });
    }

    /// Through the qdisc (no PACKET_QDISC_BYPASS) as well.
    #[test]
    fn both_ways_in_order_through_qdisc() {
        let cfg = AfPacketConfig {
            qdisc_bypass: false,
            ..AfPacketConfig::default()
        };
        both_ways(cfg, "q");
    }

    #[test]
    fn both_ways_in_order_v3() {
        let cfg = AfPacketConfig {
            rx_ring: RxRing::V3 {
                retire_timeout_ms: 1,
            },
            ..AfPacketConfig::default()
        };
        both_ways(cfg, "a3");
    }

    /// (b) A burst bigger than the TX ring: `send` says `Ok(false)` when the ring is
    /// full (nothing leaves before `flush`), and after flushing every frame arrives.
    #[test]
    fn tx_ring_full_then_flush_delivers_all() {
        with_veth("b", |v| {
            let cfg = AfPacketConfig {
                frame_size: 2048,
                rx_blocks: 16,
                tx_blocks: 1,
                ..AfPacketConfig::default()
            };
            let slots = cfg.tx_slots();
            assert_eq!(slots, 32);
            let mut a = AfPacket::open(&v.a, &cfg).unwrap();
            let mut b = AfPacket::open(&v.b, &cfg).unwrap();
            let mut buf = Vec::new();
            const TOTAL: u32 = 300;
            let mut seq = 0;
            loop {
                build(&mut buf, 0, seq, 64);
                if !a.send(&buf).unwrap() {
                    break;
                }
                seq += 1;
            }
            assert_eq!(
                seq as usize, slots,
                "Ok(false) exactly when the ring is full"
            );
            assert_eq!(a.tx_queued(), slots);
            std::thread::sleep(Duration::from_millis(5));
            assert_eq!(
                b.recv(usize::MAX, &mut |_| {}).unwrap(),
                0,
                "sent before flush"
            );

            a.flush().unwrap();
            while seq < TOTAL {
                build(&mut buf, 0, seq, 64);
                let mut tries = 0;
                while !a.send(&buf).unwrap() {
                    flush_ok(&mut a);
                    tries += 1;
                    assert!(tries < 100_000, "TX ring never drained");
                    std::hint::spin_loop();
                }
                seq += 1;
            }
            a.flush().unwrap();
            assert_eq!(a.tx_queued(), 0);

            let mut got = 0;
            let deadline = Instant::now() + Duration::from_secs(5);
            while got < TOTAL && Instant::now() < deadline {
                b.recv(usize::MAX, &mut |f| {
                    assert_eq!(parse(f), (0, got));
                    got += 1;
                })
                .unwrap();
            }
            assert_eq!(got, TOTAL);
            assert_eq!(a.stats().tx_frames, TOTAL as u64);
            let sb = b.stats();
            assert_eq!((sb.rx_frames, sb.rx_kernel_drops), (TOTAL as u64, 0));
        });
    }

    /// (c) Counters: refused frames, kernel drops when the receive ring overflows,
    /// frames too big for the receive slot.
    fn counters(rx_ring: RxRing, tag: &'static str) {
        with_veth(tag, move |v| {
            let cfg_a = AfPacketConfig {
                rx_ring,
                ..AfPacketConfig::default()
            };
            // One 64 KiB receive block: 32 slots of 2 KiB (V2), or 64 KiB of frames (V3).
            let cfg_b = AfPacketConfig {
                rx_ring,
                frame_size: 2048,
                rx_blocks: 1,
                tx_blocks: 1,
                ..AfPacketConfig::default()
            };
            let mut a = AfPacket::open(&v.a, &cfg_a).unwrap();
            let mut b = AfPacket::open(&v.b, &cfg_b).unwrap();
            assert_eq!(a.mtu(), 9000);
            let mut buf = Vec::new();

            // Refused by send: runt, above MTU + 14, above the TX slot.
            let e = a.send(&[0u8; 10]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            for len in [9015, 9300] {
                build(&mut buf, 0, 0, len);
                let e = a.send(&buf).unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE), "{len}");
            }
            // An 802.1Q-tagged frame may be 4 bytes longer (an 802.1ad one may not).
            build(&mut buf, 0, 0, 9018);
            buf[12..14].copy_from_slice(&ETH_P_8021AD.to_be_bytes());
            let e = a.send(&buf).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE));
            buf[12..14].copy_from_slice(&ETH_P_8021Q.to_be_bytes());
            assert!(a.send(&buf).unwrap());
            a.flush().unwrap();
            let st = a.stats();
            assert_eq!((st.tx_errors, st.tx_frames), (4, 1));

            // Too big for b's receive slot (V2) or block (V3): dropped, counted.
            build(&mut buf, 0, 0, 4000);
            std::thread::sleep(Duration::from_millis(20));
            b.recv(usize::MAX, &mut |_| {}).unwrap();
            let before = b.stats();
            if rx_ring == RxRing::V2 {
                assert!(a.send(&buf).unwrap());
                a.flush().unwrap();
                assert_eq!(
                    b.recv(usize::MAX, &mut |_| panic!("truncated frame delivered"))
                        .unwrap(),
                    0
                );
                assert_eq!(b.stats().rx_truncated, before.rx_truncated + 1);
            }

            // Overflow b's receive ring without reading it.
            let n: u32 = 2000;
            for seq in 0..n {
                build(&mut buf, 0, seq, 64);
                while !a.send(&buf).unwrap() {
                    flush_ok(&mut a);
                }
            }
            a.flush().unwrap();
            // Read until every frame is either received or counted as dropped (V3
            // shows the last block only once its retire timer fires).
            let mut got = 0u64;
            let mut last = None;
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                b.recv(usize::MAX, &mut |f| {
                    let (_, seq) = parse(f);
                    assert!(last < Some(seq), "order");
                    last = Some(seq);
                    got += 1;
                })
                .unwrap();
                let drops = b.stats().rx_kernel_drops - before.rx_kernel_drops;
                if got + drops >= n as u64 || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let sb = b.stats();
            assert!(got > 0 && sb.rx_kernel_drops > 0, "got {got}, {sb:?}");
            assert_eq!(
                got + sb.rx_kernel_drops - before.rx_kernel_drops,
                n as u64,
                "{sb:?}"
            );
            assert_eq!(sb.rx_frames - before.rx_frames, got);
            if rx_ring == RxRing::V2 {
                assert_eq!(got, cfg_b.rx_slots() as u64);
            }
        });
    }

    #[test]
    fn counters_v2() {
        counters(RxRing::V2, "c");
    }

    #[test]
    fn counters_v3() {
        counters(
            RxRing::V3 {
                retire_timeout_ms: 1,
            },
            "c3",
        );
    }

    /// The kernel strips the outer VLAN tag on receive; `recv` restores it.
    fn vlan(rx_ring: RxRing, tag: &'static str) {
        with_veth(tag, move |v| {
            let cfg = AfPacketConfig {
                rx_ring,
                ..AfPacketConfig::default()
            };
            let mut a = AfPacket::open(&v.a, &cfg).unwrap();
            let mut b = AfPacket::open(&v.b, &cfg).unwrap();
            let mut frames = Vec::new();
            for (tpid, tci) in [
                (ETH_P_8021Q, 0x6005u16),
                (ETH_P_8021AD, 0x0123),
                (ETH_P_8021Q, 0),
            ] {
                let mut f = Vec::new();
                build(&mut f, 0, 0, 100);
                f.splice(
                    12..12,
                    tpid.to_be_bytes().into_iter().chain(tci.to_be_bytes()),
                );
                frames.push(f);
            }
            for f in &frames {
                assert!(a.send(f).unwrap());
            }
            a.flush().unwrap();
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(2);
            while got.len() < frames.len() && Instant::now() < deadline {
                b.recv(16, &mut |f| got.push(f.to_vec())).unwrap();
            }
            assert_eq!(got, frames);
        });
    }

    #[test]
    fn vlan_tag_restored_v2() {
        vlan(RxRing::V2, "v");
    }

    #[test]
    fn vlan_tag_restored_v3() {
        vlan(
            RxRing::V3 {
                retire_timeout_ms: 1,
            },
            "v3",
        );
    }

    /// Opened in one thread's namespace, used from another thread.
    #[test]
    fn socket_keeps_its_namespace_across_threads() {
        with_veth("n", |v| {
            let cfg = AfPacketConfig::standard_mtu();
            let mut a = AfPacket::open(&v.a, &cfg).unwrap();
            let mut b = AfPacket::open(&v.b, &cfg).unwrap();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                build(&mut buf, 0, 7, 60);
                assert!(a.send(&buf).unwrap());
                a.flush().unwrap();
                let mut got = None;
                let deadline = Instant::now() + Duration::from_secs(2);
                while got.is_none() && Instant::now() < deadline {
                    b.recv(1, &mut |f| got = Some(parse(f))).unwrap();
                }
                assert_eq!(got, Some((0, 7)));
            })
            .join()
            .unwrap();
            let e = AfPacket::open("fl-nonexistent0", &cfg).unwrap_err();
            assert!(e.to_string().contains("fl-nonexistent0"), "{e}");
        });
    }

    // ---- Measurements, not assertions: `cargo test -p fablab --lib io:: -- --ignored
    // --nocapture`. Debug build (unoptimised Rust; the kernel dominates anyway).

    fn wait_readable(fd: RawFd, timeout_ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one valid pollfd, borrowed mutably for the call only.
        unsafe { libc::poll(&mut p, 1, timeout_ms) > 0 }
    }

    fn v3(ms: u32) -> AfPacketConfig {
        AfPacketConfig {
            rx_ring: RxRing::V3 {
                retire_timeout_ms: ms,
            },
            ..AfPacketConfig::default()
        }
    }

    /// Round trip a -> echo on b -> a, one 64-byte frame at a time, both sides
    /// sleeping in poll() like an idle event loop.
    #[test]
    #[ignore = "measurement"]
    fn measure_latency() {
        for (label, cfg, rounds, spin) in [
            ("V2 poll()", AfPacketConfig::default(), 20_000, false),
            ("V2 busy-poll", AfPacketConfig::default(), 20_000, true),
            ("V3 1ms poll()", v3(1), 500, false),
            ("V3 1ms busy-poll", v3(1), 500, true),
        ] {
            with_veth("l", move |v| {
                let mut a = AfPacket::open(&v.a, &cfg).unwrap();
                let mut b = AfPacket::open(&v.b, &cfg).unwrap();
                let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let stop2 = stop.clone();
                let echo = std::thread::spawn(move || {
                    let mut frame = Vec::new();
                    while !stop2.load(Ordering::Relaxed) {
                        if !spin && !wait_readable(b.fd(), 50) {
                            continue;
                        }
                        while b.recv(1, &mut |f| frame = f.to_vec()).unwrap() == 1 {
                            frame[14] = 1;
                            b.send(&frame).unwrap();
                        }
                        b.flush().unwrap();
                    }
                });
                let mut buf = Vec::new();
                let mut rtt = Vec::with_capacity(rounds);
                for seq in 0..rounds as u32 {
                    build(&mut buf, 0, seq, 64);
                    let t0 = Instant::now();
                    assert!(a.send(&buf).unwrap());
                    a.flush().unwrap();
                    let mut back = false;
                    while !back {
                        assert!(spin || wait_readable(a.fd(), 1000), "echo lost");
                        a.recv(16, &mut |f| back = parse(f) == (1, seq)).unwrap();
                    }
                    rtt.push(t0.elapsed());
                }
                stop.store(true, Ordering::Relaxed);
                echo.join().unwrap();
                rtt.sort();
                let pct = |p: usize| rtt[(rtt.len() - 1) * p / 100].as_secs_f64() * 1e6;
                println!(
                    "latency {label:16} RTT over {rounds} round trips: p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, max {:.1} us",
                    pct(50),
                    pct(90),
                    pct(99),
                    pct(100)
                );
            });
        }
    }

    /// One-way 64-byte frames a -> b: (1) one thread alternating send batch / flush /
    /// drain (an event loop serving both ports), (2) a sender thread and a receiver
    /// thread busy-polling.
    #[test]
    #[ignore = "measurement"]
    fn measure_throughput_64b() {
        const SECS: f64 = 3.0;
        let v2_deep = AfPacketConfig {
            rx_blocks: 256,
            ..AfPacketConfig::default()
        };
        let v2_small = AfPacketConfig {
            frame_size: 2048,
            rx_blocks: 256,
            ..AfPacketConfig::default()
        };
        let runs: usize = std::env::var("FL_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        for (label, cfg) in [
            ("V2 448x9K", AfPacketConfig::default()),
            ("V2 1792x9K", v2_deep),
            ("V2 8192x2K", v2_small),
            ("V3 1ms 4MiB", v3(1)),
        ]
        .into_iter()
        .flat_map(|c| std::iter::repeat_n(c, runs))
        {
            let cfg2 = cfg.clone();
            with_veth("t", move |v| {
                let mut a = AfPacket::open(&v.a, &cfg).unwrap();
                let mut b = AfPacket::open(&v.b, &cfg).unwrap();
                let mut buf = Vec::new();
                build(&mut buf, 0, 0, 64);
                let t0 = Instant::now();
                let mut got = 0u64;
                while t0.elapsed().as_secs_f64() < SECS {
                    for _ in 0..64 {
                        if !a.send(&buf).unwrap() {
                            break;
                        }
                    }
                    flush_ok(&mut a);
                    while b.recv(256, &mut |_| got += 1).unwrap() > 0 {}
                }
                let dt = t0.elapsed().as_secs_f64();
                let (sa, sb) = (a.stats(), b.stats());
                println!(
                    "throughput {label:16} one thread:  {:.3} Mpps received (tx {}, rx {}, kernel drops {})",
                    got as f64 / dt / 1e6,
                    sa.tx_frames,
                    sb.rx_frames,
                    sb.rx_kernel_drops
                );
            });
            with_veth("t", move |v| {
                let mut a = AfPacket::open(&v.a, &cfg2).unwrap();
                let mut b = AfPacket::open(&v.b, &cfg2).unwrap();
                let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let stop2 = stop.clone();
                let rx = std::thread::spawn(move || {
                    let mut got = 0u64;
                    while !stop2.load(Ordering::Relaxed) {
                        b.recv(256, &mut |_| got += 1).unwrap();
                    }
                    while b.recv(256, &mut |_| got += 1).unwrap() > 0 {}
                    (got, b.stats())
                });
                let mut buf = Vec::new();
                build(&mut buf, 0, 0, 64);
                let t0 = Instant::now();
                while t0.elapsed().as_secs_f64() < SECS {
                    for _ in 0..64 {
                        if !a.send(&buf).unwrap() {
                            break;
                        }
                    }
                    flush_ok(&mut a);
                }
                let dt = t0.elapsed().as_secs_f64();
                std::thread::sleep(Duration::from_millis(20));
                stop.store(true, Ordering::Relaxed);
                let (got, sb) = rx.join().unwrap();
                let sa = a.stats();
                println!(
                    "throughput {label:16} two threads: {:.3} Mpps received, {:.3} Mpps sent (kernel drops {})",
                    got as f64 / dt / 1e6,
                    sa.tx_frames as f64 / dt / 1e6,
                    sb.rx_kernel_drops
                );
            });
        }
    }
}
