//! Fabrics as graphs: nodes (hosts 0..H, then switches) joined by full-duplex links,
//! and the equal-cost next hops every switch has toward every host.

use std::collections::VecDeque;

use crate::packet::Nanos;

/// Which fabric to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopologyKind {
    /// Two switches joined by one bottleneck link, `hosts` hosts on each.
    Dumbbell { hosts: u32 },
    /// `leaves` leaf switches each linked to all `spines`, `hosts_per_leaf` under each.
    LeafSpine {
        leaves: u32,
        spines: u32,
        hosts_per_leaf: u32,
    },
    /// A k-ary fat-tree: k pods of k/2 edge and k/2 aggregation switches, (k/2)²
    /// cores, k³/4 hosts.
    FatTree { k: u32 },
}

/// A fabric to build.
#[derive(Debug, Clone, PartialEq)]
pub struct TopologySpec {
    pub kind: TopologyKind,
    /// Host-to-switch links.
    pub host_rate_mbps: u32,
    /// Switch-to-switch links.
    pub fabric_rate_mbps: u32,
    pub link_delay: Nanos,
}

/// One end of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRef {
    pub node: u32,
    pub port: u16,
}

/// A full-duplex link.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub a: PortRef,
    pub b: PortRef,
    pub rate_mbps: u32,
    pub delay: Nanos,
}

/// A built fabric.
#[derive(Debug, Clone)]
pub struct Topology {
    pub hosts: u32,
    /// Node names: `h0`.., then switch names (`leaf0`, `spine3`, `edge1.0`, ...).
    pub names: Vec<String>,
    /// For every node, the link on each of its ports.
    pub ports: Vec<Vec<usize>>,
    pub links: Vec<Link>,
    /// Hops (links) from every node to every host: `dist[host][node]`.
    pub dist: Vec<Vec<u32>>,
}

struct Builder {
    names: Vec<String>,
    ports: Vec<Vec<usize>>,
    links: Vec<Link>,
}

impl Builder {
    fn node(&mut self, name: String) -> u32 {
        self.names.push(name);
        self.ports.push(Vec::new());
        (self.names.len() - 1) as u32
    }
    fn link(&mut self, a: u32, b: u32, rate_mbps: u32, delay: Nanos) {
        let pa = self.ports[a as usize].len() as u16;
        let pb = self.ports[b as usize].len() as u16;
        let i = self.links.len();
        self.links.push(Link {
            a: PortRef { node: a, port: pa },
            b: PortRef { node: b, port: pb },
            rate_mbps,
            delay,
        });
        self.ports[a as usize].push(i);
        self.ports[b as usize].push(i);
    }
}

impl Topology {
    pub fn build(spec: &TopologySpec) -> Topology {
        let mut b = Builder {
            names: Vec::new(),
            ports: Vec::new(),
            links: Vec::new(),
        };
        let (h, f, d) = (spec.host_rate_mbps, spec.fabric_rate_mbps, spec.link_delay);
        let hosts = match spec.kind {
            TopologyKind::Dumbbell { hosts } => 2 * hosts,
            TopologyKind::LeafSpine {
                leaves,
                hosts_per_leaf,
                ..
            } => leaves * hosts_per_leaf,
            TopologyKind::FatTree { k } => k * k * k / 4,
        };
        for i in 0..hosts {
            b.node(format!("h{i}"));
        }
        match spec.kind {
            TopologyKind::Dumbbell { hosts: n } => {
                let s0 = b.node("sw0".into());
                let s1 = b.node("sw1".into());
                for i in 0..n {
                    b.link(s0, i, h, d);
                }
                for i in 0..n {
                    b.link(s1, n + i, h, d);
                }
                b.link(s0, s1, f, d);
            }
            TopologyKind::LeafSpine {
                leaves,
                spines,
                hosts_per_leaf,
            } => {
                let leaf: Vec<u32> = (0..leaves).map(|i| b.node(format!("leaf{i}"))).collect();
                let spine: Vec<u32> = (0..spines).map(|i| b.node(format!("spine{i}"))).collect();
                for (l, &ln) in leaf.iter().enumerate() {
                    for j in 0..hosts_per_leaf {
                        b.link(ln, l as u32 * hosts_per_leaf + j, h, d);
                    }
                }
                for &ln in &leaf {
                    for &sn in &spine {
                        b.link(ln, sn, f, d);
                    }
                }
            }
            TopologyKind::FatTree { k } => {
                let half = k / 2;
                let mut edges = Vec::new();
                let mut aggs = Vec::new();
                for p in 0..k {
                    for i in 0..half {
                        edges.push(b.node(format!("edge{p}.{i}")));
                    }
                    for i in 0..half {
                        aggs.push(b.node(format!("agg{p}.{i}")));
                    }
                }
                let cores: Vec<u32> = (0..half * half)
                    .map(|i| b.node(format!("core{i}")))
                    .collect();
                for (e, &en) in edges.iter().enumerate() {
                    for j in 0..half {
                        b.link(en, e as u32 * half + j, h, d);
                    }
                }
                for p in 0..k {
                    for i in 0..half {
                        for j in 0..half {
                            b.link(
                                edges[(p * half + i) as usize],
                                aggs[(p * half + j) as usize],
                                f,
                                d,
                            );
                        }
                    }
                }
                for p in 0..k {
                    for j in 0..half {
                        for c in 0..half {
                            b.link(
                                aggs[(p * half + j) as usize],
                                cores[(j * half + c) as usize],
                                f,
                                d,
                            );
                        }
                    }
                }
            }
        }
        let mut t = Topology {
            hosts,
            names: b.names,
            ports: b.ports,
            links: b.links,
            dist: Vec::new(),
        };
        t.dist = (0..hosts).map(|h| t.bfs(h)).collect();
        t
    }

