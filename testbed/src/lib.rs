//! fablab's network-namespace testbeds.
//!
//! Owns every kernel object fablab creates for its emulated fabrics: network
//! namespaces (bind mounts under `/run/netns`), veth pairs, their addresses, routes,
//! neighbour entries, offload settings and per-namespace sysctls. Every such object is
//! named with the [`PREFIX`] `fl-`, and this crate never creates, changes or deletes a
//! kernel object whose name lacks it: [`gc`] removes leftovers by prefix alone, so
//! anything else on the machine (other namespaces, the root namespace's links and
//! sysctls) stays untouched.
//!
//! - Naming: [`Naming`] and the free functions below ([`host_ns`], [`switch_port`], ...).
//! - [`Plan`]: what a [`Topology`](fablab_dataplane::sim::topology::Topology) becomes
//!   in the kernel, computed without touching the OS.
//! - [`Testbed`]: builds a plan through netlink (the `rtnetlink` crate) and tears it
//!   down; [`in_netns`] runs code inside one of its namespaces.
//! - [`gc`], [`list`], [`inspect`], [`offloads`]: cleanup and read-back.
//!
//! Everything that touches the kernel needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).

mod error;
mod ethtool;
mod netns;
mod plan;
mod testbed;

pub use error::Error;
pub use ethtool::{offloads, Offloads};
pub use netns::{has_privileges, in_netns, require_privileges, NETNS_DIR};
pub use plan::{Endpoint, NodePlan, Plan, VethPlan};
pub use testbed::{
    gc, gc_prefixed, inspect, kernel_forwarding, list, list_prefixed, AddrState, GcReport,
    Inventory, LinkState, NeighState, NsState, RouteState, Testbed,
};

/// Prefix of every kernel object fablab creates.
pub const PREFIX: &str = "fl-";

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// Why a name is not one fablab may create.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("`{0}` does not start with the fablab prefix `fl-`")]
    NoPrefix(String),
    #[error("`{name}` is {len} bytes; Linux interface names hold at most 15")]
    TooLong { name: String, len: usize },
    #[error("`{0}` has characters other than ASCII letters, digits, '-' and '_'")]
    BadChar(String),
    #[error("testbed tag `{0}` must be 1 to {TAG_MAX} lowercase ASCII letters or digits")]
    BadTag(String),
}

/// Longest tag [`Naming::tagged`] accepts.
pub const TAG_MAX: usize = 8;

/// True if `name` is one of fablab's objects.
pub fn is_ours(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// Checks that `name` is a valid fablab interface or namespace name.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if !is_ours(name) {
        return Err(NameError::NoPrefix(name.into()));
    }
    if name.len() > IFNAME_MAX {
        return Err(NameError::TooLong {
            name: name.into(),
            len: name.len(),
        });
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(NameError::BadChar(name.into()));
    }
    Ok(())
}

/// How one testbed names its objects: [`PREFIX`], then an optional tag and `-`.
///
/// Untagged names are `fl-h3`, `fl-s0p2`; with tag `t1` they are `fl-t1-h3`,
/// `fl-t1-s0p2`. Testbeds with different tags never collide, and
/// [`gc_prefixed`]`(naming.prefix())` removes one testbed's leftovers only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    prefix: String,
}

impl Default for Naming {
    fn default() -> Self {
        Naming {
            prefix: PREFIX.into(),
        }
    }
}

impl Naming {
    /// Names that start with `fl-<tag>-`.
    pub fn tagged(tag: &str) -> Result<Naming, NameError> {
        if tag.is_empty()
            || tag.len() > TAG_MAX
            || !tag
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(NameError::BadTag(tag.into()));
        }
        Ok(Naming {
            prefix: format!("{PREFIX}{tag}-"),
        })
    }

    /// What every name starts with: `fl-` or `fl-<tag>-`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespace of host `i`: `fl-h<i>`.
    pub fn host_ns(&self, i: u32) -> String {
        format!("{}h{i}", self.prefix)
    }

    /// The namespace of switch `i` (node `hosts + i`): `fl-s<i>`.
    pub fn switch_ns(&self, i: u32) -> String {
        format!("{}s{i}", self.prefix)
    }

    /// Host `i`'s interface (its end of the veth to its switch): `fl-h<i>p0`.
    pub fn host_if(&self, i: u32) -> String {
        format!("{}h{i}p0", self.prefix)
    }

    /// The veth end in switch `sw` for its port `port`: `fl-s<sw>p<port>`.
    pub fn switch_port(&self, sw: u32, port: u32) -> String {
        format!("{}s{sw}p{port}", self.prefix)
    }
}

/// The namespace of host `i`: `fl-h<i>`.
pub fn host_ns(i: u32) -> String {
    Naming::default().host_ns(i)
}

/// The namespace of switch `i`: `fl-s<i>`.
pub fn switch_ns(i: u32) -> String {
    Naming::default().switch_ns(i)
}

/// Host `i`'s interface: `fl-h<i>p0`.
pub fn host_if(i: u32) -> String {
    Naming::default().host_if(i)
}

/// The veth end in switch `sw` for its port `port`: `fl-s<sw>p<port>`.
pub fn switch_port(sw: u32, port: u32) -> String {
    Naming::default().switch_port(sw, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_valid_for_large_fabrics() {
        // A k=16 fat-tree has 1024 hosts and 320 switches of 16 ports.
        for i in [0, 1023] {
            check_name(&host_ns(i)).unwrap();
        }
        for sw in [0, 319] {
            for p in [0, 15] {
                check_name(&switch_port(sw, p)).unwrap();
            }
        }
        check_name(&switch_ns(319)).unwrap();
        check_name(&host_if(1023)).unwrap();
    }

    #[test]
    fn tagged_names_carry_the_tag_after_the_prefix() {
        let n = Naming::tagged("t1").unwrap();
        assert_eq!(n.prefix(), "fl-t1-");
        assert_eq!(n.host_ns(3), "fl-t1-h3");
        assert_eq!(n.host_if(3), "fl-t1-h3p0");
        assert_eq!(n.switch_ns(0), "fl-t1-s0");
        assert_eq!(n.switch_port(0, 2), "fl-t1-s0p2");
        assert_eq!(Naming::default().host_if(7), "fl-h7p0");
        assert_eq!(switch_port(1, 4), "fl-s1p4");
        for bad in ["", "A", "a-b", "toolongtag"] {
            assert_eq!(Naming::tagged(bad), Err(NameError::BadTag(bad.into())));
        }
    }

    #[test]
    fn foreign_and_bad_names_are_refused() {
        assert_eq!(check_name("eth0"), Err(NameError::NoPrefix("eth0".into())));
        assert!(matches!(
            check_name("fl-0123456789abcd"),
            Err(NameError::TooLong { .. })
        ));
        assert!(matches!(check_name("fl-a b"), Err(NameError::BadChar(_))));
        assert!(!is_ours("docker0"));
    }
}
