use super::topology::TopologyKind;
use super::traffic::Pattern;
use super::*;

pub(crate) fn leaf_spine(
    lb: LbPolicy,
    spray: SprayPolicy,
    pattern: Pattern,
    bytes: u64,
) -> SimConfig {
    SimConfig {
        seed: 1,
        topology: TopologySpec {
            kind: TopologyKind::LeafSpine {
                leaves: 2,
                spines: 4,
                hosts_per_leaf: 4,
            },
            host_rate_mbps: 100_000,
            fabric_rate_mbps: 100_000,
            link_delay: 1_000,
        },
        buffer_bytes: 1 << 20,
        lb,
        ecn: None,
        pfc: None,
        ecn_at: crate::switch::EcnPoint::Enqueue,
        trim: Some(crate::switch::TrimConfig::WHEN_FULL),
        control_priority: true,
        int: true,
        nic: NicSpec {
            spray,
            reorder_window: 512,
            ..NicSpec::default()
        },
        traffic: TrafficSpec {
            pattern,
            flow_bytes: bytes,
        },
        faults: Vec::new(),
        duration: None,
        queue_sample_interval: 1_000,
        trace_cc: false,
    }
}

fn run(cfg: SimConfig) -> Report {
    Simulator::new(cfg, Registry::default()).unwrap().run()
}

fn assert_exact(r: &Report) {
    assert_eq!(r.flows_finished, r.flows_total, "unfinished flows");
    assert_eq!(r.order_violations, 0);
    assert_eq!(r.delivered_digest, r.expected_digest);
    let total: u64 = r.flows.iter().map(|f| f.bytes).sum();
    assert_eq!(r.delivered_bytes, total);
}

#[test]
fn sprayed_permutation_delivers_every_byte_once_in_order() {
    let r = run(leaf_spine(
        LbPolicy::SprayRr,
        SprayPolicy::Fixed,
        Pattern::Permutation {
            stride: Some(4),
            senders: Some(4),
        },
        2_000_000,
    ));
    assert_exact(&r);
    assert!(r.ooo_packets > 0 || r.reorder_max_depth == 0);
    assert_eq!(r.drops, 0);
    assert!(r.efficiency > 0.8, "{}", r.efficiency);
}

#[test]
fn same_seed_same_report_other_seed_other_paths() {
    let cfg = leaf_spine(
        LbPolicy::Ecmp,
        SprayPolicy::Fixed,
        Pattern::Permutation {
            stride: None,
            senders: None,
        },
        500_000,
    );
    let a = run(cfg.clone());
    let b = run(cfg.clone());
    assert_eq!(a, b);
    let c = run(SimConfig { seed: 2, ..cfg });
    assert_ne!(a.flows, c.flows);
}

#[test]
fn lossy_links_and_a_failure_still_deliver_exactly() {
    let mut cfg = leaf_spine(
        LbPolicy::Adaptive,
        SprayPolicy::PerPacket,
        Pattern::Permutation {
            stride: Some(4),
            senders: Some(4),
        },
        1_000_000,
    );
    cfg.faults = vec![
        Fault {
            at: 0,
            link: ("leaf0".into(), "spine0".into()),
            kind: FaultKind::Loss(0.02),
        },
        Fault {
            at: 20_000,
            link: ("leaf1".into(), "spine1".into()),
            kind: FaultKind::Down,
        },
        Fault {
            at: 60_000,
            link: ("leaf1".into(), "spine1".into()),
            kind: FaultKind::Up,
        },
    ];
    let r = run(cfg);
    assert_exact(&r);
    assert!(r.link_drops > 0);
    assert!(r.retransmits > 0);
}

#[test]
fn int_reaches_the_sender_through_acks() {
    // Checked indirectly: the INT stack a data packet collects on a 4-hop path is
    // echoed; with INT off nothing is echoed and frames are smaller, so the same
    // transfer sends fewer bytes.
    let cfg = leaf_spine(
        LbPolicy::Ecmp,
        SprayPolicy::Fixed,
        Pattern::Permutation {
            stride: Some(4),
            senders: Some(4),
        },
        400_000,
    );
    let mut cfg = cfg;
    cfg.nic.int = crate::nic::IntRequest::On;
    let on = run(cfg.clone());
    cfg.nic.int = crate::nic::IntRequest::Off;
    let off = run(cfg.clone());
    // Switches with INT on stamp only packets that ask: `none` does not read INT, so
    // with the default `auto` its packets carry none.
    cfg.nic.int = crate::nic::IntRequest::Auto;
    let auto = run(cfg);
    let tx = |r: &Report| r.ports.iter().map(|p| p.tx_bytes).sum::<u64>();
    assert!(tx(&on) > tx(&off));
    assert_eq!(tx(&auto), tx(&off));
    assert_exact(&off);
}

