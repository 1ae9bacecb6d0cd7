//! Root-only tests: real namespaces and veths.
//!
//! Without root they print "skipped: needs root" and pass, except under CI=true,
//! where they fail. Each test names its objects `fl-<letter><pid>-...` so tests (and
//! test processes) can run in parallel, and each gc only touches its own prefix.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use fablab_dataplane::sim::topology::{Topology, TopologyKind, TopologySpec};
use fablab_dataplane::wire::addr::port_mac;
use fablab_testbed::{
    gc_prefixed, has_privileges, inspect, list_prefixed, offloads, Error, Naming, Plan, Testbed,
    NETNS_DIR,
};
use futures_util::TryStreamExt;
use nix::sys::socket::{
    recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

/// True if the test may run; false (after saying so) if it must be skipped.
fn root() -> bool {
    if has_privileges() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "these tests need root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and CI=true: \
             run the tests as root"
        );
    }
    eprintln!("skipped: needs root");
    false
}

/// `fl-<letter><pid in base 36>-`: unique per test and per test process.
fn naming(letter: char) -> Naming {
    let mut pid = std::process::id() % 36u32.pow(4);
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit(pid % 36, 36).unwrap());
        pid /= 36;
        if pid == 0 {
            break;
        }
    }
    let tag: String = std::iter::once(letter)
        .chain(digits.into_iter().rev())
        .collect();
    Naming::tagged(&tag).unwrap()
}

fn topo(kind: TopologyKind) -> Topology {
    Topology::build(&TopologySpec {
        kind,
        host_rate_mbps: 10_000,
        fabric_rate_mbps: 10_000,
        link_delay: 1_000,
    })
}

fn assert_gone(prefix: &str) {
    let left = list_prefixed(prefix).unwrap();
    assert!(left.is_empty(), "left behind: {:?}", left.names());
}

