//! Each algorithm's documented reactions, checked against its paper's formulas, and a
//! model-based fuzz test that drives every built-in controller with random events.

use proptest::prelude::*;

use super::*;
use crate::packet::IntHop;

const LINE: u64 = 100_000_000_000;
const T: Nanos = 10_000;

fn make(name: &str, params: &CcParams) -> Box<dyn CongestionControl> {
    let ctx = FlowContext::new(1, LINE, T, 4096, 250_000, params);
    Registry::default().create(name, &ctx).unwrap()
}

fn hop(ts: Nanos, tx_bytes: u64, qlen: u32) -> IntHop {
    IntHop {
        node: 7,
        out_port: 3,
        ts,
        tx_bytes,
        qlen,
        rate_mbps: 100_000,
        ..IntHop::default()
    }
}

#[test]
fn hpcc_window_follows_algorithm_1() {
    let params = CcParams::new();
    let mut cc = make("hpcc", &params);
    // W_init = B·T = 12.5 bytes/ns × 10 000 ns.
    let w_init = 125_000.0;
    assert_eq!(cc.window(), w_init as u64);
    // First ACK: only records the link.
    let first = [hop(1_000_000, 1_000_000, 0)];
    cc.on_ack(
        0,
        &AckSample::new(4096, 4096)
            .with_int(&first)
            .with_inflight(100_000),
    );
    assert_eq!(cc.window(), w_init as u64);
    // Second ACK τ = 2 µs later: the link sent 25 000 bytes (12.5 B/ns: full rate)
    // and holds 50 000 bytes in both samples' minimum.
    let first_q = [hop(1_000_000, 1_000_000, 50_000)];
    let mut cc = make("hpcc", &params);
    cc.on_ack(
        0,
        &AckSample::new(4096, 4096)
            .with_int(&first_q)
            .with_inflight(100_000),
    );
    let second = [hop(1_002_000, 1_025_000, 60_000)];
    cc.on_ack(
        0,
        &AckSample::new(4096, 8192)
            .with_int(&second)
            .with_inflight(100_000),
    );
    // u = 50 000 / (12.5 × 10 000) + 12.5 / 12.5 = 1.4, the link's first estimate,
    // so U = 1.4 (later samples are averaged with weight τ/T).
    let u: f64 = 1.4;
    // U ≥ η: W = W_c / (U/η) + W_AI, W_AI = 50 Mb/s × 10 µs = 62.5 bytes.
    let expected = w_init / (u / 0.95) + 62.5;
    assert!(
        (cc.window() as f64 - expected).abs() <= 1.0,
        "{} vs {expected}",
        cc.window()
    );
    assert!(
        (cc.pacing_rate() as f64 - expected * 8.0 / 1e-5).abs() / (expected * 8.0 / 1e-5) < 1e-3
    );
}

#[test]
fn hpcc_increases_additively_then_updates_multiplicatively_at_max_stage() {
    let params = CcParams::new();
    let mut cc = make("hpcc", &params);
    let b = 12.5; // bytes per ns at 100 Gb/s
    let ack = |cc: &mut Box<dyn CongestionControl>, ts: Nanos, tx: u64, q: u32, delivered: u64| {
        let h = [hop(ts, tx, q)];
        cc.on_ack(
            0,
            &AckSample::new(4096, delivered)
                .with_int(&h)
                .with_inflight(1),
        );
    };
    // A congested RTT (τ = T, so U = u): queue of one BDP in both samples and the
    // link at full rate: u = 2, W = W_c / (2/η) + W_AI.
    ack(&mut cc, 1_000_000, 0, 125_000, 1);
    ack(&mut cc, 1_010_000, 125_000, 125_000, 100_000);
    let mut w = 125_000.0 / (2.0 / 0.95) + 62.5;
    assert!(
        (cc.window() as f64 - w).abs() < 1.0,
        "{} vs {w}",
        cc.window()
    );
    // Then RTTs at 90% utilization, no queue: below η, W_c grows by W_AI per RTT for
    // maxStage = 5 stages, then a multiplicative update toward U/η.
    let mut tx = 125_000u64;
    for k in 1..=6 {
        tx += (0.9 * b * 10_000.0) as u64;
        ack(&mut cc, 1_010_000 + k * 10_000, tx, 0, 100_000 * (k + 1));
        w = if k <= 5 {
            w + 62.5
        } else {
            w / (0.9 / 0.95) + 62.5
        };
        assert!(
            (cc.window() as f64 - w).abs() < 1.0,
            "RTT {k}: {} vs {w}",
            cc.window()
        );
    }
}

