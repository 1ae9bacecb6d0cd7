//! Building, inspecting and removing testbeds through netlink.
//!
//! All netlink work runs on a worker thread with its own current-thread tokio
//! runtime, so the API is synchronous and the caller's thread never changes
//! namespace. Configuring inside a namespace means a socket opened there: the worker
//! enters each namespace in turn, opens a netlink socket and an ioctl socket, and
//! leaves the requests of many namespaces in flight at once.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use futures_util::future::{select, try_join_all, Either};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteHeader};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{nl_err, Ctx};
use crate::ethtool::{disable_offloads, ifindex, ioctl_socket};
use crate::netns::{self, require_privileges};
use crate::plan::{NodePlan, Plan, VethPlan};
use crate::{check_name, in_netns, is_ours, Error, NameError, PREFIX};

/// Namespaces configured at once (each holds a netlink and an ioctl socket).
const NS_BATCH: usize = 64;
/// Netlink requests in flight on one socket.
const IN_FLIGHT: usize = 64;
/// The loopback device's index in every namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// A built testbed: the namespaces and veths of a [`Plan`].
///
/// Dropping it tears it down (best effort); [`Testbed::down`] does the same and
/// reports failures; [`Testbed::keep`] leaves it running.
#[derive(Debug)]
pub struct Testbed {
    plan: Plan,
    namespaces: Vec<String>,
    armed: bool,
    build_time: Duration,
}

impl Testbed {
    /// Builds `plan`: every namespace, every veth pair with its planned names, MACs
    /// and MTU, every interface and `lo` up, IPv6 off, offloads off (if
    /// `plan.disable_offloads`), and in host namespaces the host's /32, a permanent
    /// neighbour entry for the gateway and the route to 10.1.0.0/16 through it.
    ///
    /// If anything fails, every namespace created so far is removed before the error
    /// is returned. Fails with EEXIST, touching nothing, if a planned namespace
    /// exists already (see [`gc`]).
    pub fn up(plan: &Plan) -> Result<Testbed, Error> {
        require_privileges()?;
        for ns in plan.namespaces() {
            check_name(ns)?;
        }
        for v in &plan.veths {
            check_name(&v.a.ifname)?;
            check_name(&v.b.ifname)?;
        }
        let start = Instant::now();
        let mut created = Vec::with_capacity(plan.nodes.len());
        let res = std::thread::scope(|s| s.spawn(|| build(plan, &mut created)).join());
        match res {
            Ok(Ok(())) => Ok(Testbed {
                plan: plan.clone(),
                namespaces: created,
                armed: true,
                build_time: start.elapsed(),
            }),
            Ok(Err(e)) => {
                remove_all(&created);
                Err(e)
            }
            Err(panic) => {
                remove_all(&created);
                std::panic::resume_unwind(panic)
            }
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The namespaces this testbed created (all of the plan's).
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// How long [`Testbed::up`] took.
    pub fn build_time(&self) -> Duration {
        self.build_time
    }

    /// Runs `f` on a thread inside this testbed's namespace `ns` (see [`in_netns`]).
    pub fn in_ns<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
        if !self.namespaces.iter().any(|n| n == ns) {
            return Err(Error::UnknownNamespace(ns.into()));
        }
        in_netns(ns, f)
    }

    /// Removes every namespace (and with it every veth) this testbed created.
    /// Tries them all; returns the first failure.
    ///
    /// The names go at once; the kernel destroys each namespace and its veths when
    /// nothing holds it any more, so sockets opened inside (AF_PACKET) keep their
    /// veths alive until they are closed.
    pub fn down(mut self) -> Result<(), Error> {
        self.armed = false;
        let mut first = None;
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = netns::delete(ns) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Leaves the testbed running (for `fablab testbed up`); [`gc`] removes it.
    pub fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if self.armed {
            remove_all(&self.namespaces);
        }
    }
}

fn remove_all(namespaces: &[String]) {
    for ns in namespaces.iter().rev() {
        let _ = netns::delete(ns);
    }
}

/// A current-thread runtime for one worker thread's netlink work.
fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .ctx(|| "starting the netlink runtime".into())
}

/// Opens a netlink connection in the calling thread's namespace and runs `job` with
/// its handle; the socket closes when `job` finishes.
async fn with_netlink<T, F, Fut>(where_: &str, job: F) -> Result<T, Error>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let (conn, handle, _) =
        rtnetlink::new_connection().ctx(|| format!("opening netlink in {where_}"))?;
    let job = std::pin::pin!(job(handle));
    match select(job, std::pin::pin!(conn)).await {
        Either::Left((r, _)) => r,
        Either::Right(((), job)) => job.await,
    }
}

