//! RoCEv2 Base Transport Header (InfiniBand Architecture Specification Vol. 1,
//! Release 1.4, §9.2 "Base Transport Header"; RoCEv2 is Annex A17).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    OpCode     |S|M|Pad| TVer  |            P_Key              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |F|B|  Resv6    |                 Destination QP                |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |A|   Resv7     |            Packet Sequence Number             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! F/B (FECN/BECN) occupy the top of the InfiniBand `Resv8a` byte in RoCEv2 (A17.3.4);
//! the whole byte is a variant field for the ICRC.

use super::{need, read_u24, write_u24, Field, Header, Result, WireError, U24_MASK};

mod field {
    use super::Field;
    pub const OPCODE: usize = 0;
    pub const FLAGS: usize = 1;
    pub const PKEY: Field = 2..4;
    pub const RESV8A: usize = 4;
    pub const DEST_QP: Field = 5..8;
    pub const ACK_REQ: usize = 8;
    pub const PSN: Field = 9..12;
}

/// Length of the BTH in bytes.
pub const HEADER_LEN: usize = 12;
/// Offset of the variant `Resv8a` (F/B) byte, masked to all-ones in the ICRC.
pub const RESV8A_OFFSET: usize = field::RESV8A;

/// The default partition key (full membership, default partition), as RoCE NICs send.
pub const DEFAULT_PKEY: u16 = 0xffff;

/// A BTH opcode: the top 3 bits name the transport service, the low 5 the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Opcode(pub u8);

impl Opcode {
    /// Reliable Connection SEND First / Middle / Last / Only (IBA Table 38).
    pub const RC_SEND_FIRST: Opcode = Opcode(0x00);
    pub const RC_SEND_MIDDLE: Opcode = Opcode(0x01);
    pub const RC_SEND_LAST: Opcode = Opcode(0x02);
    pub const RC_SEND_ONLY: Opcode = Opcode(0x04);
    /// Reliable Connection Acknowledge: BTH + AETH.
    pub const RC_ACK: Opcode = Opcode(0x11);
    /// RoCEv2 Congestion Notification Packet (Annex A17.9.3): BTH + 16 reserved bytes.
    pub const CNP: Opcode = Opcode(0x81);

    /// True for the RC SEND opcodes that carry a segment of a message.
    pub const fn is_send(self) -> bool {
        matches!(self.0, 0x00..=0x02 | 0x04)
    }
}

