//! A fablab NIC as a sans-IO state machine: the sending side of every flow that
//! starts here, the receiving side (reorder buffer, ACKs, INT sink) of every flow that
//! ends here, and one egress scheduler between them.
//!
//! The driver calls [`Nic::handle_packet`] for every frame that arrives,
//! [`Nic::poll_transmit`] whenever the NIC's port is free to send, and
//! [`Nic::handle_timeout`] at [`Nic::poll_timeout`]. Deliveries and completions come
//! out of [`Nic::poll_event`].

pub mod reorder;
pub mod sender;
pub mod spray;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use crate::cc::{CcParams, FlowContext, Registry};
use crate::packet::{FlowId, HostId, Kind, Nanos, Packet};
use crate::rng::Rng;
use crate::wire::U24_MASK;
use reorder::{Arrival, ReorderBuffer};
use sender::{FlowSpec, Sender, SenderConfig};
use spray::{SprayPolicy, Sprayer};

/// Settings of one NIC.
#[derive(Debug, Clone)]
pub struct NicConfig {
    pub host: HostId,
    pub line_rate_bps: u64,
    /// Payload bytes per packet.
    pub mtu: u32,
    /// Bytes a flow may start with in flight (the `none` algorithm's fixed window).
    pub window_bytes: u64,
    /// Round-trip time of an empty path (initial RTT estimate).
    pub base_rtt: Nanos,
    pub rto_min: Nanos,
    /// How far behind its schedule a flow's pacer may catch up. A driver on the
    /// wall clock polls a little late; without slack every late poll would push the
    /// flow's schedule back and its rate below the pacing rate. 0 (the simulator's
    /// exact clock) paces exactly.
    pub pacing_slack: Nanos,
    pub spray: SprayPolicy,
    pub entropies: u32,
    /// Packets the reorder buffer holds ahead of a gap, per flow.
    pub reorder_window: u32,
    pub cc: String,
    pub cc_params: CcParams,
    /// The notification point: at most one CNP per flow per this interval when data
    /// arrives with CE (RoCEv2 NICs' default: 50 µs).
    pub cnp_interval: Nanos,
    /// Report every change of a flow's window or rate as [`NicEvent::CcChange`].
    pub trace_cc: bool,
    /// Which data packets ask the switches for INT.
    pub int: IntRequest,
    /// The receiver acknowledges once this many payload bytes have arrived since its
    /// last ACK (0 or anything up to the MTU: every packet). ACKs still go out at
    /// once for a trimmed packet (as a NACK), a CE mark, a duplicate, a packet that
    /// asks for one (`ack_req`), a packet that carries INT, and the end of a flow.
    pub ack_every_bytes: u64,
    /// The fabric trims instead of dropping: senders declare a packet lost only on a
    /// trim NACK or its own timeout ([`sender`]'s module docs).
    pub trimming: bool,
    /// Seeds every random choice of this NIC.
    pub seed: u64,
}

/// Which data packets ask the switches for INT (`nic.int`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntRequest {
    /// A flow's packets carry INT when its congestion controller reads it
    /// ([`crate::cc::CongestionControl::wants_telemetry`]).
    #[default]
    Auto,
    /// Every data packet.
    On,
    /// None.
    Off,
}

/// What the NIC reports to its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicEvent {
    /// Bytes `offset..offset + bytes` of `flow` were delivered in order to the
    /// application, exactly once.
    Delivered {
        flow: FlowId,
        offset: u64,
        bytes: u64,
    },
    /// Every byte of `flow` has been delivered (the last segment arrived in order).
    ReceiverDone { flow: FlowId, at: Nanos },
    /// Every byte of `flow` has been acknowledged to its sender.
    SenderDone { flow: FlowId, at: Nanos },
    /// `flow`'s congestion controller changed its window or rate (with `trace_cc`).
    CcChange {
        flow: FlowId,
        change: sender::CcChange,
    },
}

