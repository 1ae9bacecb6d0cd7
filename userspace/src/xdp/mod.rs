//! The eBPF side of fablab: the XDP switch (`ebpf/fl_switch.c`), loaded and
//! configured from Rust with aya. docs/ebpf.md describes the programs and maps.

pub mod fabric;
pub mod maps;
pub mod spray;

use std::io;

use aya::maps::{Array, HashMap, LpmTrie, PerCpuArray};
use aya::programs::{TestRunOptions, Xdp, XdpMode};

use maps::{FlConfig, FlPort, FlQueue, FlQueueLocked, FlRoute, STATS};

/// XDP verdicts (`enum xdp_action`).
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// What a switch is: the program's configuration, its ports and its routes.
#[derive(Debug, Clone, Default)]
pub struct SwitchSetup {
    pub config: FlConfig,
    /// Port number and what the program knows of it. Its `ifindex` is what
    /// [`XdpSwitch::set_interface`] writes, from inside the switch's namespace; a
    /// port left at 0 forwards nothing.
    pub ports: Vec<(u16, FlPort)>,
    /// Destination prefix (address, length) and its equal-cost egress ports.
    pub routes: Vec<([u8; 4], u32, Vec<u16>)>,
}

/// One loaded instance of the XDP switch: its program and maps.
#[derive(Debug)]
pub struct XdpSwitch {
    bpf: aya::Ebpf,
    /// Ports 0..ports are configured.
    ports: u16,
    /// Each configured port's drain rate, Mb/s.
    rates: Vec<u32>,
}

fn err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("XDP switch: {what}: {e}"))
}

impl XdpSwitch {
    /// Loads the program into the kernel (the verifier runs here: a rejection is an
    /// error that carries the verifier's log) and creates its maps, empty.
    pub fn load() -> io::Result<XdpSwitch> {
        let object = crate::ebpf::object(crate::ebpf::FL_SWITCH, "the XDP switch")?;
        let bpf = crate::ebpf::load(object).map_err(|e| err("loading fl_switch.o", e))?;
        let mut s = XdpSwitch {
            bpf,
            ports: 0,
            rates: Vec::new(),
        };
        s.program()?
            .load()
            .map_err(|e| err("the verifier rejected fl_switch", format!("{e:?}")))?;
        Ok(s)
    }

    fn program(&mut self) -> io::Result<&mut Xdp> {
        self.bpf
            .program_mut("fl_switch")
            .ok_or_else(|| err("fl_switch.o", "no program fl_switch"))?
            .try_into()
            .map_err(|e| err("fl_switch.o", e))
    }

    fn map_mut(&mut self, name: &str) -> io::Result<&mut aya::maps::Map> {
        self.bpf
            .map_mut(name)
            .ok_or_else(|| err("fl_switch.o", format!("no map {name}")))
    }

    fn map(&self, name: &str) -> io::Result<&aya::maps::Map> {
        self.bpf
            .map(name)
            .ok_or_else(|| err("fl_switch.o", format!("no map {name}")))
    }

    /// Writes the configuration, ports and routes into the maps. Ports not named
    /// stay absent (ifindex 0).
    pub fn configure(&mut self, setup: &SwitchSetup) -> io::Result<()> {
        let mut config: Array<_, FlConfig> =
            Array::try_from(self.map_mut("fl_config")?).map_err(|e| err("fl_config", e))?;
        config
            .set(0, setup.config, 0)
            .map_err(|e| err("fl_config", e))?;
        let mut ports: Array<_, FlPort> =
            Array::try_from(self.map_mut("fl_ports")?).map_err(|e| err("fl_ports", e))?;
        for (port, p) in &setup.ports {
            if u32::from(*port) >= maps::FL_MAX_PORTS {
                return Err(err(
                    "fl_ports",
                    format!(
                        "port {port}: the program knows ports 0..{}",
                        maps::FL_MAX_PORTS
                    ),
                ));
            }
            ports
                .set(u32::from(*port), *p, 0)
                .map_err(|e| err("fl_ports", e))?;
        }
        self.ports = setup.ports.iter().map(|(p, _)| p + 1).max().unwrap_or(0);
        self.rates = vec![0; usize::from(self.ports)];
        for (p, fp) in &setup.ports {
            self.rates[usize::from(*p)] = fp.rate_mbps;
        }
        self.set_routes(&setup.routes)
    }

