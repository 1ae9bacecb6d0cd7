//! The congestion-control seam: one [`CongestionControl`] object per flow, driven by
//! events, read through [`window`](CongestionControl::window) and
//! [`pacing_rate`](CongestionControl::pacing_rate), created by name from a
//! [`Registry`].
//!
//! Measurements arrive in `#[non_exhaustive]` structs (as Linux's `rate_sample`, and
//! unlike quinn's positional arguments) so that adding a field never breaks an
//! algorithm. An algorithm must never read a clock or a global random generator: time
//! is the `now` argument.

pub mod dcqcn;
pub mod dctcp;
pub mod hpcc;
mod none;
pub mod nscc;
pub mod swift;
pub mod timely;

use std::collections::BTreeMap;
use std::fmt;

pub use none::NoCc;

use crate::packet::{FlowId, IntHop, Nanos};

/// A packet left the NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SentSample {
    /// 24-bit PSN.
    pub psn: u32,
    /// Bytes on the wire.
    pub bytes: u32,
    /// Bytes in flight after this packet, this one included.
    pub inflight: u64,
    /// UDP source port the packet carried.
    pub entropy: u16,
    pub retransmit: bool,
}

/// An acknowledgement arrived for a data packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct AckSample<'a> {
    /// Round-trip time of the acked packet; `None` when it was retransmitted (Karn).
    pub rtt: Option<Nanos>,
    /// Smallest RTT this flow has seen.
    pub min_rtt: Nanos,
    /// Payload bytes newly acknowledged (cumulatively or selectively) by this ACK.
    pub acked_bytes: u64,
    /// The acked packet arrived with ECN CE.
    pub ecn_echo: bool,
    /// INT hops the acked packet collected, first hop first.
    pub int: &'a [IntHop],
    /// Entropy (UDP source port, i.e. path) of the acked packet.
    pub entropy: u16,
    /// 24-bit PSN of the acked packet.
    pub acked_psn: u32,
    /// Next PSN the receiver expects.
    pub cumulative_psn: u32,
    /// Bytes in flight after this ACK.
    pub inflight: u64,
    /// Payload bytes of this flow acknowledged so far.
    pub delivered: u64,
}

impl<'a> AckSample<'a> {
    /// A sample for tests and tools outside this crate (the struct is
    /// `#[non_exhaustive]`): set fields with the `with_*` methods.
    pub fn new(acked_bytes: u64, delivered: u64) -> AckSample<'a> {
        AckSample {
            acked_bytes,
            delivered,
            ..AckSample::default()
        }
    }
    pub fn with_rtt(mut self, rtt: Nanos) -> Self {
        self.rtt = Some(rtt);
        self.min_rtt = if self.min_rtt == 0 {
            rtt
        } else {
            self.min_rtt.min(rtt)
        };
        self
    }
    pub fn with_min_rtt(mut self, min_rtt: Nanos) -> Self {
        self.min_rtt = min_rtt;
        self
    }
    pub fn with_ecn(mut self, ecn_echo: bool) -> Self {
        self.ecn_echo = ecn_echo;
        self
    }
    pub fn with_int(mut self, int: &'a [IntHop]) -> Self {
        self.int = int;
        self
    }
    pub fn with_inflight(mut self, inflight: u64) -> Self {
        self.inflight = inflight;
        self
    }
}

/// Something went wrong on the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CongestionEvent {
    /// A RoCEv2 CNP arrived (DCQCN's reaction point).
    Cnp,
    /// A packet was declared lost (a trim NACK, RACK, or its own timeout). The
    /// sender reports at most one loss per round trip (a recovery episode, as TCP
    /// has): losses of packets sent before the previous reported loss are not
    /// reported again.
    Loss { psn: u32, bytes: u32 },
    /// The retransmission timer fired: everything in flight is presumed lost.
    Timeout,
    /// The receiver could not buffer a packet (beyond its reorder window).
    Nack { psn: u32 },
}

