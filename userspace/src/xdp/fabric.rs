//! `--mode xdp`'s switches: one `fl_switch` instance per switch of the testbed,
//! configured from the scenario and attached (native XDP) to every port of the
//! switch's namespace. Dropping the fabric detaches every program (each is held by a
//! BPF link this process owns, which the kernel also closes if the process dies).

use anyhow::Context as _;
use fablab_dataplane::sim::topology::Topology;
use fablab_dataplane::sim::SimConfig;
use fablab_dataplane::switch::{LbPolicy, PortStats};
use fablab_dataplane::wire::addr::{host_ip, port_mac};
use fablab_testbed::{in_netns, Plan};

use super::maps::{self, FlConfig, FlPort};
use super::{SwitchSetup, XdpSwitch};

/// What the XDP switch cannot do that a scenario asks for, if anything.
pub fn unsupported(cfg: &SimConfig) -> Option<String> {
    if cfg.pfc.is_some() {
        return Some(
            "PFC: the XDP switch forwards at once and cannot pause its neighbours; \
             run this scenario in sim or emu mode, or with switch.lossless = false"
                .into(),
        );
    }
    if policy(cfg.lb).is_none() {
        return Some(format!(
            "switch.lb = {:?}: the XDP switch offers ecmp, spray-rr, spray-random and adaptive",
            cfg.lb
        ));
    }
    None
}

fn policy(lb: LbPolicy) -> Option<u32> {
    match lb {
        LbPolicy::Ecmp => Some(maps::FL_LB_ECMP),
        LbPolicy::SprayRr => Some(maps::FL_LB_SPRAY_RR),
        LbPolicy::SprayRandom => Some(maps::FL_LB_SPRAY_RANDOM),
        LbPolicy::Adaptive => Some(maps::FL_LB_ADAPTIVE),
        _ => None,
    }
}

