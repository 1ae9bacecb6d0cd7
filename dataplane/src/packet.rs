//! The packet every state machine works on: the fields of a fablab frame that the
//! switch and NIC logic read or write, without the bytes around them.
//!
//! The simulator moves these through its event queue; a datapath on real interfaces
//! parses a frame into one, lets the same switch/NIC code act on it and writes the
//! result back out. Everything here is fixed-size: an INT stack is a bounded array, a
//! SACK bitmap is a bounded bitmap.

use crate::wire::ack::SackBitmap;
use crate::wire::frame::{ECN_CE, ECN_ECT0, OVERHEAD};
use crate::wire::int::{IntMdRepr, MAX_INT_HOPS, MD_LEN, SHIM_LEN};
use crate::wire::{ack, aeth};

/// Time in nanoseconds, virtual (sim) or since the start of a run (emu).
pub type Nanos = u64;
/// A host (NIC) in the fabric.
pub type HostId = u32;
/// A flow; on the wire it is the destination QP.
pub type FlowId = u32;

/// What a packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A segment of a flow's data (RC SEND First/Middle/Last/Only).
    Data,
    /// A cumulative + selective acknowledgement with fablab's extension.
    Ack,
    /// A negative acknowledgement: the receiver saw a gap.
    Nack,
    /// A RoCEv2 congestion notification packet (DCQCN's notification point).
    Cnp,
}

/// One hop's telemetry, as fablab's switches stamp it (docs/wire.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IntHop {
    pub node: u32,
    pub in_port: u16,
    pub out_port: u16,
    /// Egress queue occupancy in bytes when the packet left.
    pub qlen: u32,
    /// Egress timestamp.
    pub ts: Nanos,
    /// Bytes the egress port had transmitted when the packet left.
    pub tx_bytes: u64,
    /// Egress link rate, Mb/s.
    pub rate_mbps: u32,
    /// Ingress-to-egress latency at this hop.
    pub latency: u32,
}

/// A bounded INT stack, the first hop first (the order HPCC reads it in). On the
/// wire the newest hop comes first; conversion reverses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IntTrail {
    hops: [IntHop; MAX_INT_HOPS],
    len: u8,
}

impl IntTrail {
    pub fn hops(&self) -> &[IntHop] {
        &self.hops[..usize::from(self.len)]
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Appends a hop; false when the stack is full (the hop is not recorded, as an
    /// INT transit node sets E when RemainingHopCnt is exhausted).
    pub fn push(&mut self, hop: IntHop) -> bool {
        let n = usize::from(self.len);
        if n == MAX_INT_HOPS {
            return false;
        }
        self.hops[n] = hop;
        self.len += 1;
        true
    }
    pub fn clear(&mut self) {
        self.len = 0;
    }
    /// Bytes the INT block takes on the wire with fablab's 8-word hops.
    pub fn wire_len(&self) -> u32 {
        (SHIM_LEN + MD_LEN) as u32
            + u32::from(self.len) * u32::from(IntMdRepr::fablab(0).hop_ml) * 4
    }
}

/// The fields of a frame the dataplane acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub kind: Kind,
    pub src: HostId,
    pub dst: HostId,
    pub flow: FlowId,
    /// 24-bit PSN of a data packet; for an ACK/NACK the PSN of the data packet that
    /// triggered it.
    pub psn: u32,
    /// UDP source port: the entropy switches hash.
    pub entropy: u16,
    /// Payload bytes (data packets).
    pub payload: u32,
    /// True on the last segment of a flow's message.
    pub last: bool,
    /// ECN codepoint.
    pub ecn: u8,
    /// Data: collect INT at every hop. ACK: `int` holds the echoed stack.
    pub int_enabled: bool,
    pub int: IntTrail,
    /// ACK/NACK: next PSN the receiver expects (24-bit).
    pub cum_psn: u32,
    /// ACK/NACK: SACK bitmap relative to `cum_psn + 1`.
    pub sack: SackBitmap,
    /// ACK: the acked packet arrived with CE.
    pub ecn_echo: bool,
    /// ACK: the acked packet was a duplicate (D-SACK).
    pub dsack: bool,
    /// Data: a switch cut this packet to its headers because its egress queue had no
    /// room ([`Packet::trim`]); the receiver answers with a NACK at once. NACK: it
    /// answers a trimmed packet (the PSN in `psn`), so the sender may retransmit at
    /// once.
    pub trimmed: bool,
    /// Data: the sender wants this packet acknowledged at once (BTH AckReq), not
    /// coalesced with later ones: the last packet of a message, a retransmission, or
    /// the packet that fills the sender's window.
    pub ack_req: bool,
}

impl Packet {
    /// A data segment.
    pub fn data(src: HostId, dst: HostId, flow: FlowId, psn: u32, payload: u32) -> Packet {
        Packet {
            kind: Kind::Data,
            src,
            dst,
            flow,
            psn,
            entropy: 0,
            payload,
            last: false,
            ecn: ECN_ECT0,
            int_enabled: false,
            int: IntTrail::default(),
            cum_psn: 0,
            sack: SackBitmap::default(),
            ecn_echo: false,
            dsack: false,
            trimmed: false,
            ack_req: true,
        }
    }

