//! Scenario files: TOML that says which fabric to build, how switches and NICs
//! behave, and what traffic to run. The same file drives every mode.
//!
//! Loading never panics: a syntax error, an unknown key, a bad value or an impossible
//! topology is a [`ScenarioError`] naming the file, the line and the key.
//! `--set KEY=VALUE` overrides are applied after the file has been checked on its
//! own, and an error they cause names the override.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One scenario, as written in a file (with defaults filled in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name; results go to `runs/<name>-<timestamp>/` by default.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Seed for every random choice of a run; `--seed` overrides it.
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    pub topology: Topology,
    #[serde(default)]
    pub switch: SwitchConfig,
    #[serde(default)]
    pub nic: NicConfig,
    pub traffic: Traffic,
    #[serde(default)]
    pub sim: SimSettings,
    /// Link events: failures, recoveries, loss, degraded rates.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
}

/// How the simulator runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimSettings {
    /// Stop at this virtual time (µs) even if flows are unfinished; without it the run
    /// ends when every flow has finished.
    pub duration_us: Option<f64>,
    /// How often every switch egress queue is sampled for `queue_bytes` (ns).
    #[serde(default = "defaults::sample_ns")]
    pub queue_sample_ns: u64,
}

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            duration_us: None,
            queue_sample_ns: defaults::sample_ns(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// The link stops carrying packets (queued packets on it are lost).
    LinkDown,
    /// The link carries packets again.
    LinkUp,
    /// From then on each packet is lost with probability `loss`.
    Loss,
    /// From then on the link runs at `rate_fraction` of its rate.
    Slow,
}

/// One link event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// When, in µs of virtual time.
    pub at_us: f64,
    /// The link by its two end nodes: `["leaf0", "spine1"]`, `["h3", "leaf0"]`.
    pub link: [String; 2],
    pub kind: FaultKind,
    /// `loss`: probability per packet, 0..=1.
    pub loss: Option<f64>,
    /// `slow`: fraction of the link's rate, in (0, 1].
    pub rate_fraction: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopologyKind {
    /// Two switches joined by one bottleneck link, `hosts` on each side.
    Dumbbell,
    /// `leaves` leaf switches, each linked to every one of `spines` spines.
    LeafSpine,
    /// A k-ary fat-tree (k pods, k²/4 core switches, k³/4 hosts).
    FatTree,
}

/// The fabric. Which size keys apply depends on `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub kind: TopologyKind,
    /// dumbbell: hosts on each side.
    pub hosts: Option<u32>,
    /// leaf-spine: number of leaves.
    pub leaves: Option<u32>,
    /// leaf-spine: number of spines.
    pub spines: Option<u32>,
    /// leaf-spine: hosts under each leaf.
    pub hosts_per_leaf: Option<u32>,
    /// fat-tree: arity (even, at least 2).
    pub k: Option<u32>,
    /// Host-to-leaf link rate.
    #[serde(default = "defaults::link_gbps")]
    pub host_link_gbps: f64,
    /// Switch-to-switch link rate (default: the host link rate, non-blocking when
    /// spines ≥ hosts per leaf).
    pub fabric_link_gbps: Option<f64>,
    /// One-way propagation delay of every link.
    #[serde(default = "defaults::link_delay_ns")]
    pub link_delay_ns: u64,
    /// Byte capacity of each switch egress queue.
    #[serde(default = "defaults::buffer_bytes")]
    pub buffer_bytes: u64,
}

