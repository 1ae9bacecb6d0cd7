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

/// Quickstart in emu delivers what sim delivers, on each packet I/O backend, and
/// `--io auto` (the default) picks AF_XDP, which scripts/setup.sh makes available.
fn quickstart_matches_sim(tmp: &Path) {
    let sim = tmp.join("sim");
    ok(fablab()
        .args(["run", "scenarios/quickstart.toml", "--out"])
        .arg(&sim)
        .args(SLOW)
        .output()
        .unwrap());
    let s = summary(&sim);
    for (io, backend) in [("auto", "afxdp"), ("afpacket", "afpacket")] {
        let emu = tmp.join(format!("emu-{io}"));
        ok(fablab()
            .args([
                "run",
                "scenarios/quickstart.toml",
                "--mode",
                "emu",
                "--io",
                io,
            ])
            .arg("--out")
            .arg(&emu)
            .args(SLOW)
            .output()
            .unwrap());
        let e = summary(&emu);
        assert_eq!(e["mode"], "emu");
        assert_eq!(e["emu"]["backend"], backend, "--io {io}");
        let (es, ss) = (&e["summary"], &s["summary"]);
        assert_eq!(es["flows_finished"], es["flows_total"], "{es}");
        assert_eq!(es["delivered_digest"], es["expected_digest"], "{es}");
        assert_eq!(
            es["delivered_digest"], ss["delivered_digest"],
            "emu ({backend}) delivered other bytes than sim"
        );
        assert!(ours().is_empty(), "left behind: {:?}", ours());
    }
}

/// Quickstart in xdp mode (switches as XDP programs, hosts on AF_XDP) delivers what
/// sim delivers, reports the switches' counters, and leaves no program behind.
fn quickstart_in_xdp_mode_matches_sim(tmp: &Path) {
    let dir = tmp.join("xdp");
    ok(fablab()
        .args(["run", "scenarios/quickstart.toml", "--mode", "xdp", "--out"])
        .arg(&dir)
        .args(SLOW)
        .output()
        .unwrap());
    let (x, s) = (summary(&dir), summary(&tmp.join("sim")));
    assert_eq!(x["mode"], "xdp");
    let (xs, ss) = (&x["summary"], &s["summary"]);
    assert_eq!(xs["flows_finished"], xs["flows_total"], "{xs}");
    assert_eq!(
        xs["delivered_digest"], ss["delivered_digest"],
        "xdp delivered other bytes than sim"
    );
    let leaf0 = &x["xdp"]["switches"]["leaf0"];
    let n = |k: &str| leaf0[k].as_u64().unwrap();
    // Four flows leave leaf0's hosts: every data packet gets its INT block there.
    assert!(n("int_source") >= 4 * 4_000_000 / 4096, "{leaf0}");
    assert!(n("forwarded") > n("int_source"), "data and ACKs: {leaf0}");
    assert_eq!(n("bad_ipv4") + n("not_ipv4") + n("no_route"), 0, "{leaf0}");
    let tx: u64 = x["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tx_bytes"].as_u64().unwrap())
        .sum();
    assert!(
        tx > 2 * 32_000_000,
        "the virtual queues counted the traffic: {tx}"
    );
    assert!(ours().is_empty(), "left behind: {:?}", ours());
    no_xdp_programs_left();
}

