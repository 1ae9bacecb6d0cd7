//! Running a scenario in the simulator: the scenario becomes a [`SimConfig`], the run
//! becomes `results.json` (schema in docs/results.md) and a summary for people.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use fablab_dataplane::cc::Registry;
use fablab_dataplane::nic::spray::SprayPolicy;
use fablab_dataplane::nic::IntRequest as NicInt;
use fablab_dataplane::sim::metrics::Report;
use fablab_dataplane::sim::topology::{TopologyKind as SimTopologyKind, TopologySpec};
use fablab_dataplane::sim::traffic::{Pattern as SimPattern, SizeCdf, TrafficSpec};
use fablab_dataplane::sim::{Fault, FaultKind as SimFaultKind, NicSpec, SimConfig, Simulator};
use fablab_dataplane::switch::{EcnConfig, EcnPoint, LbPolicy, PfcConfig, TrimConfig};
use serde_json::{json, Value};

use crate::scenario::{
    EcnAt, FaultKind, IntRequest, LoadBalancing, Pattern, Scenario, Spraying, TopologyKind,
};

/// Version of the results.json layout; bumped on any change that could break a reader.
pub const SCHEMA_VERSION: u32 = 1;

fn mbps(gbps: f64) -> u32 {
    (gbps * 1000.0).round() as u32
}

/// Turns a validated scenario into the simulator's configuration. `scenario_path`
/// locates files the scenario names (the flow-size CDF).
pub fn sim_config(s: &Scenario, scenario_path: &Path) -> anyhow::Result<SimConfig> {
    let t = &s.topology;
    let kind = match t.kind {
        TopologyKind::Dumbbell => SimTopologyKind::Dumbbell {
            hosts: t.hosts.unwrap_or(1),
        },
        TopologyKind::LeafSpine => SimTopologyKind::LeafSpine {
            leaves: t.leaves.unwrap_or(1),
            spines: t.spines.unwrap_or(1),
            hosts_per_leaf: t.hosts_per_leaf.unwrap_or(1),
        },
        TopologyKind::FatTree => SimTopologyKind::FatTree {
            k: t.k.unwrap_or(2),
        },
    };
    let sw = &s.switch;
    let lb = match sw.lb {
        LoadBalancing::Ecmp => LbPolicy::Ecmp,
        LoadBalancing::SprayRandom => LbPolicy::SprayRandom,
        LoadBalancing::SprayRr => LbPolicy::SprayRr,
        LoadBalancing::Adaptive => LbPolicy::Adaptive,
        LoadBalancing::P2c => LbPolicy::P2c,
        LoadBalancing::Flowlet => LbPolicy::Flowlet {
            gap_ns: sw.flowlet_gap_ns,
        },
    };
    let tr = &s.traffic;
    let pattern = match tr.pattern {
        Pattern::Permutation => SimPattern::Permutation {
            stride: tr.stride,
            senders: tr.senders_limit,
        },
        Pattern::Incast => SimPattern::Incast {
            senders: tr.senders.unwrap_or(1),
        },
        Pattern::AllToAll => SimPattern::AllToAll,
        Pattern::AllreduceRing => SimPattern::AllreduceRing {
            ranks: tr.ranks.unwrap_or(s.host_count()),
        },
        Pattern::Poisson => {
            let rel = tr.cdf.clone().unwrap_or_default();
            let path = match scenario_path.parent() {
                Some(dir) if rel.is_relative() => dir.join(&rel),
                _ => rel.clone(),
            };
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "{}: [traffic] cdf = {:?}: cannot read {}",
                    scenario_path.display(),
                    rel,
                    path.display()
                )
            })?;
            let cdf =
                SizeCdf::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            SimPattern::Poisson {
                load: tr.load.unwrap_or(0.5),
                cdf,
                flows: tr.flows.unwrap_or(1),
            }
        }
    };
    let faults = s
        .faults
        .iter()
        .map(|f| Fault {
            at: (f.at_us * 1e3) as u64,
            link: (f.link[0].clone(), f.link[1].clone()),
            kind: match f.kind {
                FaultKind::LinkDown => SimFaultKind::Down,
                FaultKind::LinkUp => SimFaultKind::Up,
                FaultKind::Loss => SimFaultKind::Loss(f.loss.unwrap_or(0.0)),
                FaultKind::Slow => SimFaultKind::Rate(f.rate_fraction.unwrap_or(1.0)),
            },
        })
        .collect();
    Ok(SimConfig {
        seed: s.seed,
        topology: TopologySpec {
            kind,
            host_rate_mbps: mbps(t.host_link_gbps),
            fabric_rate_mbps: mbps(t.fabric_link_gbps.unwrap_or(t.host_link_gbps)),
            link_delay: t.link_delay_ns,
        },
        buffer_bytes: t.buffer_bytes,
        lb,
        ecn: sw.ecn.then_some(EcnConfig {
            kmin_bytes: sw.ecn_kmin_bytes,
            kmax_bytes: sw.ecn_kmax_bytes,
            pmax: sw.ecn_pmax,
        }),
        ecn_at: match sw.ecn_at {
            EcnAt::Enqueue => EcnPoint::Enqueue,
            EcnAt::Dequeue => EcnPoint::Dequeue,
        },
        pfc: sw.lossless.then_some(PfcConfig {
            xoff_bytes: sw.pfc_xoff_bytes,
            xon_bytes: sw.pfc_xon_bytes,
        }),
        trim: sw.trim.then_some(TrimConfig {
            threshold_bytes: sw.trim_threshold_bytes.unwrap_or(t.buffer_bytes),
        }),
        control_priority: sw.control_priority,
        int: sw.int,
        nic: NicSpec {
            spray: match s.nic.spray {
                Spraying::Fixed => SprayPolicy::Fixed,
                Spraying::PerPacket => SprayPolicy::PerPacket,
                Spraying::Adaptive => SprayPolicy::Adaptive,
            },
            entropies: s.nic.entropies,
            cc: s.nic.cc.clone(),
            cc_params: s.nic.cc_params.clone(),
            mtu: s.nic.mtu_bytes,
            window_bytes: s.nic.window_bytes,
            rto_min: (s.nic.rto_min_us * 1e3) as u64,
            reorder_window: s.nic.reorder_window,
            pacing_slack: 0,
            int: match s.nic.int {
                IntRequest::Auto => NicInt::Auto,
                IntRequest::On => NicInt::On,
                IntRequest::Off => NicInt::Off,
            },
            ack_every_bytes: s.nic.ack_every_bytes,
        },
        traffic: TrafficSpec {
            pattern,
            flow_bytes: tr.flow_bytes.unwrap_or(0),
        },
        faults,
        duration: s.sim.duration_us.map(|d| (d * 1e3) as u64),
        queue_sample_interval: s.sim.queue_sample_ns,
        trace_cc: false,
    })
}

