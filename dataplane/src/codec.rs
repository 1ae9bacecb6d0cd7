//! Packets on real links: a dataplane [`Packet`] written as a fablab frame, and a
//! frame read back into a [`Packet`].
//!
//! The simulator moves [`Packet`]s; the emu datapath (and the eBPF side) move bytes.
//! This module is the one place the two meet, so the state machines see the same
//! packet in every mode. It owns the mapping of packet fields to header fields:
//!
//! - hosts are IPv4 addresses ([`addr::host_ip`]), the flow is the BTH destination QP,
//!   the entropy is the UDP source port;
//! - data is RC SEND First/Middle/Last/Only by position in the flow, with ACK-request
//!   set; a data packet that collects INT carries an INT-over-UDP stack (DSCP bit
//!   [`INT_DSCP_BIT`]), oldest hop deepest;
//! - ACK and NACK are RC Acknowledge with syndrome ACK or NAK (PSN sequence error)
//!   plus fablab's ACK extension (cumulative PSN, SACK, ECN-echo, D-SACK, echoed INT);
//! - a trimmed data packet (cut to its headers by a switch) keeps its BTH and loses
//!   its payload and INT; its DSCP is [`TRIMMED_DSCP`];
//! - a CNP is a RoCEv2 CNP for the flow's QP.
//!
//! It never panics on untrusted bytes and never allocates.

use crate::packet::{IntHop, IntTrail, Kind, Packet};
use crate::wire::addr::{host_ip, host_of_ip};
use crate::wire::aeth::{Syndrome, CREDITS_UNLIMITED};
use crate::wire::bth::DEFAULT_PKEY;
use crate::wire::int::{HopMetadata, IntMdRepr, IntStack, MAX_INT_HOPS, OCCUPANCY_MAX};
use crate::wire::{
    AckExtRepr, AethRepr, Body, BthRepr, FrameRepr, L3Repr, Opcode, WireError, INT_DSCP_BIT,
    ROCEV2_UDP_PORT, U24_MASK,
};

/// DSCP of fablab's RoCEv2 traffic (AF31, the usual RoCE class), before the INT bit.
pub const ROCE_DSCP: u8 = 26;
/// DSCP of a trimmed data packet: AF33, the RoCE class (AF3x) at its highest drop
/// precedence, so it is still RoCE traffic to every switch and tool, and a receiver
/// tells a trimmed header from an empty segment by it (docs/wire.md).
pub const TRIMMED_DSCP: u8 = 30;
/// TTL of frames a NIC sends.
pub const TTL: u8 = 64;
/// NAK code "PSN sequence error" (IBTA 9.7.5.2.4).
const NAK_PSN_SEQUENCE: u8 = 0;

/// Why a frame is not a packet of this fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a well-formed fablab frame (names the header and field).
    Wire(WireError),
    /// A well-formed frame whose address is no host of a fablab fabric.
    Address { ip: [u8; 4] },
    /// A frame of a kind fablab never sends (say, an RNR NAK or an RDMA WRITE).
    Unsupported { opcode: u8 },
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Wire(e) => write!(f, "{e}"),
            DecodeError::Address { ip } => write!(
                f,
                "IPv4 address {}.{}.{}.{} is not a fablab host (10.1.0.0/16)",
                ip[0], ip[1], ip[2], ip[3]
            ),
            DecodeError::Unsupported { opcode } => {
                write!(f, "BTH opcode {opcode:#04x} is not one fablab sends")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<WireError> for DecodeError {
    fn from(e: WireError) -> Self {
        DecodeError::Wire(e)
    }
}

/// A frame read back: the packet, its payload bytes (data packets), whether the
/// segment starts its message, and its TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub pkt: Packet,
    pub payload: &'a [u8],
    pub first: bool,
    pub ttl: u8,
}

fn hop_to_wire(h: &IntHop) -> HopMetadata {
    HopMetadata {
        node_id: h.node,
        l1_ingress_port: h.in_port,
        l1_egress_port: h.out_port,
        hop_latency_ns: h.latency,
        queue_occupancy: h.qlen.min(OCCUPANCY_MAX),
        egress_ts_ns: h.ts,
        tx_bytes: h.tx_bytes,
        link_rate_mbps: h.rate_mbps,
        ..HopMetadata::default()
    }
}

