//! TIMELY (Mittal et al., "TIMELY: RTT-based Congestion Control for the Datacenter",
//! SIGCOMM 2015), Algorithm 1: a rate-based controller driven by the RTT gradient.
//!
//! Per RTT sample:
//! `rtt_diff ← (1 − α)·rtt_diff + α·(rtt − prev_rtt)`, `g = rtt_diff / min_rtt`, then
//!
//! - `rtt < T_low`: `R ← R + δ`;
//! - `rtt > T_high`: `R ← R·(1 − β·(1 − T_high/rtt))`;
//! - `g ≤ 0`: `R ← R + N·δ`, N = 5 after five consecutive non-positive gradients
//!   (hyperactive increase), else 1;
//! - otherwise: `R ← R·(1 − β·g)` (fablab caps g at 1, so one step cuts by at most β).
//!
//! The paper updates once per completion of a 16–64 KB segment; fablab updates at
//! most once per minimum RTT. The paper's thresholds (T_low 50 µs, T_high 500 µs) are
//! for its 10 Gb/s fabric; fablab's defaults scale them to the scenario's base RTT
//! (1.2× and 5×), and `[nic.cc_params]` can set them.

use super::{AckSample, CongestionControl, FlowContext};
use crate::packet::Nanos;

/// The paper's parameters, overridable as `[nic.cc_params]`.
pub mod defaults {
    /// EWMA weight α of the RTT difference.
    pub const ALPHA: f64 = 0.875;
    /// Multiplicative decrease factor β.
    pub const BETA: f64 = 0.8;
    /// Additive step δ, Mb/s (paper: 10 Mb/s at 10 Gb/s; scaled ×10 for 100 Gb/s).
    pub const DELTA_MBPS: f64 = 100.0;
    /// Consecutive non-positive gradients before hyperactive increase.
    pub const HAI_THRESHOLD: u32 = 5;
    /// T_low and T_high as multiples of the base RTT.
    pub const T_LOW_FACTOR: f64 = 1.2;
    pub const T_HIGH_FACTOR: f64 = 5.0;
    /// Lowest rate, Mb/s.
    pub const MIN_RATE_MBPS: f64 = 100.0;
}

#[derive(Debug, Clone)]
pub struct Timely {
    rate: f64,
    line: f64,
    min_rate: f64,
    alpha: f64,
    beta: f64,
    delta: f64,
    t_low: f64,
    t_high: f64,
    prev_rtt: Option<f64>,
    rtt_diff: f64,
    negatives: u32,
    next_update: Nanos,
    window: u64,
}

pub(super) fn factory(ctx: &FlowContext<'_>) -> Result<Box<dyn CongestionControl>, String> {
    ctx.check_params(
        "timely",
        &["alpha", "beta", "delta_mbps", "t_low_us", "t_high_us"],
    )?;
    let base = ctx.base_rtt.max(1) as f64;
    let t_low = ctx.param("t_low_us", base * defaults::T_LOW_FACTOR / 1e3) * 1e3;
    let t_high = ctx.param("t_high_us", base * defaults::T_HIGH_FACTOR / 1e3) * 1e3;
    let alpha = ctx.param("alpha", defaults::ALPHA);
    let beta = ctx.param("beta", defaults::BETA);
    if !(t_low > 0.0 && t_high > t_low && alpha > 0.0 && alpha <= 1.0 && beta > 0.0 && beta < 1.0) {
        return Err("timely: need 0 < t_low_us < t_high_us, 0 < alpha <= 1, 0 < beta < 1".into());
    }
    let line = ctx.line_rate_bps as f64;
    Ok(Box::new(Timely {
        rate: line,
        line,
        min_rate: defaults::MIN_RATE_MBPS * 1e6,
        alpha,
        beta,
        delta: ctx.param("delta_mbps", defaults::DELTA_MBPS) * 1e6,
        t_low,
        t_high,
        prev_rtt: None,
        rtt_diff: 0.0,
        negatives: 0,
        next_update: 0,
        window: 2 * ctx.init_window.max(u64::from(ctx.mtu)),
    }))
}

impl Timely {
    pub fn rate_bps(&self) -> f64 {
        self.rate
    }
}

impl CongestionControl for Timely {
    fn on_ack(&mut self, now: Nanos, s: &AckSample<'_>) {
        let Some(rtt) = s.rtt else {
            return;
        };
        if now < self.next_update {
            return;
        }
        self.next_update = now + s.min_rtt;
        let rtt = rtt as f64;
        let Some(prev) = self.prev_rtt.replace(rtt) else {
            return;
        };
        self.rtt_diff = (1.0 - self.alpha) * self.rtt_diff + self.alpha * (rtt - prev);
        let gradient = self.rtt_diff / (s.min_rtt.max(1) as f64);
        if rtt < self.t_low {
            self.rate += self.delta;
            self.negatives = 0;
        } else if rtt > self.t_high {
            self.rate *= 1.0 - self.beta * (1.0 - self.t_high / rtt);
            self.negatives = 0;
        } else if gradient <= 0.0 {
            self.negatives += 1;
            let n = if self.negatives >= defaults::HAI_THRESHOLD {
                5.0
            } else {
                1.0
            };
            self.rate += n * self.delta;
        } else {
            self.rate *= 1.0 - self.beta * gradient.min(1.0);
            self.negatives = 0;
        }
        self.rate = self.rate.clamp(self.min_rate, self.line);
    }

    fn window(&self) -> u64 {
        self.window
    }

    fn pacing_rate(&self) -> u64 {
        self.rate as u64
    }

    fn wants_telemetry(&self) -> bool {
        false
    }
}
