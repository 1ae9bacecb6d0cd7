//! The `fablab` command line. [`main`] is also the library entry point, so a crate
//! that embeds fablab gets the whole CLI.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing::debug;

use crate::frames;
use crate::scenario::Scenario;

/// Exit code of a command that could not do its job (bad input, I/O error).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a command or mode that fablab does not have yet.
pub const EXIT_NOT_AVAILABLE: u8 = 3;

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
    /// Print version and what this build can do.
    Version,
}

#[derive(Debug, Subcommand)]
enum TestbedAction {
    /// Build a scenario's fabric as fl- namespaces and veths, and leave it running.
    Up { scenario: PathBuf },
    /// Remove the testbed `up` built.
    Down,
    /// Remove every fl- namespace, link and program a crashed run left behind.
    Gc,
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

/// Parses the process arguments and runs the command.
pub fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    debug!(?cli, "parsed command line");
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn not_available(what: &str, arrives_with: &str) -> ExitCode {
    eprintln!("fablab: {what} is not available yet: it arrives with {arrives_with}.");
    ExitCode::from(EXIT_NOT_AVAILABLE)
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            scenario,
            mode,
            seed,
            out,
            sets,
        } => {
            let mut s = Scenario::load(&scenario, &sets)?;
            if let Some(seed) = seed {
                s.seed = seed;
            }
            match mode {
                Mode::Emu => return Ok(not_available("--mode emu", "the emu datapath (issue 5)")),
                Mode::Xdp => return Ok(not_available("--mode xdp", "the XDP datapath (issue 6)")),
                Mode::Sim => {}
            }
            println!(
                "scenario {} ({}): {} hosts, seed {}",
                s.name,
                scenario.display(),
                s.host_count(),
                s.seed
            );
            println!("{}", toml::to_string_pretty(&s)?);
            let out = out.map_or_else(
                || "runs/<scenario>-<timestamp>/".into(),
                |p| p.display().to_string(),
            );
            println!(
                "The scenario is valid. The simulator that runs it and writes {out}results.json \
                 arrives with the simulated fabric (issue 3); nothing was run."
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare {
            scenario,
            vary,
            sets,
        } => {
            let (key, values) = vary
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--vary {vary}: expected KEY=V1,V2,..."))?;
            for v in values.split(',') {
                let mut all = sets.clone();
                all.push(format!("{key}={v}"));
                Scenario::load(&scenario, &all)?;
            }
            Ok(not_available(
                "fablab compare",
                "the simulated fabric (issue 3)",
            ))
        }
        Command::Testbed { action } => {
            let what = match action {
                TestbedAction::Up { .. } => "fablab testbed up",
                TestbedAction::Down => "fablab testbed down",
                TestbedAction::Gc => "fablab testbed gc",
            };
            Ok(not_available(what, "the emu datapath (issue 5)"))
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
        Command::Version => {
            println!("fablab {}", env!("CARGO_PKG_VERSION"));
            println!("modes: sim (arrives with issue 3), emu (issue 5), xdp (issue 6)");
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
