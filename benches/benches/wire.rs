//! Wire-format costs, each beside a baseline run in the same process:
//! - parsing a whole fablab frame (Ethernet..ICRC, INT, ACK extension) against
//!   etherparse slicing the same bytes only up to UDP;
//! - emitting a frame (headers, IPv4 checksum, ICRC) against copying its bytes.
//!
//! Run: `cargo bench -p fablab-benches --bench wire`. Record ratios in docs/results.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use etherparse::SlicedPacket;
use fablab::frames::samples;
use fablab_dataplane::wire::FrameRepr;

fn bench(c: &mut Criterion) {
    let samples = samples();
    // 0: 1 KiB data segment; 3: data with a two-hop INT stack; 4: ACK + SACK + INT.
    for (name, idx) in [
        ("data_1k", 0usize),
        ("data_1k_int2", 3),
        ("ack_sack_int2", 4),
    ] {
        let bytes = &samples[idx].bytes;
        let mut g = c.benchmark_group(format!("parse/{name}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("baseline_etherparse_to_udp", |b| {
            b.iter(|| SlicedPacket::from_ethernet(black_box(bytes)).is_ok())
        });
        g.bench_function("fablab_full_frame", |b| {
            b.iter(|| FrameRepr::parse(black_box(bytes)).is_ok())
        });
        g.finish();

        let frame = FrameRepr::parse(bytes).unwrap();
        let mut out = vec![0u8; frame.buffer_len()];
        let mut g = c.benchmark_group(format!("emit/{name}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("baseline_memcpy", |b| {
            b.iter(|| out.copy_from_slice(black_box(bytes)))
        });
        g.bench_function("fablab_emit", |b| {
            b.iter(|| black_box(&frame).emit(&mut out).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
