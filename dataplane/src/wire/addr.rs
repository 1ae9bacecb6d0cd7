//! How fablab names hosts and ports on real links: the IPv4 address of every host and
//! the MAC address of every node's port. The simulator never needs them; the emu and
//! xdp datapaths, the testbed builder and the frame codec all use these functions, so
//! the kernel's view (addresses, neighbour entries) and the datapath's view agree.

use crate::packet::HostId;

/// Most hosts a fabric can address (two octets of host number under 10.1.0.0/16).
pub const MAX_HOSTS: u32 = 1 << 16;

/// The prefix every host address lies in.
pub const HOST_PREFIX: ([u8; 4], u8) = ([10, 1, 0, 0], 16);

/// The next hop every host routes the fabric through: a link-local address that a
/// permanent neighbour entry maps to the MAC of the host's switch port, so no ARP is
/// ever needed.
pub const GATEWAY_IP: [u8; 4] = [169, 254, 0, 1];

/// Host `h`'s IPv4 address: 10.1.(h / 256).(h % 256).
pub fn host_ip(h: HostId) -> [u8; 4] {
    debug_assert!(h < MAX_HOSTS);
    [10, 1, (h >> 8) as u8, h as u8]
}

/// The host an address belongs to, if it is a fablab host address.
pub fn host_of_ip(ip: [u8; 4]) -> Option<HostId> {
    (ip[0] == 10 && ip[1] == 1).then(|| (u32::from(ip[2]) << 8) | u32::from(ip[3]))
}

/// The MAC address of `node`'s port `port` (hosts are nodes 0..H, then switches, as
/// in [`crate::sim::topology::Topology`]): locally administered, unicast,
/// 02:fa:node:node:port:port.
pub fn port_mac(node: u32, port: u16) -> [u8; 6] {
    [
        0x02,
        0xfa,
        (node >> 8) as u8,
        node as u8,
        (port >> 8) as u8,
        port as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses_round_trip() {
        for h in [0, 1, 255, 256, 4097, MAX_HOSTS - 1] {
            assert_eq!(host_of_ip(host_ip(h)), Some(h));
        }
        assert_eq!(host_ip(258), [10, 1, 1, 2]);
        assert_eq!(host_of_ip([10, 2, 0, 1]), None);
        assert_eq!(host_of_ip([192, 168, 0, 1]), None);
    }

    #[test]
    fn macs_are_unicast_local_and_distinct() {
        let a = port_mac(3, 1);
        assert_eq!(a[0] & 0x01, 0, "unicast");
        assert_eq!(a[0] & 0x02, 0x02, "locally administered");
        assert_ne!(port_mac(3, 1), port_mac(1, 3));
        assert_ne!(port_mac(256, 0), port_mac(0, 256));
    }
}