/// A finished simulation.
#[derive(Debug)]
pub struct SimRun {
    pub report: Report,
    pub wall: Duration,
}

impl SimRun {
    pub fn events_per_s(&self) -> f64 {
        self.report.events as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Runs the simulator; shows a progress bar on a terminal once the run has taken a
/// second.
pub fn run_sim(
    scenario_path: &Path,
    cfg: SimConfig,
    registry: Registry,
    progress: bool,
) -> anyhow::Result<SimRun> {
    let cc = cfg.nic.cc.clone();
    let mut sim = Simulator::new(cfg, registry).map_err(|e| {
        // Name where in the scenario the problem is.
        let place = if e.starts_with("fault") {
            "[[faults]]".to_string()
        } else {
            format!("[nic] cc = {cc:?}, [nic.cc_params]")
        };
        anyhow::anyhow!("{}: {place}: {e}", scenario_path.display())
    })?;
    let total = sim.flows().len() as u64;
    let start = Instant::now();
    let mut bar: Option<indicatif::ProgressBar> = None;
    // Run in slices of virtual time so the bar can move.
    let slice = (sim.base_rtt() * 20).max(10_000);
    let mut until = slice;
    while sim.run_until(until) {
        until = sim.now().max(until) + slice;
        if progress && bar.is_none() && start.elapsed() > Duration::from_secs(1) {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} flows  {msg}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar = Some(b);
        }
        if let Some(b) = &bar {
            b.set_position(sim.finished_flows() as u64);
            b.set_message(format!("virtual {:.1} µs", sim.now() as f64 / 1e3));
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let wall = start.elapsed();
    Ok(SimRun {
        report: sim.run(),
        wall,
    })
}

fn pct(p: &fablab_dataplane::sim::metrics::Percentiles) -> Value {
    json!({ "p50": p.p50, "p99": p.p99, "max": p.max })
}

fn opt_pct(p: &Option<fablab_dataplane::sim::metrics::Percentiles>) -> Value {
    p.as_ref().map_or(Value::Null, pct)
}

/// The results.json document.
pub fn results_json(s: &Scenario, scenario_path: &Path, mode: &str, run: &SimRun) -> Value {
    let r = &run.report;
    let flows: Vec<Value> = r
        .flows
        .iter()
        .map(|f| {
            json!({
                "id": f.id,
                "src": f.src,
                "dst": f.dst,
                "bytes": f.bytes,
                "start_us": f.start_ns.map(|t| t as f64 / 1e3),
                "fct_us": f.fct_ns.map(|t| t as f64 / 1e3),
                "ideal_fct_us": f.ideal_fct_ns as f64 / 1e3,
                "delivered_bytes": f.delivered_bytes,
                "retransmits": f.retransmits,
            })
        })
        .collect();
    let ports: Vec<Value> = r
        .ports
        .iter()
        .map(|p| {
            json!({
                "switch": p.switch,
                "port": p.port,
                "peer": p.peer,
                "tx_bytes": p.tx_bytes,
                "drops": p.drops,
                "max_queue_bytes": p.max_queue_bytes,
                "ecn_marks": p.ecn_marks,
                "pfc_pauses_sent": p.pfc_pauses_sent,
                "trims": p.trims,
                "no_route_drops": p.no_route_drops,
            })
        })
        .collect();
    let mut doc = json!({
        "schema_version": SCHEMA_VERSION,
        "scenario": s.name,
        "scenario_file": scenario_path.display().to_string(),
        "mode": mode,
        "seed": s.seed,
        "summary": {
            "goodput_gbps": r.goodput_gbps,
            "ideal_goodput_gbps": r.ideal_goodput_gbps,
            "efficiency": r.efficiency,
            "fct_us": opt_pct(&r.fct_us),
            "fct_slowdown": opt_pct(&r.fct_slowdown),
            "fct_slowdown_short": opt_pct(&r.fct_slowdown_short),
            "queue_bytes": pct(&r.queue_bytes),
            "drops": r.drops,
            "switch_drops": r.switch_drops,
            "link_drops": r.link_drops,
            "pfc_pauses": r.pfc_pauses,
            "retransmits": r.retransmits,
            "spurious_retransmits": r.spurious_retransmits,
            "timeouts": r.timeouts,
            "trims": r.trims,
            "loss_events": r.loss_events,
            "data_packets": r.data_packets,
            "acks_sent": r.acks_sent,
            "mean_flow_rate": r.mean_flow_rate,
            "ooo_packets": r.ooo_packets,
            "duplicate_packets": r.duplicate_packets,
            "reorder_max_depth": r.reorder_max_depth,
            "jain_fairness": r.jain_fairness,
            "delivered_bytes": r.delivered_bytes,
            "delivered_digest": r.delivered_digest,
            "expected_digest": r.expected_digest,
            "flows_total": r.flows_total,
            "flows_finished": r.flows_finished,
            "outcome": Outcome::of(s, r).name(),
            "sim_time_us": r.sim_time_ns as f64 / 1e3,
            "base_rtt_us": r.base_rtt_ns as f64 / 1e3,
            "events": r.events,
            "wall_s": run.wall.as_secs_f64(),
            "events_per_s": run.events_per_s(),
        },
        "flows": flows,
        "ports": ports,
    });
    if let Some(a) = &r.allreduce {
        doc["allreduce"] = json!({
            "ranks": a.ranks,
            "bytes": a.bytes,
            "completion_us": a.completion_us,
            "algbw_gbps": a.algbw_gbps,
            "busbw_gbps": a.busbw_gbps,
        });
    }
    doc
}

/// The xdp-only part of results.json: every XDP switch's counters by reason.
pub fn xdp_json(counters: &crate::xdp::fabric::Counters) -> Value {
    let switches: serde_json::Map<String, Value> = counters
        .iter()
        .map(|(label, c)| {
            let m: serde_json::Map<String, Value> = c
                .iter()
                .map(|(k, v)| ((*k).to_string(), json!(v)))
                .collect();
            (label.clone(), Value::Object(m))
        })
        .collect();
    json!({ "switches": switches })
}

/// The emu-only part of results.json: frames dropped outside the dataplane's queues
/// by reason, and every port's packet I/O counters.
pub fn emu_json(e: &crate::emu::EmuRun) -> Value {
    let io: serde_json::Map<String, Value> =
        e.io.iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    json!({
                        "rx_frames": s.rx_frames,
                        "tx_frames": s.tx_frames,
                        "rx_kernel_drops": s.rx_kernel_drops,
                        "rx_truncated": s.rx_truncated,
                        "tx_errors": s.tx_errors,
                    }),
                )
            })
            .collect();
    json!({
        "interrupted": e.interrupted,
        "late_max_us": e.late_max as f64 / 1e3,
        "stalls": e.stalls,
        "switch_rx_dropped": e.drops.switch,
        "host_rx_dropped": e.drops.host,
        "io": io,
    })
}

