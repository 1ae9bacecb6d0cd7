//! NSCC: a sender-based congestion control in the style of Ultra Ethernet's
//! Network-Signal-based CC, which reads delay and ECN together.
//!
//! What this follows: the idea of UEC's NSCC as publicly described, a window-based
//! sender algorithm that classifies each ACK by two signals, ECN-Echo and whether the
//! RTT is above a target delay, into four quadrants and reacts differently in each.
//! fablab did not have the specification text at hand: the exact update formulas and
//! constants below are fablab's choices (named in [`defaults`]), not the
//! specification's, and results should be read as "an NSCC-like algorithm".
//!
//! | ECN | delay vs target | meaning | reaction |
//! |---|---|---|---|
//! | no | below | spare capacity | proportional increase: `W += α·(target − rtt)/target · acked·MSS/W` |
//! | no | above | queueing that is not (yet) marking | fair increase: `W += η · acked·MSS/W` |
//! | yes | below | a transient mark, or another path's congestion under spraying | no change |
//! | yes | above | persistent congestion | multiplicative decrease, at most once per RTT: `W ← W·(1 − γ·(rtt − target)/rtt)`, at most halving |
//!
//! The "no change" quadrant is what makes it suitable for sprayed traffic: a single
//! path marking ECN while the flow's delay is low should not halve the whole flow.
//! Losses halve the window; a timeout drops it to one packet. The target is the base
//! RTT plus a configurable margin.

use super::{AckSample, CongestionControl, CongestionEvent, FlowContext};
use crate::packet::Nanos;

/// fablab's choices, overridable as `[nic.cc_params]`.
pub mod defaults {
    /// Target delay above the base RTT, as a fraction of the base RTT.
    pub const TARGET_MARGIN: f64 = 0.5;
    /// Proportional-increase gain α, MSS per window at zero delay.
    pub const ALPHA: f64 = 4.0;
    /// Fair-increase gain η, MSS per window.
    pub const ETA: f64 = 0.25;
    /// Multiplicative-decrease gain γ.
    pub const GAMMA: f64 = 0.8;
}

#[derive(Debug, Clone)]
pub struct Nscc {
    w: f64,
    max_w: f64,
    mss: f64,
    target: f64,
    alpha: f64,
    eta: f64,
    gamma: f64,
    rate: u64,
    hold_until: u64,
}

pub(super) fn factory(ctx: &FlowContext<'_>) -> Result<Box<dyn CongestionControl>, String> {
    ctx.check_params("nscc", &["target_margin", "alpha", "eta", "gamma"])?;
    let margin = ctx.param("target_margin", defaults::TARGET_MARGIN);
    let gamma = ctx.param("gamma", defaults::GAMMA);
    let alpha = ctx.param("alpha", defaults::ALPHA);
    let eta = ctx.param("eta", defaults::ETA);
    if !(margin >= 0.0 && gamma > 0.0 && gamma <= 1.0 && alpha >= 0.0 && eta >= 0.0) {
        return Err("nscc: need target_margin >= 0, 0 < gamma <= 1, alpha >= 0, eta >= 0".into());
    }
    let mss = f64::from(ctx.mtu);
    let max_w = (ctx.init_window as f64).max(mss);
    Ok(Box::new(Nscc {
        w: max_w,
        max_w,
        mss,
        target: ctx.base_rtt as f64 * (1.0 + margin),
        alpha,
        eta,
        gamma,
        rate: ctx.line_rate_bps,
        hold_until: 0,
    }))
}

impl Nscc {
    pub fn target_ns(&self) -> f64 {
        self.target
    }
}

impl CongestionControl for Nscc {
    fn on_ack(&mut self, _now: Nanos, s: &AckSample<'_>) {
        let Some(rtt) = s.rtt else {
            return;
        };
        let rtt = rtt as f64;
        let acked = s.acked_bytes as f64;
        match (s.ecn_echo, rtt > self.target) {
            (false, false) => {
                self.w +=
                    self.alpha * (self.target - rtt) / self.target * acked * self.mss / self.w;
            }
            (false, true) => self.w += self.eta * acked * self.mss / self.w,
            (true, false) => {}
            (true, true) => {
                if s.delivered >= self.hold_until {
                    let f = (self.gamma * (rtt - self.target) / rtt).min(0.5);
                    self.w *= 1.0 - f;
                    self.hold_until = s.delivered + s.inflight;
                }
            }
        }
        self.w = self.w.clamp(self.mss, self.max_w);
    }

    fn on_congestion(&mut self, _now: Nanos, e: &CongestionEvent) {
        match e {
            CongestionEvent::Loss { .. } => self.w = (self.w / 2.0).max(self.mss),
            CongestionEvent::Timeout => self.w = self.mss,
            _ => {}
        }
    }

    fn window(&self) -> u64 {
        self.w as u64
    }

    fn pacing_rate(&self) -> u64 {
        self.rate
    }

    fn wants_telemetry(&self) -> bool {
        false
    }
}
