//! The emu datapath: the dataplane's switches and NICs on real interfaces, on the
//! wall clock.
//!
//! One thread drives a whole fabric. Every switch port and every host NIC is one veth
//! end in its own network namespace (built by `fablab-testbed`), read and written
//! through a [`PacketIo`] backend. Frames really cross the kernel between nodes; the
//! per-packet decisions are made by the same [`Switch`] and [`Nic`] state machines
//! the simulator runs, fed with wall-clock time.
//!
//! The kernel has no netem here, so links are emulated in this driver, at the
//! sending end of every link, exactly where the simulator models them: a switch
//! port's egress queue (the dataplane's) is drained at the link's rate by a pacer
//! (`busy_until`), then each frame waits in a delay line for the propagation delay
//! (and is dropped with the link's loss probability) before it is written to the
//! veth. Queue depth, ECN marks, PFC and INT occupancy therefore mean what they mean
//! in sim. PFC pause and resume are signalled inside this process (the peer's port
//! stops after the link delay's worth of time), not as 802.1Qbb frames.
//!
//! Switches also forward frames that are not fablab's: any IPv4 packet to a fabric
//! host goes out by longest-prefix match (the host's /32) over the same equal-cost
//! ports, with the scenario's load-balancing policy, through the same queues. Frames
//! that are neither (not IPv4, a bad IPv4 header, a malformed RoCEv2 frame) are
//! dropped and counted by reason; nothing a host sends can stop a switch.
//!
//! Every data payload a NIC receives is compared with the flow's pattern at its
//! offset before the NIC sees the packet, so `delivered_digest` (computed from the
//! pattern over the in-order prefix the NIC delivered) is the digest of the bytes
//! that really arrived.

pub mod link;
pub mod session;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fablab_dataplane::cc::Registry;
use fablab_dataplane::codec::{self, DecodeError};
use fablab_dataplane::packet::{FlowId, Kind, Nanos, Packet};
use fablab_dataplane::payload;
use fablab_dataplane::rng::Rng;
use fablab_dataplane::sim::metrics::{self, Progress, Report, RunView, SampleCounts, Step};
use fablab_dataplane::sim::topology::PortRef;
use fablab_dataplane::sim::{Fabric, SimConfig};
use fablab_dataplane::switch::{PortStats, SwitchEvent, Verdict};
use fablab_dataplane::wire::addr::{host_of_ip, port_mac};
use fablab_dataplane::wire::frame::{ECN_CE, OVERHEAD};
use fablab_dataplane::wire::{Problem, U24_MASK};

use crate::io::PacketIo;
use crate::pcap::PcapSink;
use link::{Classified, FramePool, BUF_LEN};

/// Frames read from one port per turn of the loop.
const RX_BATCH: usize = 64;
/// How late a pacer may start a frame and still count it as starting on time (the
/// loop's own latency; beyond this an idle link simply starts now).
const PACER_SLACK: Nanos = 20_000;
/// The emu's floor under the NICs' retransmission timeout (see `run`).
const RTO_FLOOR: Nanos = 10_000_000;
/// Wall time without any delivery or flow start after which an unbounded run is
/// declared stuck.
const STALL_LIMIT: Duration = Duration::from_secs(10);
/// Sleep in `ppoll(2)` only when nothing is due sooner than this.
const SPIN_THRESHOLD: Nanos = 10_000;
/// How much earlier than the next due event a sleep ends (the wake-up latency).
const WAKE_MARGIN: Nanos = 5_000;
/// The longest single sleep.
const MAX_SLEEP: Nanos = 10_000_000;

/// Opens the I/O of one port: called with the namespace and the interface. Called
/// for every port at once, from many threads: setting up an AF_PACKET ring waits out
/// an RCU grace period, and one port after another that took ~20 ms each.
pub type OpenPort<'a> = dyn Fn(&str, &str) -> anyhow::Result<Box<dyn PacketIo>> + Sync + 'a;

/// One port of the fabric as the emu sees it.
#[derive(Debug, Clone)]
pub struct PortSpec {
    pub node: u32,
    pub port: u16,
    pub netns: String,
    pub ifname: String,
}

/// What to capture: every port, or the ports whose interface or `node:port` name
/// matches.
#[derive(Debug, Clone)]
pub struct Capture {
    pub dir: PathBuf,
    pub which: String,
}

/// Frames dropped outside the dataplane's queues, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drops {
    /// At switches: frames that were not forwardable, by reason.
    pub switch: BTreeMap<String, u64>,
    /// At host NICs: frames that were not a fablab packet for this host, by reason.
    pub host: BTreeMap<String, u64>,
}

impl Drops {
    fn count(map: &mut BTreeMap<String, u64>, reason: &str) {
        match map.get_mut(reason) {
            Some(n) => *n += 1,
            None => {
                map.insert(reason.to_string(), 1);
            }
        }
    }
}

/// A finished emu run.
#[derive(Debug)]
pub struct EmuRun {
    pub report: Report,
    pub wall: Duration,
    pub drops: Drops,
    /// Frames each port's backend received and sent, and what its kernel dropped.
    pub io: Vec<(String, crate::io::IoStats)>,
    /// Set when the run was stopped by Ctrl-C / SIGTERM before it finished.
    pub interrupted: bool,
    /// Captures written.
    pub pcaps: Vec<PathBuf>,
    /// How late the loop came back to work: the longest delay (ns) past the moment
    /// it meant to resume (the end of a sleep, or at once after a busy turn), and how
    /// many times it exceeded [`STALL`]. Stalls come from the machine (other
    /// processes, the kernel's own work, a VM's host) or from a saturated loop; the
    /// link emulation is off by that much while one lasts.
    pub late_max: Nanos,
    pub stalls: u64,
}

/// A loop that resumes this late counts as stalled.
pub const STALL: Nanos = 1_000_000;

#[derive(Debug)]
struct Egress {
    node: u32,
    port: u16,
    peer: PortRef,
    rate_mbps: u32,
    base_rate_mbps: u32,
    delay: Nanos,
    loss: f64,
    up: bool,
    /// Hosts only: the switch asked this NIC to pause (PFC).
    paused: bool,
    /// When the frame being serialized has left.
    busy_until: Nanos,
    /// Serialized frames waiting out the propagation delay: (due, buffer).
    line: VecDeque<(Nanos, u32)>,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
}

