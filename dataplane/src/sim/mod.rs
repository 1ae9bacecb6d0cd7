//! The discrete-event simulator: whole fabrics of [`Switch`]es and [`Nic`]s joined by
//! links with rate, propagation delay and optional loss, on a virtual clock.
//!
//! The simulator is a driver like any other: it owns packet storage (a pool indexed
//! by `u32` handles), serializes packets onto links, and calls the same
//! `handle_*`/`poll_*` methods the real-interface datapath calls. Everything random
//! comes from the seed in [`SimConfig`], so a seed fixes the run bit for bit.
//! docs/architecture.md walks a packet through it.

pub mod engine;
pub mod metrics;
pub mod topology;
pub mod traffic;

use crate::cc::{CcParams, FlowContext, Registry};
use crate::nic::sender::FlowSpec;
use crate::nic::spray::SprayPolicy;
use crate::nic::{IntRequest, Nic, NicConfig};
use crate::packet::{FlowId, Kind, Nanos, Packet};
use crate::rng::Rng;
use crate::switch::{
    EcnConfig, EcnPoint, LbPolicy, PfcConfig, Routes, Switch, SwitchConfig, SwitchEvent,
    TrimConfig, Verdict,
};
use crate::wire::frame::ECN_CE;
use engine::EventQueue;
use metrics::{Report, RunView};
use topology::{PortRef, Topology, TopologySpec};
use traffic::{FlowPlan, TrafficSpec};

/// The receivers' default ACK coalescing: one ACK per 16 KiB, as UEC's reference
/// simulator does (docs/results.md has the measurement behind it).
pub const DEFAULT_ACK_EVERY_BYTES: u64 = 16_384;

/// How the NICs behave.
#[derive(Debug, Clone, PartialEq)]
pub struct NicSpec {
    pub spray: SprayPolicy,
    pub entropies: u32,
    pub cc: String,
    pub cc_params: CcParams,
    pub mtu: u32,
    /// Initial / fixed window; `None` = twice the bandwidth-delay product.
    pub window_bytes: Option<u64>,
    pub rto_min: Nanos,
    pub reorder_window: u32,
    /// How far behind schedule a flow's pacer may catch up (see
    /// [`NicConfig::pacing_slack`]): 0 in sim; the emu sets its wake-up latency.
    pub pacing_slack: Nanos,
    /// Which data packets ask the switches for INT.
    pub int: IntRequest,
    /// Payload bytes a receiver lets arrive before it acknowledges them
    /// ([`NicConfig::ack_every_bytes`]).
    pub ack_every_bytes: u64,
}

impl Default for NicSpec {
    /// Fixed entropy (ECMP), `none` congestion control, 4 KiB MTU, a window of twice
    /// the bandwidth-delay product, 100 µs minimum RTO, 1024-packet reorder window,
    /// INT when the congestion control reads it, an ACK every 16 KiB.
    fn default() -> Self {
        NicSpec {
            spray: SprayPolicy::Fixed,
            entropies: 16,
            cc: "none".into(),
            cc_params: CcParams::new(),
            mtu: 4096,
            window_bytes: None,
            rto_min: 100_000,
            reorder_window: 1024,
            pacing_slack: 0,
            int: IntRequest::Auto,
            ack_every_bytes: DEFAULT_ACK_EVERY_BYTES,
        }
    }
}

/// What happens to a link, and when.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    Down,
    Up,
    /// Bernoulli loss probability on both directions from then on.
    Loss(f64),
    /// The link runs at this fraction of its rate from then on.
    Rate(f64),
}

