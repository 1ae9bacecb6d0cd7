//! Swift (Kumar et al., "Swift: Delay is Simple and Effective for Congestion Control
//! in the Datacenter", SIGCOMM 2020), Algorithm 1.
//!
//! The window (in packets) grows additively while the measured delay is below a
//! target and shrinks multiplicatively, in proportion to how far above it is, at
//! most once per RTT:
//!
//! - `delay < target`: `cwnd += ai / cwnd` per acked packet (`+= ai` when cwnd < 1);
//! - otherwise: `cwnd ← max(1 − β·(delay − target)/delay, 1 − max_mdf)·cwnd`.
//!
//! The target is `base_target + hops·h + fs_delay(cwnd)`: a fabric part that grows
//! with the path's hop count (fablab reads the hops from the echoed INT stack) and
//! the flow-scaling part, `fs_delay = clamp(α/√cwnd + β', 0, fs_range)` with α and
//! β' chosen so that fs_delay is `fs_range` at `fs_min_cwnd` and 0 at `fs_max_cwnd`
//! (§3.5), which lets many flows share a bottleneck with small windows.
//!
//! fablab's hosts add no endpoint delay, so Swift's endpoint part (NIC/host queueing)
//! is zero and the whole RTT is fabric delay. The paper's targets are for its
//! fabrics' base delays; fablab's default base target is the scenario's base RTT plus
//! 25%, and every parameter can be set in `[nic.cc_params]`. A window below one
//! packet is enforced by pacing (`rate = cwnd·MTU / RTT`).

use super::{AckSample, CongestionControl, CongestionEvent, FlowContext};
use crate::packet::Nanos;

/// The paper's parameters, overridable as `[nic.cc_params]`.
pub mod defaults {
    /// Additive increment per RTT, packets.
    pub const AI: f64 = 1.0;
    /// Multiplicative-decrease gain β.
    pub const BETA: f64 = 0.8;
    /// Largest multiplicative decrease in one step.
    pub const MAX_MDF: f64 = 0.5;
    /// Per-hop target scaling h, ns.
    pub const HOP_SCALE_NS: f64 = 1_000.0;
    /// Flow-scaling range, as a multiple of the base target.
    pub const FS_RANGE_FACTOR: f64 = 5.0;
    /// Flow scaling is full at this window (packets)...
    pub const FS_MIN_CWND: f64 = 0.1;
    /// ...and zero at this one.
    pub const FS_MAX_CWND: f64 = 100.0;
    /// Smallest window, packets.
    pub const MIN_CWND: f64 = 0.01;
}

#[derive(Debug, Clone)]
pub struct Swift {
    cwnd: f64,
    max_cwnd: f64,
    mtu: f64,
    ai: f64,
    beta: f64,
    max_mdf: f64,
    base_target: f64,
    hop_scale: f64,
    fs_range: f64,
    fs_alpha: f64,
    fs_beta: f64,
    rtt: f64,
    line: u64,
    last_decrease: Option<Nanos>,
}

