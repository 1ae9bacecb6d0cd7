//! Relations between congestion-control algorithms that their papers report, checked
//! in the simulator with tolerances meant to survive seed changes.

use fablab_dataplane::cc::Registry;
use fablab_dataplane::sim::metrics::Report;
use fablab_dataplane::sim::topology::{TopologyKind, TopologySpec};
use fablab_dataplane::sim::traffic::{Pattern, TrafficSpec};
use fablab_dataplane::sim::{NicSpec, SimConfig, Simulator};
use fablab_dataplane::switch::{EcnConfig, LbPolicy, PfcConfig};

/// 16:1 incast of 1 MB flows on a 2 × 4 leaf-spine, lossless, RED/ECN at
/// Kmin 100 KB / Kmax 400 KB / Pmax 0.2 (the HPCC paper's DCQCN settings at 100G).
fn incast(cc: &str, seed: u64) -> Report {
    Simulator::new(incast_config(cc, seed), Registry::default())
        .unwrap()
        .run()
}

fn incast_config(cc: &str, seed: u64) -> SimConfig {
    SimConfig {
        seed,
        topology: TopologySpec {
            kind: TopologyKind::LeafSpine {
                leaves: 2,
                spines: 4,
                hosts_per_leaf: 9,
            },
            host_rate_mbps: 100_000,
            fabric_rate_mbps: 100_000,
            link_delay: 1_000,
        },
        buffer_bytes: 1 << 20,
        lb: LbPolicy::Ecmp,
        ecn: Some(EcnConfig {
            kmin_bytes: 100 * 1024,
            kmax_bytes: 400 * 1024,
            pmax: 0.2,
        }),
        pfc: Some(PfcConfig {
            xoff_bytes: 256 * 1024,
            xon_bytes: 128 * 1024,
        }),
        ecn_at: fablab_dataplane::switch::EcnPoint::Enqueue,
        trim: Some(fablab_dataplane::switch::TrimConfig::WHEN_FULL),
        control_priority: true,
        int: true,
        nic: NicSpec {
            entropies: 1,
            cc: cc.into(),
            ..NicSpec::default()
        },
        traffic: TrafficSpec {
            pattern: Pattern::Incast { senders: 16 },
            flow_bytes: 1_000_000,
        },
        faults: Vec::new(),
        duration: None,
        queue_sample_interval: 1_000,
        trace_cc: false,
    }
}

#[test]
fn hpcc_keeps_incast_queues_near_zero_where_dcqcn_does_not() {
    for seed in [1, 2, 3] {
        let hpcc = incast("hpcc", seed);
        let dcqcn = incast("dcqcn", seed);
        eprintln!(
            "seed {seed}: queue p99 HPCC {:.0} B, DCQCN {:.0} B; drops {} / {}",
            hpcc.queue_bytes.p99, dcqcn.queue_bytes.p99, hpcc.drops, dcqcn.drops
        );
        for r in [&hpcc, &dcqcn] {
            assert_eq!(r.drops, 0, "lossless incast dropped packets");
            assert_eq!(r.flows_finished, r.flows_total);
            assert_eq!(r.delivered_digest, r.expected_digest);
        }
        // The HPCC paper's headline: near-zero queues. "Near zero" here: under four
        // MTU-sized packets at the 99th percentile, and a tenth of DCQCN's.
        assert!(
            hpcc.queue_bytes.p99 < 4.0 * 4362.0,
            "HPCC p99 {}",
            hpcc.queue_bytes.p99
        );
        assert!(hpcc.queue_bytes.p99 * 10.0 < dcqcn.queue_bytes.p99);
    }
}

/// WebSearch flow sizes, Poisson arrivals at 50% load on a k = 4 fat-tree, lossless.
fn websearch(cc: &str, seed: u64) -> Report {
    let cdf = fablab_dataplane::sim::traffic::SizeCdf::parse(include_str!(
        "../../scenarios/cdf/websearch.txt"
    ))
    .unwrap();
    let mut cfg = SimConfig {
        seed,
        topology: TopologySpec {
            kind: TopologyKind::FatTree { k: 4 },
            host_rate_mbps: 100_000,
            fabric_rate_mbps: 100_000,
            link_delay: 1_000,
        },
        traffic: TrafficSpec {
            pattern: Pattern::Poisson {
                load: 0.5,
                cdf,
                flows: 300,
            },
            flow_bytes: 0,
        },
        ..incast_config(cc, seed)
    };
    cfg.lb = LbPolicy::Ecmp;
    Simulator::new(cfg, Registry::default()).unwrap().run()
}