fn hop_from_wire(h: &HopMetadata) -> IntHop {
    IntHop {
        node: h.node_id,
        in_port: h.l1_ingress_port,
        out_port: h.l1_egress_port,
        qlen: h.queue_occupancy,
        ts: h.egress_ts_ns,
        tx_bytes: h.tx_bytes,
        rate_mbps: h.link_rate_mbps,
        latency: h.hop_latency_ns,
    }
}

/// The INT stack of a trail, oldest hop pushed first (so it ends deepest).
fn stack_of(trail: &IntTrail) -> IntStack {
    let mut s = IntStack::new(IntMdRepr::fablab(MAX_INT_HOPS as u8), ROCEV2_UDP_PORT);
    for h in trail.hops() {
        // A trail holds at most MAX_INT_HOPS hops, the stack's own bound.
        let _ = s.push(hop_to_wire(h));
    }
    s
}

fn trail_of(stack: &IntStack) -> IntTrail {
    let mut t = IntTrail::default();
    for h in stack.hops().iter().rev() {
        t.push(hop_from_wire(h));
    }
    t
}

/// The frame for `pkt` between two MACs. `payload` is the data packet's payload
/// (its length must be `pkt.payload`); `first` says the segment starts the flow's
/// message. Control packets ignore both.
pub fn frame_of<'a>(
    pkt: &Packet,
    payload: &'a [u8],
    first: bool,
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    ttl: u8,
) -> FrameRepr<'a> {
    let int_on = pkt.kind == Kind::Data && pkt.int_enabled;
    let l3 = L3Repr {
        eth_src,
        eth_dst,
        ip_src: host_ip(pkt.src),
        ip_dst: host_ip(pkt.dst),
        dscp: if pkt.kind == Kind::Data && pkt.trimmed {
            TRIMMED_DSCP
        } else if int_on {
            ROCE_DSCP | INT_DSCP_BIT
        } else {
            ROCE_DSCP
        },
        ecn: pkt.ecn,
        ttl,
        ip_id: 0,
        udp_src: pkt.entropy,
    };
    let bth = |opcode: Opcode, psn: u32, pad_count: u8| BthRepr {
        opcode,
        solicited: false,
        migreq: false,
        pad_count,
        pkey: DEFAULT_PKEY,
        fecn: false,
        becn: opcode == Opcode::CNP,
        dest_qp: pkt.flow & U24_MASK,
        ack_req: opcode.is_send() && pkt.ack_req,
        psn: psn & U24_MASK,
    };
    match pkt.kind {
        Kind::Data => {
            // A trimmed packet's payload stayed behind at the switch that trimmed it.
            let payload = if pkt.trimmed { &[][..] } else { payload };
            let opcode = match (first, pkt.last) {
                (true, true) => Opcode::RC_SEND_ONLY,
                (true, false) => Opcode::RC_SEND_FIRST,
                (false, true) => Opcode::RC_SEND_LAST,
                (false, false) => Opcode::RC_SEND_MIDDLE,
            };
            FrameRepr {
                l3,
                int: int_on.then(|| stack_of(&pkt.int)),
                bth: bth(opcode, pkt.psn, FrameRepr::pad_for(payload.len())),
                body: Body::Data { payload },
            }
        }
        Kind::Ack | Kind::Nack => FrameRepr {
            l3,
            int: None,
            bth: bth(Opcode::RC_ACK, pkt.psn, 0),
            body: Body::Ack {
                aeth: AethRepr {
                    syndrome: if pkt.kind == Kind::Ack {
                        Syndrome::Ack {
                            credits: CREDITS_UNLIMITED,
                        }
                    } else {
                        Syndrome::Nak {
                            code: NAK_PSN_SEQUENCE,
                        }
                    },
                    msn: 0,
                },
                ext: Some(AckExtRepr {
                    ecn_echo: pkt.ecn_echo,
                    duplicate: pkt.dsack,
                    trimmed: pkt.kind == Kind::Nack && pkt.trimmed,
                    acked_psn: pkt.psn & U24_MASK,
                    cumulative_psn: pkt.cum_psn & U24_MASK,
                    sack: pkt.sack,
                    int: (!pkt.int.is_empty()).then(|| stack_of(&pkt.int)),
                }),
            },
        },
        Kind::Cnp => FrameRepr {
            l3,
            int: None,
            bth: bth(Opcode::CNP, 0, 0),
            body: Body::Cnp,
        },
    }
}