#[test]
fn dcqcn_cnp_cuts_rate_by_alpha_over_two_and_recovers() {
    let params = CcParams::new();
    let mut cc = make("dcqcn", &params);
    assert_eq!(cc.pacing_rate(), LINE);
    // α starts at 1: the first CNP halves the rate; α becomes (1 − g) + g = 1.
    cc.on_congestion(0, &CongestionEvent::Cnp);
    assert_eq!(cc.pacing_rate(), LINE / 2);
    // Second CNP: R_C·(1 − α/2) again with α = 1.
    cc.on_congestion(1, &CongestionEvent::Cnp);
    assert_eq!(cc.pacing_rate(), LINE / 4);
    // Fast recovery: five timer events each move R_C halfway back to R_T = 50 Gb/s.
    let mut t: Nanos;
    let mut rates = Vec::new();
    for _ in 0..5 {
        t = cc.next_timer().unwrap();
        cc.on_timer(t);
        rates.push(cc.pacing_rate());
    }
    let rt = (LINE / 2) as f64;
    let mut rc = (LINE / 4) as f64;
    for r in rates {
        rc = (rc + rt) / 2.0;
        assert!((r as f64 - rc).abs() < 1.0, "{r} vs {rc}");
    }
    // The sixth event is additive increase: R_T += R_AI, then R_C averages.
    t = cc.next_timer().unwrap();
    cc.on_timer(t);
    let rt = rt + 40e6;
    rc = (rc + rt) / 2.0;
    assert!((cc.pacing_rate() as f64 - rc).abs() < 1.0);
}

#[test]
fn dcqcn_alpha_decays_without_cnps() {
    let params = CcParams::new();
    let mut cc = make("dcqcn", &params);
    cc.on_sent(0, &SentSample::default());
    let t = cc.next_timer().unwrap();
    assert_eq!(t, 55_000);
    cc.on_timer(t);
    cc.on_congestion(t, &CongestionEvent::Cnp);
    // α decayed once to 1 − g before the CNP, so the cut is R·(1 − (1 − g)/2).
    let g = 1.0 / 256.0;
    assert_eq!(
        cc.pacing_rate(),
        (LINE as f64 * (1.0 - (1.0 - g) / 2.0)) as u64
    );
}

#[test]
fn dctcp_alpha_tracks_the_marked_fraction() {
    let mut params = CcParams::new();
    params.insert("alpha_init".into(), 0.0);
    let mut cc = make("dctcp", &params);
    let w0 = cc.window();
    assert_eq!(w0, 250_000);
    // One window (62 ACKs of 4096 bytes cross the 250 000-byte mark) in which half
    // the bytes were marked: α = g·0.5 = 1/32. The window was cut once with the
    // previous α = 0 (no change) and grows no further in that window.
    let mut delivered = 0;
    for i in 0..62 {
        delivered += 4096;
        cc.on_ack(0, &AckSample::new(4096, delivered).with_ecn(i % 2 == 0));
    }
    assert_eq!(cc.window(), w0, "α was 0, so the cut was 0");
    // Next window: any mark cuts by α/2 = 1/64.
    for _ in 0..2 {
        delivered += 4096;
        cc.on_ack(0, &AckSample::new(4096, delivered).with_ecn(true));
    }
    let expected = w0 as f64 * (1.0 - (0.5 / 16.0) / 2.0);
    assert!(
        (cc.window() as f64 - expected).abs() < 2.0,
        "{} vs {expected}",
        cc.window()
    );
}

#[test]
fn dctcp_grows_one_mss_per_window_without_marks() {
    let params = CcParams::new();
    let mut cc = make("dctcp", &params);
    let w0 = cc.window() as f64;
    let mut delivered = 0;
    let mut acked = 0.0;
    while acked < w0 {
        delivered += 4096;
        acked += 4096.0;
        cc.on_ack(0, &AckSample::new(4096, delivered));
    }
    let grown = cc.window() as f64 - w0;
    assert!((grown - 4096.0).abs() < 200.0, "{grown}");
}

