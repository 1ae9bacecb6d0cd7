//! The XDP switch under `BPF_PROG_TEST_RUN`: crafted frames in, the verdict, the
//! chosen port (by the destination MAC the program wrote) and the output bytes
//! read back by the dataplane's own parser. Root only (loading BPF); not root:
//! skipped, or a failure under `CI=true`.

use super::maps::*;
use super::*;
use fablab_dataplane::codec;
use fablab_dataplane::packet::{Kind, Packet};
use fablab_dataplane::wire::addr::{host_ip, port_mac};
use fablab_dataplane::wire::frame::FrameRepr;

const NODE: u32 = 9;
const RATE: u32 = 100_000;
const MTU: u32 = 4412;

/// The MAC at the far end of port `p`'s link.
fn peer(p: u16) -> [u8; 6] {
    port_mac(100 + u32::from(p), 0)
}

/// A switch with ports 0..5: host 1 behind port 1, hosts 2.. behind ports 2..=5
/// (four equal-cost candidates), everything else unrouted.
fn setup(policy: u32, rate_mbps: u32, buffer: u32) -> SwitchSetup {
    SwitchSetup {
        config: FlConfig {
            node_id: NODE,
            policy,
            int_on: 1,
            ecn_on: 0,
            kmin_bytes: 0,
            kmax_bytes: 0,
            pmax_ppm: 0,
            buffer_bytes: buffer,
            seed: 1,
        },
        ports: (0..6)
            .map(|p| {
                (
                    p,
                    FlPort {
                        ifindex: 1,
                        rate_mbps,
                        mtu: MTU,
                        up: 1,
                        loss_ppm: 0,
                        mac: port_mac(NODE, p),
                        peer_mac: peer(p),
                    },
                )
            })
            .collect(),
        routes: vec![
            (host_ip(1), 32, vec![1]),
            ([10, 1, 0, 0], 16, vec![2, 3, 4, 5]),
        ],
    }
}

fn switch(s: &SwitchSetup) -> Option<XdpSwitch> {
    if !crate::io::testkit::root_or_skip("loading the XDP switch") {
        return None;
    }
    let mut sw = XdpSwitch::load().unwrap_or_else(|e| panic!("{e}"));
    sw.configure(s).unwrap();
    // Test runs redirect nowhere, but the devmap needs a real interface: lo.
    for (p, _) in &s.ports {
        sw.set_interface(*p, 1).unwrap();
    }
    Some(sw)
}

fn data(dst: u32, entropy: u16, payload: usize) -> Vec<u8> {
    let mut pkt = Packet::data(0, dst, 3, 17, payload as u32);
    pkt.entropy = entropy;
    let mut buf = vec![0u8; 10_000];
    let body: Vec<u8> = (0..payload).map(|i| (i * 7) as u8).collect();
    let n = codec::encode(
        &pkt,
        &body,
        true,
        port_mac(0, 0),
        port_mac(NODE, 0),
        &mut buf,
    )
    .unwrap();
    buf.truncate(n);
    buf
}

fn stat(sw: &XdpSwitch, name: &str) -> u64 {
    sw.stats()
        .unwrap()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap()
        .1
}

/// Which port a forwarded frame went out of, by the MAC the program wrote.
fn out_port(frame: &[u8]) -> u16 {
    (0..6)
        .find(|&p| frame[0..6] == peer(p) && frame[6..12] == port_mac(NODE, p))
        .unwrap_or_else(|| panic!("MACs of no port: {:02x?}", &frame[..12]))
}

