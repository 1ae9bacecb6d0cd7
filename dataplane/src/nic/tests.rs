//! Two NICs driven through a hostile wire on a fake clock (quinn-proto's `Pair`
//! idea): loss, duplication, reordering and an outage, and the stream that comes out
//! must be every byte exactly once, in order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use proptest::prelude::*;

use super::*;
use crate::rng::Rng;

#[derive(Debug, Clone, Copy)]
struct Wire {
    loss: f64,
    dup: f64,
    /// Extra random delay per packet, up to this many ns: reorders packets.
    jitter: u64,
    delay: u64,
    /// Nothing crosses the wire during this interval.
    outage: (Nanos, Nanos),
    /// Serialization time per packet at the sender's port.
    ser: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrive(usize, usize), // (to host, packet slot)
    PortFree(usize),
    Wake(usize),
}

struct Pair {
    nics: [Nic; 2],
    wire: Wire,
    rng: Rng,
    now: Nanos,
    seq: u64,
    heap: BinaryHeap<Reverse<(Nanos, u64, Ev)>>,
    packets: Vec<Packet>,
    busy: [bool; 2],
    wake: [Option<Nanos>; 2],
    delivered: Vec<(u64, u64)>,
    receiver_done: u32,
    sender_done: bool,
}

fn nic(host: u32, reorder_window: u32, seed: u64) -> Nic {
    Nic::new(NicConfig {
        host,
        line_rate_bps: 100_000_000_000,
        mtu: 1000,
        window_bytes: 20_000,
        base_rtt: 10_000,
        rto_min: 50_000,
        pacing_slack: 0,
        spray: SprayPolicy::PerPacket,
        entropies: 8,
        reorder_window,
        cc: "none".into(),
        cc_params: CcParams::new(),
        cnp_interval: 50_000,
        trace_cc: false,
        int: super::IntRequest::Auto,
        // These tests drop and reorder packets on a wire without switches: no trims,
        // so losses are found by RACK; every packet is acknowledged.
        ack_every_bytes: 0,
        trimming: false,
        seed,
    })
}

impl Pair {
    fn new(wire: Wire, reorder_window: u32, seed: u64) -> Pair {
        Pair {
            nics: [
                nic(0, reorder_window, seed),
                nic(1, reorder_window, seed + 1),
            ],
            wire,
            rng: Rng::new(seed),
            now: 0,
            seq: 0,
            heap: BinaryHeap::new(),
            packets: Vec::new(),
            busy: [false; 2],
            wake: [None; 2],
            delivered: Vec::new(),
            receiver_done: 0,
            sender_done: false,
        }
    }

    fn at(&mut self, t: Nanos, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((t, self.seq, ev)));
    }

    fn kick(&mut self, h: usize) {
        if self.nics[h].poll_timeout().is_some_and(|t| t <= self.now) {
            self.nics[h].handle_timeout(self.now);
            self.drain_events(h);
        }
        if !self.busy[h] {
            if let Some(p) = self.nics[h].poll_transmit(self.now) {
                self.busy[h] = true;
                let t = self.now + self.wire.ser;
                self.at(t, Ev::PortFree(h));
                let w = self.wire;
                let (a, b) = w.outage;
                let copies = if self.rng.chance(w.loss) || (a..b).contains(&self.now) {
                    0
                } else if self.rng.chance(w.dup) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let jitter = if w.jitter > 0 {
                        self.rng.next_u64() % w.jitter
                    } else {
                        0
                    };
                    self.packets.push(p);
                    let slot = self.packets.len() - 1;
                    self.at(t + w.delay + jitter, Ev::Arrive(1 - h, slot));
                }
            }
        }
        // A time already past is a paced packet waiting for the busy port: the
        // port's PortFree will kick again.
        if let Some(t) = self.nics[h].poll_timeout().filter(|&t| t > self.now) {
            if self.wake[h] != Some(t) {
                self.wake[h] = Some(t);
                self.at(t, Ev::Wake(h));
            }
        }
    }

    fn drain_events(&mut self, h: usize) {
        while let Some(e) = self.nics[h].poll_event() {
            match e {
                NicEvent::Delivered { offset, bytes, .. } => self.delivered.push((offset, bytes)),
                NicEvent::ReceiverDone { .. } => self.receiver_done += 1,
                NicEvent::SenderDone { .. } => self.sender_done = true,
                NicEvent::CcChange { .. } => {}
            }
        }
    }

    fn run(&mut self, bytes: u64) {
        self.nics[0]
            .start_flow(
                0,
                FlowSpec {
                    flow: 7,
                    src: 0,
                    dst: 1,
                    bytes,
                },
                &Registry::default(),
            )
            .unwrap();
        self.kick(0);
        let mut steps = 0u64;
        while let Some(Reverse((t, _, ev))) = self.heap.pop() {
            steps += 1;
            assert!(
                steps < 2_000_000,
                "no progress: {:?}",
                self.nics[0].senders()[0].stats
            );
            self.now = t;
            match ev {
                Ev::Arrive(h, slot) => {
                    let p = self.packets[slot];
                    self.nics[h].handle_packet(t, &p);
                    self.drain_events(h);
                    self.kick(h);
                }
                Ev::PortFree(h) => {
                    self.busy[h] = false;
                    self.kick(h);
                }
                Ev::Wake(h) => {
                    if self.wake[h] != Some(t) {
                        continue;
                    }
                    self.wake[h] = None;
                    self.nics[h].handle_timeout(t);
                    self.drain_events(h);
                    self.kick(h);
                }
            }
            if self.sender_done
                && self.receiver_done > 0
                && self
                    .heap
                    .iter()
                    .all(|Reverse((_, _, e))| !matches!(e, Ev::Arrive(..)))
            {
                break;
            }
        }
    }

    fn assert_exact(&self, bytes: u64) {
        let mut at = 0;
        for &(offset, n) in &self.delivered {
            assert_eq!(
                offset, at,
                "delivery out of order or repeated: {:?}",
                self.delivered
            );
            at += n;
        }
        assert_eq!(at, bytes, "not every byte delivered");
        assert_eq!(self.receiver_done, 1);
        assert!(self.sender_done);
    }
}

