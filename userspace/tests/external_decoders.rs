//! fablab's frames read by independent decoders: Wireshark's tshark (RoCEv2 dissector)
//! and scapy's RoCE layer (an independent ICRC implementation). Both are installed by
//! scripts/setup.sh; if one is missing the test fails and says how to install it.

use std::path::Path;
use std::process::Command;

use fablab::frames::write_samples;
use fablab_dataplane::wire::{INT_UDP_PORT, ROCEV2_UDP_PORT};

fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: run `sudo scripts/setup.sh` (Debian package `{package}`)"
    );
}

#[test]
fn tshark_decodes_psn_ports_and_entropy_as_emitted() {
    require("tshark", "tshark");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("samples.pcap");
    let samples = write_samples(&pcap).unwrap();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-T", "fields", "-E", "separator=,"])
        .args([
            "-e",
            "udp.srcport",
            "-e",
            "udp.dstport",
            "-e",
            "infiniband.bth.psn",
        ])
        .args(["-e", "infiniband.bth.opcode"])
        .output()
        .expect("tshark runs");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), samples.len(), "tshark output:\n{text}");
    let mut roce = 0;
    for (s, row) in samples.iter().zip(&rows) {
        assert_eq!(row[0], s.entropy.to_string(), "{}: entropy", s.what);
        let dst: u16 = row[1].parse().unwrap();
        if dst == ROCEV2_UDP_PORT {
            assert_eq!(row[2], s.psn.to_string(), "{}: PSN", s.what);
            roce += 1;
        } else {
            // INT-carrying frames travel on the INT port; tshark has no INT dissector.
            assert_eq!(dst, INT_UDP_PORT, "{}", s.what);
            assert_eq!(row[2], "", "{}", s.what);
        }
    }
    assert_eq!(roce, samples.len() - 1);
}

#[test]
fn scapy_computes_the_same_icrc() {
    require("/usr/bin/python3", "python3");
    let probe = Command::new("/usr/bin/python3")
        .args(["-c", "import scapy.contrib.roce"])
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "scapy is not installed: run `sudo scripts/setup.sh` (Debian package `python3-scapy`)"
    );
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("samples.pcap");
    let samples = write_samples(&pcap).unwrap();
    // scapy rebuilds every RoCEv2 frame with its own ICRC and prints whether the
    // bytes are identical to fablab's.
    let script = r#"
import sys
from scapy.all import rdpcap, Ether, raw
from scapy.contrib.roce import BTH
for p in rdpcap(sys.argv[1]):
    if not p.haslayer(BTH):
        print("skip")
        continue
    orig = raw(p)
    q = Ether(orig)
    q[BTH].icrc = None
    print("same" if raw(q) == orig else "differs " + orig[-4:].hex() + " " + raw(q)[-4:].hex())
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(Path::new(&pcap))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let verdicts: Vec<&str> = text.lines().collect();
    assert_eq!(verdicts.len(), samples.len());
    assert_eq!(
        verdicts.iter().filter(|v| **v == "same").count(),
        samples.len() - 1,
        "{text}"
    );
    assert_eq!(
        verdicts.iter().filter(|v| **v == "skip").count(),
        1,
        "{text}"
    );
}