/// What a switch keeps about a queued frame.
#[derive(Debug, Clone, Copy)]
enum Stored {
    /// A fablab frame, decoded (the switch may have set CE and INT on it), and
    /// where its payload lies in the stored frame.
    Fablab {
        pkt: Packet,
        first: bool,
        ttl: u8,
        payload_at: u32,
        payload_len: u32,
    },
    /// Any other IPv4 packet; `pkt` is the stand-in the switch queued.
    Plain { pkt: Packet },
}

/// Where `payload` (a slice of `frame`, or empty) starts in `frame`.
fn payload_offset(frame: &[u8], payload: &[u8]) -> u32 {
    if payload.is_empty() {
        return 0;
    }
    let at = (payload.as_ptr() as usize).checked_sub(frame.as_ptr() as usize);
    match at {
        Some(at) if at + payload.len() <= frame.len() => at as u32,
        _ => unreachable!("the codec's payload is a slice of the frame it decoded"),
    }
}

/// A pause or resume travelling to a port.
#[derive(Debug, Clone, Copy)]
struct PfcSignal {
    at: Nanos,
    node: u32,
    port: u16,
    pause: bool,
}

/// The running emu.
struct Emu<'a> {
    cfg: &'a SimConfig,
    registry: &'a Registry,
    fab: Fabric,
    start: Instant,
    ports: Vec<PortSpec>,
    /// Index of node n's port p in `ports`/`io`/`egress`: `first_port[n] + p`.
    first_port: Vec<usize>,
    io: Vec<Box<dyn PacketIo>>,
    egress: Vec<Egress>,
    pool: FramePool,
    stored: Vec<Option<Stored>>,
    payload: Vec<u8>,
    rx: Vec<u32>,
    progress: Progress,
    dependents: Vec<Vec<FlowId>>,
    pending_starts: VecDeque<(Nanos, FlowId)>,
    tx_index: Vec<u64>,
    rx_index: Vec<u64>,
    pfc: VecDeque<PfcSignal>,
    faults_applied: usize,
    rng: Rng,
    queue_samples: SampleCounts,
    next_sample: Nanos,
    /// The queues of switches outside this loop (`SwitchPlane::External`).
    external_queues: Option<&'a (dyn Fn() -> Vec<u64> + Sync)>,
    /// Applies link faults to switches outside this loop.
    external_fault: Option<&'a ExternalFault<'a>>,
    link_drops: u64,
    pfc_pauses: u64,
    frames: u64,
    last_delivery: Nanos,
    last_progress: Instant,
    drops: Drops,
    pcap: Vec<Option<PcapSink<std::io::BufWriter<std::fs::File>>>>,
    pcap_paths: Vec<PathBuf>,
    pollfds: Vec<libc::pollfd>,
    /// When the loop meant to resume work (see [`EmuRun::late_max`]).
    resume_at: Nanos,
    late_max: Nanos,
    stalls: u64,
}

/// Sleeps until one of `fds` is readable or `timeout` passes. `ppoll(2)`, not
/// `poll(2)`: poll's millisecond timeout would oversleep a pacer that is due in a few
/// hundred microseconds by most of a millisecond.
fn wait_readable(fds: &mut [libc::pollfd], timeout: Nanos) -> std::io::Result<()> {
    let ts = libc::timespec {
        tv_sec: (timeout / 1_000_000_000) as libc::time_t,
        tv_nsec: (timeout % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `fds` is a valid, initialized array of `pollfd` that lives for the whole
    // call; ppoll(2) writes only the `revents` fields inside it, reads `ts`, and with a
    // null signal mask leaves the thread's mask alone.
    let r = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Hands a port's queued frames to the kernel; a kernel that takes only some for now
/// keeps the rest queued for the next turn.
fn flush(io: &mut dyn PacketIo) -> anyhow::Result<()> {
    match io.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {
            Err(e).with_context(|| format!("sending on {}", io.name()))
        }
        _ => Ok(()),
    }
}

/// The nanoseconds since `start`.
fn since(start: Instant) -> Nanos {
    start.elapsed().as_nanos() as Nanos
}

/// The counter a frame that is not a fablab packet is dropped under: the header and
/// field at fault and what was wrong, without the values (so counts add up).
fn decode_reason(e: &DecodeError) -> String {
    match e {
        DecodeError::Wire(w) => {
            let what = match w.problem {
                Problem::Truncated { .. } => "truncated",
                Problem::BadValue { .. } => "bad value",
                Problem::Mismatch { .. } => "checksum mismatch",
            };
            format!("{} `{}`: {what}", w.header, w.field)
        }
        DecodeError::Address { .. } => "IPv4 address outside the fabric".into(),
        DecodeError::Unsupported { .. } => "RoCEv2 opcode fablab does not send".into(),
    }
}

/// The 64-bit packet index a 24-bit PSN stands for, nearest to `near`.
fn unwrap_psn(near: u64, psn: u32) -> u64 {
    let span = u64::from(U24_MASK) + 1;
    let base = near & !u64::from(U24_MASK);
    let cand = base | u64::from(psn);
    [cand.wrapping_sub(span), cand, cand + span]
        .into_iter()
        .min_by_key(|&c| c.abs_diff(near))
        .unwrap_or(cand)
}

/// Which nodes one datapath thread serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The whole fabric.
    All,
    /// The hosts' NICs (and the flows, their timers and the delivery checks).
    Hosts,
    /// The switches (and their queues, INT and PFC).
    Switches,
}

impl Role {
    fn serves(self, is_host: bool) -> bool {
        match self {
            Role::All => true,
            Role::Hosts => is_host,
            Role::Switches => !is_host,
        }
    }
}

/// Who forwards at the switches.
#[derive(Clone, Copy)]
pub enum SwitchPlane<'a> {
    /// The emu's own switches, on the switch ports `open_port` opens.
    Userspace,
    /// Something outside this loop (`--mode xdp`'s XDP programs): the switch ports
    /// are left alone.
    External {
        /// The switches' port counters, read for the report once the run is over.
        port_stats: &'a (dyn Fn() -> anyhow::Result<Vec<Vec<PortStats>>> + Sync),
        /// Every switch port's queue occupancy now, in bytes, for the queue samples.
        queues: &'a (dyn Fn() -> Vec<u64> + Sync),
        /// Applies a link fault to a switch port: (node, port, up, loss, rate Mb/s)
        /// after the fault.
        fault: &'a ExternalFault<'a>,
    },
}