#[test]
fn hpcc_gives_short_websearch_flows_a_lower_tail_than_dcqcn() {
    // The HPCC paper's WebSearch result at 50% load: HPCC cuts the tail FCT slowdown
    // of short flows, because it holds queues near zero.
    for seed in [1, 2] {
        let hpcc = websearch("hpcc", seed);
        let dcqcn = websearch("dcqcn", seed);
        let (h, d) = (
            hpcc.fct_slowdown_short.unwrap().p99,
            dcqcn.fct_slowdown_short.unwrap().p99,
        );
        eprintln!("seed {seed}: short-flow p99 slowdown HPCC {h:.2}, DCQCN {d:.2}");
        assert_eq!(hpcc.flows_finished, hpcc.flows_total);
        assert_eq!(dcqcn.flows_finished, dcqcn.flows_total);
        assert!(h < d, "seed {seed}: HPCC {h:.2} is not below DCQCN {d:.2}");
    }
}

/// 8 long flows from leaf 0 to leaf 1 over 8 spines with adaptive routing and INT,
/// as `scenarios/ecmp-vs-spray.toml --set switch.lb=adaptive --set switch.int=true`.
fn permutation(cc: &str, params: &[(&str, f64)], seed: u64) -> Report {
    let mut cfg = SimConfig {
        topology: TopologySpec {
            kind: TopologyKind::LeafSpine {
                leaves: 2,
                spines: 8,
                hosts_per_leaf: 8,
            },
            host_rate_mbps: 100_000,
            fabric_rate_mbps: 100_000,
            link_delay: 1_000,
        },
        pfc: None,
        ecn_at: fablab_dataplane::switch::EcnPoint::Enqueue,
        trim: Some(fablab_dataplane::switch::TrimConfig::WHEN_FULL),
        control_priority: true,
        lb: LbPolicy::Adaptive,
        traffic: TrafficSpec {
            pattern: Pattern::Permutation {
                stride: Some(8),
                senders: Some(8),
            },
            flow_bytes: 1 << 40,
        },
        duration: Some(1_000_000),
        buffer_bytes: 4 << 20,
        ..incast_config(cc, seed)
    };
    for (k, v) in params {
        cfg.nic.cc_params.insert((*k).into(), *v);
    }
    Simulator::new(cfg, Registry::default()).unwrap().run()
}

#[test]
fn every_algorithm_keeps_the_sprayed_permutation_efficient() {
    for seed in [1, 2] {
        for cc in ["none", "dcqcn", "dctcp", "swift", "timely", "nscc"] {
            let r = permutation(cc, &[], seed);
            eprintln!("seed {seed}: {cc} efficiency {:.3}", r.efficiency);
            assert!(
                r.efficiency >= 0.9,
                "seed {seed}: {cc} efficiency {:.3}",
                r.efficiency
            );
            assert_eq!(r.drops, 0);
        }
        // HPCC at its authors' best setting, η = 0.99 and maxStage = 0
        // (hpcc-group.github.io/results.html: "η=99% and maxStage=0, which are the
        // best setting for HPCC"). With the paper's defaults (η = 0.95, maxStage 5)
        // it reaches 0.894-0.897 here: the additive-only stages keep the measured
        // utilization under η; maxStage = 0 alone gives 0.912 (docs/results.md).
        let r = permutation("hpcc", &[("eta", 0.99), ("max_stage", 0.0)], seed);
        eprintln!(
            "seed {seed}: hpcc (eta 0.99, maxStage 0) efficiency {:.3}, queue p99 {:.0} B",
            r.efficiency, r.queue_bytes.p99
        );
        assert!(r.efficiency >= 0.9);
        assert!(r.queue_bytes.p99 < 4.0 * 4362.0);
    }
}