#[test]
fn swift_grows_below_target_and_cuts_in_proportion_above_it() {
    let params = CcParams::new();
    let mut cc = make("swift", &params);
    // Window starts at init_window / MTU = 250 000 / 4096 packets (the cap).
    let w0 = cc.window();
    // Far above the target: cwnd ← max(1 − β·(d − t)/d, 1 − max_mdf)·cwnd, where the
    // target is the base target (1.25 × T = 12.5 µs) + 0 hops + the flow-scaling
    // delay α/√cwnd + β' (fs_range = 5 × 12.5 µs, full at 0.1 packets, 0 at 100).
    let cwnd0: f64 = 250_000.0 / 4096.0;
    let fs_alpha = 62_500.0 / (1.0 / 0.1f64.sqrt() - 1.0 / 100f64.sqrt());
    let fs = fs_alpha / cwnd0.sqrt() - fs_alpha / 10.0;
    let target: f64 = 12_500.0 + fs;
    let d: f64 = 20_000.0;
    cc.on_ack(100_000, &AckSample::new(4096, 4096).with_rtt(20_000));
    let factor: f64 = (1.0 - 0.8 * (d - target) / d).max(0.5);
    let expected = cwnd0 * factor * 4096.0;
    assert!(
        (cc.window() as f64 - expected).abs() < 2.0,
        "{} vs {expected}",
        cc.window()
    );
    assert!(cc.window() < w0);
    // Within the same RTT no second decrease.
    let w1 = cc.window();
    cc.on_ack(100_100, &AckSample::new(4096, 8192).with_rtt(20_000));
    assert_eq!(cc.window(), w1);
    // Below target: + ai/cwnd per acked packet.
    cc.on_ack(200_000, &AckSample::new(4096, 12_288).with_rtt(10_000));
    let cwnd = w1 as f64 / 4096.0;
    let grown = (cwnd + 1.0 / cwnd) * 4096.0;
    assert!(
        (cc.window() as f64 - grown).abs() < 2.0,
        "{} vs {grown}",
        cc.window()
    );
}

#[test]
fn timely_follows_the_rtt_gradient() {
    let params = CcParams::new();
    let mut cc = make("timely", &params);
    let line = LINE as f64;
    let ack = |cc: &mut Box<dyn CongestionControl>, now: Nanos, rtt: Nanos| {
        cc.on_ack(
            now,
            &AckSample::new(4096, 4096)
                .with_rtt(rtt)
                .with_min_rtt(10_000),
        );
    };
    // First sample only records. T_low = 12 µs, T_high = 50 µs at T = 10 µs.
    ack(&mut cc, 0, 20_000);
    // RTT rose by 5 µs: rtt_diff = 0.875·5000, g = 0.4375: R·(1 − 0.8·0.4375).
    ack(&mut cc, 20_000, 25_000);
    let mut r = line * (1.0 - 0.8 * 0.4375);
    assert!(
        (cc.pacing_rate() as f64 - r).abs() < 1e3,
        "{} vs {r}",
        cc.pacing_rate()
    );
    // Above T_high: R·(1 − β·(1 − T_high/rtt)).
    ack(&mut cc, 40_000, 100_000);
    r *= 1.0 - 0.8 * (1.0 - 50_000.0 / 100_000.0);
    assert!((cc.pacing_rate() as f64 - r).abs() < 1e3);
    // Below T_low: + δ (100 Mb/s).
    ack(&mut cc, 200_000, 11_000);
    r += 100e6;
    assert!((cc.pacing_rate() as f64 - r).abs() < 1e3);
}

