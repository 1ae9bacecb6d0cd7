//! A fablab switch as a sans-IO state machine: ports with bounded egress queues,
//! ECN marking, tail drop, trimming or PFC, INT stamping, and per-packet path
//! selection among equal-cost next hops.
//!
//! Each port has two queues served in strict priority: a control queue for ACKs,
//! NACKs, CNPs and trimmed headers (so feedback never waits behind data), and the
//! data queue, to which ECN, PFC, trimming and the INT queue depth apply. With
//! trimming, a data packet that would overflow the data queue (or cross
//! `trim.threshold_bytes`) is cut to its headers ([`Packet::trim`]) and sent on in
//! the control queue, as UEC switches do; the receiving NIC asks for it again at once.
//!
//! The switch never sees packet bytes or clocks. The driver hands it a [`Packet`]
//! view and an opaque handle `H` for the packet's storage ([`Switch::handle_packet`]),
//! asks it for the next packet when a port is free to transmit
//! ([`Switch::poll_dequeue`]), and collects PFC pause/resume requests
//! ([`Switch::poll_event`]). Time is an argument; randomness comes from the switch's
//! own generator, seeded by the driver.

mod lb;
pub mod queue;

use std::collections::VecDeque;

pub use lb::{ecmp_hash, LbPolicy};

use crate::packet::{HostId, IntHop, Kind, Nanos, Packet};
use crate::rng::Rng;
use crate::wire::frame::ECN_CE;
use queue::{EgressQueue, Entry};

/// RED-style ECN marking on the instantaneous egress queue (DCQCN's switch side):
/// no marks below `kmin`, probability rising linearly to `pmax` at `kmax`, every
/// ECN-capable packet above `kmax`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EcnConfig {
    pub kmin_bytes: u64,
    pub kmax_bytes: u64,
    pub pmax: f64,
}

/// Where a switch decides to mark ECN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EcnPoint {
    /// When the packet joins the queue, from the depth it finds (DCQCN's switches).
    #[default]
    Enqueue,
    /// When the packet leaves, from the depth it leaves behind (what UEC's reference
    /// simulator does): the mark reaches the receiver a queueing delay sooner.
    Dequeue,
}

/// Packet trimming (lossy switches only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrimConfig {
    /// Trim a data packet that would take the data queue above this many bytes (at
    /// most the buffer; the buffer's size trims only what would not fit).
    pub threshold_bytes: u64,
}

impl TrimConfig {
    /// Trim only what does not fit the queue.
    pub const WHEN_FULL: TrimConfig = TrimConfig {
        threshold_bytes: u64::MAX,
    };
}

/// Priority flow control per ingress port: pause the upstream sender when the bytes
/// that came in on a port and still sit in this switch exceed `xoff`, resume below
/// `xon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PfcConfig {
    pub xoff_bytes: u64,
    pub xon_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SwitchConfig {
    /// INT node id.
    pub id: u32,
    /// Egress rate of each port in Mb/s (its length is the port count).
    pub port_rate_mbps: Vec<u32>,
    /// Byte capacity of each egress queue.
    pub buffer_bytes: u64,
    pub lb: LbPolicy,
    pub ecn: Option<EcnConfig>,
    /// Where ECN marks are decided.
    pub ecn_at: EcnPoint,
    /// `Some` makes the switch lossless.
    pub pfc: Option<PfcConfig>,
    /// Trim instead of dropping data that does not fit (ignored when lossless).
    pub trim: Option<TrimConfig>,
    /// Serve control packets (ACK, NACK, CNP, trimmed headers) from their own queue,
    /// ahead of data. Off, they wait in the data queue like any packet.
    pub control_priority: bool,
    /// Stamp this hop's INT metadata into data packets whose sender asked for INT.
    pub int: bool,
    /// Seeds this switch's ECMP hash and its random choices.
    pub seed: u64,
}

/// Candidate egress ports per destination host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    first: Vec<u32>,
    len: Vec<u16>,
    ports: Vec<u16>,
}

