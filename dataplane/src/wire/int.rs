//! P4 In-band Network Telemetry v2.1, INT-MD mode, carried over UDP
//! (The P4.org Applications Working Group, "In-band Network Telemetry (INT) Dataplane
//! Specification", Version 2.1, 2020-11-11: §5.7.2 "INT over TCP/UDP" for the shim,
//! §5.8 "INT Metadata Header Format" for the INT-MD header, §5.9 "INT Metadata Stack"
//! for the per-hop metadata).
//!
//! An INT block is the shim, the INT-MD header and the metadata stack, in that order:
//!
//! ```text
//! shim (4 bytes, §5.7.2)
//! +-------+---+---+---------------+-------------------------------+
//! | Type  |NPT|Res|    Length     | original UDP dst port (NPT=1) |
//! +-------+---+---+---------------+-------------------------------+
//! INT-MD header (12 bytes, §5.8)
//! | Ver |D|E|M|      Reserved (12)     | Hop ML  | RemainingHopCnt |
//! |      Instruction Bitmap       |     Domain Specific ID        |
//! |       DS Instruction          |          DS Flags             |
//! metadata stack (§5.9): Hop ML words per hop, the newest hop first
//! ```
//!
//! `Length` counts the whole block (shim + header + stack) in 4-byte words. Each hop's
//! metadata holds the baseline fields selected by the instruction bitmap, in bit
//! order, followed by domain-specific fields selected by the DS instruction when the
//! domain-specific ID is [`FABLAB_DS_ID`]. `Hop ML` counts both, in 4-byte words.
//!
//! The stack is bounded ([`MAX_INT_HOPS`]); a stack deeper than that is an error, not
//! an allocation.

use super::{need, Header, Result, WireError};

/// The most hops fablab keeps in one stack (a 5-tier fat-tree path needs 5).
pub const MAX_INT_HOPS: usize = 8;

/// INT version carried in the INT-MD header (v2.x).
pub const INT_VERSION: u8 = 2;

/// Domain-specific ID under which fablab's extra per-hop words travel.
pub const FABLAB_DS_ID: u16 = 0x0fab;

/// Baseline instruction bits (§5.8, "Instruction Bitmap"): bit 0 is the most
/// significant bit of the 16-bit field.
pub mod instr {
    /// Node ID, 4 bytes.
    pub const NODE_ID: u16 = 0x8000;
    /// Level 1 ingress interface ID (2 bytes) + egress interface ID (2 bytes).
    pub const L1_PORTS: u16 = 0x4000;
    /// Hop latency, 4 bytes (nanoseconds in fablab).
    pub const HOP_LATENCY: u16 = 0x2000;
    /// Queue ID (1 byte) + queue occupancy (3 bytes; bytes in fablab, saturating).
    pub const QUEUE: u16 = 0x1000;
    /// Ingress timestamp, 8 bytes (nanoseconds in fablab).
    pub const INGRESS_TS: u16 = 0x0800;
    /// Egress timestamp, 8 bytes (nanoseconds in fablab).
    pub const EGRESS_TS: u16 = 0x0400;
    /// Level 2 ingress interface ID (4 bytes) + egress interface ID (4 bytes).
    pub const L2_PORTS: u16 = 0x0200;
    /// Egress interface Tx utilization, 4 bytes (parts per million in fablab).
    pub const TX_UTIL: u16 = 0x0100;
    /// Buffer ID (1 byte) + buffer occupancy (3 bytes).
    pub const BUFFER: u16 = 0x0080;
    /// Bits 9..14 are reserved in v2.1: their metadata length is undefined.
    pub const RESERVED: u16 = 0x007e;
    /// Checksum complement, 4 bytes.
    pub const CHECKSUM_COMPLEMENT: u16 = 0x0001;

    /// What a fablab switch stamps at every hop (DESIGN.md: id, ports, queue
    /// occupancy, egress timestamp; tx bytes and link rate travel as fablab's DS
    /// words). Hop latency, ingress timestamp and utilization are parsed when others
    /// send them, but fablab's congestion controllers do not need them, so fablab
    /// does not spend 16 bytes per hop on them.
    pub const FABLAB_DEFAULT: u16 = NODE_ID | L1_PORTS | QUEUE | EGRESS_TS;
}

