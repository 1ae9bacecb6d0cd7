//! What a run measured: the numbers `results.json` carries (docs/results.md defines
//! each one).

use super::topology::Topology;
use super::traffic::{FlowPlan, Pattern};
use super::SimConfig;
use crate::nic::sender::CcChange;
use crate::nic::{Nic, NicEvent};
use crate::packet::{FlowId, HostId, Nanos, Packet};
use crate::payload::{combine, pattern_crc};
use crate::switch::PortStats;

/// Flows of at most this many bytes count as short for `fct_slowdown_short`.
pub const SHORT_FLOW_BYTES: u64 = 100_000;

/// p50 / p99 / max of a distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Every sampled queue depth, as counts per distinct value: memory grows with the
/// number of distinct depths (packet-size multiples, a few thousand), not with the
/// length of the run, and percentiles come out exactly as from the full list.
#[derive(Debug, Clone, Default)]
pub struct SampleCounts {
    counts: std::collections::BTreeMap<u64, u64>,
    n: u64,
}

impl SampleCounts {
    pub fn record(&mut self, v: u64) {
        self.record_n(v, 1);
    }

    /// Records `v` as `n` samples (a depth that held over `n` sampling instants).
    pub fn record_n(&mut self, v: u64, n: u64) {
        if n > 0 {
            *self.counts.entry(v).or_insert(0) += n;
            self.n += n;
        }
    }

    /// The value at sorted index round((n − 1)·q), as `Percentiles::of_f64` picks it.
    fn at(&self, q: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let want = ((self.n as f64 - 1.0) * q).round() as u64;
        let mut seen = 0;
        for (&v, &c) in &self.counts {
            seen += c;
            if seen > want {
                return v as f64;
            }
        }
        0.0
    }

    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            p50: self.at(0.5),
            p99: self.at(0.99),
            max: self.counts.keys().next_back().map_or(0.0, |&v| v as f64),
        }
    }
}

impl Percentiles {
    pub(crate) fn of_f64(values: &mut [f64]) -> Percentiles {
        values.sort_by(f64::total_cmp);
        let pick = |q: f64| -> f64 {
            if values.is_empty() {
                return 0.0;
            }
            values[((values.len() as f64 - 1.0) * q).round() as usize]
        };
        Percentiles {
            p50: pick(0.5),
            p99: pick(0.99),
            max: values.last().copied().unwrap_or(0.0),
        }
    }
}

/// One flow's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowReport {
    pub id: FlowId,
    pub src: HostId,
    pub dst: HostId,
    pub bytes: u64,
    pub start_ns: Option<Nanos>,
    /// Start to the last byte delivered in order at the receiver.
    pub fct_ns: Option<Nanos>,
    /// The same flow alone on an empty fabric.
    pub ideal_fct_ns: Nanos,
    pub delivered_bytes: u64,
    pub retransmits: u64,
}

/// One switch port's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct PortReport {
    pub switch: String,
    pub port: u16,
    pub peer: String,
    pub tx_bytes: u64,
    pub drops: u64,
    pub max_queue_bytes: u64,
    pub ecn_marks: u64,
    pub pfc_pauses_sent: u64,
    pub trims: u64,
    /// Packets that came in on this port and had no route out.
    pub no_route_drops: u64,
}

