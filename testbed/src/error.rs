//! The testbed's errors: each names the operation and the kernel object it failed on.

use std::io;

use crate::NameError;

/// Why planning, building, inspecting or removing a testbed failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "fablab testbed needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network \
         namespaces"
    )]
    NotRoot,
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("{hosts} hosts exceed the {max} fablab can address (10.1.0.0/16)")]
    TooManyHosts { hosts: u32, max: u32 },
    #[error("{nodes} nodes exceed the {max} that port MACs can tell apart")]
    TooManyNodes { nodes: usize, max: usize },
    #[error("host {host} has {ports} ports; a fablab host has exactly one")]
    HostPorts { host: u32, ports: usize },
    #[error("MTU {0} is outside what a veth accepts (68..=65535)")]
    Mtu(u32),
    #[error("namespace {0} is not part of this testbed")]
    UnknownNamespace(String),
    #[error("node {0} is not a switch of this testbed")]
    NotASwitch(u32),
    /// A system call or netlink request failed: `what` names the operation and the
    /// object ("creating veth fl-s0p3 <-> fl-h3p0").
    #[error("{what}: {err}")]
    Os { what: String, err: io::Error },
}

impl Error {
    pub(crate) fn os(what: impl Into<String>, err: impl Into<io::Error>) -> Error {
        Error::Os {
            what: what.into(),
            err: err.into(),
        }
    }

    /// The errno behind an [`Error::Os`], if there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Os { err, .. } => err.raw_os_error(),
            _ => None,
        }
    }
}

/// The io::Error inside a netlink failure (its errno when the kernel refused).
pub(crate) fn nl_err(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

/// `.ctx("creating veth a <-> b")` on a netlink or io result.
pub(crate) trait Ctx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> Ctx<T> for Result<T, io::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| Error::os(what(), e))
    }
}

impl<T> Ctx<T> for Result<T, nix::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| Error::os(what(), io::Error::from(e)))
    }
}

impl<T> Ctx<T> for Result<T, rtnetlink::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| Error::os(what(), nl_err(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_operation_and_the_object() {
        let e = Error::os(
            "creating veth fl-s0p3 <-> fl-h3p0",
            io::Error::from_raw_os_error(17),
        );
        assert_eq!(
            e.to_string(),
            "creating veth fl-s0p3 <-> fl-h3p0: File exists (os error 17)"
        );
        assert_eq!(e.raw_os_error(), Some(17));
        assert!(Error::NotRoot.to_string().contains("needs root"));
    }
}