/// fablab's domain-specific instruction bits (valid when DS ID is [`FABLAB_DS_ID`]).
/// HPCC needs the egress tx-byte counter and the link rate at every hop.
pub mod ds_instr {
    /// Egress port tx-byte counter, 8 bytes.
    pub const TX_BYTES: u16 = 0x8000;
    /// Egress link rate in Mb/s, 4 bytes.
    pub const LINK_RATE: u16 = 0x4000;
    /// Bits that fablab does not define.
    pub const UNDEFINED: u16 = 0x3fff;
    pub const FABLAB_DEFAULT: u16 = TX_BYTES | LINK_RATE;
}

/// Largest value a 24-bit occupancy field can carry; larger values saturate.
pub const OCCUPANCY_MAX: u32 = 0x00ff_ffff;

/// The INT shim type (§5.7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntType {
    /// INT-MD (eMbed Data): hops push metadata into the packet.
    Md = 1,
    /// INT-Destination: the source embeds data for the sink only.
    Destination = 2,
    /// INT-MX (eMbed instructions): hops export metadata out of band.
    Mx = 3,
}

/// Shim length in bytes.
pub const SHIM_LEN: usize = 4;
/// INT-MD header length in bytes.
pub const MD_LEN: usize = 12;

/// The INT-over-UDP shim (§5.7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IntShimRepr {
    pub int_type: IntType,
    /// Next protocol type: 0 = original L4 payload follows (DSCP marks INT),
    /// 1 = `next` is the original UDP destination port, 2 = `next` holds the
    /// original IP protocol. fablab emits 1.
    pub npt: u8,
    /// Length of shim + INT-MD header + stack, in 4-byte words.
    pub length_words: u8,
    /// Original UDP destination port (NPT 1), IP protocol (NPT 2) or DSCP (NPT 0).
    pub next: u16,
}

impl IntShimRepr {
    pub fn parse(buf: &[u8]) -> Result<IntShimRepr> {
        need(Header::IntShim, "header", buf, SHIM_LEN)?;
        let int_type = match buf[0] >> 4 {
            1 => IntType::Md,
            2 => IntType::Destination,
            3 => IntType::Mx,
            t => {
                return Err(WireError::bad(
                    Header::IntShim,
                    "type",
                    t.into(),
                    "1 (INT-MD), 2 (INT-Destination) or 3 (INT-MX)",
                ))
            }
        };
        let npt = (buf[0] >> 2) & 0x3;
        if npt == 3 {
            return Err(WireError::bad(Header::IntShim, "npt", 3, "0, 1 or 2"));
        }
        Ok(IntShimRepr {
            int_type,
            npt,
            length_words: buf[1],
            next: u16::from_be_bytes([buf[2], buf[3]]),
        })
    }

    pub fn emit(&self, buf: &mut [u8]) {
        buf[0] = ((self.int_type as u8) << 4) | ((self.npt & 0x3) << 2);
        buf[1] = self.length_words;
        buf[2..4].copy_from_slice(&self.next.to_be_bytes());
    }
}

/// The INT-MD metadata header (§5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IntMdRepr {
    pub version: u8,
    /// D: the sink should discard the packet after extracting INT.
    pub discard: bool,
    /// E: a hop could not push because RemainingHopCnt was 0.
    pub hops_exceeded: bool,
    /// M: a hop could not push because the packet would exceed the MTU.
    pub mtu_exceeded: bool,
    /// Per-hop metadata length in 4-byte words (5 bits).
    pub hop_ml: u8,
    /// How many more hops may push metadata.
    pub remaining_hops: u8,
    pub instructions: u16,
    pub ds_id: u16,
    pub ds_instructions: u16,
    pub ds_flags: u16,
}

impl IntMdRepr {
    /// The header fablab's INT source writes: baseline + fablab words, room for
    /// `max_hops` hops.
    pub fn fablab(max_hops: u8) -> IntMdRepr {
        let mut md = IntMdRepr {
            version: INT_VERSION,
            discard: false,
            hops_exceeded: false,
            mtu_exceeded: false,
            hop_ml: 0,
            remaining_hops: max_hops,
            instructions: instr::FABLAB_DEFAULT,
            ds_id: FABLAB_DS_ID,
            ds_instructions: ds_instr::FABLAB_DEFAULT,
            ds_flags: 0,
        };
        md.hop_ml = md.defined_words().unwrap_or(0);
        md
    }

