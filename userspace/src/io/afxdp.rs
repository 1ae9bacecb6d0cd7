//! The AF_XDP backend: one XDP socket per port in copy mode (the only mode veth
//! offers), fed by `ebpf/xsk_redirect.c`, an XDP program that redirects every frame
//! on the interface into the socket through an XSKMAP. In the emu the program runs
//! in generic (SKB) mode: on veth, native mode converts every jumbo frame into
//! page-pool pages first, which measured 15% slower (docs/results.md). `--mode xdp`
//! attaches it in native mode ([`AfXdp::open_in`]): frames an XDP program on the
//! peer redirects into a veth reach only a native program.
//!
//! Memory: each port owns a UMEM of [`CHUNKS`] chunks of [`CHUNK`] bytes, half lent to
//! the kernel through the fill ring for receiving, half kept for sending. A received
//! chunk goes back to the fill ring as soon as its frame has been handed to the
//! callback; a sent chunk comes back through the completion ring. Nothing is
//! allocated per frame.
//!
//! Jumbo frames: a chunk holds at most one page, and the emu's veths carry frames of
//! about 4.4 KB (a 4 KiB RoCE payload with a full INT stack). The socket therefore
//! binds with `XDP_USE_SG` and the program is an `xdp.frags` program: a frame larger
//! than a chunk arrives as several descriptors (`XDP_PKT_CONTD` on all but the last),
//! which `recv` joins in a scratch buffer before the callback sees them, and `send`
//! splits the same way. Frames that fit a chunk are handed over in place.
//!
//! Teardown: the program is attached through a BPF link owned by this value, so it is
//! detached when the port is dropped, and also when the process dies (the kernel
//! closes the link's descriptor).

use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::ptr::NonNull;

use aya::maps::XskMap;
use aya::programs::{Xdp, XdpMode};
use xdpilone::xdp::XdpDesc;
use xdpilone::{
    CompletionQueue, FillQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig,
};

use super::{IoStats, PacketIo};

/// Bytes per UMEM chunk: one page, the most copy mode allows without huge pages.
pub const CHUNK: u32 = 4096;
/// Chunks per port: half for receiving, half for sending (2 MiB per port; the
/// kernel pins it all when the UMEM is registered, so it is kept small).
const CHUNKS: u32 = 512;
/// Descriptors in each of the four rings.
const RING: u32 = 256;

/// `sockaddr_xdp` bind flags (linux/if_xdp.h).
const XDP_COPY: u16 = 1 << 1;
const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;
const XDP_USE_SG: u16 = 1 << 4;
/// `xdp_desc.options`: more descriptors of this frame follow.
const XDP_PKT_CONTD: u32 = 1;

/// Ethernet header plus one VLAN tag: how much a frame may exceed the MTU.
const L2_OVERHEAD: usize = 14 + 4;
/// The shortest frame `send` accepts: an Ethernet header.
const ETH_HLEN: usize = 14;

/// The compiled XSKMAP program, or why this build has none.
fn program_object() -> io::Result<&'static [u8]> {
    crate::ebpf::object(crate::ebpf::XSK_REDIRECT, "AF_XDP")
}

/// Checks, without touching any interface, that AF_XDP can work here: the program
/// was built, the kernel loads it, and AF_XDP sockets can be created. `Err` says
/// what is missing.
pub fn probe() -> io::Result<()> {
    program_object()?;
    // Copy-mode sockets take multi-buffer frames (XDP_USE_SG) from Linux 6.6 on;
    // before that every port would fail to bind.
    if let Some((major, minor)) = kernel_version() {
        if (major, minor) < (6, 6) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "Linux {major}.{minor}: fablab's AF_XDP sockets take jumbo frames as \
                     several descriptors (XDP_USE_SG), which needs Linux 6.6"
                ),
            ));
        }
    }
    let mut bpf = load_object().map_err(|e| other("loading xsk_redirect.o", e))?;
    let prog: &mut Xdp = program(&mut bpf)?;
    prog.load()
        .map_err(|e| other("the kernel refused fl_xsk_redirect", e))?;
    // SAFETY: socket(2) with constant arguments; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot create an AF_XDP socket: {e}"),
        ));
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

