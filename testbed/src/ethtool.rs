//! Offload settings through the ethtool ioctl (`SIOCETHTOOL`), on a socket opened
//! inside the interface's namespace.
//!
//! Why they matter: a userspace switch reads frames with AF_PACKET and writes them
//! out again. With tx checksum offload on, TCP and UDP frames leave a host with
//! partial checksums that the receiver would drop once a switch has copied them; with
//! TSO/GSO/GRO on, the switch would see frames larger than the MTU.
//!
//! Offloads are turned off with one ETHTOOL_SFEATURES per interface, by feature
//! name (the legacy per-flag commands miss newer kinds such as
//! `tx-tcp-accecn-segmentation`), and read back with ETHTOOL_GFEATURES.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use crate::error::Ctx;
use crate::{check_name, in_netns, Error};

const SIOCETHTOOL: libc::c_ulong = 0x8946;

// From linux/ethtool.h.
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_GSG: u32 = 0x18;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GTSO: u32 = 0x1e;
const ETHTOOL_GGSO: u32 = 0x23;
const ETHTOOL_GGRO: u32 = 0x2b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_SFEATURES: u32 = 0x3b;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

/// True for the netdev features fablab turns off: every tx checksum, scatter-gather
/// and segmentation feature (TSO of every kind, GSO, the tunnel and UDP kinds) and
/// every receive aggregation (GRO, LRO). Receive checksumming and VLAN offloads stay.
fn is_offload(feature: &str) -> bool {
    feature.starts_with("tx-checksum-")
        || feature.starts_with("tx-scatter-gather")
        || (feature.starts_with("tx-") && feature.ends_with("segmentation"))
        || feature.starts_with("tx-gso-")
        || feature == "rx-gro"
        || feature.starts_with("rx-gro-")
        || feature == "rx-lro"
        || feature == "rx-udp-gro-forwarding"
}

/// The offloads of an interface, as the kernel reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offloads {
    /// The legacy summary flags (ETHTOOL_GTXCSUM, GSG, GTSO, GGSO, GGRO).
    pub tx_checksum: bool,
    pub scatter_gather: bool,
    pub tso: bool,
    pub gso: bool,
    pub gro: bool,
    /// Every offload feature (checksum, scatter-gather, segmentation, aggregation)
    /// still active, by its ethtool name (`tx-tcp-segmentation`, ...).
    pub active: Vec<String>,
}

impl Offloads {
    /// True if every one is off.
    pub fn all_off(&self) -> bool {
        !(self.tx_checksum || self.scatter_gather || self.tso || self.gso || self.gro)
            && self.active.is_empty()
    }
}