/// Per-flow congestion control.
pub trait CongestionControl: fmt::Debug + Send {
    /// A packet was sent.
    fn on_sent(&mut self, _now: Nanos, _sample: &SentSample) {}
    /// An ACK echoed the INT stack its data packet collected (first hop first).
    /// Called before [`on_ack`](Self::on_ack), which carries the same hops in
    /// `AckSample::int`; implement whichever reads better.
    fn on_telemetry(&mut self, _now: Nanos, _hops: &[IntHop]) {}
    /// An ACK for a data packet arrived.
    fn on_ack(&mut self, now: Nanos, sample: &AckSample<'_>);
    /// A congestion signal other than an ACK arrived.
    fn on_congestion(&mut self, _now: Nanos, _event: &CongestionEvent) {}
    /// The timer from [`next_timer`](Self::next_timer) expired. Spurious calls are
    /// allowed and must be harmless.
    fn on_timer(&mut self, _now: Nanos) {}
    /// When the algorithm wants [`on_timer`](Self::on_timer) called.
    fn next_timer(&self) -> Option<Nanos> {
        None
    }
    /// Bytes the flow may have in flight.
    fn window(&self) -> u64;
    /// Bits per second the flow may send at.
    fn pacing_rate(&self) -> u64;
    /// Whether this algorithm reads INT ([`on_telemetry`](Self::on_telemetry),
    /// `AckSample::int`). With the scenario's `nic.int = "auto"` (the default) a
    /// flow's data packets ask the switches for INT only when its algorithm says yes
    /// here, since every hop's metadata costs 32 bytes on the wire, twice (in the
    /// data packet and echoed in its ACK). The default says yes, so an algorithm that
    /// reads INT and forgets this method still gets it; say no if you never read it.
    fn wants_telemetry(&self) -> bool {
        true
    }
}

/// Numeric parameters from the scenario's `[nic.cc_params]`.
pub type CcParams = BTreeMap<String, f64>;

/// What an algorithm knows about its flow when it is created.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct FlowContext<'a> {
    pub flow: FlowId,
    /// The NIC's line rate, bits per second.
    pub line_rate_bps: u64,
    /// Round-trip time of an empty path, nanoseconds.
    pub base_rtt: Nanos,
    /// Payload bytes per packet.
    pub mtu: u32,
    /// The window a window-based algorithm starts from (the NIC's configured window).
    pub init_window: u64,
    pub params: &'a CcParams,
}

impl<'a> FlowContext<'a> {
    pub fn new(
        flow: FlowId,
        line_rate_bps: u64,
        base_rtt: Nanos,
        mtu: u32,
        init_window: u64,
        params: &'a CcParams,
    ) -> FlowContext<'a> {
        FlowContext {
            flow,
            line_rate_bps,
            base_rtt,
            mtu,
            init_window,
            params,
        }
    }

    /// A parameter, or its default; unknown names are caught by
    /// [`check_params`](Self::check_params).
    pub fn param(&self, name: &str, default: f64) -> f64 {
        self.params.get(name).copied().unwrap_or(default)
    }

    /// Fails naming the first parameter not in `known`.
    pub fn check_params(&self, algorithm: &str, known: &[&str]) -> Result<(), String> {
        match self.params.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(format!(
                "{algorithm} has no parameter `{k}` (it knows: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )),
            None => Ok(()),
        }
    }
}

/// Creates one flow's controller.
pub type Factory = fn(&FlowContext<'_>) -> Result<Box<dyn CongestionControl>, String>;

/// Algorithms by name.
#[derive(Clone)]
pub struct Registry {
    entries: Vec<(String, Factory)>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Default for Registry {
    /// The built-in algorithms.
    fn default() -> Self {
        let mut r = Registry {
            entries: Vec::new(),
        };
        r.register("none", none::factory);
        r.register("hpcc", hpcc::factory);
        r.register("dcqcn", dcqcn::factory);
        r.register("dctcp", dctcp::factory);
        r.register("swift", swift::factory);
        r.register("timely", timely::factory);
        r.register("nscc", nscc::factory);
        r
    }
}

impl Registry {
    /// Adds (or replaces) an algorithm.
    pub fn register(&mut self, name: &str, factory: Factory) {
        self.entries.retain(|(n, _)| n != name);
        self.entries.push((name.to_string(), factory));
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|(n, _)| n == name)
    }

    /// Creates a controller for one flow.
    pub fn create(
        &self,
        name: &str,
        ctx: &FlowContext<'_>,
    ) -> Result<Box<dyn CongestionControl>, String> {
        match self.entries.iter().find(|(n, _)| n == name) {
            Some((_, f)) => f(ctx),
            None => Err(format!(
                "unknown congestion control `{name}` (registered: {})",
                self.names().collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests;
