//! The Rust side of `ebpf/fablab.h`: the values of the XDP switch's maps, field for
//! field. The tests read every struct's layout back from the compiled object's BTF
//! (what the kernel sees) and compare sizes and offsets, so a change on one side
//! without the other fails the build's tests.

use aya::Pod;

pub const FL_MAX_PORTS: u32 = 64;
pub const FL_MAX_CANDS: usize = 16;
pub const FL_RR_SLOTS: u32 = 1024;

/// `switch.lb` as the program numbers it.
pub const FL_LB_ECMP: u32 = 0;
pub const FL_LB_SPRAY_RR: u32 = 1;
pub const FL_LB_SPRAY_RANDOM: u32 = 2;
pub const FL_LB_ADAPTIVE: u32 = 3;

/// `fl_config[0]`: the switch as a whole.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlConfig {
    pub node_id: u32,
    pub policy: u32,
    pub int_on: u32,
    pub ecn_on: u32,
    pub kmin_bytes: u64,
    pub kmax_bytes: u64,
    pub pmax_ppm: u32,
    pub buffer_bytes: u32,
    pub seed: u64,
}

/// `fl_ports[port]`. `ifindex == 0`: no such port.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlPort {
    pub ifindex: u32,
    pub rate_mbps: u32,
    pub mtu: u32,
    pub up: u32,
    pub loss_ppm: u32,
    pub mac: [u8; 6],
    pub peer_mac: [u8; 6],
}

/// The key of the LPM trie `fl_routes`: prefix length and IPv4 address (network
/// order, as on the wire).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlRouteKey {
    pub prefixlen: u32,
    pub addr: [u8; 4],
}

/// `fl_routes[prefix]`: the equal-cost egress ports `ports[..n]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlRoute {
    pub n: u32,
    pub ports: [u16; FL_MAX_CANDS],
}

/// An egress port's virtual queue.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlQueue {
    pub bytes: u64,
    pub at: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub drops: u64,
    pub ecn_marks: u64,
    pub max_bytes: u64,
}

/// `fl_queues[port]`: the queue behind its `bpf_spin_lock` (a `u32` the kernel
/// never copies to userspace).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlQueueLocked {
    pub lock: u32,
    pub pad: u32,
    pub q: FlQueue,
}

// SAFETY: plain `#[repr(C)]` structs of integers and byte arrays, with no padding
// bytes (checked against the BTF layout in the tests, whose sizes equal the sums
// of their fields) and no invalid bit patterns.
unsafe impl Pod for FlConfig {}
// SAFETY: as above.
unsafe impl Pod for FlPort {}
// SAFETY: as above.
unsafe impl Pod for FlRouteKey {}
// SAFETY: as above.
unsafe impl Pod for FlRoute {}
// SAFETY: as above.
unsafe impl Pod for FlQueueLocked {}

/// `fl_spray_config[0]` of `fl_tc_spray`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlSprayConfig {
    pub port_lo: u16,
    pub port_hi: u16,
    pub base: u16,
    pub span: u16,
    pub count: u32,
}

pub const FL_MAX_ENTROPIES: usize = 16;
pub const FL_CRC_SHIFT_MAX: u32 = 16384;

/// A flow of `fl_tc_spray`: destination address (as on the wire) and RoCEv2's
/// destination QP (or, for other UDP, `sport << 16 | dport`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FlFlowKey {
    pub daddr: [u8; 4],
    pub id: u32,
}

/// A flow's entropies, `ports[..n]`, used in turn from index `next`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlEntropySet {
    pub n: u32,
    pub next: u32,
    pub ports: [u16; FL_MAX_ENTROPIES],
}

// SAFETY: as for the structs above: integers and byte arrays, no padding.
unsafe impl Pod for FlSprayConfig {}
// SAFETY: as above.
unsafe impl Pod for FlFlowKey {}
// SAFETY: as above.
unsafe impl Pod for FlEntropySet {}

/// `fl_spray_stats` indices (`FL_SPRAY_*`).
pub const SPRAY_STATS: [&str; 3] = ["rewritten", "new_flows", "skipped"];

/// `fl_stats` indices (`FL_STAT_*`), with the names results.json gives them.
pub const STATS: [&str; 12] = [
    "forwarded",
    "int_source",
    "int_pushed",
    "int_exceeded",
    "not_ipv4",
    "bad_ipv4",
    "ttl_expired",
    "no_route",
    "queue_full",
    "bad_int",
    "adjust_failed",
    "link_loss",
];
pub const STAT_FORWARDED: u32 = 0;
pub const STAT_INT_SOURCE: u32 = 1;
pub const STAT_INT_PUSHED: u32 = 2;
pub const STAT_INT_EXCEEDED: u32 = 3;
pub const STAT_NOT_IPV4: u32 = 4;
pub const STAT_BAD_IPV4: u32 = 5;
pub const STAT_TTL: u32 = 6;
pub const STAT_NO_ROUTE: u32 = 7;
pub const STAT_QUEUE_FULL: u32 = 8;
pub const STAT_BAD_INT: u32 = 9;
pub const STAT_ADJUST: u32 = 10;
pub const STAT_LINK_LOSS: u32 = 11;