    /// Words per hop that the instruction bits define (baseline, plus fablab's
    /// domain-specific words when the DS ID is fablab's).
    pub fn defined_words(&self) -> Result<u8> {
        if self.instructions & instr::RESERVED != 0 {
            return Err(WireError::bad(
                Header::IntMd,
                "instructions",
                self.instructions.into(),
                "no reserved bits (9..14) set",
            ));
        }
        let i = self.instructions;
        let mut words = 0u8;
        for (bit, w) in [
            (instr::NODE_ID, 1),
            (instr::L1_PORTS, 1),
            (instr::HOP_LATENCY, 1),
            (instr::QUEUE, 1),
            (instr::INGRESS_TS, 2),
            (instr::EGRESS_TS, 2),
            (instr::L2_PORTS, 2),
            (instr::TX_UTIL, 1),
            (instr::BUFFER, 1),
            (instr::CHECKSUM_COMPLEMENT, 1),
        ] {
            if i & bit != 0 {
                words += w;
            }
        }
        if self.ds_id == FABLAB_DS_ID {
            if self.ds_instructions & ds_instr::UNDEFINED != 0 {
                return Err(WireError::bad(
                    Header::IntMd,
                    "ds_instruction",
                    self.ds_instructions.into(),
                    "only fablab's TX_BYTES (bit 0) and LINK_RATE (bit 1)",
                ));
            }
            if self.ds_instructions & ds_instr::TX_BYTES != 0 {
                words += 2;
            }
            if self.ds_instructions & ds_instr::LINK_RATE != 0 {
                words += 1;
            }
        }
        Ok(words)
    }

    pub fn parse(buf: &[u8]) -> Result<IntMdRepr> {
        need(Header::IntMd, "header", buf, MD_LEN)?;
        let be16 = |o: usize| u16::from_be_bytes([buf[o], buf[o + 1]]);
        let md = IntMdRepr {
            version: buf[0] >> 4,
            discard: buf[0] & 0x08 != 0,
            hops_exceeded: buf[0] & 0x04 != 0,
            mtu_exceeded: buf[0] & 0x02 != 0,
            hop_ml: buf[2] & 0x1f,
            remaining_hops: buf[3],
            instructions: be16(4),
            ds_id: be16(6),
            ds_instructions: be16(8),
            ds_flags: be16(10),
        };
        if md.version != INT_VERSION {
            return Err(WireError::bad(
                Header::IntMd,
                "version",
                md.version.into(),
                "2 (INT v2.x)",
            ));
        }
        let defined = md.defined_words()?;
        // Foreign domain-specific words may follow the baseline ones: Hop ML says how
        // many. With fablab's DS ID every word is accounted for.
        let consistent = if md.ds_id == FABLAB_DS_ID {
            md.hop_ml == defined
        } else {
            md.hop_ml >= defined
        };
        if !consistent {
            return Err(WireError::bad(
                Header::IntMd,
                "hop_ml",
                md.hop_ml.into(),
                "the per-hop word count the instruction bitmaps define",
            ));
        }
        Ok(md)
    }

    pub fn emit(&self, buf: &mut [u8]) {
        buf[0] = (self.version << 4)
            | (u8::from(self.discard) << 3)
            | (u8::from(self.hops_exceeded) << 2)
            | (u8::from(self.mtu_exceeded) << 1);
        buf[1] = 0;
        buf[2] = self.hop_ml & 0x1f;
        buf[3] = self.remaining_hops;
        buf[4..6].copy_from_slice(&self.instructions.to_be_bytes());
        buf[6..8].copy_from_slice(&self.ds_id.to_be_bytes());
        buf[8..10].copy_from_slice(&self.ds_instructions.to_be_bytes());
        buf[10..12].copy_from_slice(&self.ds_flags.to_be_bytes());
    }

    /// Bytes of metadata one hop pushes.
    pub fn hop_len(&self) -> usize {
        usize::from(self.hop_ml) * 4
    }
}