/// A ring all-reduce's figures, as nccl-tests reports them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllreduceReport {
    pub ranks: u32,
    /// Bytes reduced per rank.
    pub bytes: u64,
    pub completion_us: f64,
    /// bytes / time.
    pub algbw_gbps: f64,
    /// algbw × 2(ranks − 1) / ranks.
    pub busbw_gbps: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub goodput_gbps: f64,
    pub ideal_goodput_gbps: f64,
    pub efficiency: f64,
    /// Over finished flows; `None` when no flow finished (a duration-bounded run of
    /// long flows).
    pub fct_us: Option<Percentiles>,
    pub fct_slowdown: Option<Percentiles>,
    /// FCT slowdown of flows of at most [`SHORT_FLOW_BYTES`] (where the HPCC and
    /// DCQCN papers compare algorithms on WebSearch-like traffic).
    pub fct_slowdown_short: Option<Percentiles>,
    pub queue_bytes: Percentiles,
    /// Packets lost: switch drops plus link losses.
    pub drops: u64,
    pub switch_drops: u64,
    pub link_drops: u64,
    pub pfc_pauses: u64,
    pub retransmits: u64,
    pub spurious_retransmits: u64,
    pub timeouts: u64,
    /// Data packets switches cut to their headers.
    pub trims: u64,
    /// Losses and timeouts the congestion controllers were told of (at most one
    /// loss per flow per round trip), to compare with `retransmits`.
    pub loss_events: u64,
    /// Data packets the senders sent, retransmissions included.
    pub data_packets: u64,
    /// ACKs (and NACKs) the receivers sent.
    pub acks_sent: u64,
    /// The mean over all flows of each flow's rate (bytes·8 / FCT) as a fraction of
    /// the host link rate; an unfinished flow counts as 0.
    pub mean_flow_rate: f64,
    pub ooo_packets: u64,
    pub duplicate_packets: u64,
    pub reorder_max_depth: u32,
    /// Jain's fairness index over the flows' throughputs (delivered bytes over each
    /// flow's completion time, or over the run for unfinished flows): 1 is equal
    /// shares, 1/n is one flow taking everything.
    pub jain_fairness: f64,
    pub delivered_bytes: u64,
    pub delivered_digest: String,
    /// The digest of each flow's stream from its first byte up to as many bytes as
    /// were delivered: equal to `delivered_digest` exactly when every receiver got an
    /// exact in-order prefix of what was sent (the whole of it when every flow
    /// finished).
    pub expected_digest: String,
    /// Deliveries that did not continue their flow's stream (must be 0).
    pub order_violations: u64,
    pub flows_total: usize,
    pub flows_finished: usize,
    pub events: u64,
    pub sim_time_ns: Nanos,
    pub base_rtt_ns: Nanos,
    pub flows: Vec<FlowReport>,
    pub ports: Vec<PortReport>,
    pub allreduce: Option<AllreduceReport>,
    /// Every change of a flow's window or rate, in time order (with `trace_cc`).
    pub cc_trace: Vec<(FlowId, crate::nic::sender::CcChange)>,
}

/// Max-min fair rates of `flows` (src, dst) when only host links (capacity `cap`
/// each way) constrain them, by water-filling. Returns the sum of the rates.
pub fn max_min_host_limited(flows: &[(HostId, HostId)], hosts: u32, cap: f64) -> f64 {
    let n = hosts as usize;
    let mut up = vec![cap; n];
    let mut down = vec![cap; n];
    let mut frozen = vec![false; flows.len()];
    let mut total = 0.0;
    loop {
        let mut users_up = vec![0u32; n];
        let mut users_down = vec![0u32; n];
        for (i, &(s, d)) in flows.iter().enumerate() {
            if !frozen[i] {
                users_up[s as usize] += 1;
                users_down[d as usize] += 1;
            }
        }
        let share = |c: f64, u: u32| {
            if u > 0 {
                c / f64::from(u)
            } else {
                f64::INFINITY
            }
        };
        let mut best = f64::INFINITY;
        for h in 0..n {
            best = best
                .min(share(up[h], users_up[h]))
                .min(share(down[h], users_down[h]));
        }
        if !best.is_finite() {
            return total;
        }
        // Freeze every flow that crosses a bottleneck at `best`.
        let mut any = false;
        for (i, &(s, d)) in flows.iter().enumerate() {
            if frozen[i] {
                continue;
            }
            let (s, d) = (s as usize, d as usize);
            let bottleneck = (share(up[s], users_up[s]) - best).abs() < 1e-9
                || (share(down[d], users_down[d]) - best).abs() < 1e-9;
            if bottleneck {
                frozen[i] = true;
                any = true;
                total += best;
                up[s] -= best;
                down[d] -= best;
            }
        }
        if !any {
            return total;
        }
    }
}

/// One flow's progress as its driver saw it.
#[derive(Debug, Clone, Default)]
pub struct FlowRun {
    pub started: Option<Nanos>,
    pub rx_done: Option<Nanos>,
    pub tx_done: Option<Nanos>,
    /// Bytes delivered in order so far.
    pub delivered: u64,
    /// Deliveries that did not continue the stream where it stood.
    pub order_violations: u64,
}

/// What every driver (the simulator, the emu datapath) keeps from its NICs' events:
/// each flow's progress, how many flows are done, and the CC trace.
#[derive(Debug, Default)]
pub struct Progress {
    pub runs: Vec<FlowRun>,
    /// Flows whose receiver and sender are both done.
    pub finished: usize,
    pub cc_trace: Vec<(FlowId, CcChange)>,
}

/// What a NIC event means for the driver's own scheduling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Bytes were delivered (the run is making progress).
    Delivered,
    /// A flow's receiver has everything: flows that wait for it may start.
    ReceiverDone(FlowId),
    Other,
}