/// Link faults in xdp mode: a leaf-spine link down for a while and a lossy one;
/// every byte still arrives once and in order (sim's digest), and the switches
/// counted both kinds of loss.
fn xdp_mode_applies_faults(tmp: &Path) {
    let scenario = tmp.join("faults.toml");
    let mut text = std::fs::read_to_string(repo().join("scenarios/quickstart.toml")).unwrap();
    text.push_str(
        "\n[[faults]]\nat_us = 1000\nlink = [\"leaf0\", \"spine1\"]\nkind = \"link-down\"\n\
         \n[[faults]]\nat_us = 2000\nlink = [\"leaf1\", \"spine2\"]\nkind = \"loss\"\nloss = 0.01\n\
         \n[[faults]]\nat_us = 20000\nlink = [\"leaf0\", \"spine1\"]\nkind = \"link-up\"\n",
    );
    std::fs::write(&scenario, text).unwrap();
    let (sim, xdp) = (tmp.join("faults-sim"), tmp.join("faults-xdp"));
    ok(fablab()
        .arg("run")
        .arg(&scenario)
        .arg("--out")
        .arg(&sim)
        .output()
        .unwrap());
    ok(fablab()
        .arg("run")
        .arg(&scenario)
        .args(["--mode", "xdp", "--out"])
        .arg(&xdp)
        .output()
        .unwrap());
    let (x, s) = (summary(&xdp), summary(&sim));
    assert_eq!(x["summary"]["flows_finished"], x["summary"]["flows_total"]);
    assert_eq!(
        x["summary"]["delivered_digest"],
        s["summary"]["delivered_digest"]
    );
    let total = |k: &str| -> u64 {
        x["xdp"]["switches"]
            .as_object()
            .unwrap()
            .values()
            .map(|c| c[k].as_u64().unwrap())
            .sum()
    };
    assert!(total("link_loss") > 0, "the lossy link lost frames");
    assert!(
        total("no_route") > 0,
        "spine1 had no way to leaf0 while the link was down"
    );
    assert!(ours().is_empty(), "left behind: {:?}", ours());
}

/// One run of `scenarios/ecmp-vs-spray.toml` with `gbps` links: its results.json.
fn ecmp_vs_spray(
    tmp: &Path,
    lb: &str,
    mode: &str,
    gbps: &str,
    threads: &str,
    attempt: u32,
) -> serde_json::Value {
    let dir = tmp.join(format!("fidelity-{lb}-{mode}-{gbps}-{threads}-{attempt}"));
    let mut c = fablab();
    c.args(["run", "scenarios/ecmp-vs-spray.toml", "--mode", mode])
        .args(["--set", &format!("switch.lb={lb}")])
        .args(["--set", &format!("topology.host_link_gbps={gbps}")])
        .args(["--set", &format!("topology.fabric_link_gbps={gbps}")])
        // Long enough that the first round trips, when every flow starts at once, weigh
        // little.
        .args(["--set", "sim.duration_us=3000000", "--out"])
        .arg(&dir);
    if mode == "emu" {
        c.args(["--threads", threads]);
    }
    ok(c.output().unwrap());
    summary(&dir)
}

