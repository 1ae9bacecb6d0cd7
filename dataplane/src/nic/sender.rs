//! One flow's sending side: segmentation into MTU packets with PSNs, the window and
//! pacing from congestion control, spraying, and loss recovery.
//!
//! # Loss recovery, and why reordering never looks like loss
//!
//! Spraying reorders packets by up to the difference in queueing between paths.
//! Counting SACK gaps (three duplicate ACKs, IRN's NACK on any gap) would retransmit
//! most of a sprayed window, so fablab never declares a packet lost because later
//! ones arrived. Which rule applies depends on the fabric:
//!
//! - **Trimming fabrics** (`SenderConfig::trimming`, the default where switches are
//!   lossy): a switch that has no room for a packet cuts it to its headers and
//!   forwards them in its control queue; the receiver NACKs the PSN at once
//!   ([`Sender::handle_nack`]) and the sender retransmits it at once. Otherwise a
//!   packet is declared lost only by a timeout: the flow's retransmission timer,
//!   or, when the receiver's reorder window fills behind a missing packet, a NACK
//!   for the window's head once it has been outstanding longer than a reordering
//!   window. This is UEC's rule (loss only on a trim NACK or a timeout). A timer per
//!   packet was tried and dropped: SRTT lags behind a queue that is filling, so
//!   packets of a flow's first window expired while still queued (ecmp-vs-spray at
//!   50 Mb/s: 58 timeouts, all spurious).
//! - **Other fabrics** (lossless, or lossy without trimming): RACK (RFC 8985). A
//!   packet is lost when a packet *sent after it* has been acknowledged and
//!   `now ≥ sent_at + rack_rtt + reo_wnd`, with `rack_rtt` the RTT of the most
//!   recently sent packet that was delivered. The reordering window is the larger of
//!   RACK's own, `max(min_rtt / 4, 2 µs) × m` capped at 4 × SRTT (`m` grows by one,
//!   up to 64, for each retransmission a D-SACK shows was spurious, RFC 8985 §6.2),
//!   and the measured spread of path delays: `9/8 · rtt_max − rack_rtt`, with
//!   `rtt_max` a slowly decaying maximum of the RTT samples. Under spraying the
//!   slowest path sets how late a packet may legitimately be; a packet is declared
//!   lost only when it is later than that.
//!
//! In both, a flow retransmission timer (`rto = max(srtt + 4·rttvar, rto_min)`,
//! doubled on each expiry, restarted whenever data is newly acknowledged) covers a
//! window that stopped being acknowledged altogether.
//!
//! # One congestion response per round trip
//!
//! The congestion controller hears of a loss (`CongestionEvent::Loss`) only if the
//! lost packet was sent after the previous loss it heard of, as a TCP recovery
//! episode counts one congestion event however many packets of a window were lost.
//! `SenderStats::loss_events` counts what the controller was told (losses and
//! timeouts), beside `retransmits`.

use crate::cc::{AckSample, CongestionControl, CongestionEvent, SentSample};
use crate::packet::{FlowId, HostId, Nanos, Packet};
use crate::wire::U24_MASK;

use super::spray::Sprayer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Unsent,
    InFlight,
    Lost,
    Acked,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    state: State,
    retransmitted: bool,
    sent_at: Nanos,
    entropy: u16,
    wire: u32,
}

/// Smoothed RTT after RFC 6298.
#[derive(Debug, Clone, Copy)]
struct RttEstimator {
    srtt: Nanos,
    rttvar: Nanos,
    min: Nanos,
    seen: bool,
}

impl RttEstimator {
    fn update(&mut self, rtt: Nanos) {
        if !self.seen {
            self.srtt = rtt;
            self.rttvar = rtt / 2;
            self.min = rtt;
            self.seen = true;
        } else {
            let diff = self.srtt.abs_diff(rtt);
            self.rttvar = (3 * self.rttvar + diff) / 4;
            self.srtt = (7 * self.srtt + rtt) / 8;
            self.min = self.min.min(rtt);
        }
    }
}

