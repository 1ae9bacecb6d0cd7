//! Path selection among equal-cost egress ports.

use crate::packet::{Nanos, Packet};
use crate::rng::{splitmix64, Rng};
use crate::wire::ROCEV2_UDP_PORT;

/// Most equal-cost candidates one decision considers.
pub const MAX_CANDIDATES: usize = 64;
/// Entries of the flowlet table (hashed, collisions share an entry as in hardware).
const FLOWLET_SLOTS: usize = 4096;

/// How a switch picks among equal-cost next hops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    /// Hash of the 5-tuple, UDP source port (entropy) included.
    Ecmp,
    /// A uniformly random candidate per packet.
    SprayRandom,
    /// Candidates in turn per packet (one counter per destination).
    SprayRr,
    /// The candidate with the fewest queued bytes, per packet (DLB / adaptive
    /// routing); ties broken at random.
    Adaptive,
    /// DRILL(2,1): the least loaded of two random candidates and the last choice for
    /// this destination.
    P2c,
    /// A flow keeps its port until it pauses longer than the gap, then gets a random
    /// one (LetFlow-style flowlet switching).
    Flowlet { gap_ns: Nanos },
}

#[derive(Debug, Clone, Copy, Default)]
struct Flowlet {
    key: u64,
    last_seen: Nanos,
    port: u16,
    valid: bool,
}

#[derive(Debug, Clone)]
pub(super) struct LbState {
    rr: Vec<u32>,
    best: Vec<u16>,
    flowlets: Vec<Flowlet>,
}

/// The ECMP hash of a packet's 5-tuple under a switch's seed. Hosts stand for their
/// IPv4 addresses; the protocol is UDP and the destination port 4791.
pub fn ecmp_hash(seed: u64, pkt: &Packet) -> u64 {
    let a = (u64::from(pkt.src) << 32) | u64::from(pkt.dst);
    let b = (u64::from(pkt.entropy) << 32) | (u64::from(ROCEV2_UDP_PORT) << 8) | 17;
    splitmix64(splitmix64(seed ^ a) ^ b)
}

impl LbState {
    pub(super) fn new(hosts: usize) -> LbState {
        LbState {
            rr: vec![0; hosts],
            best: vec![u16::MAX; hosts],
            flowlets: Vec::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn choose(
        &mut self,
        policy: LbPolicy,
        now: Nanos,
        pkt: &Packet,
        cands: &[u16],
        load: impl Fn(u16) -> u64,
        seed: u64,
        rng: &mut Rng,
    ) -> u16 {
        let n = cands.len() as u32;
        let dst = pkt.dst as usize;
        match policy {
            LbPolicy::Ecmp => cands[(ecmp_hash(seed, pkt) % u64::from(n)) as usize],
            LbPolicy::SprayRandom => cands[rng.below(n) as usize],
            LbPolicy::SprayRr => {
                let slot = self.rr.get_mut(dst).expect("destination is a host");
                let c = cands[(*slot % n) as usize];
                *slot = slot.wrapping_add(1);
                c
            }
            LbPolicy::Adaptive => {
                let mut best = cands[0];
                let mut best_load = u64::MAX;
                let mut ties = 0u32;
                for &c in cands {
                    let l = load(c);
                    if l < best_load {
                        best = c;
                        best_load = l;
                        ties = 1;
                    } else if l == best_load {
                        // Reservoir sampling among equally loaded ports.
                        ties += 1;
                        if rng.below(ties) == 0 {
                            best = c;
                        }
                    }
                }
                best
            }
            LbPolicy::P2c => {
                let a = cands[rng.below(n) as usize];
                let b = cands[rng.below(n) as usize];
                let mut best = if load(a) <= load(b) { a } else { b };
                let remembered = self.best[dst];
                if cands.contains(&remembered) && load(remembered) < load(best) {
                    best = remembered;
                }
                self.best[dst] = best;
                best
            }
            LbPolicy::Flowlet { gap_ns } => {
                if self.flowlets.is_empty() {
                    self.flowlets = vec![Flowlet::default(); FLOWLET_SLOTS];
                }
                let key = ecmp_hash(seed, pkt);
                let f = &mut self.flowlets[(key % FLOWLET_SLOTS as u64) as usize];
                let fresh = !f.valid
                    || f.key != key
                    || now.saturating_sub(f.last_seen) > gap_ns
                    || !cands.contains(&f.port);
                if fresh {
                    f.port = cands[rng.below(n) as usize];
                    f.key = key;
                    f.valid = true;
                }
                f.last_seen = now;
                f.port
            }
        }
    }
}