    /// The node and port at the other end of `node`'s `port`.
    pub fn peer(&self, node: u32, port: u16) -> PortRef {
        let l = &self.links[self.ports[node as usize][usize::from(port)]];
        if l.a.node == node && l.a.port == port {
            l.b
        } else {
            l.a
        }
    }

    pub fn is_host(&self, node: u32) -> bool {
        node < self.hosts
    }

    pub fn node_count(&self) -> usize {
        self.names.len()
    }

    /// Hops from every node to `host`; hosts other than `host` are not transit.
    fn bfs(&self, host: u32) -> Vec<u32> {
        let mut dist = vec![u32::MAX; self.node_count()];
        dist[host as usize] = 0;
        let mut q = VecDeque::from([host]);
        while let Some(n) = q.pop_front() {
            if n != host && self.is_host(n) {
                continue;
            }
            for p in 0..self.ports[n as usize].len() {
                let m = self.peer(n, p as u16).node;
                if dist[m as usize] == u32::MAX {
                    dist[m as usize] = dist[n as usize] + 1;
                    q.push_back(m);
                }
            }
        }
        dist
    }

    /// Equal-cost egress ports of switch `node` toward every host.
    pub fn routes(&self, node: u32) -> Vec<Vec<u16>> {
        (0..self.hosts)
            .map(|h| {
                let here = self.dist[h as usize][node as usize];
                (0..self.ports[node as usize].len() as u16)
                    .filter(|&p| {
                        let m = self.peer(node, p).node;
                        (m == h || !self.is_host(m))
                            && here != u32::MAX
                            && self.dist[h as usize][m as usize].saturating_add(1) == here
                    })
                    .collect()
            })
            .collect()
    }

    /// Links on a shortest path between two hosts.
    pub fn hops(&self, a: u32, b: u32) -> u32 {
        self.dist[b as usize][a as usize]
    }

    /// The link joining two named nodes.
    pub fn link_between(&self, a: &str, b: &str) -> Option<usize> {
        let ia = self.names.iter().position(|n| n == a)? as u32;
        let ib = self.names.iter().position(|n| n == b)? as u32;
        self.links
            .iter()
            .position(|l| (l.a.node == ia && l.b.node == ib) || (l.a.node == ib && l.b.node == ia))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: TopologyKind) -> TopologySpec {
        TopologySpec {
            kind,
            host_rate_mbps: 100_000,
            fabric_rate_mbps: 100_000,
            link_delay: 1_000,
        }
    }

    #[test]
    fn leaf_spine_routes_spread_over_every_spine() {
        let t = Topology::build(&spec(TopologyKind::LeafSpine {
            leaves: 2,
            spines: 4,
            hosts_per_leaf: 3,
        }));
        assert_eq!(t.hosts, 6);
        assert_eq!(t.node_count(), 6 + 2 + 4);
        let leaf0 = 6;
        let r = t.routes(leaf0);
        assert_eq!(r[0], [0], "a local host has one port");
        assert_eq!(r[4].len(), 4, "a remote host is reachable over every spine");
        let spine0 = 8;
        assert_eq!(t.routes(spine0)[4].len(), 1);
        assert_eq!(t.hops(0, 4), 4);
        assert_eq!(t.hops(0, 1), 2);
        assert!(t.link_between("leaf1", "spine3").is_some());
    }

    #[test]
    fn fat_tree_has_the_textbook_shape() {
        let t = Topology::build(&spec(TopologyKind::FatTree { k: 4 }));
        assert_eq!(t.hosts, 16);
        assert_eq!(t.node_count(), 16 + 8 + 8 + 4);
        // Every switch has k ports.
        for n in 16..t.node_count() as u32 {
            assert_eq!(t.ports[n as usize].len(), 4, "{}", t.names[n as usize]);
        }
        // Host 0 to host 15 (another pod): 6 links; the edge switch has 2 choices,
        // the aggregation switch 2 more.
        assert_eq!(t.hops(0, 15), 6);
        let edge0 = 16;
        assert_eq!(t.routes(edge0)[15].len(), 2);
    }

    #[test]
    fn dumbbell_has_one_bottleneck() {
        let t = Topology::build(&spec(TopologyKind::Dumbbell { hosts: 2 }));
        assert_eq!(t.hosts, 4);
        assert_eq!(t.hops(0, 3), 3);
        assert_eq!(t.routes(4)[3], [2]);
    }
}
