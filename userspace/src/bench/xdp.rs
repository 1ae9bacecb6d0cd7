//! `fablab bench xdp`: the XDP switch (`fl_switch`, INT on, adaptive choice)
//! against a bare `XDP_REDIRECT` program on the same switch namespace, with the same
//! generator and the same sink, one after the other in one run.
//!
//! h0 → s0 → h1, as `fablab bench switch`. The generator is `fl_gen`
//! (`ebpf/fl_bench.c`) run by the kernel with `BPF_PROG_TEST_RUN` in live-frames
//! mode: it redirects frames out of h0's interface as fast as one core can, far
//! beyond what a userspace generator reaches on veth. The switch's program runs in
//! native mode on s0's port to h0 and redirects into its port to h1, where `fl_sink`
//! counts and drops. Forwarded Mpps is what the sink counted over the wall time;
//! busy cores come from `/proc/stat`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use aya::maps::{Array, DevMap, PerCpuArray};
use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use fablab_testbed::{in_netns, Testbed};

use super::{cpu_times, Bed, Measurement, SWITCH, WARMUP};
use crate::xdp::XdpSwitch;

/// `FL_GEN_HEAD` of `ebpf/fablab.h`: how much of each frame `fl_gen` rewrites.
const GEN_HEAD: usize = 128;
/// Frames per `BPF_PROG_TEST_RUN` call of the generator.
const REPEAT: u32 = 1 << 18;

/// One of `fl_bench.c`'s programs, loaded, with its maps.
struct BenchProgram {
    bpf: aya::Ebpf,
    name: &'static str,
}

impl BenchProgram {
    fn load(name: &'static str) -> anyhow::Result<BenchProgram> {
        let object = crate::ebpf::object(crate::ebpf::FL_BENCH, "fablab bench xdp")?;
        let mut p = BenchProgram {
            bpf: crate::ebpf::load(object).context("loading fl_bench.o")?,
            name,
        };
        p.program()?
            .load()
            .map_err(|e| anyhow::anyhow!("the verifier rejected {name}: {e:?}"))?;
        Ok(p)
    }

    fn program(&mut self) -> anyhow::Result<&mut Xdp> {
        let name = self.name;
        self.bpf
            .program_mut(name)
            .with_context(|| format!("fl_bench.o has no program {name}"))?
            .try_into()
            .with_context(|| format!("fl_bench.o: {name} is not an XDP program"))
    }

    /// Sends what the program redirects out of `ifname` (call it inside the
    /// interface's namespace).
    fn send_to(&mut self, ifname: &str) -> anyhow::Result<()> {
        let ifindex = if_index(ifname)?;
        let mut tx: DevMap<_> = DevMap::try_from(
            self.bpf
                .map_mut("fl_bench_tx")
                .context("fl_bench.o has no map fl_bench_tx")?,
        )
        .context("fl_bench.o: map fl_bench_tx")?;
        tx.set(0, ifindex, None, 0)
            .with_context(|| format!("{}: sending to {ifname} (ifindex {ifindex})", self.name))?;
        Ok(())
    }

    fn attach(&mut self, ifname: &str) -> anyhow::Result<()> {
        self.program()?
            .attach(ifname, XdpMode::Driver)
            .with_context(|| format!("attaching {} to {ifname}", self.name))?;
        Ok(())
    }
}

fn if_index(ifname: &str) -> anyhow::Result<u32> {
    let name = std::ffi::CString::new(ifname)?;
    // SAFETY: if_nametoindex reads a NUL-terminated name and nothing else.
    let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
    anyhow::ensure!(i != 0, "no interface {ifname}");
    Ok(i)
}

