//! Named network namespaces, as `ip netns` keeps them: a bind mount of the
//! namespace's nsfs file on `/run/netns/NAME`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::Ctx;
use crate::{check_name, Error};

/// Where named namespaces live (as for `ip netns`).
pub const NETNS_DIR: &str = "/run/netns";

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// True if this process may create namespaces and veths: it has CAP_NET_ADMIN and
/// CAP_SYS_ADMIN in its effective set (root normally has both).
pub fn has_privileges() -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return nix::unistd::geteuid().is_root();
    };
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let need = (1u64 << CAP_NET_ADMIN) | (1u64 << CAP_SYS_ADMIN);
    eff & need == need
}

/// [`Error::NotRoot`] unless [`has_privileges`].
pub fn require_privileges() -> Result<(), Error> {
    if has_privileges() {
        Ok(())
    } else {
        Err(Error::NotRoot)
    }
}

pub(crate) fn ns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Makes `/run/netns` a shared mount point, as `ip netns add` does, so that
/// namespaces bound under it are seen by every mount namespace.
pub(crate) fn prepare_netns_dir() -> Result<(), Error> {
    static ONCE: Mutex<bool> = Mutex::new(false);
    let mut done = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return Ok(());
    }
    let dir = Path::new(NETNS_DIR);
    fs::create_dir_all(dir).ctx(|| format!("creating {NETNS_DIR}"))?;
    let shared = || {
        mount(
            None::<&str>,
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    if shared().is_err() {
        // Not a mount point yet: bind it onto itself, then share it.
        mount(
            Some(dir),
            dir,
            Some("none"),
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .ctx(|| format!("bind-mounting {NETNS_DIR} on itself"))?;
        shared().ctx(|| format!("making {NETNS_DIR} a shared mount"))?;
    }
    *done = true;
    Ok(())
}

/// Creates namespace `name` and moves the calling thread into it: `unshare` of the
/// thread's network namespace, then a bind mount of it on `/run/netns/NAME`. Fails
/// with EEXIST, touching nothing, if the name is taken.
///
/// Only for threads this crate owns: the thread stays in the new namespace.
pub(crate) fn create_and_enter(name: &str) -> Result<(), Error> {
    let path = ns_path(name);
    let what = || format!("creating namespace {name}");
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)
        .ctx(what)?;
    let made = unshare(CloneFlags::CLONE_NEWNET).ctx(what).and_then(|()| {
        mount(
            Some("/proc/thread-self/ns/net"),
            &path,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .ctx(what)
    });
    if made.is_err() {
        let _ = fs::remove_file(&path);
    }
    made
}

/// Removes namespace `name`'s bind mount and file. The kernel frees the namespace,
/// and the veths in it, once nothing else holds it (a socket opened inside, a
/// process inside).
pub(crate) fn delete(name: &str) -> Result<(), Error> {
    let path = ns_path(name);
    let what = || format!("deleting namespace {name}");
    match umount2(&path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a file left by a crash between create and mount).
        Ok(()) | Err(nix::Error::EINVAL) => {}
        Err(nix::Error::ENOENT) => return Ok(()),
        Err(e) => return Err(Error::os(what(), e)),
    }
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::os(what(), e)),
        _ => Ok(()),
    }
}

/// Names in `/run/netns` that start with `prefix`, sorted.
pub(crate) fn list(prefix: &str) -> Result<Vec<String>, Error> {
    let rd = match fs::read_dir(NETNS_DIR) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::os(format!("listing {NETNS_DIR}"), e)),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.ctx(|| format!("listing {NETNS_DIR}"))?;
        if let Some(n) = entry.file_name().to_str() {
            if n.starts_with(prefix) {
                names.push(n.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Opens namespace `name` (for `setns` or `IFLA_NET_NS_FD`).
pub(crate) fn open(name: &str) -> Result<File, Error> {
    File::open(ns_path(name)).ctx(|| format!("opening namespace {name}"))
}

/// Moves the calling thread into the namespace `ns` (an open namespace file).
pub(crate) fn enter(ns: &File, name: &str) -> Result<(), Error> {
    setns(ns, CloneFlags::CLONE_NEWNET).ctx(|| format!("entering namespace {name}"))
}

/// Runs `f` on a new thread inside the fablab namespace `ns` and returns its result.
/// The caller's thread never changes namespace. Sockets `f` opens stay in `ns` after
/// it returns (that is how the datapath opens its AF_PACKET sockets); a panic in `f`
/// is resumed on the caller's thread.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
    check_name(ns)?;
    require_privileges()?;
    let file = open(ns)?;
    std::thread::scope(|s| {
        let worker = s.spawn(move || -> Result<T, Error> {
            enter(&file, ns)?;
            drop(file);
            Ok(f())
        });
        match worker.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Writes `value` to `/proc/sys/<key>` for the calling thread's network namespace.
///
/// `/proc/sys/net` resolves against the namespace of the thread that opens the file,
/// so the file is opened (and written) by the thread that entered the namespace.
/// A missing key (IPv6 compiled out) is not an error.
pub(crate) fn write_sysctl(ns: &str, key: &str, value: &str) -> Result<(), Error> {
    match fs::write(Path::new("/proc/sys").join(key), value) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r.ctx(|| format!("setting {key}={value} in namespace {ns}")),
    }
}

/// Reads `/proc/sys/<key>` for the calling thread's network namespace.
pub(crate) fn read_sysctl(key: &str) -> Option<String> {
    fs::read_to_string(Path::new("/proc/sys").join(key))
        .ok()
        .map(|s| s.trim().to_owned())
}
