//! Traffic matrices: which flows run, between which hosts, how big, and when they
//! start.

use crate::packet::{FlowId, HostId, Nanos};
use crate::rng::Rng;

/// A flow-size distribution: points of a cumulative distribution function.
#[derive(Debug, Clone, PartialEq)]
pub struct SizeCdf {
    /// (size in bytes, cumulative probability in 0..=1), sizes and probabilities
    /// non-decreasing, the last probability 1.
    points: Vec<(f64, f64)>,
}

impl SizeCdf {
    /// Parses the two-column format of the HPCC simulator's traffic generator: one
    /// `size_bytes cumulative_percent` pair per line; `#` starts a comment. Errors
    /// name the line.
    pub fn parse(text: &str) -> Result<SizeCdf, String> {
        let mut points: Vec<(f64, f64)> = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut cols = line.split_whitespace();
            let (Some(a), Some(b), None) = (cols.next(), cols.next(), cols.next()) else {
                return Err(format!(
                    "line {}: expected `size percent`, found `{line}`",
                    n + 1
                ));
            };
            let size: f64 = a
                .parse()
                .map_err(|_| format!("line {}: size `{a}` is not a number", n + 1))?;
            let pct: f64 = b
                .parse()
                .map_err(|_| format!("line {}: percentile `{b}` is not a number", n + 1))?;
            if !(size >= 0.0 && size.is_finite() && (0.0..=100.0).contains(&pct)) {
                return Err(format!(
                    "line {}: need size >= 0 and 0 <= percent <= 100, found `{line}`",
                    n + 1
                ));
            }
            if let Some(&(ps, pp)) = points.last() {
                if size < ps || pct / 100.0 < pp {
                    return Err(format!(
                        "line {}: sizes and percentiles must not decrease",
                        n + 1
                    ));
                }
            }
            points.push((size, pct / 100.0));
        }
        match points.last() {
            None => Err("no points".into()),
            Some(&(_, p)) if (p - 1.0).abs() > 1e-9 => {
                Err(format!("the last percentile is {}, not 100", p * 100.0))
            }
            Some(_) => Ok(SizeCdf { points }),
        }
    }

    /// A size drawn by inverse transform with linear interpolation (as the HPCC
    /// generator does); at least 1 byte.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let mut prev = (0.0, 0.0);
        for &(s, p) in &self.points {
            if u <= p {
                let (ps, pp) = prev;
                let size = if p > pp {
                    ps + (s - ps) * (u - pp) / (p - pp)
                } else {
                    s
                };
                return (size.round() as u64).max(1);
            }
            prev = (s, p);
        }
        (self.points.last().map_or(1.0, |p| p.0) as u64).max(1)
    }

    /// The mean size in bytes (integral of the piecewise-linear CDF).
    pub fn mean(&self) -> f64 {
        let mut m = 0.0;
        let mut prev = (0.0, 0.0);
        for &(s, p) in &self.points {
            m += (p - prev.1) * (s + prev.0) / 2.0;
            prev = (s, p);
        }
        m.max(1.0)
    }
}

/// Which flows to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    /// Every host sends one flow; no host receives two. `stride` sends host i to
    /// host (i + stride) mod H; `None` draws a random derangement. With `senders`,
    /// only hosts 0..senders send (stride = hosts per leaf and senders = hosts per
    /// leaf is leaf 0 sending to leaf 1 and nothing coming back).
    Permutation {
        stride: Option<u32>,
        senders: Option<u32>,
    },
    /// `senders` hosts send to one receiver (host 0; senders drawn at random).
    Incast { senders: u32 },
    /// Every host sends to every other host.
    AllToAll,
    /// A ring all-reduce over the first `ranks` hosts: 2(ranks − 1) steps, each rank
    /// sending `flow_bytes / ranks` to the next one per step once it has received
    /// the previous step's chunk.
    AllreduceRing { ranks: u32 },
    /// `flows` flows arriving as a Poisson process at `load` of the hosts' total
    /// link capacity, random source and destination, sizes from `cdf`.
    Poisson { load: f64, cdf: SizeCdf, flows: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrafficSpec {
    pub pattern: Pattern,
    /// Bytes per flow (permutation, incast, all-to-all), per rank (all-reduce).
    pub flow_bytes: u64,
}

/// One planned flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowPlan {
    pub id: FlowId,
    pub src: HostId,
    pub dst: HostId,
    pub bytes: u64,
    pub start: Nanos,
    /// Start only once this flow has been fully received (all-reduce steps).
    pub after: Option<FlowId>,
}

