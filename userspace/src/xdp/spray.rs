//! `fl_tc_spray` (`ebpf/fl_tc_spray.c`): per-packet spraying for hosts whose software
//! is not fablab's. A TC egress program rewrites the UDP source port of matching
//! packets from their flow's entropy set, patching RoCEv2's ICRC (and a UDP
//! checksum, if set). docs/ebpf.md has the details.

use std::io;

use aya::maps::{Array, HashMap};
use aya::programs::{SchedClassifier, TcAttachType};

use super::maps::{
    FlEntropySet, FlFlowKey, FlSprayConfig, FL_CRC_SHIFT_MAX, FL_MAX_ENTROPIES, SPRAY_STATS,
};

/// `TC_ACT_OK`: the program's only verdict.
pub const TC_ACT_OK: u32 = 0;

const POLY: u32 = 0xedb8_8320;

/// a × b mod P in the reflected representation (zlib's `multmodp`).
fn multmodp(a: u32, mut b: u32) -> u32 {
    let mut p = 0;
    for i in 0..32 {
        if (a >> (31 - i)) & 1 == 1 {
            p ^= b;
        }
        b = if b & 1 == 1 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

/// x^(8n) mod P for n = 0..FL_CRC_SHIFT_MAX: the table the program advances a CRC
/// change with.
pub fn crc_shift_table() -> Vec<u32> {
    // x^8 mod P, reflected: x^0 is 1 << 31, so x^8 is 1 << 23.
    const X8: u32 = 1 << 23;
    let mut t = Vec::with_capacity(FL_CRC_SHIFT_MAX as usize);
    let mut p = 1u32 << 31;
    for _ in 0..FL_CRC_SHIFT_MAX {
        t.push(p);
        p = multmodp(X8, p);
    }
    t
}

/// What the program sprays and how it seeds new flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SprayConfig {
    /// UDP destination ports `ports.0..=ports.1` are sprayed (RoCEv2: 4791..=4791).
    pub ports: (u16, u16),
    /// A new flow's entropies come from `base..base + span`.
    pub base: u16,
    pub span: u16,
    /// How many entropies a new flow gets (1..=16).
    pub count: u32,
}

impl Default for SprayConfig {
    fn default() -> Self {
        SprayConfig {
            ports: (4791, 4791),
            base: 49152,
            span: 16384,
            count: 8,
        }
    }
}

/// A loaded `fl_tc_spray`: its program and maps.
#[derive(Debug)]
pub struct TcSpray {
    bpf: aya::Ebpf,
}

fn err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("TC spray: {what}: {e}"))
}

impl TcSpray {
    /// Loads the program (a verifier rejection carries its log) and fills its
    /// configuration and CRC table.
    pub fn load(cfg: SprayConfig) -> io::Result<TcSpray> {
        if cfg.count == 0 || cfg.count as usize > FL_MAX_ENTROPIES || cfg.span == 0 {
            return Err(err(
                "configuration",
                format!("count must be 1..={FL_MAX_ENTROPIES} and span positive: {cfg:?}"),
            ));
        }
        if u32::from(cfg.base) + u32::from(cfg.span) > 65536 || cfg.ports.0 > cfg.ports.1 {
            return Err(err(
                "configuration",
                format!("entropies or ports out of range: {cfg:?}"),
            ));
        }
        let object = crate::ebpf::object(crate::ebpf::FL_TC_SPRAY, "the TC spraying program")?;
        let bpf = crate::ebpf::load(object).map_err(|e| err("loading fl_tc_spray.o", e))?;
        let mut s = TcSpray { bpf };
        s.program()?
            .load()
            .map_err(|e| err("the verifier rejected fl_tc_spray", format!("{e:?}")))?;
        let mut config: Array<_, FlSprayConfig> = Array::try_from(s.map_mut("fl_spray_config")?)
            .map_err(|e| err("fl_spray_config", e))?;
        config
            .set(
                0,
                FlSprayConfig {
                    port_lo: cfg.ports.0,
                    port_hi: cfg.ports.1,
                    base: cfg.base,
                    span: cfg.span,
                    count: cfg.count,
                },
                0,
            )
            .map_err(|e| err("fl_spray_config", e))?;
        let mut shift: Array<_, u32> =
            Array::try_from(s.map_mut("fl_crc_shift")?).map_err(|e| err("fl_crc_shift", e))?;
        for (n, v) in crc_shift_table().into_iter().enumerate() {
            shift
                .set(n as u32, v, 0)
                .map_err(|e| err("fl_crc_shift", e))?;
        }
        Ok(s)
    }

