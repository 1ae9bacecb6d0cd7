//! The emu datapath on real network namespaces (root only; under `CI=true` a missing
//! privilege fails these tests instead of skipping them).
//!
//! The tests share the kernel's `fl-` namespace names, so they run one after another
//! inside a single test function. They need an optimized build
//! (`cargo test --release -p fablab --test emu`, as `scripts/test.sh` runs them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

fn fablab() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fablab"));
    c.current_dir(repo());
    c
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// True when we may build namespaces; otherwise skips, or fails under CI.
fn privileged() -> bool {
    if fablab_testbed::has_privileges() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to build network namespaces; CI runs as root"
    );
    eprintln!("skipped: needs root");
    false
}

fn ours() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("fl-"))
                .collect()
        })
        .unwrap_or_default();
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    for l in String::from_utf8_lossy(&links.stdout).lines() {
        if let Some(name) = l.split(": ").nth(1) {
            if name.starts_with("fl-") {
                names.push(name.to_string());
            }
        }
    }
    names
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn summary(dir: &Path) -> serde_json::Value {
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    r
}

/// Low link rates, so the CPU is not the bottleneck.
const SLOW: [&str; 4] = [
    "--set",
    "topology.host_link_gbps=0.5",
    "--set",
    "topology.fabric_link_gbps=0.5",
];

fn quickstart_matches_sim(tmp: &Path) {
    let emu = tmp.join("emu");
    ok(fablab()
        .args(["run", "scenarios/quickstart.toml", "--mode", "emu", "--out"])
        .arg(&emu)
        .args(SLOW)
        .output()
        .unwrap());
    let sim = tmp.join("sim");
    ok(fablab()
        .args(["run", "scenarios/quickstart.toml", "--out"])
        .arg(&sim)
        .args(SLOW)
        .output()
        .unwrap());
    let (e, s) = (summary(&emu), summary(&sim));
    assert_eq!(e["mode"], "emu");
    let (es, ss) = (&e["summary"], &s["summary"]);
    assert_eq!(es["flows_finished"], es["flows_total"], "{es}");
    assert_eq!(es["delivered_digest"], es["expected_digest"], "{es}");
    assert_eq!(
        es["delivered_digest"], ss["delivered_digest"],
        "emu delivered other bytes than sim"
    );
    assert!(ours().is_empty(), "left behind: {:?}", ours());
}

/// `scenarios/ecmp-vs-spray.toml` at 50 Mb/s (the 26-namespace fabric then needs
/// about a fifth of a core): for every switch policy the emu's efficiency is within
/// 10% of sim's, and ECMP stays clearly below spraying, as in sim.
fn ecmp_vs_spray_matches_sim(tmp: &Path) {
    let mut eff = Vec::new();
    for lb in ["ecmp", "spray-rr", "adaptive"] {
        let mut pair = [0.0; 2];
        for (k, mode) in ["sim", "emu"].into_iter().enumerate() {
            let dir = tmp.join(format!("fidelity-{lb}-{mode}"));
            ok(fablab()
                .args(["run", "scenarios/ecmp-vs-spray.toml", "--mode", mode])
                .args(["--set", &format!("switch.lb={lb}")])
                .args(["--set", "topology.host_link_gbps=0.05"])
                .args(["--set", "topology.fabric_link_gbps=0.05"])
                .args(["--set", "sim.duration_us=2000000", "--out"])
                .arg(&dir)
                .output()
                .unwrap());
            pair[k] = summary(&dir)["summary"]["efficiency"].as_f64().unwrap();
        }
        let [sim, emu] = pair;
        eprintln!("ecmp-vs-spray {lb}: sim {sim:.3}, emu {emu:.3}");
        assert!(
            (emu - sim).abs() <= 0.1 * sim,
            "{lb}: emu efficiency {emu:.3} is not within 10% of sim's {sim:.3}"
        );
        eff.push(emu);
    }
    assert!(
        eff[0] < 0.75 * eff[1].min(eff[2]),
        "ECMP ({:.3}) is not clearly below spraying ({:.3}, {:.3}) in emu",
        eff[0],
        eff[1],
        eff[2]
    );
    assert!(ours().is_empty(), "left behind: {:?}", ours());
}