#[test]
fn nscc_reacts_by_quadrant() {
    let params = CcParams::new();
    // Target = 1.5 × T = 15 µs. Start from a cut window so increases are visible.
    let mut cc = make("nscc", &params);
    let w0 = 250_000.0;
    // ECN and delay above target: W·(1 − γ·(rtt − t)/rtt), once per RTT.
    cc.on_ack(
        0,
        &AckSample::new(4096, 4096)
            .with_rtt(30_000)
            .with_ecn(true)
            .with_inflight(100_000),
    );
    let w1 = w0 * (1.0 - 0.8 * (30_000.0 - 15_000.0) / 30_000.0);
    assert!(
        (cc.window() as f64 - w1).abs() < 2.0,
        "{} vs {w1}",
        cc.window()
    );
    cc.on_ack(
        1,
        &AckSample::new(4096, 8192)
            .with_rtt(30_000)
            .with_ecn(true)
            .with_inflight(100_000),
    );
    assert!(
        (cc.window() as f64 - w1).abs() < 2.0,
        "no second cut within the RTT"
    );
    // ECN but low delay (another path under spraying): no change.
    cc.on_ack(
        2,
        &AckSample::new(4096, 12_288).with_rtt(12_000).with_ecn(true),
    );
    assert!((cc.window() as f64 - w1).abs() < 2.0);
    // No ECN, low delay: proportional increase α·(t − rtt)/t·acked·MSS/W.
    cc.on_ack(3, &AckSample::new(4096, 16_384).with_rtt(12_000));
    let w2 = w1 + 4.0 * (3_000.0 / 15_000.0) * 4096.0 * 4096.0 / w1;
    assert!(
        (cc.window() as f64 - w2).abs() < 2.0,
        "{} vs {w2}",
        cc.window()
    );
    // No ECN, high delay: fair increase η·acked·MSS/W.
    cc.on_ack(4, &AckSample::new(4096, 20_480).with_rtt(20_000));
    let w3 = w2 + 0.25 * 4096.0 * 4096.0 / w2;
    assert!(
        (cc.window() as f64 - w3).abs() < 2.0,
        "{} vs {w3}",
        cc.window()
    );
}

#[derive(Debug, Clone)]
enum Op {
    Sent(u32),
    Ack {
        bytes: u64,
        ecn: bool,
        q: u32,
        tx: u64,
        dt: u64,
    },
    Cnp,
    Loss,
    Timeout,
    Time(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (60u32..9000).prop_map(Op::Sent),
        (
            0u64..100_000,
            any::<bool>(),
            any::<u32>(),
            any::<u64>(),
            0u64..1_000_000
        )
            .prop_map(|(bytes, ecn, q, tx, dt)| Op::Ack {
                bytes,
                ecn,
                q,
                tx,
                dt
            }),
        Just(Op::Cnp),
        Just(Op::Loss),
        Just(Op::Timeout),
        (0u64..10_000_000).prop_map(Op::Time),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Model-based fuzzing (after s2n-quic's): random event sequences never make a
    /// controller panic, and its window and rate stay finite, positive and bounded.
    #[test]
    fn every_controller_stays_within_bounds(ops in proptest::collection::vec(op(), 1..300)) {
        for name in ["none", "hpcc", "dcqcn", "dctcp", "swift", "timely", "nscc"] {
            let params = CcParams::new();
            let mut cc = make(name, &params);
            let mut now: Nanos = 0;
            let mut delivered = 0u64;
            let mut ts = 0u64;
            for o in &ops {
                match *o {
                    Op::Sent(b) => {
                        let s = SentSample { bytes: b, ..SentSample::default() };
                        cc.on_sent(now, &s);
                    }
                    Op::Ack { bytes, ecn, q, tx, dt } => {
                        delivered += bytes;
                        ts += dt;
                        let h = [IntHop { node: 1, ts, tx_bytes: tx, qlen: q, rate_mbps: 100_000, ..IntHop::default() }];
                        cc.on_ack(now, &AckSample::new(bytes, delivered).with_ecn(ecn).with_int(&h).with_rtt(T + dt % 50_000));
                    }
                    Op::Cnp => cc.on_congestion(now, &CongestionEvent::Cnp),
                    Op::Loss => cc.on_congestion(now, &CongestionEvent::Loss { psn: 0, bytes: 4154 }),
                    Op::Timeout => cc.on_congestion(now, &CongestionEvent::Timeout),
                    Op::Time(dt) => {
                        now += dt;
                        if cc.next_timer().is_some_and(|t| t <= now) {
                            cc.on_timer(now);
                        }
                    }
                }
                let w = cc.window();
                let r = cc.pacing_rate();
                prop_assert!(w > 0 && w <= 10 * 250_000, "{name}: window {w}");
                prop_assert!(r > 0 && r <= LINE, "{name}: rate {r}");
                if let Some(t) = cc.next_timer() {
                    prop_assert!(t >= now || t + 10_000_000 >= now, "{name}: timer in the far past");
                }
            }
        }
    }
}