/// One hop's metadata. Fields the instruction bitmaps do not select are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct HopMetadata {
    pub node_id: u32,
    pub l1_ingress_port: u16,
    pub l1_egress_port: u16,
    /// Time from ingress to egress, nanoseconds.
    pub hop_latency_ns: u32,
    pub queue_id: u8,
    /// Egress queue occupancy in bytes, saturating at [`OCCUPANCY_MAX`].
    pub queue_occupancy: u32,
    pub ingress_ts_ns: u64,
    pub egress_ts_ns: u64,
    pub l2_ingress_port: u32,
    pub l2_egress_port: u32,
    /// Egress link utilization in parts per million.
    pub tx_utilization_ppm: u32,
    pub buffer_id: u8,
    pub buffer_occupancy: u32,
    pub checksum_complement: u32,
    /// fablab DS: bytes transmitted on the egress port so far (wrapping counter).
    pub tx_bytes: u64,
    /// fablab DS: egress link rate in Mb/s.
    pub link_rate_mbps: u32,
}

impl HopMetadata {
    /// This hop with the fields `md` does not select set to zero: what survives a
    /// trip through the wire.
    pub fn masked(&self, md: &IntMdRepr) -> HopMetadata {
        let i = md.instructions;
        let on = |bit: u16| i & bit != 0;
        let fablab = md.ds_id == FABLAB_DS_ID;
        let ds = |bit: u16| fablab && md.ds_instructions & bit != 0;
        let mut h = HopMetadata::default();
        if on(instr::NODE_ID) {
            h.node_id = self.node_id;
        }
        if on(instr::L1_PORTS) {
            h.l1_ingress_port = self.l1_ingress_port;
            h.l1_egress_port = self.l1_egress_port;
        }
        if on(instr::HOP_LATENCY) {
            h.hop_latency_ns = self.hop_latency_ns;
        }
        if on(instr::QUEUE) {
            h.queue_id = self.queue_id;
            h.queue_occupancy = self.queue_occupancy.min(OCCUPANCY_MAX);
        }
        if on(instr::INGRESS_TS) {
            h.ingress_ts_ns = self.ingress_ts_ns;
        }
        if on(instr::EGRESS_TS) {
            h.egress_ts_ns = self.egress_ts_ns;
        }
        if on(instr::L2_PORTS) {
            h.l2_ingress_port = self.l2_ingress_port;
            h.l2_egress_port = self.l2_egress_port;
        }
        if on(instr::TX_UTIL) {
            h.tx_utilization_ppm = self.tx_utilization_ppm;
        }
        if on(instr::BUFFER) {
            h.buffer_id = self.buffer_id;
            h.buffer_occupancy = self.buffer_occupancy.min(OCCUPANCY_MAX);
        }
        if on(instr::CHECKSUM_COMPLEMENT) {
            h.checksum_complement = self.checksum_complement;
        }
        if ds(ds_instr::TX_BYTES) {
            h.tx_bytes = self.tx_bytes;
        }
        if ds(ds_instr::LINK_RATE) {
            h.link_rate_mbps = self.link_rate_mbps;
        }
        h
    }

    /// Reads one hop laid out per `md`. `buf` must hold `md.hop_len()` bytes.
    fn parse(md: &IntMdRepr, buf: &[u8]) -> HopMetadata {
        let mut r = Reader { buf, at: 0 };
        let i = md.instructions;
        let on = |bit: u16| i & bit != 0;
        let mut h = HopMetadata::default();
        if on(instr::NODE_ID) {
            h.node_id = r.u32();
        }
        if on(instr::L1_PORTS) {
            h.l1_ingress_port = r.u16();
            h.l1_egress_port = r.u16();
        }
        if on(instr::HOP_LATENCY) {
            h.hop_latency_ns = r.u32();
        }
        if on(instr::QUEUE) {
            (h.queue_id, h.queue_occupancy) = r.id_and_u24();
        }
        if on(instr::INGRESS_TS) {
            h.ingress_ts_ns = r.u64();
        }
        if on(instr::EGRESS_TS) {
            h.egress_ts_ns = r.u64();
        }
        if on(instr::L2_PORTS) {
            h.l2_ingress_port = r.u32();
            h.l2_egress_port = r.u32();
        }
        if on(instr::TX_UTIL) {
            h.tx_utilization_ppm = r.u32();
        }
        if on(instr::BUFFER) {
            (h.buffer_id, h.buffer_occupancy) = r.id_and_u24();
        }
        if on(instr::CHECKSUM_COMPLEMENT) {
            h.checksum_complement = r.u32();
        }
        if md.ds_id == FABLAB_DS_ID {
            if md.ds_instructions & ds_instr::TX_BYTES != 0 {
                h.tx_bytes = r.u64();
            }
            if md.ds_instructions & ds_instr::LINK_RATE != 0 {
                h.link_rate_mbps = r.u32();
            }
        }
        h
    }