/// Plans the flows of a traffic spec on `hosts` hosts with `host_rate_bps` links.
pub fn plan(spec: &TrafficSpec, hosts: u32, host_rate_bps: u64, rng: &mut Rng) -> Vec<FlowPlan> {
    let mut flows = Vec::new();
    let mut add = |src: u32, dst: u32, bytes: u64, start: Nanos, after: Option<FlowId>| {
        let id = flows.len() as FlowId;
        flows.push(FlowPlan {
            id,
            src,
            dst,
            bytes,
            start,
            after,
        });
        id
    };
    match &spec.pattern {
        Pattern::Permutation { stride, senders } => {
            let dsts: Vec<u32> = match stride {
                Some(s) => (0..hosts).map(|i| (i + s) % hosts).collect(),
                None => derangement(hosts, rng),
            };
            let n = senders.map_or(hosts, |s| s.min(hosts)) as usize;
            for (src, dst) in dsts.into_iter().enumerate().take(n) {
                if src as u32 != dst {
                    add(src as u32, dst, spec.flow_bytes, 0, None);
                }
            }
        }
        Pattern::Incast { senders } => {
            let mut others: Vec<u32> = (1..hosts).collect();
            shuffle(&mut others, rng);
            for &src in others.iter().take(*senders as usize) {
                add(src, 0, spec.flow_bytes, 0, None);
            }
        }
        Pattern::AllToAll => {
            for src in 0..hosts {
                for dst in 0..hosts {
                    if src != dst {
                        add(src, dst, spec.flow_bytes, 0, None);
                    }
                }
            }
        }
        Pattern::AllreduceRing { ranks } => {
            let r = *ranks;
            let chunk = spec.flow_bytes.div_ceil(u64::from(r)).max(1);
            let mut prev: Vec<Option<FlowId>> = vec![None; r as usize];
            for _step in 0..2 * (r - 1) {
                let mut this = vec![None; r as usize];
                for i in 0..r {
                    // Rank i sends once it has received the previous step from i - 1.
                    let after = prev[((i + r - 1) % r) as usize];
                    this[i as usize] = Some(add(i, (i + 1) % r, chunk, 0, after));
                }
                prev = this;
            }
        }
        Pattern::Poisson {
            load,
            cdf,
            flows: n,
        } => {
            let mean_gap_ns =
                cdf.mean() * 8.0 * 1e9 / (load * f64::from(hosts) * host_rate_bps as f64);
            let mut t = 0.0;
            for _ in 0..*n {
                t += rng.exp(mean_gap_ns);
                let src = rng.below(hosts);
                let mut dst = rng.below(hosts - 1);
                if dst >= src {
                    dst += 1;
                }
                add(src, dst, cdf.sample(rng), t as Nanos, None);
            }
        }
    }
    flows
}

fn shuffle(v: &mut [u32], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u32 + 1) as usize;
        v.swap(i, j);
    }
}

/// A uniformly drawn permutation without fixed points (by rejection).
fn derangement(n: u32, rng: &mut Rng) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n).collect();
    if n < 2 {
        return v;
    }
    loop {
        shuffle(&mut v, rng);
        if v.iter().enumerate().all(|(i, &d)| i as u32 != d) {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEBSEARCH: &str = include_str!("../../../scenarios/cdf/websearch.txt");

    #[test]
    fn cdf_parses_and_samples_within_range() {
        let cdf = SizeCdf::parse(WEBSEARCH).unwrap();
        let mut rng = Rng::new(1);
        let sizes: Vec<u64> = (0..20_000).map(|_| cdf.sample(&mut rng)).collect();
        assert!(sizes.iter().all(|&s| (1..=30_000_000).contains(&s)));
        let small = sizes.iter().filter(|&&s| s <= 10_000).count() as f64 / 20_000.0;
        assert!((small - 0.15).abs() < 0.02, "{small}");
        let mean = sizes.iter().sum::<u64>() as f64 / 20_000.0;
        assert!(
            (mean / cdf.mean() - 1.0).abs() < 0.1,
            "{mean} vs {}",
            cdf.mean()
        );
    }

    #[test]
    fn bad_cdf_lines_are_named() {
        assert!(SizeCdf::parse("0 0\n10 x\n")
            .unwrap_err()
            .starts_with("line 2"));
        assert!(SizeCdf::parse("0 0\n10 50\n5 100\n")
            .unwrap_err()
            .starts_with("line 3"));
        assert!(SizeCdf::parse("0 0\n10 50\n")
            .unwrap_err()
            .contains("not 100"));
    }

    #[test]
    fn permutations_are_derangements() {
        let mut rng = Rng::new(3);
        let flows = plan(
            &TrafficSpec {
                pattern: Pattern::Permutation {
                    stride: None,
                    senders: None,
                },
                flow_bytes: 1,
            },
            16,
            1,
            &mut rng,
        );
        assert_eq!(flows.len(), 16);
        let mut dsts: Vec<u32> = flows.iter().map(|f| f.dst).collect();
        assert!(flows.iter().all(|f| f.src != f.dst));
        dsts.sort();
        assert_eq!(dsts, (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn allreduce_ring_chains_steps() {
        let flows = plan(
            &TrafficSpec {
                pattern: Pattern::AllreduceRing { ranks: 4 },
                flow_bytes: 4000,
            },
            8,
            1,
            &mut Rng::new(1),
        );
        assert_eq!(flows.len(), 4 * 6);
        assert!(flows[..4]
            .iter()
            .all(|f| f.after.is_none() && f.bytes == 1000));
        // Step 1, rank 1 waits for step 0 of rank 0 (flow 0), which it receives.
        assert_eq!(flows[5].after, Some(0));
        assert_eq!(flows[5].src, 1);
    }

    #[test]
    fn poisson_offers_the_requested_load() {
        let cdf = SizeCdf::parse(WEBSEARCH).unwrap();
        let flows = plan(
            &TrafficSpec {
                pattern: Pattern::Poisson {
                    load: 0.5,
                    cdf: cdf.clone(),
                    flows: 20_000,
                },
                flow_bytes: 0,
            },
            16,
            100_000_000_000,
            &mut Rng::new(5),
        );
        let bytes: u64 = flows.iter().map(|f| f.bytes).sum();
        let span = flows.last().unwrap().start as f64 / 1e9;
        let load = bytes as f64 * 8.0 / span / (16.0 * 100e9);
        assert!((load - 0.5).abs() < 0.05, "{load}");
    }
}
