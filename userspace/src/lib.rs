//! The `fablab` command and the pieces it is made of: the CLI, scenario loading,
//! pcap capture and frame decoding. I/O lives here and in `fablab-testbed`; the
//! per-packet logic lives in `fablab-dataplane`.

pub mod bench;
pub mod cli;
pub mod ebpf;
pub mod emu;
pub mod frames;
pub mod io;
pub mod pcap;
pub mod run;
pub mod scenario;
pub mod xdp;

pub use cli::{main, main_with};