impl FaultKind {
    /// Changes one direction of a link (`up`, its loss probability and its rate,
    /// `base_rate_mbps` being the rate it was built with) as this fault says.
    pub fn apply(&self, up: &mut bool, loss: &mut f64, rate_mbps: &mut u32, base_rate_mbps: u32) {
        match *self {
            FaultKind::Down => *up = false,
            FaultKind::Up => *up = true,
            FaultKind::Loss(p) => *loss = p,
            FaultKind::Rate(x) => *rate_mbps = ((f64::from(base_rate_mbps) * x) as u32).max(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub at: Nanos,
    /// The link's two end nodes by name (`leaf0`, `spine1`, `h3`, ...).
    pub link: (String, String),
    pub kind: FaultKind,
}

/// Everything a simulation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    pub topology: TopologySpec,
    pub buffer_bytes: u64,
    pub lb: LbPolicy,
    pub ecn: Option<EcnConfig>,
    /// Where switches decide ECN marks.
    pub ecn_at: EcnPoint,
    /// `Some` makes every switch lossless.
    pub pfc: Option<PfcConfig>,
    /// Switches trim data that does not fit instead of dropping it (lossy only).
    pub trim: Option<TrimConfig>,
    /// Control packets travel in a strict-priority queue at every switch port.
    pub control_priority: bool,
    pub int: bool,
    pub nic: NicSpec,
    pub traffic: TrafficSpec,
    pub faults: Vec<Fault>,
    /// Stop at this virtual time even if flows are unfinished.
    pub duration: Option<Nanos>,
    /// How often every switch egress queue is sampled.
    pub queue_sample_interval: Nanos,
    /// Record every change of every flow's window and rate ([`Report::cc_trace`]).
    pub trace_cc: bool,
}

impl SimConfig {
    /// `traffic` on a leaf-spine of `leaves` × `spines` with `hosts_per_leaf`
    /// hosts, every link at `rate_mbps` with `link_delay`; everything else plain:
    /// seed 1, 1 MiB buffers, ECMP, no ECN, no PFC, trimming, control priority, no
    /// INT, default NICs, no faults, no time limit, queues sampled every
    /// microsecond. Change fields with struct update syntax.
    pub fn leaf_spine(
        (leaves, spines, hosts_per_leaf): (u32, u32, u32),
        rate_mbps: u32,
        link_delay: Nanos,
        traffic: TrafficSpec,
    ) -> SimConfig {
        SimConfig {
            seed: 1,
            topology: TopologySpec {
                kind: topology::TopologyKind::LeafSpine {
                    leaves,
                    spines,
                    hosts_per_leaf,
                },
                host_rate_mbps: rate_mbps,
                fabric_rate_mbps: rate_mbps,
                link_delay,
            },
            buffer_bytes: 1 << 20,
            lb: LbPolicy::Ecmp,
            ecn: None,
            ecn_at: EcnPoint::Enqueue,
            pfc: None,
            trim: Some(TrimConfig::WHEN_FULL),
            control_priority: true,
            int: false,
            nic: NicSpec::default(),
            traffic,
            faults: Vec::new(),
            duration: None,
            queue_sample_interval: 1_000,
            trace_cc: false,
        }
    }
}

impl SimConfig {
    /// Whether the switches trim (trimming applies to lossy switches only).
    pub fn trims(&self) -> bool {
        self.trim.is_some() && self.pfc.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    Arrive { node: u32, port: u16, pkt: u32 },
    TxDone { node: u32, port: u16 },
    Wake { host: u32 },
    Start { flow: u32 },
    Pfc { node: u32, port: u16, pause: bool },
    Fault { index: u32 },
    Sample,
}

#[derive(Debug, Clone)]
struct Egress {
    peer: PortRef,
    rate_mbps: u32,
    base_rate_mbps: u32,
    delay: Nanos,
    loss: f64,
    up: bool,
    busy: bool,
    paused: bool,
}

/// A running simulation.
#[derive(Debug)]
pub struct Simulator {
    cfg: SimConfig,
    registry: Registry,
    topo: Topology,
    q: EventQueue<Ev>,
    nics: Vec<Nic>,
    switches: Vec<Switch<u32>>,
    egress: Vec<Vec<Egress>>,
    pool: Vec<Packet>,
    free: Vec<u32>,
    wake: Vec<Option<Nanos>>,
    flows: Vec<FlowPlan>,
    progress: metrics::Progress,
    dependents: Vec<Vec<FlowId>>,
    rng: Rng,
    queue_samples: metrics::SampleCounts,
    link_drops: u64,
    pfc_pauses: u64,
    last_delivery: Nanos,
    last_progress: Nanos,
    base_rtt: Nanos,
    stopped: bool,
}

/// The state machines of a whole fabric, built from a configuration: what every
/// driver (this simulator, the emu datapath) runs.
#[derive(Debug)]
pub struct Fabric {
    pub topo: Topology,
    /// One NIC per host, indexed by host id.
    pub nics: Vec<Nic>,
    /// One switch per switch node, indexed by node − hosts.
    pub switches: Vec<Switch<u32>>,
    /// The planned traffic, indexed by flow id.
    pub flows: Vec<FlowPlan>,
    /// The round-trip time of an empty path across the fabric's diameter.
    pub base_rtt: Nanos,
}

impl Fabric {
    /// Builds the topology, every NIC and switch, and plans the traffic. Fails on a
    /// configuration that cannot run (an unknown congestion-control name or
    /// parameter).
    pub fn build(cfg: &SimConfig, registry: &Registry) -> Result<Fabric, String> {
        let topo = Topology::build(&cfg.topology);
        let hosts = topo.hosts as usize;
        let host_bps = u64::from(cfg.topology.host_rate_mbps) * 1_000_000;
        let diameter = (0..topo.hosts)
            .flat_map(|a| (0..topo.hosts).map(move |b| (a, b)))
            .map(|(a, b)| topo.hops(a, b))
            .filter(|&h| h != u32::MAX)
            .max()
            .unwrap_or(2);
        let mtu_wire = u64::from(Packet::data(0, 0, 0, 0, cfg.nic.mtu).wire_len());
        let ack_wire = 128u64;
        // An empty path's RTT: propagation both ways plus store-and-forward of one
        // data packet out and one ACK back at every hop.
        let base_rtt = u64::from(diameter)
            * (2 * cfg.topology.link_delay
                + (mtu_wire + ack_wire) * 8 * 1000 / u64::from(cfg.topology.host_rate_mbps));
        let window = cfg
            .nic
            .window_bytes
            .unwrap_or_else(|| (2 * host_bps * base_rtt / 8 / 1_000_000_000).max(2 * mtu_wire));
        // Fail early, before any event runs, on a controller that cannot be made.
        registry.create(
            &cfg.nic.cc,
            &FlowContext::new(
                0,
                host_bps,
                base_rtt,
                cfg.nic.mtu,
                window,
                &cfg.nic.cc_params,
            ),
        )?;
        let nics = (0..hosts as u32)
            .map(|h| {
                Nic::new(NicConfig {
                    host: h,
                    line_rate_bps: host_bps,
                    mtu: cfg.nic.mtu,
                    window_bytes: window,
                    base_rtt,
                    rto_min: cfg.nic.rto_min,
                    pacing_slack: cfg.nic.pacing_slack,
                    spray: cfg.nic.spray,
                    entropies: cfg.nic.entropies,
                    reorder_window: cfg.nic.reorder_window,
                    cc: cfg.nic.cc.clone(),
                    cc_params: cfg.nic.cc_params.clone(),
                    cnp_interval: 50_000,
                    trace_cc: cfg.trace_cc,
                    int: cfg.nic.int,
                    ack_every_bytes: cfg.nic.ack_every_bytes,
                    trimming: cfg.trims(),
                    seed: Rng::fork(cfg.seed, 1 << 32 | u64::from(h)).next_u64(),
                })
            })
            .collect();
        let switches = (hosts..topo.node_count())
            .map(|n| {
                let rates = topo.ports[n]
                    .iter()
                    .map(|&l| topo.links[l].rate_mbps)
                    .collect();
                Switch::new(
                    SwitchConfig {
                        id: n as u32,
                        port_rate_mbps: rates,
                        buffer_bytes: cfg.buffer_bytes,
                        lb: cfg.lb,
                        ecn: cfg.ecn,
                        ecn_at: cfg.ecn_at,
                        pfc: cfg.pfc,
                        trim: cfg.trim,
                        control_priority: cfg.control_priority,
                        int: cfg.int,
                        seed: Rng::fork(cfg.seed, 2 << 32 | n as u64).next_u64(),
                    },
                    Routes::new(&topo.routes(n as u32)),
                    hosts,
                )
            })
            .collect();
        let mut traffic_rng = Rng::fork(cfg.seed, 3);
        let flows = traffic::plan(&cfg.traffic, topo.hosts, host_bps, &mut traffic_rng);
        Ok(Fabric {
            topo,
            nics,
            switches,
            flows,
            base_rtt,
        })
    }
}

const HOST_PORT: u16 = 0;
/// Virtual time without any delivery or flow start after which a run without a
/// duration is declared stuck.
const STALL_LIMIT: Nanos = 1_000_000_000;

impl Simulator {
    /// Builds the fabric and plans the traffic. Fails on a configuration that cannot
    /// run (an unknown congestion-control name or parameter, a fault on a link that
    /// does not exist).
    pub fn new(cfg: SimConfig, registry: Registry) -> Result<Simulator, String> {
        let Fabric {
            topo,
            nics,
            switches,
            flows,
            base_rtt,
        } = Fabric::build(&cfg, &registry)?;
        let hosts = topo.hosts as usize;
        let egress = (0..topo.node_count())
            .map(|n| {
                (0..topo.ports[n].len() as u16)
                    .map(|p| {
                        let l = &topo.links[topo.ports[n][usize::from(p)]];
                        Egress {
                            peer: topo.peer(n as u32, p),
                            rate_mbps: l.rate_mbps,
                            base_rate_mbps: l.rate_mbps,
                            delay: l.delay,
                            loss: 0.0,
                            up: true,
                            busy: false,
                            paused: false,
                        }
                    })
                    .collect()
            })
            .collect();
        for f in &cfg.faults {
            if topo.link_between(&f.link.0, &f.link.1).is_none() {
                return Err(format!(
                    "fault at {} ns: no link between `{}` and `{}`",
                    f.at, f.link.0, f.link.1
                ));
            }
        }
        let mut dependents = vec![Vec::new(); flows.len()];
        let mut q = EventQueue::default();
        for f in &flows {
            match f.after {
                Some(a) => dependents[a as usize].push(f.id),
                None => q.schedule(f.start, Ev::Start { flow: f.id }),
            }
        }
        for (i, f) in cfg.faults.iter().enumerate() {
            q.schedule(f.at, Ev::Fault { index: i as u32 });
        }
        q.schedule(0, Ev::Sample);
        let progress = metrics::Progress::new(flows.len());
        // The simulator's own draws (link loss) come after everything the fabric
        // drew, as they always have, so a seed keeps meaning the same run.
        let rng = Rng::fork(Rng::new(cfg.seed).next_u64(), 4);
        Ok(Simulator {
            registry,
            nics,
            switches,
            egress,
            pool: Vec::new(),
            free: Vec::new(),
            wake: vec![None; hosts],
            progress,
            dependents,
            rng,
            queue_samples: metrics::SampleCounts::default(),
            link_drops: 0,
            pfc_pauses: 0,
            last_delivery: 0,
            last_progress: 0,
            base_rtt,
            stopped: false,
            flows,
            q,
            topo,
            cfg,
        })
    }

    pub fn topology(&self) -> &Topology {
        &self.topo
    }
    pub fn flows(&self) -> &[FlowPlan] {
        &self.flows
    }
    /// Virtual time now.
    pub fn now(&self) -> Nanos {
        self.q.now()
    }
    /// Events processed so far.
    pub fn events(&self) -> u64 {
        self.q.processed()
    }
    /// Flows fully delivered and acknowledged so far.
    pub fn finished_flows(&self) -> usize {
        self.progress.finished
    }
    /// The round-trip time of an empty path across the fabric's diameter.
    pub fn base_rtt(&self) -> Nanos {
        self.base_rtt
    }

    /// Whether the run is over: every flow done, the duration reached, or nothing
    /// left to happen.
    pub fn is_done(&self) -> bool {
        self.stopped || self.q.is_empty()
    }

    /// Runs events up to virtual time `until` (or the end). Returns whether the run
    /// is still going.
    pub fn run_until(&mut self, until: Nanos) -> bool {
        while !self.stopped {
            let Some((t, ev)) = self.q.pop() else {
                break;
            };
            if self.cfg.duration.is_some_and(|d| t > d) {
                self.stopped = true;
                break;
            }
            self.handle(ev);
            if self.progress.finished == self.flows.len() && self.cfg.duration.is_none() {
                self.stopped = true;
            }
            if self.cfg.duration.is_none() && t > self.last_progress + STALL_LIMIT {
                // Nothing delivered or started for a long virtual time: flows are
                // stuck (say, behind a link that never comes back). Stop and report
                // them unfinished rather than retrying forever.
                self.stopped = true;
            }
            if t >= until {
                break;
            }
        }
        !self.is_done()
    }

    /// Runs to the end and reports.
    pub fn run(mut self) -> Report {
        while self.run_until(Nanos::MAX) {}
        self.report()
    }

    fn alloc(&mut self, p: Packet) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.pool[i as usize] = p;
                i
            }
            None => {
                self.pool.push(p);
                (self.pool.len() - 1) as u32
            }
        }
    }