/// A data packet becomes INT's first hop: block inserted after UDP in the wire
/// format, every other field intact (the dataplane's parser checks the ICRC too).
#[test]
fn data_gets_an_int_block_the_dataplane_reads() {
    let Some(mut sw) = switch(&setup(FL_LB_ECMP, RATE, 1 << 20)) else {
        return;
    };
    let frame = data(1, 0x1234, 1000);
    let (verdict, out) = sw.test_run(&frame).unwrap();
    assert_eq!(verdict, XDP_REDIRECT);
    assert_eq!(
        out.len(),
        frame.len() + 48,
        "shim + INT-MD header + one hop"
    );
    assert_eq!(out_port(&out), 1);
    let d = codec::decode(&out).unwrap_or_else(|e| panic!("{e}"));
    let f = FrameRepr::parse(&out).unwrap();
    assert_eq!(d.ttl, codec::decode(&frame).unwrap().ttl - 1);
    assert_eq!(f.l3.dscp & 0x20, 0x20, "INT's DSCP bit");
    assert_eq!(
        (d.pkt.kind, d.pkt.psn, d.pkt.entropy),
        (Kind::Data, 17, 0x1234)
    );
    assert_eq!(d.payload, codec::decode(&frame).unwrap().payload);
    let hops = d.pkt.int.hops();
    assert_eq!(hops.len(), 1);
    let h = hops[0];
    // A test run arrives on lo, which `switch` mapped to every port, 5 last.
    assert_eq!((h.node, h.in_port, h.out_port), (NODE, 5, 1));
    assert_eq!(h.rate_mbps, RATE);
    assert_eq!(h.qlen, 0, "an empty queue ahead");
    assert_eq!(
        h.tx_bytes,
        out.len() as u64,
        "the port's admitted bytes, this frame's"
    );
    assert!(h.ts > 0);
    assert_eq!(stat(&sw, "int_source"), 1);
    assert_eq!(stat(&sw, "forwarded"), 1);
}

/// A minimal data frame (4 bytes of payload: 62 bytes) gets its INT block and a
/// transit hop too.
#[test]
fn the_smallest_data_frame_gets_int() {
    let Some(mut sw) = switch(&setup(FL_LB_ECMP, RATE, 1 << 20)) else {
        return;
    };
    let frame = data(1, 1, 4);
    assert_eq!(frame.len(), 62);
    let (verdict, once) = sw.test_run(&frame).unwrap();
    assert_eq!(verdict, XDP_REDIRECT);
    let (verdict, twice) = sw.test_run(&once).unwrap();
    assert_eq!(verdict, XDP_REDIRECT);
    let d = codec::decode(&twice).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.pkt.int.hops().len(), 2);
    assert_eq!(stat(&sw, "adjust_failed"), 0);
}

/// A second switch pushes its hop on top; the stack reads newest first.
#[test]
fn a_transit_switch_pushes_its_hop() {
    let Some(mut a) = switch(&setup(FL_LB_ECMP, RATE, 1 << 20)) else {
        return;
    };
    let mut s = setup(FL_LB_ECMP, RATE / 2, 1 << 20);
    s.config.node_id = NODE + 1;
    let mut b = switch(&s).unwrap();
    let (_, once) = a.test_run(&data(1, 1, 2000)).unwrap();
    let (verdict, twice) = b.test_run(&once).unwrap();
    assert_eq!(verdict, XDP_REDIRECT);
    assert_eq!(twice.len(), once.len() + 32);
    let d = codec::decode(&twice).unwrap_or_else(|e| panic!("{e}"));
    let hops = d.pkt.int.hops();
    assert_eq!(hops.len(), 2);
    assert_eq!((hops[0].node, hops[0].rate_mbps), (NODE, RATE));
    assert_eq!((hops[1].node, hops[1].rate_mbps), (NODE + 1, RATE / 2));
    assert_eq!(stat(&b, "int_pushed"), 1);
}

/// At eight hops the stack is full: the ninth switch sets E and pushes nothing.
#[test]
fn a_full_stack_gets_the_e_bit() {
    let Some(mut sw) = switch(&setup(FL_LB_ECMP, RATE, 1 << 30)) else {
        return;
    };
    let mut f = data(1, 1, 64);
    for _ in 0..8 {
        f = sw.test_run(&f).unwrap().1;
    }
    assert_eq!(codec::decode(&f).unwrap().pkt.int.hops().len(), 8);
    let (verdict, out) = sw.test_run(&f).unwrap();
    assert_eq!(verdict, XDP_REDIRECT);
    assert_eq!(out.len(), f.len());
    assert_eq!(codec::decode(&out).unwrap().pkt.int.hops().len(), 8);
    assert_eq!(stat(&sw, "int_exceeded"), 1);
}