/// A datagram socket in the calling thread's namespace, to carry ioctls.
pub(crate) fn ioctl_socket() -> io::Result<OwnedFd> {
    Ok(socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

fn ifreq(ifname: &str) -> io::Result<libc::ifreq> {
    if ifname.len() >= libc::IFNAMSIZ || ifname.bytes().any(|b| b == 0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
    for (d, s) in name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(libc::ifreq {
        ifr_name: name,
        ifr_ifru: libc::__c_anonymous_ifr_ifru {
            ifru_data: std::ptr::null_mut(),
        },
    })
}

/// Issues SIOCETHTOOL on `ifname` with `data` as the command buffer.
///
/// # Safety
/// `data` must point at a writable buffer that starts with the `u32` command and is
/// at least as large as that command's structure, including the variable-length
/// tail its header announces, and must stay valid for the call.
unsafe fn ethtool_ioctl(sock: BorrowedFd<'_>, ifname: &str, data: *mut u32) -> io::Result<i32> {
    let mut req = ifreq(ifname)?;
    req.ifr_ifru.ifru_data = data.cast();
    // SAFETY: `req` is a valid `struct ifreq` with a NUL-terminated name (ifreq()
    // checked the length and zero-filled the array) that outlives the call; the
    // caller guarantees `ifru_data` points at a buffer sized for the command.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// One legacy get command (`struct ethtool_value`); returns its value.
fn ethtool_get(sock: BorrowedFd<'_>, ifname: &str, cmd: u32) -> io::Result<u32> {
    // struct ethtool_value { u32 cmd; u32 data; }
    let mut value = [cmd, 0u32];
    // SAFETY: the legacy get commands take a `struct ethtool_value`, two u32s, which
    // `value` is; it lives across the call.
    unsafe { ethtool_ioctl(sock, ifname, value.as_mut_ptr())? };
    Ok(value[1])
}

/// The kernel's netdev feature names, indexed by feature bit (a global table, asked
/// through a device).
fn feature_names(sock: BorrowedFd<'_>, ifname: &str) -> io::Result<Vec<String>> {
    // struct ethtool_sset_info { u32 cmd; u32 reserved; u64 sset_mask; u32 data[]; },
    // asking for one string set, so with one u32 of data.
    #[repr(C)]
    struct SsetInfo {
        cmd: u32,
        reserved: u32,
        sset_mask: u64,
        data: [u32; 1],
    }
    let mut info = SsetInfo {
        cmd: ETHTOOL_GSSET_INFO,
        reserved: 0,
        sset_mask: 1 << ETH_SS_FEATURES,
        data: [0],
    };
    // SAFETY: `info` is a `struct ethtool_sset_info` asking for one string set, so
    // the kernel writes at most one u32 of `data`, which it has room for.
    unsafe { ethtool_ioctl(sock, ifname, (&mut info as *mut SsetInfo).cast())? };
    if info.sset_mask & (1 << ETH_SS_FEATURES) == 0 {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    let count = info.data[0] as usize;
    // struct ethtool_gstrings { u32 cmd; u32 string_set; u32 len; u8 data[len * 32]; }
    let mut buf = vec![0u32; 3 + count * ETH_GSTRING_LEN / 4];
    buf[0] = ETHTOOL_GSTRINGS;
    buf[1] = ETH_SS_FEATURES;
    buf[2] = count as u32;
    // SAFETY: `buf` holds the 3-u32 header of `struct ethtool_gstrings` and room for
    // the `count` strings of ETH_GSTRING_LEN bytes its `len` field announces.
    unsafe { ethtool_ioctl(sock, ifname, buf.as_mut_ptr())? };
    let got = (buf[2] as usize).min(count);
    let bytes: Vec<u8> = buf[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
    Ok(bytes
        .chunks(ETH_GSTRING_LEN)
        .take(got)
        .map(|s| {
            let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        })
        .collect())
}

/// Feature bits of the offloads among `names`.
fn offload_bits(names: &[String]) -> Vec<usize> {
    (0..names.len())
        .filter(|&i| is_offload(&names[i]))
        .collect()
}

/// The active-feature bitmap of `ifname` (`count` features).
fn active_features(sock: BorrowedFd<'_>, ifname: &str, count: usize) -> io::Result<Vec<u32>> {
    let blocks = count.div_ceil(32);
    // struct ethtool_gfeatures { u32 cmd; u32 size; struct { u32 available,
    // requested, active, never_changed; } features[size]; }
    let mut buf = vec![0u32; 2 + 4 * blocks];
    buf[0] = ETHTOOL_GFEATURES;
    buf[1] = blocks as u32;
    // SAFETY: `buf` is a `struct ethtool_gfeatures` header announcing `blocks`
    // blocks of 4 u32s, and has room for all of them.
    unsafe { ethtool_ioctl(sock, ifname, buf.as_mut_ptr())? };
    Ok((0..blocks).map(|b| buf[2 + 4 * b + 2]).collect())
}

fn has_bit(words: &[u32], bit: usize) -> bool {
    words
        .get(bit / 32)
        .is_some_and(|w| w & (1 << (bit % 32)) != 0)
}

/// Names of the offloads active in `bits`.
fn active_offloads(names: &[String], bits: &[u32]) -> Vec<String> {
    offload_bits(names)
        .into_iter()
        .filter(|&b| has_bit(bits, b))
        .map(|b| names[b].clone())
        .collect()
}

/// Interface `ifname`'s index, through a socket of its namespace.
pub(crate) fn ifindex(sock: BorrowedFd<'_>, ifname: &str) -> io::Result<u32> {
    let mut req = ifreq(ifname)?;
    // SAFETY: SIOCGIFINDEX takes a `struct ifreq *` with a NUL-terminated name; the
    // kernel writes the index into `ifr_ifru.ifru_ifindex`. `req` outlives the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFINDEX as _, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl succeeded, so the kernel filled the `ifru_ifindex` member of
    // the union (an int; any bit pattern is valid).
    let index = unsafe { req.ifr_ifru.ifru_ifindex };
    Ok(index as u32)
}

/// Turns off every offload ([`is_offload`]) of `ifname` with one ETHTOOL_SFEATURES,
/// then reads the features back and fails if any is still on.
pub(crate) fn disable_offloads(sock: BorrowedFd<'_>, ns: &str, ifname: &str) -> Result<(), Error> {
    let what = || format!("turning off offloads of {ifname} in namespace {ns}");
    let names = feature_names(sock, ifname).ctx(what)?;
    let blocks = names.len().div_ceil(32);
    // struct ethtool_sfeatures { u32 cmd; u32 size; struct { u32 valid, requested; }
    // features[size]; }: `valid` selects the bits to change, `requested` 0 clears them.
    let mut buf = vec![0u32; 2 + 2 * blocks];
    buf[0] = ETHTOOL_SFEATURES;
    buf[1] = blocks as u32;
    for bit in offload_bits(&names) {
        buf[2 + 2 * (bit / 32)] |= 1 << (bit % 32);
    }
    // SAFETY: `buf` is a `struct ethtool_sfeatures` header announcing `blocks`
    // blocks of 2 u32s, and has room for all of them.
    // A positive return only says some bits were not changeable (e.g. fixed off);
    // the read-back below checks what matters.
    unsafe { ethtool_ioctl(sock, ifname, buf.as_mut_ptr()) }.ctx(what)?;
    let left = active_offloads(
        &names,
        &active_features(sock, ifname, names.len()).ctx(what)?,
    );
    if !left.is_empty() {
        let still = io::Error::other(format!("still on: {}", left.join(", ")));
        return Err(Error::os(what(), still));
    }
    Ok(())
}

fn get_offloads(sock: BorrowedFd<'_>, ifname: &str) -> io::Result<Offloads> {
    let get = |cmd| ethtool_get(sock, ifname, cmd).map(|v| v != 0);
    let names = feature_names(sock, ifname)?;
    let bits = active_features(sock, ifname, names.len())?;
    Ok(Offloads {
        tx_checksum: get(ETHTOOL_GTXCSUM)?,
        scatter_gather: get(ETHTOOL_GSG)?,
        tso: get(ETHTOOL_GTSO)?,
        gso: get(ETHTOOL_GGSO)?,
        gro: get(ETHTOOL_GGRO)?,
        active: active_offloads(&names, &bits),
    })
}

/// The offloads of interface `ifname` in fablab namespace `ns`.
pub fn offloads(ns: &str, ifname: &str) -> Result<Offloads, Error> {
    check_name(ifname)?;
    in_netns(ns, || {
        let sock = ioctl_socket().ctx(|| format!("opening a socket in namespace {ns}"))?;
        get_offloads(sock.as_fd(), ifname)
            .ctx(|| format!("reading offloads of {ifname} in namespace {ns}"))
    })?
}

#[cfg(test)]
mod tests {
    use super::is_offload;

    #[test]
    fn offload_names_cover_checksums_segmentation_and_aggregation_only() {
        for on in [
            "tx-checksum-ip-generic",
            "tx-checksum-sctp",
            "tx-scatter-gather",
            "tx-scatter-gather-fraglist",
            "tx-tcp-segmentation",
            "tx-tcp-accecn-segmentation",
            "tx-generic-segmentation",
            "tx-udp-segmentation",
            "tx-gso-list",
            "tx-gso-partial",
            "rx-gro",
            "rx-gro-list",
            "rx-gro-hw",
            "rx-lro",
            "rx-udp-gro-forwarding",
        ] {
            assert!(is_offload(on), "{on}");
        }
        for off in [
            "rx-checksum",
            "tx-vlan-hw-insert",
            "highdma",
            "tx-lockless",
            "loopback",
        ] {
            assert!(!is_offload(off), "{off}");
        }
    }
}
