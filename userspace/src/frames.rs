//! Example frames and a decoder for captures: `fablab frames sample` writes one frame
//! of every kind fablab sends, `fablab frames decode` prints a capture through
//! fablab's own parser, INT stacks and ACK extensions included (tshark has no INT
//! dissector).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use fablab_dataplane::wire::ack::SackBitmap;
use fablab_dataplane::wire::aeth::{Syndrome, CREDITS_UNLIMITED};
use fablab_dataplane::wire::bth::DEFAULT_PKEY;
use fablab_dataplane::wire::frame::ECN_ECT0;
use fablab_dataplane::wire::{
    AckExtRepr, AethRepr, Body, BthRepr, FrameRepr, HopMetadata, IntMdRepr, IntStack, L3Repr,
    Opcode, INT_DSCP_BIT, ROCEV2_UDP_PORT,
};

use crate::pcap::PcapSink;

/// One sample frame: what it shows, and its bytes.
#[derive(Debug, Clone)]
pub struct Sample {
    pub what: &'static str,
    pub psn: u32,
    pub entropy: u16,
    pub bytes: Vec<u8>,
}

fn l3(entropy: u16, from: u8, to: u8) -> L3Repr {
    L3Repr {
        eth_src: [0x02, 0xfa, 0xb0, 0, 0, from],
        eth_dst: [0x02, 0xfa, 0xb0, 0, 0, to],
        ip_src: [10, 0, 0, from],
        ip_dst: [10, 0, 0, to],
        dscp: 26,
        ecn: ECN_ECT0,
        ttl: 64,
        ip_id: 0,
        udp_src: entropy,
    }
}

fn bth(opcode: Opcode, psn: u32, pad_count: u8) -> BthRepr {
    BthRepr {
        opcode,
        solicited: false,
        migreq: false,
        pad_count,
        pkey: DEFAULT_PKEY,
        fecn: false,
        becn: false,
        dest_qp: 0x000011,
        ack_req: true,
        psn,
    }
}

fn emit(f: &FrameRepr<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; f.buffer_len()];
    f.emit(&mut buf).expect("sample frames are valid");
    buf
}

/// A sample INT stack: two hops, as a leaf and a spine would push them.
pub fn sample_int() -> IntStack {
    let mut int = IntStack::new(IntMdRepr::fablab(8), ROCEV2_UDP_PORT);
    for (node, q, ts) in [(100u32, 12_288u32, 1_000_000u64), (200, 0, 1_002_100)] {
        int.push(HopMetadata {
            node_id: node,
            l1_ingress_port: 1,
            l1_egress_port: 5,
            hop_latency_ns: 850,
            queue_id: 0,
            queue_occupancy: q,
            ingress_ts_ns: ts - 850,
            egress_ts_ns: ts,
            tx_utilization_ppm: 870_000,
            tx_bytes: 123_456_789,
            link_rate_mbps: 100_000,
            ..HopMetadata::default()
        })
        .expect("two hops fit");
    }
    int
}

/// One frame of every kind: sprayed data segments on different entropies, a data
/// segment carrying INT, a fablab ACK with SACK and echoed INT, a NAK and a CNP.
pub fn samples() -> Vec<Sample> {
    let payload: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::new();
    for (i, (op, entropy)) in [
        (Opcode::RC_SEND_FIRST, 0xc000u16),
        (Opcode::RC_SEND_MIDDLE, 0xc001),
        (Opcode::RC_SEND_LAST, 0xc002),
    ]
    .into_iter()
    .enumerate()
    {
        let psn = 100 + i as u32;
        let f = FrameRepr {
            l3: l3(entropy, 1, 2),
            int: None,
            bth: bth(op, psn, 0),
            body: Body::Data { payload: &payload },
        };
        out.push(Sample {
            what: "data segment, sprayed on its own entropy",
            psn,
            entropy,
            bytes: emit(&f),
        });
    }
    let tail = &payload[..1001];
    let mut with_int = FrameRepr {
        l3: l3(0xc003, 1, 2),
        int: Some(sample_int()),
        bth: bth(Opcode::RC_SEND_ONLY, 103, FrameRepr::pad_for(tail.len())),
        body: Body::Data { payload: tail },
    };
    with_int.l3.dscp |= INT_DSCP_BIT;
    out.push(Sample {
        what: "data segment carrying a two-hop INT-MD stack",
        psn: 103,
        entropy: 0xc003,
        bytes: emit(&with_int),
    });
    let mut sack = SackBitmap::default();
    sack.set(1); // PSN 102 arrived ahead of 101
    let ack = FrameRepr {
        l3: l3(0xd000, 2, 1),
        int: None,
        bth: bth(Opcode::RC_ACK, 100, 0),
        body: Body::Ack {
            aeth: AethRepr {
                syndrome: Syndrome::Ack {
                    credits: CREDITS_UNLIMITED,
                },
                msn: 0,
            },
            ext: Some(AckExtRepr {
                ecn_echo: true,
                duplicate: false,
                trimmed: false,
                acked_psn: 102,
                cumulative_psn: 101,
                sack,
                int: Some(sample_int()),
            }),
        },
    };
    out.push(Sample {
        what: "fablab ACK: cumulative 101, SACK 102, ECN-echo, echoed INT",
        psn: 100,
        entropy: 0xd000,
        bytes: emit(&ack),
    });
    let nak = FrameRepr {
        l3: l3(0xd001, 2, 1),
        int: None,
        bth: bth(Opcode::RC_ACK, 100, 0),
        body: Body::Ack {
            aeth: AethRepr {
                syndrome: Syndrome::Nak { code: 0 },
                msn: 0,
            },
            ext: None,
        },
    };
    out.push(Sample {
        what: "plain RoCEv2 NAK (PSN sequence error)",
        psn: 100,
        entropy: 0xd001,
        bytes: emit(&nak),
    });
    let cnp = FrameRepr {
        l3: l3(0xd002, 2, 1),
        int: None,
        bth: bth(Opcode::CNP, 0, 0),
        body: Body::Cnp,
    };
    out.push(Sample {
        what: "RoCEv2 CNP",
        psn: 0,
        entropy: 0xd002,
        bytes: emit(&cnp),
    });
    out
}