/// The program's view of switch `node`: its ports (rates, MTU, MACs as the emu's
/// NICs address frames) and a /32 route per host over the topology's equal-cost
/// ports.
pub fn setup_for(
    cfg: &SimConfig,
    topo: &Topology,
    node: u32,
    mtu: u32,
) -> anyhow::Result<SwitchSetup> {
    let ecn = cfg.ecn;
    let config = FlConfig {
        node_id: node,
        policy: policy(cfg.lb).with_context(|| format!("switch.lb = {:?}", cfg.lb))?,
        int_on: u32::from(cfg.int),
        ecn_on: u32::from(ecn.is_some()),
        kmin_bytes: ecn.map_or(0, |e| e.kmin_bytes),
        kmax_bytes: ecn.map_or(0, |e| e.kmax_bytes),
        pmax_ppm: ecn.map_or(0, |e| (e.pmax.clamp(0.0, 1.0) * 1e6) as u32),
        buffer_bytes: u32::try_from(cfg.buffer_bytes).unwrap_or(u32::MAX),
        seed: fablab_dataplane::rng::Rng::fork(cfg.seed, 2 << 32 | u64::from(node)).next_u64(),
    };
    let n_ports = topo.ports[node as usize].len();
    anyhow::ensure!(
        n_ports as u32 <= maps::FL_MAX_PORTS,
        "{}: {n_ports} ports; the XDP switch takes at most {}",
        topo.names[node as usize],
        maps::FL_MAX_PORTS
    );
    let ports = (0..n_ports as u16)
        .map(|p| {
            let link = &topo.links[topo.ports[node as usize][usize::from(p)]];
            let peer = topo.peer(node, p);
            (
                p,
                FlPort {
                    ifindex: 0,
                    rate_mbps: link.rate_mbps,
                    mtu,
                    up: 1,
                    loss_ppm: 0,
                    mac: port_mac(node, p),
                    peer_mac: port_mac(peer.node, peer.port),
                },
            )
        })
        .collect();
    let routes = topo
        .routes(node)
        .into_iter()
        .enumerate()
        .filter(|(_, cands)| !cands.is_empty())
        .map(|(h, cands)| {
            anyhow::ensure!(
                cands.len() <= maps::FL_MAX_CANDS,
                "{}: {} equal-cost ports to h{h}; the XDP switch takes at most {}",
                topo.names[node as usize],
                cands.len(),
                maps::FL_MAX_CANDS
            );
            Ok((host_ip(h as u32), 32, cands))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(SwitchSetup {
        config,
        ports,
        routes,
    })
}

/// Every XDP switch's counters by reason (`maps::STATS`), by switch label.
pub type Counters = Vec<(String, Vec<(&'static str, u64)>)>;

/// One switch of the fabric: its program, and its routes as configured (for link
/// faults, which take ports out of them and put them back).
#[derive(Debug)]
struct Switch {
    node: u32,
    label: String,
    sw: XdpSwitch,
    routes: Vec<([u8; 4], u32, Vec<u16>)>,
    down: Vec<u16>,
}

/// Every switch of a testbed as a loaded, attached XDP program.
#[derive(Debug)]
pub struct XdpFabric {
    switches: Vec<std::sync::Mutex<Switch>>,
}

impl XdpFabric {
    /// Loads, configures and attaches one switch program per switch of `plan`.
    pub fn up(cfg: &SimConfig, topo: &Topology, plan: &Plan) -> anyhow::Result<XdpFabric> {
        if let Some(why) = unsupported(cfg) {
            anyhow::bail!("--mode xdp: {why}");
        }
        let mut switches = Vec::new();
        for n in plan.nodes.iter().filter(|n| n.ip.is_none()) {
            let mut sw = XdpSwitch::load()
                .with_context(|| format!("loading the XDP switch of {}", n.label))?;
            let setup = setup_for(cfg, topo, n.node, plan.mtu)?;
            sw.configure(&setup)
                .with_context(|| format!("configuring the XDP switch of {}", n.label))?;
            // The devmap takes ifindexes of the switch's own namespace, and the
            // program attaches by name there: both from a thread inside it.
            let sw = in_netns(&n.ns, || -> anyhow::Result<XdpSwitch> {
                let mut sw = sw;
                for (me, _) in &n.ports {
                    let name = std::ffi::CString::new(me.ifname.as_str())?;
                    // SAFETY: if_nametoindex reads a NUL-terminated name; nothing else.
                    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
                    anyhow::ensure!(ifindex != 0, "no interface {} in {}", me.ifname, n.ns);
                    sw.set_interface(me.port, ifindex)
                        .with_context(|| format!("{} port {} ({})", n.label, me.port, me.ifname))?;
                    sw.attach(&me.ifname)
                        .with_context(|| format!("{} port {} ({})", n.label, me.port, me.ifname))?;
                }
                Ok(sw)
            })??;
            switches.push(std::sync::Mutex::new(Switch {
                node: n.node,
                label: n.label.clone(),
                sw,
                routes: setup.routes,
                down: Vec::new(),
            }));
        }
        Ok(XdpFabric { switches })
    }

    fn switch(&self, i: usize) -> std::sync::MutexGuard<'_, Switch> {
        self.switches[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a link fault to switch `node`'s port `port`: its state after the
    /// fault (up or down, loss probability, rate). A port that goes down leaves
    /// every route (a destination with no port left is dropped as `no_route`), and
    /// comes back when it is up again.
    pub fn apply_fault(
        &self,
        node: u32,
        port: u16,
        up: bool,
        loss: f64,
        rate_mbps: u32,
    ) -> anyhow::Result<()> {
        let Some(i) = (0..self.switches.len()).find(|&i| self.switch(i).node == node) else {
            anyhow::bail!("node {node} is not a switch of this fabric");
        };
        let mut guard = self.switch(i);
        let s = &mut *guard;
        let label = s.label.clone();
        s.sw.set_link(port, up, loss, rate_mbps)
            .with_context(|| format!("{label} port {port}"))?;
        let was_down = s.down.contains(&port);
        if up != was_down {
            return Ok(());
        }
        if up {
            s.down.retain(|&p| p != port);
        } else {
            s.down.push(port);
        }
        let down = s.down.clone();
        let routes: Vec<_> = s
            .routes
            .iter()
            .map(|(a, l, c)| {
                let up: Vec<u16> = c.iter().copied().filter(|p| !down.contains(p)).collect();
                (*a, *l, up)
            })
            .collect();
        s.sw.set_routes(&routes).with_context(|| {
            format!(
                "{label}: routes after port {port} went {}",
                if up { "up" } else { "down" }
            )
        })
    }

    /// Every switch's ports' counters from its virtual queues, in node and port
    /// order (the dataplane's `PortStats`; XDP sends no PFC).
    pub fn port_stats(&self) -> anyhow::Result<Vec<Vec<PortStats>>> {
        (0..self.switches.len())
            .map(|i| {
                let s = self.switch(i);
                let (label, sw) = (&s.label, &s.sw);
                let ports = sw.port_count()?;
                (0..ports)
                    .map(|p| {
                        let q = sw.queue(p).with_context(|| format!("{label} port {p}"))?;
                        Ok(PortStats {
                            tx_bytes: q.tx_bytes,
                            tx_packets: q.tx_packets,
                            drops: q.drops,
                            ecn_marks: q.ecn_marks,
                            max_queue_bytes: q.max_bytes,
                            pauses_sent: 0,
                            // fl_switch drops what does not fit; it does not trim yet.
                            trims: 0,
                            // Counted per switch, not per port: `xdp.switches[].no_route`.
                            no_route: 0,
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// Every switch port's virtual queue occupancy now (drained to the present), in
    /// node and port order. A port whose queue cannot be read counts as empty.
    pub fn occupancy(&self) -> Vec<u64> {
        let now = ktime_ns();
        let mut out = Vec::new();
        for i in 0..self.switches.len() {
            let s = self.switch(i);
            for p in 0..s.sw.port_count().unwrap_or(0) {
                out.push(s.sw.occupancy(p, now).unwrap_or(0));
            }
        }
        out
    }

    /// Every switch's counters by reason, by switch label.
    pub fn counters(&self) -> anyhow::Result<Counters> {
        (0..self.switches.len())
            .map(|i| {
                let s = self.switch(i);
                Ok((s.label.clone(), s.sw.stats()?))
            })
            .collect()
    }
}

/// `CLOCK_MONOTONIC` in ns: the clock `bpf_ktime_get_ns` reads.
fn ktime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