impl Progress {
    pub fn new(flows: usize) -> Progress {
        Progress {
            runs: vec![FlowRun::default(); flows],
            ..Progress::default()
        }
    }

    /// Books one NIC event. A delivery is exact when it continues the flow's stream
    /// exactly where the last one ended; anything else counts as an order violation.
    pub fn apply(&mut self, ev: NicEvent) -> Step {
        match ev {
            NicEvent::Delivered {
                flow,
                offset,
                bytes,
            } => {
                let r = &mut self.runs[flow as usize];
                if offset != r.delivered {
                    r.order_violations += 1;
                }
                r.delivered = r.delivered.max(offset + bytes);
                Step::Delivered
            }
            NicEvent::ReceiverDone { flow, at } => {
                self.runs[flow as usize].rx_done = Some(at);
                self.count_if_finished(flow);
                Step::ReceiverDone(flow)
            }
            NicEvent::SenderDone { flow, at } => {
                self.runs[flow as usize].tx_done = Some(at);
                self.count_if_finished(flow);
                Step::Other
            }
            NicEvent::CcChange { flow, change } => {
                self.cc_trace.push((flow, change));
                Step::Other
            }
        }
    }

    fn count_if_finished(&mut self, flow: FlowId) {
        let r = &self.runs[flow as usize];
        if r.rx_done.is_some() && r.tx_done.is_some() {
            self.finished += 1;
        }
    }
}

/// What a driver (the simulator, the emu datapath) hands over to be reported: the
/// same numbers from every mode, so results.json means the same thing in each.
#[derive(Debug)]
pub struct RunView<'a> {
    pub cfg: &'a SimConfig,
    pub topo: &'a Topology,
    pub flows: &'a [FlowPlan],
    pub runs: &'a [FlowRun],
    pub nics: &'a [Nic],
    /// Every switch's port counters, indexed by switch then port.
    pub port_stats: Vec<Vec<PortStats>>,
    pub queue_samples: &'a SampleCounts,
    pub link_drops: u64,
    pub pfc_pauses: u64,
    pub events: u64,
    /// When the run ended (virtual or since the start of an emu run).
    pub now: Nanos,
    pub last_delivery: Nanos,
    pub base_rtt: Nanos,
    pub cc_trace: &'a [(FlowId, crate::nic::sender::CcChange)],
}