/// Runs the bench for every frame size: the bare redirect, then the XDP switch,
/// `seconds` of counting each. Root only; the testbed is removed on every path.
pub fn run(sizes: &[usize], seconds: f64) -> anyhow::Result<Vec<Measurement>> {
    let Bed {
        cfg,
        frames,
        topo,
        mut plan,
    } = Bed::plan("fablab bench xdp", sizes, seconds)?;
    plan.kernel_sees_frames = false;
    let testbed = Testbed::up(&plan).context("building the bench testbed")?;
    let result = (|| -> anyhow::Result<Vec<Measurement>> {
        let mut sink = BenchProgram::load("fl_sink")?;
        in_netns("fl-h1", || sink.attach("fl-h1p0"))??;
        let mut gen = BenchProgram::load("fl_gen")?;
        in_netns("fl-h0", || gen.send_to("fl-h0p0"))??;
        let mut out = Vec::new();
        for (size, f) in &frames {
            let mut head = [0u8; GEN_HEAD];
            let n = f.len().min(GEN_HEAD);
            head[..n].copy_from_slice(&f[..n]);
            let mut template: Array<_, [u8; GEN_HEAD]> = Array::try_from(
                gen.bpf
                    .map_mut("fl_gen_template")
                    .context("fl_bench.o has no map fl_gen_template")?,
            )
            .context("fl_bench.o: map fl_gen_template")?;
            template
                .set(0, head, 0)
                .context("writing fl_gen's frame template")?;

            let mut bare = BenchProgram::load("fl_bare_redirect")?;
            in_netns("fl-s0", || -> anyhow::Result<()> {
                bare.send_to("fl-s0p1")?;
                bare.attach("fl-s0p0")
            })??;
            out.push(measure(
                "bare redirect",
                *size,
                f,
                seconds,
                &mut gen,
                &sink,
            )?);
            drop(bare);

            let mut sw = XdpSwitch::load()?;
            sw.configure(&crate::xdp::fabric::setup_for(
                &cfg, &topo, SWITCH, plan.mtu,
            )?)?;
            in_netns("fl-s0", || -> anyhow::Result<()> {
                for (port, ifname) in [(0u16, "fl-s0p0"), (1, "fl-s0p1")] {
                    sw.set_interface(port, if_index(ifname)?)?;
                }
                sw.attach("fl-s0p0")?;
                Ok(())
            })??;
            out.push(measure("fl_switch", *size, f, seconds, &mut gen, &sink)?);
        }
        Ok(out)
    })();
    // The run's own error comes first; a failed teardown is reported after it.
    let down = testbed.down().context("removing the bench testbed");
    let rows = result?;
    down?;
    Ok(rows)
}

fn sink_count(sink: &BenchProgram) -> anyhow::Result<u64> {
    let c: PerCpuArray<_, u64> = PerCpuArray::try_from(
        sink.bpf
            .map("fl_sink_count")
            .context("fl_bench.o has no map fl_sink_count")?,
    )
    .context("fl_bench.o: map fl_sink_count")?;
    Ok(c.get(&0, 0)
        .context("reading fl_sink's count")?
        .iter()
        .sum())
}

/// Generates `frame` for WARMUP, then for `seconds`, and counts what the sink got.
fn measure(
    forwarder: &'static str,
    frame_bytes: usize,
    frame: &[u8],
    seconds: f64,
    gen: &mut BenchProgram,
    sink: &BenchProgram,
) -> anyhow::Result<Measurement> {
    let mut blast = |until: Instant| -> anyhow::Result<u64> {
        let mut sent = 0u64;
        while Instant::now() < until {
            gen.program()?
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    repeat: REPEAT,
                    attrs: TestRunAttrs::new().xdp_live_frames(64),
                    ..TestRunOptions::default()
                })
                .context("running the generator (BPF_PROG_TEST_RUN, live frames)")?;
            sent += u64::from(REPEAT);
        }
        Ok(sent)
    };
    blast(Instant::now() + WARMUP)?;
    let (c0, cpu0, t0) = (sink_count(sink)?, cpu_times()?, Instant::now());
    let sent = blast(t0 + Duration::from_secs_f64(seconds))?;
    let wall = t0.elapsed().as_secs_f64();
    let (c1, cpu1) = (sink_count(sink)?, cpu_times()?);
    Ok(Measurement {
        forwarder,
        frame_bytes,
        offered_mpps: sent as f64 / wall / 1e6,
        forwarded_mpps: c1.saturating_sub(c0) as f64 / wall / 1e6,
        busy_cores: cpu1.busy_cores_since(&cpu0),
    })
}
