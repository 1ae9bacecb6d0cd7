//! RoCEv2 ACK Extended Transport Header (IBA Vol. 1 §9.3.5, syndrome encoding in
//! Table 45 "AETH Syndrome Field").
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |0| Typ |  Val    |           Message Sequence Number (MSN)       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! Syndrome: bit 7 reserved (0); bits 6..5 the type (00 ACK, 01 RNR NAK, 10 reserved,
//! 11 NAK); bits 4..0 the value (ACK: credit count, RNR NAK: timer, NAK: code).

use super::{need, read_u24, write_u24, Field, Header, Result, WireError, U24_MASK};

mod field {
    use super::Field;
    pub const SYNDROME: usize = 0;
    pub const MSN: Field = 1..4;
}

pub const HEADER_LEN: usize = 4;

/// Credit count value meaning "invalid / unlimited credits" (IBA §9.7.7.2.5): the
/// responder does not use end-to-end credits. fablab's flow control is its window.
pub const CREDITS_UNLIMITED: u8 = 0x1f;

/// NAK code for "PSN sequence error": the responder saw a gap (IBA Table 45).
pub const NAK_PSN_SEQUENCE_ERROR: u8 = 0;

/// The decoded AETH syndrome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Syndrome {
    /// Positive acknowledgement with a 5-bit credit count.
    Ack { credits: u8 },
    /// Receiver not ready; 5-bit timer code.
    RnrNak { timer: u8 },
    /// Negative acknowledgement with a 5-bit NAK code.
    Nak { code: u8 },
}

impl Syndrome {
    fn from_byte(b: u8) -> Result<Syndrome> {
        let value = b & 0x1f;
        match b >> 5 {
            0b000 => Ok(Syndrome::Ack { credits: value }),
            0b001 => Ok(Syndrome::RnrNak { timer: value }),
            0b011 => Ok(Syndrome::Nak { code: value }),
            _ => Err(WireError::bad(
                Header::Aeth,
                "syndrome",
                b.into(),
                "type ACK (000), RNR NAK (001) or NAK (011)",
            )),
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            Syndrome::Ack { credits } => credits & 0x1f,
            Syndrome::RnrNak { timer } => 0x20 | (timer & 0x1f),
            Syndrome::Nak { code } => 0x60 | (code & 0x1f),
        }
    }
}

/// A read/write view of an AETH.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }
    pub fn check_len(&self) -> Result<()> {
        need(Header::Aeth, "header", self.buffer.as_ref(), HEADER_LEN)
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    pub fn syndrome_byte(&self) -> u8 {
        self.buffer.as_ref()[field::SYNDROME]
    }
    pub fn msn(&self) -> u32 {
        read_u24(&self.buffer.as_ref()[field::MSN])
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_syndrome_byte(&mut self, v: u8) {
        self.buffer.as_mut()[field::SYNDROME] = v;
    }
    pub fn set_msn(&mut self, v: u32) {
        write_u24(&mut self.buffer.as_mut()[field::MSN], v);
    }
}

/// The parsed content of an AETH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AethRepr {
    pub syndrome: Syndrome,
    /// 24-bit count of messages the responder has completed.
    pub msn: u32,
}

impl AethRepr {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<AethRepr> {
        packet.check_len()?;
        Ok(AethRepr {
            syndrome: Syndrome::from_byte(packet.syndrome_byte())?,
            msn: packet.msn(),
        })
    }
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, packet: &mut Packet<&mut T>) {
        packet.set_syndrome_byte(self.syndrome.to_byte());
        packet.set_msn(self.msn & U24_MASK);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn test_deconstruct_ack_and_nak() {
        // ACK, credits 0x1f (unlimited), MSN 0x000102.
        let ack = [0x1f, 0x00, 0x01, 0x02];
        let r = AethRepr::parse(&Packet::new_checked(&ack[..]).unwrap()).unwrap();
        assert_eq!(
            r,
            AethRepr {
                syndrome: Syndrome::Ack { credits: 0x1f },
                msn: 0x102
            }
        );
        // NAK (type 11), code 0 = PSN sequence error, MSN 7.
        let nak = [0x60, 0x00, 0x00, 0x07];
        let r = AethRepr::parse(&Packet::new_checked(&nak[..]).unwrap()).unwrap();
        assert_eq!(
            r.syndrome,
            Syndrome::Nak {
                code: NAK_PSN_SEQUENCE_ERROR
            }
        );
        assert_eq!(r.msn, 7);
    }

    #[test]
    fn test_construct() {
        let mut buf = [0u8; 4];
        AethRepr {
            syndrome: Syndrome::RnrNak { timer: 0x0e },
            msn: 0xabcdef,
        }
        .emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [0x2e, 0xab, 0xcd, 0xef]);
    }

    #[test]
    fn reserved_syndrome_is_an_error_naming_the_field() {
        let bad = [0x40, 0, 0, 0]; // type 10: reserved
        let err = AethRepr::parse(&Packet::new_unchecked(&bad[..])).unwrap_err();
        assert_eq!((err.header, err.field), (Header::Aeth, "syndrome"));
    }

    pub(crate) fn arb_aeth() -> impl Strategy<Value = AethRepr> {
        let syndrome = prop_oneof![
            (0u8..32).prop_map(|credits| Syndrome::Ack { credits }),
            (0u8..32).prop_map(|timer| Syndrome::RnrNak { timer }),
            (0u8..32).prop_map(|code| Syndrome::Nak { code }),
        ];
        (syndrome, 0u32..=U24_MASK).prop_map(|(syndrome, msn)| AethRepr { syndrome, msn })
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip(r in arb_aeth()) {
            let mut buf = [0u8; HEADER_LEN];
            r.emit(&mut Packet::new_unchecked(&mut buf[..]));
            prop_assert_eq!(AethRepr::parse(&Packet::new_unchecked(&buf[..])).unwrap(), r);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..8)) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = AethRepr::parse(&p);
            }
        }
    }
}