/// Builds the report of a finished (or stopped) run.
pub fn build_report(sim: &RunView<'_>) -> Report {
    let cfg = sim.cfg;
    let host_mbps = f64::from(cfg.topology.host_rate_mbps);
    let host_bps = host_mbps * 1e6;
    let delay = cfg.topology.link_delay;
    let mtu = cfg.nic.mtu;
    let mut flows = Vec::new();
    let mut fcts = Vec::new();
    let mut slowdowns = Vec::new();
    let mut short_slowdowns = Vec::new();
    let mut delivered = 0u64;
    let mut retransmits = 0u64;
    let mut order_violations = 0u64;
    for (f, run) in sim.flows.iter().zip(sim.runs) {
        let sender = sim.nics[f.src as usize]
            .senders()
            .iter()
            .find(|s| s.spec.flow == f.id);
        let rtx = sender.map_or(0, |s| s.stats.retransmits);
        retransmits += rtx;
        order_violations += run.order_violations;
        delivered += run.delivered;
        let hops = u64::from(sim.topo.hops(f.src, f.dst));
        let packets = f.bytes.div_ceil(u64::from(mtu)).max(1);
        let full = u64::from(Packet::data(0, 0, 0, 0, mtu).wire_len());
        let last = u64::from(
            Packet::data(
                0,
                0,
                0,
                0,
                (f.bytes - (packets - 1) * u64::from(mtu)) as u32,
            )
            .wire_len(),
        );
        let total_wire = (packets - 1) * full + last;
        let first = if packets == 1 { last } else { full };
        // Propagation over every hop, store-and-forward of the first packet at every
        // hop, then the rest of the flow at the host link rate.
        let ideal = hops * delay
            + ((hops * first + (total_wire - first)) as f64 * 8.0 / host_bps * 1e9) as u64;
        let fct = match (run.started, run.rx_done) {
            (Some(s), Some(d)) => Some(d - s),
            _ => None,
        };
        if let Some(fct) = fct {
            fcts.push(fct as f64 / 1e3);
            let slowdown = (fct as f64 / ideal.max(1) as f64).max(1.0);
            slowdowns.push(slowdown);
            if f.bytes <= SHORT_FLOW_BYTES {
                short_slowdowns.push(slowdown);
            }
        }
        flows.push(FlowReport {
            id: f.id,
            src: f.src,
            dst: f.dst,
            bytes: f.bytes,
            start_ns: run.started,
            fct_ns: fct,
            ideal_fct_ns: ideal,
            delivered_bytes: run.delivered,
            retransmits: rtx,
        });
    }
    let start = sim.flows.iter().map(|f| f.start).min().unwrap_or(0);
    let end = match cfg.duration {
        Some(d) => d.min(sim.now.max(sim.last_delivery)),
        None => sim.last_delivery,
    };
    let span_s = (end.saturating_sub(start)).max(1) as f64 / 1e9;
    let goodput = delivered as f64 * 8.0 / span_s / 1e9;
    let ideal = ideal_goodput_gbps(sim, host_bps);
    let mut ports = Vec::new();
    let (mut switch_drops, mut trims) = (0, 0);
    for (i, stats) in sim.port_stats.iter().enumerate() {
        let node = sim.topo.hosts as usize + i;
        for (p, st) in stats.iter().enumerate() {
            let p = p as u16;
            switch_drops += st.drops + st.no_route;
            trims += st.trims;
            ports.push(PortReport {
                switch: sim.topo.names[node].clone(),
                port: p,
                peer: sim.topo.names[sim.topo.peer(node as u32, p).node as usize].clone(),
                tx_bytes: st.tx_bytes,
                drops: st.drops,
                max_queue_bytes: st.max_queue_bytes,
                ecn_marks: st.ecn_marks,
                pfc_pauses_sent: st.pauses_sent,
                trims: st.trims,
                no_route_drops: st.no_route,
            });
        }
    }
    let mut rx = crate::nic::ReceiverStats::default();
    let (mut spurious, mut timeouts, mut loss_events, mut data_packets) = (0, 0, 0, 0);
    for nic in sim.nics {
        let s = nic.receiver_stats();
        rx.out_of_order += s.out_of_order;
        rx.duplicates += s.duplicates;
        rx.max_held = rx.max_held.max(s.max_held);
        rx.acks_sent += s.acks_sent;
        for snd in nic.senders() {
            spurious += snd.stats.spurious_retransmits;
            timeouts += snd.stats.timeouts;
            loss_events += snd.stats.loss_events;
            data_packets += snd.stats.packets_sent;
        }
    }
    let mean_flow_rate = if flows.is_empty() {
        0.0
    } else {
        flows
            .iter()
            .filter_map(|f| f.fct_ns.map(|t| f.bytes as f64 * 8.0 / t.max(1) as f64))
            .fold(0.0, |a, r| a + r)
            / (flows.len() as f64 * host_mbps / 1e3)
    };
    // The pattern's CRC over what each flow delivered (at most its size): the
    // digest of the in-order stream a receiver on real interfaces would hash.
    let digests: Vec<(FlowId, u32, u64)> = sim
        .flows
        .iter()
        .zip(sim.runs)
        .map(|(f, r)| {
            let n = r.delivered.min(f.bytes);
            (f.id, pattern_crc(f.id, n), n)
        })
        .collect();
    let allreduce = match cfg.traffic.pattern {
        Pattern::AllreduceRing { ranks } => {
            let done = sim.runs.iter().filter_map(|r| r.rx_done).max();
            let all = sim.runs.iter().all(|r| r.rx_done.is_some());
            done.filter(|_| all).map(|t| {
                let secs = (t - start) as f64 / 1e9;
                let algbw = cfg.traffic.flow_bytes as f64 * 8.0 / secs / 1e9;
                AllreduceReport {
                    ranks,
                    bytes: cfg.traffic.flow_bytes,
                    completion_us: secs * 1e6,
                    algbw_gbps: algbw,
                    busbw_gbps: algbw * 2.0 * f64::from(ranks - 1) / f64::from(ranks),
                }
            })
        }
        _ => None,
    };
    let rates: Vec<f64> = flows
        .iter()
        .filter_map(|f| {
            let start = f.start_ns?;
            let span = f.fct_ns.unwrap_or(end.saturating_sub(start)).max(1);
            Some(f.delivered_bytes as f64 / span as f64)
        })
        .collect();
    let (sum, sq) = rates
        .iter()
        .fold((0.0, 0.0), |(s, q), r| (s + r, q + r * r));
    let jain = if sq > 0.0 {
        sum * sum / (rates.len() as f64 * sq)
    } else {
        0.0
    };
    Report {
        goodput_gbps: goodput,
        ideal_goodput_gbps: ideal,
        efficiency: if ideal > 0.0 { goodput / ideal } else { 0.0 },
        fct_us: (!fcts.is_empty()).then(|| Percentiles::of_f64(&mut fcts)),
        fct_slowdown: (!slowdowns.is_empty()).then(|| Percentiles::of_f64(&mut slowdowns)),
        fct_slowdown_short: (!short_slowdowns.is_empty())
            .then(|| Percentiles::of_f64(&mut short_slowdowns)),
        queue_bytes: sim.queue_samples.percentiles(),
        drops: switch_drops + sim.link_drops,
        switch_drops,
        link_drops: sim.link_drops,
        pfc_pauses: sim.pfc_pauses,
        retransmits,
        spurious_retransmits: spurious,
        timeouts,
        trims,
        loss_events,
        data_packets,
        acks_sent: rx.acks_sent,
        mean_flow_rate,
        ooo_packets: rx.out_of_order,
        duplicate_packets: rx.duplicates,
        reorder_max_depth: rx.max_held,
        jain_fairness: jain,
        delivered_bytes: delivered,
        delivered_digest: combine(digests.iter().zip(sim.runs).map(|(&(id, crc, n), r)| {
            // A flow whose stream broke order cannot match what was sent.
            let crc = if r.order_violations > 0 { !crc } else { crc };
            (id, crc, n)
        })),
        expected_digest: combine(digests.iter().copied()),
        order_violations,
        flows_total: sim.flows.len(),
        flows_finished: sim
            .runs
            .iter()
            .filter(|r| r.rx_done.is_some() && r.tx_done.is_some())
            .count(),
        events: sim.events,
        sim_time_ns: sim.now,
        base_rtt_ns: sim.base_rtt,
        flows,
        ports,
        allreduce,
        cc_trace: sim.cc_trace.to_vec(),
    }
}

