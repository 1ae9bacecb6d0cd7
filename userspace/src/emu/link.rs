//! Frame storage and the byte-level handling the emu switch does itself: telling
//! fablab frames from other IPv4 traffic and from garbage, and forwarding plain
//! IPv4 (MAC rewrite, TTL, ECN, header checksum).
//!
//! Nothing here trusts the bytes: every read is bounds-checked and every problem is
//! a drop reason, never a panic.

use etherparse::Ipv4HeaderSlice;
use fablab_dataplane::wire::frame::{ECN_CE, ETH_LEN};
use fablab_dataplane::wire::{INT_UDP_PORT, ROCEV2_UDP_PORT};

/// Bytes one stored frame may have: a 9000-byte jumbo frame and its Ethernet header,
/// with room to spare.
pub const BUF_LEN: usize = 9216;

/// A fixed pool of frame buffers indexed by `u32`, allocated once: the datapath
/// never allocates per frame.
#[derive(Debug)]
pub struct FramePool {
    bytes: Vec<u8>,
    lens: Vec<u32>,
    free: Vec<u32>,
}

impl FramePool {
    pub fn new(count: usize) -> FramePool {
        FramePool {
            bytes: vec![0; count * BUF_LEN],
            lens: vec![0; count],
            free: (0..count as u32).rev().collect(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// A free buffer, or `None` when every buffer holds a frame.
    pub fn alloc(&mut self) -> Option<u32> {
        self.free.pop()
    }

    pub fn free(&mut self, b: u32) {
        debug_assert!(!self.free.contains(&b), "buffer {b} freed twice");
        self.lens[b as usize] = 0;
        self.free.push(b);
    }

    fn range(&self, b: u32) -> std::ops::Range<usize> {
        let at = b as usize * BUF_LEN;
        at..at + BUF_LEN
    }

    /// Stores `frame` (at most [`BUF_LEN`] bytes are kept; callers drop longer
    /// frames before).
    pub fn fill(&mut self, b: u32, frame: &[u8]) {
        let n = frame.len().min(BUF_LEN);
        let r = self.range(b);
        self.bytes[r.start..r.start + n].copy_from_slice(&frame[..n]);
        self.lens[b as usize] = n as u32;
    }

    pub fn len(&self, b: u32) -> usize {
        self.lens[b as usize] as usize
    }

    pub fn set_len(&mut self, b: u32, n: usize) {
        self.lens[b as usize] = n.min(BUF_LEN) as u32;
    }

    pub fn frame(&self, b: u32) -> &[u8] {
        let r = self.range(b);
        &self.bytes[r.start..r.start + self.len(b)]
    }

    pub fn frame_mut(&mut self, b: u32) -> &mut [u8] {
        let r = self.range(b);
        let n = self.len(b);
        &mut self.bytes[r.start..r.start + n]
    }

    /// Frame `src` to read and the whole buffer `dst` to write into (then
    /// [`set_len`](Self::set_len)): a frame rewritten into another buffer without a
    /// copy in between. `src` and `dst` must differ.
    pub fn pair(&mut self, src: u32, dst: u32) -> (&[u8], &mut [u8]) {
        assert_ne!(src, dst, "a frame cannot be rewritten into its own buffer");
        let (rs, rd) = (self.range(src), self.range(dst));
        let n = self.len(src);
        if rs.start < rd.start {
            let (a, b) = self.bytes.split_at_mut(rd.start);
            (&a[rs.start..rs.start + n], &mut b[..BUF_LEN])
        } else {
            let (a, b) = self.bytes.split_at_mut(rs.start);
            (&b[..n], &mut a[rd.start..rd.end])
        }
    }

    /// The whole buffer, to write a frame into (then [`set_len`](Self::set_len)).
    pub fn buf_mut(&mut self, b: u32) -> &mut [u8] {
        let r = self.range(b);
        &mut self.bytes[r]
    }
}

/// The addresses and ECN of an IPv4 packet that is not fablab's, and the entropy a
/// hashing switch uses for it (protocol and ports, folded to 16 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plain {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ecn: u8,
    pub entropy: u16,
}

/// What a switch does with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    /// UDP to the RoCEv2 or INT port: parse it as a fablab frame.
    Fablab,
    /// Some other IPv4 packet: forward it as plain IP.
    Plain(Plain),
    /// Not forwardable, and why.
    Drop(&'static str),
}

const IP_PROTO_TCP: u8 = 6;
const IP_PROTO_UDP: u8 = 17;

/// Sorts a received frame.
pub fn classify(frame: &[u8]) -> Classified {
    if frame.len() < ETH_LEN {
        return Classified::Drop("Ethernet header truncated");
    }
    if frame[12..14] != [0x08, 0x00] {
        return Classified::Drop("not IPv4 (EtherType)");
    }
    let ip = &frame[ETH_LEN..];
    let Ok(h) = Ipv4HeaderSlice::from_slice(ip) else {
        return Classified::Drop("IPv4 header malformed");
    };
    if h.to_header().calc_header_checksum() != h.header_checksum() {
        return Classified::Drop("IPv4 header checksum mismatch");
    }
    let total = usize::from(h.total_len());
    let hlen = h.slice().len();
    if total < hlen || total > ip.len() {
        return Classified::Drop("IPv4 total length beyond the frame");
    }
    let l4 = &ip[hlen..total];
    let first_fragment = h.fragments_offset().value() == 0;
    let proto = h.protocol().0;
    let ports = (first_fragment && (proto == IP_PROTO_TCP || proto == IP_PROTO_UDP))
        .then(|| l4.get(0..4))
        .flatten()
        .map(|p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            )
        });
    if proto == IP_PROTO_UDP {
        if let Some((_, dport)) = ports {
            if dport == ROCEV2_UDP_PORT || dport == INT_UDP_PORT {
                return Classified::Fablab;
            }
        }
    }
    let (sport, dport) = ports.unwrap_or((0, 0));
    Classified::Plain(Plain {
        src: h.source(),
        dst: h.destination(),
        ecn: h.ecn().value(),
        entropy: sport ^ dport.rotate_left(5) ^ u16::from(proto).rotate_left(11),
    })
}