/// A read/write view of a BTH.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length; accessors may panic if it is short.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures every accessor is in bounds.
    pub fn check_len(&self) -> Result<()> {
        need(Header::Bth, "header", self.buffer.as_ref(), HEADER_LEN)
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn opcode(&self) -> Opcode {
        Opcode(self.buffer.as_ref()[field::OPCODE])
    }
    pub fn solicited(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & 0x80 != 0
    }
    pub fn migreq(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & 0x40 != 0
    }
    pub fn pad_count(&self) -> u8 {
        (self.buffer.as_ref()[field::FLAGS] >> 4) & 0x3
    }
    pub fn tver(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS] & 0x0f
    }
    pub fn pkey(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::PKEY];
        u16::from_be_bytes([b[0], b[1]])
    }
    pub fn fecn(&self) -> bool {
        self.buffer.as_ref()[field::RESV8A] & 0x80 != 0
    }
    pub fn becn(&self) -> bool {
        self.buffer.as_ref()[field::RESV8A] & 0x40 != 0
    }
    pub fn dest_qp(&self) -> u32 {
        read_u24(&self.buffer.as_ref()[field::DEST_QP])
    }
    pub fn ack_req(&self) -> bool {
        self.buffer.as_ref()[field::ACK_REQ] & 0x80 != 0
    }
    pub fn psn(&self) -> u32 {
        read_u24(&self.buffer.as_ref()[field::PSN])
    }
    /// Everything after the BTH.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_opcode(&mut self, v: Opcode) {
        self.buffer.as_mut()[field::OPCODE] = v.0;
    }
    /// Sets S, M, PadCnt and TVer at once (they share one byte).
    pub fn set_flags(&mut self, solicited: bool, migreq: bool, pad_count: u8, tver: u8) {
        self.buffer.as_mut()[field::FLAGS] = (u8::from(solicited) << 7)
            | (u8::from(migreq) << 6)
            | ((pad_count & 0x3) << 4)
            | (tver & 0x0f);
    }
    pub fn set_pkey(&mut self, v: u16) {
        self.buffer.as_mut()[field::PKEY].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets FECN/BECN; the six reserved bits are written as zero.
    pub fn set_fecn_becn(&mut self, fecn: bool, becn: bool) {
        self.buffer.as_mut()[field::RESV8A] = (u8::from(fecn) << 7) | (u8::from(becn) << 6);
    }
    pub fn set_dest_qp(&mut self, v: u32) {
        write_u24(&mut self.buffer.as_mut()[field::DEST_QP], v);
    }
    /// Sets the AckReq bit; the seven reserved bits are written as zero.
    pub fn set_ack_req(&mut self, v: bool) {
        self.buffer.as_mut()[field::ACK_REQ] = u8::from(v) << 7;
    }
    pub fn set_psn(&mut self, v: u32) {
        write_u24(&mut self.buffer.as_mut()[field::PSN], v);
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// The parsed content of a BTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BthRepr {
    pub opcode: Opcode,
    pub solicited: bool,
    pub migreq: bool,
    /// Bytes of padding at the end of the payload (0..=3) that round it to 4 bytes.
    pub pad_count: u8,
    pub pkey: u16,
    pub fecn: bool,
    pub becn: bool,
    /// 24-bit destination queue pair.
    pub dest_qp: u32,
    pub ack_req: bool,
    /// 24-bit packet sequence number.
    pub psn: u32,
}

impl BthRepr {
    /// Parses and validates a BTH: the transport version must be 0 (IBA §9.2).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<BthRepr> {
        packet.check_len()?;
        if packet.tver() != 0 {
            return Err(WireError::bad(
                Header::Bth,
                "tver",
                packet.tver().into(),
                "0 (IBA transport version)",
            ));
        }
        Ok(BthRepr {
            opcode: packet.opcode(),
            solicited: packet.solicited(),
            migreq: packet.migreq(),
            pad_count: packet.pad_count(),
            pkey: packet.pkey(),
            fecn: packet.fecn(),
            becn: packet.becn(),
            dest_qp: packet.dest_qp(),
            ack_req: packet.ack_req(),
            psn: packet.psn(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header; 24-bit fields are truncated to 24 bits, reserved bits zeroed.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, packet: &mut Packet<&mut T>) {
        packet.set_opcode(self.opcode);
        packet.set_flags(self.solicited, self.migreq, self.pad_count, 0);
        packet.set_pkey(self.pkey);
        packet.set_fecn_becn(self.fecn, self.becn);
        packet.set_dest_qp(self.dest_qp & U24_MASK);
        packet.set_ack_req(self.ack_req);
        packet.set_psn(self.psn & U24_MASK);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    // Written out by hand from IBA §9.2: RC SEND Only, S=0 M=1 Pad=2 TVer=0,
    // P_Key 0xffff, F=1 B=0, dest QP 0x000011, AckReq=1, PSN 0x123456.
    static BYTES: [u8; 12] = [
        0x04, // opcode: RC SEND Only
        0x60, // S=0, M=1, Pad=2 (0b10), TVer=0
        0xff, 0xff, // P_Key
        0x80, // F=1, B=0, resv6=0
        0x00, 0x00, 0x11, // dest QP
        0x80, // A=1, resv7=0
        0x12, 0x34, 0x56, // PSN
    ];

    fn repr() -> BthRepr {
        BthRepr {
            opcode: Opcode::RC_SEND_ONLY,
            solicited: false,
            migreq: true,
            pad_count: 2,
            pkey: 0xffff,
            fecn: true,
            becn: false,
            dest_qp: 0x11,
            ack_req: true,
            psn: 0x123456,
        }
    }

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&BYTES[..]).unwrap();
        assert_eq!(p.opcode(), Opcode::RC_SEND_ONLY);
        assert!(!p.solicited());
        assert!(p.migreq());
        assert_eq!(p.pad_count(), 2);
        assert_eq!(p.tver(), 0);
        assert_eq!(p.pkey(), 0xffff);
        assert!(p.fecn() && !p.becn());
        assert_eq!(p.dest_qp(), 0x11);
        assert!(p.ack_req());
        assert_eq!(p.psn(), 0x123456);
        assert_eq!(BthRepr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn test_construct() {
        let mut buf = [0xaau8; 12];
        repr().emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, BYTES);
    }

    #[test]
    fn short_buffer_names_the_header() {
        let err = Packet::new_checked(&BYTES[..11]).unwrap_err();
        assert_eq!(err.header, Header::Bth);
        assert_eq!(
            err.to_string(),
            "RoCEv2 BTH `header`: truncated: need 12 bytes, have 11"
        );
    }

    #[test]
    fn nonzero_tver_is_rejected_by_name() {
        let mut bytes = BYTES;
        bytes[1] |= 0x01;
        let err = BthRepr::parse(&Packet::new_unchecked(&bytes[..])).unwrap_err();
        assert_eq!(err.field, "tver");
    }

    pub(crate) fn arb_bth() -> impl Strategy<Value = BthRepr> {
        (
            any::<u8>(),
            any::<(bool, bool, bool, bool, bool)>(),
            0u8..4,
            any::<u16>(),
            0u32..=U24_MASK,
            0u32..=U24_MASK,
        )
            .prop_map(|(op, (s, m, f, b, a), pad, pkey, qp, psn)| BthRepr {
                opcode: Opcode(op),
                solicited: s,
                migreq: m,
                pad_count: pad,
                pkey,
                fecn: f,
                becn: b,
                dest_qp: qp,
                ack_req: a,
                psn,
            })
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip(r in arb_bth()) {
            let mut buf = [0u8; HEADER_LEN];
            r.emit(&mut Packet::new_unchecked(&mut buf[..]));
            prop_assert_eq!(BthRepr::parse(&Packet::new_unchecked(&buf[..])).unwrap(), r);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = BthRepr::parse(&p);
            }
        }
    }
}
