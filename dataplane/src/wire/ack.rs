//! fablab's ACK extension: what a sprayed, reordering transport needs beyond the AETH.
//!
//! It follows the AETH of an RC Acknowledge (opcode 0x11) and is covered by the ICRC.
//! RoCEv2 ACKs carry no payload, so a stock RoCE stack sees this as trailing data;
//! tshark shows it as "Data". Layout (docs/wire.md has the drawing):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Ver  |E|T|D|X|  SACK words   |          Reserved (0)         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Reserved (0) |             Acked PSN                         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Reserved (0) |             Cumulative PSN                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           SACK bitmap (SACK words × 32 bits)                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           echoed INT block (shim + INT-MD + stack), if T      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! - `E`: ECN-echo, the acked packet arrived with CE.
//! - `T`: an INT block follows (the receiver is the INT sink and echoes the stack
//!   the acked packet carried).
//! - `D`: the acked packet was a duplicate (a D-SACK, RFC 2883): the sender learns
//!   that a retransmission was spurious and widens its reordering window.
//! - `X`: (NAK only) the acked packet arrived trimmed (a switch cut it to its
//!   headers for lack of room): the sender may retransmit it at once.
//! - Acked PSN: the data packet this ACK answers (its RTT sample, INT and ECN).
//! - Cumulative PSN: the next PSN the receiver expects; all before it arrived.
//! - SACK bitmap: bit k (MSB first across the bitmap) set means PSN
//!   `cumulative + 1 + k` arrived. PSN `cumulative` itself is missing by definition.

use super::int::IntStack;
use super::{need, read_u24, write_u24, Header, Result, WireError, U24_MASK};

/// Version of the extension.
pub const VERSION: u8 = 1;
/// Fixed part in bytes.
pub const FIXED_LEN: usize = 12;
/// Longest SACK bitmap fablab carries, in 32-bit words (covers 512 PSNs).
pub const MAX_SACK_WORDS: usize = 16;
/// PSNs one full SACK bitmap covers.
pub const MAX_SACK_PSNS: usize = MAX_SACK_WORDS * 32;

const FLAG_ECN_ECHO: u8 = 0x08;
const FLAG_INT: u8 = 0x04;
const FLAG_DSACK: u8 = 0x02;
const FLAG_TRIMMED: u8 = 0x01;

/// A bounded selective-acknowledgement bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SackBitmap {
    bytes: [u8; MAX_SACK_WORDS * 4],
    words: u8,
}

impl Default for SackBitmap {
    fn default() -> Self {
        SackBitmap {
            bytes: [0; MAX_SACK_WORDS * 4],
            words: 0,
        }
    }
}

impl SackBitmap {
    /// Marks offset `k` (PSN `cumulative + 1 + k`) as received. Offsets beyond
    /// [`MAX_SACK_PSNS`] cannot be carried; returns false for them.
    pub fn set(&mut self, k: usize) -> bool {
        if k >= MAX_SACK_PSNS {
            return false;
        }
        self.bytes[k / 8] |= 0x80 >> (k % 8);
        self.words = self.words.max((k / 32 + 1) as u8);
        true
    }

    pub fn is_set(&self, k: usize) -> bool {
        k < usize::from(self.words) * 32 && self.bytes[k / 8] & (0x80 >> (k % 8)) != 0
    }

    /// Words on the wire: up to the last word with a bit set.
    pub fn words(&self) -> usize {
        usize::from(self.words)
    }

    /// Offsets that are set, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.words() * 32).filter(|&k| self.is_set(k))
    }

    fn wire(&self) -> &[u8] {
        &self.bytes[..self.words() * 4]
    }
}

/// The parsed content of fablab's ACK extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AckExtRepr {
    pub ecn_echo: bool,
    /// The acked packet had already arrived (D-SACK).
    pub duplicate: bool,
    /// The acked packet arrived trimmed (`X`).
    pub trimmed: bool,
    /// 24-bit PSN of the data packet this ACK answers.
    pub acked_psn: u32,
    /// 24-bit next PSN expected in order.
    pub cumulative_psn: u32,
    pub sack: SackBitmap,
    /// The INT stack the acked packet carried, echoed by the INT sink.
    pub int: Option<IntStack>,
}

impl AckExtRepr {
    pub fn buffer_len(&self) -> usize {
        FIXED_LEN + self.sack.words() * 4 + self.int.as_ref().map_or(0, IntStack::buffer_len)
    }