const CLEAN: Wire = Wire {
    loss: 0.0,
    dup: 0.0,
    jitter: 0,
    delay: 5_000,
    outage: (0, 0),
    ser: 100,
};

#[test]
fn clean_wire_delivers_everything_without_retransmitting() {
    let mut p = Pair::new(CLEAN, 64, 1);
    p.run(123_456);
    p.assert_exact(123_456);
    assert_eq!(p.nics[0].senders()[0].stats.retransmits, 0);
}

#[test]
fn reordering_within_the_window_causes_no_retransmission() {
    // Up to 1 µs of jitter each way on a 10 µs RTT: heavy reordering, but within
    // the 2.5 µs reordering window.
    let wire = Wire {
        jitter: 1_000,
        ..CLEAN
    };
    let mut p = Pair::new(wire, 256, 2);
    p.run(500_000);
    p.assert_exact(500_000);
    assert!(
        p.nics[1].receiver_stats().out_of_order > 50,
        "the wire did reorder"
    );
    assert_eq!(p.nics[0].senders()[0].stats.retransmits, 0);
}

#[test]
fn deeper_reordering_is_no_retransmission_storm() {
    // Up to 6 µs of jitter each way, beyond the initial reordering window: the first
    // spurious retransmissions come back as D-SACKs and widen the window.
    let wire = Wire {
        jitter: 6_000,
        ..CLEAN
    };
    let mut p = Pair::new(wire, 256, 4);
    p.run(2_000_000);
    p.assert_exact(2_000_000);
    let s = p.nics[0].senders()[0].stats;
    assert!(s.spurious_retransmits > 0, "{s:?}");
    assert!(
        s.retransmits * 100 <= s.packets_sent,
        "more than 1% of packets retransmitted: {s:?}"
    );
}

#[test]
fn an_outage_is_recovered_by_the_timer() {
    let wire = Wire {
        outage: (20_000, 200_000),
        ..CLEAN
    };
    let mut p = Pair::new(wire, 64, 3);
    p.run(300_000);
    p.assert_exact(300_000);
    assert!(p.nics[0].senders()[0].stats.timeouts > 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn exactly_once_in_order_under_loss_duplication_reordering_and_outage(
        loss in 0.0f64..0.15,
        dup in 0.0f64..0.1,
        jitter in 0u64..20_000,
        outage_start in 0u64..100_000,
        outage_len in prop_oneof![Just(0u64), 1u64..300_000],
        bytes in 1u64..200_000,
        reorder_window in 4u32..128,
        seed in any::<u64>(),
    ) {
        let wire = Wire {
            loss,
            dup,
            jitter,
            delay: 5_000,
            outage: (outage_start, outage_start + outage_len),
            ser: 100,
        };
        let mut p = Pair::new(wire, reorder_window, seed);
        p.run(bytes);
        p.assert_exact(bytes);
    }
}