/// What a run amounts to: the summary's verdict, `summary.outcome` in results.json
/// and `fablab run`'s exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every flow finished and every byte arrived once, in order.
    Complete,
    /// The scenario's `duration_us` ended the run with flows still running; what
    /// arrived is an exact in-order prefix of each flow.
    StoppedAtDuration,
    /// Flows did not finish although the run had no time limit: they were stuck
    /// (the simulator stops after 1 s of virtual time without progress).
    Unfinished,
    /// A receiver's stream differs from what was sent.
    Mismatch,
}

impl Outcome {
    pub fn of(s: &Scenario, r: &Report) -> Outcome {
        if r.delivered_digest != r.expected_digest || r.order_violations > 0 {
            Outcome::Mismatch
        } else if r.flows_finished == r.flows_total {
            Outcome::Complete
        } else if s.sim.duration_us.is_some() {
            Outcome::StoppedAtDuration
        } else {
            Outcome::Unfinished
        }
    }

    /// Whether the run failed: `fablab run` exits with [`EXIT_RUN_FAILED`].
    pub fn failed(self) -> bool {
        matches!(self, Outcome::Unfinished | Outcome::Mismatch)
    }

    /// The name in results.json.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::StoppedAtDuration => "stopped-at-duration",
            Outcome::Unfinished => "unfinished",
            Outcome::Mismatch => "mismatch",
        }
    }

    /// One line for people.
    pub fn describe(self, r: &Report) -> String {
        let open = r.flows_total - r.flows_finished;
        match self {
            Outcome::Complete => "every byte once, in order".into(),
            Outcome::StoppedAtDuration => format!(
                "an exact in-order prefix of every flow; {open} of {} flows still running \
                 when duration_us ended the run",
                r.flows_total
            ),
            Outcome::Unfinished => format!(
                "FAILED: {open} of {} flows did not finish; what arrived is an exact in-order \
                 prefix",
                r.flows_total
            ),
            Outcome::Mismatch => "FAILED: MISMATCH with what was sent".into(),
        }
    }
}