/// What the traffic could get if only host links limited it (a single
/// non-blocking switch), in Gb/s of payload: the link rate times the payload share
/// of a full-size frame without INT (headers are not a fabric inefficiency; INT is,
/// and shows in `efficiency`).
fn ideal_goodput_gbps(sim: &RunView<'_>, host_bps: f64) -> f64 {
    let hosts = sim.topo.hosts;
    let mtu = sim.cfg.nic.mtu;
    let payload_share = f64::from(mtu) / f64::from(Packet::data(0, 0, 0, 0, mtu).wire_len());
    let host_bps = host_bps * payload_share;
    match &sim.cfg.traffic.pattern {
        Pattern::Poisson { .. } => {
            // Open-loop traffic: what was offered, over the arrival span.
            let bytes: u64 = sim.flows.iter().map(|f| f.bytes).sum();
            let first = sim.flows.iter().map(|f| f.start).min().unwrap_or(0);
            let last = sim.flows.iter().map(|f| f.start).max().unwrap_or(0);
            let offered = bytes as f64 * 8.0 / ((last - first).max(1) as f64 / 1e9);
            offered.min(f64::from(hosts) * host_bps) / 1e9
        }
        _ => {
            // Flows that run together: for an all-reduce, one step of the ring.
            let pairs: Vec<(HostId, HostId)> = sim
                .flows
                .iter()
                .filter(|f| f.after.is_none())
                .map(|f| (f.src, f.dst))
                .collect();
            max_min_host_limited(&pairs, hosts, host_bps) / 1e9
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_counts_give_the_same_percentiles_as_the_sorted_list() {
        let values: Vec<u64> = (0..1000u64).map(|i| (i * 7919) % 37 * 4154).collect();
        let mut counts = SampleCounts::default();
        for &v in &values {
            counts.record(v);
        }
        let mut f: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        assert_eq!(counts.percentiles(), Percentiles::of_f64(&mut f));
        assert_eq!(
            SampleCounts::default().percentiles(),
            Percentiles::default()
        );
    }

    #[test]
    fn max_min_of_permutation_incast_and_mixed() {
        let perm: Vec<(u32, u32)> = (0..4).map(|i| (i, (i + 1) % 4)).collect();
        assert_eq!(max_min_host_limited(&perm, 4, 100.0), 400.0);
        let incast: Vec<(u32, u32)> = (1..5).map(|i| (i, 0)).collect();
        assert_eq!(max_min_host_limited(&incast, 5, 100.0), 100.0);
        // Host 0 sends to 1 and 2; host 3 sends to 2: 0→1 and 0→2 share 0's uplink
        // (50 each), 3→2 gets the remaining 50 of 2's downlink.
        let mixed = [(0, 1), (0, 2), (3, 2)];
        assert!((max_min_host_limited(&mixed, 4, 100.0) - 150.0).abs() < 1e-9);
    }
}