fn build(plan: &Plan, created: &mut Vec<String>) -> Result<(), Error> {
    netns::prepare_netns_dir()?;
    let rt = runtime()?;
    rt.block_on(with_netlink("the root namespace", |root| async move {
        // 1. Namespaces: this thread unshares into each new one in turn and turns
        //    IPv6 off there before any interface arrives ("default" covers the veths
        //    created later, "all" the loopback).
        for node in &plan.nodes {
            netns::create_and_enter(&node.ns)?;
            created.push(node.ns.clone());
            for key in [
                "net/ipv6/conf/all/disable_ipv6",
                "net/ipv6/conf/default/disable_ipv6",
            ] {
                netns::write_sysctl(&node.ns, key, "1")?;
            }
        }
        // 2. Veths, each created directly with both ends in their namespaces, named,
        //    addressed, sized and up: one request per pair, many in flight.
        stream::iter(plan.veths.iter().map(|v| add_veth(&root, plan, v)))
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        // 3. Inside each namespace: offloads (ioctl), lo up, host addressing.
        for chunk in plan.nodes.chunks(NS_BATCH) {
            let mut jobs = Vec::with_capacity(chunk.len());
            for node in chunk {
                jobs.push(configure_ns(plan, node)?);
            }
            try_join_all(jobs).await?;
        }
        Ok(())
    }))
}

async fn add_veth(root: &Handle, plan: &Plan, v: &VethPlan) -> Result<(), Error> {
    let mtu = plan.mtu;
    let what = || format!("creating veth {} <-> {}", v.a.ifname, v.b.ifname);
    let (na, nb) = (netns::open(&v.a.ns)?, netns::open(&v.b.ns)?);
    // One queue each way: a frame then always arrives on receive queue 0, where the
    // emu's AF_XDP socket is bound (with one queue per CPU, the kernel's own traffic,
    // a ping say, could land on a queue no socket serves).
    let peer = LinkUnspec::new_with_name(&v.b.ifname)
        .address(plan.interface_mac(&v.b).to_vec())
        .mtu(mtu)
        .setns_by_fd(nb.as_raw_fd())
        .append_extra_attribute(LinkAttribute::NumTxQueues(1))
        .append_extra_attribute(LinkAttribute::NumRxQueues(1))
        .build();
    let msg = LinkVeth::new(&v.a.ifname, &v.b.ifname)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .address(plan.interface_mac(&v.a).to_vec())
        .mtu(mtu)
        .setns_by_fd(na.as_raw_fd())
        .append_extra_attribute(LinkAttribute::NumTxQueues(1))
        .append_extra_attribute(LinkAttribute::NumRxQueues(1))
        .build();
    root.link().add(msg).execute().await.ctx(what)?;
    drop((na, nb));
    Ok(())
}

/// Enters `node`'s namespace, does the ioctl work there at once and returns the
/// netlink work (on a socket opened there) as a future.
fn configure_ns<'a>(
    plan: &'a Plan,
    node: &'a NodePlan,
) -> Result<impl Future<Output = Result<(), Error>> + 'a, Error> {
    let ns = node.ns.as_str();
    netns::enter(&netns::open(ns)?, ns)?;
    let sock = ioctl_socket().ctx(|| format!("opening a socket in namespace {ns}"))?;
    if plan.disable_offloads {
        for (me, _) in &node.ports {
            disable_offloads(sock.as_fd(), ns, &me.ifname)?;
        }
    }
    let host = match (node.ip.filter(|_| plan.address_hosts), node.ports.first()) {
        (Some(ip), Some((me, gw))) => {
            let index = ifindex(sock.as_fd(), &me.ifname)
                .ctx(|| format!("finding {} in namespace {ns}", me.ifname))?;
            Some((ip, index, me.ifname.as_str(), gw.mac))
        }
        _ => None,
    };
    drop(sock);
    // The netlink socket must be opened now, while this thread is in `ns`.
    let (conn, handle, _) =
        rtnetlink::new_connection().ctx(|| format!("opening netlink in namespace {ns}"))?;
    let job = async move {
        // Interfaces come up here, not at creation: the kernel refuses to open a
        // veth end before its peer exists (ENOTCONN).
        let up = |msg, name: &'a str| {
            let h = handle.clone();
            async move {
                h.link()
                    .set(msg)
                    .execute()
                    .await
                    .ctx(|| format!("bringing up {name} in namespace {ns}"))
            }
        };
        let lo = try_join_all(
            std::iter::once(up(
                LinkUnspec::new_with_index(LOOPBACK_IFINDEX).up().build(),
                "lo",
            ))
            .chain(node.ports.iter().map(|(me, _)| {
                up(
                    LinkUnspec::new_with_name(&me.ifname).up().build(),
                    &me.ifname,
                )
            })),
        );
        let Some((ip, index, ifname, gw_mac)) = host else {
            return lo.await.map(|_| ());
        };
        let addr = async {
            handle
                .address()
                .add(index, IpAddr::V4(ip), 32)
                .execute()
                .await
                .ctx(|| format!("adding {ip}/32 to {ifname} in namespace {ns}"))
        };
        let gw = Plan::gateway();
        let neigh = async {
            handle
                .neighbours()
                .add(index, IpAddr::V4(gw))
                .link_layer_address(&gw_mac)
                .state(NeighbourState::Permanent)
                .execute()
                .await
                .ctx(|| format!("adding neighbour {gw} on {ifname} in namespace {ns}"))
        };
        let (dst, len) = Plan::host_prefix();
        let route =
            async {
                let msg = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(dst, len)
                    .gateway(gw)
                    .output_interface(index)
                    .onlink()
                    .build();
                handle.route().add(msg).execute().await.ctx(|| {
                    format!("adding route {dst}/{len} via {gw} dev {ifname} in namespace {ns}")
                })
            };
        futures_util::try_join!(lo, addr, neigh, route).map(|_| ())
    };
    Ok(async move {
        match select(std::pin::pin!(job), conn).await {
            Either::Left((r, _)) => r,
            Either::Right(((), job)) => job.await,
        }
    })
}

