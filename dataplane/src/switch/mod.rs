//! A fablab switch as a sans-IO state machine: ports with bounded egress queues,
//! ECN marking, tail drop or PFC, INT stamping, and per-packet path selection among
//! equal-cost next hops.
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
    /// `Some` makes the switch lossless.
    pub pfc: Option<PfcConfig>,
    /// Stamp INT into data packets.
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
    /// The egress queue was full (lossy mode).
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
}

#[derive(Debug, Clone)]
struct Port<H> {
    queue: EgressQueue<H>,
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

    /// A packet arrived on `in_port`: pick its egress port, mark ECN, queue or drop.
    pub fn handle_packet(
        &mut self,
        now: Nanos,
        in_port: u16,
        pkt: &mut Packet,
        handle: H,
    ) -> Verdict {
        let bytes = pkt.wire_len();
        let Some(port) = self.choose_port(now, pkt) else {
            return Verdict::Dropped(DropReason::NoRoute);
        };
        if self.cfg.int && pkt.kind == Kind::Data {
            // The first INT-capable hop is the INT source; later hops keep it on.
            pkt.int_enabled = true;
        }
        let p = &mut self.ports[usize::from(port)];
        if let (Some(ecn), true) = (self.cfg.ecn, pkt.ecn != 0 && pkt.kind == Kind::Data) {
            let q = p.queue.bytes();
            let mark = if q <= ecn.kmin_bytes {
                false
            } else if q >= ecn.kmax_bytes {
                true
            } else {
                let f = (q - ecn.kmin_bytes) as f64 / (ecn.kmax_bytes - ecn.kmin_bytes) as f64;
                self.rng.chance(f * ecn.pmax)
            };
            if mark && pkt.ecn != ECN_CE {
                pkt.ecn = ECN_CE;
                p.stats.ecn_marks += 1;
            }
        }
        let entry = Entry {
            handle,
            bytes,
            in_port,
            enqueued_at: now,
        };
        let pushed = if self.cfg.pfc.is_some() {
            p.queue
                .push_over(entry)
                .map_err(|_| DropReason::PfcOverflow)
        } else {
            p.queue.push(entry).map_err(|_| DropReason::TailDrop)
        };
        if let Err(reason) = pushed {
            p.stats.drops += 1;
            return Verdict::Dropped(reason);
        }
        p.stats.max_queue_bytes = p.stats.max_queue_bytes.max(p.queue.bytes());
        if let Some(pfc) = self.cfg.pfc {
            let ing = &mut self.ports[usize::from(in_port)];
            ing.ingress_bytes += u64::from(bytes);
            if ing.ingress_bytes > pfc.xoff_bytes && !ing.pause_sent {
                ing.pause_sent = true;
                ing.stats.pauses_sent += 1;
                self.events.push_back(SwitchEvent::Pause { port: in_port });
            }
        }
        Verdict::Enqueued { port }
    }

    /// Port `port` is free to start a transmission: the next packet, unless the
    /// queue is empty, the port is paused or down.
    pub fn poll_dequeue(&mut self, now: Nanos, port: u16) -> Option<Dequeued<H>> {
        let p = &mut self.ports[usize::from(port)];
        if p.paused || !p.up {
            return None;
        }
        let e = p.queue.pop()?;
        p.stats.tx_bytes += u64::from(e.bytes);
        p.stats.tx_packets += 1;
        let int_hop = self.cfg.int.then(|| IntHop {
            node: self.cfg.id,
            in_port: e.in_port,
            out_port: port,
            qlen: p.queue.bytes().min(u64::from(u32::MAX)) as u32,
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
            let drained: Vec<Entry<H>> = p.queue.drain().collect();
            p.stats.drops += drained.len() as u64;
            for e in drained {
                lost.push(e.handle);
                self.release_ingress(e.in_port, e.bytes);
            }
        }
    }

    /// Changes a port's egress rate (a degraded link).
    pub fn set_port_rate(&mut self, port: u16, rate_mbps: u32) {
        self.ports[usize::from(port)].rate_mbps = rate_mbps;
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

#[cfg(test)]
mod tests;
