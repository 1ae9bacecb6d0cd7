//! `fablab bench switch`: frames through one emulated switch, measured in the same
//! run beside the kernel's own IPv4 forwarding between the same namespaces.
//!
//! The testbed is one switch (`fl-s0`) between two hosts (`fl-h0`, `fl-h1`). A
//! generator writes RoCEv2 data frames of a fixed size into h0's interface as fast
//! as its AF_PACKET TX ring takes them, and counts what arrives on h1's interface.
//! Between them forwards, in turn:
//!
//! - **kernel**: the switch namespace's own IPv4 forwarding (a /32 route and a
//!   permanent neighbour per host, no ARP, no netfilter);
//! - **fablab**: the emu datapath's switch on the same two ports, with INT on (every
//!   frame leaves with the switch's hop pushed, UDP port 4792) and adaptive path
//!   choice, links emulated at 400 Gb/s so that no pacer is the limit, once on each
//!   packet I/O backend asked for (AF_XDP, AF_PACKET). Host ports are not served:
//!   the generator is the only sender.
//!
//! Both run on the same two cores with the same generator, so the comparison is of
//! what the machine gets through, and of how busy its cores were meanwhile
//! (`/proc/stat`): packets per busy core.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fablab_dataplane::cc::Registry;
use fablab_dataplane::codec;
use fablab_dataplane::packet::Packet;
use fablab_dataplane::sim::topology::Topology;
use fablab_dataplane::sim::traffic::{Pattern, TrafficSpec};
use fablab_dataplane::sim::SimConfig;
use fablab_dataplane::switch::LbPolicy;
use fablab_dataplane::wire::addr::port_mac;
use fablab_testbed::{in_netns, Plan, Testbed};

use crate::emu;
use crate::emu::session::{open_port, ports_of, veth_mtu, IoBackend};
use crate::io::{AfPacket, AfPacketConfig, PacketIo};

pub mod xdp;

/// The switch of the bench topology (hosts 0 and 1 come first).
const SWITCH: u32 = 2;
/// Time for the path to fill before counting starts.
const WARMUP: Duration = Duration::from_millis(200);

/// What one measurement got through.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// `kernel`, or `fablab` and the backend (`fablab afxdp`, `fablab afpacket`).
    pub forwarder: &'static str,
    /// Ethernet frame size the generator sends (without FCS).
    pub frame_bytes: usize,
    /// Frames the generator handed to the kernel, per second.
    pub offered_mpps: f64,
    /// Frames that arrived at the receiving host, per second.
    pub forwarded_mpps: f64,
    /// Busy cores over the measurement (of every core of the machine).
    pub busy_cores: f64,
}

impl Measurement {
    /// Forwarded frames per second per busy core.
    pub fn mpps_per_core(&self) -> f64 {
        self.forwarded_mpps / self.busy_cores.max(1e-9)
    }
}

/// Runs the bench for every frame size, the kernel then fablab on each of
/// `backends`, `seconds` of counting per measurement. Root only; the testbed is
/// removed on every path.
pub fn switch(
    sizes: &[usize],
    seconds: f64,
    backends: &[IoBackend],
) -> anyhow::Result<Vec<Measurement>> {
    let Bed {
        cfg,
        frames,
        topo: _,
        plan,
    } = Bed::plan("fablab bench switch", sizes, seconds)?;
    let testbed = Testbed::up(&plan).context("building the bench testbed")?;
    let result = (|| {
        let mut out = Vec::new();
        for (size, f) in &frames {
            fablab_testbed::kernel_forwarding(&plan, SWITCH, true)?;
            out.push(measure("kernel", *size, f, seconds)?);
            fablab_testbed::kernel_forwarding(&plan, SWITCH, false)?;
            for &b in backends {
                let name = match b {
                    IoBackend::AfXdp => "fablab afxdp",
                    IoBackend::AfPacket => "fablab afpacket",
                };
                out.push(with_fablab_switch(&cfg, &plan, b, || {
                    measure(name, *size, f, seconds)
                })?);
            }
        }
        Ok(out)
    })();
    testbed.down().context("removing the bench testbed")?;
    result
}

/// What both benches start from: the configuration, a frame of each size, and the
/// testbed's plan (not built yet).
struct Bed {
    cfg: SimConfig,
    frames: Vec<(usize, Vec<u8>)>,
    topo: Topology,
    plan: Plan,
}