/// How a switch picks among equal-cost next hops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalancing {
    /// Hash of the 5-tuple, UDP source port included: one path per flow entropy.
    Ecmp,
    /// A uniformly random next hop per packet.
    SprayRandom,
    /// Next hops in turn, per packet.
    SprayRr,
    /// The least-occupied egress queue, per packet (DLB / adaptive routing).
    Adaptive,
    /// DRILL: the best of two random candidates and the last best.
    P2c,
    /// A new path when a flow pauses longer than `flowlet_gap_ns`.
    Flowlet,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    #[serde(default = "defaults::lb")]
    pub lb: LoadBalancing,
    #[serde(default = "defaults::flowlet_gap_ns")]
    pub flowlet_gap_ns: u64,
    /// RED/ECN on the instantaneous queue: no marks below `ecn_kmin_bytes`, marking
    /// probability rising to `ecn_pmax` at `ecn_kmax_bytes`, always above.
    #[serde(default = "defaults::kmin")]
    pub ecn_kmin_bytes: u64,
    #[serde(default = "defaults::kmax")]
    pub ecn_kmax_bytes: u64,
    #[serde(default = "defaults::pmax")]
    pub ecn_pmax: f64,
    /// Mark ECN at all (DCQCN/DCTCP need it).
    #[serde(default = "defaults::yes")]
    pub ecn: bool,
    /// Lossless (PFC) instead of tail drop.
    #[serde(default)]
    pub lossless: bool,
    /// Lossless: pause an ingress port's peer when this many bytes that came in on
    /// it are queued in the switch...
    #[serde(default = "defaults::pfc_xoff")]
    pub pfc_xoff_bytes: u64,
    /// ...and resume it when they drop to this many.
    #[serde(default = "defaults::pfc_xon")]
    pub pfc_xon_bytes: u64,
    /// Stamp INT metadata into data packets whose sender asks for it (`nic.int`).
    #[serde(default = "defaults::yes")]
    pub int: bool,
    /// Cut a data packet that does not fit its egress queue to its headers and
    /// forward those in the control queue, instead of dropping it (lossy switches;
    /// PFC switches never trim). The receiver NACKs a trimmed packet at once.
    #[serde(default = "defaults::yes")]
    pub trim: bool,
    /// Trim a data packet that would take its queue above this many bytes (default:
    /// the whole buffer, so only packets that do not fit are trimmed).
    pub trim_threshold_bytes: Option<u64>,
    /// ACKs, NACKs, CNPs and trimmed headers travel in a strict-priority queue at
    /// every switch port, ahead of data.
    #[serde(default = "defaults::yes")]
    pub control_priority: bool,
    /// Where ECN marks are decided: when a packet joins its queue (`enqueue`, from the
    /// depth it finds) or when it leaves (`dequeue`, from the depth it leaves behind).
    #[serde(default)]
    pub ecn_at: EcnAt,
}

/// `switch.ecn_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EcnAt {
    #[default]
    Enqueue,
    Dequeue,
}

/// `nic.int`: which data packets ask the switches for INT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IntRequest {
    /// When the flow's congestion control reads INT (hpcc, and plugins unless they
    /// say otherwise).
    #[default]
    Auto,
    /// Every data packet.
    On,
    /// None.
    Off,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            lb: defaults::lb(),
            flowlet_gap_ns: defaults::flowlet_gap_ns(),
            ecn_kmin_bytes: defaults::kmin(),
            ecn_kmax_bytes: defaults::kmax(),
            ecn_pmax: defaults::pmax(),
            ecn: true,
            lossless: false,
            pfc_xoff_bytes: defaults::pfc_xoff(),
            pfc_xon_bytes: defaults::pfc_xon(),
            int: true,
            trim: true,
            trim_threshold_bytes: None,
            control_priority: true,
            ecn_at: EcnAt::Enqueue,
        }
    }
}

/// How a NIC chooses each packet's UDP source port (entropy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Spraying {
    /// One entropy per flow: plain ECMP.
    Fixed,
    /// Cycle through `entropies` values, one per packet.
    PerPacket,
    /// Recycle entropies that saw ECN, deep INT queues or loss (UEC REPS-like).
    Adaptive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicConfig {
    #[serde(default = "defaults::spray")]
    pub spray: Spraying,
    /// Entropy values a flow sprays over.
    #[serde(default = "defaults::entropies")]
    pub entropies: u32,
    /// Congestion-control algorithm, by registered name.
    #[serde(default = "defaults::cc")]
    pub cc: String,
    /// RoCEv2 payload bytes per packet.
    #[serde(default = "defaults::mtu")]
    pub mtu_bytes: u32,
    /// Bytes a flow may have in flight at first (`none` keeps it); default twice
    /// the bandwidth-delay product of the fabric's longest path.
    pub window_bytes: Option<u64>,
    /// Smallest retransmission timeout, µs.
    #[serde(default = "defaults::rto_min_us")]
    pub rto_min_us: f64,
    /// Packets the receiver's reorder buffer holds ahead of a gap, per flow.
    #[serde(default = "defaults::reorder_window")]
    pub reorder_window: u32,
    /// Parameters of the congestion-control algorithm, by name.
    #[serde(default)]
    pub cc_params: std::collections::BTreeMap<String, f64>,
    /// Which data packets ask the switches for INT: `auto` (when the congestion
    /// control reads it), `on`, `off`.
    #[serde(default)]
    pub int: IntRequest,
    /// The receiver acknowledges once this many payload bytes arrived since its last
    /// ACK; at once for a trimmed packet (a NACK), a CE mark, a duplicate, a packet
    /// that asks for it, a packet that carries INT and the end of a flow. 0
    /// acknowledges every packet.
    #[serde(default = "defaults::ack_every_bytes")]
    pub ack_every_bytes: u64,
}