/// `fablab run`'s exit status for a run that did not deliver what it should have
/// ([`Outcome::failed`]); 1 is an error before or during the run, 130 an interrupted
/// one.
pub const EXIT_RUN_FAILED: u8 = 3;

/// The human summary of a run.
pub fn summary(s: &Scenario, run: &SimRun) -> String {
    let r = &run.report;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}: {} hosts, {} flows ({} finished), seed {}",
        s.name,
        s.host_count(),
        r.flows_total,
        r.flows_finished,
        s.seed
    );
    let _ = writeln!(
        o,
        "  goodput     {:.1} Gb/s of {:.1} ideal  (efficiency {:.3}), mean flow rate {:.3} of the host link",
        r.goodput_gbps, r.ideal_goodput_gbps, r.efficiency, r.mean_flow_rate
    );
    match (&r.fct_us, &r.fct_slowdown) {
        (Some(f), Some(sl)) => {
            let _ = writeln!(
                o,
                "  FCT         p50 {:.1} µs  p99 {:.1} µs  max {:.1} µs   slowdown p50 {:.2} p99 {:.2}",
                f.p50, f.p99, f.max, sl.p50, sl.p99
            );
        }
        _ => {
            let _ = writeln!(o, "  FCT         no flow finished within the run");
        }
    }
    if let Some(sh) = &r.fct_slowdown_short {
        let _ = writeln!(
            o,
            "  short flows slowdown p50 {:.2} p99 {:.2} (flows of at most 100 KB)",
            sh.p50, sh.p99
        );
    }
    let _ = writeln!(
        o,
        "  queues      p50 {:.0} B  p99 {:.0} B  max {:.0} B",
        r.queue_bytes.p50, r.queue_bytes.p99, r.queue_bytes.max
    );
    let _ = writeln!(
        o,
        "  losses      {} drops ({} switch, {} link), {} trims, {} PFC pauses, {} retransmits ({} spurious), {} timeouts, {} loss events told to CC",
        r.drops, r.switch_drops, r.link_drops, r.trims, r.pfc_pauses, r.retransmits, r.spurious_retransmits, r.timeouts, r.loss_events
    );
    let _ = writeln!(
        o,
        "  reordering  {} packets out of order, deepest reorder buffer {} packets",
        r.ooo_packets, r.reorder_max_depth
    );
    let _ = writeln!(
        o,
        "  delivered   {} bytes, digest {} ({})",
        r.delivered_bytes,
        r.delivered_digest,
        Outcome::of(s, r).describe(r)
    );
    if let Some(a) = &r.allreduce {
        let _ = writeln!(
            o,
            "  allreduce   {} ranks, {:.1} µs, algbw {:.1} Gb/s, busbw {:.1} Gb/s",
            a.ranks, a.completion_us, a.algbw_gbps, a.busbw_gbps
        );
    }
    let _ = write!(
        o,
        "  simulated   {:.1} µs in {:.2} s wall, {} events ({:.2} M events/s)",
        r.sim_time_ns as f64 / 1e3,
        run.wall.as_secs_f64(),
        r.events,
        run.events_per_s() / 1e6
    );
    o
}