impl Bed {
    /// Checks privileges and arguments for `what`, and plans the bench's testbed.
    /// No host stack answers or consumes the frames (no host addresses).
    fn plan(what: &str, sizes: &[usize], seconds: f64) -> anyhow::Result<Bed> {
        fablab_testbed::require_privileges().context(what.to_string())?;
        anyhow::ensure!(
            seconds > 0.0 && seconds.is_finite(),
            "--seconds must be positive"
        );
        let cfg = config();
        let frames = sizes
            .iter()
            .map(|&s| frame(s).map(|f| (s, f)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let topo = Topology::build(&cfg.topology);
        let mut plan = Plan::new(&topo, veth_mtu(&cfg)).context("planning the bench testbed")?;
        plan.address_hosts = false;
        Ok(Bed {
            cfg,
            frames,
            topo,
            plan,
        })
    }
}

/// One switch, two hosts, 400 Gb/s links without delay, INT on, adaptive choice.
fn config() -> SimConfig {
    let traffic = TrafficSpec {
        pattern: Pattern::Permutation {
            stride: None,
            senders: None,
        },
        flow_bytes: 0,
    };
    SimConfig {
        buffer_bytes: 4 << 20,
        lb: LbPolicy::Adaptive,
        int: true,
        queue_sample_interval: 1_000_000,
        ..SimConfig::leaf_spine((1, 0, 2), 400_000, 0, traffic)
    }
}

/// A RoCEv2 data frame from h0 to h1, addressed to the switch's port, that is
/// `size` bytes on the wire with its FCS (RFC 2544's convention: a 64-byte frame is
/// 60 bytes handed to the NIC), Ethernet-padded when the BTH's 4-byte payload
/// alignment does not land on it.
fn frame(size: usize) -> anyhow::Result<Vec<u8>> {
    const FCS: usize = 4;
    let target = size.saturating_sub(FCS);
    let mut buf = vec![0u8; 9216];
    let mut best = None;
    for payload in 0..target {
        let pkt = Packet::data(0, 1, 0, 0, payload as u32);
        let n = codec::encode(
            &pkt,
            &vec![0x5a; payload],
            true,
            port_mac(0, 0),
            port_mac(SWITCH, 0),
            &mut buf,
        )?;
        if n > target {
            break;
        }
        best = Some(buf[..n].to_vec());
    }
    let mut f = best.ok_or_else(|| {
        anyhow::anyhow!("{size}-byte frames cannot hold a RoCEv2 data packet (64 can)")
    })?;
    f.resize(target, 0);
    Ok(f)
}

/// Runs `f` while fablab's switch forwards between the testbed's switch ports.
fn with_fablab_switch<T>(
    cfg: &SimConfig,
    plan: &Plan,
    backend: IoBackend,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let stop = Arc::new(AtomicBool::new(false));
    let ports = ports_of(plan);
    let switch = std::thread::scope(|s| {
        let stop2 = stop.clone();
        let handle = s.spawn(move || {
            // Serving: the hosts' ports are left alone (the generator and the
            // counter use them).
            let open = |ns: &str, ifname: &str| open_port(backend, ns, ifname, plan.mtu);
            emu::run(
                cfg,
                &Registry::default(),
                ports,
                &open,
                None,
                stop2,
                emu::Options {
                    serve: true,
                    ..emu::Options::default()
                },
            )
        });
        // The switch opens its sockets within milliseconds.
        std::thread::sleep(Duration::from_millis(300));
        let r = if handle.is_finished() {
            Err(anyhow::anyhow!(
                "the fablab switch stopped before the bench"
            ))
        } else {
            f()
        };
        stop.store(true, Ordering::Relaxed);
        let run = handle
            .join()
            .map_err(|_| anyhow::anyhow!("the fablab switch panicked"))?;
        run.map(|_| ()).context("the fablab switch")?;
        r
    })?;
    Ok(switch)
}

/// One measurement: blast `frame` into h0's interface, count arrivals on h1's.
fn measure(
    forwarder: &'static str,
    frame_bytes: usize,
    frame: &[u8],
    seconds: f64,
) -> anyhow::Result<Measurement> {
    let cfg = AfPacketConfig::default();
    let mut tx = in_netns("fl-h0", || AfPacket::open("fl-h0p0", &cfg))??;
    let mut rx = in_netns("fl-h1", || AfPacket::open("fl-h1p0", &cfg))??;
    blast(&mut tx, &mut rx, frame, Instant::now() + WARMUP)?;
    let (tx0, cpu0, t0) = (tx.stats(), cpu_times()?, Instant::now());
    let received = blast(
        &mut tx,
        &mut rx,
        frame,
        t0 + Duration::from_secs_f64(seconds),
    )?;
    let (tx1, cpu1, wall) = (tx.stats(), cpu_times()?, t0.elapsed().as_secs_f64());
    let sent = tx1.tx_frames.saturating_sub(tx0.tx_frames);
    Ok(Measurement {
        forwarder,
        frame_bytes,
        offered_mpps: sent as f64 / wall / 1e6,
        forwarded_mpps: received as f64 / wall / 1e6,
        busy_cores: cpu1.busy_cores_since(&cpu0),
    })
}

/// Keeps `tx`'s ring full of `frame` until `until`; returns the frames `rx` got.
fn blast(
    tx: &mut AfPacket,
    rx: &mut AfPacket,
    frame: &[u8],
    until: Instant,
) -> anyhow::Result<u64> {
    let mut received = 0u64;
    while Instant::now() < until {
        while tx.send(frame)? {}
        match tx.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).context("sending on fl-h0p0"),
        }
        rx.recv(usize::MAX, &mut |_| received += 1)?;
    }
    Ok(received)
}