/// Writes `pkt` as a frame into `buf` (see [`frame_of`]) and returns its length.
pub fn encode(
    pkt: &Packet,
    payload: &[u8],
    first: bool,
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    buf: &mut [u8],
) -> Result<usize, WireError> {
    frame_of(pkt, payload, first, eth_src, eth_dst, TTL).emit(buf)
}

/// Reads a frame back into a packet. Everything [`FrameRepr::parse`] checks is
/// checked (lengths, IPv4 checksum, ICRC), then that both addresses are fabric
/// hosts and the opcode is one fablab sends.
pub fn decode(frame: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let f = FrameRepr::parse(frame)?;
    packet_of(&f)
}

/// The packet a parsed frame carries.
pub fn packet_of<'a>(f: &FrameRepr<'a>) -> Result<Decoded<'a>, DecodeError> {
    let host = |ip: [u8; 4]| host_of_ip(ip).ok_or(DecodeError::Address { ip });
    let (src, dst) = (host(f.l3.ip_src)?, host(f.l3.ip_dst)?);
    let flow = f.bth.dest_qp;
    let mut payload: &[u8] = &[];
    let mut first = false;
    let mut pkt = match f.body {
        Body::Data { payload: p } => {
            let last = match f.bth.opcode {
                Opcode::RC_SEND_LAST | Opcode::RC_SEND_ONLY => true,
                Opcode::RC_SEND_FIRST | Opcode::RC_SEND_MIDDLE => false,
                other => return Err(DecodeError::Unsupported { opcode: other.0 }),
            };
            payload = p;
            first = matches!(f.bth.opcode, Opcode::RC_SEND_FIRST | Opcode::RC_SEND_ONLY);
            let mut pkt = Packet::data(src, dst, flow, f.bth.psn, p.len() as u32);
            pkt.last = last;
            pkt.ack_req = f.bth.ack_req;
            pkt.trimmed = f.l3.dscp == TRIMMED_DSCP && p.is_empty();
            if let Some(stack) = &f.int {
                pkt.int_enabled = true;
                pkt.int = trail_of(stack);
            }
            pkt
        }
        Body::Ack { aeth, ext } => {
            let kind = match aeth.syndrome {
                Syndrome::Ack { .. } => Kind::Ack,
                Syndrome::Nak { .. } => Kind::Nack,
                Syndrome::RnrNak { .. } => {
                    return Err(DecodeError::Unsupported {
                        opcode: f.bth.opcode.0,
                    })
                }
            };
            let mut pkt = Packet::control(kind, src, dst, flow);
            pkt.psn = f.bth.psn;
            match ext {
                Some(e) => {
                    pkt.psn = e.acked_psn;
                    pkt.cum_psn = e.cumulative_psn;
                    pkt.sack = e.sack;
                    pkt.ecn_echo = e.ecn_echo;
                    pkt.dsack = e.duplicate;
                    pkt.trimmed = kind == Kind::Nack && e.trimmed;
                    if let Some(stack) = &e.int {
                        pkt.int = trail_of(stack);
                    }
                }
                // A plain RoCEv2 ACK acknowledges everything up to its PSN.
                None => pkt.cum_psn = f.bth.psn.wrapping_add(1) & U24_MASK,
            }
            pkt
        }
        Body::Cnp => Packet::control(Kind::Cnp, src, dst, flow),
    };
    pkt.entropy = f.l3.udp_src;
    pkt.ecn = f.l3.ecn;
    Ok(Decoded {
        pkt,
        payload,
        first,
        ttl: f.l3.ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ack::SackBitmap;
    use crate::wire::frame::{ECN_CE, ECN_ECT0};
    use proptest::prelude::*;

    const A: [u8; 6] = [2, 0xfa, 0, 1, 0, 0];
    const B: [u8; 6] = [2, 0xfa, 0, 9, 0, 3];

    fn hop(i: u32) -> IntHop {
        IntHop {
            node: 100 + i,
            in_port: 1,
            out_port: 2 + i as u16,
            qlen: 4096 * i,
            ts: 1_000_000 + u64::from(i),
            tx_bytes: 1 << 40 | u64::from(i),
            rate_mbps: 100_000,
            latency: 0,
        }
    }

    fn round_trip(pkt: &Packet, payload: &[u8], first: bool) -> Packet {
        let mut buf = [0u8; 9216];
        let n = encode(pkt, payload, first, A, B, &mut buf).unwrap();
        assert_eq!(n as u32, pkt.wire_len(), "wire_len agrees with the bytes");
        let d = decode(&buf[..n]).unwrap();
        assert_eq!(d.payload, payload);
        assert_eq!(d.ttl, TTL);
        if pkt.kind == Kind::Data {
            assert_eq!(d.first, first);
        }
        d.pkt
    }

    #[test]
    fn data_with_int_round_trips() {
        let payload: Vec<u8> = (0..1001u32).map(|i| i as u8).collect();
        let mut p = Packet::data(3, 300, 77, 0x123456, 1001);
        p.entropy = 0xc123;
        p.last = true;
        p.ecn = ECN_CE;
        p.int_enabled = true;
        for i in 0..3 {
            p.int.push(hop(i));
        }
        assert_eq!(round_trip(&p, &payload, false), p);
        // No INT collected yet: still an INT packet (the first switch started it).
        let mut q = Packet::data(3, 4, 1, 0, 8);
        q.int_enabled = true;
        assert_eq!(round_trip(&q, &[7; 8], true), q);
    }

    #[test]
    fn acks_nacks_and_cnps_round_trip() {
        let mut a = Packet::control(Kind::Ack, 300, 3, 77);
        a.psn = 41;
        a.cum_psn = 40;
        a.sack = SackBitmap::default();
        a.sack.set(0);
        a.sack.set(70);
        a.ecn_echo = true;
        a.dsack = true;
        a.entropy = 0xd001;
        a.ecn = ECN_ECT0;
        a.int.push(hop(0));
        a.int.push(hop(1));
        assert_eq!(round_trip(&a, &[], false), a);
        let mut n = Packet::control(Kind::Nack, 300, 3, 77);
        n.psn = 9;
        n.cum_psn = 5;
        n.ecn = ECN_ECT0;
        assert_eq!(round_trip(&n, &[], false), n);
        let mut c = Packet::control(Kind::Cnp, 300, 3, 77);
        c.ecn = ECN_ECT0;
        assert_eq!(round_trip(&c, &[], false), c);
    }

    #[test]
    fn foreign_addresses_and_garbage_are_errors() {
        let mut buf = [0u8; 256];
        let p = Packet::data(1, 2, 3, 4, 16);
        let n = encode(&p, &[0; 16], true, A, B, &mut buf).unwrap();
        let mut f = FrameRepr::parse(&buf[..n]).unwrap();
        f.l3.ip_dst = [192, 168, 1, 1];
        let mut out = [0u8; 256];
        let m = f.emit(&mut out).unwrap();
        assert_eq!(
            decode(&out[..m]),
            Err(DecodeError::Address {
                ip: [192, 168, 1, 1]
            })
        );
        assert!(matches!(decode(&buf[..n - 1]), Err(DecodeError::Wire(_))));
        assert!(decode(&[]).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn data_round_trips(src in 0u32..65536, dst in 0u32..65536, flow in 0u32..(1 << 24),
                            psn in 0u32..(1 << 24), len in 0usize..2000, first: bool, last: bool,
                            entropy: u16, hops in 0u32..8) {
            let payload = vec![0xa5u8; len];
            let mut p = Packet::data(src, dst, flow, psn, len as u32);
            p.entropy = entropy;
            p.last = last;
            p.int_enabled = hops > 0;
            for i in 0..hops {
                p.int.push(hop(i));
            }
            prop_assert_eq!(round_trip(&p, &payload, first), p);
        }
    }
}