#[cfg(test)]
mod tests {
    //! The layouts against the compiled program's BTF.

    use super::*;
    use std::collections::HashMap;
    use std::mem::{offset_of, size_of};

    /// Struct name → (size, member name → byte offset), from a `.BTF` section.
    fn btf_structs(btf: &[u8]) -> HashMap<String, (u32, HashMap<String, u32>)> {
        let u32_at = |o: usize| u32::from_le_bytes(btf[o..o + 4].try_into().unwrap());
        assert_eq!(u16::from_le_bytes([btf[0], btf[1]]), 0xeb9f, "BTF magic");
        let hdr_len = u32_at(4) as usize;
        let (type_off, type_len) = (u32_at(8) as usize, u32_at(12) as usize);
        let str_off = u32_at(16) as usize;
        let types = hdr_len + type_off;
        let strings = hdr_len + str_off;
        let name = |off: u32| {
            let s = &btf[strings + off as usize..];
            String::from_utf8_lossy(&s[..s.iter().position(|&b| b == 0).unwrap()]).into_owned()
        };
        let mut out = HashMap::new();
        let mut p = types;
        while p < types + type_len {
            let (name_off, info, size) = (u32_at(p), u32_at(p + 4), u32_at(p + 8));
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let bitfield = info >> 31 == 1;
            p += 12;
            // Trailing data per kind (linux/btf.h).
            match kind {
                1 | 14 | 17 => p += 4, // INT, VAR, DECL_TAG
                3 => p += 12,          // ARRAY
                4 | 5 => {
                    // STRUCT, UNION: members of 12 bytes.
                    let mut members = HashMap::new();
                    for k in 0..vlen {
                        let m = p + 12 * k;
                        let off = u32_at(m + 8);
                        let bits = if bitfield { off & 0x00ff_ffff } else { off };
                        members.insert(name(u32_at(m)), bits / 8);
                    }
                    if kind == 4 && name_off != 0 {
                        out.insert(name(name_off), (size, members));
                    }
                    p += 12 * vlen;
                }
                6 => p += 8 * vlen,   // ENUM
                13 => p += 8 * vlen,  // FUNC_PROTO
                15 => p += 12 * vlen, // DATASEC
                19 => p += 12 * vlen, // ENUM64
                _ => {}
            }
        }
        out
    }

    fn btf_of(obj: Result<&[u8], &str>) -> Vec<u8> {
        use object::{Object as _, ObjectSection as _};
        let obj = obj.expect("the eBPF programs are built (scripts/setup.sh)");
        let file = object::File::parse(obj).unwrap();
        let section = file.section_by_name(".BTF").expect("a .BTF section");
        section.data().unwrap().to_vec()
    }

    #[test]
    fn rust_structs_match_the_programs_btf() {
        let mut structs = btf_structs(&btf_of(crate::ebpf::FL_SWITCH));
        structs.extend(btf_structs(&btf_of(crate::ebpf::FL_TC_SPRAY)));
        macro_rules! check {
            ($c:literal, $t:ty, [$($f:ident),*]) => {{
                let (size, members) = structs
                    .get($c)
                    .unwrap_or_else(|| panic!("struct {} not in the BTF", $c));
                assert_eq!(*size as usize, size_of::<$t>(), "sizeof(struct {})", $c);
                let mut named = 0;
                $(
                    named += 1;
                    assert_eq!(
                        members.get(stringify!($f)).copied(),
                        Some(offset_of!($t, $f) as u32),
                        "offset of {}.{}", $c, stringify!($f)
                    );
                )*
                assert_eq!(members.len(), named, "struct {} has fields {:?}", $c, members.keys());
            }};
        }
        check!(
            "fl_config",
            FlConfig,
            [
                node_id,
                policy,
                int_on,
                ecn_on,
                kmin_bytes,
                kmax_bytes,
                pmax_ppm,
                buffer_bytes,
                seed
            ]
        );
        check!(
            "fl_port",
            FlPort,
            [ifindex, rate_mbps, mtu, up, loss_ppm, mac, peer_mac]
        );
        check!("fl_route_key", FlRouteKey, [prefixlen, addr]);
        check!("fl_route", FlRoute, [n, ports]);
        check!(
            "fl_queue",
            FlQueue,
            [bytes, at, tx_bytes, tx_packets, drops, ecn_marks, max_bytes]
        );
        check!("fl_queue_locked", FlQueueLocked, [lock, pad, q]);
        check!(
            "fl_spray_config",
            FlSprayConfig,
            [port_lo, port_hi, base, span, count]
        );
        check!("fl_flow_key", FlFlowKey, [daddr, id]);
        check!("fl_entropy_set", FlEntropySet, [n, next, ports]);
    }
}