/// ACKs are forwarded as they are (no INT), TTL one lower.
#[test]
fn acks_get_no_int() {
    let Some(mut sw) = switch(&setup(FL_LB_ECMP, RATE, 1 << 20)) else {
        return;
    };
    let pkt = Packet::control(Kind::Ack, 0, 1, 3);
    let mut buf = vec![0u8; 2000];
    let n = codec::encode(
        &pkt,
        &[],
        false,
        port_mac(0, 0),
        port_mac(NODE, 0),
        &mut buf,
    )
    .unwrap();
    let (verdict, out) = sw.test_run(&buf[..n]).unwrap();
    assert_eq!(verdict, XDP_REDIRECT);
    assert_eq!(out.len(), n);
    let d = codec::decode(&out).unwrap();
    assert_eq!(d.pkt.kind, Kind::Ack);
    assert!(d.pkt.int.hops().is_empty());
}

/// Every policy over four candidates: ECMP keeps a flow on one port and spreads
/// flows; spray-rr takes the ports in turn; adaptive the least occupied (all
/// frames queue here: the ports drain at 1 Mb/s).
#[test]
fn policies_choose_as_the_dataplane_does() {
    let Some(mut ecmp) = switch(&setup(FL_LB_ECMP, 1, 1 << 30)) else {
        return;
    };
    let mut rr = switch(&setup(FL_LB_SPRAY_RR, 1, 1 << 30)).unwrap();
    let mut adaptive = switch(&setup(FL_LB_ADAPTIVE, 1, 1 << 30)).unwrap();
    let mut random = switch(&setup(FL_LB_SPRAY_RANDOM, 1, 1 << 30)).unwrap();
    let port = |sw: &mut XdpSwitch, f: &[u8]| {
        let (verdict, out) = sw.test_run(f).unwrap();
        assert_eq!(verdict, XDP_REDIRECT);
        out_port(&out)
    };

    let one_flow: Vec<u16> = (0..8).map(|_| port(&mut ecmp, &data(2, 77, 100))).collect();
    assert!(one_flow.iter().all(|&p| p == one_flow[0]), "{one_flow:?}");
    let mut used = [0; 6];
    for e in 0..64 {
        used[usize::from(port(&mut ecmp, &data(2, e, 100)))] += 1;
    }
    assert!(
        used[2..].iter().all(|&n| n > 0),
        "64 flows over 4 ports: {used:?}"
    );

    // Per destination, in turn (the counter is per CPU; the test runs on one).
    let turns: Vec<u16> = (0..8).map(|_| port(&mut rr, &data(2, 5, 100))).collect();
    let mut sorted = turns[..4].to_vec();
    sorted.sort();
    assert_eq!(sorted, [2, 3, 4, 5], "{turns:?}");
    assert_eq!(turns[..4], turns[4..], "{turns:?}");

    // Equal frames: each lands on an empty queue until all four hold one.
    let mut seen: Vec<u16> = (0..4)
        .map(|_| port(&mut adaptive, &data(2, 5, 100)))
        .collect();
    seen.sort();
    assert_eq!(seen, [2, 3, 4, 5]);
    for p in 2..6 {
        assert!(adaptive.queue(p).unwrap().bytes > 0);
    }

    let mut used = [0; 6];
    for _ in 0..200 {
        used[usize::from(port(&mut random, &data(2, 5, 100)))] += 1;
    }
    assert!(
        used[2..].iter().all(|&n| n > 20),
        "200 frames over 4 ports: {used:?}"
    );
}

/// ECMP hashes as the dataplane's switch does, so a flow takes the same port in
/// xdp mode as in sim (same seed, same candidates), INT block or not.
#[test]
fn ecmp_picks_the_dataplanes_port() {
    let Some(mut sw) = switch(&setup(FL_LB_ECMP, RATE, 1 << 30)) else {
        return;
    };
    let mut up = switch(&setup(FL_LB_ECMP, RATE, 1 << 30)).unwrap();
    let cands = [2u16, 3, 4, 5];
    for entropy in 0..200u16 {
        let mut pkt = Packet::data(0, 2, 3, 17, 100);
        pkt.entropy = entropy;
        let want = cands[(fablab_dataplane::switch::ecmp_hash(1, &pkt) % 4) as usize];
        let f = data(2, entropy, 100);
        assert_eq!(
            out_port(&sw.test_run(&f).unwrap().1),
            want,
            "entropy {entropy}"
        );
        // The same frame after an INT source upstream (UDP port 4792).
        let with_int = up.test_run(&data(1, entropy, 100)).unwrap().1;
        let mut moved = with_int.clone();
        moved[30..34].copy_from_slice(&host_ip(2));
        fix_ip_checksum(&mut moved);
        assert_eq!(
            out_port(&sw.test_run(&moved).unwrap().1),
            want,
            "entropy {entropy}, INT"
        );
    }
}

