//! Test helpers shared by the packet I/O backends' root-only tests: a veth pair in a
//! private network namespace, numbered test frames, and the two-way exactness check
//! every backend must pass.

use std::io;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{IoStats, PacketIo};

pub const ETHERTYPE: u16 = 0x88b5;

pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

pub struct Veth {
    pub a: String,
    pub b: String,
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("cannot run `ip`");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// True when running as root. Otherwise false (the test skips itself, saying so),
/// or, under `CI=true`, a failure that says why root is needed.
pub fn root_or_skip(why: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("needs root: {why}");
    }
    eprintln!("skipped: needs root");
    false
}

/// Runs `f` on a new thread in a new network namespace holding the veth pair
/// `fl-<tag><pid>a` / `fl-<tag><pid>b` (MTU 9000, up, IPv6 off so the kernel
/// sends nothing on it). `None` when skipped for lack of root.
pub fn with_veth<T: Send + 'static>(
    tag: &'static str,
    f: impl FnOnce(&Veth) -> T + Send + 'static,
) -> Option<T> {
    if !root_or_skip("packet I/O tests create veth pairs in a network namespace") {
        return None;
    }
    let t = std::thread::spawn(move || {
        // SAFETY: unshare touches no memory; CLONE_NEWNET moves only this thread
        // (and the `ip` children it spawns) into a new network namespace.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "unshare(CLONE_NEWNET): {}",
            io::Error::last_os_error()
        );
        // /proc/sys/net follows the opening thread's namespace.
        let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
        let pid = std::process::id();
        let v = Veth {
            a: format!("fl-{tag}{pid}a"),
            b: format!("fl-{tag}{pid}b"),
        };
        ip(&[
            "link", "add", &v.a, "mtu", "9000", "type", "veth", "peer", "name", &v.b, "mtu", "9000",
        ]);
        ip(&["link", "set", &v.a, "up"]);
        ip(&["link", "set", &v.b, "up"]);
        f(&v)
    });
    Some(t.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
}

/// Test frame sizes: 60..1500 bytes, and `big` for every thousandth.
pub fn frame_len(seq: u32, big: usize) -> usize {
    if seq % 1000 == 500 {
        big
    } else {
        60 + (seq as usize * 7919) % 1441
    }
}

/// A test frame: from side `dir` (0 or 1), sequence `seq`, `len` bytes.
pub fn build(buf: &mut Vec<u8>, dir: u8, seq: u32, len: usize) {
    buf.clear();
    buf.extend_from_slice(&[0x02, 0, 0, 0, 0, dir ^ 1, 0x02, 0, 0, 0, 0, dir]);
    buf.extend_from_slice(&ETHERTYPE.to_be_bytes());
    buf.push(dir);
    buf.extend_from_slice(&seq.to_be_bytes());
    while buf.len() < len {
        buf.push((seq as usize).wrapping_mul(31).wrapping_add(buf.len()) as u8);
    }
}

pub fn parse(frame: &[u8]) -> (u8, u32) {
    assert!(
        frame.len() >= 19 && frame[12..14] == ETHERTYPE.to_be_bytes(),
        "foreign frame of {} bytes: {:02x?}",
        frame.len(),
        &frame[..frame.len().min(32)]
    );
    (
        frame[14],
        u32::from_be_bytes(frame[15..19].try_into().unwrap()),
    )
}

pub fn flush_ok(io: &mut dyn PacketIo) {
    match io.flush() {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => panic!("flush: {e}"),
    }
}

struct Side {
    io: Box<dyn PacketIo>,
    dir: u8,
    sent: u32,
    received: u32,
}

/// 10 000 distinct frames each way at once, 60..1500 bytes and every thousandth
/// `big` bytes: each side receives the other's frames in order, whole, once, and none
/// of its own, and the counters say exactly that.
pub fn both_ways(
    tag: &'static str,
    big: usize,
    open: impl Fn(&str) -> Box<dyn PacketIo> + Send + 'static,
) {
    with_veth(tag, move |v| {
        const N: u32 = 10_000;
        const BATCH: u32 = 64;
        let mut sides = [
            Side {
                io: open(&v.a),
                dir: 0,
                sent: 0,
                received: 0,
            },
            Side {
                io: open(&v.b),
                dir: 1,
                sent: 0,
                received: 0,
            },
        ];
        let (mut buf, mut want) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(60);
        while sides.iter().any(|s| s.sent < N || s.received < N) {
            assert!(
                Instant::now() < deadline,
                "timed out: sent {}/{}, received {}/{}",
                sides[0].sent,
                sides[1].sent,
                sides[0].received,
                sides[1].received
            );
            for s in &mut sides {
                let stop = (s.sent + BATCH).min(N);
                while s.sent < stop {
                    build(&mut buf, s.dir, s.sent, frame_len(s.sent, big));
                    if !s.io.send(&buf).unwrap() {
                        break;
                    }
                    s.sent += 1;
                }
                flush_ok(&mut *s.io);
            }
            for s in &mut sides {
                let (dir, received) = (s.dir, &mut s.received);
                s.io.recv(256, &mut |f| {
                    let (from, seq) = parse(f);
                    assert_ne!(from, dir, "socket saw its own transmitted frame {seq}");
                    assert_eq!(seq, *received, "frame out of order or repeated");
                    build(&mut want, from, seq, frame_len(seq, big));
                    assert!(f == &want[..], "frame {seq} corrupted");
                    *received += 1;
                })
                .unwrap();
            }
        }
        for s in &sides {
            let st = s.io.stats();
            assert_eq!(
                st,
                IoStats {
                    rx_frames: N as u64,
                    tx_frames: N as u64,
                    ..IoStats::default()
                },
                "{}",
                s.io.name()
            );
        }
    });
}