impl Routes {
    /// Builds the table from one candidate list per destination host.
    pub fn new(per_host: &[Vec<u16>]) -> Routes {
        let mut r = Routes::default();
        for c in per_host {
            r.first.push(r.ports.len() as u32);
            r.len.push(c.len() as u16);
            r.ports.extend_from_slice(c);
        }
        r
    }
    pub fn candidates(&self, dst: HostId) -> &[u16] {
        let i = dst as usize;
        match (self.first.get(i), self.len.get(i)) {
            (Some(&f), Some(&l)) => &self.ports[f as usize..f as usize + usize::from(l)],
            _ => &[],
        }
    }
}

/// Why a switch dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// No route to the destination, or every candidate port is down.
    NoRoute,
    /// The egress queue was full (lossy mode), or the control queue was.
    TailDrop,
    /// Lossless mode, but PFC headroom was exceeded too.
    PfcOverflow,
}

/// What [`Switch::handle_packet`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// Queued on this egress port; the driver should poll it if it is idle.
    Enqueued { port: u16 },
    /// Dropped; the driver frees the handle.
    Dropped(DropReason),
}

/// A packet leaving an egress port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Dequeued<H> {
    pub handle: H,
    pub bytes: u32,
    /// This hop's INT metadata, when the switch stamps INT; the driver pushes it
    /// into packets that carry INT.
    pub int_hop: Option<IntHop>,
    /// ECN marking at dequeue chose this packet: the driver sets CE on it.
    pub mark_ce: bool,
}

/// Something the switch asks its neighbours to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchEvent {
    /// Send a PFC pause out of `port` (its peer must stop sending to us).
    Pause { port: u16 },
    /// Send a PFC resume out of `port`.
    Resume { port: u16 },
}

/// Counters of one port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub drops: u64,
    pub ecn_marks: u64,
    pub max_queue_bytes: u64,
    pub pauses_sent: u64,
    /// Data packets cut to their headers for lack of room.
    pub trims: u64,
    /// Packets that came in on this port and had no route out (no route to their
    /// destination, or every candidate port down), dropped.
    pub no_route: u64,
}

#[derive(Debug, Clone)]
struct Port<H> {
    queue: EgressQueue<H>,
    /// ACKs, NACKs, CNPs and trimmed headers, served first (with `control_priority`).
    control: EgressQueue<H>,
    rate_mbps: u32,
    up: bool,
    /// The peer sent PFC pause.
    paused: bool,
    /// Bytes that came in on this port and are still queued somewhere in the switch.
    ingress_bytes: u64,
    /// We have told the peer to pause.
    pause_sent: bool,
    stats: PortStats,
}

/// The control queue holds this many times the data queue's bytes (as UEC's
/// reference simulator sizes its high-priority queue); beyond it, control packets are
/// dropped.
pub const CONTROL_QUEUE_FACTOR: u64 = 2;

/// One switch.
#[derive(Debug, Clone)]
pub struct Switch<H> {
    cfg: SwitchConfig,
    ports: Vec<Port<H>>,
    routes: Routes,
    lb: lb::LbState,
    rng: Rng,
    events: VecDeque<SwitchEvent>,
}

impl<H: Copy> Switch<H> {
    pub fn new(cfg: SwitchConfig, routes: Routes, hosts: usize) -> Switch<H> {
        let ports = cfg
            .port_rate_mbps
            .iter()
            .map(|&rate_mbps| Port {
                queue: EgressQueue::new(cfg.buffer_bytes),
                control: EgressQueue::new(CONTROL_QUEUE_FACTOR * cfg.buffer_bytes),
                rate_mbps,
                up: true,
                paused: false,
                ingress_bytes: 0,
                pause_sent: false,
                stats: PortStats::default(),
            })
            .collect::<Vec<_>>();
        let n = ports.len();
        Switch {
            lb: lb::LbState::new(hosts),
            rng: Rng::new(cfg.seed),
            events: VecDeque::with_capacity(2 * n),
            ports,
            routes,
            cfg,
        }
    }

    pub fn id(&self) -> u32 {
        self.cfg.id
    }
    pub fn port_count(&self) -> usize {
        self.ports.len()
    }
    pub fn port_rate_mbps(&self, port: u16) -> u32 {
        self.ports[usize::from(port)].rate_mbps
    }
    pub fn queue_bytes(&self, port: u16) -> u64 {
        self.ports[usize::from(port)].queue.bytes()
    }
    pub fn stats(&self, port: u16) -> PortStats {
        self.ports[usize::from(port)].stats
    }

