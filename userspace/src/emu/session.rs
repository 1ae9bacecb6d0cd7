//! One `fablab run --mode emu`: check privileges, build the testbed, open every
//! port, run the traffic, tear everything down, whatever happens (success, error,
//! panic, Ctrl-C or SIGTERM).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use std::os::unix::process::CommandExt as _;

use anyhow::Context as _;
use fablab_dataplane::cc::Registry;
use fablab_dataplane::sim::topology::Topology;
use fablab_dataplane::sim::SimConfig;
use fablab_dataplane::wire::frame::{ETH_LEN, OVERHEAD};
use fablab_dataplane::wire::int::MAX_INT_HOPS;
use fablab_testbed::{in_netns, Plan, Testbed};

use super::{Capture, EmuRun, PortSpec};
use crate::io::{AfPacket, AfPacketConfig, AfXdp, PacketIo};

/// Set by Ctrl-C or SIGTERM; the run loop stops, then the testbed is torn down.
fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    static FLAG: OnceLock<Result<Arc<AtomicBool>, String>> = OnceLock::new();
    let flag = FLAG.get_or_init(|| {
        let f = Arc::new(AtomicBool::new(false));
        let g = f.clone();
        ctrlc::set_handler(move || g.store(true, Ordering::Relaxed))
            .map(|()| f)
            .map_err(|e| format!("cannot install the Ctrl-C/SIGTERM handler: {e}"))
    });
    let f = flag.clone().map_err(|e| anyhow::anyhow!(e))?;
    f.store(false, Ordering::Relaxed);
    Ok(f)
}

/// The veth MTU a scenario needs: a full data segment with a full INT stack, or an
/// ACK with a full SACK bitmap and echoed INT, whichever is longer, at least 1500.
pub fn veth_mtu(cfg: &SimConfig) -> u32 {
    let int = 16 + MAX_INT_HOPS * 32;
    let data = OVERHEAD + cfg.nic.mtu as usize + int;
    let ack = OVERHEAD + 4 + 16 + 64 + int;
    (data.max(ack) - ETH_LEN).max(1500) as u32
}

/// Which packet I/O backend the emu uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoBackend {
    AfXdp,
    AfPacket,
}

impl IoBackend {
    /// `--io auto`: AF_XDP when this build has its program and the kernel takes it,
    /// else AF_PACKET, logging why.
    pub fn auto() -> IoBackend {
        match crate::io::afxdp::probe() {
            Ok(()) => {
                tracing::debug!("packet I/O: AF_XDP");
                IoBackend::AfXdp
            }
            Err(e) => {
                tracing::warn!("packet I/O: AF_PACKET, because AF_XDP is not available: {e}");
                IoBackend::AfPacket
            }
        }
    }

    /// The name results.json records.
    pub fn name(self) -> &'static str {
        match self {
            IoBackend::AfXdp => "afxdp",
            IoBackend::AfPacket => "afpacket",
        }
    }
}

pub(crate) fn ports_of(plan: &Plan) -> Vec<PortSpec> {
    plan.nodes
        .iter()
        .flat_map(|n| {
            n.ports.iter().map(|(this, _)| PortSpec {
                node: this.node,
                port: this.port,
                netns: this.ns.clone(),
                ifname: this.ifname.clone(),
            })
        })
        .collect()
}

/// Opens `ifname` in `ns` with rings sized for the testbed's veth MTU.
pub(crate) fn open_afpacket(ns: &str, ifname: &str, mtu: u32) -> anyhow::Result<Box<dyn PacketIo>> {
    let cfg = AfPacketConfig::for_mtu(mtu);
    let io = in_netns(ns, || AfPacket::open(ifname, &cfg))??;
    Ok(Box::new(io))
}

/// Opens `ifname` in `ns` as an AF_XDP socket with the redirect program attached.
pub(crate) fn open_afxdp(ns: &str, ifname: &str) -> anyhow::Result<Box<dyn PacketIo>> {
    let io = in_netns(ns, || AfXdp::open(ifname))?
        .context("opening an AF_XDP port (`--io afpacket` does without AF_XDP)")?;
    Ok(Box::new(io))
}

/// Opens a host's port for `--mode xdp`: AF_XDP with the program in native mode,
/// since the switch's XDP program redirects frames into this veth.
pub(crate) fn open_afxdp_native(ns: &str, ifname: &str) -> anyhow::Result<Box<dyn PacketIo>> {
    let io = in_netns(ns, || {
        AfXdp::open_in(ifname, aya::programs::XdpMode::Driver)
    })?
    .context("opening a host's AF_XDP port (native XDP)")?;
    Ok(Box::new(io))
}

/// Opens a port with `backend`.
pub(crate) fn open_port(
    backend: IoBackend,
    ns: &str,
    ifname: &str,
    mtu: u32,
) -> anyhow::Result<Box<dyn PacketIo>> {
    match backend {
        IoBackend::AfXdp => open_afxdp(ns, ifname),
        IoBackend::AfPacket => open_afpacket(ns, ifname, mtu),
    }
}