    /// Writes `routes` into `fl_routes`; a prefix given with no ports is removed
    /// (its traffic is then dropped as `no_route`).
    pub fn set_routes(&mut self, routes: &[([u8; 4], u32, Vec<u16>)]) -> io::Result<()> {
        // aya's LPM key is `struct fl_route_key`: the prefix length, then the data
        // (the address as on the wire).
        let mut trie: LpmTrie<_, u32, FlRoute> =
            LpmTrie::try_from(self.map_mut("fl_routes")?).map_err(|e| err("fl_routes", e))?;
        for (addr, len, cands) in routes {
            let key = aya::maps::lpm_trie::Key::new(*len, u32::from_ne_bytes(*addr));
            if cands.is_empty() {
                // Absent already is as good as removed.
                let _ = trie.remove(&key);
                continue;
            }
            if cands.len() > maps::FL_MAX_CANDS {
                return Err(err(
                    "fl_routes",
                    format!(
                        "route to {addr:?}/{len}: {} ports (at most {})",
                        cands.len(),
                        maps::FL_MAX_CANDS
                    ),
                ));
            }
            let mut r = FlRoute {
                n: cands.len() as u32,
                ..FlRoute::default()
            };
            r.ports[..cands.len()].copy_from_slice(cands);
            trie.insert(&key, r, 0)
                .map_err(|e| err(&format!("fl_routes: route to {addr:?}/{len}"), e))?;
        }
        Ok(())
    }

    /// Changes port `port`'s link as a fault does: up or down (informational here:
    /// the caller takes a down port out of the routes), its loss probability and
    /// its drain rate.
    pub fn set_link(&mut self, port: u16, up: bool, loss: f64, rate_mbps: u32) -> io::Result<()> {
        let mut ports: Array<_, FlPort> =
            Array::try_from(self.map_mut("fl_ports")?).map_err(|e| err("fl_ports", e))?;
        let what = || format!("fl_ports[{port}]");
        let mut p = ports
            .get(&u32::from(port), 0)
            .map_err(|e| err(&what(), e))?;
        p.up = u32::from(up);
        p.loss_ppm = (loss.clamp(0.0, 1.0) * 1e6) as u32;
        p.rate_mbps = rate_mbps;
        ports
            .set(u32::from(port), p, 0)
            .map_err(|e| err(&what(), e))?;
        if let Some(r) = self.rates.get_mut(usize::from(port)) {
            *r = rate_mbps;
        }
        Ok(())
    }

    /// Points port `port`'s egress at interface `ifindex` (in the devmap and in
    /// `fl_ports`: a port without one forwards nothing) and maps that interface
    /// back to the port for INT's ingress port ID. Call it from a thread inside the
    /// switch's namespace: the kernel resolves the ifindex there.
    pub fn set_interface(&mut self, port: u16, ifindex: u32) -> io::Result<()> {
        let mut ports: Array<_, FlPort> =
            Array::try_from(self.map_mut("fl_ports")?).map_err(|e| err("fl_ports", e))?;
        let mut p = ports
            .get(&u32::from(port), 0)
            .map_err(|e| err(&format!("fl_ports[{port}]"), e))?;
        p.ifindex = ifindex;
        ports
            .set(u32::from(port), p, 0)
            .map_err(|e| err(&format!("fl_ports[{port}]"), e))?;
        let mut tx: aya::maps::DevMap<_> =
            aya::maps::DevMap::try_from(self.map_mut("fl_tx")?).map_err(|e| err("fl_tx", e))?;
        tx.set(u32::from(port), ifindex, None, 0)
            .map_err(|e| err(&format!("fl_tx[{port}] = ifindex {ifindex}"), e))?;
        let mut back: HashMap<_, u32, u32> =
            HashMap::try_from(self.map_mut("fl_ifports")?).map_err(|e| err("fl_ifports", e))?;
        back.insert(ifindex, u32::from(port), 0)
            .map_err(|e| err("fl_ifports", e))
    }