    fn release(&mut self, id: u32) {
        self.free.push(id);
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.q.now();
        match ev {
            Ev::Arrive { node, port, pkt } => {
                if self.topo.is_host(node) {
                    self.nics[node as usize].handle_packet(now, &self.pool[pkt as usize]);
                    self.release(pkt);
                    self.drain_nic(node);
                    self.kick_host(node);
                } else {
                    let s = (node - self.topo.hosts) as usize;
                    let verdict = self.switches[s].handle_packet(
                        now,
                        port,
                        &mut self.pool[pkt as usize],
                        pkt,
                    );
                    match verdict {
                        Verdict::Enqueued { port: out } => self.kick_switch(node, out),
                        Verdict::Dropped(_) => self.release(pkt),
                    }
                    self.drain_switch(node);
                }
            }
            Ev::TxDone { node, port } => {
                self.egress[node as usize][usize::from(port)].busy = false;
                if self.topo.is_host(node) {
                    self.kick_host(node);
                } else {
                    self.kick_switch(node, port);
                }
            }
            Ev::Wake { host } => {
                if self.wake[host as usize] == Some(now) {
                    self.wake[host as usize] = None;
                    self.kick_host(host);
                }
            }
            Ev::Start { flow } => self.start_flow(flow),
            Ev::Pfc { node, port, pause } => {
                if self.topo.is_host(node) {
                    self.egress[node as usize][usize::from(port)].paused = pause;
                    if !pause {
                        self.kick_host(node);
                    }
                } else {
                    let s = (node - self.topo.hosts) as usize;
                    self.switches[s].handle_pause(port, pause);
                    if !pause {
                        self.kick_switch(node, port);
                    }
                }
            }
            Ev::Fault { index } => self.apply_fault(index as usize),
            Ev::Sample => {
                for sw in &self.switches {
                    for p in 0..sw.port_count() as u16 {
                        self.queue_samples.record(sw.queue_bytes(p));
                    }
                }
                // Keep sampling while anything else can still happen.
                if self.progress.finished < self.flows.len() && !self.q.is_empty() {
                    self.q
                        .schedule(now + self.cfg.queue_sample_interval, Ev::Sample);
                }
            }
        }
    }

