//! Writes frames to pcap files (nanosecond timestamps, Ethernet link type) that
//! Wireshark and tshark read. Used by `--pcap` captures and by the wire tests.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, TsResolution};

/// Largest frame a capture records whole (a 9000-byte jumbo frame plus headroom).
pub const SNAPLEN: u32 = 9216;

/// A pcap file being written.
#[derive(Debug)]
pub struct PcapSink<W: Write> {
    writer: PcapWriter<W>,
}

impl PcapSink<BufWriter<File>> {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path)
            .with_context(|| format!("cannot create pcap file {}", path.display()))?;
        Self::new(BufWriter::new(file))
            .with_context(|| format!("cannot write pcap header to {}", path.display()))
    }
}

impl<W: Write> PcapSink<W> {
    pub fn new(w: W) -> anyhow::Result<Self> {
        let header = PcapHeader {
            snaplen: SNAPLEN,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::NanoSecond,
            ..PcapHeader::default()
        };
        Ok(PcapSink {
            writer: PcapWriter::with_header(w, header)?,
        })
    }

    /// Records one frame seen at `t_ns` nanoseconds (virtual or wall time).
    pub fn write(&mut self, t_ns: u64, frame: &[u8]) -> anyhow::Result<()> {
        let keep = frame.len().min(SNAPLEN as usize);
        let packet = PcapPacket::new(
            Duration::from_nanos(t_ns),
            frame.len() as u32,
            &frame[..keep],
        );
        self.writer.write_packet(&packet)?;
        Ok(())
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(self) -> anyhow::Result<W> {
        let mut w = self.writer.into_writer();
        w.flush()?;
        Ok(w)
    }
}