    /// Parses the extension, which must fill `buf` exactly.
    pub fn parse(buf: &[u8]) -> Result<AckExtRepr> {
        need(Header::AckExt, "header", buf, FIXED_LEN)?;
        let version = buf[0] >> 4;
        if version != VERSION {
            return Err(WireError::bad(
                Header::AckExt,
                "version",
                version.into(),
                "1",
            ));
        }
        let flags = buf[0] & 0x0f;
        if flags & !(FLAG_ECN_ECHO | FLAG_INT | FLAG_DSACK | FLAG_TRIMMED) != 0 {
            return Err(WireError::bad(
                Header::AckExt,
                "flags",
                flags.into(),
                "only E (0x8), T (0x4), D (0x2) and X (0x1)",
            ));
        }
        let words = usize::from(buf[1]);
        if words > MAX_SACK_WORDS {
            return Err(WireError::bad(
                Header::AckExt,
                "sack_words",
                words as u64,
                "at most 16",
            ));
        }
        let sack_end = FIXED_LEN + words * 4;
        need(Header::AckExt, "sack_bitmap", buf, sack_end)?;
        let mut sack = SackBitmap::default();
        sack.bytes[..words * 4].copy_from_slice(&buf[FIXED_LEN..sack_end]);
        sack.words = words as u8;
        let int = if flags & FLAG_INT != 0 {
            let (stack, used) = IntStack::parse(&buf[sack_end..])?;
            if sack_end + used != buf.len() {
                return Err(WireError::bad(
                    Header::AckExt,
                    "int",
                    (buf.len() - sack_end - used) as u64,
                    "no bytes after the echoed INT block",
                ));
            }
            Some(stack)
        } else {
            if sack_end != buf.len() {
                return Err(WireError::bad(
                    Header::AckExt,
                    "sack_words",
                    words as u64,
                    "a bitmap that ends where the extension ends",
                ));
            }
            None
        };
        Ok(AckExtRepr {
            ecn_echo: flags & FLAG_ECN_ECHO != 0,
            duplicate: flags & FLAG_DSACK != 0,
            trimmed: flags & FLAG_TRIMMED != 0,
            acked_psn: read_u24(&buf[5..8]),
            cumulative_psn: read_u24(&buf[9..12]),
            sack,
            int,
        })
    }

    /// Writes the extension into `buf`, which must hold `buffer_len()` bytes.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.buffer_len();
        need(Header::AckExt, "header", buf, len)?;
        let mut flags = 0;
        if self.ecn_echo {
            flags |= FLAG_ECN_ECHO;
        }
        if self.int.is_some() {
            flags |= FLAG_INT;
        }
        if self.duplicate {
            flags |= FLAG_DSACK;
        }
        if self.trimmed {
            flags |= FLAG_TRIMMED;
        }
        buf[0] = (VERSION << 4) | flags;
        buf[1] = self.sack.words() as u8;
        buf[2..5].fill(0);
        write_u24(&mut buf[5..8], self.acked_psn & U24_MASK);
        buf[8] = 0;
        write_u24(&mut buf[9..12], self.cumulative_psn & U24_MASK);
        let sack_end = FIXED_LEN + self.sack.words() * 4;
        buf[FIXED_LEN..sack_end].copy_from_slice(self.sack.wire());
        if let Some(int) = &self.int {
            int.emit(&mut buf[sack_end..])?;
        }
        Ok(len)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::int::tests::arb_stack;
    use proptest::prelude::*;

    #[test]
    fn test_deconstruct() {
        // E=1, T=0, one SACK word; acked PSN 0x000105, cumulative 0x000100;
        // PSNs 0x101 and 0x105 (offsets 0 and 4) arrived.
        let bytes = [
            0x18, 0x01, 0x00, 0x00, //
            0x00, 0x00, 0x01, 0x05, //
            0x00, 0x00, 0x01, 0x00, //
            0x88, 0x00, 0x00, 0x00,
        ];
        let r = AckExtRepr::parse(&bytes).unwrap();
        assert!(r.ecn_echo && !r.duplicate);
        assert_eq!((r.acked_psn, r.cumulative_psn), (0x105, 0x100));
        assert_eq!(r.sack.iter().collect::<Vec<_>>(), [0, 4]);
        assert!(r.int.is_none());
    }

    #[test]
    fn test_construct() {
        let mut sack = SackBitmap::default();
        assert!(sack.set(33));
        let r = AckExtRepr {
            ecn_echo: false,
            duplicate: true,
            trimmed: false,
            acked_psn: 0xabcdef,
            cumulative_psn: 0x000001,
            sack,
            int: None,
        };
        let mut buf = [0xffu8; 20];
        assert_eq!(r.emit(&mut buf).unwrap(), 20);
        assert_eq!(
            buf,
            [
                0x12, 0x02, 0x00, 0x00, //
                0x00, 0xab, 0xcd, 0xef, //
                0x00, 0x00, 0x00, 0x01, //
                0x00, 0x00, 0x00, 0x00, //
                0x40, 0x00, 0x00, 0x00,
            ]
        );
    }

    #[test]
    fn sack_beyond_window_is_refused() {
        let mut s = SackBitmap::default();
        assert!(!s.set(MAX_SACK_PSNS));
        assert_eq!(s.words(), 0);
    }

    #[test]
    fn trailing_bytes_are_named() {
        let bytes = [0x10, 0x00, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0xaa];
        let err = AckExtRepr::parse(&bytes).unwrap_err();
        assert_eq!((err.header, err.field), (Header::AckExt, "sack_words"));
    }

    pub(crate) fn arb_ack_ext() -> impl Strategy<Value = AckExtRepr> {
        (
            any::<(bool, bool, bool)>(),
            0u32..=U24_MASK,
            0u32..=U24_MASK,
            proptest::collection::vec(0usize..MAX_SACK_PSNS, 0..20),
            proptest::option::of(arb_stack()),
        )
            .prop_map(
                |((ecn_echo, duplicate, trimmed), acked_psn, cumulative_psn, bits, int)| {
                    let mut sack = SackBitmap::default();
                    for b in bits {
                        sack.set(b);
                    }
                    AckExtRepr {
                        ecn_echo,
                        duplicate,
                        trimmed,
                        acked_psn,
                        cumulative_psn,
                        sack,
                        int,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip(r in arb_ack_ext()) {
            let mut buf = vec![0u8; r.buffer_len()];
            r.emit(&mut buf).unwrap();
            prop_assert_eq!(AckExtRepr::parse(&buf).unwrap(), r);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
            let _ = AckExtRepr::parse(&bytes);
        }
    }
}