/// The Internet checksum of `data` (folded, not inverted).
fn csum(mut sum: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

#[test]
fn dumbbell_is_built_as_planned_and_removed() {
    if !root() {
        return;
    }
    let n = naming('a');
    let t = topo(TopologyKind::Dumbbell { hosts: 2 });
    let plan = Plan::with_naming(&t, 1500, n.clone()).unwrap();
    let root_default_v6 = std::fs::read_to_string("/proc/sys/net/ipv6/conf/default/disable_ipv6");
    let tb = Testbed::up(&plan).unwrap();
    eprintln!(
        "dumbbell (6 namespaces, 5 veths) up in {:?}",
        tb.build_time()
    );

    let inv = list_prefixed(n.prefix()).unwrap();
    let mut want: Vec<String> = plan.namespaces().map(String::from).collect();
    want.sort();
    assert_eq!(inv.namespaces, want);
    assert!(
        inv.links.is_empty(),
        "nothing in the root namespace: {:?}",
        inv.links
    );
    for ns in &want {
        assert!(Path::new(NETNS_DIR).join(ns).exists());
    }

    // Every node: interfaces named, addressed, sized and up, IPv6 off, offloads off.
    for node in &plan.nodes {
        let st = inspect(&node.ns).unwrap();
        let lo = st.link("lo").unwrap();
        assert!(lo.up, "{}: lo is up", node.ns);
        assert_eq!(
            st.links.len(),
            1 + node.ports.len(),
            "{}: {:?}",
            node.ns,
            st.links
        );
        assert_eq!(st.ipv6_disabled_all, Some(true), "{}", node.ns);
        assert_eq!(st.ipv6_disabled_default, Some(true), "{}", node.ns);
        for (me, _) in &node.ports {
            let l = st
                .link(&me.ifname)
                .unwrap_or_else(|| panic!("{} in {}", me.ifname, node.ns));
            assert!(l.up, "{} is up", me.ifname);
            assert_eq!(l.mac, Some(me.mac), "{}", me.ifname);
            assert_eq!(l.mtu, Some(1500), "{}", me.ifname);
            assert_eq!(l.ipv6_disabled, Some(true), "{}", me.ifname);
            let off = offloads(&node.ns, &me.ifname).unwrap();
            assert!(off.all_off(), "{}: {off:?}", me.ifname);
        }
        assert!(
            st.addresses.iter().all(|a| a.addr.is_ipv4()),
            "{}: no IPv6 address: {:?}",
            node.ns,
            st.addresses
        );
        if let Some(ip) = node.ip {
            let (me, gw) = &node.ports[0];
            let ours: Vec<_> = st.addresses.iter().filter(|a| a.ifname != "lo").collect();
            assert_eq!(ours.len(), 1, "{:?}", st.addresses);
            assert_eq!(
                (ours[0].ifname.as_str(), ours[0].addr, ours[0].prefix_len),
                (me.ifname.as_str(), ip.into(), 32)
            );
            assert_eq!(st.routes.len(), 1, "{:?}", st.routes);
            let r = &st.routes[0];
            assert_eq!((r.dst, r.prefix_len), (Ipv4Addr::new(10, 1, 0, 0), 16));
            assert_eq!(r.gateway, Some(Ipv4Addr::new(169, 254, 0, 1)));
            assert_eq!(r.ifname.as_deref(), Some(me.ifname.as_str()));
            assert!(r.onlink);
            let gw_entry = st
                .neighbours
                .iter()
                .find(|e| e.ip == Ipv4Addr::new(169, 254, 0, 1))
                .unwrap_or_else(|| panic!("{:?}", st.neighbours));
            assert_eq!(gw_entry.mac, Some(gw.mac));
            assert_eq!(gw_entry.mac, Some(port_mac(gw.node, gw.port)));
            assert!(gw_entry.permanent);
            assert_eq!(gw_entry.ifname, me.ifname);
        } else {
            assert!(
                st.addresses.iter().all(|a| a.ifname == "lo"),
                "a switch has no addresses: {:?}",
                st.addresses
            );
            assert!(st.routes.is_empty(), "{:?}", st.routes);
        }
    }
    // The root namespace's sysctls are untouched.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv6/conf/default/disable_ipv6").ok(),
        root_default_v6.ok()
    );

    // A host reaches its own address.
    let h0 = Ipv4Addr::new(10, 1, 0, 0);
    let h1 = Ipv4Addr::new(10, 1, 0, 1);
    let echoed = tb
        .in_ns(plan.host_ns(0), || {
            let s = UdpSocket::bind(SocketAddrV4::new(h0, 0)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.send_to(b"self", s.local_addr().unwrap()).unwrap();
            let mut buf = [0u8; 16];
            s.recv(&mut buf).map(|n| buf[..n].to_vec())
        })
        .unwrap();
    assert_eq!(echoed.unwrap(), b"self");

    // Another host is not reachable without a switch datapath, but the datagram
    // leaves h0 towards the gateway MAC with a complete UDP checksum (offloads off).
    let (h0_if, s0_port) = plan.host_port(0).clone();
    let tap: OwnedFd = tb
        .in_ns(&s0_port.ns, || {
            socket(
                AddressFamily::Packet,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC,
                SockProtocol::EthAll,
            )
            .unwrap()
        })
        .unwrap();
    setsockopt(&tap, sockopt::ReceiveTimeout, &TimeVal::new(0, 200_000)).unwrap();
    let rx = tb
        .in_ns(plan.host_ns(1), || {
            let s = UdpSocket::bind(SocketAddrV4::new(h1, 7777)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            s
        })
        .unwrap();
    tb.in_ns(plan.host_ns(0), || {
        let s = UdpSocket::bind(SocketAddrV4::new(h0, 0)).unwrap();
        s.send_to(&[0x5a; 1000], SocketAddrV4::new(h1, 7777))
            .unwrap();
    })
    .unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        rx.recv(&mut buf).is_err(),
        "h1 must not hear h0 without a switch"
    );
    let mut frame = None;
    while let Ok(n) = recv(tap.as_raw_fd(), &mut buf, MsgFlags::empty()) {
        let f = &buf[..n];
        if n > 42 && f[12..14] == [0x08, 0x00] && f[23] == 17 && f[36..38] == 7777u16.to_be_bytes()
        {
            frame = Some(f.to_vec());
            break;
        }
    }
    let f = frame.expect("the datagram reached the switch port");
    assert_eq!(f[0..6], s0_port.mac, "dst MAC is the gateway's");
    assert_eq!(f[6..12], h0_if.mac, "src MAC is the host port's");
    assert_eq!(f.len(), 14 + 20 + 8 + 1000, "one MTU-sized frame");
    assert_eq!(f[26..30], h0.octets());
    assert_eq!(f[30..34], h1.octets());
    let udp = &f[34..];
    assert_ne!(udp[6..8], [0, 0], "UDP checksum present");
    let pseudo = csum(csum(0, &f[26..34]), &[0, 17]);
    let sum = csum(pseudo + udp.len() as u32, udp);
    assert_eq!(
        sum, 0xffff,
        "complete UDP checksum (tx checksum offload is off)"
    );
    drop(tap);
    drop(rx);

    assert!(matches!(
        tb.in_ns("fl-nope", || ()),
        Err(Error::UnknownNamespace(_))
    ));
    tb.down().unwrap();
    assert_gone(n.prefix());
}

#[test]
fn dropped_testbed_leaves_nothing() {
    if !root() {
        return;
    }
    let n = naming('b');
    let t = topo(TopologyKind::LeafSpine {
        leaves: 2,
        spines: 2,
        hosts_per_leaf: 2,
    });
    let plan = Plan::with_naming(&t, 9000, n.clone()).unwrap();
    {
        let tb = Testbed::up(&plan).unwrap();
        assert_eq!(list_prefixed(n.prefix()).unwrap().namespaces.len(), 8);
        let st = inspect(plan.host_ns(3)).unwrap();
        assert_eq!(
            st.link(&plan.host_port(3).0.ifname).unwrap().mtu,
            Some(9000)
        );
        drop(tb);
    }
    assert_gone(n.prefix());
}

/// Creates a namespace the way `ip netns add` does, without the testbed crate.
fn raw_netns_add(name: &str) {
    let path = Path::new(NETNS_DIR).join(name);
    std::fs::create_dir_all(NETNS_DIR).unwrap();
    std::thread::spawn(move || {
        std::fs::File::create(&path).unwrap();
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &path,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
    })
    .join()
    .unwrap();
}

fn raw_netns_del(name: &str) {
    let path = Path::new(NETNS_DIR).join(name);
    let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(&path);
}

/// Runs netlink work in the root namespace without the testbed crate.
fn root_netlink<T>(f: impl AsyncFnOnce(rtnetlink::Handle) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().unwrap();
        tokio::spawn(conn);
        f(handle).await
    })
}