/// See [`SwitchPlane::External`].
pub type ExternalFault<'a> = dyn Fn(u32, u16, bool, f64, u32) -> anyhow::Result<()> + Sync + 'a;

/// How often the queues of external switches are sampled at most: each sample
/// costs a map read per port.
const EXTERNAL_SAMPLE: Nanos = 50_000;

impl std::fmt::Debug for SwitchPlane<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SwitchPlane::Userspace => f.write_str("Userspace"),
            SwitchPlane::External { .. } => f.write_str("External"),
        }
    }
}

/// How [`run`] runs.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// Run no flows and forward whatever the hosts send until stopped (`fablab
    /// testbed serve`).
    pub serve: bool,
    /// Datapath threads: 1, or 2 (hosts and switches apart).
    pub threads: usize,
    /// Written (with this process's id) once every port is open.
    pub ready: Option<&'a std::path::Path>,
    pub switches: SwitchPlane<'a>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            serve: false,
            threads: 1,
            ready: None,
            switches: SwitchPlane::Userspace,
        }
    }
}

/// Runs `cfg`'s traffic over the ports `open_port` opens. `ports` lists every port of
/// the fabric (every host's port 0 and every switch port) in node order.
///
/// With `threads == 2` the run uses two datapath threads, one for the hosts' NICs
/// and one for the switches: they share nothing but the veths between them (every
/// frame crosses the kernel anyway), so each runs the same loop over its own nodes'
/// ports and the results are merged. That carries more traffic before the CPU is
/// the limit, but on a small VM two sleeping threads also get woken late more often
/// (docs/emu.md). Runs with PFC (pause signals go from a switch to its neighbours
/// inside the process), `testbed serve` and external switches always use one thread.
pub fn run(
    cfg: &SimConfig,
    registry: &Registry,
    ports: Vec<PortSpec>,
    open_port: &OpenPort<'_>,
    capture: Option<&Capture>,
    stop: Arc<AtomicBool>,
    opts: Options<'_>,
) -> anyhow::Result<EmuRun> {
    let Options {
        serve,
        threads,
        ready,
        switches,
    } = opts;
    let external = matches!(switches, SwitchPlane::External { .. });
    anyhow::ensure!(
        threads == 1 || threads == 2,
        "--threads {threads}: the emu runs on 1 or 2 datapath threads"
    );
    // The NICs' pacers may catch up by as much as a link's pacer does: the loop
    // polls them a little late.
    let mut nic_cfg = cfg.clone();
    nic_cfg.nic.pacing_slack = PACER_SLACK;
    // A machine that stalls the loop for milliseconds now and then (measured: up to
    // ~6 ms on the 2-core VM) would otherwise fire every flow's retransmission timer
    // at once and flood the fabric with retransmissions of packets still on their
    // way; losses are still found sooner by RACK and NACKs.
    nic_cfg.nic.rto_min = cfg.nic.rto_min.max(RTO_FLOOR);
    let topo = fablab_dataplane::sim::topology::Topology::build(&cfg.topology);
    let mut n = 0;
    for (i, ps) in ports.iter().enumerate() {
        let first: usize = (0..ps.node as usize).map(|k| topo.ports[k].len()).sum();
        anyhow::ensure!(
            (ps.node as usize) < topo.node_count() && first + usize::from(ps.port) == i,
            "testbed port {} ({}) is out of node order",
            i,
            ps.ifname
        );
        n += 1;
    }
    let total: usize = (0..topo.node_count()).map(|k| topo.ports[k].len()).sum();
    anyhow::ensure!(
        n == total,
        "the testbed has {n} ports, the topology {total}"
    );
    if let Some(c) = capture {
        anyhow::ensure!(
            ports.iter().any(|ps| wanted(c, &topo, ps)),
            "--pcap {}: no such port; name an interface (fl-s0p1), a switch port (leaf0:1) or `all`",
            c.which
        );
    }
    // Serving a testbed, the hosts are the kernels' and their interfaces are left
    // alone: an AF_XDP socket there would take every frame from the host's stack.
    // External switches' ports are theirs.
    let topo_ref = &topo;
    let opened: Vec<anyhow::Result<Box<dyn PacketIo>>> = std::thread::scope(|s| {
        let handles: Vec<_> = ports
            .iter()
            .map(|ps| {
                s.spawn(move || -> anyhow::Result<Box<dyn PacketIo>> {
                    let host = topo_ref.is_host(ps.node);
                    if (serve && host) || (external && !host) {
                        Ok(Box::new(crate::io::Unserved::new(&ps.ifname)))
                    } else {
                        open_port(&ps.netns, &ps.ifname)
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut io = Vec::with_capacity(n);
    for (ps, r) in ports.iter().zip(opened) {
        io.push(r.with_context(|| format!("opening {} in {}", ps.ifname, ps.netns))?);
    }
    if threads == 2 && cfg.pfc.is_some() {
        tracing::info!("PFC is on: one datapath thread (pause signals stay inside it)");
    }
    let two = threads == 2 && !serve && !external && cfg.pfc.is_none();
    if !two {
        let mut emu = Emu::new(
            &nic_cfg,
            cfg,
            registry,
            ports,
            io,
            capture,
            if external { Role::Hosts } else { Role::All },
            serve,
        )?;
        if let SwitchPlane::External { queues, fault, .. } = switches {
            emu.external_queues = Some(queues);
            emu.external_fault = Some(fault);
        }
        if let Some(path) = ready {
            std::fs::write(path, std::process::id().to_string())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        emu.start = Instant::now();
        let interrupted = emu.run_loop(&stop, serve)?;
        let report = match switches {
            SwitchPlane::External { port_stats, .. } => emu.report(None, Some(port_stats()?)),
            SwitchPlane::Userspace => emu.report(None, None),
        };
        return emu.finish(report, interrupted, None);
    }
    // Two threads: every port's I/O goes to the thread of its node; the other
    // thread holds a stand-in that never has frames.
    let mut host_io = Vec::with_capacity(n);
    let mut switch_io = Vec::with_capacity(n);
    for (ps, real) in ports.iter().zip(io) {
        let stand_in: Box<dyn PacketIo> = Box::new(crate::io::Unserved::new(&ps.ifname));
        if topo.is_host(ps.node) {
            host_io.push(real);
            switch_io.push(stand_in);
        } else {
            host_io.push(stand_in);
            switch_io.push(real);
        }
    }
    let switches_stop = AtomicBool::new(false);
    let start = Instant::now();
    let ports2 = ports.clone();
    std::thread::scope(|s| {
        let sw = s.spawn(|| -> anyhow::Result<Emu<'_>> {
            let mut e = Emu::new(
                &nic_cfg,
                cfg,
                registry,
                ports2,
                switch_io,
                capture,
                Role::Switches,
                false,
            )?;
            e.start = start;
            // Until the hosts' thread is done: the switches cannot tell on their own.
            e.run_loop(&switches_stop, true)?;
            Ok(e)
        });
        let hosts = (|| -> anyhow::Result<(Emu<'_>, bool)> {
            let mut e = Emu::new(
                &nic_cfg,
                cfg,
                registry,
                ports,
                host_io,
                capture,
                Role::Hosts,
                false,
            )?;
            e.start = start;
            let interrupted = e.run_loop(&stop, false)?;
            Ok((e, interrupted))
        })();
        switches_stop.store(true, Ordering::Relaxed);
        let switches = sw
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
            .context("the switches' datapath thread")?;
        let (mut hosts, interrupted) = hosts.context("the hosts' datapath thread")?;
        let report = hosts.report(Some(&switches), None);
        hosts.finish(report, interrupted, Some(switches))
    })
}

/// Whether `--pcap` asks for port `ps`.
fn wanted(c: &Capture, topo: &fablab_dataplane::sim::topology::Topology, ps: &PortSpec) -> bool {
    let name = format!("{}:{}", topo.names[ps.node as usize], ps.port);
    c.which == "all" || c.which == ps.ifname || c.which == name
}

impl<'a> Emu<'a> {
    /// One datapath thread's state for `role`'s nodes, over `io` (one per port, in
    /// port order; stand-ins for the ports of nodes it does not serve).
    #[allow(clippy::too_many_arguments)]
    fn new(
        nic_cfg: &SimConfig,
        cfg: &'a SimConfig,
        registry: &'a Registry,
        ports: Vec<PortSpec>,
        io: Vec<Box<dyn PacketIo>>,
        capture: Option<&Capture>,
        role: Role,
        serve: bool,
    ) -> anyhow::Result<Emu<'a>> {
        let mut fab = Fabric::build(nic_cfg, registry).map_err(|e| anyhow::anyhow!(e))?;
        // Timed sleeps end within a microsecond of their deadline instead of the
        // default 50 µs slack: pacers on slow links sleep between frames.
        // SAFETY: PR_SET_TIMERSLACK takes an integer argument and changes only this
        // thread's timer slack; it cannot fail for a value > 0.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong) };
        if serve || role == Role::Switches {
            // Serving a testbed: the hosts' own programs make the traffic. The
            // switches' thread: the hosts' thread runs the flows.
            fab.flows.clear();
        }
        let topo = &fab.topo;
        let mut first_port = Vec::with_capacity(topo.node_count());
        let mut n = 0;
        for node in 0..topo.node_count() {
            first_port.push(n);
            n += topo.ports[node].len();
        }
        let mut egress = Vec::with_capacity(n);
        let mut pcap = Vec::with_capacity(n);
        let mut pcap_paths = Vec::new();
        for ps in &ports {
            let (node, port) = (ps.node, ps.port);
            let l = &topo.links[topo.ports[node as usize][usize::from(port)]];
            let peer = topo.peer(node, port);
            egress.push(Egress {
                node,
                port,
                peer,
                rate_mbps: l.rate_mbps,
                base_rate_mbps: l.rate_mbps,
                delay: l.delay,
                loss: 0.0,
                up: true,
                paused: false,
                busy_until: 0,
                line: VecDeque::with_capacity(1024),
                src_mac: port_mac(node, port),
                dst_mac: port_mac(peer.node, peer.port),
            });
            match capture.filter(|c| role.serves(topo.is_host(node)) && wanted(c, topo, ps)) {
                Some(c) => {
                    std::fs::create_dir_all(&c.dir)
                        .with_context(|| format!("creating {}", c.dir.display()))?;
                    let path = c.dir.join(format!("{}.pcap", ps.ifname));
                    pcap.push(Some(PcapSink::create(&path)?));
                    pcap_paths.push(path);
                }
                None => pcap.push(None),
            }
        }
        let flows = fab.flows.len();
        let mut dependents = vec![Vec::new(); flows];
        let mut starts = Vec::new();
        for f in &fab.flows {
            anyhow::ensure!(
                f.id <= U24_MASK,
                "flow {} does not fit a 24-bit queue pair number",
                f.id
            );
            match f.after {
                Some(a) => dependents[a as usize].push(f.id),
                None => starts.push((f.start, f.id)),
            }
        }
        starts.sort();
        let pool = FramePool::new(8192);
        let stored = vec![None; pool.capacity()];
        let pollfds = io
            .iter()
            .map(|io| libc::pollfd {
                fd: io.fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        Ok(Emu {
            cfg,
            registry,
            start: Instant::now(),
            ports,
            first_port,
            io,
            egress,
            stored,
            pool,
            payload: vec![0; BUF_LEN],
            rx: Vec::with_capacity(RX_BATCH),
            progress: Progress::new(flows),
            dependents,
            pending_starts: starts.into(),
            tx_index: vec![0; flows],
            rx_index: vec![0; flows],
            pfc: VecDeque::new(),
            faults_applied: 0,
            rng: Rng::fork(cfg.seed, 5),
            queue_samples: SampleCounts::default(),
            next_sample: 0,
            external_queues: None,
            external_fault: None,
            link_drops: 0,
            pfc_pauses: 0,
            frames: 0,
            last_delivery: 0,
            last_progress: Instant::now(),
            drops: Drops::default(),
            pcap,
            pcap_paths,
            pollfds,
            resume_at: 0,
            late_max: 0,
            stalls: 0,
            fab,
        })
    }

    /// Closes the captures and hands over what the run measured, merged with the
    /// switches' thread's when there was one.
    fn finish(
        &mut self,
        report: Report,
        interrupted: bool,
        switches: Option<Emu<'a>>,
    ) -> anyhow::Result<EmuRun> {
        let wall = self.start.elapsed();
        let mut parts = vec![&mut *self];
        let mut sw = switches;
        if let Some(s) = sw.as_mut() {
            parts.push(s);
        }
        let mut run = EmuRun {
            report,
            wall,
            io: Vec::new(),
            drops: Drops::default(),
            interrupted,
            pcaps: Vec::new(),
            late_max: 0,
            stalls: 0,
        };
        for e in parts {
            for sink in e.pcap.iter_mut() {
                if let Some(s) = sink.take() {
                    s.finish()?;
                }
            }
            run.pcaps.append(&mut e.pcap_paths);
            for (k, (p, io)) in e.ports.iter().zip(&e.io).enumerate() {
                let st = io.stats();
                match run.io.get_mut(k) {
                    Some((_, acc)) => acc.add(&st),
                    None => run.io.push((p.ifname.clone(), st)),
                }
            }
            for (map, from) in [
                (&mut run.drops.switch, &e.drops.switch),
                (&mut run.drops.host, &e.drops.host),
            ] {
                for (reason, n) in from {
                    *map.entry(reason.clone()).or_insert(0) += n;
                }
            }
            run.late_max = run.late_max.max(e.late_max);
            run.stalls += e.stalls;
        }
        run.pcaps.sort();
        Ok(run)
    }
}

impl Drop for Emu<'_> {
    /// Closes every port at once: closing an AF_PACKET socket waits out an RCU grace
    /// period (tens of milliseconds here), and one after another that added up to a
    /// second per run for 24 ports.
    fn drop(&mut self) {
        let ports = std::mem::take(&mut self.io);
        std::thread::scope(|s| {
            for io in ports {
                s.spawn(move || drop(io));
            }
        });
    }
}

impl Emu<'_> {
    fn now(&self) -> Nanos {
        since(self.start)
    }

    fn is_host(&self, node: u32) -> bool {
        self.fab.topo.is_host(node)
    }

    fn idx(&self, node: u32, port: u16) -> usize {
        self.first_port[node as usize] + usize::from(port)
    }

    /// Returns whether the run was interrupted. With `serve` it runs until stopped,
    /// forwarding whatever the hosts send (`fablab testbed up`).
    fn run_loop(&mut self, stop: &AtomicBool, serve: bool) -> anyhow::Result<bool> {
        self.last_progress = Instant::now();
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(!serve);
            }
            let now = self.now();
            let late = now.saturating_sub(self.resume_at);
            self.late_max = self.late_max.max(late);
            if late > STALL {
                self.stalls += 1;
                tracing::debug!(
                    "the loop stalled at {} µs: {} µs late",
                    now / 1000,
                    late / 1000
                );
            }
            self.resume_at = now;
            if self.cfg.duration.is_some_and(|d| now >= d) {
                return Ok(false);
            }
            if !serve
                && self.cfg.duration.is_none()
                && self.progress.finished == self.progress.runs.len()
            {
                return Ok(false);
            }
            if !serve && self.cfg.duration.is_none() && self.last_progress.elapsed() > STALL_LIMIT {
                tracing::warn!(
                    "no flow made progress for {} s; stopping with {} of {} flows finished",
                    STALL_LIMIT.as_secs(),
                    self.progress.finished,
                    self.progress.runs.len()
                );
                return Ok(false);
            }
            self.sample_queues(now);
            let mut busy = false;
            for i in 0..self.io.len() {
                busy |= self.receive(i)?;
            }
            let now = self.now();
            self.start_due_flows(now);
            self.apply_due_faults(now);
            self.deliver_pfc(now);
            for h in 0..self.fab.topo.hosts {
                let nic = &mut self.fab.nics[h as usize];
                if nic.poll_timeout().is_some_and(|t| t <= now) {
                    nic.handle_timeout(now);
                    self.drain_nic(h, now);
                }
            }
            for i in 0..self.egress.len() {
                busy |= self.pump(i, now)?;
            }
            for io in &mut self.io {
                flush(&mut **io)?;
            }
            if !busy {
                self.idle(now)?;
            }
        }
    }

    /// Samples every switch queue at each sampling instant up to `now`. Called before
    /// the turn's frames are handled, so the instants the loop slept through (when
    /// no queue changed) count the depths it slept with, and the loop need not wake
    /// up just to sample.
    fn sample_queues(&mut self, now: Nanos) {
        if now < self.next_sample {
            return;
        }
        let interval = self.cfg.queue_sample_interval.max(1_000);
        if let Some(queues) = self.external_queues {
            // Read at most every EXTERNAL_SAMPLE; each reading stands for the
            // sampling instants since the last.
            let every = interval.max(EXTERNAL_SAMPLE);
            let ticks = (now - self.next_sample) / every + 1;
            for b in queues() {
                self.queue_samples.record_n(b, ticks * (every / interval));
            }
            self.next_sample += ticks * every;
            return;
        }
        let ticks = (now - self.next_sample) / interval + 1;
        for sw in &self.fab.switches {
            for p in 0..sw.port_count() as u16 {
                self.queue_samples.record_n(sw.queue_bytes(p), ticks);
            }
        }
        self.next_sample += ticks * interval;
    }

    /// Waits for the next thing to do: sleeps in `ppoll(2)` until the next due event
    /// (a frame leaving a delay line, a pacer freeing a port that has a frame, a
    /// timer, a flow start) or until a port has frames, and spins only when
    /// that event is a few microseconds away. Spinning instead measurably slowed
    /// the fabric (adaptive spraying at 50 Mb/s: efficiency 0.87 while the loop
    /// spun, 0.98 since it sleeps; docs/results.md).
    fn idle(&mut self, now: Nanos) -> anyhow::Result<()> {
        let mut next = Nanos::MAX;
        for e in &self.egress {
            if let Some(&(due, _)) = e.line.front() {
                next = next.min(due);
            }
            if e.up && !e.paused {
                if self.is_host(e.node) {
                    // A frame can start when the NIC has one and the link is free.
                    if let Some(t) = self.fab.nics[e.node as usize].next_transmit() {
                        next = next.min(t.max(e.busy_until));
                    }
                } else {
                    let s = (e.node - self.fab.topo.hosts) as usize;
                    if self.fab.switches[s].queue_bytes(e.port) > 0 {
                        next = next.min(e.busy_until);
                    }
                }
            }
        }
        for nic in &self.fab.nics {
            if let Some(t) = nic.next_timer() {
                next = next.min(t);
            }
        }
        if let Some(&(t, _)) = self.pending_starts.front() {
            next = next.min(t);
        }
        if let Some(s) = self.pfc.front() {
            next = next.min(s.at);
        }
        if let Some(d) = self.cfg.duration {
            next = next.min(d);
        }
        if next <= now + SPIN_THRESHOLD {
            return Ok(());
        }
        let sleep = (next - now - WAKE_MARGIN).min(MAX_SLEEP);
        // A frame may wake it earlier; it cannot make it late.
        self.resume_at = now + sleep;
        wait_readable(&mut self.pollfds, sleep)?;
        Ok(())
    }

    fn start_due_flows(&mut self, now: Nanos) {
        while let Some(&(t, flow)) = self.pending_starts.front() {
            if t > now {
                break;
            }
            self.pending_starts.pop_front();
            let f = self.fab.flows[flow as usize];
            self.progress.runs[flow as usize].started = Some(now);
            self.last_progress = Instant::now();
            let spec = fablab_dataplane::nic::sender::FlowSpec {
                flow: f.id,
                src: f.src,
                dst: f.dst,
                bytes: f.bytes,
            };
            self.fab.nics[f.src as usize]
                .start_flow(now, spec, self.registry)
                .expect("congestion control was validated when the fabric was built");
        }
    }

    fn apply_due_faults(&mut self, now: Nanos) {
        while let Some(f) = self.cfg.faults.get(self.faults_applied) {
            if f.at > now {
                break;
            }
            self.faults_applied += 1;
            let Some(l) = self.fab.topo.link_between(&f.link.0, &f.link.1) else {
                continue;
            };
            let link = self.fab.topo.links[l].clone();
            for end in [link.a, link.b] {
                let i = self.idx(end.node, end.port);
                let e = &mut self.egress[i];
                f.kind
                    .apply(&mut e.up, &mut e.loss, &mut e.rate_mbps, e.base_rate_mbps);
                let (up, rate, loss) = (e.up, e.rate_mbps, e.loss);
                if let (Some(apply), false) = (self.external_fault, self.fab.topo.is_host(end.node))
                {
                    if let Err(err) = apply(end.node, end.port, up, loss, rate) {
                        tracing::warn!("link fault at {:?} not applied: {err:#}", f.link);
                    }
                    continue;
                }
                if !self.fab.topo.is_host(end.node) {
                    let s = (end.node - self.fab.topo.hosts) as usize;
                    let mut lost = Vec::new();
                    self.fab.switches[s].set_port_up(end.port, up, &mut lost);
                    self.fab.switches[s].set_port_rate(end.port, rate);
                    self.link_drops += lost.len() as u64;
                    for b in lost {
                        self.free(b);
                    }
                }
            }
        }
    }

    fn deliver_pfc(&mut self, now: Nanos) {
        while let Some(s) = self.pfc.front().copied() {
            if s.at > now {
                break;
            }
            self.pfc.pop_front();
            if self.is_host(s.node) {
                let i = self.idx(s.node, s.port);
                self.egress[i].paused = s.pause;
            } else {
                let sw = (s.node - self.fab.topo.hosts) as usize;
                self.fab.switches[sw].handle_pause(s.port, s.pause);
            }
        }
    }

    fn free(&mut self, b: u32) {
        self.stored[b as usize] = None;
        self.pool.free(b);
    }

    /// Reads a batch from port `i` and hands every frame to its node. Returns whether
    /// anything arrived.
    fn receive(&mut self, i: usize) -> anyhow::Result<bool> {
        let Emu { io, pool, rx, .. } = self;
        rx.clear();
        let mut exhausted = 0u64;
        io[i].recv(RX_BATCH, &mut |frame: &[u8]| match pool.alloc() {
            Some(b) => {
                pool.fill(b, frame);
                rx.push(b);
            }
            None => exhausted += 1,
        })?;
        for _ in 0..exhausted {
            Drops::count(&mut self.drops.switch, "frame pool exhausted");
        }
        if self.rx.is_empty() {
            return Ok(false);
        }
        // The clock is read only for ports that had frames (most have none).
        let now = self.now();
        if let Some(sink) = &mut self.pcap[i] {
            for &b in self.rx.iter() {
                sink.write(now, self.pool.frame(b))?;
            }
        }
        for k in 0..self.rx.len() {
            let b = self.rx[k];
            self.frames += 1;
            let (node, port) = (self.ports[i].node, self.ports[i].port);
            if self.is_host(node) {
                self.host_rx(node, b, now);
                self.free(b);
            } else {
                self.switch_rx(node, port, b, now);
            }
        }
        Ok(true)
    }

    fn host_rx(&mut self, h: u32, b: u32, now: Nanos) {
        let reason = match codec::decode(self.pool.frame(b)) {
            Err(e) => Some(decode_reason(&e)),
            Ok(d) if d.pkt.dst != h => Some("addressed to another host".into()),
            Ok(d) => {
                let pkt = d.pkt;
                if pkt.kind == Kind::Data {
                    let flow = pkt.flow as usize;
                    if flow >= self.rx_index.len() {
                        Some("unknown flow".into())
                    } else {
                        let idx = unwrap_psn(self.rx_index[flow], pkt.psn);
                        let mtu = u64::from(self.cfg.nic.mtu);
                        let expect = &mut self.payload[..d.payload.len()];
                        payload::fill(pkt.flow, idx * mtu, expect);
                        if expect != d.payload {
                            Some("payload differs from the flow's bytes".into())
                        } else {
                            self.rx_index[flow] = self.rx_index[flow].max(idx);
                            self.fab.nics[h as usize].handle_packet(now, &pkt);
                            None
                        }
                    }
                } else {
                    self.fab.nics[h as usize].handle_packet(now, &pkt);
                    None
                }
            }
        };
        if let Some(r) = reason {
            Drops::count(&mut self.drops.host, &r);
        }
        self.drain_nic(h, now);
    }

    fn switch_rx(&mut self, node: u32, port: u16, b: u32, now: Nanos) {
        let s = (node - self.fab.topo.hosts) as usize;
        let stored = match link::classify(self.pool.frame(b)) {
            Classified::Fablab => match codec::decode(self.pool.frame(b)) {
                Ok(d) => Ok(Stored::Fablab {
                    pkt: d.pkt,
                    first: d.first,
                    ttl: d.ttl,
                    payload_at: payload_offset(self.pool.frame(b), d.payload),
                    payload_len: d.payload.len() as u32,
                }),
                Err(e) => Err(decode_reason(&e)),
            },
            Classified::Plain(p) => match host_of_ip(p.dst) {
                Some(dst) if dst < self.fab.topo.hosts => {
                    let len = self.pool.len(b);
                    let mut pkt = Packet::data(
                        host_of_ip(p.src).unwrap_or(0),
                        dst,
                        0,
                        0,
                        (len.saturating_sub(OVERHEAD)) as u32,
                    );
                    pkt.entropy = p.entropy;
                    pkt.ecn = p.ecn;
                    Ok(Stored::Plain { pkt })
                }
                _ => Err("no route (IPv4 destination outside the fabric)".into()),
            },
            Classified::Drop(reason) => Err(reason.to_string()),
        };
        let stored = match stored {
            Ok(st) => st,
            Err(reason) => {
                Drops::count(&mut self.drops.switch, &reason);
                self.free(b);
                return;
            }
        };
        let mut pkt = match stored {
            Stored::Fablab { pkt, .. } | Stored::Plain { pkt } => pkt,
        };
        let verdict = self.fab.switches[s].handle_packet(now, port, &mut pkt, b);
        match verdict {
            Verdict::Enqueued { .. } => {
                self.stored[b as usize] = Some(match stored {
                    Stored::Fablab {
                        first,
                        ttl,
                        payload_at,
                        payload_len,
                        ..
                    } => Stored::Fablab {
                        pkt,
                        first,
                        ttl,
                        payload_at,
                        payload_len,
                    },
                    Stored::Plain { .. } => Stored::Plain { pkt },
                });
            }
            Verdict::Dropped(_) => self.free(b),
        }
        self.drain_switch(node, now);
    }

    fn drain_switch(&mut self, node: u32, now: Nanos) {
        let s = (node - self.fab.topo.hosts) as usize;
        while let Some(ev) = self.fab.switches[s].poll_event() {
            let (port, pause) = match ev {
                SwitchEvent::Pause { port } => (port, true),
                SwitchEvent::Resume { port } => (port, false),
            };
            if pause {
                self.pfc_pauses += 1;
            }
            let e = &self.egress[self.idx(node, port)];
            self.pfc.push_back(PfcSignal {
                at: now + e.delay,
                node: e.peer.node,
                port: e.peer.port,
                pause,
            });
        }
    }

    fn drain_nic(&mut self, h: u32, now: Nanos) {
        while let Some(ev) = self.fab.nics[h as usize].poll_event() {
            match self.progress.apply(ev) {
                Step::Delivered => {
                    self.last_delivery = now;
                    self.last_progress = Instant::now();
                }
                Step::ReceiverDone(flow) => {
                    for k in 0..self.dependents[flow as usize].len() {
                        let d = self.dependents[flow as usize][k];
                        self.pending_starts.push_front((now, d));
                    }
                }
                Step::Other => {}
            }
        }
    }

    /// Moves port `i`'s link along: frames whose delay has passed go to the wire, and
    /// an idle pacer starts the next frame. Returns whether anything moved.
    fn pump(&mut self, i: usize, now: Nanos) -> anyhow::Result<bool> {
        let mut moved = false;
        while let Some(&(due, b)) = self.egress[i].line.front() {
            if due > now {
                break;
            }
            self.egress[i].line.pop_front();
            moved = true;
            let e = &self.egress[i];
            if !e.up || (e.loss > 0.0 && self.rng.chance(e.loss)) {
                self.link_drops += 1;
            } else {
                let frame = self.pool.frame(b);
                if let Some(sink) = &mut self.pcap[i] {
                    sink.write(now, frame)?;
                }
                let sent = match self.io[i].send(frame) {
                    Ok(false) => {
                        flush(&mut *self.io[i])?;
                        self.io[i].send(frame)
                    }
                    other => other,
                };
                match sent {
                    Ok(true) => {}
                    // The kernel ring stayed full: lost, as on a congested NIC.
                    Ok(false) => self.link_drops += 1,
                    // This frame can never be sent (counted in the port's tx_errors).
                    Err(_) => self.link_drops += 1,
                }
            }
            self.free(b);
        }
        let e = &self.egress[i];
        if e.busy_until > now || !e.up || e.paused {
            return Ok(moved);
        }
        let (node, port) = (e.node, e.port);
        let b = if self.is_host(node) {
            self.host_tx(node, now)
        } else {
            self.switch_tx(node, port, now)
        };
        if let Some(b) = b {
            let e = &mut self.egress[i];
            let len = self.pool.len(b) as u64;
            // Serialization: the Ethernet frame plus FCS, preamble and inter-frame gap.
            let ser = ((len + 24) * 8 * 1000).div_ceil(u64::from(e.rate_mbps.max(1)));
            let start = e.busy_until.max(now.saturating_sub(PACER_SLACK));
            e.busy_until = start + ser;
            e.line.push_back((e.busy_until + e.delay, b));
            moved = true;
        }
        Ok(moved)
    }

    fn host_tx(&mut self, h: u32, now: Nanos) -> Option<u32> {
        let pkt = self.fab.nics[h as usize].poll_transmit(now)?;
        self.drain_nic(h, now);
        let Some(b) = self.pool.alloc() else {
            Drops::count(&mut self.drops.host, "frame pool exhausted");
            return None;
        };
        let i = self.idx(h, 0);
        let (src, dst) = (self.egress[i].src_mac, self.egress[i].dst_mac);
        let mut first = false;
        let len = if pkt.kind == Kind::Data {
            let flow = pkt.flow as usize;
            let idx = unwrap_psn(self.tx_index[flow], pkt.psn);
            self.tx_index[flow] = self.tx_index[flow].max(idx);
            first = idx == 0;
            let payload = &mut self.payload[..pkt.payload as usize];
            payload::fill(pkt.flow, idx * u64::from(self.cfg.nic.mtu), payload);
            codec::encode(&pkt, payload, first, src, dst, self.pool.buf_mut(b))
        } else {
            codec::encode(&pkt, &[], first, src, dst, self.pool.buf_mut(b))
        };
        match len {
            Ok(n) => {
                self.pool.set_len(b, n);
                Some(b)
            }
            Err(e) => {
                // The NIC's own packets always fit a frame; say so loudly if not.
                tracing::error!("host {h}: cannot encode {pkt:?}: {e}");
                self.pool.free(b);
                None
            }
        }
    }

    fn switch_tx(&mut self, node: u32, port: u16, now: Nanos) -> Option<u32> {
        let s = (node - self.fab.topo.hosts) as usize;
        let d = self.fab.switches[s].poll_dequeue(now, port)?;
        self.drain_switch(node, now);
        let b = d.handle;
        let i = self.idx(node, port);
        let (src, dst) = (self.egress[i].src_mac, self.egress[i].dst_mac);
        let out = match self.stored[b as usize].take() {
            Some(Stored::Fablab {
                mut pkt,
                first,
                ttl,
                payload_at,
                payload_len,
            }) => {
                if d.mark_ce {
                    pkt.ecn = ECN_CE;
                }
                if let Some(hop) = d.int_hop {
                    if pkt.kind == Kind::Data && pkt.int_enabled {
                        pkt.int.push(hop);
                    }
                }
                // Re-emit with this hop's changes (INT, CE, MACs, TTL) into a fresh
                // buffer, the payload straight from the stored frame.
                let Some(nb) = self.pool.alloc() else {
                    Drops::count(&mut self.drops.switch, "frame pool exhausted");
                    self.free(b);
                    return None;
                };
                let at = payload_at as usize;
                let (frame, out) = self.pool.pair(b, nb);
                let payload = &frame[at..at + payload_len as usize];
                let f = codec::frame_of(&pkt, payload, first, src, dst, ttl.saturating_sub(1));
                let emitted = match f.emit(out) {
                    Ok(n) => {
                        self.pool.set_len(nb, n);
                        Some(nb)
                    }
                    Err(_) => {
                        self.pool.free(nb);
                        None
                    }
                };
                self.free(b);
                emitted
            }
            Some(Stored::Plain { pkt }) if pkt.trimmed => {
                // A plain IPv4 frame has no transport that could ask for it again:
                // what would have been trimmed is dropped.
                Drops::count(
                    &mut self.drops.switch,
                    "plain IPv4 frame did not fit its queue",
                );
                self.free(b);
                return None;
            }
            Some(Stored::Plain { pkt }) => {
                link::forward_plain(self.pool.frame_mut(b), src, dst, pkt.is_ce() || d.mark_ce)
                    .then_some(b)
            }
            None => None,
        };
        let Some(out) = out else {
            Drops::count(&mut self.drops.switch, "TTL expired or frame unwritable");
            return None;
        };
        Some(out)
    }

    /// The report: flows, NICs and deliveries from this thread, switch queues and
    /// counters from `switches` when that thread ran them.
    /// The run's report; the switches' port counters come from `switches`' thread,
    /// or this one's, unless `port_stats` (external switches) gives them.
    fn report(
        &self,
        switches: Option<&Emu<'_>>,
        port_stats: Option<Vec<Vec<PortStats>>>,
    ) -> Report {
        let sw = switches.unwrap_or(self);
        let (link_drops, frames) = match switches {
            Some(s) => (self.link_drops + s.link_drops, self.frames + s.frames),
            None => (self.link_drops, self.frames),
        };
        metrics::build_report(&RunView {
            cfg: self.cfg,
            topo: &self.fab.topo,
            flows: &self.fab.flows,
            runs: &self.progress.runs,
            nics: &self.fab.nics,
            port_stats: port_stats.unwrap_or_else(|| {
                sw.fab
                    .switches
                    .iter()
                    .map(|sw| (0..sw.port_count() as u16).map(|p| sw.stats(p)).collect())
                    .collect()
            }),
            queue_samples: &sw.queue_samples,
            link_drops,
            pfc_pauses: sw.pfc_pauses,
            events: frames,
            now: self.now(),
            last_delivery: self.last_delivery,
            base_rtt: self.fab.base_rtt,
            cc_trace: &self.progress.cc_trace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psn_unwrapping_follows_the_stream_across_the_24_bit_wrap() {
        let m = u64::from(U24_MASK);
        assert_eq!(unwrap_psn(0, 0), 0);
        assert_eq!(unwrap_psn(0, 5), 5);
        assert_eq!(unwrap_psn(m - 2, 1), m + 2);
        assert_eq!(unwrap_psn(m + 10, (m - 3) as u32), m - 3);
        assert_eq!(unwrap_psn(5 * (m + 1) + 7, 9), 5 * (m + 1) + 9);
        assert_eq!(unwrap_psn(100, 90), 90, "a retransmission behind the front");
    }
}
