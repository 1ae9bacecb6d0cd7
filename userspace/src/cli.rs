//! The `fablab` command line. [`main`] is also the library entry point, so a crate
//! that embeds fablab gets the whole CLI.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing::debug;

use std::io::IsTerminal as _;

use fablab_dataplane::cc::Registry;

use anyhow::Context as _;

use crate::emu;
use crate::frames;
use crate::run;
use crate::scenario::Scenario;

/// Exit code of a command that could not do its job (bad input, I/O error).
pub const EXIT_FAILURE: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "fablab",
    version,
    about = "Per-packet spraying, INT telemetry, reorder buffers and programmable congestion control for AI Ethernet fabrics",
    long_about = "fablab runs one sans-IO NIC/switch datapath three ways: a deterministic \
                  simulator (sim, the default), a userspace datapath on veth/netns testbeds \
                  (emu) and eBPF/XDP programs in the kernel (xdp).\n\n\
                  Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more.",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Discrete-event simulation on a virtual clock (no root needed).
    Sim,
    /// Userspace datapath on network namespaces and veth pairs (root).
    Emu,
    /// Switches as eBPF/XDP programs on network namespaces (root).
    Xdp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Io {
    /// AF_XDP where available, else AF_PACKET.
    Auto,
    /// AF_XDP sockets in copy mode, fed by an XDP program (needs clang and
    /// libbpf-dev at build time: scripts/setup.sh).
    Afxdp,
    /// AF_PACKET sockets with memory-mapped rings.
    Afpacket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Trace {
    /// Congestion-control decisions (DIR/cc_trace.csv).
    Cc,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario and write DIR/results.json.
    Run {
        /// Scenario file (TOML), e.g. scenarios/quickstart.toml.
        scenario: PathBuf,
        /// Where the fabric runs.
        #[arg(long, value_enum, default_value_t = Mode::Sim)]
        mode: Mode,
        /// Seed for every random choice (overrides the scenario's `seed`).
        #[arg(long)]
        seed: Option<u64>,
        /// Output directory [default: runs/<scenario>-<timestamp>/].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Override a scenario key, e.g. --set switch.lb=adaptive (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Extra output: `cc` writes DIR/cc_trace.csv, every change of every flow's
        /// window and rate with the signal that caused it.
        #[arg(long, value_enum, value_name = "WHAT")]
        trace: Vec<Trace>,
        /// emu: packet I/O backend. `auto` takes AF_XDP where it is available and
        /// falls back to AF_PACKET, saying why.
        #[arg(long, value_enum, default_value_t = Io::Auto)]
        io: Io,
        /// emu: write what the datapath saw on a port to DIR/pcap/<interface>.pcap:
        /// an interface (fl-s0p1), a switch port (leaf0:1) or `all`.
        #[arg(long, value_name = "PORT_OR_ALL")]
        pcap: Option<String>,
        /// emu: datapath threads. 2 runs the hosts' NICs and the switches on
        /// separate cores: more traffic before the CPU limits, but more late
        /// wake-ups on a small VM (docs/emu.md). Runs with PFC use 1.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
        threads: u8,
    },
    /// Run variants of a scenario and print one table, a row per variant.
    Compare {
        /// Scenario file (TOML).
        scenario: PathBuf,
        /// The key to vary and its values, e.g. --vary switch.lb=ecmp,spray-rr,adaptive.
        #[arg(long, value_name = "KEY=V1,V2,...")]
        vary: String,
        /// Override a scenario key for every variant (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Build, tear down or clean up network-namespace testbeds (root).
    Testbed {
        #[command(subcommand)]
        action: TestbedAction,
    },
    /// Write or decode pcap files of fablab frames.
    Frames {
        #[command(subcommand)]
        action: FramesAction,
    },
    /// Measure the datapath (root).
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Print version and what this build can do.
    Version,
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// Frames through one emulated switch (INT on, adaptive choice) against the
    /// kernel's IPv4 forwarding between the same namespaces, same generator, same
    /// run: Mpps, busy cores, and their ratios.
    Switch {
        /// Frame sizes in bytes, Ethernet header included, FCS excluded.
        #[arg(long, value_delimiter = ',', default_values_t = [64, 1500])]
        sizes: Vec<usize>,
        /// Seconds of counting per measurement (after 0.2 s of warm-up).
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// The switch's packet I/O: `auto` measures AF_XDP (where available) and
        /// AF_PACKET, one after the other.
        #[arg(long, value_enum, default_value_t = Io::Auto)]
        io: Io,
    },
    /// Frames through the XDP switch (fl_switch: INT on, adaptive choice) against a
    /// bare XDP_REDIRECT program on the same namespaces, same in-kernel generator,
    /// same run: Mpps and their ratio.
    Xdp {
        /// Frame sizes in bytes, Ethernet header included, FCS excluded.
        #[arg(long, value_delimiter = ',', default_values_t = [64, 1500])]
        sizes: Vec<usize>,
        /// Seconds of counting per measurement (after 0.2 s of warm-up).
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
}

/// How `fablab testbed up` runs the fabric.
#[derive(Debug, Clone, clap::Args)]
struct ServeFlags {
    /// Run the switches as XDP programs (fl_switch) instead of in userspace.
    #[arg(long)]
    xdp: bool,
    /// Spray the hosts' own UDP traffic to these destination ports per packet, with
    /// the TC program fl_tc_spray on every host's egress (e.g. 4791, or 5201 for
    /// iperf3 -u; LO-HI for a range).
    #[arg(long, value_name = "PORT[-PORT]", value_parser = parse_ports)]
    spray_ports: Option<(u16, u16)>,
}

impl ServeFlags {
    fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.xdp {
            a.push("--xdp".into());
        }
        if let Some((lo, hi)) = self.spray_ports {
            a.push("--spray-ports".into());
            a.push(format!("{lo}-{hi}"));
        }
        a
    }
}

fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let p = |x: &str| {
        x.trim()
            .parse::<u16>()
            .map_err(|_| format!("{x:?} is not a UDP port (0..=65535)"))
    };
    let (lo, hi) = (p(lo)?, p(hi)?);
    if lo > hi {
        return Err(format!("{lo}-{hi}: the first port is above the last"));
    }
    Ok((lo, hi))
}

#[derive(Debug, Subcommand)]
enum TestbedAction {
    /// Build a scenario's fabric as fl- namespaces and veths and leave it running:
    /// a background process runs its switches (log: /run/fl-testbed.log), so
    /// `ip netns exec fl-h0 ping 10.1.0.1` crosses the fabric.
    Up {
        scenario: PathBuf,
        /// Override a scenario key (repeatable), as for `run`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        #[command(flatten)]
        serve: ServeFlags,
    },
    /// Stop the testbed's switches and remove every fl- namespace and link.
    Down,
    /// Remove every fl- namespace and link (and a leftover switch process) that a
    /// crashed or killed run left behind.
    Gc,
    /// Run the switches of a testbed built by `up` until SIGTERM (started by `up`).
    #[command(hide = true)]
    Serve {
        scenario: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        #[command(flatten)]
        serve: ServeFlags,
    },
}

#[derive(Debug, Subcommand)]
enum FramesAction {
    /// Write one frame of every kind fablab sends to a pcap (open it in Wireshark).
    Sample { pcap: PathBuf },
    /// Print every frame of a pcap through fablab's parser, INT stacks included.
    Decode { pcap: PathBuf },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Parses the process arguments and runs the command with the built-in
/// congestion-control algorithms.
pub fn main() -> ExitCode {
    main_with(Registry::default())
}

/// Like [`main`], with the algorithms of `registry` (the built-ins plus whatever an
/// embedding crate registered) selectable as `nic.cc`.
pub fn main_with(registry: Registry) -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    debug!(?cli, "parsed command line");
    match dispatch(cli.command, &registry) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn load(
    path: &std::path::Path,
    sets: &[String],
    seed: Option<u64>,
    registry: &Registry,
) -> anyhow::Result<Scenario> {
    let mut s = Scenario::load(path, sets)?;
    if let Some(seed) = seed {
        s.seed = seed;
    }
    if !registry.contains(&s.nic.cc) {
        anyhow::bail!(
            "{}: [nic] cc = {:?}: unknown congestion control (registered: {})",
            path.display(),
            s.nic.cc,
            registry.names().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(s)
}

fn dispatch(command: Command, registry: &Registry) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            scenario,
            mode,
            seed,
            out,
            sets,
            trace,
            io,
            pcap,
            threads,
        } => {
            let s = load(&scenario, &sets, seed, registry)?;
            if mode == Mode::Xdp && threads != 1 {
                anyhow::bail!("--threads: --mode xdp runs the hosts on one thread");
            }
            if mode == Mode::Xdp && io == Io::Afpacket {
                anyhow::bail!(
                    "--io afpacket: in --mode xdp the switches redirect frames into the \
                     hosts' veths, which only an XDP program there receives: the hosts \
                     use AF_XDP"
                );
            }
            if mode == Mode::Sim && pcap.is_some() {
                anyhow::bail!("--pcap captures real frames: it needs --mode emu");
            }
            if mode == Mode::Sim && threads != 1 {
                anyhow::bail!("--threads sets the emu's datapath threads: it needs --mode emu");
            }
            let mut cfg = run::sim_config(&s, &scenario)?;
            cfg.trace_cc = trace.contains(&Trace::Cc);
            let dir = out.unwrap_or_else(|| run::default_out_dir(&s.name));
            let (result, doc, interrupted) = if mode == Mode::Xdp {
                let capture = pcap.map(|which| emu::Capture {
                    dir: dir.join("pcap"),
                    which,
                });
                let (e, counters) = emu::session::run_xdp(&cfg, registry, capture.as_ref())
                    .with_context(|| format!("{}: --mode xdp", scenario.display()))?;
                let result = run::SimRun {
                    report: e.report.clone(),
                    wall: e.wall,
                };
                let mut doc = run::results_json(&s, &scenario, "xdp", &result);
                doc["emu"] = run::emu_json(&e);
                doc["emu"]["backend"] = "afxdp".into();
                doc["xdp"] = run::xdp_json(&counters);
                // Drops the queue counters in the summary do not show: at the
                // program (no route, malformed) and on lossy links.
                let mut dropped: Vec<(&str, u64)> = Vec::new();
                for (_, c) in &counters {
                    for &(name, n) in c {
                        if n == 0 || name == "forwarded" || name.starts_with("int_") {
                            continue;
                        }
                        match dropped.iter_mut().find(|(k, _)| *k == name) {
                            Some((_, t)) => *t += n,
                            None => dropped.push((name, n)),
                        }
                    }
                }
                if !dropped.is_empty() {
                    let list: Vec<String> =
                        dropped.iter().map(|(k, n)| format!("{k} {n}")).collect();
                    eprintln!(
                        "  xdp drops   {} (xdp.switches in results.json)",
                        list.join(", ")
                    );
                }
                for p in &e.pcaps {
                    eprintln!("  capture     {}", p.display());
                }
                (result, doc, e.interrupted)
            } else if mode == Mode::Emu {
                let backend = match io {
                    Io::Afpacket => emu::session::IoBackend::AfPacket,
                    Io::Afxdp => {
                        crate::io::afxdp::probe().context("--io afxdp")?;
                        emu::session::IoBackend::AfXdp
                    }
                    Io::Auto => emu::session::IoBackend::auto(),
                };
                let capture = pcap.map(|which| emu::Capture {
                    dir: dir.join("pcap"),
                    which,
                });
                let e = emu::session::run_emu(
                    &cfg,
                    registry,
                    capture.as_ref(),
                    backend,
                    usize::from(threads),
                )
                .with_context(|| format!("{}: --mode emu", scenario.display()))?;
                let result = run::SimRun {
                    report: e.report.clone(),
                    wall: e.wall,
                };
                let mut doc = run::results_json(&s, &scenario, "emu", &result);
                doc["emu"] = run::emu_json(&e);
                doc["emu"]["backend"] = backend.name().into();
                for p in &e.pcaps {
                    eprintln!("  capture     {}", p.display());
                }
                if e.stalls > 0 {
                    tracing::warn!(
                        "the datapath loop stalled {} times (the longest {:.1} ms late): \
                         link emulation was off while that lasted, so these results \
                         measure this machine as much as the fabric (emu.stalls)",
                        e.stalls,
                        e.late_max as f64 / 1e6
                    );
                }
                (result, doc, e.interrupted)
            } else {
                let result = run::run_sim(
                    &scenario,
                    cfg,
                    registry.clone(),
                    std::io::stderr().is_terminal(),
                )?;
                let doc = run::results_json(&s, &scenario, "sim", &result);
                (result, doc, false)
            };
            let path = run::write_results(&dir, &doc)?;
            println!("{}", run::summary(&s, &result));
            println!("  results     {}", path.display());
            if trace.contains(&Trace::Cc) {
                let t = run::write_cc_trace(&dir, &result.report)?;
                println!(
                    "  cc trace    {} ({} changes)",
                    t.display(),
                    result.report.cc_trace.len()
                );
            }
            if interrupted {
                eprintln!("interrupted: the testbed was removed; results cover the run so far");
                return Ok(ExitCode::from(130));
            }
            let outcome = run::Outcome::of(&s, &result.report);
            if outcome.failed() {
                eprintln!(
                    "error: {}: {}",
                    scenario.display(),
                    outcome.describe(&result.report)
                );
                return Ok(ExitCode::from(run::EXIT_RUN_FAILED));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare {
            scenario,
            vary,
            sets,
        } => {
            let (key, values) = run::parse_vary(&vary)?;
            // Check every variant before running any.
            let mut variants = Vec::new();
            for v in &values {
                let mut all = sets.clone();
                all.push(format!("{key}={v}"));
                let s = load(&scenario, &all, None, registry)?;
                variants.push((format!("{key}={v}"), s));
            }
            let mut rows = Vec::new();
            for (label, s) in &variants {
                eprintln!("running {label} ...");
                let cfg = run::sim_config(s, &scenario)?;
                let result = run::run_sim(
                    &scenario,
                    cfg,
                    registry.clone(),
                    std::io::stderr().is_terminal(),
                )?;
                rows.push(run::compare_row(label, &result.report));
            }
            print!("{}", run::table(&run::COMPARE_HEADER, &rows));
            Ok(ExitCode::SUCCESS)
        }
        Command::Testbed { action } => {
            match action {
                TestbedAction::Up {
                    scenario,
                    sets,
                    serve,
                } => {
                    let s = load(&scenario, &sets, None, registry)?;
                    let cfg = run::sim_config(&s, &scenario)?;
                    let mut args: Vec<String> = vec![
                        "testbed".into(),
                        "serve".into(),
                        scenario.display().to_string(),
                    ];
                    for kv in &sets {
                        args.push("--set".into());
                        args.push(kv.clone());
                    }
                    args.extend(serve.args());
                    if serve.xdp {
                        if let Some(why) = crate::xdp::fabric::unsupported(&cfg) {
                            anyhow::bail!("--xdp: {why}");
                        }
                    }
                    let (plan, pid) = emu::session::testbed_up(&cfg, &args)?;
                    println!(
                        "testbed {} is up: {} namespaces, {} veth pairs; switches run in process {pid} (log {})",
                        s.name,
                        plan.nodes.len(),
                        plan.veths.len(),
                        emu::session::SERVE_LOG_FILE
                    );
                    for n in plan.nodes.iter().filter(|n| n.is_host()) {
                        if let Some(ip) = n.ip {
                            println!("  {:<6} {:<10} {}", n.label, n.ns, ip);
                        }
                    }
                    println!(
                        "try: ip netns exec {} ping -c 3 {}",
                        plan.nodes[0].ns,
                        plan.nodes
                            .iter()
                            .rev()
                            .find_map(|n| n.ip)
                            .map(|ip| ip.to_string())
                            .unwrap_or_default()
                    );
                    println!("remove it with: fablab testbed down");
                }
                TestbedAction::Serve {
                    scenario,
                    sets,
                    serve,
                } => {
                    let s = load(&scenario, &sets, None, registry)?;
                    let cfg = run::sim_config(&s, &scenario)?;
                    emu::session::testbed_serve(&cfg, registry, serve.xdp, serve.spray_ports)?;
                }
                TestbedAction::Down | TestbedAction::Gc => {
                    let removed = emu::session::testbed_down()?;
                    if removed.is_empty() {
                        println!("nothing to remove: no fl- namespace, link or switch process");
                    }
                    for r in removed {
                        println!("removed {r}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Frames { action } => {
            match action {
                FramesAction::Sample { pcap } => {
                    let s = frames::write_samples(&pcap)?;
                    println!("wrote {} frames to {}", s.len(), pcap.display());
                    for (i, f) in s.iter().enumerate() {
                        println!("  {}: {}", i + 1, f.what);
                    }
                }
                FramesAction::Decode { pcap } => {
                    for line in frames::decode(&pcap)? {
                        println!("{line}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            what: BenchWhat::Switch { sizes, seconds, io },
        } => {
            use emu::session::IoBackend;
            let backends = match io {
                Io::Afxdp => {
                    crate::io::afxdp::probe().context("--io afxdp")?;
                    vec![IoBackend::AfXdp]
                }
                Io::Afpacket => vec![IoBackend::AfPacket],
                Io::Auto => match IoBackend::auto() {
                    IoBackend::AfXdp => vec![IoBackend::AfXdp, IoBackend::AfPacket],
                    IoBackend::AfPacket => vec![IoBackend::AfPacket],
                },
            };
            let rows = crate::bench::switch(&sizes, seconds, &backends)?;
            print!("{}", crate::bench::table(&rows));
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            what: BenchWhat::Xdp { sizes, seconds },
        } => {
            let rows = crate::bench::xdp::run(&sizes, seconds)?;
            print!("{}", crate::bench::table(&rows));
            Ok(ExitCode::SUCCESS)
        }
        Command::Version => {
            println!("fablab {}", env!("CARGO_PKG_VERSION"));
            let afxdp = match crate::ebpf::XSK_REDIRECT {
                Ok(_) => "AF_XDP or AF_PACKET".to_string(),
                Err(why) => format!("AF_PACKET only: {why}"),
            };
            let xdp = match crate::ebpf::FL_SWITCH {
                Ok(_) => "xdp".to_string(),
                Err(why) => format!("no xdp: {why}"),
            };
            println!("modes: sim, emu ({afxdp}), {xdp}");
            println!(
                "congestion control: {}",
                registry.names().collect::<Vec<_>>().join(", ")
            );
            println!("wire: RoCEv2 (UDP {}), P4 INT v2.1 INT-MD over UDP (port {}), fablab ACK extension v{}",
                fablab_dataplane::wire::ROCEV2_UDP_PORT,
                fablab_dataplane::wire::INT_UDP_PORT,
                fablab_dataplane::wire::ack::VERSION);
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