    fn start_flow(&mut self, flow: FlowId) {
        let now = self.q.now();
        let f = self.flows[flow as usize];
        self.progress.runs[flow as usize].started = Some(now);
        self.last_progress = now;
        let spec = FlowSpec {
            flow: f.id,
            src: f.src,
            dst: f.dst,
            bytes: f.bytes,
        };
        // The controller was created once in `new`, so this cannot fail.
        self.nics[f.src as usize]
            .start_flow(now, spec, &self.registry)
            .expect("congestion control was validated when the simulator was built");
        self.kick_host(f.src);
    }

    fn transmit(&mut self, node: u32, port: u16, pkt: u32) {
        let now = self.q.now();
        let bytes = u64::from(self.pool[pkt as usize].wire_len());
        let e = &mut self.egress[node as usize][usize::from(port)];
        e.busy = true;
        let ser = (bytes * 8 * 1000).div_ceil(u64::from(e.rate_mbps.max(1)));
        let (peer, delay, up, loss) = (e.peer, e.delay, e.up, e.loss);
        self.q.schedule(now + ser, Ev::TxDone { node, port });
        if !up || (loss > 0.0 && self.rng.chance(loss)) {
            self.link_drops += 1;
            self.release(pkt);
        } else {
            self.q.schedule(
                now + ser + delay,
                Ev::Arrive {
                    node: peer.node,
                    port: peer.port,
                    pkt,
                },
            );
        }
    }