/// Rewrites a plain IPv4 frame for its next hop: MACs, TTL − 1, CE when the switch
/// marked it (only on an ECN-capable packet), and the header checksum. Returns false
/// when the TTL has run out or the frame is not a whole IPv4 packet (it was
/// classified, so that does not happen, but nothing here assumes it).
pub fn forward_plain(frame: &mut [u8], src_mac: [u8; 6], dst_mac: [u8; 6], ce: bool) -> bool {
    let Some(ihl) = frame.get(ETH_LEN).map(|b| usize::from(b & 0x0f) * 4) else {
        return false;
    };
    if ihl < 20 || frame.len() < ETH_LEN + ihl {
        return false;
    }
    frame[0..6].copy_from_slice(&dst_mac);
    frame[6..12].copy_from_slice(&src_mac);
    let ip = &mut frame[ETH_LEN..ETH_LEN + ihl];
    if ip[8] <= 1 {
        return false;
    }
    ip[8] -= 1;
    if ce && ip[1] & 0x03 != 0 {
        ip[1] |= ECN_CE;
    }
    ip[10] = 0;
    ip[11] = 0;
    let mut sum = 0u32;
    for w in ip.chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    fn tcp_frame(ecn: u8) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64)
            .tcp(40000, 5201, 1, 65535);
        let mut out = Vec::new();
        b.write(&mut out, b"hello").unwrap();
        out[ETH_LEN + 1] = ecn;
        // Refresh the checksum after poking ECN.
        let h = Ipv4HeaderSlice::from_slice(&out[ETH_LEN..])
            .unwrap()
            .to_header();
        let c = h.calc_header_checksum();
        out[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&c.to_be_bytes());
        out
    }

    #[test]
    fn tcp_is_plain_and_forwarding_keeps_it_valid() {
        let mut f = tcp_frame(0b10);
        let Classified::Plain(p) = classify(&f) else {
            panic!("TCP should be plain IP");
        };
        assert_eq!(p.dst, [10, 1, 0, 2]);
        assert_eq!(p.ecn, 0b10);
        assert!(forward_plain(&mut f, [9; 6], [8; 6], true));
        assert_eq!(&f[0..6], &[8; 6]);
        assert_eq!(&f[6..12], &[9; 6]);
        let h = Ipv4HeaderSlice::from_slice(&f[ETH_LEN..]).unwrap();
        assert_eq!(h.ttl(), 63);
        assert_eq!(h.ecn().value(), ECN_CE);
        assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
        assert!(matches!(classify(&f), Classified::Plain(_)));
    }

    #[test]
    fn not_ect_is_never_marked_and_ttl_runs_out() {
        let mut f = tcp_frame(0);
        assert!(forward_plain(&mut f, [1; 6], [2; 6], true));
        assert_eq!(f[ETH_LEN + 1] & 0x03, 0);
        f[ETH_LEN + 8] = 1;
        assert!(!forward_plain(&mut f, [1; 6], [2; 6], false));
    }

    #[test]
    fn garbage_is_dropped_with_a_reason() {
        assert_eq!(classify(&[]), Classified::Drop("Ethernet header truncated"));
        let mut arp = vec![0u8; 60];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(classify(&arp), Classified::Drop("not IPv4 (EtherType)"));
        let mut f = tcp_frame(0);
        f[ETH_LEN + 10] ^= 0xff;
        assert_eq!(
            classify(&f),
            Classified::Drop("IPv4 header checksum mismatch")
        );
        let f = tcp_frame(0);
        assert!(matches!(
            classify(&f[..f.len() - 3]),
            Classified::Drop("IPv4 total length beyond the frame")
        ));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), ce: bool) {
            let _ = classify(&bytes);
            let mut b = bytes.clone();
            let _ = forward_plain(&mut b, [1; 6], [2; 6], ce);
        }
    }

    #[test]
    fn pool_pairs_a_frame_with_another_buffer_either_way() {
        let mut p = FramePool::new(3);
        p.fill(0, b"first");
        p.fill(2, b"third frame");
        for (src, dst) in [(0, 2), (2, 0), (2, 1)] {
            let want = p.frame(src).to_vec();
            let (frame, out) = p.pair(src, dst);
            assert_eq!(frame, &want[..]);
            assert_eq!(out.len(), BUF_LEN);
            out[..frame.len()].copy_from_slice(frame);
            p.set_len(dst, want.len());
            assert_eq!(p.frame(dst), &want[..]);
        }
    }

    #[test]
    #[should_panic(expected = "its own buffer")]
    fn pool_refuses_to_pair_a_buffer_with_itself() {
        let mut p = FramePool::new(2);
        let _ = p.pair(1, 1);
    }

    #[test]
    fn pool_hands_out_each_buffer_once() {
        let mut p = FramePool::new(3);
        let a = p.alloc().unwrap();
        let b = p.alloc().unwrap();
        let c = p.alloc().unwrap();
        assert!(p.alloc().is_none());
        assert!(a != b && b != c && a != c);
        p.fill(b, &[1, 2, 3]);
        assert_eq!(p.frame(b), &[1, 2, 3]);
        p.free(b);
        assert_eq!(p.alloc(), Some(b));
    }
}