/// Where `fablab testbed up` records the process that runs the testbed's switches.
pub const SERVE_PID_FILE: &str = "/run/fl-testbed.pid";
/// Where that process logs.
pub const SERVE_LOG_FILE: &str = "/run/fl-testbed.log";
/// Written by that process once every port is open and it forwards.
pub const SERVE_READY_FILE: &str = "/run/fl-testbed.ready";
/// How long `up` waits for the switch process to be ready.
const SERVE_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `fablab testbed up`: builds the testbed and starts a background process that runs
/// its switches (`fablab testbed serve`, same scenario and overrides) until `fablab
/// testbed down`. Returns the plan and the server's pid.
pub fn testbed_up(cfg: &SimConfig, serve_args: &[String]) -> anyhow::Result<(Plan, u32)> {
    fablab_testbed::require_privileges().context("fablab testbed up")?;
    if let Some(pid) = server_pid() {
        anyhow::bail!(
            "a testbed is already up (switch process {pid}); run `fablab testbed down` first"
        );
    }
    let topo = Topology::build(&cfg.topology);
    let plan = Plan::new(&topo, veth_mtu(cfg)).context("planning the testbed")?;
    let testbed = Testbed::up(&plan).context("building the testbed")?;
    let log = std::fs::File::create(SERVE_LOG_FILE)
        .with_context(|| format!("creating {SERVE_LOG_FILE}"))?;
    let exe = std::env::current_exe().context("finding the fablab executable")?;
    let spawned = std::process::Command::new(exe)
        .args(serve_args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C in this terminal does not reach it.
        .process_group(0)
        .spawn();
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            drop(testbed);
            return Err(e).context("starting the switch process");
        }
    };
    let mut child = child;
    let _ = std::fs::remove_file(SERVE_READY_FILE);
    std::fs::write(SERVE_PID_FILE, child.id().to_string())
        .with_context(|| format!("writing {SERVE_PID_FILE}"))?;
    // Return only once the switches forward, so the user's first ping gets through.
    let t = std::time::Instant::now();
    while !std::path::Path::new(SERVE_READY_FILE).exists() {
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || t.elapsed() > SERVE_READY_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(SERVE_PID_FILE);
            drop(testbed);
            let log = std::fs::read_to_string(SERVE_LOG_FILE).unwrap_or_default();
            anyhow::bail!(
                "the switch process did not start (the testbed was removed); its log:\n{log}"
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    testbed.keep();
    Ok((plan, child.id()))
}

/// `fablab testbed serve`: runs the switches of an already built testbed until
/// SIGTERM (sent by `fablab testbed down`): in userspace, or with `xdp` as
/// fl_switch programs. With `spray`, every host's egress sprays UDP to those
/// destination ports per packet (fl_tc_spray).
pub fn testbed_serve(
    cfg: &SimConfig,
    registry: &Registry,
    xdp: bool,
    spray: Option<(u16, u16)>,
) -> anyhow::Result<()> {
    let topo = Topology::build(&cfg.topology);
    let plan = Plan::new(&topo, veth_mtu(cfg)).context("planning the testbed")?;
    let stop = stop_flag()?;
    let hosts = || plan.nodes.iter().filter(|n| n.is_host());
    // Held until the end: dropping them detaches the programs.
    let mut sprays = Vec::new();
    if let Some(ports) = spray {
        for n in hosts() {
            let (me, _) = n
                .ports
                .first()
                .with_context(|| format!("host {} has no port", n.label))?;
            let s = in_netns(&n.ns, || -> anyhow::Result<_> {
                let mut s = crate::xdp::spray::TcSpray::load(crate::xdp::spray::SprayConfig {
                    ports,
                    ..Default::default()
                })?;
                s.attach(&me.ifname)?;
                Ok(s)
            })??;
            sprays.push(s);
        }
        tracing::info!(
            "spraying UDP to ports {}-{} on every host's egress",
            ports.0,
            ports.1
        );
    }
    let ready = std::path::Path::new(SERVE_READY_FILE);
    if !xdp {
        let backend = IoBackend::auto();
        super::run(
            cfg,
            registry,
            ports_of(&plan),
            &|ns: &str, ifname: &str| open_port(backend, ns, ifname, plan.mtu),
            None,
            stop,
            super::Options {
                serve: true,
                ready: Some(ready),
                ..super::Options::default()
            },
        )?;
        return Ok(());
    }
    let fabric = crate::xdp::fabric::XdpFabric::up(cfg, &topo, &plan)?;
    // The switches redirect into the hosts' veths, which only a native XDP program
    // there receives; it passes every frame on to the host's kernel.
    let mut passes = Vec::new();
    for n in hosts() {
        let (me, _) = n
            .ports
            .first()
            .with_context(|| format!("host {} has no port", n.label))?;
        passes.push(in_netns(&n.ns, || {
            crate::io::afxdp::attach_pass(&me.ifname)
        })??);
    }
    std::fs::write(ready, std::process::id().to_string())
        .with_context(|| format!("writing {}", ready.display()))?;
    tracing::info!("switches run as XDP programs; waiting for SIGTERM");
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop((passes, fabric, sprays));
    Ok(())
}

/// The pid of a running `fablab testbed serve`, if its pid file names a live
/// fablab process.
fn server_pid() -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(SERVE_PID_FILE)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let is_ours = cmdline.split(|&b| b == 0).any(|a| a == b"serve");
    is_ours.then_some(pid)
}