/// What [`gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub namespaces: Vec<String>,
    /// Links of the caller's (root) namespace.
    pub links: Vec<String>,
}

impl GcReport {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty() && self.links.is_empty()
    }
}

/// fablab's objects that exist now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Namespaces under `/run/netns`.
    pub namespaces: Vec<String>,
    /// Links in the caller's (root) namespace.
    pub links: Vec<String>,
}

impl Inventory {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty() && self.links.is_empty()
    }

    /// Namespaces, then links.
    pub fn names(&self) -> Vec<String> {
        self.namespaces.iter().chain(&self.links).cloned().collect()
    }
}

fn check_prefix(prefix: &str) -> Result<(), Error> {
    if is_ours(prefix) {
        Ok(())
    } else {
        Err(NameError::NoPrefix(prefix.into()).into())
    }
}

/// Every `fl-` namespace, and every `fl-` link of the root namespace.
pub fn list() -> Result<Inventory, Error> {
    list_prefixed(PREFIX)
}

/// The namespaces and root-namespace links whose names start with `prefix` (which
/// must start with `fl-`; a tagged testbed's is `fl-<tag>-`).
pub fn list_prefixed(prefix: &str) -> Result<Inventory, Error> {
    check_prefix(prefix)?;
    let namespaces = netns::list(prefix)?;
    let links = root_links(prefix)?.into_iter().map(|(_, n)| n).collect();
    Ok(Inventory { namespaces, links })
}

/// Removes every `fl-` namespace and every `fl-` link of the root namespace (what a
/// crashed run left behind). Touches nothing else.
pub fn gc() -> Result<GcReport, Error> {
    gc_prefixed(PREFIX)
}