/// What made a congestion controller change its window or rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CcSignal {
    Sent,
    /// An ACK; `ecn` when it echoed CE, `int` when it carried INT hops.
    Ack {
        ecn: bool,
        int: bool,
    },
    Cnp,
    Loss,
    Nack,
    Timeout,
    Timer,
}

impl CcSignal {
    pub fn name(self) -> &'static str {
        match self {
            CcSignal::Sent => "sent",
            CcSignal::Ack { ecn: true, .. } => "ack-ecn",
            CcSignal::Ack { int: true, .. } => "ack-int",
            CcSignal::Ack { .. } => "ack",
            CcSignal::Cnp => "cnp",
            CcSignal::Loss => "loss",
            CcSignal::Nack => "nack",
            CcSignal::Timeout => "timeout",
            CcSignal::Timer => "timer",
        }
    }
}

/// One change of a flow's window or rate, for `--trace cc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CcChange {
    pub at: Nanos,
    pub window: u64,
    pub rate_bps: u64,
    pub signal: CcSignal,
}

/// Parameters of a sending flow.
#[derive(Debug, Clone, Copy)]
pub struct FlowSpec {
    pub flow: FlowId,
    pub src: HostId,
    pub dst: HostId,
    pub bytes: u64,
}

/// Settings shared by a NIC's flows.
#[derive(Debug, Clone, Copy)]
pub struct SenderConfig {
    pub mtu: u32,
    pub base_rtt: Nanos,
    pub rto_min: Nanos,
    /// How far behind schedule the pacer may catch up ([`NicConfig::pacing_slack`](super::NicConfig::pacing_slack)).
    pub pacing_slack: Nanos,
    /// Most packets in flight (sizes the tracking ring).
    pub max_inflight_packets: u32,
    /// INT queue depth above which an ACK counts as congested for adaptive spraying.
    pub congested_qlen: u32,
    /// Record every change of window or rate (`--trace cc`).
    pub trace_cc: bool,
    /// Data packets ask the switches for INT.
    pub request_int: bool,
    /// The fabric trims instead of dropping: a packet is lost only on a trim NACK or
    /// its own timeout (see the module docs).
    pub trimming: bool,
}

/// Counters of a sending flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    pub packets_sent: u64,
    pub retransmits: u64,
    pub timeouts: u64,
    pub losses_detected: u64,
    /// Retransmissions a D-SACK showed to be unnecessary.
    pub spurious_retransmits: u64,
    /// Losses and timeouts the congestion controller was told of (at most one loss
    /// per round trip).
    pub loss_events: u64,
}

/// One flow's sender.
#[derive(Debug)]
pub struct Sender {
    pub spec: FlowSpec,
    cfg: SenderConfig,
    packets: u64,
    full_wire: u32,
    last_wire: u32,
    next_new: u64,
    base: u64,
    slots: Vec<Slot>,
    inflight: u64,
    lost_pending: u32,
    acked_bytes: u64,
    cc: Box<dyn CongestionControl>,
    spray: Sprayer,
    next_tx: Nanos,
    rtt: RttEstimator,
    rack_xmit: Nanos,
    rack_rtt: Nanos,
    rack_timer: Option<Nanos>,
    reo_mult: u32,
    /// A slowly decaying maximum of the RTT samples: the slowest path's delay.
    rtt_max: Nanos,
    /// When the congestion controller last heard of a loss.
    loss_reported_at: Option<Nanos>,
    rto_at: Option<Nanos>,
    rto_backoff: u32,
    pub started_at: Nanos,
    pub finished_at: Option<Nanos>,
    pub stats: SenderStats,
    /// Window and rate as last traced, and the changes not yet collected.
    traced: (u64, u64),
    changes: Vec<CcChange>,
}

