//! The plugin's binary is the fablab CLI: it runs a scenario with `nic.cc = "aimd-int"`.

use std::path::Path;
use std::process::Command;

/// Runs the incast scenario with `cc` and returns results.json's summary.
fn incast(repo: &Path, cc: &str) -> serde_json::Value {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_aimd-int-cc"))
        .current_dir(repo)
        .args(["run", "scenarios/incast.toml", "--set"])
        .arg(format!("nic.cc={cc}"))
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    r["summary"].clone()
}

#[test]
fn the_plugin_runs_a_scenario_end_to_end() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let s = incast(&repo, "aimd-int");
    assert_eq!(s["flows_finished"], s["flows_total"]);
    assert_eq!(s["delivered_digest"], s["expected_digest"]);
    // The plugin reacts to INT: its queues stay far below those of the `none`
    // baseline, which runs the incast at line rate into megabytes of queue.
    let base = incast(&repo, "none");
    let p99 = |s: &serde_json::Value| s["queue_bytes"]["p99"].as_f64().unwrap();
    assert!(p99(&s) * 3.0 < p99(&base), "aimd-int {s}\nnone {base}");
    // And the CLI lists it.
    let v = Command::new(env!("CARGO_BIN_EXE_aimd-int-cc"))
        .arg("version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).contains("aimd-int"));
    // An unknown parameter is refused by name.
    let bad = Command::new(env!("CARGO_BIN_EXE_aimd-int-cc"))
        .current_dir(&repo)
        .args([
            "run",
            "scenarios/incast.toml",
            "--set",
            "nic.cc=aimd-int",
            "--set",
            "nic.cc_params.gamma=1",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no parameter `gamma`"));
}
