//! Wire formats: what fablab puts on the wire, byte for byte.
//!
//! Every header is a [`Packet<T: AsRef<[u8]>>`](bth::Packet) view over a buffer plus a
//! `Repr` value, smoltcp style: `new_unchecked` wraps without checks, `new_checked`
//! runs `check_len` first, after which no accessor panics; `Repr::parse` validates
//! semantics and `Repr::emit` writes into a buffer of at least `Repr::buffer_len`
//! bytes. Ethernet, IPv4 and UDP come from `etherparse`; [`frame`] ties everything
//! into one RoCEv2 frame parser and emitter.
//!
//! This module never panics on untrusted bytes: every problem is a [`WireError`] that
//! names the header and the field. docs/wire.md draws every header byte by byte.

pub mod ack;
pub mod addr;
pub mod aeth;
pub mod bth;
pub mod frame;
pub mod fuzz;
pub mod icrc;
pub mod int;

use core::fmt;
use core::ops::Range;

pub use ack::AckExtRepr;
pub use aeth::{AethRepr, Syndrome};
pub use bth::{BthRepr, Opcode};
pub use frame::{Body, FrameRepr, L3Repr};
pub use int::{HopMetadata, IntMdRepr, IntShimRepr, IntStack};

/// A byte range inside a header, as in smoltcp's `wire::field`.
pub(crate) type Field = Range<usize>;

/// UDP destination port of RoCEv2 (IANA).
pub const ROCEV2_UDP_PORT: u16 = 4791;

/// UDP destination port a frame carries while it holds an INT-over-UDP stack.
///
/// INT v2.1 §5.7.2 lets an INT source replace the UDP destination port with a port
/// reserved for INT and keep the original in the shim (NPT = 1). IANA has assigned no
/// port to INT, so fablab uses this one inside its own fabrics; the INT sink restores
/// 4791 before the frame reaches RoCEv2 processing.
pub const INT_UDP_PORT: u16 = 4792;

/// The DSCP bit that marks "this frame carries INT" (INT v2.1 §5.7.2 allows a bit or a
/// value; a bit leaves the rest of DSCP to QoS).
pub const INT_DSCP_BIT: u8 = 0x20;

/// The header a [`WireError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Header {
    Ethernet,
    Ipv4,
    Udp,
    IntShim,
    IntMd,
    IntHop,
    Bth,
    Aeth,
    AckExt,
    Icrc,
    Cnp,
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Header::Ethernet => "Ethernet",
            Header::Ipv4 => "IPv4",
            Header::Udp => "UDP",
            Header::IntShim => "INT shim",
            Header::IntMd => "INT-MD header",
            Header::IntHop => "INT hop metadata",
            Header::Bth => "RoCEv2 BTH",
            Header::Aeth => "RoCEv2 AETH",
            Header::AckExt => "fablab ACK extension",
            Header::Icrc => "RoCEv2 ICRC",
            Header::Cnp => "RoCEv2 CNP",
        })
    }
}

/// What is wrong with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The buffer ends before the field does.
    Truncated { need: usize, have: usize },
    /// The field holds a value fablab does not accept; `expected` says what would be.
    BadValue { value: u64, expected: &'static str },
    /// A checksum or CRC does not match the bytes it covers.
    Mismatch { carried: u32, computed: u32 },
}

/// A frame or header that could not be parsed or emitted: which header, which field,
/// and what was wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct WireError {
    pub header: Header,
    pub field: &'static str,
    pub problem: Problem,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} `{}`: ", self.header, self.field)?;
        match self.problem {
            Problem::Truncated { need, have } => {
                write!(f, "truncated: need {need} bytes, have {have}")
            }
            Problem::BadValue { value, expected } => {
                write!(f, "bad value {value:#x}, expected {expected}")
            }
            Problem::Mismatch { carried, computed } => {
                write!(
                    f,
                    "mismatch: carried {carried:#010x}, computed {computed:#010x}"
                )
            }
        }
    }
}

impl WireError {
    pub(crate) const fn truncated(
        header: Header,
        field: &'static str,
        need: usize,
        have: usize,
    ) -> Self {
        WireError {
            header,
            field,
            problem: Problem::Truncated { need, have },
        }
    }

    pub(crate) const fn bad(
        header: Header,
        field: &'static str,
        value: u64,
        expected: &'static str,
    ) -> Self {
        WireError {
            header,
            field,
            problem: Problem::BadValue { value, expected },
        }
    }
}

pub type Result<T> = core::result::Result<T, WireError>;

/// Fails with a `Truncated` error unless `buf` holds at least `need` bytes.
pub(crate) fn need(header: Header, field: &'static str, buf: &[u8], need: usize) -> Result<()> {
    if buf.len() < need {
        Err(WireError::truncated(header, field, need, buf.len()))
    } else {
        Ok(())
    }
}

/// Reads a big-endian 24-bit value from the last three bytes of a 4-byte field.
pub(crate) fn read_u24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

/// Writes the low 24 bits of `v` big-endian into three bytes.
pub(crate) fn write_u24(b: &mut [u8], v: u32) {
    let bytes = v.to_be_bytes();
    b[..3].copy_from_slice(&bytes[1..]);
}

/// Mask for 24-bit sequence numbers (PSN, MSN, QPN).
pub const U24_MASK: u32 = 0x00ff_ffff;