pub(super) fn factory(ctx: &FlowContext<'_>) -> Result<Box<dyn CongestionControl>, String> {
    ctx.check_params(
        "swift",
        &[
            "ai",
            "beta",
            "max_mdf",
            "base_target_us",
            "hop_scale_ns",
            "fs_range_us",
            "fs_min_cwnd",
            "fs_max_cwnd",
        ],
    )?;
    let base_rtt = ctx.base_rtt.max(1) as f64;
    let base_target = ctx.param("base_target_us", base_rtt * 1.25 / 1e3) * 1e3;
    let fs_range = ctx.param("fs_range_us", defaults::FS_RANGE_FACTOR * base_target / 1e3) * 1e3;
    let fs_min = ctx.param("fs_min_cwnd", defaults::FS_MIN_CWND);
    let fs_max = ctx.param("fs_max_cwnd", defaults::FS_MAX_CWND);
    let beta = ctx.param("beta", defaults::BETA);
    let max_mdf = ctx.param("max_mdf", defaults::MAX_MDF);
    if !(base_target > 0.0
        && fs_range >= 0.0
        && fs_min > 0.0
        && fs_max > fs_min
        && beta > 0.0
        && max_mdf > 0.0
        && max_mdf < 1.0)
    {
        return Err("swift: need base_target_us > 0, fs_range_us >= 0, 0 < fs_min_cwnd < fs_max_cwnd, beta > 0, 0 < max_mdf < 1".into());
    }
    let fs_alpha = fs_range / (1.0 / fs_min.sqrt() - 1.0 / fs_max.sqrt());
    let mtu = f64::from(ctx.mtu);
    let max_cwnd = (ctx.init_window as f64 / mtu).max(1.0);
    Ok(Box::new(Swift {
        cwnd: max_cwnd,
        max_cwnd,
        mtu,
        ai: ctx.param("ai", defaults::AI),
        beta,
        max_mdf,
        base_target,
        hop_scale: ctx.param("hop_scale_ns", defaults::HOP_SCALE_NS),
        fs_range,
        fs_alpha,
        fs_beta: -fs_alpha / fs_max.sqrt(),
        rtt: base_rtt,
        line: ctx.line_rate_bps,
        last_decrease: None,
    }))
}

impl Swift {
    /// The delay target for a path of `hops` switches at the current window, ns.
    pub fn target(&self, hops: usize) -> f64 {
        let fs = (self.fs_alpha / self.cwnd.sqrt() + self.fs_beta).clamp(0.0, self.fs_range);
        self.base_target + hops as f64 * self.hop_scale + fs
    }

    pub fn cwnd_packets(&self) -> f64 {
        self.cwnd
    }

    fn can_decrease(&self, now: Nanos) -> bool {
        self.last_decrease
            .is_none_or(|t| now.saturating_sub(t) as f64 >= self.rtt)
    }

    fn clamp(&mut self) {
        self.cwnd = self.cwnd.clamp(defaults::MIN_CWND, self.max_cwnd);
    }
}

impl CongestionControl for Swift {
    fn on_ack(&mut self, now: Nanos, s: &AckSample<'_>) {
        let Some(rtt) = s.rtt else {
            return;
        };
        let delay = rtt as f64;
        self.rtt = delay;
        let acked = s.acked_bytes as f64 / self.mtu;
        let target = self.target(s.int.len());
        if delay < target {
            if self.cwnd >= 1.0 {
                self.cwnd += self.ai / self.cwnd * acked;
            } else {
                self.cwnd += self.ai * acked;
            }
        } else if self.can_decrease(now) {
            let factor = (1.0 - self.beta * (delay - target) / delay).max(1.0 - self.max_mdf);
            self.cwnd *= factor;
            self.last_decrease = Some(now);
        }
        self.clamp();
    }

    fn on_congestion(&mut self, now: Nanos, e: &CongestionEvent) {
        match e {
            CongestionEvent::Loss { .. } if self.can_decrease(now) => {
                self.cwnd *= 1.0 - self.max_mdf;
                self.last_decrease = Some(now);
            }
            CongestionEvent::Timeout => self.cwnd = defaults::MIN_CWND.max(1.0).min(self.cwnd),
            _ => {}
        }
        self.clamp();
    }

    fn window(&self) -> u64 {
        // Below one packet the window is one packet and pacing spreads them out.
        (self.cwnd.max(1.0) * self.mtu) as u64
    }

    fn pacing_rate(&self) -> u64 {
        if self.cwnd >= 1.0 {
            self.line
        } else {
            ((self.cwnd * self.mtu * 8.0 / self.rtt.max(1.0) * 1e9) as u64).clamp(1, self.line)
        }
    }

    fn wants_telemetry(&self) -> bool {
        false
    }
}