fn load_object() -> io::Result<aya::Ebpf> {
    crate::ebpf::load(program_object()?)
}

/// Attaches the redirect program, with no socket in its map, to `ifname` in native
/// mode (in the calling thread's namespace): every frame goes on to the kernel's
/// stack. That is what a veth needs to receive frames an XDP program on its peer
/// redirects into it (`fablab testbed up --xdp` does it on the hosts). Detached
/// when the returned value is dropped.
pub fn attach_pass(ifname: &str) -> io::Result<aya::Ebpf> {
    let mut bpf = load_object().map_err(|e| xsk_error(ifname, "loading xsk_redirect.o", e))?;
    let prog = program(&mut bpf)?;
    prog.load()
        .map_err(|e| xsk_error(ifname, "the kernel refused fl_xsk_redirect", e))?;
    prog.attach(ifname, XdpMode::Driver)
        .map_err(|e| xsk_error(ifname, "attaching fl_xsk_redirect (native, pass)", e))?;
    Ok(bpf)
}

/// The running kernel's (major, minor) version, from uname(2).
fn kernel_version() -> Option<(u32, u32)> {
    // SAFETY: `utsname` is plain old data; uname fills it and nothing else.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a utsname the call may write.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    let release: String = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn other(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

fn program(bpf: &mut aya::Ebpf) -> io::Result<&mut Xdp> {
    bpf.program_mut("fl_xsk_redirect")
        .ok_or_else(|| other("xsk_redirect.o", "no program fl_xsk_redirect"))?
        .try_into()
        .map_err(|e| other("xsk_redirect.o", e))
}

/// An anonymous, page-aligned mapping: the UMEM's memory.
#[derive(Debug)]
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

impl Area {
    fn new(len: usize) -> io::Result<Area> {
        // SAFETY: an anonymous private mapping at an address of the kernel's choice;
        // nothing else is affected. The result is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Area {
            ptr: NonNull::new(p.cast()).expect("mmap never returns null on success"),
            len,
        })
    }

    fn as_slice_ptr(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }

    /// Bytes `off..off + len`.
    ///
    /// # Safety
    /// Userspace must own the chunks the range lies in (taken from the RX ring, or not
    /// yet given to the fill or TX ring) while the slice lives.
    unsafe fn bytes(&self, off: u64, len: u32) -> &[u8] {
        let (off, len) = (off as usize, len as usize);
        assert!(off.checked_add(len).is_some_and(|end| end <= self.len));
        // SAFETY: in bounds (checked above); the caller guarantees the kernel does not
        // write the range meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(off), len) }
    }

    /// Bytes `off..off + len`, writable.
    ///
    /// # Safety
    /// As for [`Area::bytes`].
    unsafe fn bytes_mut(&mut self, off: u64, len: usize) -> &mut [u8] {
        let off = off as usize;
        assert!(off.checked_add(len).is_some_and(|end| end <= self.len));
        // SAFETY: in bounds (checked above); `&mut self` excludes other userspace
        // borrows and the caller guarantees the kernel does not touch the range.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(off), len) }
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe the mapping made in `Area::new`, owned only by
        // this value; the UMEM that used it has been dropped before (field order).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One port on an AF_XDP socket.
pub struct AfXdp {
    // Field order is drop order: the program first (no more frames for the socket),
    // then the rings and the socket, then the UMEM registration, then its memory.
    _bpf: aya::Ebpf,
    rx: RingRx,
    tx: RingTx,
    fill: FillQueue,
    comp: CompletionQueue,
    _umem: Umem,
    area: Area,
    name: String,
    mtu: usize,
    /// Chunks free for sending (offsets into the UMEM).
    free: Vec<u64>,
    /// Chunks received and handed back, waiting to go to the fill ring.
    refill: Vec<u64>,
    /// A frame spread over several descriptors, joined so far.
    joined: Vec<u8>,
    /// The rest of a frame too long to carry is being skipped.
    discarding: bool,
    /// The descriptors of each frame handed to the TX ring that the kernel has not
    /// taken yet, oldest first (to count frames, not descriptors, in `tx_frames`).
    unsent: VecDeque<u8>,
    /// Descriptors taken by the kernel that `unsent` has not accounted for yet.
    taken: u32,
    /// Descriptors committed to the TX ring, and of those, taken by the kernel as
    /// last seen (both wrap, like the ring's own indices).
    committed: u32,
    consumed: u32,
    counters: IoStats,
    /// Kernel counters at open (the socket's statistics are totals since bind).
    kernel_drops_at_open: u64,
}

impl std::fmt::Debug for AfXdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdp")
            .field("name", &self.name)
            .field("mtu", &self.mtu)
            .field("free", &self.free.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

// SAFETY: the rings and the UMEM point into mappings (the rings' and `area`) that this
// value owns alone; no other value aliases them and nothing in them is tied to a
// thread. Moving the port moves sole ownership of all of them together.
unsafe impl Send for AfXdp {}

fn xsk_error(ifname: &str, what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("AF_XDP {ifname}: {what}: {e}"))
}

fn errno(ifname: &str, what: &str, e: xdpilone::Errno) -> io::Error {
    let err = io::Error::from_raw_os_error(e.get_raw());
    io::Error::new(err.kind(), format!("AF_XDP {ifname}: {what}: {err}"))
}

/// The MTU of `ifname` in the calling thread's network namespace.
fn interface_mtu(ifname: &str) -> io::Result<usize> {
    // SAFETY: socket(2) with constant arguments; checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mtu = super::afpacket::ifreq_int(fd.as_raw_fd(), ifname, libc::SIOCGIFMTU, "MTU")?;
    Ok(mtu as usize)
}

impl AfXdp {
    /// Opens `ifname` (receive queue 0) in the calling thread's network namespace and
    /// attaches the redirect program to it (generic mode).
    pub fn open(ifname: &str) -> io::Result<AfXdp> {
        AfXdp::open_in(ifname, XdpMode::Skb)
    }

    /// As [`AfXdp::open`], with the program attached in `mode`. Native mode is what
    /// a veth needs when its peer's XDP program redirects frames into it (`--mode
    /// xdp`): such frames skip the generic hook.
    pub fn open_in(ifname: &str, mode: XdpMode) -> io::Result<AfXdp> {
        let cname = CString::new(ifname).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("AF_XDP: invalid interface name {ifname:?}"),
            )
        })?;
        let mtu = interface_mtu(ifname)?;
        let mut bpf = load_object().map_err(|e| xsk_error(ifname, "loading xsk_redirect.o", e))?;
        program(&mut bpf)?
            .load()
            .map_err(|e| xsk_error(ifname, "the kernel refused fl_xsk_redirect", e))?;

        let area = Area::new((CHUNK * CHUNKS) as usize)
            .map_err(|e| xsk_error(ifname, "mapping the UMEM", e))?;
        let cfg = UmemConfig {
            fill_size: RING,
            complete_size: RING,
            frame_size: CHUNK,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: `area` is a fresh page-aligned mapping that outlives `umem` (it is
        // declared after it in `AfXdp`, so it drops after) and is accessed otherwise
        // only for chunks userspace owns.
        let umem = unsafe { Umem::new(cfg, area.as_slice_ptr()) }
            .map_err(|e| errno(ifname, "registering the UMEM", e))?;
        let mut info = IfInfo::invalid();
        info.from_name(&cname)
            .map_err(|e| errno(ifname, "finding the interface", e))?;
        info.set_queue(0);
        let sock = Socket::with_shared(&info, &umem).map_err(|e| errno(ifname, "socket", e))?;
        let device = umem
            .fq_cq(&sock)
            .map_err(|e| errno(ifname, "fill and completion rings", e))?;
        let user = umem
            .rx_tx(
                &sock,
                &SocketConfig {
                    rx_size: NonZeroU32::new(RING),
                    tx_size: NonZeroU32::new(RING),
                    bind_flags: XDP_COPY | XDP_USE_NEED_WAKEUP | XDP_USE_SG,
                },
            )
            .map_err(|e| errno(ifname, "receive and transmit rings", e))?;
        let rx = user
            .map_rx()
            .map_err(|e| errno(ifname, "mapping the RX ring", e))?;
        let tx = user
            .map_tx()
            .map_err(|e| errno(ifname, "mapping the TX ring", e))?;
        umem.bind(&user)
            .map_err(|e| errno(ifname, "bind (copy mode, XDP_USE_SG)", e))?;
        let (mut fill, comp) = device.into_parts();

        // The first half of the chunks goes to the kernel for receiving.
        let rx_chunks = CHUNKS / 2;
        {
            let mut w = fill.fill(rx_chunks);
            let n = w.insert((0..rx_chunks).map(|i| u64::from(i * CHUNK)));
            w.commit();
            if n != rx_chunks {
                return Err(xsk_error(
                    ifname,
                    "stocking the fill ring",
                    format!("{n} of {rx_chunks} chunks"),
                ));
            }
        }
        let free = (rx_chunks..CHUNKS)
            .rev()
            .map(|i| u64::from(i * CHUNK))
            .collect();

        let mut map: XskMap<_> = bpf
            .map_mut("fl_xsks")
            .ok_or_else(|| xsk_error(ifname, "xsk_redirect.o", "no map fl_xsks"))?
            .try_into()
            .map_err(|e| xsk_error(ifname, "xsk_redirect.o: map fl_xsks", e))?;
        map.set(0, rx.as_raw_fd(), 0)
            .map_err(|e| xsk_error(ifname, "registering the socket in the XSKMAP", e))?;
        program(&mut bpf)?
            .attach(ifname, mode)
            .map_err(|e| xsk_error(ifname, &format!("attaching fl_xsk_redirect ({mode:?})"), e))?;

        let mut port = AfXdp {
            _bpf: bpf,
            rx,
            tx,
            fill,
            comp,
            _umem: umem,
            area,
            name: ifname.to_string(),
            mtu,
            free,
            refill: Vec::with_capacity(RING as usize),
            joined: Vec::with_capacity(mtu + L2_OVERHEAD),
            discarding: false,
            unsent: VecDeque::with_capacity(RING as usize),
            taken: 0,
            committed: 0,
            consumed: 0,
            counters: IoStats::default(),
            kernel_drops_at_open: 0,
        };
        port.kernel_drops_at_open = port.kernel_drops();
        Ok(port)
    }

    /// The interface's MTU.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Frames the kernel could not put on the RX ring (ring full, no fill chunk, or
    /// too big), since bind.
    fn kernel_drops(&self) -> u64 {
        // SAFETY: XDP_STATISTICS on our own socket into a properly sized struct; the
        // kernel writes at most `len` bytes during the call.
        let mut st = xdpilone::xdp::XdpStatisticsV2::default();
        let mut len = size_of::<xdpilone::xdp::XdpStatisticsV2>() as libc::socklen_t;
        let r = unsafe {
            libc::getsockopt(
                self.rx.as_raw_fd(),
                SOL_XDP,
                XDP_STATISTICS,
                (&mut st as *mut xdpilone::xdp::XdpStatisticsV2).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return 0;
        }
        st.rx_dropped + st.rx_ring_full
    }

    /// Hands the received chunks back to the kernel through the fill ring. The ring
    /// has room for every receive chunk, but a reservation only refreshes its view of
    /// the kernel's consumer once that view shows no room at all, so it may grant
    /// fewer than asked: reserve again, and keep what still does not fit for the
    /// next call (never drop a chunk: it would be gone from the port for good).
    fn refill_ring(&mut self) {
        for _ in 0..2 {
            if self.refill.is_empty() {
                return;
            }
            let mut w = self.fill.fill(self.refill.len() as u32);
            let n = w.insert(self.refill.iter().copied()) as usize;
            w.commit();
            self.refill.drain(..n);
        }
    }

    /// Takes back the chunks the kernel has finished sending.
    fn reap(&mut self) {
        let mut c = self.comp.complete(RING);
        while let Some(addr) = c.read() {
            self.free.push(addr & !u64::from(CHUNK - 1));
        }
        c.release();
    }

    /// Counts the frames whose descriptors the kernel has taken off the TX ring (on a
    /// kick, or when `poll` drove the ring, which copy mode also does).
    fn account_taken(&mut self) {
        let consumed = self.committed.wrapping_sub(self.tx.pending());
        self.taken += consumed.wrapping_sub(self.consumed);
        self.consumed = consumed;
        while let Some(&d) = self.unsent.front() {
            if u32::from(d) > self.taken {
                break;
            }
            self.taken -= u32::from(d);
            self.unsent.pop_front();
            self.counters.tx_frames += 1;
        }
    }

    /// The largest frame `send` accepts and the interface can carry.
    fn max_frame(&self) -> usize {
        self.mtu + L2_OVERHEAD
    }
}

/// `SOL_XDP` and its `XDP_STATISTICS` option (linux/if_xdp.h).
const SOL_XDP: libc::c_int = 283;
const XDP_STATISTICS: libc::c_int = 7;

impl PacketIo for AfXdp {
    fn name(&self) -> &str {
        &self.name
    }

    fn fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }

    fn recv(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> io::Result<usize> {
        let mut frames = 0;
        let limit = self.max_frame();
        {
            // Up to `max` descriptors: at least `max / 2` whole frames when they are
            // jumbo, `max` when they fit a chunk.
            let mut r = self.rx.receive(max.min(RING as usize) as u32);
            while let Some(d) = r.read() {
                self.refill.push(d.addr & !u64::from(CHUNK - 1));
                // SAFETY: the descriptor came off the RX ring, so the kernel has written
                // this chunk and will not touch it until it returns on the fill ring
                // (after `r.release()` below and the refill).
                let bytes = unsafe { self.area.bytes(d.addr, d.len) };
                let more = d.options & XDP_PKT_CONTD != 0;
                if !more && self.joined.is_empty() && !self.discarding {
                    frames += 1;
                    self.counters.rx_frames += 1;
                    f(bytes);
                    continue;
                }
                if self.discarding || self.joined.len() + bytes.len() > limit {
                    // Longer than the interface can carry: dropped whole.
                    self.joined.clear();
                    self.discarding = more;
                    self.counters.rx_truncated += u64::from(!more);
                    continue;
                }
                self.joined.extend_from_slice(bytes);
                if !more {
                    frames += 1;
                    self.counters.rx_frames += 1;
                    f(&self.joined);
                    self.joined.clear();
                }
            }
            r.release();
        }
        self.refill_ring();
        Ok(frames)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        if frame.len() < ETH_HLEN {
            self.counters.tx_errors += 1;
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "AF_XDP {}: a {}-byte frame is shorter than an Ethernet header",
                    self.name,
                    frame.len()
                ),
            ));
        }
        if frame.len() > self.max_frame() {
            self.counters.tx_errors += 1;
            let e = io::Error::from_raw_os_error(libc::EMSGSIZE);
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "AF_XDP {}: a {}-byte frame is over the {} bytes the interface carries ({e})",
                    self.name,
                    frame.len(),
                    self.max_frame()
                ),
            ));
        }
        let pieces = frame.len().div_ceil(CHUNK as usize);
        if self.free.len() < pieces {
            self.reap();
            if self.free.len() < pieces {
                return Ok(false);
            }
        }
        if (RING - self.tx.pending()) < pieces as u32 {
            return Ok(false);
        }
        // The ring has room for every piece, but a reservation only refreshes its view
        // of the kernel's consumer once that view shows no room at all, so it may grant
        // fewer: commit those and reserve again. The kernel takes descriptors only in
        // this thread's syscalls and keeps a partial multi-buffer frame until its last
        // piece comes, so a frame committed in two steps is sent whole.
        let mut pieces_left = frame.chunks(CHUNK as usize).peekable();
        while pieces_left.peek().is_some() {
            let mut w = self.tx.transmit(pieces as u32);
            // `capacity` is what was reserved, not what is left of it.
            for _ in 0..w.capacity() {
                let Some(piece) = pieces_left.next() else {
                    break;
                };
                let addr = self.free.pop().expect("enough free chunks, checked above");
                // SAFETY: `addr` is a chunk from the free list: userspace owns it until
                // the descriptor is committed below.
                unsafe { self.area.bytes_mut(addr, piece.len()) }.copy_from_slice(piece);
                let last = pieces_left.peek().is_none();
                let put = w.insert_once(XdpDesc {
                    addr,
                    len: piece.len() as u32,
                    options: if last { 0 } else { XDP_PKT_CONTD },
                });
                debug_assert!(put, "a reserved slot takes its descriptor");
            }
            w.commit();
        }
        self.committed = self.committed.wrapping_add(pieces as u32);
        self.unsent.push_back(pieces as u8);
        Ok(true)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Copy mode sends only on a kick, at most 32 descriptors per kick.
        loop {
            let before = self.tx.pending();
            if before == 0 {
                self.account_taken();
                self.reap();
                return Ok(());
            }
            // SAFETY: a TX kick on our own socket: no buffer and no address.
            let r = unsafe {
                libc::sendto(
                    self.tx.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            let err = (r < 0).then(io::Error::last_os_error);
            self.account_taken();
            self.reap();
            let progressed = self.tx.pending() < before;
            match err {
                None => {}
                Some(e) if e.raw_os_error() == Some(libc::EAGAIN) && progressed => {}
                Some(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EAGAIN | libc::ENOBUFS | libc::EBUSY | libc::EINTR)
                    ) =>
                {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Some(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("AF_XDP {}: send: {e}", self.name),
                    ))
                }
            }
            if !progressed {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }

    fn stats(&self) -> IoStats {
        IoStats {
            rx_kernel_drops: self
                .kernel_drops()
                .saturating_sub(self.kernel_drops_at_open),
            ..self.counters
        }
    }
}

