//! fablab's network-namespace testbeds.
//!
//! Owns the naming rules for everything fablab creates in the kernel: every
//! namespace, link and program carries the [`PREFIX`] so that `fablab testbed gc` can
//! find and remove leftovers without touching anything else. Building testbeds
//! (namespaces, veth pairs, addresses, routes through netlink) arrives with the emu
//! datapath.

use thiserror::Error;

/// Prefix of every kernel object fablab creates.
pub const PREFIX: &str = "fl-";

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("`{0}` does not start with the fablab prefix `fl-`")]
    NoPrefix(String),
    #[error("`{name}` is {len} bytes; Linux interface names hold at most 15")]
    TooLong { name: String, len: usize },
    #[error("`{0}` has characters other than ASCII letters, digits, '-' and '_'")]
    BadChar(String),
}

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

/// The namespace of host `i`: `fl-h<i>`.
pub fn host_ns(i: u32) -> String {
    format!("{PREFIX}h{i}")
}

/// The namespace of switch `i`: `fl-s<i>`.
pub fn switch_ns(i: u32) -> String {
    format!("{PREFIX}s{i}")
}

/// The veth end in switch `sw` for its port `port`: `fl-s<sw>p<port>`.
pub fn switch_port(sw: u32, port: u32) -> String {
    format!("{PREFIX}s{sw}p{port}")
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
