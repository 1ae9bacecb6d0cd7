//! NIC-side spraying: the UDP source port (entropy) each packet of a flow carries.
//! Hashing switches map entropies to paths, so choosing the entropy is choosing the
//! path without knowing the topology.

use std::collections::VecDeque;

use crate::rng::Rng;

/// Most entropies one flow sprays over: the whole ephemeral port range.
pub const MAX_ENTROPIES: usize = 0x4000;

/// How a flow picks each packet's entropy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SprayPolicy {
    /// One entropy for the whole flow: plain ECMP.
    Fixed,
    /// Cycle through the flow's entropies, one per packet.
    PerPacket,
    /// Recycle entropies whose packets came back without congestion; replace the
    /// others with fresh ones (in the spirit of UEC's REPS).
    Adaptive,
}

/// One flow's entropy chooser.
#[derive(Debug, Clone)]
pub struct Sprayer {
    policy: SprayPolicy,
    entropies: Vec<u16>,
    cursor: usize,
    /// Adaptive: entropies that came back clean, oldest first.
    good: VecDeque<u16>,
    rng: Rng,
}

/// Draws an entropy from the ephemeral port range 0xc000..=0xffff, as RoCE NICs do.
fn draw(rng: &mut Rng) -> u16 {
    0xc000 | (rng.below(0x4000) as u16)
}

impl Sprayer {
    /// `count` distinct entropies (clamped to 1..=[`MAX_ENTROPIES`]) chosen with
    /// `rng`: a random affine walk over the ephemeral range, so `count` =
    /// [`MAX_ENTROPIES`] cycles through every port once in a flow-specific order.
    pub fn new(policy: SprayPolicy, count: u32, mut rng: Rng) -> Sprayer {
        let count = match policy {
            SprayPolicy::Fixed => 1,
            _ => (count as usize).clamp(1, MAX_ENTROPIES),
        };
        // An odd stride is coprime with the range's power-of-two size, so the walk
        // visits `count` distinct ports before it repeats.
        let stride = rng.below(0x4000) as usize | 1;
        let start = rng.below(0x4000) as usize;
        let entropies = (0..count)
            .map(|i| 0xc000 | ((start + i * stride) & 0x3fff) as u16)
            .collect();
        Sprayer {
            policy,
            entropies,
            cursor: 0,
            good: VecDeque::with_capacity(count),
            rng,
        }
    }

    /// The entropy for the next packet.
    pub fn next_entropy(&mut self) -> u16 {
        match self.policy {
            SprayPolicy::Fixed => self.entropies[0],
            SprayPolicy::PerPacket => {
                let e = self.entropies[self.cursor];
                self.cursor = (self.cursor + 1) % self.entropies.len();
                e
            }
            SprayPolicy::Adaptive => match self.good.pop_front() {
                Some(e) => e,
                None => {
                    // Explore: a fresh entropy in place of the oldest one.
                    let e = draw(&mut self.rng);
                    self.entropies[self.cursor] = e;
                    self.cursor = (self.cursor + 1) % self.entropies.len();
                    e
                }
            },
        }
    }

    /// An ACK came back for a packet sent on `entropy`; `congested` when it saw ECN
    /// or a deep INT queue.
    pub fn feedback(&mut self, entropy: u16, congested: bool) {
        if self.policy == SprayPolicy::Adaptive
            && !congested
            && self.good.len() < self.entropies.len()
        {
            self.good.push_back(entropy);
        }
    }

    pub fn policy(&self) -> SprayPolicy {
        self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_never_changes_per_packet_cycles() {
        let mut f = Sprayer::new(SprayPolicy::Fixed, 16, Rng::new(1));
        let e = f.next_entropy();
        assert!((0..10).all(|_| f.next_entropy() == e));
        let mut p = Sprayer::new(SprayPolicy::PerPacket, 4, Rng::new(1));
        let first: Vec<u16> = (0..4).map(|_| p.next_entropy()).collect();
        let second: Vec<u16> = (0..4).map(|_| p.next_entropy()).collect();
        assert_eq!(first, second);
        assert!(first.iter().all(|e| *e >= 0xc000));
    }

    #[test]
    fn adaptive_reuses_clean_paths_and_drops_congested_ones() {
        let mut a = Sprayer::new(SprayPolicy::Adaptive, 8, Rng::new(3));
        let clean = a.next_entropy();
        let hot = a.next_entropy();
        a.feedback(clean, false);
        a.feedback(hot, true);
        assert_eq!(a.next_entropy(), clean, "a clean entropy is recycled first");
        let fresh = a.next_entropy();
        assert_ne!(fresh, hot, "a congested entropy is not recycled");
    }
}
