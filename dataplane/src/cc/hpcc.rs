//! HPCC (Li et al., "HPCC: High Precision Congestion Control", SIGCOMM 2019),
//! Algorithm 1.
//!
//! Every ACK echoes the INT stack its data packet collected. For each hop, HPCC
//! estimates the link's normalized inflight from the queue and the transmit rate
//! between two INT samples of that link:
//!
//! `u_j = min(qlen, qlen_prev) / (B_j·T) + txRate_j / B_j`,
//! `txRate_j = (txBytes − txBytes_prev) / (ts − ts_prev)`
//!
//! smooths it over one base RTT T (`U ← (1 − τ/T)·U + (τ/T)·u`, τ the time between
//! the two samples), takes the most loaded hop, and sets the window (Algorithm 1,
//! ComputeWind):
//!
//! - `U ≥ η` or `incStage ≥ maxStage`: `W = W_c / (U/η) + W_AI` (multiplicative
//!   decrease toward the target utilization η),
//! - otherwise `W = W_c + W_AI` (additive increase),
//!
//! where the reference window `W_c` (and `incStage`) are updated once per RTT, on the
//! first ACK for data sent after the last update; other ACKs compute W from the same
//! `W_c` (the paper's per-ACK reaction without over-reacting). The rate is `W / T`.
//!
//! Two departures for sprayed traffic, where the paper assumes one path per flow:
//! the paper pairs the hops of consecutive ACKs by position; fablab keeps the last
//! sample per (switch, egress port), so packets of one flow on different paths each
//! compare against their own link's previous sample. And the paper smooths the
//! maximum over hops (`U ← EWMA(max_j u_j)`); fablab smooths each link and takes the
//! maximum (`U = max_j EWMA(u_j)`). On one path the two agree once the bottleneck is
//! stable; on a sprayed flow a link is sampled only every few packets, each raw
//! `u_j` is noisy, and the maximum of noisy estimates sits well above the true
//! utilization (measured: 8 sprayed flows held their links at 85% instead of 95%).

use super::{AckSample, CongestionControl, FlowContext};
use crate::packet::{IntHop, Nanos};

/// The paper's parameters (§5 and the authors' simulator configuration),
/// overridable as `[nic.cc_params]`.
pub mod defaults {
    /// Target utilization η (the paper's; the authors' results page later gives
    /// η = 0.99 with maxStage = 0 as HPCC's best setting: `nic.cc_params.eta`).
    pub const ETA: f64 = 0.95;
    /// Additive-increase stages before a forced multiplicative update (the paper's;
    /// 0 in the authors' later best setting: `nic.cc_params.max_stage`).
    pub const MAX_STAGE: f64 = 5.0;
    /// Additive increase as a rate, W_AI = rate_ai × T (the authors' RATE_AI, 50 Mb/s).
    pub const RATE_AI_MBPS: f64 = 50.0;
}

/// Links remembered per flow (a fat-tree path has 5 hops; sprayed flows touch a few
/// more).
const LINKS: usize = 32;

#[derive(Debug, Clone, Copy, Default)]
struct LinkSample {
    node: u32,
    port: u16,
    valid: bool,
    ts: Nanos,
    tx_bytes: u64,
    qlen: u32,
    /// This link's normalized inflight, smoothed over one base RTT.
    u: f64,
    estimated: bool,
}

#[derive(Debug, Clone)]
pub struct Hpcc {
    /// Base RTT T, ns.
    t: f64,
    eta: f64,
    max_stage: u32,
    w_ai: f64,
    w_init: f64,
    w: f64,
    wc: f64,
    u: f64,
    inc_stage: u32,
    /// Delivered-byte mark: the first ACK past it updates W_c (once per RTT).
    last_update: u64,
    links: [LinkSample; LINKS],
    next_slot: usize,
}