/// [`gc`] restricted to names starting with `prefix` (which must start with `fl-`),
/// e.g. one tagged testbed's `fl-<tag>-`. Tries everything; returns the first
/// failure.
pub fn gc_prefixed(prefix: &str) -> Result<GcReport, Error> {
    check_prefix(prefix)?;
    require_privileges()?;
    let mut report = GcReport::default();
    let mut first = None;
    for ns in netns::list(prefix)? {
        match netns::delete(&ns) {
            Ok(()) => report.namespaces.push(ns),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    let links = root_links(prefix)?;
    if !links.is_empty() {
        let deleted = on_worker(|| {
            runtime()?.block_on(with_netlink("the root namespace", |h| async move {
                let mut out = Vec::new();
                for (index, name) in links {
                    match h.link().del(index).execute().await {
                        Ok(()) => out.push(Ok(name)),
                        // The other end of a veth already deleted with its peer.
                        Err(e) if nl_err(e.clone()).raw_os_error() == Some(libc::ENODEV) => {
                            out.push(Ok(name))
                        }
                        Err(e) => out.push(Err(Error::os(
                            format!("deleting link {name} in the root namespace"),
                            nl_err(e),
                        ))),
                    }
                }
                Ok(out)
            }))
        })?;
        for r in deleted {
            match r {
                Ok(name) => report.links.push(name),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
    }
    first.map_or(Ok(report), Err)
}

/// Runs `f` on a fresh thread (in the caller's namespace).
fn on_worker<T: Send>(f: impl FnOnce() -> Result<T, Error> + Send) -> Result<T, Error> {
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// `(index, name)` of the root namespace's links starting with `prefix`.
fn root_links(prefix: &str) -> Result<Vec<(u32, String)>, Error> {
    let links = on_worker(|| {
        runtime()?.block_on(with_netlink("the root namespace", |h| async move {
            dump_links(&h, "the root namespace").await
        }))
    })?;
    let mut ours: Vec<_> = links
        .iter()
        .filter_map(|l| Some((l.header.index, link_name(l)?.to_owned())))
        .filter(|(_, n)| n.starts_with(prefix))
        .collect();
    ours.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(ours)
}

async fn dump_links(h: &Handle, where_: &str) -> Result<Vec<LinkMessage>, Error> {
    h.link()
        .get()
        .execute()
        .try_collect()
        .await
        .ctx(|| format!("listing links in {where_}"))
}

fn link_name(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

/// One interface of a namespace, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// `net.ipv6.conf.<name>.disable_ipv6` (None without IPv6).
    pub ipv6_disabled: Option<bool>,
}

/// One address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrState {
    pub ifname: String,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// One IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteState {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub ifname: Option<String>,
    pub onlink: bool,
}

/// One IPv4 neighbour entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighState {
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub mac: Option<[u8; 6]>,
    pub permanent: bool,
}

/// A namespace's interfaces, addresses, routes and neighbours, read back through
/// netlink from inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsState {
    pub links: Vec<LinkState>,
    /// IPv4 and IPv6 addresses.
    pub addresses: Vec<AddrState>,
    pub routes: Vec<RouteState>,
    pub neighbours: Vec<NeighState>,
    /// `net.ipv6.conf.{all,default}.disable_ipv6` (None without IPv6).
    pub ipv6_disabled_all: Option<bool>,
    pub ipv6_disabled_default: Option<bool>,
}

impl NsState {
    pub fn link(&self, name: &str) -> Option<&LinkState> {
        self.links.iter().find(|l| l.name == name)
    }
}

fn mac6(v: &[u8]) -> Option<[u8; 6]> {
    v.try_into().ok()
}

/// Reads fablab namespace `ns` back through netlink (for tests and `fablab testbed
/// status`).
pub fn inspect(ns: &str) -> Result<NsState, Error> {
    in_netns(ns, || {
        let sysctl = |key: &str| netns::read_sysctl(key).map(|v| v == "1");
        runtime()?.block_on(with_netlink(&format!("namespace {ns}"), |h| async move {
            let where_ = format!("namespace {ns}");
            let links = dump_links(&h, &where_).await?;
            let name_of = |index: u32| {
                links
                    .iter()
                    .find(|l| l.header.index == index)
                    .and_then(link_name)
                    .unwrap_or("?")
                    .to_owned()
            };
            let addrs: Vec<_> = h
                .address()
                .get()
                .execute()
                .try_collect()
                .await
                .ctx(|| format!("listing addresses in {where_}"))?;
            let routes: Vec<_> = h
                .route()
                .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
                .execute()
                .try_collect()
                .await
                .ctx(|| format!("listing routes in {where_}"))?;
            let neighs: Vec<_> = h
                .neighbours()
                .get()
                .set_address_family(AddressFamily::Inet)
                .execute()
                .try_collect()
                .await
                .ctx(|| format!("listing neighbours in {where_}"))?;
            Ok(NsState {
                links: links
                    .iter()
                    .map(|l| {
                        let name = link_name(l).unwrap_or("?").to_owned();
                        LinkState {
                            index: l.header.index,
                            mac: l.attributes.iter().find_map(|a| match a {
                                LinkAttribute::Address(m) => mac6(m),
                                _ => None,
                            }),
                            mtu: l.attributes.iter().find_map(|a| match a {
                                LinkAttribute::Mtu(m) => Some(*m),
                                _ => None,
                            }),
                            up: l.header.flags.contains(LinkFlags::Up),
                            ipv6_disabled: sysctl(&format!("net/ipv6/conf/{name}/disable_ipv6")),
                            name,
                        }
                    })
                    .collect(),
                addresses: addrs
                    .iter()
                    .filter_map(|a| {
                        let local = a.attributes.iter().find_map(|x| match x {
                            AddressAttribute::Local(ip) => Some(*ip),
                            _ => None,
                        });
                        let addr = local.or_else(|| {
                            a.attributes.iter().find_map(|x| match x {
                                AddressAttribute::Address(ip) => Some(*ip),
                                _ => None,
                            })
                        })?;
                        Some(AddrState {
                            ifname: name_of(a.header.index),
                            addr,
                            prefix_len: a.header.prefix_len,
                        })
                    })
                    .collect(),
                routes: routes
                    .iter()
                    .filter(|r| {
                        let table = r.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Table(t) => Some(*t),
                            _ => None,
                        });
                        table.unwrap_or(u32::from(r.header.table))
                            == u32::from(RouteHeader::RT_TABLE_MAIN)
                    })
                    .filter_map(|r| {
                        let v4 = |a: &RouteAddress| match a {
                            RouteAddress::Inet(ip) => Some(*ip),
                            _ => None,
                        };
                        let mut dst = Some(Ipv4Addr::UNSPECIFIED);
                        let (mut gateway, mut ifname) = (None, None);
                        for a in &r.attributes {
                            match a {
                                RouteAttribute::Destination(d) => dst = v4(d),
                                RouteAttribute::Gateway(g) => gateway = v4(g),
                                RouteAttribute::Oif(i) => ifname = Some(name_of(*i)),
                                _ => {}
                            }
                        }
                        Some(RouteState {
                            dst: dst?,
                            prefix_len: r.header.destination_prefix_length,
                            gateway,
                            ifname,
                            onlink: r.header.flags.contains(RouteFlags::Onlink),
                        })
                    })
                    .collect(),
                neighbours: neighs
                    .iter()
                    .filter_map(|n| {
                        let mut ip = None;
                        let mut mac = None;
                        for a in &n.attributes {
                            match a {
                                NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => {
                                    ip = Some(*v)
                                }
                                NeighbourAttribute::LinkLayerAddress(m) => mac = mac6(m),
                                _ => {}
                            }
                        }
                        Some(NeighState {
                            ifname: name_of(n.header.ifindex),
                            ip: ip?,
                            mac,
                            permanent: n.header.state == NeighbourState::Permanent,
                        })
                    })
                    .collect(),
                ipv6_disabled_all: sysctl("net/ipv6/conf/all/disable_ipv6"),
                ipv6_disabled_default: sysctl("net/ipv6/conf/default/disable_ipv6"),
            })
        }))
    })?
}