    /// A packet arrived on `in_port`: pick its egress port, mark ECN, queue, trim or
    /// drop.
    pub fn handle_packet(
        &mut self,
        now: Nanos,
        in_port: u16,
        pkt: &mut Packet,
        handle: H,
    ) -> Verdict {
        let Some(port) = self.choose_port(now, pkt) else {
            self.ports[usize::from(in_port)].stats.no_route += 1;
            return Verdict::Dropped(DropReason::NoRoute);
        };
        let mut entry = Entry {
            handle,
            bytes: pkt.wire_len(),
            in_port,
            enqueued_at: now,
            ect: false,
        };
        if pkt.is_control() && self.cfg.control_priority {
            return self.push_control(port, entry);
        }
        let ecn_capable = pkt.kind == Kind::Data && !pkt.trimmed && pkt.ecn != 0;
        let p = &mut self.ports[usize::from(port)];
        if let (Some(ecn), true) = (self.cfg.ecn, ecn_capable) {
            match self.cfg.ecn_at {
                EcnPoint::Enqueue => {
                    if mark(&ecn, p.queue.bytes(), &mut self.rng) && !pkt.is_ce() {
                        pkt.ecn = ECN_CE;
                        p.stats.ecn_marks += 1;
                    }
                }
                EcnPoint::Dequeue => entry.ect = !pkt.is_ce(),
            }
        }
        let pushed = if self.cfg.pfc.is_some() {
            p.queue
                .push_over(entry)
                .map_err(|_| DropReason::PfcOverflow)
        } else {
            let room = match self.cfg.trim {
                Some(trim) if !pkt.is_control() => trim.threshold_bytes.min(p.queue.cap_bytes()),
                _ => p.queue.cap_bytes(),
            };
            let fits = p.queue.bytes() + u64::from(entry.bytes) <= room;
            match (fits && p.queue.push(entry).is_ok(), self.cfg.trim) {
                (true, _) => Ok(()),
                (false, Some(_)) if !pkt.is_control() => {
                    // No room: cut it to its headers and send them on as control.
                    pkt.trim();
                    p.stats.trims += 1;
                    entry.bytes = pkt.wire_len();
                    entry.ect = false;
                    if self.cfg.control_priority {
                        return self.push_control(port, entry);
                    }
                    p.queue.push(entry).map_err(|_| DropReason::TailDrop)
                }
                (false, _) => Err(DropReason::TailDrop),
            }
        };
        if let Err(reason) = pushed {
            p.stats.drops += 1;
            return Verdict::Dropped(reason);
        }
        p.stats.max_queue_bytes = p.stats.max_queue_bytes.max(p.queue.bytes());
        if let Some(pfc) = self.cfg.pfc {
            let ing = &mut self.ports[usize::from(in_port)];
            ing.ingress_bytes += u64::from(entry.bytes);
            if ing.ingress_bytes > pfc.xoff_bytes && !ing.pause_sent {
                ing.pause_sent = true;
                ing.stats.pauses_sent += 1;
                self.events.push_back(SwitchEvent::Pause { port: in_port });
            }
        }
        Verdict::Enqueued { port }
    }

    /// Queues a control packet in `port`'s control queue (outside PFC accounting).
    fn push_control(&mut self, port: u16, entry: Entry<H>) -> Verdict {
        let p = &mut self.ports[usize::from(port)];
        match p.control.push(entry) {
            Ok(()) => Verdict::Enqueued { port },
            Err(_) => {
                p.stats.drops += 1;
                Verdict::Dropped(DropReason::TailDrop)
            }
        }
    }