    /// Writes one hop laid out per `md` into `md.hop_len()` bytes; words a foreign
    /// domain defines are written as zero.
    pub fn emit(&self, md: &IntMdRepr, buf: &mut [u8]) {
        let buf = &mut buf[..md.hop_len()];
        buf.fill(0);
        let mut w = Writer { buf, at: 0 };
        let h = self.masked(md);
        let i = md.instructions;
        let on = |bit: u16| i & bit != 0;
        if on(instr::NODE_ID) {
            w.put(&h.node_id.to_be_bytes());
        }
        if on(instr::L1_PORTS) {
            w.put(&h.l1_ingress_port.to_be_bytes());
            w.put(&h.l1_egress_port.to_be_bytes());
        }
        if on(instr::HOP_LATENCY) {
            w.put(&h.hop_latency_ns.to_be_bytes());
        }
        if on(instr::QUEUE) {
            w.id_and_u24(h.queue_id, h.queue_occupancy);
        }
        if on(instr::INGRESS_TS) {
            w.put(&h.ingress_ts_ns.to_be_bytes());
        }
        if on(instr::EGRESS_TS) {
            w.put(&h.egress_ts_ns.to_be_bytes());
        }
        if on(instr::L2_PORTS) {
            w.put(&h.l2_ingress_port.to_be_bytes());
            w.put(&h.l2_egress_port.to_be_bytes());
        }
        if on(instr::TX_UTIL) {
            w.put(&h.tx_utilization_ppm.to_be_bytes());
        }
        if on(instr::BUFFER) {
            w.id_and_u24(h.buffer_id, h.buffer_occupancy);
        }
        if on(instr::CHECKSUM_COMPLEMENT) {
            w.put(&h.checksum_complement.to_be_bytes());
        }
        if md.ds_id == FABLAB_DS_ID {
            if md.ds_instructions & ds_instr::TX_BYTES != 0 {
                w.put(&h.tx_bytes.to_be_bytes());
            }
            if md.ds_instructions & ds_instr::LINK_RATE != 0 {
                w.put(&h.link_rate_mbps.to_be_bytes());
            }
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.at..self.at + N]);
        self.at += N;
        out
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
    fn id_and_u24(&mut self) -> (u8, u32) {
        let v = self.u32();
        ((v >> 24) as u8, v & OCCUPANCY_MAX)
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
    fn id_and_u24(&mut self, id: u8, v: u32) {
        self.put(&((u32::from(id) << 24) | v.min(OCCUPANCY_MAX)).to_be_bytes());
    }
}

/// Returned by [`IntStack::push`] when a hop cannot be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// RemainingHopCnt was 0 (the E bit is now set).
    HopsExceeded,
    /// fablab's bounded stack ([`MAX_INT_HOPS`]) is full.
    Full,
}

/// A whole INT-over-UDP block: shim fields, INT-MD header and a bounded stack of
/// hops, the newest first (as on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IntStack {
    pub int_type: IntType,
    pub npt: u8,
    /// The shim's last 16 bits: for NPT 1 the original UDP destination port.
    pub next: u16,
    pub md: IntMdRepr,
    hops: [HopMetadata; MAX_INT_HOPS],
    len: u8,
}

impl IntStack {
    /// An empty INT-MD stack as an INT source creates it, keeping `original_port`.
    pub fn new(md: IntMdRepr, original_port: u16) -> IntStack {
        IntStack {
            int_type: IntType::Md,
            npt: 1,
            next: original_port,
            md,
            hops: [HopMetadata::default(); MAX_INT_HOPS],
            len: 0,
        }
    }

    /// The hops, the most recent first.
    pub fn hops(&self) -> &[HopMetadata] {
        &self.hops[..usize::from(self.len)]
    }