#[test]
fn unknown_cc_and_bad_fault_fail_before_running() {
    let mut cfg = leaf_spine(LbPolicy::Ecmp, SprayPolicy::Fixed, Pattern::AllToAll, 1000);
    cfg.nic.cc = "hpcc-typo".into();
    assert!(Simulator::new(cfg.clone(), Registry::default())
        .unwrap_err()
        .contains("unknown congestion control"));
    cfg.nic.cc = "none".into();
    cfg.faults.push(Fault {
        at: 0,
        link: ("leaf0".into(), "leaf1".into()),
        kind: FaultKind::Down,
    });
    assert!(Simulator::new(cfg, Registry::default())
        .unwrap_err()
        .contains("no link between"));
}

#[test]
fn allreduce_reports_bus_bandwidth() {
    let r = run(leaf_spine(
        LbPolicy::SprayRr,
        SprayPolicy::Fixed,
        Pattern::AllreduceRing { ranks: 8 },
        8_000_000,
    ));
    assert_exact(&r);
    let a = r.allreduce.unwrap();
    assert_eq!(a.ranks, 8);
    assert!((a.busbw_gbps / a.algbw_gbps - 2.0 * 7.0 / 8.0).abs() < 1e-9);
    assert!(a.busbw_gbps > 30.0 && a.busbw_gbps < 100.0, "{a:?}");
}

#[test]
fn incast_lossless_pauses_instead_of_dropping() {
    let mut cfg = leaf_spine(
        LbPolicy::Ecmp,
        SprayPolicy::Fixed,
        Pattern::Incast { senders: 7 },
        1_000_000,
    );
    cfg.buffer_bytes = 200_000;
    cfg.pfc = Some(PfcConfig {
        xoff_bytes: 60_000,
        xon_bytes: 30_000,
    });
    let r = run(cfg.clone());
    assert_exact(&r);
    assert_eq!(r.drops, 0);
    assert!(r.pfc_pauses > 0);
    cfg.pfc = None;
    // Lossy switches trim what does not fit: nothing is dropped, and trimmed
    // packets are NACKed and retransmitted.
    let trimmed = run(cfg.clone());
    assert_exact(&trimmed);
    assert_eq!(trimmed.drops, 0);
    assert!(trimmed.trims > 0 && trimmed.retransmits >= trimmed.trims);
    cfg.trim = None;
    let lossy = run(cfg);
    assert_exact(&lossy);
    assert!(lossy.drops > 0 && lossy.retransmits > 0 && lossy.trims == 0);
}

static TELEMETRY_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static TELEMETRY_HOPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Debug)]
struct Probe;

impl crate::cc::CongestionControl for Probe {
    fn on_telemetry(&mut self, _now: Nanos, hops: &[crate::packet::IntHop]) {
        use std::sync::atomic::Ordering::Relaxed;
        TELEMETRY_CALLS.fetch_add(1, Relaxed);
        TELEMETRY_HOPS.fetch_max(hops.len() as u64, Relaxed);
    }
    fn on_ack(&mut self, _now: Nanos, _s: &crate::cc::AckSample<'_>) {}
    fn window(&self) -> u64 {
        200_000
    }
    fn pacing_rate(&self) -> u64 {
        100_000_000_000
    }
}

#[test]
fn plugins_receive_every_hops_telemetry() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut registry = Registry::default();
    registry.register("probe", |_| Ok(Box::new(Probe)));
    let mut cfg = leaf_spine(
        LbPolicy::SprayRr,
        SprayPolicy::Fixed,
        Pattern::Permutation {
            stride: Some(4),
            senders: Some(1),
        },
        100_000,
    );
    cfg.nic.cc = "probe".into();
    cfg.nic.ack_every_bytes = 0;
    let r = Simulator::new(cfg, registry).unwrap().run();
    assert_exact(&r);
    // Every data packet's ACK echoed its INT stack: leaf, spine, leaf.
    assert!(TELEMETRY_CALLS.load(Relaxed) >= 100_000 / 4096);
    assert_eq!(TELEMETRY_HOPS.load(Relaxed), 3);
}
