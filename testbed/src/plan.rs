//! What a topology becomes in the kernel: computed from the topology alone, with no
//! system call, so it can be checked by unit tests and printed before anything is
//! built.

use std::net::Ipv4Addr;

use fablab_dataplane::sim::topology::Topology;
use fablab_dataplane::wire::addr::{self, GATEWAY_IP, HOST_PREFIX, MAX_HOSTS};

use crate::{check_name, Error, Naming};

/// One end of a veth pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Topology node (hosts first, then switches).
    pub node: u32,
    pub port: u16,
    /// The namespace the interface lives in.
    pub ns: String,
    /// The interface name inside that namespace.
    pub ifname: String,
    /// `port_mac(node, port)`.
    pub mac: [u8; 6],
}

/// One node's namespace and ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub node: u32,
    /// The topology's name of the node (`h0`, `leaf1`, ...).
    pub label: String,
    pub ns: String,
    /// The host's address (a /32 on its interface); `None` for switches.
    pub ip: Option<Ipv4Addr>,
    /// `(this end, the other end)` for every port, in port order.
    pub ports: Vec<(Endpoint, Endpoint)>,
}

impl NodePlan {
    pub fn is_host(&self) -> bool {
        self.ip.is_some()
    }
}

/// One veth pair: topology link `link`, ends `a` and `b` as in the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPlan {
    pub link: usize,
    pub a: Endpoint,
    pub b: Endpoint,
}

/// Every namespace, interface, MAC and address a testbed of a topology has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub naming: Naming,
    /// MTU of every veth end.
    pub mtu: u32,
    /// Nodes `0..hosts` are hosts.
    pub hosts: u32,
    /// Every node, indexed by topology node.
    pub nodes: Vec<NodePlan>,
    /// Every link, indexed by topology link.
    pub veths: Vec<VethPlan>,
    /// Turn off tx checksumming, scatter-gather, TSO, GSO and GRO on every veth end
    /// (the default: a userspace switch must see whole, checksummed, MTU-sized
    /// frames).
    pub disable_offloads: bool,
    /// Give each host its /32, gateway neighbour and fabric route (the default, for
    /// the user's own programs). Off when fablab's NICs are the hosts: a host kernel
    /// without an address drops the fablab frames it also sees silently, instead of
    /// answering each with an ICMP port-unreachable that crosses the fabric.
    pub address_hosts: bool,
    /// Give every veth end its `port_mac` (the default). Off when only fablab's
    /// datapath reads the interfaces: each end then gets [`Plan::stray_mac`] of it,
    /// so fablab's frames (addressed to `port_mac`) reach the namespace's kernel as
    /// another host's (PACKET_OTHERHOST), which its IP stack drops on arrival instead
    /// of routing each one, while the datapath's packet socket still sees them all.
    pub kernel_sees_frames: bool,
}

impl Plan {
    /// A MAC no fablab frame is addressed to: `mac` with its second byte changed
    /// (still locally administered, unicast).
    pub fn stray_mac(mac: [u8; 6]) -> [u8; 6] {
        let mut m = mac;
        m[1] ^= 0x01;
        m
    }

    /// The MAC the interface of endpoint `e` gets under this plan.
    pub fn interface_mac(&self, e: &Endpoint) -> [u8; 6] {
        if self.kernel_sees_frames {
            e.mac
        } else {
            Plan::stray_mac(e.mac)
        }
    }

    /// The plan of `topo` with the default names (`fl-h0`, `fl-s0p1`, ...).
    pub fn new(topo: &Topology, mtu: u32) -> Result<Plan, Error> {
        Plan::with_naming(topo, mtu, Naming::default())
    }