/// The machine's CPU time from `/proc/stat`, in clock ticks: busy and total, summed
/// over every core.
#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    busy: u64,
    total: u64,
    cores: usize,
}

impl CpuTimes {
    fn busy_cores_since(&self, before: &CpuTimes) -> f64 {
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        let busy = self.busy.saturating_sub(before.busy) as f64;
        busy / total * self.cores as f64
    }
}

fn cpu_times() -> anyhow::Result<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_proc_stat(&stat).context("parsing /proc/stat")
}

fn parse_proc_stat(stat: &str) -> Option<CpuTimes> {
    let cores = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    let all = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = all
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some(CpuTimes {
        busy: total - idle,
        total,
        cores: cores.max(1),
    })
}

/// The table `fablab bench switch` prints.
pub fn table(rows: &[Measurement]) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:>6}  {:<15} {:>9} {:>10} {:>6} {:>11}",
        "frame", "switch", "offered", "forwarded", "cores", "Mpps/core"
    );
    for r in rows {
        let _ = writeln!(
            o,
            "{:>4} B  {:<15} {:>5.3} Mpps {:>6.3} Mpps {:>6.2} {:>11.3}",
            r.frame_bytes,
            r.forwarder,
            r.offered_mpps,
            r.forwarded_mpps,
            r.busy_cores,
            r.mpps_per_core()
        );
    }
    // Every other row against the first (the baseline) of its frame size.
    for (i, f) in rows.iter().enumerate() {
        let Some(k) = rows.iter().find(|k| k.frame_bytes == f.frame_bytes) else {
            continue;
        };
        if std::ptr::eq(k, &rows[i]) {
            continue;
        }
        let _ = writeln!(
            o,
            "{:>4} B  {} ÷ {}: {:.2}× the packets, {:.2}× per busy core",
            f.frame_bytes,
            f.forwarder,
            k.forwarder,
            f.forwarded_mpps / k.forwarded_mpps.max(1e-9),
            f.mpps_per_core() / k.mpps_per_core().max(1e-9)
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_asked_size() {
        for s in [64, 128, 1500, 4000] {
            let f = frame(s).unwrap();
            assert_eq!(f.len() + 4, s);
            // What the switch will parse: a RoCEv2 data packet, padding ignored.
            let d = codec::decode(&f).unwrap();
            assert_eq!((d.pkt.src, d.pkt.dst), (0, 1));
        }
        assert!(frame(20).is_err());
    }

    #[test]
    fn proc_stat_gives_busy_cores() {
        let a = parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1\ncpu1 1\n").unwrap();
        let b = parse_proc_stat("cpu  200 0 100 850 50 0 0 0 0 0\ncpu0 1\ncpu1 1\n").unwrap();
        assert_eq!(a.cores, 2);
        // 150 busy ticks of 200: 1.5 of 2 cores.
        assert!((b.busy_cores_since(&a) - 1.5).abs() < 1e-9);
        assert!(parse_proc_stat("nonsense").is_none());
    }
}