/// Writes [`samples`] to a pcap, 1 µs apart.
pub fn write_samples(path: &Path) -> anyhow::Result<Vec<Sample>> {
    let s = samples();
    let mut sink = PcapSink::create(path)?;
    for (i, f) in s.iter().enumerate() {
        sink.write(i as u64 * 1_000, &f.bytes)?;
    }
    sink.finish()?;
    Ok(s)
}

/// One line (plus INT lines) describing a frame, or why it does not parse.
pub fn describe(bytes: &[u8]) -> String {
    let f = match FrameRepr::parse(bytes) {
        Ok(f) => f,
        Err(e) => return format!("not a fablab frame: {e}"),
    };
    let mut s = String::new();
    let ip = |a: [u8; 4]| format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]);
    let _ = write!(
        s,
        "{} -> {} entropy {:#06x} ecn {} opcode {:#04x} qp {:#08x} psn {}",
        ip(f.l3.ip_src),
        ip(f.l3.ip_dst),
        f.l3.udp_src,
        f.l3.ecn,
        f.bth.opcode.0,
        f.bth.dest_qp,
        f.bth.psn
    );
    match &f.body {
        Body::Data { payload } => {
            let _ = write!(s, " data {} bytes", payload.len());
        }
        Body::Ack { aeth, ext } => {
            let _ = write!(s, " {:?} msn {}", aeth.syndrome, aeth.msn);
            if let Some(e) = ext {
                let sacked: Vec<String> = e
                    .sack
                    .iter()
                    .map(|k| (e.cumulative_psn + 1 + k as u32).to_string())
                    .collect();
                let _ = write!(
                    s,
                    " | acked {} cumulative {} sack [{}] ecn-echo {}",
                    e.acked_psn,
                    e.cumulative_psn,
                    sacked.join(","),
                    e.ecn_echo
                );
                if let Some(int) = &e.int {
                    describe_int(&mut s, "echoed INT", int);
                }
            }
        }
        Body::Cnp => s.push_str(" CNP"),
    }
    if let Some(int) = &f.int {
        describe_int(&mut s, "INT", int);
    }
    s
}

fn describe_int(s: &mut String, label: &str, int: &IntStack) {
    let _ = write!(
        s,
        "\n    {label}: {} hops, {} remaining{}",
        int.hops().len(),
        int.md.remaining_hops,
        if int.md.hops_exceeded { ", E set" } else { "" }
    );
    for h in int.hops() {
        let _ = write!(
            s,
            "\n      node {} port {}->{} queue {} B egress_ts {} tx_bytes {} rate {} Mb/s",
            h.node_id,
            h.l1_ingress_port,
            h.l1_egress_port,
            h.queue_occupancy,
            h.egress_ts_ns,
            h.tx_bytes,
            h.link_rate_mbps
        );
    }
}

/// Reads a pcap and describes every frame.
pub fn decode(path: &Path) -> anyhow::Result<Vec<String>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = pcap_file::pcap::PcapReader::new(file)
        .with_context(|| format!("{} is not a pcap file", path.display()))?;
    let mut out = Vec::new();
    while let Some(p) = reader.next_packet() {
        let p = p.with_context(|| format!("{}: bad packet record", path.display()))?;
        out.push(format!(
            "{:>12.3} us  {}",
            p.timestamp.as_nanos() as f64 / 1e3,
            describe(&p.data)
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_parses_back() {
        for s in samples() {
            let d = describe(&s.bytes);
            assert!(!d.starts_with("not a fablab frame"), "{}: {d}", s.what);
        }
    }

    #[test]
    fn garbage_is_described_not_panicked_on() {
        assert!(describe(&[0u8; 3]).starts_with("not a fablab frame: Ethernet"));
    }
}