fn ping_and_tcp_cross_a_spraying_fabric(tmp: &Path) {
    let up = ok(fablab()
        .args(["testbed", "up", "scenarios/quickstart.toml"])
        .args(SLOW)
        .output()
        .unwrap());
    assert!(up.contains("fl-h7"), "{up}");
    let ping = Command::new("ip")
        .args([
            "netns", "exec", "fl-h0", "ping", "-c", "5", "-i", "0.2", "-W", "2", "10.1.0.7",
        ])
        .output()
        .unwrap();
    let ping_out = String::from_utf8_lossy(&ping.stdout).into_owned();
    // TCP: 2 MB through iperf3 while the switches spray every packet (spray-rr).
    let server = Command::new("ip")
        .args(["netns", "exec", "fl-h7", "iperf3", "-s", "-1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _server = Reaper(server);
    std::thread::sleep(Duration::from_millis(300));
    let tcp = Command::new("ip")
        .args([
            "netns", "exec", "fl-h0", "iperf3", "-c", "10.1.0.7", "-n", "2M", "-J",
        ])
        .output()
        .unwrap();
    let down = fablab().args(["testbed", "down"]).output().unwrap();
    assert!(ping.status.success(), "ping failed: {ping_out}");
    assert!(ping_out.contains("5 received"), "{ping_out}");
    assert!(
        tcp.status.success(),
        "iperf3 failed: {}",
        String::from_utf8_lossy(&tcp.stdout)
    );
    let j: serde_json::Value = serde_json::from_slice(&tcp.stdout).unwrap();
    // iperf3 -n ends when the client has written its 2 MiB; the server's count at
    // that moment trails by what is still in flight.
    let sent = j["end"]["sum_sent"]["bytes"].as_f64().unwrap();
    let received = j["end"]["sum_received"]["bytes"].as_f64().unwrap();
    assert!(sent >= 2.0 * 1024.0 * 1024.0, "TCP sent {sent} bytes");
    assert!(received >= 1e6, "TCP received {received} bytes");
    ok(down);
    assert!(ours().is_empty(), "left behind: {:?}", ours());
    let _ = tmp;
}

/// Kills a child on drop.
struct Reaper(Child);
impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gc_cleans_up_after_a_killed_run(tmp: &Path) {
    // An endless run (1 TB flows, no duration) killed with SIGKILL: nothing of its
    // own cleanup runs.
    let mut child = fablab()
        .args([
            "run",
            "scenarios/quickstart.toml",
            "--mode",
            "emu",
            "--set",
            "traffic.flow_bytes=1000000000000",
            "--out",
        ])
        .arg(tmp.join("killed"))
        .args(SLOW)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !ours().iter().any(|n| n == "fl-s5") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the testbed never came up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!ours().is_empty(), "a killed run leaves its namespaces");
    let gc = ok(fablab().args(["testbed", "gc"]).output().unwrap());
    assert!(gc.contains("removed namespace fl-s0"), "{gc}");
    assert!(ours().is_empty(), "gc left: {:?}", ours());
    let again = ok(fablab().args(["testbed", "gc"]).output().unwrap());
    assert!(again.contains("nothing to remove"), "{again}");
}

#[test]
fn emu_on_network_namespaces() {
    if !privileged() {
        return;
    }
    if cfg!(debug_assertions) {
        panic!(
            "these tests hold the emu datapath to wall-clock link rates, which a debug build \
         cannot keep up with; run them optimized: cargo test --release -p fablab --test emu \
         (scripts/test.sh does)"
        );
    }
    // Nothing of a previous, crashed test may be in the way.
    let _ = fablab().args(["testbed", "gc"]).output();
    let tmp = tempfile::tempdir().unwrap();
    quickstart_matches_sim(tmp.path());
    ecmp_vs_spray_matches_sim(tmp.path());
    ping_and_tcp_cross_a_spraying_fabric(tmp.path());
    gc_cleans_up_after_a_killed_run(tmp.path());
}
