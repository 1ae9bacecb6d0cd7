//! The simulator's hot path: a 64-host leaf-spine (4 leaves x 16 hosts, 8 spines)
//! running a permutation with adaptive routing for 200 µs of virtual time, beside a
//! baseline that pushes and pops the same number of events through the bare event
//! queue. Throughput is reported in events per second; the ratio between the two says
//! how much of a simulated event is fablab's switch/NIC logic.
//!
//! Run: `cargo bench -p fablab-benches --bench sim`. Record results in docs/results.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fablab_dataplane::cc::Registry;
use fablab_dataplane::sim::engine::EventQueue;
use fablab_dataplane::sim::traffic::{Pattern, TrafficSpec};
use fablab_dataplane::sim::{SimConfig, Simulator};
use fablab_dataplane::switch::LbPolicy;

fn config() -> SimConfig {
    let traffic = TrafficSpec {
        pattern: Pattern::Permutation {
            stride: None,
            senders: None,
        },
        flow_bytes: 1 << 40,
    };
    SimConfig {
        lb: LbPolicy::Adaptive,
        int: true,
        duration: Some(200_000),
        queue_sample_interval: 10_000,
        ..SimConfig::leaf_spine((4, 8, 16), 100_000, 1_000, traffic)
    }
}

fn bench(c: &mut Criterion) {
    // How many events one run processes (deterministic for the seed).
    let mut probe = Simulator::new(config(), Registry::default()).unwrap();
    while probe.run_until(u64::MAX) {}
    let events = probe.events();

    let mut g = c.benchmark_group("sim/leaf_spine_64_permutation_200us");
    g.sample_size(10);
    g.throughput(Throughput::Elements(events));
    g.bench_function("baseline_event_queue_only", |b| {
        b.iter(|| {
            let mut q = EventQueue::default();
            let mut t = 0u64;
            // Keep ~1000 events pending, as the fabric does.
            for i in 0..1000u64 {
                q.schedule(i, i);
            }
            for _ in 0..events {
                let (now, e) = q.pop().unwrap();
                t = t.wrapping_add(e);
                q.schedule(now + 1000 + (e % 7), e);
            }
            black_box(t)
        })
    });
    g.bench_function("fablab_simulator", |b| {
        b.iter(|| {
            let mut sim = Simulator::new(config(), Registry::default()).unwrap();
            while sim.run_until(u64::MAX) {}
            black_box(sim.events())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
