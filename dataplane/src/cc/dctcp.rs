//! DCTCP (Alizadeh et al., "Data Center TCP (DCTCP)", SIGCOMM 2010; RFC 8257).
//!
//! The sender keeps α, an estimate of the fraction of bytes that see congestion:
//! once per window of data, `α ← (1 − g)·α + g·F` with F the fraction of acked bytes
//! that carried ECN-Echo (RFC 8257 §3.3). In a window in which marks arrived the
//! window shrinks once, `cwnd ← cwnd·(1 − α/2)` (§3.4); otherwise it grows by one
//! MSS per window (congestion avoidance). A loss halves the window; a timeout drops
//! it to one MSS. fablab's NICs pace at line rate and let the window limit the flow.

use super::{AckSample, CongestionControl, CongestionEvent, FlowContext};
use crate::packet::Nanos;

/// The paper's parameters, overridable as `[nic.cc_params]`.
pub mod defaults {
    /// EWMA gain g (RFC 8257 §4.2 recommends 1/16).
    pub const G: f64 = 1.0 / 16.0;
    /// Initial α (RFC 8257 §3.3: 1, i.e. assume congestion until measured).
    pub const ALPHA_INIT: f64 = 1.0;
}

#[derive(Debug, Clone)]
pub struct Dctcp {
    cwnd: f64,
    min_cwnd: f64,
    max_cwnd: f64,
    mss: f64,
    alpha: f64,
    g: f64,
    rate: u64,
    /// Bytes acked and bytes acked with ECN-Echo in the current observation window.
    acked: u64,
    marked: u64,
    /// The observation window ends when this many bytes have been delivered.
    window_end: u64,
    /// Whether the window was already reduced in this observation window.
    reduced: bool,
}

pub(super) fn factory(ctx: &FlowContext<'_>) -> Result<Box<dyn CongestionControl>, String> {
    ctx.check_params("dctcp", &["g", "alpha_init", "init_window_bytes"])?;
    let g = ctx.param("g", defaults::G);
    let alpha = ctx.param("alpha_init", defaults::ALPHA_INIT);
    if !(g > 0.0 && g <= 1.0 && (0.0..=1.0).contains(&alpha)) {
        return Err(format!(
            "dctcp: need 0 < g <= 1 and 0 <= alpha_init <= 1, got g = {g}, alpha_init = {alpha}"
        ));
    }
    let mss = f64::from(ctx.mtu);
    let init = ctx
        .param("init_window_bytes", ctx.init_window as f64)
        .max(mss);
    Ok(Box::new(Dctcp {
        cwnd: init,
        min_cwnd: mss,
        max_cwnd: init.max(mss) * 4.0,
        mss,
        alpha,
        g,
        rate: ctx.line_rate_bps,
        acked: 0,
        marked: 0,
        window_end: init as u64,
        reduced: false,
    }))
}

impl Dctcp {
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
}

impl CongestionControl for Dctcp {
    fn on_ack(&mut self, _now: Nanos, s: &AckSample<'_>) {
        self.acked += s.acked_bytes;
        if s.ecn_echo {
            self.marked += s.acked_bytes;
            if !self.reduced {
                // RFC 8257 §3.4: reduce once per window, with the α of the last window.
                self.cwnd = (self.cwnd * (1.0 - self.alpha / 2.0)).max(self.min_cwnd);
                self.reduced = true;
            }
        } else if !self.reduced {
            // Congestion avoidance: one MSS per window's worth of acked bytes.
            self.cwnd =
                (self.cwnd + self.mss * s.acked_bytes as f64 / self.cwnd).min(self.max_cwnd);
        }
        if s.delivered >= self.window_end {
            let f = if self.acked > 0 {
                self.marked as f64 / self.acked as f64
            } else {
                0.0
            };
            self.alpha = (1.0 - self.g) * self.alpha + self.g * f;
            self.acked = 0;
            self.marked = 0;
            self.reduced = false;
            self.window_end = s.delivered + self.cwnd as u64;
        }
    }

    fn on_congestion(&mut self, _now: Nanos, e: &CongestionEvent) {
        match e {
            CongestionEvent::Loss { .. } if !self.reduced => {
                self.cwnd = (self.cwnd / 2.0).max(self.min_cwnd);
                self.reduced = true;
            }
            CongestionEvent::Timeout => self.cwnd = self.min_cwnd,
            _ => {}
        }
    }

    fn window(&self) -> u64 {
        self.cwnd as u64
    }

    fn pacing_rate(&self) -> u64 {
        self.rate
    }

    fn wants_telemetry(&self) -> bool {
        false
    }
}