fn raw_veth_add(a: &str, b: &str) {
    root_netlink(async |h| {
        h.link()
            .add(rtnetlink::LinkVeth::new(a, b).build())
            .execute()
            .await
            .unwrap()
    });
}

fn root_link_exists(name: &str) -> bool {
    root_netlink(async |h| {
        let links: Vec<_> = h.link().get().execute().try_collect().await.unwrap();
        links.iter().any(|l| {
            l.attributes.iter().any(|a| {
                matches!(a, rtnetlink::packet_route::link::LinkAttribute::IfName(n) if n == name)
            })
        })
    })
}

fn raw_link_del(name: &str) {
    root_netlink(async |h| {
        let links: Vec<_> = h
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_collect()
            .await
            .unwrap_or_default();
        for l in links {
            let _ = h.link().del(l.header.index).execute().await;
        }
    });
}

#[test]
fn failed_up_removes_what_it_made() {
    if !root() {
        return;
    }
    let n = naming('c');
    let t = topo(TopologyKind::Dumbbell { hosts: 2 });
    let plan = Plan::with_naming(&t, 1500, n.clone()).unwrap();
    // The last namespace is taken: up fails after creating the five before it.
    let taken = plan.nodes.last().unwrap().ns.clone();
    raw_netns_add(&taken);
    let err = Testbed::up(&plan).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("creating namespace {taken}")),
        "{msg}"
    );
    assert!(msg.contains("File exists"), "{msg}");
    assert_eq!(err.raw_os_error(), Some(17));
    let inv = list_prefixed(n.prefix()).unwrap();
    assert_eq!(
        inv.namespaces,
        vec![taken.clone()],
        "only the one that was there"
    );
    let report = gc_prefixed(n.prefix()).unwrap();
    assert_eq!(report.namespaces, vec![taken]);
    assert_gone(n.prefix());
}