    /// Cuts a data packet to its headers, as a trimming switch does when the packet
    /// would not fit its egress queue: the payload and any INT are gone, the PSN, the
    /// flow and the segment's position stay, so the receiver can ask for exactly this
    /// packet again (docs/wire.md, "Trimmed packets").
    pub fn trim(&mut self) {
        debug_assert_eq!(self.kind, Kind::Data);
        self.trimmed = true;
        self.payload = 0;
        self.int_enabled = false;
        self.int.clear();
    }

    /// Wire bytes of the largest data packet with `mtu` bytes of payload: a full
    /// segment carrying a full INT stack. A queue smaller than this cannot hold every
    /// packet of the fabric.
    pub fn largest_data_wire_len(mtu: u32) -> u32 {
        let mut p = Packet::data(0, 0, 0, 0, mtu);
        p.int_enabled = true;
        while p.int.push(IntHop::default()) {}
        p.wire_len()
    }

    /// Whether the packet travels in a switch's control class (ACK, NACK, CNP and
    /// trimmed headers), ahead of data.
    pub fn is_control(&self) -> bool {
        self.kind != Kind::Data || self.trimmed
    }

    /// A control packet (ACK, NACK or CNP) from `src` to `dst` about `flow`.
    pub fn control(kind: Kind, src: HostId, dst: HostId, flow: FlowId) -> Packet {
        Packet {
            kind,
            payload: 0,
            ..Packet::data(src, dst, flow, 0, 0)
        }
    }

    pub fn is_ce(&self) -> bool {
        self.ecn == ECN_CE
    }

    /// Bytes of the frame on the wire (Ethernet header to ICRC, no preamble/IFG),
    /// as [`crate::wire::FrameRepr::buffer_len`] would give.
    pub fn wire_len(&self) -> u32 {
        let body = match self.kind {
            Kind::Data => self.payload + ((4 - self.payload % 4) % 4),
            Kind::Ack | Kind::Nack => {
                let mut n =
                    aeth::HEADER_LEN as u32 + ack::FIXED_LEN as u32 + self.sack.words() as u32 * 4;
                if !self.int.is_empty() {
                    n += self.int.wire_len();
                }
                n
            }
            Kind::Cnp => crate::wire::frame::CNP_RESERVED_LEN as u32,
        };
        let int = if self.kind == Kind::Data && self.int_enabled {
            self.int.wire_len()
        } else {
            0
        };
        (OVERHEAD as u32 + body + int).max(crate::wire::frame::ETH_MIN_LEN as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_len_matches_the_emitted_frame_for_data() {
        let p = Packet::data(0, 1, 7, 3, 1000);
        assert_eq!(p.wire_len(), (OVERHEAD + 1000) as u32);
        // 58 bytes of headers and ICRC + 1 payload byte + 3 pad bytes.
        assert_eq!(Packet::data(0, 1, 7, 3, 1).wire_len(), 62);
        // An empty segment is padded to Ethernet's 60-byte minimum.
        assert_eq!(Packet::data(0, 1, 7, 3, 0).wire_len(), 60);
        // Headers, 1000 bytes, and an INT block of 8 hops (16 + 8 × 32 bytes).
        assert_eq!(
            Packet::largest_data_wire_len(1000),
            (OVERHEAD + 1000 + 16 + 8 * 32) as u32
        );
    }

    #[test]
    fn int_trail_is_bounded() {
        let mut t = IntTrail::default();
        for i in 0..MAX_INT_HOPS {
            assert!(t.push(IntHop {
                node: i as u32,
                ..IntHop::default()
            }));
        }
        assert!(!t.push(IntHop::default()));
        assert_eq!(t.hops().len(), MAX_INT_HOPS);
        assert_eq!(t.wire_len(), 16 + 8 * 32);
    }
}