/// Stops the switch process `testbed up` started (SIGTERM, then SIGKILL after 2 s).
fn stop_server() -> anyhow::Result<Option<u32>> {
    let Some(pid) = server_pid() else {
        let _ = std::fs::remove_file(SERVE_PID_FILE);
        return Ok(None);
    };
    let target = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        if std::time::Instant::now() > deadline {
            let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(SERVE_PID_FILE);
    let _ = std::fs::remove_file(SERVE_READY_FILE);
    Ok(Some(pid))
}

/// `fablab testbed down` and `fablab testbed gc`: stops the switch process, then
/// removes every `fl-` namespace and root-namespace link. Returns what was removed.
pub fn testbed_down() -> anyhow::Result<Vec<String>> {
    fablab_testbed::require_privileges().context("fablab testbed down/gc")?;
    let mut removed = Vec::new();
    if let Some(pid) = stop_server()? {
        removed.push(format!("switch process {pid}"));
    }
    let r = fablab_testbed::gc().context("removing fl- objects")?;
    removed.extend(r.namespaces.into_iter().map(|n| format!("namespace {n}")));
    removed.extend(r.links.into_iter().map(|l| format!("link {l}")));
    Ok(removed)
}

/// Builds the testbed for a `fablab run` of `cfg`, runs `f` on it, and removes it on
/// every path (after `f`, or by its Drop while a panic unwinds).
fn on_run_testbed<T>(
    cfg: &SimConfig,
    f: impl FnOnce(&Topology, &Plan, Arc<AtomicBool>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let topo = Topology::build(&cfg.topology);
    let mut plan = Plan::new(&topo, veth_mtu(cfg)).context("planning the testbed")?;
    // fablab's NICs are the hosts: their kernels need no address (and without one
    // they stay silent about the fablab frames they see too), and no namespace's
    // kernel needs to look at the frames at all.
    plan.address_hosts = false;
    plan.kernel_sees_frames = false;
    let stop = stop_flag()?;
    let testbed = Testbed::up(&plan).context("building the testbed")?;
    let result = f(&topo, &plan, stop);
    let down = testbed.down().context("removing the testbed");
    let r = result?;
    down?;
    Ok(r)
}

/// Runs `cfg` on a freshly built testbed and removes the testbed afterwards.
pub fn run_emu(
    cfg: &SimConfig,
    registry: &Registry,
    capture: Option<&Capture>,
    backend: IoBackend,
    threads: usize,
) -> anyhow::Result<EmuRun> {
    fablab_testbed::require_privileges().context("--mode emu")?;
    on_run_testbed(cfg, |_, plan, stop| {
        let open = |ns: &str, ifname: &str| open_port(backend, ns, ifname, plan.mtu);
        super::run(
            cfg,
            registry,
            ports_of(plan),
            &open,
            capture,
            stop,
            super::Options {
                threads,
                ..super::Options::default()
            },
        )
    })
}

/// `--mode xdp`: builds the testbed, attaches the XDP switch to every switch port,
/// runs the hosts' NICs on AF_XDP sockets, and removes everything afterwards.
pub fn run_xdp(
    cfg: &SimConfig,
    registry: &Registry,
    capture: Option<&Capture>,
) -> anyhow::Result<(EmuRun, crate::xdp::fabric::Counters)> {
    fablab_testbed::require_privileges()?;
    if let Some(why) = crate::xdp::fabric::unsupported(cfg) {
        anyhow::bail!("{why}");
    }
    crate::io::afxdp::probe().context("the hosts' AF_XDP sockets")?;
    on_run_testbed(cfg, |topo, plan, stop| {
        let fabric = crate::xdp::fabric::XdpFabric::up(cfg, topo, plan)?;
        let port_stats = || fabric.port_stats();
        let queues = || fabric.occupancy();
        let fault = |node: u32, port: u16, up: bool, loss: f64, rate: u32| {
            fabric.apply_fault(node, port, up, loss, rate)
        };
        let run = super::run(
            cfg,
            registry,
            ports_of(plan),
            &open_afxdp_native,
            capture,
            stop,
            super::Options {
                switches: super::SwitchPlane::External {
                    port_stats: &port_stats,
                    queues: &queues,
                    fault: &fault,
                },
                ..super::Options::default()
            },
        )?;
        let counters = fabric.counters()?;
        Ok((run, counters))
    })
}