/// The virtual queue: frames that do not fit the buffer are dropped and counted;
/// ECN-capable frames are marked above kmax, never below kmin. The port drains at
/// 1 Mb/s, a byte per 8 µs, so between test runs the queue loses a few bytes at
/// most: the thresholds keep 100 bytes (800 µs) of margin.
#[test]
fn a_full_queue_drops_and_a_deep_one_marks() {
    let frame = data(1, 1, 1000);
    let len = frame.len() as u64 + 48;
    let mut s = setup(FL_LB_ECMP, 1, (3 * len) as u32);
    s.config.ecn_on = 1;
    s.config.kmin_bytes = len;
    s.config.kmax_bytes = 2 * len - 100;
    s.config.pmax_ppm = 1_000_000;
    let Some(mut sw) = switch(&s) else {
        return;
    };
    let mut ecn = Vec::new();
    for _ in 0..3 {
        let (verdict, out) = sw.test_run(&frame).unwrap();
        assert_eq!(verdict, XDP_REDIRECT);
        ecn.push(FrameRepr::parse(&out).unwrap().l3.ecn);
    }
    // Queue ahead: 0, just under len (<= kmin: no mark), just under 2 len (>= kmax).
    assert_eq!(ecn, [0b10, 0b10, 0b11]);
    let (verdict, _) = sw.test_run(&frame).unwrap();
    assert_eq!(verdict, XDP_DROP);
    let q = sw.queue(1).unwrap();
    assert_eq!((q.drops, q.ecn_marks, q.tx_packets), (1, 1, 3));
    assert!((3 * len - 100..=3 * len).contains(&q.max_bytes), "{q:?}");
    assert_eq!(stat(&sw, "queue_full"), 1);
}

/// Link faults: a lossy link loses frames after its queue sent them (`link_loss`);
/// a destination whose every port went down has no route until one comes back.
#[test]
fn faults_lose_frames_and_take_ports_out_of_routes() {
    let Some(mut sw) = switch(&setup(FL_LB_ECMP, RATE, 1 << 30)) else {
        return;
    };
    sw.set_link(1, true, 1.0, RATE).unwrap();
    let (verdict, _) = sw.test_run(&data(1, 1, 100)).unwrap();
    assert_eq!(verdict, XDP_DROP);
    assert_eq!(stat(&sw, "link_loss"), 1);
    assert_eq!(sw.queue(1).unwrap().tx_packets, 1, "the queue sent it");
    sw.set_link(1, true, 0.0, RATE).unwrap();
    assert_eq!(sw.test_run(&data(1, 1, 100)).unwrap().0, XDP_REDIRECT);
    // Ports 2 and 3 of four down: the rest carry everything.
    sw.set_routes(&[([10, 1, 0, 0], 16, vec![4, 5])]).unwrap();
    for e in 0..20 {
        let p = out_port(&sw.test_run(&data(2, e, 100)).unwrap().1);
        assert!(p == 4 || p == 5, "port {p}");
    }
    // Port 1 down: the route to host 1 loses its only port (and the /16 is gone
    // too, or the longest match would fall back to it).
    sw.set_link(1, false, 0.0, RATE).unwrap();
    sw.set_routes(&[(host_ip(1), 32, vec![]), ([10, 1, 0, 0], 16, vec![])])
        .unwrap();
    assert_eq!(sw.test_run(&data(1, 1, 100)).unwrap().0, XDP_DROP);
    assert_eq!(stat(&sw, "no_route"), 1);
    // Back up.
    sw.set_link(1, true, 0.0, RATE).unwrap();
    sw.set_routes(&[(host_ip(1), 32, vec![1])]).unwrap();
    assert_eq!(sw.test_run(&data(1, 1, 100)).unwrap().0, XDP_REDIRECT);
}