/// Makes switch `node`'s kernel an IPv4 router for the hosts on its ports, or stops
/// it forwarding: with `on`, IPv4 forwarding, a /32 route out of each host-facing
/// port and a permanent neighbour entry for each host (no ARP), replacing any
/// already there; without, forwarding off (the routes stay, unused). For measuring fablab's switch against the
/// kernel's on the same namespaces.
pub fn kernel_forwarding(plan: &Plan, node: u32, on: bool) -> Result<(), Error> {
    require_privileges()?;
    let sw = plan
        .nodes
        .iter()
        .find(|n| n.node == node && !n.is_host())
        .ok_or(Error::NotASwitch(node))?;
    let ns = sw.ns.as_str();
    let hosts: Vec<(String, Ipv4Addr, [u8; 6])> = sw
        .ports
        .iter()
        .filter_map(|(me, peer)| {
            let ip = plan.nodes.iter().find(|n| n.node == peer.node)?.ip?;
            Some((me.ifname.clone(), ip, peer.mac))
        })
        .collect();
    in_netns(ns, || -> Result<(), Error> {
        netns::write_sysctl(ns, "net/ipv4/ip_forward", if on { "1" } else { "0" })?;
        if !on {
            return Ok(());
        }
        let sock = ioctl_socket().ctx(|| format!("opening a socket in namespace {ns}"))?;
        let mut ports = Vec::with_capacity(hosts.len());
        for (ifname, ip, mac) in &hosts {
            let index = ifindex(sock.as_fd(), ifname)
                .ctx(|| format!("finding {ifname} in namespace {ns}"))?;
            ports.push((index, ifname.as_str(), *ip, *mac));
        }
        runtime()?.block_on(with_netlink(ns, |h| async move {
            for (index, ifname, ip, mac) in ports {
                h.neighbours()
                    .add(index, IpAddr::V4(ip))
                    .link_layer_address(&mac)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
                    .ctx(|| format!("adding neighbour {ip} on {ifname} in namespace {ns}"))?;
                let msg = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(ip, 32)
                    .output_interface(index)
                    .build();
                h.route()
                    .add(msg)
                    .replace()
                    .execute()
                    .await
                    .ctx(|| format!("adding route {ip}/32 dev {ifname} in namespace {ns}"))?;
            }
            Ok(())
        }))
    })?
}