    fn program(&mut self) -> io::Result<&mut SchedClassifier> {
        self.bpf
            .program_mut("fl_tc_spray")
            .ok_or_else(|| err("fl_tc_spray.o", "no program fl_tc_spray"))?
            .try_into()
            .map_err(|e| err("fl_tc_spray.o", e))
    }

    fn map_mut(&mut self, name: &str) -> io::Result<&mut aya::maps::Map> {
        self.bpf
            .map_mut(name)
            .ok_or_else(|| err("fl_tc_spray.o", format!("no map {name}")))
    }

    /// Attaches the program to `ifname`'s egress in the calling thread's namespace
    /// (through TCX from Linux 6.6 on; before, through a `clsact` qdisc, added here
    /// if missing). It stays attached while this value lives.
    pub fn attach(&mut self, ifname: &str) -> io::Result<()> {
        // Harmless when TCX is used, needed when it is not; "exists" is fine.
        let _ = aya::programs::tc::qdisc_add_clsact(ifname);
        self.program()?
            .attach(ifname, TcAttachType::Egress)
            .map_err(|e| err(&format!("attaching to {ifname} (egress)"), e))?;
        Ok(())
    }

    /// Gives the flow to `daddr` (with RoCEv2's destination QP `qp`) these
    /// entropies, used in turn from the next packet on: how userspace recycles the
    /// entropies whose paths telemetry shows congested.
    pub fn set_entropies(&mut self, daddr: [u8; 4], qp: u32, ports: &[u16]) -> io::Result<()> {
        if ports.is_empty() || ports.len() > FL_MAX_ENTROPIES {
            return Err(err(
                "fl_entropies",
                format!("{} entropies (1..={FL_MAX_ENTROPIES})", ports.len()),
            ));
        }
        let mut set = FlEntropySet {
            n: ports.len() as u32,
            ..FlEntropySet::default()
        };
        set.ports[..ports.len()].copy_from_slice(ports);
        let mut m: HashMap<_, FlFlowKey, FlEntropySet> =
            HashMap::try_from(self.map_mut("fl_entropies")?).map_err(|e| err("fl_entropies", e))?;
        m.insert(FlFlowKey { daddr, id: qp }, set, 0)
            .map_err(|e| err("fl_entropies", e))
    }

    /// Runs the program once on `frame` (`BPF_PROG_TEST_RUN`): its verdict and the
    /// frame as it left.
    pub fn test_run(&mut self, frame: &[u8]) -> io::Result<(u32, Vec<u8>)> {
        super::test_run(&*self.program()?, frame, 64).map_err(|e| err("test run", e))
    }