    /// Attaches the program to `ifname` (native XDP) in the calling thread's
    /// namespace. It stays attached while this value lives.
    pub fn attach(&mut self, ifname: &str) -> io::Result<()> {
        self.program()?
            .attach(ifname, XdpMode::Driver)
            .map_err(|e| err(&format!("attaching to {ifname}"), e))?;
        Ok(())
    }

    /// Runs the program once on `frame` (`BPF_PROG_TEST_RUN`): the verdict and the
    /// frame as the program left it.
    pub fn test_run(&mut self, frame: &[u8]) -> io::Result<(u32, Vec<u8>)> {
        test_run(&*self.program()?, frame, 512).map_err(|e| err("test run", e))
    }

    /// The drop and forwarding counters, summed over CPUs, by name.
    pub fn stats(&self) -> io::Result<Vec<(&'static str, u64)>> {
        per_cpu_counters(self.map("fl_stats")?, &STATS).map_err(|e| err("fl_stats", e))
    }

    /// How many ports `configure` set up (ports 0..this).
    pub fn port_count(&self) -> io::Result<u16> {
        Ok(self.ports)
    }

    /// Port `port`'s virtual queue occupancy at `now` (`CLOCK_MONOTONIC` ns): what
    /// it held at its last update, drained at the port's rate since.
    pub fn occupancy(&self, port: u16, now: u64) -> io::Result<u64> {
        let q = self.queue(port)?;
        let rate = u64::from(self.rates.get(usize::from(port)).copied().unwrap_or(0));
        let gone = now.saturating_sub(q.at).saturating_mul(rate) / 8000;
        Ok(q.bytes.saturating_sub(gone))
    }

    /// Port `port`'s virtual queue.
    pub fn queue(&self, port: u16) -> io::Result<FlQueue> {
        let queues: Array<_, FlQueueLocked> =
            Array::try_from(self.map("fl_queues")?).map_err(|e| err("fl_queues", e))?;
        Ok(queues
            .get(&u32::from(port), 0)
            .map_err(|e| err("fl_queues", e))?
            .q)
    }
}

/// Runs `program` once on `frame` (`BPF_PROG_TEST_RUN`), with room for the frame
/// to grow by `grow` bytes: the verdict and the frame as the program left it.
pub(crate) fn test_run<P>(program: &P, frame: &[u8], grow: usize) -> io::Result<(u32, Vec<u8>)>
where
    P: for<'a> aya::programs::TestRun<
        Opts<'a> = TestRunOptions<'a>,
        Result = aya::programs::TestRunResult,
    >,
{
    let mut out = vec![0u8; frame.len() + grow];
    let r = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .map_err(io::Error::other)?;
    out.truncate(r.data_size_out as usize);
    Ok((r.return_value, out))
}

/// A per-CPU array of counters, summed over CPUs, by the names of its indices.
pub(crate) fn per_cpu_counters(
    map: &aya::maps::Map,
    names: &[&'static str],
) -> io::Result<Vec<(&'static str, u64)>> {
    let counters: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(io::Error::other)?;
    (0..names.len() as u32)
        .map(|i| {
            let v = counters.get(&i, 0).map_err(io::Error::other)?;
            Ok((names[i as usize], v.iter().sum()))
        })
        .collect()
}

#[cfg(test)]
mod tests;