    /// Pushes this hop's metadata on top, as an INT transit hop does (§5.9): it
    /// decrements RemainingHopCnt, or sets E and refuses when it is already 0.
    pub fn push(&mut self, hop: HopMetadata) -> core::result::Result<(), PushError> {
        if self.md.remaining_hops == 0 {
            self.md.hops_exceeded = true;
            return Err(PushError::HopsExceeded);
        }
        if self.md.hop_ml == 0 {
            // No instruction selects anything: the hop counts itself and adds no
            // bytes, so the stack stays empty on the wire and here.
            self.md.remaining_hops -= 1;
            return Ok(());
        }
        let len = usize::from(self.len);
        if len == MAX_INT_HOPS {
            return Err(PushError::Full);
        }
        self.hops.copy_within(0..len, 1);
        self.hops[0] = hop.masked(&self.md);
        self.len += 1;
        self.md.remaining_hops -= 1;
        Ok(())
    }

    /// Bytes the block takes on the wire.
    pub fn buffer_len(&self) -> usize {
        SHIM_LEN + MD_LEN + usize::from(self.len) * self.md.hop_len()
    }

    /// Parses a block from the front of `buf`; returns it and the bytes it used.
    pub fn parse(buf: &[u8]) -> Result<(IntStack, usize)> {
        let shim = IntShimRepr::parse(buf)?;
        if shim.int_type != IntType::Md {
            return Err(WireError::bad(
                Header::IntShim,
                "type",
                (shim.int_type as u8).into(),
                "1 (INT-MD): fablab carries metadata in the packet",
            ));
        }
        let total = usize::from(shim.length_words) * 4;
        if total < SHIM_LEN + MD_LEN {
            return Err(WireError::bad(
                Header::IntShim,
                "length",
                shim.length_words.into(),
                "at least 4 words (shim + INT-MD header)",
            ));
        }
        need(Header::IntShim, "length", buf, total)?;
        let md = IntMdRepr::parse(&buf[SHIM_LEN..])?;
        let stack = &buf[SHIM_LEN + MD_LEN..total];
        let hop_len = md.hop_len();
        let count = match stack.len().checked_div(hop_len) {
            Some(n) if stack.len().is_multiple_of(hop_len) => n,
            None if stack.is_empty() => 0,
            _ => {
                return Err(WireError::bad(
                    Header::IntHop,
                    "stack",
                    stack.len() as u64,
                    "a whole number of Hop ML-word hops",
                ))
            }
        };
        if count > MAX_INT_HOPS {
            return Err(WireError::bad(
                Header::IntHop,
                "stack",
                count as u64,
                "at most 8 hops (fablab's bounded stack)",
            ));
        }
        let mut out = IntStack {
            int_type: shim.int_type,
            npt: shim.npt,
            next: shim.next,
            md,
            hops: [HopMetadata::default(); MAX_INT_HOPS],
            len: count as u8,
        };
        for (slot, chunk) in out.hops.iter_mut().zip(stack.chunks_exact(hop_len.max(1))) {
            *slot = HopMetadata::parse(&md, chunk);
        }
        Ok((out, total))
    }