/// Receive-side counters, summed over flows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    pub out_of_order: u64,
    pub duplicates: u64,
    pub beyond_window: u64,
    pub max_held: u32,
    /// ACKs and NACKs sent (one ACK may cover several packets).
    pub acks_sent: u64,
    pub cnps_sent: u64,
    pub control_dropped: u64,
}

#[derive(Debug)]
struct Receiver {
    flow: FlowId,
    peer: HostId,
    buf: ReorderBuffer,
    /// Index and payload bytes of the flow's last segment, once it has arrived.
    last: Option<(u64, u32)>,
    done: bool,
    next_cnp: Nanos,
    /// The ACK for the newest arrivals, held back while fewer than
    /// `ack_every_bytes` arrived since the last one went out.
    pending: Option<Packet>,
    unacked_bytes: u64,
}

/// Flow ids are small dense integers chosen by the driver, not attacker input: a
/// multiply-shift hash is enough and much cheaper than SipHash per packet.
#[derive(Debug, Default, Clone, Copy)]
struct FlowIdHasher(u64);

impl Hasher for FlowIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = u64::from(v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type FlowMap = HashMap<FlowId, usize, BuildHasherDefault<FlowIdHasher>>;

/// Most control packets (ACKs, NACKs) waiting for the port. Beyond this the oldest
/// cumulative information is superseded anyway, so the newest replaces nothing and
/// is counted as dropped.
const CONTROL_QUEUE: usize = 1024;

/// One NIC.
#[derive(Debug)]
pub struct Nic {
    cfg: NicConfig,
    senders: Vec<Sender>,
    tx_index: FlowMap,
    receivers: Vec<Receiver>,
    rx_index: FlowMap,
    control: VecDeque<Packet>,
    rr: usize,
    events: VecDeque<NicEvent>,
    rng: Rng,
    stats: ReceiverStats,
}

impl Nic {
    pub fn new(cfg: NicConfig) -> Nic {
        Nic {
            rng: Rng::new(cfg.seed),
            cfg,
            senders: Vec::new(),
            tx_index: FlowMap::default(),
            receivers: Vec::new(),
            rx_index: FlowMap::default(),
            control: VecDeque::with_capacity(CONTROL_QUEUE),
            rr: 0,
            events: VecDeque::new(),
            stats: ReceiverStats::default(),
        }
    }

    /// Starts sending a flow. Fails if the congestion controller cannot be created
    /// (unknown name or parameter).
    pub fn start_flow(
        &mut self,
        now: Nanos,
        spec: FlowSpec,
        registry: &Registry,
    ) -> Result<(), String> {
        let ctx = FlowContext::new(
            spec.flow,
            self.cfg.line_rate_bps,
            self.cfg.base_rtt,
            self.cfg.mtu,
            self.cfg.window_bytes,
            &self.cfg.cc_params,
        );
        let cc = registry.create(&self.cfg.cc, &ctx)?;
        let spray = Sprayer::new(
            self.cfg.spray,
            self.cfg.entropies,
            Rng::fork(self.rng.next_u64(), u64::from(spec.flow)),
        );
        let wire_per_packet = u64::from(Packet::data(0, 0, 0, 0, self.cfg.mtu).wire_len());
        let max_inflight = (self.cfg.window_bytes.max(cc.window()) / wire_per_packet + 2)
            .max(u64::from(self.cfg.reorder_window)) as u32;
        let request_int = match self.cfg.int {
            IntRequest::Auto => cc.wants_telemetry(),
            IntRequest::On => true,
            IntRequest::Off => false,
        };
        let scfg = SenderConfig {
            mtu: self.cfg.mtu,
            base_rtt: self.cfg.base_rtt,
            rto_min: self.cfg.rto_min,
            pacing_slack: self.cfg.pacing_slack,
            max_inflight_packets: max_inflight,
            congested_qlen: 4 * self.cfg.mtu,
            trace_cc: self.cfg.trace_cc,
            request_int,
            trimming: self.cfg.trimming,
        };
        self.tx_index.insert(spec.flow, self.senders.len());
        self.senders.push(Sender::new(spec, scfg, cc, spray, now));
        Ok(())
    }

    pub fn senders(&self) -> &[Sender] {
        &self.senders
    }

    pub fn receiver_stats(&self) -> ReceiverStats {
        let mut s = self.stats;
        for r in &self.receivers {
            s.out_of_order += r.buf.out_of_order;
            s.duplicates += r.buf.duplicates;
            s.beyond_window += r.buf.beyond_window;
            s.max_held = s.max_held.max(r.buf.max_held);
        }
        s
    }

    fn queue_control(&mut self, p: Packet) {
        if self.control.len() >= CONTROL_QUEUE {
            self.stats.control_dropped += 1;
        } else {
            self.control.push_back(p);
        }
    }

    /// A packet addressed to this NIC arrived.
    pub fn handle_packet(&mut self, now: Nanos, pkt: &Packet) {
        match pkt.kind {
            Kind::Data => self.handle_data(now, pkt),
            Kind::Ack => {
                if let Some(&i) = self.tx_index.get(&pkt.flow) {
                    let s = &mut self.senders[i];
                    let was_done = s.is_done();
                    s.handle_ack(now, pkt);
                    if !was_done {
                        if let Some(at) = s.finished_at {
                            self.events
                                .push_back(NicEvent::SenderDone { flow: pkt.flow, at });
                        }
                    }
                }
            }
            Kind::Nack => {
                if let Some(&i) = self.tx_index.get(&pkt.flow) {
                    self.senders[i].handle_nack(now, pkt);
                }
            }
            Kind::Cnp => {
                if let Some(&i) = self.tx_index.get(&pkt.flow) {
                    self.senders[i].handle_cnp(now);
                }
            }
        }
    }

    fn handle_data(&mut self, now: Nanos, pkt: &Packet) {
        let i = match self.rx_index.get(&pkt.flow) {
            Some(&i) => i,
            None => {
                self.rx_index.insert(pkt.flow, self.receivers.len());
                self.receivers.push(Receiver {
                    flow: pkt.flow,
                    peer: pkt.src,
                    buf: ReorderBuffer::new(self.cfg.reorder_window),
                    last: None,
                    done: false,
                    next_cnp: 0,
                    pending: None,
                    unacked_bytes: 0,
                });
                self.receivers.len() - 1
            }
        };
        let mtu = u64::from(self.cfg.mtu);
        let r = &mut self.receivers[i];
        let mut reply = Packet::control(Kind::Ack, self.cfg.host, r.peer, r.flow);
        reply.psn = pkt.psn;
        reply.entropy = pkt.entropy;
        if pkt.trimmed {
            // The payload stayed behind at a full queue: ask for this PSN again, now.
            reply.kind = Kind::Nack;
            reply.trimmed = true;
            reply.cum_psn = (r.buf.expected() & u64::from(U24_MASK)) as u32;
            reply.sack = r.buf.sack();
            self.stats.acks_sent += 1;
            self.queue_control(reply);
            return;
        }
        if pkt.is_ce() {
            // The ACK that echoes CE covers only this packet: what arrived before it
            // unmarked is acknowledged first, so no algorithm counts it as marked.
            if let Some(p) = r.pending.take() {
                self.send_ack(i, p);
            }
        }
        let r = &mut self.receivers[i];
        if pkt.last && r.last.is_none() {
            if let Some(idx) = r.buf.unwrap_psn(pkt.psn) {
                r.last = Some((idx, pkt.payload));
            }
        }
        let arrival = r.buf.arrive(pkt.psn);
        reply.cum_psn = (r.buf.expected() & u64::from(U24_MASK)) as u32;
        reply.ecn_echo = pkt.is_ce();
        // The INT sink: echo the stack the data packet collected.
        reply.int = pkt.int;
        // A packet that carries INT is acknowledged at once: the INT sink echoes
        // every stack it receives (HPCC's authors acknowledge every packet), where a
        // coalesced ACK could echo only the newest.
        let mut now_please = pkt.ack_req || pkt.is_ce() || pkt.int_enabled;
        match arrival {
            Arrival::Deliver { from, to } => {
                let mut bytes = (to - from) * mtu;
                if let Some((last, last_payload)) = r.last {
                    if (from..to).contains(&last) {
                        bytes -= mtu - u64::from(last_payload);
                    }
                }
                self.events.push_back(NicEvent::Delivered {
                    flow: r.flow,
                    offset: from * mtu,
                    bytes,
                });
                if r.last.is_some_and(|(l, _)| r.buf.expected() > l) && !r.done {
                    r.done = true;
                    now_please = true;
                    self.events.push_back(NicEvent::ReceiverDone {
                        flow: r.flow,
                        at: now,
                    });
                }
            }
            Arrival::BeyondWindow => {
                reply.kind = Kind::Nack;
                now_please = true;
            }
            Arrival::Duplicate => {
                reply.dsack = true;
                now_please = true;
            }
            Arrival::Held => {}
        }
        reply.sack = r.buf.sack();
        r.unacked_bytes += u64::from(pkt.payload);
        if now_please || r.unacked_bytes >= self.cfg.ack_every_bytes {
            self.send_ack(i, reply);
        } else {
            r.pending = Some(reply);
        }
        let r = &mut self.receivers[i];
        let cnp = pkt.is_ce() && now >= r.next_cnp;
        if cnp {
            r.next_cnp = now + self.cfg.cnp_interval;
            let (peer, flow) = (r.peer, r.flow);
            self.stats.cnps_sent += 1;
            self.queue_control(Packet::control(Kind::Cnp, self.cfg.host, peer, flow));
        }
    }

    /// Sends receiver `i`'s ACK, which covers everything that arrived so far.
    fn send_ack(&mut self, i: usize, ack: Packet) {
        let r = &mut self.receivers[i];
        r.pending = None;
        r.unacked_bytes = 0;
        self.stats.acks_sent += 1;
        self.queue_control(ack);
    }

    /// The port is free: the next packet to send, control before data, flows in
    /// turn.
    pub fn poll_transmit(&mut self, now: Nanos) -> Option<Packet> {
        if let Some(p) = self.control.pop_front() {
            return Some(p);
        }
        let n = self.senders.len();
        for k in 0..n {
            let i = (self.rr + k) % n;
            if let Some(p) = self.senders[i].poll_transmit(now) {
                self.rr = (i + 1) % n;
                return Some(p);
            }
        }
        None
    }

    /// The earliest time the NIC has a packet for its port: now (0) when ACKs, NACKs
    /// or CNPs wait, else when the first paced data packet becomes sendable. A driver
    /// that knows the port is busy until later can sleep until then instead.
    pub fn next_transmit(&self) -> Option<Nanos> {
        if !self.control.is_empty() {
            return Some(0);
        }
        self.earliest(Sender::next_send_time)
    }

    /// The earliest loss-recovery or congestion-control timer.
    pub fn next_timer(&self) -> Option<Nanos> {
        self.earliest(Sender::poll_timeout)
    }

    /// The earliest time the NIC needs attention: a paced packet becomes sendable, or
    /// a loss-recovery or congestion-control timer expires.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        let data = self.earliest(Sender::next_send_time);
        match (data, self.next_timer()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The minimum of `f` over the flows still sending.
    fn earliest(&self, f: impl Fn(&Sender) -> Option<Nanos>) -> Option<Nanos> {
        self.senders
            .iter()
            .filter(|s| !s.is_done())
            .filter_map(f)
            .min()
    }

    pub fn handle_timeout(&mut self, now: Nanos) {
        for s in &mut self.senders {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<NicEvent> {
        if self.cfg.trace_cc {
            for s in &mut self.senders {
                let flow = s.spec.flow;
                for change in s.drain_cc_changes() {
                    self.events.push_back(NicEvent::CcChange { flow, change });
                }
            }
        }
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests;