/// `runs/<name>-<UTC timestamp>/`.
pub fn default_out_dir(name: &str) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    PathBuf::from("runs").join(format!(
        "{name}-{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

/// Writes `DIR/results.json`.
pub fn write_results(dir: &Path, doc: &Value) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let path = dir.join("results.json");
    let text = serde_json::to_string_pretty(doc)?;
    std::fs::write(&path, text + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Writes `DIR/cc_trace.csv`: one row per change of a flow's window or rate.
pub fn write_cc_trace(dir: &Path, report: &Report) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let path = dir.join("cc_trace.csv");
    let mut text = String::from("time_us,flow,rate_gbps,window_bytes,signal\n");
    for (flow, c) in &report.cc_trace {
        let _ = writeln!(
            text,
            "{:.3},{},{:.6},{},{}",
            c.at as f64 / 1e3,
            flow,
            c.rate_bps as f64 / 1e9,
            c.window,
            c.signal.name()
        );
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Values for `--vary KEY=V1,V2,...`.
pub fn parse_vary(vary: &str) -> anyhow::Result<(String, Vec<String>)> {
    let Some((key, values)) = vary.split_once('=') else {
        bail!("--vary {vary}: expected KEY=V1,V2,...");
    };
    let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
    if key.trim().is_empty() || values.iter().any(String::is_empty) {
        bail!("--vary {vary}: expected KEY=V1,V2,... with no empty value");
    }
    Ok((key.trim().to_string(), values))
}

/// One row of `fablab compare`.
pub fn compare_row(label: &str, r: &Report) -> Vec<String> {
    let slowdown = |f: fn(&fablab_dataplane::sim::metrics::Percentiles) -> f64| {
        r.fct_slowdown
            .as_ref()
            .map_or("-".to_string(), |p| format!("{:.2}", f(p)))
    };
    vec![
        label.to_string(),
        format!("{:.3}", r.efficiency),
        format!("{:.1}", r.goodput_gbps),
        format!("{:.0}", r.queue_bytes.p99),
        format!("{:.0}", r.queue_bytes.max),
        slowdown(|p| p.p50),
        slowdown(|p| p.p99),
        r.fct_slowdown_short
            .as_ref()
            .map_or("-".to_string(), |p| format!("{:.2}", p.p99)),
        r.pfc_pauses.to_string(),
        r.drops.to_string(),
        r.retransmits.to_string(),
        format!("{:.3}", r.jain_fairness),
        format!("{}/{}", r.flows_finished, r.flows_total),
    ]
}

pub const COMPARE_HEADER: [&str; 13] = [
    "variant",
    "efficiency",
    "goodput_gbps",
    "queue_p99_B",
    "queue_max_B",
    "slowdown_p50",
    "slowdown_p99",
    "short_slowdown_p99",
    "pfc_pauses",
    "drops",
    "retransmits",
    "jain",
    "flows_done",
];

/// Lays rows out as an aligned text table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut o = String::new();
    let line = |o: &mut String, cells: &mut dyn Iterator<Item = String>| {
        let mut first = true;
        for (c, w) in cells.zip(&widths) {
            if !first {
                o.push_str("  ");
            }
            if first {
                let _ = write!(o, "{c:<w$}");
            } else {
                let _ = write!(o, "{c:>w$}");
            }
            first = false;
        }
        o.push('\n');
    };
    line(&mut o, &mut header.iter().map(|h| h.to_string()));
    for r in rows {
        line(&mut o, &mut r.iter().cloned());
    }
    o
}
