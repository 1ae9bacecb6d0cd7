//! RoCEv2 Invariant CRC (IBA Vol. 1 Annex A17 "RoCEv2", §A17.3.3 "ICRC"; the
//! masking rules are those of §7.8.1 "Invariant CRC" applied to the IP/UDP headers
//! that replace the GRH).
//!
//! The ICRC is the Ethernet CRC-32 over:
//! 1. 8 bytes of `0xff` standing for the (absent) LRH;
//! 2. the IPv4 header with the variant fields set to all ones: Type of Service
//!    (DSCP + ECN), Time to Live and Header Checksum;
//! 3. the UDP header with its checksum set to all ones;
//! 4. the BTH with its variant `Resv8a` byte (FECN/BECN) set to all ones;
//! 5. everything after the BTH up to the ICRC (extension headers, payload, pad).
//!
//! It is appended least significant byte first, as the Ethernet FCS is.
//!
//! fablab's switches insert an INT block after UDP and rewrite the UDP destination
//! port; the ICRC is defined over the frame as the sender emitted it, so the check
//! takes the INT block's length and restores port and lengths in the pseudo header.

use super::{bth, ROCEV2_UDP_PORT};

/// Bytes of the ICRC trailer.
pub const ICRC_LEN: usize = 4;

const IPV4_LEN: usize = 20;
const UDP_LEN: usize = 8;

/// Computes the ICRC of a RoCEv2 frame.
///
/// `ipv4` is the 20-byte IPv4 header and `udp` the 8-byte UDP header as on the wire;
/// `int_len` is the length of an INT block between UDP and BTH (0 if none);
/// `transport` runs from the first byte of the BTH to the last byte before the ICRC.
/// The caller has checked the lengths; short inputs give a CRC that will not match,
/// never a panic.
pub fn compute(ipv4: &[u8], udp: &[u8], int_len: usize, transport: &[u8]) -> u32 {
    let mut pseudo = [0u8; 8 + IPV4_LEN + UDP_LEN + bth::HEADER_LEN];
    pseudo[..8].fill(0xff);

    let ip = &mut pseudo[8..8 + IPV4_LEN];
    copy_prefix(ip, ipv4);
    ip[1] = 0xff; // TOS: DSCP + ECN
    ip[8] = 0xff; // TTL
    ip[10..12].fill(0xff); // header checksum
    let total = u16::from_be_bytes([ip[2], ip[3]]).wrapping_sub(int_len as u16);
    ip[2..4].copy_from_slice(&total.to_be_bytes());

    let u = &mut pseudo[8 + IPV4_LEN..8 + IPV4_LEN + UDP_LEN];
    copy_prefix(u, udp);
    if int_len > 0 {
        u[2..4].copy_from_slice(&ROCEV2_UDP_PORT.to_be_bytes());
    }
    let ulen = u16::from_be_bytes([u[4], u[5]]).wrapping_sub(int_len as u16);
    u[4..6].copy_from_slice(&ulen.to_be_bytes());
    u[6..8].fill(0xff); // UDP checksum

    let b = &mut pseudo[8 + IPV4_LEN + UDP_LEN..];
    copy_prefix(b, transport);
    b[bth::RESV8A_OFFSET] = 0xff;

    let mut h = crc32fast::Hasher::new();
    h.update(&pseudo);
    h.update(transport.get(bth::HEADER_LEN..).unwrap_or(&[]));
    h.finalize()
}

fn copy_prefix(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    dst[..n].copy_from_slice(&src[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    // IPv4 10.0.0.1 -> 10.0.0.2, total length 20+8+12+4 = 44, UDP 4791, length 24.
    const IP: [u8; 20] = [
        0x45, 0x00, 0x00, 0x2c, 0x00, 0x01, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 0, 1, 10, 0,
        0, 2,
    ];
    const UDP: [u8; 8] = [0xc0, 0x00, 0x12, 0xb7, 0x00, 0x18, 0x00, 0x00];
    const BTH: [u8; 12] = [0x04, 0, 0xff, 0xff, 0, 0, 0, 0x11, 0x80, 0, 0, 1];

    #[test]
    fn variant_fields_do_not_change_the_icrc() {
        let base = compute(&IP, &UDP, 0, &BTH);
        let mut ip = IP;
        ip[1] = 0x03; // ECN CE
        ip[8] = 0x01; // TTL
        ip[10] = 0x5a; // checksum
        let mut udp = UDP;
        udp[6] = 0x77;
        let mut bth = BTH;
        bth[4] = 0xc0; // FECN + BECN
        assert_eq!(compute(&ip, &udp, 0, &bth), base);
    }

    #[test]
    fn invariant_fields_change_the_icrc() {
        let base = compute(&IP, &UDP, 0, &BTH);
        let mut udp = UDP;
        udp[0] ^= 1; // entropy (UDP source port) is invariant
        assert_ne!(compute(&IP, &udp, 0, &BTH), base);
        let mut bth = BTH;
        bth[11] ^= 1; // PSN
        assert_ne!(compute(&IP, &UDP, 0, &bth), base);
    }

    #[test]
    fn matches_the_spec_procedure_by_hand() {
        // The same bytes the annex describes, assembled by hand and run through a
        // bit-by-bit CRC-32 (reflected, poly 0xedb88320, init and final xor ~0).
        let mut msg = vec![0xffu8; 8];
        let mut ip = IP;
        ip[1] = 0xff;
        ip[8] = 0xff;
        ip[10] = 0xff;
        ip[11] = 0xff;
        msg.extend_from_slice(&ip);
        let mut udp = UDP;
        udp[6] = 0xff;
        udp[7] = 0xff;
        msg.extend_from_slice(&udp);
        let mut bth = BTH;
        bth[4] = 0xff;
        msg.extend_from_slice(&bth);
        let mut crc = !0u32;
        for (i, byte) in msg.into_iter().enumerate() {
            if i == 8 {
                // Linux's rxe driver starts its ICRC from this constant: the CRC state
                // after the eight 0xff bytes of the masked LRH.
                assert_eq!(crc, 0xdebb_20e3);
            }
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        assert_eq!(compute(&IP, &UDP, 0, &BTH), !crc);
    }

    #[test]
    fn int_block_is_taken_out_of_the_pseudo_header() {
        let plain = compute(&IP, &UDP, 0, &BTH);
        // The same frame with a 64-byte INT block: lengths +64, dst port 4792.
        let mut ip = IP;
        ip[2..4].copy_from_slice(&(44u16 + 64).to_be_bytes());
        let mut udp = UDP;
        udp[2..4].copy_from_slice(&4792u16.to_be_bytes());
        udp[4..6].copy_from_slice(&(24u16 + 64).to_be_bytes());
        assert_eq!(compute(&ip, &udp, 64, &BTH), plain);
    }
}