    /// Port `port` is free to start a transmission: the next packet, control before
    /// data, unless both queues are empty or the port is down. A PFC pause stops the
    /// data queue only, as per-priority PFC pauses only the data class.
    pub fn poll_dequeue(&mut self, now: Nanos, port: u16) -> Option<Dequeued<H>> {
        let p = &mut self.ports[usize::from(port)];
        if !p.up {
            return None;
        }
        if let Some(e) = p.control.pop() {
            p.stats.tx_bytes += u64::from(e.bytes);
            p.stats.tx_packets += 1;
            return Some(Dequeued {
                handle: e.handle,
                bytes: e.bytes,
                int_hop: None,
                mark_ce: false,
            });
        }
        if p.paused {
            return None;
        }
        let e = p.queue.pop()?;
        p.stats.tx_bytes += u64::from(e.bytes);
        p.stats.tx_packets += 1;
        let left = p.queue.bytes();
        let mark_ce = match self.cfg.ecn {
            Some(ecn) if e.ect => mark(&ecn, left, &mut self.rng),
            _ => false,
        };
        if mark_ce {
            p.stats.ecn_marks += 1;
        }
        let int_hop = self.cfg.int.then(|| IntHop {
            node: self.cfg.id,
            in_port: e.in_port,
            out_port: port,
            qlen: left.min(u64::from(u32::MAX)) as u32,
            ts: now,
            tx_bytes: p.stats.tx_bytes,
            rate_mbps: p.rate_mbps,
            latency: now.saturating_sub(e.enqueued_at).min(u64::from(u32::MAX)) as u32,
        });
        self.release_ingress(e.in_port, e.bytes);
        Some(Dequeued {
            handle: e.handle,
            bytes: e.bytes,
            int_hop,
            mark_ce,
        })
    }

    fn release_ingress(&mut self, in_port: u16, bytes: u32) {
        if let Some(pfc) = self.cfg.pfc {
            let ing = &mut self.ports[usize::from(in_port)];
            ing.ingress_bytes -= u64::from(bytes);
            if ing.pause_sent && ing.ingress_bytes <= pfc.xon_bytes {
                ing.pause_sent = false;
                self.events.push_back(SwitchEvent::Resume { port: in_port });
            }
        }
    }

    /// The next PFC frame the switch wants sent.
    pub fn poll_event(&mut self) -> Option<SwitchEvent> {
        self.events.pop_front()
    }

    /// The peer on `port` paused or resumed us.
    pub fn handle_pause(&mut self, port: u16, paused: bool) {
        self.ports[usize::from(port)].paused = paused;
    }

    /// A link went down or came up. Going down empties the egress queue; the
    /// returned handles are the packets lost with it.
    pub fn set_port_up(&mut self, port: u16, up: bool, lost: &mut Vec<H>) {
        let p = &mut self.ports[usize::from(port)];
        p.up = up;
        if !up {
            p.paused = false;
            let control: Vec<Entry<H>> = p.control.drain().collect();
            let data: Vec<Entry<H>> = p.queue.drain().collect();
            p.stats.drops += (control.len() + data.len()) as u64;
            lost.extend(control.iter().map(|e| e.handle));
            for e in data {
                lost.push(e.handle);
                self.release_ingress(e.in_port, e.bytes);
            }
        }
    }

    /// Changes a port's egress rate (a degraded link).
    pub fn set_port_rate(&mut self, port: u16, rate_mbps: u32) {
        self.ports[usize::from(port)].rate_mbps = rate_mbps;
    }

    /// Bytes waiting in `port`'s control queue.
    pub fn control_queue_bytes(&self, port: u16) -> u64 {
        self.ports[usize::from(port)].control.bytes()
    }

    fn choose_port(&mut self, now: Nanos, pkt: &Packet) -> Option<u16> {
        let all = self.routes.candidates(pkt.dst);
        let mut up = [0u16; lb::MAX_CANDIDATES];
        let mut n = 0;
        for &c in all {
            if self.ports[usize::from(c)].up && n < up.len() {
                up[n] = c;
                n += 1;
            }
        }
        if n == 0 {
            return None;
        }
        let cands = &up[..n];
        if n == 1 {
            return Some(cands[0]);
        }
        let ports = &self.ports;
        let load = |p: u16| ports[usize::from(p)].queue.bytes();
        Some(self.lb.choose(
            self.cfg.lb,
            now,
            pkt,
            cands,
            load,
            self.cfg.seed,
            &mut self.rng,
        ))
    }
}

/// RED-style marking decision for a data queue holding `q` bytes.
fn mark(ecn: &EcnConfig, q: u64, rng: &mut Rng) -> bool {
    if q <= ecn.kmin_bytes {
        false
    } else if q >= ecn.kmax_bytes {
        true
    } else {
        let f = (q - ecn.kmin_bytes) as f64 / (ecn.kmax_bytes - ecn.kmin_bytes) as f64;
        rng.chance(f * ecn.pmax)
    }
}

#[cfg(test)]
mod tests;