    /// The plan of `topo` with the names of `naming` (e.g. [`Naming::tagged`]).
    pub fn with_naming(topo: &Topology, mtu: u32, naming: Naming) -> Result<Plan, Error> {
        if !(68..=65535).contains(&mtu) {
            return Err(Error::Mtu(mtu));
        }
        if topo.hosts > MAX_HOSTS {
            return Err(Error::TooManyHosts {
                hosts: topo.hosts,
                max: MAX_HOSTS,
            });
        }
        let max_nodes = 1usize << 16;
        if topo.node_count() > max_nodes {
            return Err(Error::TooManyNodes {
                nodes: topo.node_count(),
                max: max_nodes,
            });
        }
        let endpoint = |node: u32, port: u16| -> Result<Endpoint, Error> {
            let (ns, ifname) = if topo.is_host(node) {
                (naming.host_ns(node), naming.host_if(node))
            } else {
                let sw = node - topo.hosts;
                (
                    naming.switch_ns(sw),
                    naming.switch_port(sw, u32::from(port)),
                )
            };
            check_name(&ns)?;
            check_name(&ifname)?;
            Ok(Endpoint {
                node,
                port,
                ns,
                ifname,
                mac: addr::port_mac(node, port),
            })
        };
        let mut nodes = Vec::with_capacity(topo.node_count());
        for node in 0..topo.node_count() as u32 {
            let nports = topo.ports[node as usize].len();
            let host = topo.is_host(node);
            if host && nports != 1 {
                return Err(Error::HostPorts {
                    host: node,
                    ports: nports,
                });
            }
            let ports = (0..nports as u16)
                .map(|p| {
                    let peer = topo.peer(node, p);
                    Ok((endpoint(node, p)?, endpoint(peer.node, peer.port)?))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let ns = if host {
                naming.host_ns(node)
            } else {
                naming.switch_ns(node - topo.hosts)
            };
            check_name(&ns)?;
            nodes.push(NodePlan {
                node,
                label: topo.names[node as usize].clone(),
                ns,
                ip: host.then(|| Ipv4Addr::from(addr::host_ip(node))),
                ports,
            });
        }
        let veths = topo
            .links
            .iter()
            .enumerate()
            .map(|(i, l)| {
                Ok(VethPlan {
                    link: i,
                    a: endpoint(l.a.node, l.a.port)?,
                    b: endpoint(l.b.node, l.b.port)?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Plan {
            naming,
            mtu,
            hosts: topo.hosts,
            nodes,
            veths,
            disable_offloads: true,
            address_hosts: true,
            kernel_sees_frames: true,
        })
    }

    /// What every name of this plan starts with (`fl-` or `fl-<tag>-`).
    pub fn prefix(&self) -> &str {
        self.naming.prefix()
    }

    /// Every namespace, hosts first.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> + '_ {
        self.nodes.iter().map(|n| n.ns.as_str())
    }

    /// Host `h`'s namespace.
    pub fn host_ns(&self, h: u32) -> &str {
        &self.nodes[h as usize].ns
    }

    /// Host `h`'s interface and the switch port at its other end.
    pub fn host_port(&self, h: u32) -> &(Endpoint, Endpoint) {
        &self.nodes[h as usize].ports[0]
    }

    /// The prefix every host routes through [`Plan::gateway`]: 10.1.0.0/16.
    pub fn host_prefix() -> (Ipv4Addr, u8) {
        (Ipv4Addr::from(HOST_PREFIX.0), HOST_PREFIX.1)
    }

    /// The next hop of every host: 169.254.0.1, a permanent neighbour entry.
    pub fn gateway() -> Ipv4Addr {
        Ipv4Addr::from(GATEWAY_IP)
    }
}

#[cfg(test)]
mod tests {
    use fablab_dataplane::sim::topology::{TopologyKind, TopologySpec};
    use fablab_dataplane::wire::addr::port_mac;

    use super::*;

    fn topo(kind: TopologyKind) -> Topology {
        Topology::build(&TopologySpec {
            kind,
            host_rate_mbps: 10_000,
            fabric_rate_mbps: 10_000,
            link_delay: 1_000,
        })
    }

    fn leaf_spine() -> Topology {
        topo(TopologyKind::LeafSpine {
            leaves: 2,
            spines: 4,
            hosts_per_leaf: 4,
        })
    }

    #[test]
    fn stray_macs_differ_from_every_port_mac_and_stay_local_unicast() {
        let t = leaf_spine();
        let mut p = Plan::new(&t, 1500).unwrap();
        let e = p.nodes[0].ports[0].0.clone();
        assert_eq!(p.interface_mac(&e), e.mac);
        p.kernel_sees_frames = false;
        let m = p.interface_mac(&e);
        assert_ne!(m, e.mac);
        assert_eq!(m[0] & 0x03, 0x02, "locally administered unicast");
        for n in &p.nodes {
            for (me, _) in &n.ports {
                assert_ne!(p.interface_mac(me), me.mac);
            }
        }
    }

    #[test]
    fn leaf_spine_plan_has_every_namespace_interface_and_peer() {
        let t = leaf_spine();
        let p = Plan::new(&t, 1500).unwrap();
        assert_eq!(p.nodes.len(), 14);
        assert_eq!(p.veths.len(), 16);
        assert_eq!(p.namespaces().filter(|n| n.starts_with("fl-h")).count(), 8);
        assert_eq!(p.host_ns(5), "fl-h5");
        assert_eq!(p.nodes[8].ns, "fl-s0", "node 8 is the first switch");
        assert_eq!(p.nodes[8].label, "leaf0");
        assert_eq!(p.nodes[10].label, "spine0");
        // Host 5 hangs off leaf1 (node 9, switch 1), port 1.
        let (me, gw) = p.host_port(5);
        assert_eq!(me.ifname, "fl-h5p0");
        assert_eq!(me.mac, port_mac(5, 0));
        assert_eq!((gw.ns.as_str(), gw.ifname.as_str()), ("fl-s1", "fl-s1p1"));
        assert_eq!(gw.mac, port_mac(9, 1));
        assert_eq!(p.nodes[5].ip, Some(Ipv4Addr::new(10, 1, 0, 5)));
        assert_eq!(p.nodes[9].ip, None);
        // Every port's peer points back at it.
        for n in &p.nodes {
            for (me, peer) in &n.ports {
                let back = &p.nodes[peer.node as usize].ports[usize::from(peer.port)];
                assert_eq!(&back.1, me);
                assert_eq!(&back.0, peer);
                assert!(me.ifname.len() <= 15);
            }
        }
        // Spine 0 (switch 2) port 1 goes to leaf1's port 4 (after its 4 hosts).
        let (sp, leaf) = &p.nodes[10].ports[1];
        assert_eq!(sp.ifname, "fl-s2p1");
        assert_eq!(leaf.ifname, "fl-s1p4");
        let names: std::collections::HashSet<_> = p
            .veths
            .iter()
            .flat_map(|v| [(&v.a.ns, &v.a.ifname), (&v.b.ns, &v.b.ifname)])
            .collect();
        assert_eq!(names.len(), 32, "interface names are unique");
    }

    #[test]
    fn tagged_plans_use_tagged_names() {
        let t = topo(TopologyKind::Dumbbell { hosts: 2 });
        let p = Plan::with_naming(&t, 9000, Naming::tagged("ab1").unwrap()).unwrap();
        assert_eq!(p.prefix(), "fl-ab1-");
        assert_eq!(p.host_ns(3), "fl-ab1-h3");
        assert_eq!(p.host_port(3).1.ifname, "fl-ab1-s1p1");
        assert!(p.namespaces().all(|n| n.starts_with("fl-ab1-")));
        assert_eq!(p.mtu, 9000);
        assert!(p.disable_offloads);
    }

    #[test]
    fn names_too_long_are_errors_not_panics() {
        let t = leaf_spine();
        let e = Plan::with_naming(&t, 1500, Naming::tagged("abcdefgh").unwrap()).unwrap_err();
        assert!(
            matches!(e, Error::Name(crate::NameError::TooLong { .. })),
            "{e}"
        );
        assert!(e.to_string().contains("at most 15"), "{e}");
    }

    #[test]
    fn too_many_hosts_and_bad_mtu_are_refused() {
        let t = Topology {
            hosts: MAX_HOSTS + 1,
            names: vec![],
            ports: vec![],
            links: vec![],
            dist: vec![],
        };
        assert!(matches!(
            Plan::new(&t, 1500),
            Err(Error::TooManyHosts { hosts, max: MAX_HOSTS }) if hosts == MAX_HOSTS + 1
        ));
        let t = leaf_spine();
        assert!(matches!(Plan::new(&t, 60), Err(Error::Mtu(60))));
        assert!(matches!(Plan::new(&t, 70_000), Err(Error::Mtu(70_000))));
    }

    #[test]
    fn fat_tree_k16_fits_the_names() {
        let t = topo(TopologyKind::FatTree { k: 16 });
        let p = Plan::new(&t, 1500).unwrap();
        assert_eq!(p.nodes.len(), 1024 + 320);
        assert_eq!(p.host_port(1023).0.ifname, "fl-h1023p0");
        assert_eq!(p.nodes.last().unwrap().ns, "fl-s319");
    }

    #[test]
    fn gateway_and_prefix_come_from_the_addressing_plan() {
        assert_eq!(Plan::gateway(), Ipv4Addr::new(169, 254, 0, 1));
        assert_eq!(Plan::host_prefix(), (Ipv4Addr::new(10, 1, 0, 0), 16));
    }
}