    fn kick_host(&mut self, h: u32) {
        let now = self.q.now();
        let hi = h as usize;
        if self.nics[hi].poll_timeout().is_some_and(|t| t <= now) {
            self.nics[hi].handle_timeout(now);
            self.drain_nic(h);
        }
        let e = &self.egress[hi][usize::from(HOST_PORT)];
        if !e.busy && !e.paused && e.up {
            if let Some(p) = self.nics[hi].poll_transmit(now) {
                let id = self.alloc(p);
                self.transmit(h, HOST_PORT, id);
            }
        }
        // A time already past is a paced packet waiting for the busy port; TxDone
        // kicks again.
        if let Some(t) = self.nics[hi].poll_timeout().filter(|&t| t > now) {
            if self.wake[hi] != Some(t) {
                self.wake[hi] = Some(t);
                self.q.schedule(t, Ev::Wake { host: h });
            }
        }
    }

    fn kick_switch(&mut self, node: u32, port: u16) {
        let now = self.q.now();
        if self.egress[node as usize][usize::from(port)].busy {
            return;
        }
        let s = (node - self.topo.hosts) as usize;
        if let Some(d) = self.switches[s].poll_dequeue(now, port) {
            let p = &mut self.pool[d.handle as usize];
            if d.mark_ce {
                p.ecn = ECN_CE;
            }
            if let Some(hop) = d.int_hop {
                if p.kind == Kind::Data && p.int_enabled {
                    p.int.push(hop);
                }
            }
            self.transmit(node, port, d.handle);
        }
        self.drain_switch(node);
    }