pub(super) fn factory(ctx: &FlowContext<'_>) -> Result<Box<dyn CongestionControl>, String> {
    ctx.check_params("hpcc", &["eta", "max_stage", "rate_ai_mbps"])?;
    let eta = ctx.param("eta", defaults::ETA);
    let max_stage = ctx.param("max_stage", defaults::MAX_STAGE);
    let rate_ai = ctx.param("rate_ai_mbps", defaults::RATE_AI_MBPS);
    if !(eta > 0.0 && eta <= 1.0 && max_stage >= 0.0 && rate_ai >= 0.0) {
        return Err(format!(
            "hpcc: need 0 < eta <= 1, max_stage >= 0, rate_ai_mbps >= 0; got {eta}, {max_stage}, {rate_ai}"
        ));
    }
    let t = ctx.base_rtt.max(1) as f64;
    // W_init = line rate × T: one bandwidth-delay product.
    let w_init = ctx.line_rate_bps as f64 / 8.0 * t / 1e9;
    Ok(Box::new(Hpcc {
        t,
        eta,
        max_stage: max_stage as u32,
        w_ai: rate_ai * 1e6 / 8.0 * t / 1e9,
        w_init,
        w: w_init,
        wc: w_init,
        u: 1.0,
        inc_stage: 0,
        last_update: 0,
        links: [LinkSample::default(); LINKS],
        next_slot: 0,
    }))
}

impl Hpcc {
    /// The normalized inflight U after folding in one ACK's INT stack (paper:
    /// MeasureInflight). Hops without a previous sample of their link only record.
    fn measure_inflight(&mut self, hops: &[IntHop]) -> Option<f64> {
        let mut worst: Option<f64> = None;
        for h in hops {
            let i = self.slot_of(h.node, h.out_port);
            // A recycled slot held another link: start this one afresh.
            let mut prev = self.links[i];
            if prev.node != h.node || prev.port != h.out_port {
                prev = LinkSample::default();
            }
            let mut next = LinkSample {
                node: h.node,
                port: h.out_port,
                valid: true,
                ts: h.ts,
                tx_bytes: h.tx_bytes,
                qlen: h.qlen,
                u: prev.u,
                estimated: prev.estimated,
            };
            if prev.valid && h.ts > prev.ts && h.rate_mbps > 0 {
                let b = f64::from(h.rate_mbps) * 1e6 / 8.0 / 1e9; // bytes per ns
                let tau = (h.ts - prev.ts) as f64;
                let tx_rate = h.tx_bytes.wrapping_sub(prev.tx_bytes) as f64 / tau;
                let u = f64::from(h.qlen.min(prev.qlen)) / (b * self.t) + tx_rate / b;
                // A link's first estimate starts its average.
                let w = if prev.estimated {
                    tau.min(self.t) / self.t
                } else {
                    1.0
                };
                next.u = (1.0 - w) * prev.u + w * u;
                next.estimated = true;
                worst = Some(worst.map_or(next.u, |x: f64| x.max(next.u)));
            }
            self.links[i] = next;
        }
        let u = worst?;
        self.u = u;
        Some(u)
    }

    fn slot_of(&mut self, node: u32, port: u16) -> usize {
        if let Some(i) = self
            .links
            .iter()
            .position(|l| l.valid && l.node == node && l.port == port)
        {
            return i;
        }
        let i = self.next_slot;
        self.next_slot = (self.next_slot + 1) % LINKS;
        i
    }

    /// ComputeWind of Algorithm 1. The window is kept between W_AI and the initial
    /// BDP (HPCC never needs more than line rate × T); the reference W_c is the
    /// clamped window, so a long idle stretch cannot wind it up beyond reach.
    fn compute_wind(&mut self, u: f64, update_wc: bool) -> f64 {
        let decrease = u >= self.eta || self.inc_stage >= self.max_stage;
        let w = if decrease {
            self.wc / (u / self.eta) + self.w_ai
        } else {
            self.wc + self.w_ai
        };
        let w = w.clamp(self.w_ai.max(1.0), self.w_init);
        if update_wc {
            self.inc_stage = if decrease { 0 } else { self.inc_stage + 1 };
            self.wc = w;
        }
        w
    }

    pub fn utilization(&self) -> f64 {
        self.u
    }
}

impl CongestionControl for Hpcc {
    fn on_ack(&mut self, _now: Nanos, s: &AckSample<'_>) {
        let Some(u) = self.measure_inflight(s.int) else {
            return;
        };
        // Once per RTT: the first ACK for data sent after the last update.
        let update = s.delivered > self.last_update;
        self.w = self.compute_wind(u, update);
        if update {
            self.last_update = s.delivered + s.inflight;
        }
    }

    fn window(&self) -> u64 {
        self.w as u64
    }

    fn pacing_rate(&self) -> u64 {
        // R = W / T.
        (self.w * 8.0 / self.t * 1e9) as u64
    }
}