#[cfg(test)]
mod tests {
    //! Root-only, on a veth pair in a private network namespace (see
    //! `io::testkit`): not root, skipped, or a failure under `CI=true`. A build
    //! without clang has no program to attach: these tests then fail, since
    //! scripts/setup.sh installs clang everywhere the tests run.

    use super::*;
    use crate::io::testkit::{both_ways, build, flush_ok, parse, with_veth};

    fn open(ifname: &str) -> Box<dyn PacketIo> {
        Box::new(AfXdp::open(ifname).unwrap_or_else(|e| panic!("{e}")))
    }

    /// Frames from 60 bytes to 9000 (three chunks each) both ways at once.
    #[test]
    fn both_ways_in_order() {
        both_ways("x", 9000, open);
    }

    /// Frames of every size from 60 bytes to 9000, each sent once the last was
    /// received (so nothing can be dropped): every one arrives whole, also those whose
    /// pieces straddle the end of the TX ring (it wraps about frame 1262).
    #[test]
    fn every_size_arrives_whole() {
        with_veth("xs", |v| {
            let mut a = open(&v.a);
            let mut b = open(&v.b);
            let (mut buf, mut got) = (Vec::new(), None);
            for (seq, len) in (60..=9018)
                .step_by(7)
                .chain([4095, 4096, 4097, 8192])
                .enumerate()
            {
                let seq = seq as u32;
                build(&mut buf, 0, seq, len);
                assert!(a.send(&buf).unwrap());
                flush_ok(&mut *a);
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                got = None;
                while got.is_none() {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "frame {seq} of {len} bytes lost"
                    );
                    b.recv(1, &mut |f| got = Some(f.to_vec())).unwrap();
                }
                assert!(
                    got.as_deref() == Some(&buf[..]),
                    "frame {seq} of {len} bytes corrupted"
                );
            }
            assert!(got.is_some());
        });
    }

    /// A burst the receiver cannot hold (it does not read meanwhile): `send` says
    /// `Ok(false)` once the sender's chunks are all in flight, and every frame that
    /// does not arrive is counted as a kernel drop at the receiver. Those that arrive
    /// are whole and in order.
    #[test]
    fn what_a_full_receiver_drops_is_counted() {
        with_veth("xb", |v| {
            let mut a = open(&v.a);
            let mut b = open(&v.b);
            let (mut buf, mut want) = (Vec::new(), Vec::new());
            let mut sent = 0u32;
            for _ in 0..3 {
                loop {
                    build(&mut buf, 0, sent, 4426);
                    if !a.send(&buf).unwrap() {
                        break;
                    }
                    sent += 1;
                }
                assert_eq!(
                    sent % (CHUNKS / 2 / 2),
                    0,
                    "refused only with every chunk in use"
                );
                while a.flush().is_err() {}
            }
            let (mut got, mut last) = (0u32, None);
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
            while std::time::Instant::now() < deadline {
                b.recv(4096, &mut |f| {
                    let (_, seq) = parse(f);
                    assert!(last.is_none_or(|l| seq > l), "{seq} after {last:?}");
                    build(&mut want, 0, seq, 4426);
                    assert!(f == &want[..], "frame {seq} corrupted");
                    last = Some(seq);
                    got += 1;
                })
                .unwrap();
            }
            let st = b.stats();
            assert_eq!(a.stats().tx_frames, u64::from(sent));
            assert!(
                st.rx_kernel_drops > 0,
                "the burst fit: the test sent too little"
            );
            assert_eq!(
                u64::from(got) + st.rx_kernel_drops,
                u64::from(sent),
                "{st:?}"
            );
        });
    }

    /// Frames the interface cannot carry are refused at `send`, counted, and the
    /// port stays usable; so are runts.
    #[test]
    fn oversized_and_runt_frames_are_refused() {
        with_veth("xo", |v| {
            let mut a = open(&v.a);
            let mut buf = Vec::new();
            build(&mut buf, 0, 0, 9000 + 18 + 1);
            let e = a.send(&buf).unwrap_err();
            assert!(e.to_string().contains("over the 9018 bytes"), "{e}");
            assert_eq!(
                a.send(&buf[..10]).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
            assert_eq!(a.stats().tx_errors, 2);
            build(&mut buf, 0, 1, 9000 + 18);
            assert!(a.send(&buf).unwrap());
            flush_ok(&mut *a);
        });
    }

    /// Dropping the port detaches its program: the interface has no XDP program left.
    #[test]
    fn drop_detaches_the_program() {
        with_veth("xd", |v| {
            let shown = |ifname: &str| {
                let out = std::process::Command::new("ip")
                    .args(["-d", "link", "show", ifname])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            let port = open(&v.a);
            assert!(shown(&v.a).contains("xdp"), "{}", shown(&v.a));
            drop(port);
            assert!(!shown(&v.a).contains("prog/xdp"), "{}", shown(&v.a));
        });
    }
}
