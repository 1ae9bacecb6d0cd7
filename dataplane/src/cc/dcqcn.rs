//! DCQCN (Zhu et al., "Congestion Control for Large-Scale RDMA Deployments",
//! SIGCOMM 2015), the reaction point (RP) at the sender. Switches mark ECN with RED
//! (the congestion point, `switch/`); the receiving NIC (the notification point)
//! turns CE marks into at most one CNP per flow per 50 µs (`nic/`).
//!
//! On a CNP (paper §3.2, Fig. 6):
//! `R_T ← R_C`, `R_C ← R_C·(1 − α/2)`, `α ← (1 − g)·α + g`, and the increase
//! counters restart. Without a CNP for `K` µs, `α ← (1 − g)·α`. The rate increases
//! on two events, a timer every `T` µs and a byte counter every `B` bytes; after
//! `F` such events in fast recovery (`R_C ← (R_T + R_C)/2`) comes additive increase
//! (`R_T ← R_T + R_AI`, then average) and, once both counters passed `F`, hyper
//! increase (`R_T ← R_T + i·R_HAI`).
//!
//! DCQCN is rate-based: its window is only a safety cap (twice the initial window).

use super::{AckSample, CongestionControl, CongestionEvent, FlowContext, SentSample};
use crate::packet::Nanos;

/// The paper's parameters, overridable as `[nic.cc_params]`.
pub mod defaults {
    /// EWMA gain g for α (paper: 1/256).
    pub const G: f64 = 1.0 / 256.0;
    /// α decay period K, µs (paper: 55 µs).
    pub const ALPHA_TIMER_US: f64 = 55.0;
    /// Rate-increase timer T, µs (paper: 55 µs).
    pub const INCREASE_TIMER_US: f64 = 55.0;
    /// Rate-increase byte counter B (paper: 10 MB).
    pub const BYTE_COUNTER: f64 = 10.0 * 1024.0 * 1024.0;
    /// Fast-recovery steps F (paper: 5).
    pub const F: f64 = 5.0;
    /// Additive increase R_AI, Mb/s (paper: 40 Mb/s).
    pub const RATE_AI_MBPS: f64 = 40.0;
    /// Hyper increase R_HAI, Mb/s (the authors' simulations use 10 × R_AI).
    pub const RATE_HAI_MBPS: f64 = 400.0;
    /// Lowest rate, Mb/s.
    pub const MIN_RATE_MBPS: f64 = 100.0;
}

#[derive(Debug, Clone)]
pub struct Dcqcn {
    line: f64,
    rc: f64,
    rt: f64,
    alpha: f64,
    g: f64,
    alpha_period: Nanos,
    increase_period: Nanos,
    byte_counter: u64,
    f: u32,
    r_ai: f64,
    r_hai: f64,
    min_rate: f64,
    window: u64,
    /// Timer events and byte-counter events since the last CNP.
    timer_events: u32,
    byte_events: u32,
    bytes_since: u64,
    next_alpha: Option<Nanos>,
    next_increase: Option<Nanos>,
}

pub(super) fn factory(ctx: &FlowContext<'_>) -> Result<Box<dyn CongestionControl>, String> {
    ctx.check_params(
        "dcqcn",
        &[
            "g",
            "alpha_timer_us",
            "increase_timer_us",
            "byte_counter",
            "f",
            "rate_ai_mbps",
            "rate_hai_mbps",
            "min_rate_mbps",
        ],
    )?;
    let p = |k: &str, d: f64| ctx.param(k, d);
    let g = p("g", defaults::G);
    let values = [
        p("alpha_timer_us", defaults::ALPHA_TIMER_US),
        p("increase_timer_us", defaults::INCREASE_TIMER_US),
        p("byte_counter", defaults::BYTE_COUNTER),
    ];
    if !(g > 0.0 && g <= 1.0 && values.iter().all(|v| *v > 0.0 && v.is_finite())) {
        return Err("dcqcn: g must be in (0, 1] and timers and the byte counter positive".into());
    }
    let line = ctx.line_rate_bps as f64;
    Ok(Box::new(Dcqcn {
        line,
        rc: line,
        rt: line,
        alpha: 1.0,
        g,
        alpha_period: (values[0] * 1e3) as Nanos,
        increase_period: (values[1] * 1e3) as Nanos,
        byte_counter: values[2] as u64,
        f: p("f", defaults::F).max(1.0) as u32,
        r_ai: p("rate_ai_mbps", defaults::RATE_AI_MBPS) * 1e6,
        r_hai: p("rate_hai_mbps", defaults::RATE_HAI_MBPS) * 1e6,
        min_rate: p("min_rate_mbps", defaults::MIN_RATE_MBPS) * 1e6,
        window: 2 * ctx.init_window.max(u64::from(ctx.mtu)),
        timer_events: 0,
        byte_events: 0,
        bytes_since: 0,
        next_alpha: None,
        next_increase: None,
    }))
}

impl Dcqcn {
    pub fn rate_bps(&self) -> f64 {
        self.rc
    }
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// One rate-increase event (the counters already include it): fast recovery for
    /// the first F events of both kinds, hyper increase once both counters passed F,
    /// additive increase in between (paper §3.2).
    fn increase(&mut self) {
        let lo = self.timer_events.min(self.byte_events);
        let hi = self.timer_events.max(self.byte_events);
        if hi <= self.f {
            // Fast recovery: only move halfway back to the target.
        } else if lo > self.f {
            self.rt = (self.rt + f64::from(lo - self.f) * self.r_hai).min(self.line);
        } else {
            self.rt = (self.rt + self.r_ai).min(self.line);
        }
        self.rc = ((self.rt + self.rc) / 2.0).min(self.line);
    }
}

impl CongestionControl for Dcqcn {
    fn on_sent(&mut self, now: Nanos, s: &SentSample) {
        if self.next_alpha.is_none() {
            self.next_alpha = Some(now + self.alpha_period);
        }
        if self.rc < self.line {
            self.bytes_since += u64::from(s.bytes);
            if self.bytes_since >= self.byte_counter {
                self.bytes_since = 0;
                self.byte_events += 1;
                self.increase();
            }
        }
    }

    fn on_ack(&mut self, _now: Nanos, _s: &AckSample<'_>) {}

    fn on_congestion(&mut self, now: Nanos, e: &CongestionEvent) {
        if let CongestionEvent::Cnp = e {
            self.rt = self.rc;
            self.rc = (self.rc * (1.0 - self.alpha / 2.0)).max(self.min_rate);
            self.alpha = (1.0 - self.g) * self.alpha + self.g;
            self.timer_events = 0;
            self.byte_events = 0;
            self.bytes_since = 0;
            self.next_alpha = Some(now + self.alpha_period);
            self.next_increase = Some(now + self.increase_period);
        }
    }

    fn on_timer(&mut self, now: Nanos) {
        if self.next_alpha.is_some_and(|t| t <= now) {
            self.alpha *= 1.0 - self.g;
            self.next_alpha = Some(now + self.alpha_period);
        }
        if self.next_increase.is_some_and(|t| t <= now) {
            self.timer_events += 1;
            self.increase();
            self.next_increase = (self.rc < self.line).then_some(now + self.increase_period);
        }
    }

    fn next_timer(&self) -> Option<Nanos> {
        match (self.next_alpha, self.next_increase) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn window(&self) -> u64 {
        self.window
    }

    fn pacing_rate(&self) -> u64 {
        self.rc as u64
    }

    fn wants_telemetry(&self) -> bool {
        false
    }
}