#[test]
fn gc_removes_leftovers_and_nothing_else() {
    if !root() {
        return;
    }
    let n = naming('d');
    let t = topo(TopologyKind::Dumbbell { hosts: 1 });
    let plan = Plan::with_naming(&t, 1500, n.clone()).unwrap();
    Testbed::up(&plan).unwrap().keep();
    // A leftover veth in the root namespace, and foreign objects gc must not touch.
    let (x0, x1) = (format!("{}x0", n.prefix()), format!("{}x1", n.prefix()));
    raw_veth_add(&x0, &x1);
    let pid = std::process::id();
    let foreign_ns = format!("gc-keep-test{pid}");
    let (fa, fb) = (format!("gck{pid}a"), format!("gck{pid}b"));
    // Removes the foreign objects even if an assertion fails.
    struct Foreign<'a>(&'a str, &'a str);
    impl Drop for Foreign<'_> {
        fn drop(&mut self) {
            raw_netns_del(self.0);
            raw_link_del(self.1);
        }
    }
    raw_netns_add(&foreign_ns);
    raw_veth_add(&fa, &fb);
    let foreign = Foreign(&foreign_ns, &fa);

    let inv = list_prefixed(n.prefix()).unwrap();
    assert_eq!(inv.namespaces.len(), 4);
    assert_eq!(inv.links, vec![x0.clone(), x1.clone()]);

    let report = gc_prefixed(n.prefix()).unwrap();
    let mut want: Vec<String> = plan.namespaces().map(String::from).collect();
    want.sort();
    assert_eq!(report.namespaces, want);
    assert_eq!(report.links, vec![x0.clone(), x1.clone()]);
    assert_gone(n.prefix());
    assert!(!root_link_exists(&x0) && !root_link_exists(&x1));

    assert!(
        Path::new(NETNS_DIR).join(&foreign_ns).exists(),
        "foreign namespace kept"
    );
    assert!(
        root_link_exists(&fa) && root_link_exists(&fb),
        "foreign veth kept"
    );
    assert!(
        gc_prefixed("gc-").is_err(),
        "gc refuses prefixes other than fl-"
    );
    drop(foreign);
    assert!(!root_link_exists(&fa) && !root_link_exists(&fb));
    assert!(!Path::new(NETNS_DIR).join(&foreign_ns).exists());
}

#[test]
fn leaf_spine_2x4x8_builds_and_tears_down_fast() {
    if !root() {
        return;
    }
    let n = naming('e');
    let t = topo(TopologyKind::LeafSpine {
        leaves: 2,
        spines: 4,
        hosts_per_leaf: 4,
    });
    let plan = Plan::with_naming(&t, 1500, n.clone()).unwrap();
    assert_eq!((plan.nodes.len(), plan.veths.len()), (14, 16));
    let start = Instant::now();
    let tb = Testbed::up(&plan).unwrap();
    let up = start.elapsed();
    assert_eq!(list_prefixed(n.prefix()).unwrap().namespaces.len(), 14);
    let start = Instant::now();
    tb.down().unwrap();
    let down = start.elapsed();
    eprintln!("2-leaf/4-spine/8-host fabric (14 namespaces, 16 veths): up {up:?}, down {down:?}");
    assert_gone(n.prefix());
    assert!(
        up + down < Duration::from_secs(2),
        "up {up:?} + down {down:?}"
    );
}

#[test]
fn without_privileges_everything_says_it_needs_root() {
    if has_privileges() {
        return; // Checked when run without CAP_NET_ADMIN/CAP_SYS_ADMIN.
    }
    let t = topo(TopologyKind::Dumbbell { hosts: 1 });
    let plan = Plan::with_naming(&t, 1500, naming('f')).unwrap();
    let err = Testbed::up(&plan).unwrap_err();
    assert!(matches!(err, Error::NotRoot), "{err}");
    assert_eq!(
        err.to_string(),
        "fablab testbed needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network \
         namespaces"
    );
    assert!(matches!(gc_prefixed("fl-f-"), Err(Error::NotRoot)));
}