    fn drain_switch(&mut self, node: u32) {
        let s = (node - self.topo.hosts) as usize;
        while let Some(ev) = self.switches[s].poll_event() {
            let (port, pause) = match ev {
                SwitchEvent::Pause { port } => (port, true),
                SwitchEvent::Resume { port } => (port, false),
            };
            if pause {
                self.pfc_pauses += 1;
            }
            let e = &self.egress[node as usize][usize::from(port)];
            let at = self.q.now() + e.delay;
            let peer = e.peer;
            self.q.schedule(
                at,
                Ev::Pfc {
                    node: peer.node,
                    port: peer.port,
                    pause,
                },
            );
        }
    }

    fn drain_nic(&mut self, h: u32) {
        let now = self.q.now();
        while let Some(ev) = self.nics[h as usize].poll_event() {
            // The simulator carries no payload bytes: the digest of each flow's
            // in-order stream is computed from its pattern at the end.
            match self.progress.apply(ev) {
                metrics::Step::Delivered => {
                    self.last_delivery = now;
                    self.last_progress = now;
                }
                metrics::Step::ReceiverDone(flow) => {
                    for i in 0..self.dependents[flow as usize].len() {
                        let d = self.dependents[flow as usize][i];
                        self.q.schedule(now, Ev::Start { flow: d });
                    }
                }
                metrics::Step::Other => {}
            }
        }
    }

    fn apply_fault(&mut self, i: usize) {
        let f = self.cfg.faults[i].clone();
        let l = self
            .topo
            .link_between(&f.link.0, &f.link.1)
            .expect("fault links were checked in new()");
        let link = self.topo.links[l].clone();
        for end in [link.a, link.b] {
            let (node, port) = (end.node, end.port);
            let e = &mut self.egress[node as usize][usize::from(port)];
            f.kind
                .apply(&mut e.up, &mut e.loss, &mut e.rate_mbps, e.base_rate_mbps);
            let (up, rate) = (e.up, e.rate_mbps);
            if !self.topo.is_host(node) {
                let s = (node - self.topo.hosts) as usize;
                let mut lost = Vec::new();
                self.switches[s].set_port_up(port, up, &mut lost);
                self.switches[s].set_port_rate(port, rate);
                self.link_drops += lost.len() as u64;
                for id in lost {
                    self.release(id);
                }
                if up {
                    self.kick_switch(node, port);
                }
            } else if up {
                self.kick_host(node);
            }
        }
    }

    fn report(&self) -> Report {
        metrics::build_report(&RunView {
            cfg: &self.cfg,
            topo: &self.topo,
            flows: &self.flows,
            runs: &self.progress.runs,
            nics: &self.nics,
            port_stats: self
                .switches
                .iter()
                .map(|sw| (0..sw.port_count() as u16).map(|p| sw.stats(p)).collect())
                .collect(),
            queue_samples: &self.queue_samples,
            link_drops: self.link_drops,
            pfc_pauses: self.pfc_pauses,
            events: self.q.processed(),
            now: self.q.now(),
            last_delivery: self.last_delivery,
            base_rtt: self.base_rtt,
            cc_trace: &self.progress.cc_trace,
        })
    }
}

#[cfg(test)]
mod tests;