    /// Writes the block into the front of `buf`, which must hold
    /// [`buffer_len`](Self::buffer_len) bytes.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let total = self.buffer_len();
        need(Header::IntShim, "length", buf, total)?;
        IntShimRepr {
            int_type: self.int_type,
            npt: self.npt,
            length_words: (total / 4) as u8,
            next: self.next,
        }
        .emit(buf);
        self.md.emit(&mut buf[SHIM_LEN..]);
        let hop_len = self.md.hop_len();
        if hop_len > 0 {
            let stack = &mut buf[SHIM_LEN + MD_LEN..total];
            for (hop, chunk) in self.hops().iter().zip(stack.chunks_exact_mut(hop_len)) {
                hop.emit(&self.md, chunk);
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hop(n: u32) -> HopMetadata {
        HopMetadata {
            node_id: n,
            l1_ingress_port: 1,
            l1_egress_port: 2,
            hop_latency_ns: 1500,
            queue_id: 3,
            queue_occupancy: 0x00_1234,
            ingress_ts_ns: 0x0102_0304_0506_0708,
            egress_ts_ns: 0x0102_0304_0506_0f00,
            tx_utilization_ppm: 950_000,
            tx_bytes: 0x0000_00aa_bbcc_ddee,
            link_rate_mbps: 100_000,
            ..HopMetadata::default()
        }
    }

    // One INT-MD block with one hop, written out by hand from INT v2.1 §5.7.2, §5.8,
    // §5.9 and fablab's DS words (docs/wire.md).
    #[rustfmt::skip]
    static ONE_HOP: [u8; 48] = [
        // shim: type 1 (MD), NPT 1, length 12 words, original dst port 4791
        0x14, 0x0c, 0x12, 0xb7,
        // INT-MD: ver 2, D=E=M=0 | reserved | hop ML 8 | remaining 7
        0x20, 0x00, 0x08, 0x07,
        // instruction bitmap 0xd400 (bits 0, 1, 3, 5) | DS ID 0x0fab
        0xd4, 0x00, 0x0f, 0xab,
        // DS instruction 0xc000 (tx bytes, link rate) | DS flags 0
        0xc0, 0x00, 0x00, 0x00,
        // hop: node id 9
        0x00, 0x00, 0x00, 0x09,
        // L1 ingress 1, egress 2
        0x00, 0x01, 0x00, 0x02,
        // queue id 3, occupancy 0x001234
        0x03, 0x00, 0x12, 0x34,
        // egress timestamp
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0f, 0x00,
        // DS: tx bytes
        0x00, 0x00, 0x00, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        // DS: link rate 100000 Mb/s
        0x00, 0x01, 0x86, 0xa0,
    ];

    #[test]
    fn fablab_default_is_eight_words_per_hop() {
        assert_eq!(IntMdRepr::fablab(8).hop_ml, 8);
    }

    #[test]
    fn test_construct() {
        let mut s = IntStack::new(IntMdRepr::fablab(8), 4791);
        s.push(hop(9)).unwrap();
        assert_eq!(s.buffer_len(), 48);
        let mut buf = [0xeeu8; 48];
        assert_eq!(s.emit(&mut buf).unwrap(), 48);
        assert_eq!(buf, ONE_HOP);
    }

    #[test]
    fn test_deconstruct() {
        let (s, used) = IntStack::parse(&ONE_HOP).unwrap();
        assert_eq!(used, 48);
        assert_eq!(s.next, 4791);
        assert_eq!(s.npt, 1);
        assert_eq!(s.md.remaining_hops, 7);
        // Hop latency, ingress timestamp and utilization are not in fablab's bitmap.
        let h = s.hops()[0];
        assert_eq!(h, hop(9).masked(&s.md));
        assert_eq!(
            (h.node_id, h.queue_occupancy, h.egress_ts_ns),
            (9, 0x1234, 0x0102_0304_0506_0f00)
        );
        assert_eq!(
            (h.tx_bytes, h.link_rate_mbps, h.hop_latency_ns),
            (0xaa_bbcc_ddee, 100_000, 0)
        );
    }

    #[test]
    fn push_is_newest_first_and_counts_down() {
        let mut s = IntStack::new(IntMdRepr::fablab(2), 4791);
        s.push(hop(1)).unwrap();
        s.push(hop(2)).unwrap();
        assert_eq!(s.push(hop(3)), Err(PushError::HopsExceeded));
        assert!(s.md.hops_exceeded);
        assert_eq!(
            s.hops().iter().map(|h| h.node_id).collect::<Vec<_>>(),
            [2, 1]
        );
    }

    #[test]
    fn bounded_stack_says_full() {
        let mut s = IntStack::new(IntMdRepr::fablab(255), 4791);
        for n in 0..MAX_INT_HOPS as u32 {
            s.push(hop(n)).unwrap();
        }
        assert_eq!(s.push(hop(99)), Err(PushError::Full));
    }

    #[test]
    fn inconsistent_hop_ml_is_named() {
        let mut bytes = ONE_HOP;
        bytes[6] = 0x07; // hop ML 7 while the bitmaps define 8
        let err = IntStack::parse(&bytes).unwrap_err();
        assert_eq!((err.header, err.field), (Header::IntMd, "hop_ml"));
    }

    #[test]
    fn length_beyond_buffer_is_truncation() {
        let err = IntStack::parse(&ONE_HOP[..44]).unwrap_err();
        assert_eq!(err.header, Header::IntShim);
        assert_eq!(err.field, "length");
    }

    #[test]
    fn foreign_domain_words_are_skipped() {
        // Baseline node id only, a foreign DS ID and Hop ML 2: one word is opaque.
        let bytes = [
            0x14, 0x06, 0x12, 0xb7, // shim, 6 words
            0x20, 0x00, 0x02, 0x05, // ver 2, hop ML 2, remaining 5
            0x80, 0x00, 0x12, 0x34, // node id only, DS ID 0x1234
            0x00, 0x00, 0x00, 0x00, // DS instruction/flags
            0x00, 0x00, 0x00, 0x2a, // node id 42
            0xde, 0xad, 0xbe, 0xef, // foreign DS word
        ];
        let (s, _) = IntStack::parse(&bytes).unwrap();
        assert_eq!(s.hops()[0].node_id, 42);
        assert_eq!(s.hops()[0].tx_bytes, 0);
    }

    pub(crate) fn arb_hop() -> impl Strategy<Value = HopMetadata> {
        (
            (
                any::<u32>(),
                any::<u16>(),
                any::<u16>(),
                any::<u32>(),
                any::<u8>(),
            ),
            (0..=OCCUPANCY_MAX, any::<u64>(), any::<u64>(), any::<u32>()),
            (any::<u32>(), any::<u32>(), any::<u8>(), 0..=OCCUPANCY_MAX),
            (any::<u32>(), any::<u64>(), any::<u32>()),
        )
            .prop_map(|(a, b, c, d)| HopMetadata {
                node_id: a.0,
                l1_ingress_port: a.1,
                l1_egress_port: a.2,
                hop_latency_ns: a.3,
                queue_id: a.4,
                queue_occupancy: b.0,
                ingress_ts_ns: b.1,
                egress_ts_ns: b.2,
                l2_ingress_port: b.3,
                l2_egress_port: c.0,
                tx_utilization_ppm: c.1,
                buffer_id: c.2,
                buffer_occupancy: c.3,
                checksum_complement: d.0,
                tx_bytes: d.1,
                link_rate_mbps: d.2,
            })
    }

    /// Any valid INT-MD header: any defined instruction bits, fablab's DS or a
    /// foreign one with extra opaque words.
    pub(crate) fn arb_md() -> impl Strategy<Value = IntMdRepr> {
        (
            any::<u16>(),
            any::<bool>(),
            0u16..4,
            0u8..3,
            any::<u8>(),
            any::<(bool, bool, bool)>(),
            any::<u16>(),
        )
            .prop_map(|(i, fablab, ds, extra, remaining, (d, e, m), flags)| {
                let mut md = IntMdRepr {
                    version: INT_VERSION,
                    discard: d,
                    hops_exceeded: e,
                    mtu_exceeded: m,
                    hop_ml: 0,
                    remaining_hops: remaining,
                    instructions: i & !instr::RESERVED,
                    ds_id: if fablab { FABLAB_DS_ID } else { 0x1234 },
                    ds_instructions: ds << 14,
                    ds_flags: flags,
                };
                let defined = md.defined_words().unwrap();
                md.hop_ml = if fablab { defined } else { defined + extra };
                md
            })
    }

    pub(crate) fn arb_stack() -> impl Strategy<Value = IntStack> {
        (
            arb_md(),
            any::<u16>(),
            proptest::collection::vec(arb_hop(), 0..=MAX_INT_HOPS),
        )
            .prop_map(|(mut md, next, hops)| {
                // Leave the counter so that every generated hop fits.
                md.remaining_hops = md.remaining_hops.max(MAX_INT_HOPS as u8);
                let mut s = IntStack::new(md, next);
                for h in hops {
                    s.push(h).unwrap();
                }
                s
            })
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip(s in arb_stack()) {
            let mut buf = vec![0u8; s.buffer_len()];
            prop_assert_eq!(s.emit(&mut buf).unwrap(), buf.len());
            let (back, used) = IntStack::parse(&buf).unwrap();
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(back, s);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = IntStack::parse(&bytes);
        }

        #[test]
        fn mutated_valid_block_never_panics(
            s in arb_stack(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut buf = vec![0u8; s.buffer_len()];
            s.emit(&mut buf).unwrap();
            for (at, v) in flips {
                let i = at.index(buf.len());
                buf[i] ^= v;
            }
            if let Ok((back, used)) = IntStack::parse(&buf) {
                prop_assert!(used <= buf.len());
                prop_assert!(back.hops().len() <= MAX_INT_HOPS);
            }
        }
    }
}