/// `scenarios/ecmp-vs-spray.toml` in emu against sim: ECMP stays clearly below
/// spraying, as in sim, and with `fidelity` for every switch policy the emu's
/// efficiency is within 10% of sim's. At 50 Mb/s links one datapath thread carries
/// the fabric with room to spare, so fidelity is asserted there. At 200 Mb/s it
/// takes both cores of this 2-core machine, and whether they have that to spare
/// depends on the day (spray-rr with 2 threads measured 0.94-0.96 of sim in one
/// session, 0.68-0.70 with the same code in another, on an equally idle machine):
/// the figure is printed, not asserted, as the standards ask of throughput the
/// machine may not have. An emu run that misses while it reports that the machine
/// stalled its loop (`emu.stalls`: the link emulation was off for a millisecond or
/// more) measured the machine, not the fabric, and is run again, up to three times.
fn ecmp_vs_spray_matches_sim(tmp: &Path, gbps: &str, threads: &str, fidelity: bool) {
    let mut eff = Vec::new();
    for lb in ["ecmp", "spray-rr", "adaptive"] {
        let sim = ecmp_vs_spray(tmp, lb, "sim", gbps, threads, 0)["summary"]["efficiency"]
            .as_f64()
            .unwrap();
        let mut attempt = 0;
        let emu = loop {
            let r = ecmp_vs_spray(tmp, lb, "emu", gbps, threads, attempt);
            let emu = r["summary"]["efficiency"].as_f64().unwrap();
            eprintln!(
                "ecmp-vs-spray {lb} at {gbps} Gb/s, {threads} thread(s): sim {sim:.3}, emu {emu:.3}"
            );
            if !fidelity || (emu - sim).abs() <= 0.1 * sim {
                break emu;
            }
            let stalls = r["emu"]["stalls"].as_u64().unwrap();
            assert!(
                stalls > 0 && attempt < 3,
                "{lb} at {gbps} Gb/s: emu efficiency {emu:.3} is not within 10% of sim's \
                 {sim:.3}: {}\n{}",
                r["summary"],
                r["emu"]["late_max_us"]
            );
            eprintln!("  the machine stalled the emu loop {stalls} times; once more");
            attempt += 1;
        };
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

/// Garbage frame `k` of the hostile-input test: random bytes, a fablab data frame with
/// a bad ICRC, a truncated fablab frame, and RoCEv2's UDP port with a random payload.
fn garbage(k: u64, rng: &mut u64) -> Vec<u8> {
    use fablab_dataplane::codec;
    use fablab_dataplane::packet::Packet;
    use fablab_dataplane::wire::addr::port_mac;
    let mut next = || {
        // xorshift64*: reproducible garbage.
        *rng ^= *rng >> 12;
        *rng ^= *rng << 25;
        *rng ^= *rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let (me, leaf) = (port_mac(0, 0), port_mac(8, 0));
    let valid = |payload: usize| {
        let pkt = Packet::data(0, 3, 0, 7, payload as u32);
        let mut buf = vec![0u8; 9216];
        let n = codec::encode(&pkt, &vec![0xab; payload], false, me, leaf, &mut buf).unwrap();
        buf.truncate(n);
        buf
    };
    match k % 4 {
        0 => {
            let len = 14 + (next() % 1500) as usize;
            (0..len).map(|_| next() as u8).collect()
        }
        1 => {
            let mut f = valid(1 + (next() % 1000) as usize);
            let last = f.len() - 1;
            f[last] ^= 0x5a; // the ICRC's last byte
            f
        }
        2 => {
            let mut f = valid(1 + (next() % 1000) as usize);
            let cut = 14 + (next() % (f.len() as u64 - 14)) as usize;
            f.truncate(cut);
            f
        }
        _ => {
            let mut f = valid(64);
            for b in &mut f[42..] {
                *b = next() as u8; // BTH, extension headers and payload
            }
            f
        }
    }
}

/// Garbage from h0's side of its link, sent from a raw socket into leaf0's port 0
/// while quickstart runs in emu: every flow still delivers exactly its bytes, and
/// the switch drops every garbage frame, counted by reason, and nothing else.
fn garbage_into_a_switch_port(tmp: &Path) {
    use fablab::io::{AfPacket, AfPacketConfig, PacketIo};
    let dir = tmp.join("hostile");
    let child = fablab()
        .args(["run", "scenarios/quickstart.toml", "--mode", "emu"])
        .args(["--set", "traffic.flow_bytes=20000000"])
        .args(["--set", "topology.host_link_gbps=0.1"])
        .args(["--set", "topology.fabric_link_gbps=0.1", "--out"])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_testbed();
    // The testbed exists before the datapath runs (its sockets open, its loop
    // starts): garbage sent now would only fill the switch port's receive ring. The
    // first frame the switch sends h0 (an ACK) shows it forwarding. (A socket of our
    // own on h0's interface would not see it: fablab's XDP program hands every
    // arriving frame to fablab's AF_XDP socket, but the interface counts it.)
    let t = Instant::now();
    while rx_packets("fl-h0", "fl-h0p0") == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the switch never forwarded"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    const FRAMES: u64 = 4000;
    let sent = fablab_testbed::in_netns("fl-h0", || -> std::io::Result<u64> {
        let mut io = AfPacket::open("fl-h0p0", &AfPacketConfig::default())?;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for k in 0..FRAMES {
            let f = garbage(k, &mut rng);
            while !io.send(&f)? {
                let _ = io.flush();
                std::thread::sleep(Duration::from_millis(1));
            }
            if k % 10 == 9 {
                let _ = io.flush();
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        loop {
            match io.flush() {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => return Err(e),
            }
        }
        assert_eq!(io.stats().tx_errors, 0);
        Ok(io.stats().tx_frames)
    })
    .unwrap()
    .unwrap();
    assert_eq!(sent, FRAMES);
    let out = child.wait_with_output().unwrap();
    ok(out);
    let r = summary(&dir);
    let (s, emu) = (&r["summary"], &r["emu"]);
    assert_eq!(s["flows_finished"], s["flows_total"], "{s}");
    assert_eq!(s["delivered_digest"], s["expected_digest"], "{s}");
    let io = &emu["io"];
    let (port, host) = (&io["fl-s0p0"], &io["fl-h0p0"]);
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    // Every frame that entered leaf0's port 0 was read: h0's own and the garbage.
    assert_eq!(n(port, "rx_kernel_drops"), 0, "{port}");
    assert_eq!(
        n(port, "rx_frames"),
        n(host, "tx_frames") + FRAMES,
        "leaf0 port 0 received h0's frames and the garbage, nothing else: {port} {host}"
    );
    let drops = emu["switch_rx_dropped"].as_object().unwrap();
    let counted: u64 = drops.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(
        counted, FRAMES,
        "every garbage frame is dropped and counted once: {drops:?}"
    );
    assert!(drops.len() >= 3, "dropped for several reasons: {drops:?}");
    assert!(
        emu["host_rx_dropped"].as_object().unwrap().is_empty(),
        "no garbage reached a host: {}",
        emu["host_rx_dropped"]
    );
    eprintln!("garbage dropped by reason: {drops:?}");
    assert!(ours().is_empty(), "left behind: {:?}", ours());
}

/// `--pcap all` writes one pcap per interface that tshark reads: on leaf0's port 0
/// every frame the port received or sent, RoCEv2 frames decoded down to the BTH
/// opcode, frames carrying INT as UDP to fablab's INT port (Wireshark has no INT
/// dissector).
fn pcap_is_read_by_tshark(tmp: &Path) {
    let dir = tmp.join("pcap");
    ok(fablab()
        .args([
            "run",
            "scenarios/quickstart.toml",
            "--mode",
            "emu",
            "--pcap",
            "all",
        ])
        .args([
            "--set",
            "traffic.flow_bytes=200000",
            "--set",
            "nic.int=on",
            "--out",
        ])
        .arg(&dir)
        .args(SLOW)
        .output()
        .unwrap());
    let io = &summary(&dir)["emu"]["io"]["fl-s0p0"];
    let frames = io["rx_frames"].as_u64().unwrap() + io["tx_frames"].as_u64().unwrap();
    let pcap = dir.join("pcap").join("fl-s0p0.pcap");
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args([
            "-T",
            "fields",
            "-e",
            "udp.dstport",
            "-e",
            "infiniband.bth.opcode",
        ])
        .output()
        .expect("tshark (scripts/setup.sh installs it)");
    let text = ok(out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len() as u64,
        frames,
        "pcap frames vs the port's counters"
    );
    let (mut roce, mut int) = (0, 0);
    for l in &lines {
        match l.split('\t').collect::<Vec<_>>()[..] {
            ["4791", op] if !op.is_empty() => roce += 1,
            ["4792", _] => int += 1,
            _ => panic!("tshark read a frame as neither RoCEv2 nor INT over UDP: {l:?}"),
        }
    }
    assert!(roce > 0 && int > 0, "{roce} RoCEv2 and {int} INT frames");
    assert!(ours().is_empty(), "left behind: {:?}", ours());
}

/// Runs `fablab bench ARGS` and checks that every `rows` forwarder has a row per
/// frame size with positive offered and forwarded rates, that the table compares
/// them (`ratios`), and that nothing is left behind.
fn bench_rows(args: &[&str], rows: &[&str], ratios: &[&str]) {
    let out = ok(fablab()
        .arg("bench")
        .args(args)
        .args(["--sizes", "64,1500", "--seconds", "0.3"])
        .output()
        .unwrap());
    eprintln!("{out}");
    for size in ["64 B", "1500 B"] {
        for fwd in rows {
            let row = out
                .lines()
                .find(|l| l.trim_start().starts_with(size) && l.contains(&format!("{fwd} ")))
                .unwrap_or_else(|| panic!("no {size} {fwd} row:\n{out}"));
            // offered, forwarded: both positive.
            let mpps: Vec<f64> = row
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            assert!(mpps.len() >= 4 && mpps[1] > 0.0 && mpps[2] > 0.0, "{row}");
        }
    }
    for r in ratios {
        assert!(out.contains(r), "no {r:?}:\n{out}");
    }
    assert!(ours().is_empty(), "left behind: {:?}", ours());
}

/// `fablab bench switch` measures the kernel and fablab on both backends in one run.
fn bench_switch_measures_both_forwarders() {
    bench_rows(
        &["switch"],
        &["kernel", "fablab afxdp", "fablab afpacket"],
        &["fablab afxdp ÷ kernel", "fablab afpacket ÷ kernel"],
    );
}

/// `fablab bench xdp` measures the bare redirect and the XDP switch in one run.
fn bench_xdp_measures_both_programs() {
    bench_rows(
        &["xdp"],
        &["bare redirect", "fl_switch"],
        &["fl_switch ÷ bare redirect"],
    );
    no_xdp_programs_left();
}

/// Sends 400 UDP datagrams from h0 to h7's port 5201 through a running testbed;
/// returns how many arrived, from how many source ports, and how many datagrams
/// each spine took from leaf0 (its port 0's receive counter, before and after).
fn udp_through_testbed() -> (usize, usize, Vec<u64>) {
    use std::net::UdpSocket;
    let spines = || -> Vec<u64> {
        (2..6)
            .map(|s| rx_packets(&format!("fl-s{s}"), &format!("fl-s{s}p0")))
            .collect()
    };
    let before = spines();
    let (got, ports) = std::thread::scope(|sc| {
        let rx = sc.spawn(|| {
            fablab_testbed::in_netns("fl-h7", || {
                let sock = UdpSocket::bind("0.0.0.0:5201").unwrap();
                sock.set_read_timeout(Some(Duration::from_millis(1500)))
                    .unwrap();
                let (mut n, mut ports) = (0, std::collections::BTreeSet::new());
                let mut buf = [0u8; 2048];
                while let Ok((_, from)) = sock.recv_from(&mut buf) {
                    n += 1;
                    ports.insert(from.port());
                }
                (n, ports.len())
            })
            .unwrap()
        });
        std::thread::sleep(Duration::from_millis(200));
        fablab_testbed::in_netns("fl-h0", || {
            let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..400 {
                sock.send_to(&[7u8; 1000], "10.1.0.7:5201").unwrap();
                std::thread::sleep(Duration::from_micros(500));
            }
        })
        .unwrap();
        rx.join().unwrap()
    });
    let after = spines();
    (
        got,
        ports,
        after.iter().zip(&before).map(|(a, b)| a - b).collect(),
    )
}

/// `fablab testbed up --xdp`: the switches are XDP programs, the hosts their
/// kernels. Ping crosses; a UDP sender that keeps one source port stays on one
/// spine under ECMP, and with `--spray-ports` (fl_tc_spray on the hosts' egress)
/// its datagrams leave with 8 entropies and spread over the spines, every one
/// delivered.
fn testbed_xdp_sprays_unmodified_senders() {
    for spray in [false, true] {
        let mut args = vec![
            "testbed",
            "up",
            "scenarios/quickstart.toml",
            "--set",
            "switch.lb=ecmp",
            "--xdp",
        ];
        if spray {
            args.extend(["--spray-ports", "5201"]);
        }
        ok(fablab().args(&args).output().unwrap());
        let ping = Command::new("ip")
            .args([
                "netns", "exec", "fl-h0", "ping", "-c", "3", "-i", "0.2", "10.1.0.7",
            ])
            .output()
            .unwrap();
        let (got, ports, per_spine) = udp_through_testbed();
        ok(fablab().args(["testbed", "down"]).output().unwrap());
        assert!(ping.status.success(), "ping across XDP switches failed");
        eprintln!("spray {spray}: {got} datagrams, {ports} source ports, per spine {per_spine:?}");
        assert_eq!(got, 400, "every datagram arrives");
        let used = per_spine.iter().filter(|&&n| n >= 40).count();
        if spray {
            assert_eq!(ports, 8, "8 entropies");
            assert!(used >= 2, "sprayed over the spines: {per_spine:?}");
        } else {
            assert_eq!(ports, 1);
            assert_eq!(used, 1, "one flow, one spine: {per_spine:?}");
        }
        assert!(ours().is_empty(), "left behind: {:?}", ours());
    }
    no_xdp_programs_left();
}

/// Waits until a run's testbed (quickstart's: `fl-s5` is its last namespace) exists.
fn wait_for_testbed() {
    let t = Instant::now();
    while !ours().iter().any(|n| n == "fl-s5") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the testbed never came up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The frames interface `ifname` in namespace `ns` has received (0 while it does not
/// exist).
fn rx_packets(ns: &str, ifname: &str) -> u64 {
    let out = Command::new("ip")
        .args(["-n", ns, "-j", "-s", "link", "show", ifname])
        .output()
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v[0]["stats64"]["rx"]["packets"].as_u64())
        .unwrap_or(0)
}

/// Waits (up to 5 s: the kernel frees programs after an RCU grace period) until no
/// fablab XDP program is loaded, or fails.
fn no_xdp_programs_left() {
    let t = Instant::now();
    while xdp_programs_loaded() > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{} fablab XDP programs still loaded",
            xdp_programs_loaded()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many of fablab's XDP programs the kernel holds.
fn xdp_programs_loaded() -> usize {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .filter(|p| {
            matches!(
                p.name_as_str(),
                Some(
                    "fl_xsk_redirect"
                        | "fl_switch"
                        | "fl_gen"
                        | "fl_bare_redirect"
                        | "fl_sink"
                        | "fl_tc_spray"
                )
            )
        })
        .count()
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
    wait_for_testbed();
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!ours().is_empty(), "a killed run leaves its namespaces");
    let gc = ok(fablab().args(["testbed", "gc"]).output().unwrap());
    assert!(gc.contains("removed namespace fl-s0"), "{gc}");
    assert!(ours().is_empty(), "gc left: {:?}", ours());
    // The killed run's XDP programs went with its descriptors (the kernel frees
    // them after an RCU grace period).
    no_xdp_programs_left();
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
    quickstart_in_xdp_mode_matches_sim(tmp.path());
    xdp_mode_applies_faults(tmp.path());
    ecmp_vs_spray_matches_sim(tmp.path(), "0.05", "1", true);
    ecmp_vs_spray_matches_sim(tmp.path(), "0.2", "2", false);
    garbage_into_a_switch_port(tmp.path());
    pcap_is_read_by_tshark(tmp.path());
    bench_switch_measures_both_forwarders();
    bench_xdp_measures_both_programs();
    ping_and_tcp_cross_a_spraying_fabric(tmp.path());
    testbed_xdp_sprays_unmodified_senders();
    gc_cleans_up_after_a_killed_run(tmp.path());
}