/// Frames that are not the switch's to forward are dropped, counted by reason.
#[test]
fn unroutable_and_malformed_frames_are_counted() {
    let Some(mut sw) = switch(&setup(FL_LB_ECMP, RATE, 1 << 20)) else {
        return;
    };
    let good = data(1, 1, 100);
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut v = good.clone();
    v[12] = 0x86;
    v[13] = 0xdd;
    cases.push(("not_ipv4", v));
    let mut v = good.clone();
    v[24] ^= 0x55; // IPv4 checksum
    cases.push(("bad_ipv4", v));
    cases.push(("bad_ipv4", good[..30].to_vec()));
    let mut v = good.clone();
    v[22] = 1; // TTL 1
    fix_ip_checksum(&mut v);
    cases.push(("ttl_expired", v));
    let mut v = good.clone();
    v[30..34].copy_from_slice(&[192, 168, 0, 1]);
    fix_ip_checksum(&mut v);
    cases.push(("no_route", v));
    let mut v = good.clone();
    v[36..38].copy_from_slice(&4792u16.to_be_bytes()); // INT port, no INT block
    cases.push(("bad_int", v));
    for (i, (why, f)) in cases.iter().enumerate() {
        let before = stat(&sw, why);
        let (verdict, _) = sw.test_run(f).unwrap();
        assert_eq!(verdict, XDP_DROP, "case {i} ({why})");
        assert_eq!(stat(&sw, why), before + 1, "case {i} ({why})");
    }
    assert_eq!(stat(&sw, "forwarded"), 0);
}

fn fix_ip_checksum(f: &mut [u8]) {
    f[24] = 0;
    f[25] = 0;
    let mut s: u32 = (0..10)
        .map(|i| u32::from(u16::from_be_bytes([f[14 + 2 * i], f[15 + 2 * i]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    f[24..26].copy_from_slice(&(!(s as u16)).to_be_bytes());
}

/// Thousands of random, truncated and mutated frames: never `XDP_ABORTED`, every
/// frame either forwarded or dropped and counted once, and whatever is forwarded
/// parses as far as the switch promised (a valid IPv4 header).
#[test]
fn hostile_frames_never_abort() {
    let Some(mut sw) = switch(&setup(FL_LB_ADAPTIVE, RATE, 1 << 30)) else {
        return;
    };
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let base = [data(1, 1, 200), data(3, 9, 1000)];
    let int_frame = sw.test_run(&base[0]).unwrap().1;
    let mut runs = 0u64;
    for k in 0..6000u64 {
        let r = next();
        let f: Vec<u8> = match k % 4 {
            0 => (0..(r % 1600) as usize).map(|_| next() as u8).collect(),
            1 => base[(r % 2) as usize][..(r % 1100) as usize % base[(r % 2) as usize].len()]
                .to_vec(),
            2 => {
                let mut f = int_frame.clone();
                for _ in 0..1 + r % 4 {
                    let at = (next() as usize) % f.len();
                    f[at] ^= 1 << (next() % 8);
                }
                f
            }
            _ => {
                let mut f = base[1].clone();
                let at = 14 + (r as usize) % 60;
                f[at] = next() as u8;
                fix_ip_checksum(&mut f);
                f
            }
        };
        if f.len() < 14 {
            continue; // the kernel refuses test runs shorter than an Ethernet header
        }
        runs += 1;
        let (verdict, out) = sw.test_run(&f).unwrap();
        assert_ne!(verdict, XDP_ABORTED, "frame {k}: {f:02x?}");
        assert!(
            verdict == XDP_DROP || verdict == XDP_REDIRECT,
            "frame {k}: verdict {verdict}"
        );
        if verdict == XDP_REDIRECT {
            assert!(out.len() >= 34 && out[14] == 0x45, "frame {k}");
        }
    }
    let total: u64 = sw
        .stats()
        .unwrap()
        .iter()
        .filter(|(n, _)| !n.starts_with("int_"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        total,
        runs + 1,
        "every frame forwarded or dropped once (and the INT sample)"
    );
}

/// A jumbo frame (4 KiB payload, beyond one page in the test run: a multi-buffer
/// frame) gets its INT block like any other.
#[test]
fn jumbo_frames_get_int_too() {
    let Some(mut sw) = switch(&setup(FL_LB_ECMP, RATE, 1 << 20)) else {
        return;
    };
    let frame = data(1, 1, 4096);
    let (verdict, out) = sw.test_run(&frame).unwrap();
    assert_eq!(verdict, XDP_REDIRECT);
    let d = codec::decode(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.pkt.int.hops().len(), 1);
    assert_eq!(d.payload.len(), 4096);
}
