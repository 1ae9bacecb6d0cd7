//! AIMD on INT: grow the window by one packet per round trip while every hop's queue
//! is below a threshold; shrink it by a factor β, at most once per round trip, when
//! any hop reports a deeper queue.

use fablab_dataplane::cc::{AckSample, CongestionControl, CongestionEvent, FlowContext};
use fablab_dataplane::packet::Nanos;

#[derive(Debug)]
pub struct AimdInt {
    window: f64,
    mss: f64,
    max_window: f64,
    beta: f64,
    threshold: f64,
    rate: u64,
    /// Delivered bytes after which the next decrease is allowed (once per RTT).
    hold_until: u64,
}

/// Creates one flow's controller; `[nic.cc_params]` may set `beta` and
/// `queue_threshold_bytes`.
pub fn factory(ctx: &FlowContext<'_>) -> Result<Box<dyn CongestionControl>, String> {
    ctx.check_params("aimd-int", &["beta", "queue_threshold_bytes"])?;
    let beta = ctx.param("beta", 0.5);
    let threshold = ctx.param("queue_threshold_bytes", 20_000.0);
    if !(beta > 0.0 && beta < 1.0) {
        return Err(format!("aimd-int: beta = {beta} must be in (0, 1)"));
    }
    Ok(Box::new(AimdInt {
        window: ctx.init_window as f64,
        mss: f64::from(ctx.mtu),
        max_window: ctx.init_window as f64,
        beta,
        threshold,
        rate: ctx.line_rate_bps,
        hold_until: 0,
    }))
}

impl CongestionControl for AimdInt {
    fn on_ack(&mut self, _now: Nanos, ack: &AckSample<'_>) {
        let deepest = ack.int.iter().map(|hop| hop.qlen).max().unwrap_or(0);
        if f64::from(deepest) > self.threshold {
            if ack.delivered >= self.hold_until {
                self.window = (self.window * (1.0 - self.beta)).max(self.mss);
                self.hold_until = ack.delivered + ack.inflight;
            }
        } else {
            // One MSS per window's worth of acknowledged bytes.
            self.window += self.mss * ack.acked_bytes as f64 / self.window;
            self.window = self.window.min(self.max_window);
        }
    }

    fn on_congestion(&mut self, _now: Nanos, event: &CongestionEvent) {
        if let CongestionEvent::Timeout = event {
            self.window = self.mss;
        }
    }

    fn window(&self) -> u64 {
        self.window as u64
    }

    fn pacing_rate(&self) -> u64 {
        self.rate
    }
}