impl Default for NicConfig {
    fn default() -> Self {
        NicConfig {
            spray: defaults::spray(),
            entropies: defaults::entropies(),
            cc: defaults::cc(),
            mtu_bytes: defaults::mtu(),
            window_bytes: None,
            rto_min_us: defaults::rto_min_us(),
            reorder_window: defaults::reorder_window(),
            cc_params: Default::default(),
            int: IntRequest::Auto,
            ack_every_bytes: defaults::ack_every_bytes(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    /// Every host sends to one other host; no host receives twice.
    Permutation,
    /// `senders` hosts send to one receiver.
    Incast,
    /// Every host sends to every other host.
    AllToAll,
    /// A ring all-reduce over `ranks` hosts.
    AllreduceRing,
    /// Flows arrive as a Poisson process at `load`, sizes from `cdf`.
    Poisson,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    pub pattern: Pattern,
    /// Bytes per flow (permutation, incast, all-to-all) or per rank (allreduce).
    pub flow_bytes: Option<u64>,
    /// incast: number of senders.
    pub senders: Option<u32>,
    /// allreduce-ring: number of ranks.
    pub ranks: Option<u32>,
    /// poisson: offered load as a fraction of host link capacity.
    pub load: Option<f64>,
    /// poisson: flow-size CDF file (two columns: bytes, cumulative percent), relative
    /// to the scenario file.
    pub cdf: Option<PathBuf>,
    /// poisson: flows to generate.
    pub flows: Option<u32>,
    /// permutation: host i sends to host (i + stride) mod hosts (default: a random
    /// permutation without fixed points).
    pub stride: Option<u32>,
    /// permutation: only hosts 0..senders send.
    pub senders_limit: Option<u32>,
}

mod defaults {
    use super::{LoadBalancing, Spraying};
    pub fn seed() -> u64 {
        1
    }
    pub fn link_gbps() -> f64 {
        100.0
    }
    pub fn link_delay_ns() -> u64 {
        1_000
    }
    pub fn buffer_bytes() -> u64 {
        1 << 20
    }
    pub fn lb() -> LoadBalancing {
        LoadBalancing::Ecmp
    }
    pub fn flowlet_gap_ns() -> u64 {
        10_000
    }
    pub fn kmin() -> u64 {
        100 * 1024
    }
    pub fn kmax() -> u64 {
        400 * 1024
    }
    pub fn pmax() -> f64 {
        0.2
    }
    pub fn yes() -> bool {
        true
    }
    pub fn spray() -> Spraying {
        Spraying::Fixed
    }
    pub fn entropies() -> u32 {
        16
    }
    pub fn cc() -> String {
        "none".into()
    }
    pub fn mtu() -> u32 {
        4096
    }
    pub fn rto_min_us() -> f64 {
        100.0
    }
    pub fn reorder_window() -> u32 {
        1024
    }
    pub fn ack_every_bytes() -> u64 {
        fablab_dataplane::sim::DEFAULT_ACK_EVERY_BYTES
    }
    pub fn pfc_xoff() -> u64 {
        256 * 1024
    }
    pub fn pfc_xon() -> u64 {
        128 * 1024
    }
    pub fn sample_ns() -> u64 {
        1_000
    }
}

/// A scenario that could not be loaded: where, and what was wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioError {
    pub file: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub line: Option<(usize, usize)>,
    /// `[table] key` (or `--set key=value`) the problem is about, when known.
    pub key: Option<String>,
    pub message: String,
    /// The offending source line, for display.
    pub source_line: Option<String>,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.line {
            write!(f, ":{line}:{col}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)?;
        if let (Some((line, col)), Some(src)) = (self.line, &self.source_line) {
            let gutter = line.to_string().len();
            write!(
                f,
                "\n{:gutter$} |\n{line} | {src}\n{:gutter$} | {:>col$}",
                "", "", "^"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioError {}

/// Where a byte offset sits in a TOML text.
struct Place {
    line: usize,
    col: usize,
    table: Option<String>,
    text: String,
}

fn place(text: &str, offset: usize) -> Place {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("").to_string();
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(str::to_string);
    // `key = value` on this line names the key the problem is about.
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| {
            !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        });
    let table = match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t} {k}")),
        (None, Some(k)) => Some(k.to_string()),
        (t, None) => t,
    };
    Place {
        line,
        col,
        table,
        text: line_text,
    }
}

/// Finds `key = ...` inside `[table]` (or at top level when `table` is empty).
fn locate(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            current = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        } else if current == table {
            if let Some((k, _)) = t.split_once('=') {
                if k.trim() == key {
                    return Some(offset + line.len() - line.trim_start().len());
                }
            }
        }
        offset += line.len();
    }
    None
}

/// Parses a `--set` value as a TOML value, or as a bare string when it is not one
/// (`--set switch.lb=adaptive` needs no quotes).
fn parse_set_value(raw: &str) -> toml::Value {
    #[derive(Deserialize)]
    struct V {
        v: toml::Value,
    }
    toml::from_str::<V>(&format!("v = {raw}"))
        .map(|v| v.v)
        .unwrap_or_else(|_| toml::Value::String(raw.to_string()))
}

/// Applies `key.path=value` to a TOML table.
pub fn apply_set(table: &mut toml::Table, set: &str) -> Result<(), String> {
    let (path, raw) = set
        .split_once('=')
        .ok_or_else(|| format!("`{set}` is not KEY=VALUE"))?;
    let keys: Vec<&str> = path.trim().split('.').map(str::trim).collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(format!("`{path}` is not a dotted key such as switch.lb"));
    }
    let (last, parents) = keys.split_last().expect("split yields at least one key");
    let mut t = table;
    for k in parents {
        let entry = t
            .entry(k.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{k}` in `{path}` is a value, not a table"))?;
    }
    t.insert(last.to_string(), parse_set_value(raw.trim()));
    Ok(())
}

impl Scenario {
    /// Loads `path`, applies `sets` (`KEY=VALUE` strings) and validates the result.
    pub fn load(path: &Path, sets: &[String]) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.to_path_buf(),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
            source_line: None,
        })?;
        Scenario::from_text(path, &text, sets)
    }

    /// Like [`load`](Self::load), from text already read; `path` names it in errors.
    pub fn from_text(path: &Path, text: &str, sets: &[String]) -> Result<Scenario, ScenarioError> {
        let err_at = |offset: Option<usize>, key: Option<String>, message: String| {
            let p = offset.map(|o| place(text, o));
            ScenarioError {
                file: path.to_path_buf(),
                line: p.as_ref().map(|p| (p.line, p.col)),
                key: key.or_else(|| p.as_ref().and_then(|p| p.table.clone())),
                message,
                source_line: p.map(|p| p.text),
            }
        };
        // The file on its own first, so that errors point into it.
        let mut scenario: Scenario = toml::from_str(text).map_err(|e| {
            err_at(
                e.span().map(|s| s.start),
                None,
                e.message().trim().to_string(),
            )
        })?;
        if !sets.is_empty() {
            let mut table: toml::Table = toml::from_str(text)
                .map_err(|e| err_at(None, None, e.message().trim().to_string()))?;
            for set in sets {
                apply_set(&mut table, set)
                    .map_err(|m| err_at(None, Some(format!("--set {set}")), m))?;
            }
            scenario = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    err_at(
                        None,
                        Some(format!("--set {}", sets.join(" --set "))),
                        e.message().trim().to_string(),
                    )
                })?;
        }
        scenario.validate().map_err(|(table, key, message)| {
            let dotted = if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            };
            let from_set = sets
                .iter()
                .find(|s| s.split_once('=').map(|(k, _)| k.trim()) == Some(dotted.as_str()));
            match from_set {
                Some(set) => err_at(None, Some(format!("--set {set}")), message),
                None => {
                    let shown = if table.is_empty() {
                        key.to_string()
                    } else {
                        format!("[{table}] {key}")
                    };
                    err_at(locate(text, table, key), Some(shown), message)
                }
            }
        })?;
        Ok(scenario)
    }

    /// Checks what serde cannot: sizes that make a fabric, values in range.
    /// Errors are `(table, key, message)`.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str, String)> {
        let t = &self.topology;
        let need = |v: Option<u32>, key: &'static str, min: u32| match v {
            None => Err((
                "topology",
                key,
                format!("required for kind = \"{}\"", kind_name(t.kind)),
            )),
            Some(n) if n < min => {
                Err(("topology", key, format!("{n} is too small: at least {min}")))
            }
            Some(_) => Ok(()),
        };
        let forbid = |v: Option<u32>, key: &'static str| match v {
            Some(_) => Err((
                "topology",
                key,
                format!("does not apply to kind = \"{}\"", kind_name(t.kind)),
            )),
            None => Ok(()),
        };
        match t.kind {
            TopologyKind::Dumbbell => {
                need(t.hosts, "hosts", 1)?;
                forbid(t.leaves, "leaves")?;
                forbid(t.spines, "spines")?;
                forbid(t.hosts_per_leaf, "hosts_per_leaf")?;
                forbid(t.k, "k")?;
            }
            TopologyKind::LeafSpine => {
                need(t.leaves, "leaves", 1)?;
                need(t.spines, "spines", 1)?;
                need(t.hosts_per_leaf, "hosts_per_leaf", 1)?;
                forbid(t.hosts, "hosts")?;
                forbid(t.k, "k")?;
            }
            TopologyKind::FatTree => {
                need(t.k, "k", 2)?;
                if t.k.is_some_and(|k| k % 2 != 0) {
                    return Err(("topology", "k", "must be even".into()));
                }
                forbid(t.hosts, "hosts")?;
                forbid(t.leaves, "leaves")?;
                forbid(t.spines, "spines")?;
                forbid(t.hosts_per_leaf, "hosts_per_leaf")?;
            }
        }
        positive_rate("host_link_gbps", t.host_link_gbps)?;
        if let Some(r) = t.fabric_link_gbps {
            positive_rate("fabric_link_gbps", r)?;
        }
        let s = &self.switch;
        if s.ecn_kmin_bytes > s.ecn_kmax_bytes {
            return Err((
                "switch",
                "ecn_kmin_bytes",
                format!(
                    "{} is above ecn_kmax_bytes = {}",
                    s.ecn_kmin_bytes, s.ecn_kmax_bytes
                ),
            ));
        }
        if !(0.0..=1.0).contains(&s.ecn_pmax) {
            return Err((
                "switch",
                "ecn_pmax",
                format!("{} is not in 0..=1", s.ecn_pmax),
            ));
        }
        if let Some(th) = s.trim_threshold_bytes {
            if th == 0 || th > t.buffer_bytes {
                return Err((
                    "switch",
                    "trim_threshold_bytes",
                    format!(
                        "{th} is not in 1..=buffer_bytes ({}): a packet is trimmed when it would take its queue above it",
                        t.buffer_bytes
                    ),
                ));
            }
            if !s.trim {
                return Err((
                    "switch",
                    "trim_threshold_bytes",
                    "is set but trim = false".into(),
                ));
            }
        }
        let n = &self.nic;
        if !(64..=9000).contains(&n.mtu_bytes) {
            return Err((
                "nic",
                "mtu_bytes",
                format!("{} is not in 64..=9000", n.mtu_bytes),
            ));
        }
        let largest = u64::from(fablab_dataplane::packet::Packet::largest_data_wire_len(
            n.mtu_bytes,
        ));
        if t.buffer_bytes < largest {
            return Err((
                "topology",
                "buffer_bytes",
                format!(
                    "{} cannot hold one full-size packet ({largest} B: mtu_bytes = {} with \
                     headers and the largest INT block): no data packet could ever be queued",
                    t.buffer_bytes, n.mtu_bytes
                ),
            ));
        }
        let max_entropies = fablab_dataplane::nic::spray::MAX_ENTROPIES;
        if n.entropies == 0 || n.entropies as usize > max_entropies {
            return Err((
                "nic",
                "entropies",
                format!(
                    "{} is not in 1..={max_entropies} (the ephemeral port range)",
                    n.entropies
                ),
            ));
        }
        if s.pfc_xon_bytes > s.pfc_xoff_bytes {
            return Err((
                "switch",
                "pfc_xon_bytes",
                format!(
                    "{} is above pfc_xoff_bytes = {}",
                    s.pfc_xon_bytes, s.pfc_xoff_bytes
                ),
            ));
        }
        if !(n.rto_min_us.is_finite() && n.rto_min_us > 0.0) {
            return Err((
                "nic",
                "rto_min_us",
                format!("{} is not a positive time", n.rto_min_us),
            ));
        }
        if !(1..=(1 << 23)).contains(&n.reorder_window) {
            return Err((
                "nic",
                "reorder_window",
                format!("{} is not in 1..=8388608", n.reorder_window),
            ));
        }
        if let Some(d) = self.sim.duration_us {
            if !(d.is_finite() && d > 0.0) {
                return Err(("sim", "duration_us", format!("{d} is not a positive time")));
            }
        }
        if self.sim.queue_sample_ns == 0 {
            return Err(("sim", "queue_sample_ns", "must be positive".into()));
        }
        for f in &self.faults {
            if !(f.at_us.is_finite() && f.at_us >= 0.0) {
                return Err(("faults", "at_us", format!("{} is not a time", f.at_us)));
            }
            match f.kind {
                FaultKind::Loss if !f.loss.is_some_and(|p| (0.0..=1.0).contains(&p)) => {
                    return Err((
                        "faults",
                        "loss",
                        "kind = \"loss\" needs loss in 0..=1".into(),
                    ))
                }
                FaultKind::Slow if !f.rate_fraction.is_some_and(|r| r > 0.0 && r <= 1.0) => {
                    return Err((
                        "faults",
                        "rate_fraction",
                        "kind = \"slow\" needs rate_fraction in (0, 1]".into(),
                    ))
                }
                _ => {}
            }
        }
        let hosts = self.host_count();
        let tr = &self.traffic;
        match tr.pattern {
            Pattern::Permutation | Pattern::AllToAll | Pattern::Incast => {
                if let Some(st) = tr.stride {
                    if st == 0 || st % hosts.max(1) == 0 {
                        return Err((
                            "traffic",
                            "stride",
                            format!("{st} sends hosts to themselves on {hosts} hosts"),
                        ));
                    }
                }
                if tr.flow_bytes.is_none_or(|b| b == 0) {
                    return Err(("traffic", "flow_bytes", "required and positive".into()));
                }
                if hosts < 2 {
                    return Err(("topology", "kind", "traffic needs at least 2 hosts".into()));
                }
            }
            Pattern::AllreduceRing => {
                if tr.flow_bytes.is_none_or(|b| b == 0) {
                    return Err(("traffic", "flow_bytes", "required and positive".into()));
                }
                let ranks = tr.ranks.unwrap_or(hosts);
                if ranks < 2 || ranks > hosts {
                    return Err((
                        "traffic",
                        "ranks",
                        format!("{ranks} ranks on {hosts} hosts: need 2..={hosts}"),
                    ));
                }
            }
            Pattern::Poisson => {
                if tr.flows.is_none_or(|f| f == 0) {
                    return Err((
                        "traffic",
                        "flows",
                        "required for poisson (how many flows)".into(),
                    ));
                }
                match tr.load {
                    Some(l) if l > 0.0 && l < 1.0 => {}
                    Some(l) => return Err(("traffic", "load", format!("{l} is not in (0, 1)"))),
                    None => return Err(("traffic", "load", "required for poisson".into())),
                }
                if tr.cdf.is_none() {
                    return Err(("traffic", "cdf", "required for poisson".into()));
                }
            }
        }
        if tr.pattern == Pattern::Incast {
            match tr.senders {
                Some(s) if s >= 1 && s < hosts => {}
                Some(s) => {
                    return Err((
                        "traffic",
                        "senders",
                        format!("{s} senders need {} hosts, the fabric has {hosts}", s + 1),
                    ))
                }
                None => return Err(("traffic", "senders", "required for incast".into())),
            }
        }
        Ok(())
    }

    /// Hosts in the fabric.
    pub fn host_count(&self) -> u32 {
        let t = &self.topology;
        match t.kind {
            TopologyKind::Dumbbell => 2 * t.hosts.unwrap_or(0),
            TopologyKind::LeafSpine => t.leaves.unwrap_or(0) * t.hosts_per_leaf.unwrap_or(0),
            TopologyKind::FatTree => t.k.map_or(0, |k| k * k * k / 4),
        }
    }
}

fn positive_rate(key: &'static str, v: f64) -> Result<(), (&'static str, &'static str, String)> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(("topology", key, format!("{v} is not a positive rate")))
    }
}

fn kind_name(k: TopologyKind) -> &'static str {
    match k {
        TopologyKind::Dumbbell => "dumbbell",
        TopologyKind::LeafSpine => "leaf-spine",
        TopologyKind::FatTree => "fat-tree",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: &str = r#"
name = "t"

[topology]
kind = "leaf-spine"
leaves = 2
spines = 4
hosts_per_leaf = 4

[switch]
lb = "spray-rr"

[traffic]
pattern = "permutation"
flow_bytes = 1000000
"#;

    fn load(text: &str, sets: &[&str]) -> Result<Scenario, ScenarioError> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Scenario::from_text(Path::new("t.toml"), text, &sets)
    }

    #[test]
    fn loads_with_defaults() {
        let s = load(QUICK, &[]).unwrap();
        assert_eq!(s.switch.lb, LoadBalancing::SprayRr);
        assert_eq!(s.nic.cc, "none");
        assert_eq!(s.host_count(), 8);
    }

    #[test]
    fn bad_variant_names_file_line_and_choices() {
        let text = QUICK.replace("\"spray-rr\"", "\"ecmpp\"");
        let e = load(&text, &[]).unwrap_err();
        let shown = e.to_string();
        assert_eq!(e.line.map(|l| l.0), Some(11), "{shown}");
        assert!(
            shown.starts_with("t.toml:11:6: [switch] lb: unknown variant"),
            "{shown}"
        );
        assert!(
            shown.contains("ecmpp") && shown.contains("spray-rr"),
            "{shown}"
        );
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let text = QUICK.replace("spines = 4", "spines = 4\nspine = 4");
        let e = load(&text, &[]).unwrap_err();
        assert_eq!(e.line.map(|l| l.0), Some(8));
        assert!(e.to_string().contains("unknown field `spine`"), "{e}");
    }

    #[test]
    fn impossible_topology_names_the_key_and_line() {
        let text = QUICK.replace("leaves = 2", "leaves = 0");
        let e = load(&text, &[]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("[topology] leaves"));
        assert_eq!(e.line.map(|l| l.0), Some(6));
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = load("name = \"x\"\n[topology\n", &[]).unwrap_err();
        assert_eq!(e.line.map(|l| l.0), Some(2), "{e}");
    }

    #[test]
    fn set_overrides_and_bare_strings() {
        let s = load(QUICK, &["switch.lb=adaptive", "nic.entropies=64", "seed=7"]).unwrap();
        assert_eq!(s.switch.lb, LoadBalancing::Adaptive);
        assert_eq!(s.nic.entropies, 64);
        assert_eq!(s.seed, 7);
    }

    #[test]
    fn bad_set_is_named() {
        let e = load(QUICK, &["switch.lb=roundrobin"]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("--set switch.lb=roundrobin"));
        assert!(e.message.contains("roundrobin"), "{e}");
        let e = load(QUICK, &["topology.spines=0"]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("--set topology.spines=0"), "{e}");
        let e = load(QUICK, &["nope"]).unwrap_err();
        assert!(e.message.contains("KEY=VALUE"), "{e}");
    }

    #[test]
    fn shipped_scenarios_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 1);
    }
}