impl Sender {
    pub fn new(
        spec: FlowSpec,
        cfg: SenderConfig,
        cc: Box<dyn CongestionControl>,
        spray: Sprayer,
        now: Nanos,
    ) -> Sender {
        let packets = spec.bytes.div_ceil(u64::from(cfg.mtu)).max(1);
        let ring = (cfg.max_inflight_packets as u64).min(packets).max(1) as usize;
        let last_payload = (spec.bytes - (packets - 1) * u64::from(cfg.mtu)) as u32;
        Sender {
            full_wire: Packet::data(0, 0, 0, 0, cfg.mtu).wire_len(),
            last_wire: Packet::data(0, 0, 0, 0, last_payload).wire_len(),
            spec,
            cfg,
            packets,
            next_new: 0,
            base: 0,
            slots: vec![Slot::default(); ring],
            inflight: 0,
            lost_pending: 0,
            acked_bytes: 0,
            cc,
            spray,
            next_tx: now,
            rtt: RttEstimator {
                srtt: cfg.base_rtt,
                rttvar: cfg.base_rtt / 2,
                min: cfg.base_rtt,
                seen: false,
            },
            rack_xmit: 0,
            rack_rtt: 0,
            rack_timer: None,
            reo_mult: 1,
            rtt_max: 0,
            loss_reported_at: None,
            rto_at: None,
            rto_backoff: 0,
            started_at: now,
            finished_at: None,
            stats: SenderStats::default(),
            traced: (0, 0),
            changes: Vec::new(),
        }
    }

    /// Records a change of window or rate caused by `signal`, when tracing.
    fn trace(&mut self, now: Nanos, signal: CcSignal) {
        if !self.cfg.trace_cc {
            return;
        }
        let now_state = (self.cc.window(), self.cc.pacing_rate());
        if now_state != self.traced {
            self.traced = now_state;
            self.changes.push(CcChange {
                at: now,
                window: now_state.0,
                rate_bps: now_state.1,
                signal,
            });
        }
    }

