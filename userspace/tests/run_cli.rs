//! `fablab run` and `fablab compare` as a user runs them: the binary, real scenario
//! files, results.json on disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fablab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fablab"))
        .current_dir(repo())
        .args(args)
        .output()
        .expect("the fablab binary runs")
}

fn run_to(dir: &Path, scenario: &str, extra: &[&str]) -> Value {
    let out = dir.to_str().unwrap();
    let mut args = vec!["run", scenario, "--out", out];
    args.extend_from_slice(extra);
    let o = fablab(&args);
    assert!(
        o.status.success(),
        "fablab run failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(dir.join("results.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn quickstart_writes_results_with_the_documented_schema() {
    let dir = tempfile::tempdir().unwrap();
    let r = run_to(dir.path(), "scenarios/quickstart.toml", &[]);
    assert_eq!(r["schema_version"], 1);
    assert_eq!(r["mode"], "sim");
    assert_eq!(r["scenario"], "quickstart");
    let s = &r["summary"];
    for key in [
        "goodput_gbps",
        "ideal_goodput_gbps",
        "efficiency",
        "drops",
        "pfc_pauses",
        "retransmits",
        "ooo_packets",
        "reorder_max_depth",
        "delivered_bytes",
        "delivered_digest",
        "events",
        "wall_s",
        "events_per_s",
        "trims",
        "loss_events",
        "mean_flow_rate",
    ] {
        assert!(!s[key].is_null(), "summary.{key} missing");
    }
    assert_eq!(s["outcome"], "complete");
    for key in ["fct_us", "fct_slowdown", "queue_bytes"] {
        for p in ["p50", "p99", "max"] {
            assert!(s[key][p].is_number(), "summary.{key}.{p} missing");
        }
    }
    // Every byte of every flow arrived exactly once, in order.
    assert_eq!(s["delivered_digest"], s["expected_digest"]);
    assert_eq!(s["flows_finished"], s["flows_total"]);
    let flows = r["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 8);
    let bytes: u64 = flows.iter().map(|f| f["bytes"].as_u64().unwrap()).sum();
    assert_eq!(s["delivered_bytes"].as_u64().unwrap(), bytes);
    assert!(flows.iter().all(|f| f["fct_us"].as_f64().unwrap() > 0.0));
    assert!(!r["ports"].as_array().unwrap().is_empty());
    let eff = s["efficiency"].as_f64().unwrap();
    assert!(eff > 0.5 && eff <= 1.0, "{eff}");
}

#[test]
fn same_seed_gives_identical_results_apart_from_wall_time() {
    let strip = |mut v: Value| {
        let s = v["summary"].as_object_mut().unwrap();
        s.remove("wall_s");
        s.remove("events_per_s");
        v
    };
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let args = [
        "--set",
        "switch.lb=spray-random",
        "--set",
        "nic.spray=adaptive",
    ];
    let ra = strip(run_to(a.path(), "scenarios/quickstart.toml", &args));
    let rb = strip(run_to(b.path(), "scenarios/quickstart.toml", &args));
    assert_eq!(ra, rb);
    let mut with_seed = args.to_vec();
    with_seed.extend_from_slice(&["--seed", "2"]);
    let rc = strip(run_to(c.path(), "scenarios/quickstart.toml", &with_seed));
    assert_ne!(
        ra["flows"], rc["flows"],
        "another seed draws another permutation"
    );
}

#[test]
fn bad_scenarios_fail_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(repo().join("scenarios/quickstart.toml"))
        .unwrap()
        .replace("lb = \"spray-rr\"", "lb = \"ecmpp\"");
    std::fs::write(&bad, text).unwrap();
    let o = fablab(&["run", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.toml:") && err.contains("[switch] lb") && err.contains("ecmpp"),
        "{err}"
    );
    let o = fablab(&[
        "run",
        "scenarios/quickstart.toml",
        "--set",
        "nic.cc=hpcc-typo",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown congestion control"));
    // A queue that cannot hold one packet can never forward data.
    let o = fablab(&[
        "run",
        "scenarios/incast-lossy.toml",
        "--set",
        "topology.buffer_bytes=1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("topology.buffer_bytes=1") && err.contains("cannot hold one full-size packet"),
        "{err}"
    );
}

/// Flows that cannot reach their receivers (the only link between the two sides is
/// down for the whole run) never finish: the summary, results.json and the exit
/// status say the run failed, and nothing claims every byte arrived.
#[test]
fn a_run_whose_flows_never_finish_says_so_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("cut.toml");
    std::fs::write(
        &scenario,
        "name = \"cut\"\n\
         [topology]\nkind = \"dumbbell\"\nhosts = 2\n\
         [traffic]\npattern = \"permutation\"\nstride = 2\nflow_bytes = 100000\n\
         [[faults]]\nat_us = 0\nlink = [\"sw0\", \"sw1\"]\nkind = \"link-down\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = fablab(&[
        "run",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{stdout}");
    assert!(!stdout.contains("every byte once"), "{stdout}");
    assert!(stdout.contains("4 of 4 flows did not finish"), "{stdout}");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(r["summary"]["outcome"], "unfinished");
    assert_eq!(r["summary"]["flows_finished"], 0);
    assert!(
        r["summary"]["drops"].as_u64().unwrap() > 0,
        "the dropped packets are counted"
    );
}

#[test]
fn compare_prints_one_row_per_variant() {
    let o = fablab(&[
        "compare",
        "scenarios/quickstart.toml",
        "--vary",
        "switch.lb=ecmp,spray-rr",
        "--set",
        "traffic.flow_bytes=500000",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("variant") && lines[0].contains("efficiency"));
    assert!(lines[1].starts_with("switch.lb=ecmp "));
    assert!(lines[2].starts_with("switch.lb=spray-rr "));
}

#[test]
fn trace_cc_writes_every_window_and_rate_change() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let o = fablab(&[
        "run",
        "scenarios/incast.toml",
        "--set",
        "nic.cc=dcqcn",
        "--trace",
        "cc",
        "--out",
        out,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(dir.path().join("cc_trace.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("time_us,flow,rate_gbps,window_bytes,signal")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(rows.len() > 16, "{} rows", rows.len());
    // DCQCN cuts rates on CNPs and raises them on its timers.
    assert!(rows.iter().any(|r| r[4] == "cnp"));
    assert!(rows.iter().any(|r| r[4] == "timer"));
    let mut last = 0.0;
    for r in &rows {
        let t: f64 = r[0].parse().unwrap();
        assert!(t >= last, "rows are in time order");
        last = t;
        let rate: f64 = r[2].parse().unwrap();
        assert!(rate > 0.0 && rate <= 100.0);
    }
}