    /// The counters, summed over CPUs, by name.
    pub fn stats(&self) -> io::Result<Vec<(&'static str, u64)>> {
        let map = self
            .bpf
            .map("fl_spray_stats")
            .ok_or_else(|| err("fl_tc_spray.o", "no map fl_spray_stats"))?;
        super::per_cpu_counters(map, &SPRAY_STATS).map_err(|e| err("fl_spray_stats", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's shifts move a CRC change exactly as recomputing the CRC would.
    #[test]
    fn the_shift_table_patches_a_crc_like_recomputing_it() {
        let t = crc_shift_table();
        let crc0 = |bytes: &[u8]| {
            let mut c = 0u32;
            for &b in bytes {
                c ^= u32::from(b);
                for _ in 0..8 {
                    c = if c & 1 == 1 { (c >> 1) ^ POLY } else { c >> 1 };
                }
            }
            c
        };
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..200 {
            let len = 30 + (next() % 5000) as usize;
            let msg: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let at = (next() as usize) % (len - 1);
            let new = [next() as u8, next() as u8];
            let mut changed = msg.clone();
            changed[at..at + 2].copy_from_slice(&new);
            let d = [msg[at] ^ new[0], msg[at + 1] ^ new[1]];
            let delta = multmodp(t[len - at - 2], crc0(&d));
            assert_eq!(
                crc32fast::hash(&changed),
                crc32fast::hash(&msg) ^ delta,
                "len {len}, at {at}"
            );
        }
    }

    use crate::io::testkit::with_veth;
    use crate::io::{AfPacket, AfPacketConfig, PacketIo};
    use fablab_dataplane::codec;
    use fablab_dataplane::packet::Packet;
    use fablab_dataplane::wire::addr::{host_ip, port_mac};

    fn spray(cfg: SprayConfig) -> Option<TcSpray> {
        if !crate::io::testkit::root_or_skip("loading the TC program") {
            return None;
        }
        Some(TcSpray::load(cfg).unwrap_or_else(|e| panic!("{e}")))
    }

    /// A RoCEv2 data frame of flow 3 (QP 3) from host 0 to host 1, entropy 7.
    fn data(payload: usize, psn: u32) -> Vec<u8> {
        let mut pkt = Packet::data(0, 1, 3, psn, payload as u32);
        pkt.entropy = 7;
        let body: Vec<u8> = (0..payload).map(|i| (i * 13) as u8).collect();
        let mut buf = vec![0u8; 10_000];
        let n = codec::encode(&pkt, &body, true, port_mac(0, 0), port_mac(9, 0), &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    fn stat(s: &TcSpray, name: &str) -> u64 {
        s.stats()
            .unwrap()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
    }

    /// Each packet leaves with the next entropy of its flow's set (a default set
    /// here: 8 entropies from 49152 up), and the ICRC still checks (the dataplane's
    /// parser verifies it), from the smallest payload to 3 KB (a test run's skb
    /// takes less than a page; the attached test sends 4 KiB).
    #[test]
    fn entropy_rotates_and_the_icrc_still_checks() {
        let Some(mut s) = spray(SprayConfig::default()) else {
            return;
        };
        let mut seen = Vec::new();
        for (k, payload) in [4usize, 1000, 3000]
            .into_iter()
            .cycle()
            .take(24)
            .enumerate()
        {
            let f = data(payload, k as u32);
            let (verdict, out) = s.test_run(&f).unwrap();
            assert_eq!(verdict, TC_ACT_OK);
            assert_eq!(out.len(), f.len());
            let d = codec::decode(&out).unwrap_or_else(|e| panic!("packet {k}: {e}"));
            let orig = codec::decode(&f).unwrap();
            assert_eq!((d.pkt.psn, d.payload), (orig.pkt.psn, orig.payload));
            assert!(d.pkt.entropy >= 49152, "{}", d.pkt.entropy);
            seen.push(d.pkt.entropy);
        }
        // Eight entropies in turn, then again.
        let mut first: Vec<u16> = seen[..8].to_vec();
        first.sort();
        first.dedup();
        assert_eq!(first.len(), 8, "{seen:?}");
        assert_eq!(seen[..8], seen[8..16], "{seen:?}");
        assert_eq!(stat(&s, "new_flows"), 1);
        assert_eq!(stat(&s, "rewritten"), 24);
    }

    /// A set userspace writes for the flow is used in turn from the next packet.
    #[test]
    fn userspace_entropies_are_used_in_turn() {
        let Some(mut s) = spray(SprayConfig::default()) else {
            return;
        };
        s.set_entropies(host_ip(1), 3, &[1000, 2000, 3000]).unwrap();
        let got: Vec<u16> = (0..6)
            .map(|k| {
                let (_, out) = s.test_run(&data(100, k)).unwrap();
                codec::decode(&out).unwrap().pkt.entropy
            })
            .collect();
        assert_eq!(got, [1000, 2000, 3000, 1000, 2000, 3000]);
        assert_eq!(stat(&s, "new_flows"), 0);
    }

    /// A plain UDP flow in the configured port range gets sprayed with a valid UDP
    /// checksum; traffic outside it, and anything that is not UDP over IPv4, leaves
    /// exactly as it came.
    #[test]
    fn udp_checksums_are_patched_and_other_traffic_is_untouched() {
        let Some(mut s) = spray(SprayConfig {
            ports: (5000, 5001),
            ..SprayConfig::default()
        }) else {
            return;
        };
        let udp = |dport: u16| {
            let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4([10, 1, 0, 0], [10, 1, 0, 1], 64)
                .udp(4242, dport);
            let payload = [7u8; 300];
            let mut v = Vec::new();
            b.write(&mut v, &payload).unwrap();
            v
        };
        let (verdict, out) = s.test_run(&udp(5000)).unwrap();
        assert_eq!(verdict, TC_ACT_OK);
        let p = etherparse::SlicedPacket::from_ethernet(&out).unwrap();
        let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Udp(u))) =
            (p.net, p.transport)
        else {
            panic!("not UDP over IPv4 any more");
        };
        assert_ne!(u.source_port(), 4242, "sprayed");
        let want = u
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), u.payload())
            .unwrap();
        assert_eq!(u.checksum(), want, "the UDP checksum matches the new port");

        let mut others = vec![udp(5002), udp(4790)];
        let mut tcp = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 1, 0, 0], [10, 1, 0, 1], 64)
            .tcp(4242, 5000, 1, 1000)
            .write(&mut tcp, &[1u8; 40])
            .unwrap();
        others.push(tcp);
        let mut arp = udp(5000);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        others.push(arp);
        others.push(udp(5000)[..40].to_vec()); // truncated inside UDP
        for (i, f) in others.iter().enumerate() {
            let (verdict, out) = s.test_run(f).unwrap();
            assert_eq!(verdict, TC_ACT_OK, "case {i}");
            assert_eq!(&out, f, "case {i} changed");
        }
        // Random bytes: always passed on, never resized. (The kernel refuses to
        // build a test skb from some, a short IPv4 header say: not the program's
        // doing, and counted to see that most ran.)
        let mut ran = 0;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for k in 0..3000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = 14 + (rng % 1500) as usize;
            let mut f: Vec<u8> = (0..len).map(|i| (rng >> (i % 56)) as u8).collect();
            if k % 2 == 0 {
                f[12..14].copy_from_slice(&[0x08, 0x00]);
            }
            let Ok((verdict, out)) = s.test_run(&f) else {
                continue;
            };
            ran += 1;
            assert_eq!(verdict, TC_ACT_OK);
            assert_eq!(out.len(), f.len());
        }
        assert!(ran > 2500, "only {ran} of 3000 random frames ran");
    }

    /// Attached to a veth's egress, frames (200 bytes and 4 KiB of payload) leave
    /// sprayed with a valid ICRC; once the program is dropped they leave as sent.
    #[test]
    fn attached_it_sprays_until_dropped() {
        with_veth("ts", |v| {
            let cfg = AfPacketConfig {
                // Through the qdisc layer: TC egress runs there.
                qdisc_bypass: false,
                ..AfPacketConfig::default()
            };
            let mut a = AfPacket::open(&v.a, &cfg).unwrap();
            let mut b = AfPacket::open(&v.b, &cfg).unwrap();
            let mut send_one = |psn: u32| -> u16 {
                let payload = if psn.is_multiple_of(2) { 200 } else { 4096 };
                assert!(a.send(&data(payload, psn)).unwrap());
                a.flush().unwrap();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                let mut got = None;
                while got.is_none() {
                    assert!(std::time::Instant::now() < deadline, "frame {psn} lost");
                    b.recv(1, &mut |f| {
                        got = Some(
                            codec::decode(f)
                                .unwrap_or_else(|e| panic!("{e}"))
                                .pkt
                                .entropy,
                        )
                    })
                    .unwrap();
                }
                got.unwrap()
            };
            let mut s = TcSpray::load(SprayConfig::default()).unwrap();
            s.attach(&v.a).unwrap();
            s.set_entropies(host_ip(1), 3, &[1111, 2222]).unwrap();
            assert_eq!((send_one(0), send_one(1), send_one(2)), (1111, 2222, 1111));
            drop(s);
            assert_eq!(send_one(3), 7, "detached: the sender's own entropy");
        });
    }
}