    /// Takes the changes recorded since the last call.
    pub fn drain_cc_changes(&mut self) -> impl Iterator<Item = CcChange> + '_ {
        self.changes.drain(..)
    }

    pub fn is_done(&self) -> bool {
        self.finished_at.is_some()
    }
    pub fn cc(&self) -> &dyn CongestionControl {
        self.cc.as_ref()
    }

    fn slot(&mut self, index: u64) -> &mut Slot {
        let n = self.slots.len() as u64;
        &mut self.slots[(index % n) as usize]
    }

    fn payload_of(&self, index: u64) -> u32 {
        let mtu = u64::from(self.cfg.mtu);
        let start = index * mtu;
        (self.spec.bytes.saturating_sub(start)).min(mtu) as u32
    }

    fn reo_wnd(&self) -> Nanos {
        let rack = ((self.rtt.min / 4).max(2_000) * u64::from(self.reo_mult))
            .min(4 * self.rtt.srtt.max(2_000));
        let spread = (self.rtt_max + self.rtt_max / 8).saturating_sub(self.rack_rtt);
        rack.max(spread)
    }

    fn rto(&self) -> Nanos {
        let base = (self.rtt.srtt + 4 * self.rtt.rttvar).max(self.cfg.rto_min);
        base.saturating_mul(1 << self.rto_backoff.min(10))
    }

    /// The index of the next packet to send (a loss to repair first, else new data),
    /// if the window allows one now.
    fn next_index(&self) -> Option<u64> {
        if self.is_done() {
            return None;
        }
        if self.lost_pending > 0 {
            let n = self.slots.len() as u64;
            for i in self.base..self.next_new {
                if self.slots[(i % n) as usize].state == State::Lost {
                    return Some(i);
                }
            }
        }
        let ring = self.slots.len() as u64;
        if self.next_new < self.packets && self.next_new < self.base + ring {
            return Some(self.next_new);
        }
        None
    }

    fn window_allows(&self, wire: u32) -> bool {
        self.inflight == 0 || self.inflight + u64::from(wire) <= self.cc.window()
    }

    /// When this flow could send next (pacing), if it has something it may send.
    pub fn next_send_time(&self) -> Option<Nanos> {
        let i = self.next_index()?;
        self.window_allows(self.wire_of(i)).then_some(self.next_tx)
    }

    /// Wire bytes of packet `index` as sent by the NIC (before any INT).
    fn wire_of(&self, index: u64) -> u32 {
        if index + 1 == self.packets {
            self.last_wire
        } else {
            self.full_wire
        }
    }

    /// Builds the next packet if pacing and the window allow it at `now`.
    pub fn poll_transmit(&mut self, now: Nanos) -> Option<Packet> {
        if now < self.next_tx {
            return None;
        }
        let index = self.next_index()?;
        let payload = self.payload_of(index);
        let mut pkt = Packet::data(
            self.spec.src,
            self.spec.dst,
            self.spec.flow,
            (index & u64::from(U24_MASK)) as u32,
            payload,
        );
        pkt.last = index + 1 == self.packets;
        let wire = pkt.wire_len();
        if !self.window_allows(wire) {
            return None;
        }
        pkt.entropy = self.spray.next_entropy();
        pkt.int_enabled = self.cfg.request_int;
        let retransmit = index < self.next_new;
        // Ask for an ACK at once when the receiver would otherwise wait for more:
        // the message's end, a repair, or the packet that fills the window.
        pkt.ack_req = pkt.last
            || retransmit
            || self.inflight + u64::from(wire) + u64::from(self.full_wire) > self.cc.window();
        let slot = self.slot(index);
        if retransmit {
            debug_assert_eq!(slot.state, State::Lost);
            slot.retransmitted = true;
        }
        *slot = Slot {
            state: State::InFlight,
            retransmitted: retransmit || slot.retransmitted,
            sent_at: now,
            entropy: pkt.entropy,
            wire,
        };
        if retransmit {
            self.lost_pending -= 1;
            self.stats.retransmits += 1;
        } else {
            self.next_new += 1;
        }
        self.inflight += u64::from(wire);
        self.stats.packets_sent += 1;
        let rate = self.cc.pacing_rate().max(1);
        self.next_tx = now.saturating_sub(self.cfg.pacing_slack).max(self.next_tx)
            + u64::from(wire) * 8 * 1_000_000_000 / rate;
        if self.rto_at.is_none() {
            self.rto_at = Some(now + self.rto());
        }
        self.cc.on_sent(
            now,
            &SentSample {
                psn: pkt.psn,
                bytes: wire,
                inflight: self.inflight,
                entropy: pkt.entropy,
                retransmit,
            },
        );
        self.trace(now, CcSignal::Sent);
        Some(pkt)
    }

    /// The index a 24-bit PSN from an ACK stands for, if it is within what was sent.
    fn unwrap(&self, psn: u32) -> Option<u64> {
        let here = (self.base & u64::from(U24_MASK)) as u32;
        let ahead = u64::from(psn.wrapping_sub(here) & U24_MASK);
        let outstanding = self.next_new - self.base;
        if ahead <= outstanding {
            Some(self.base + ahead)
        } else {
            // Behind the base (an old, reordered ACK) or garbage.
            None
        }
    }

    /// Like [`unwrap`](Self::unwrap), but also for packets behind the cumulative ACK
    /// whose slot the ring has not reused yet.
    fn recent_index(&self, psn: u32) -> Option<u64> {
        if let Some(i) = self.unwrap(psn).filter(|&i| i < self.next_new) {
            return Some(i);
        }
        let behind = u64::from((self.base & u64::from(U24_MASK)) as u32)
            .wrapping_sub(u64::from(psn))
            & u64::from(U24_MASK);
        let i = self.base.checked_sub(behind)?;
        (self.next_new - i <= self.slots.len() as u64).then_some(i)
    }

    /// Marks one packet delivered; returns its payload if it was newly so.
    fn mark_acked(&mut self, index: u64) -> Option<(u32, Slot)> {
        let payload = self.payload_of(index);
        let slot = *self.slot(index);
        match slot.state {
            State::InFlight => self.inflight -= u64::from(slot.wire),
            State::Lost => self.lost_pending -= 1,
            State::Acked | State::Unsent => return None,
        }
        self.slot(index).state = State::Acked;
        self.acked_bytes += u64::from(payload);
        Some((payload, slot))
    }

    /// An ACK (cumulative PSN, SACK, the acked packet's ECN and INT) arrived.
    pub fn handle_ack(&mut self, now: Nanos, ack: &Packet) {
        if self.is_done() {
            return;
        }
        let acked_index = self.unwrap(ack.psn);
        let acked_slot = acked_index
            .filter(|&i| i < self.next_new)
            .map(|i| *self.slot(i));
        let Some(cum) = self.unwrap(ack.cum_psn) else {
            return;
        };
        let mut newly = 0u64;
        let rack_update = |s: &mut Self, slot: Slot| {
            if slot.sent_at >= s.rack_xmit {
                s.rack_xmit = slot.sent_at;
                if !slot.retransmitted {
                    s.rack_rtt = now.saturating_sub(slot.sent_at);
                }
            }
        };
        for i in self.base..cum {
            if let Some((p, slot)) = self.mark_acked(i) {
                newly += u64::from(p);
                rack_update(self, slot);
            }
        }
        self.base = self.base.max(cum);
        for k in ack.sack.iter() {
            let i = cum + 1 + k as u64;
            if i >= self.next_new {
                break;
            }
            if let Some((p, slot)) = self.mark_acked(i) {
                newly += u64::from(p);
                rack_update(self, slot);
            }
        }
        if ack.dsack {
            // A duplicate of a packet we retransmitted: the original arrived after
            // all, so the retransmission was spurious.
            if let Some(i) = self.recent_index(ack.psn) {
                let s = *self.slot(i);
                if s.retransmitted && s.state == State::Acked {
                    self.stats.spurious_retransmits += 1;
                    self.reo_mult = (self.reo_mult + 1).min(64);
                }
            }
        }
        let rtt = acked_slot
            .filter(|s| !s.retransmitted && s.state != State::Unsent)
            .map(|s| now.saturating_sub(s.sent_at));
        if let Some(r) = rtt {
            self.rtt.update(r);
            // Up at once, down by 1/64 of the gap per sample.
            self.rtt_max = if r >= self.rtt_max {
                r
            } else {
                self.rtt_max - (self.rtt_max - r) / 64
            };
        }
        if let Some(s) = acked_slot {
            let congested = ack.ecn_echo
                || ack
                    .int
                    .hops()
                    .iter()
                    .any(|h| h.qlen > self.cfg.congested_qlen);
            self.spray.feedback(s.entropy, congested);
        }
        if newly > 0 {
            self.rto_backoff = 0;
            self.rto_at = (self.inflight > 0).then(|| now + self.rto());
        }
        if !ack.int.is_empty() {
            self.cc.on_telemetry(now, ack.int.hops());
        }
        self.cc.on_ack(
            now,
            &AckSample {
                rtt,
                min_rtt: self.rtt.min,
                acked_bytes: newly,
                ecn_echo: ack.ecn_echo,
                int: ack.int.hops(),
                entropy: acked_slot.map_or(0, |s| s.entropy),
                acked_psn: ack.psn,
                cumulative_psn: ack.cum_psn,
                inflight: self.inflight,
                delivered: self.acked_bytes,
            },
        );
        self.trace(
            now,
            CcSignal::Ack {
                ecn: ack.ecn_echo,
                int: !ack.int.is_empty(),
            },
        );
        self.detect_losses(now);
        if self.base >= self.packets {
            self.finished_at = Some(now);
            self.rto_at = None;
            self.rack_timer = None;
        }
    }

    /// A congestion notification (RoCEv2 CNP) arrived for this flow.
    pub fn handle_cnp(&mut self, now: Nanos) {
        self.cc.on_congestion(now, &CongestionEvent::Cnp);
        self.trace(now, CcSignal::Cnp);
    }

    /// A NACK arrived. For a trimmed packet (`nack.trimmed`) that packet is lost:
    /// it is retransmitted at once. Otherwise the receiver could not hold a packet
    /// (beyond its reorder window): repair the head of the window if it has been
    /// outstanding longer than a reordering window.
    pub fn handle_nack(&mut self, now: Nanos, nack: &Packet) {
        if self.is_done() {
            return;
        }
        if nack.trimmed {
            let trimmed = self.unwrap(nack.psn).filter(|&i| i < self.next_new);
            if let Some(i) = trimmed {
                if self.slot(i).state == State::InFlight {
                    self.declare_lost(now, i, true);
                }
            }
            return;
        }
        self.cc
            .on_congestion(now, &CongestionEvent::Nack { psn: nack.psn });
        self.trace(now, CcSignal::Nack);
        let Some(cum) = self.unwrap(nack.cum_psn) else {
            return;
        };
        if cum < self.next_new {
            let reo = self.reo_wnd();
            let s = *self.slot(cum);
            if s.state == State::InFlight && now >= s.sent_at + self.rtt.min + reo {
                self.declare_lost(now, cum, true);
            }
        }
    }

    /// Marks packet `index` lost (to be retransmitted). `report` tells the
    /// congestion controller, once per round trip (the module docs).
    fn declare_lost(&mut self, now: Nanos, index: u64, report: bool) {
        let s = self.slot(index);
        debug_assert_eq!(s.state, State::InFlight);
        s.state = State::Lost;
        let (wire, sent_at) = (s.wire, s.sent_at);
        self.inflight -= u64::from(wire);
        self.lost_pending += 1;
        self.stats.losses_detected += 1;
        if report && self.loss_reported_at.is_none_or(|t| sent_at > t) {
            let psn = (index & u64::from(U24_MASK)) as u32;
            self.tell_loss(now, &CongestionEvent::Loss { psn, bytes: wire });
        }
    }

    /// Tells the congestion controller of a loss or a timeout, which opens a new
    /// recovery episode (the module docs).
    fn tell_loss(&mut self, now: Nanos, event: &CongestionEvent) {
        self.loss_reported_at = Some(now);
        self.stats.loss_events += 1;
        self.cc.on_congestion(now, event);
        let signal = match event {
            CongestionEvent::Timeout => CcSignal::Timeout,
            _ => CcSignal::Loss,
        };
        self.trace(now, signal);
    }

    fn detect_losses(&mut self, now: Nanos) {
        self.rack_timer = None;
        if self.cfg.trimming {
            return;
        }
        if self.rack_xmit == 0 && self.rack_rtt == 0 {
            return;
        }
        let reo = self.reo_wnd();
        for i in self.base..self.next_new {
            let s = *self.slot(i);
            if s.state == State::InFlight && !s.retransmitted && s.sent_at >= self.rack_xmit {
                // Every later index was first sent after this packet, so neither its
                // first send nor any retransmission precedes `rack_xmit`.
                break;
            }
            if s.state != State::InFlight || s.sent_at >= self.rack_xmit {
                continue;
            }
            let deadline = s.sent_at + self.rack_rtt + reo;
            if now >= deadline {
                self.declare_lost(now, i, true);
            } else {
                self.rack_timer = Some(self.rack_timer.map_or(deadline, |t| t.min(deadline)));
            }
        }
    }

    /// The earliest time [`handle_timeout`](Self::handle_timeout) has work to do.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        let t = match (self.rto_at, self.rack_timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (t, self.cc.next_timer()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_timeout(&mut self, now: Nanos) {
        if self.is_done() {
            return;
        }
        if self.rack_timer.is_some_and(|t| t <= now) {
            self.detect_losses(now);
        }
        if self.rto_at.is_some_and(|t| t <= now) {
            self.stats.timeouts += 1;
            for i in self.base..self.next_new {
                if self.slot(i).state == State::InFlight {
                    self.declare_lost(now, i, false);
                }
            }
            self.tell_loss(now, &CongestionEvent::Timeout);
            self.rto_backoff += 1;
            self.rto_at = Some(now + self.rto());
        }
        if self.cc.next_timer().is_some_and(|t| t <= now) {
            self.cc.on_timer(now);
            self.trace(now, CcSignal::Timer);
        }
    }
}
