//! fablab's sans-IO core.
//!
//! Owns the per-packet logic of fablab's NICs and switches and the wire formats they
//! speak. It must never read a clock, touch a socket or file, or draw randomness from
//! the OS: time and random numbers are arguments, so the same code runs inside the
//! discrete-event simulator, the userspace datapath and (for the wire formats) beside
//! the eBPF programs.
//!
//! Layers, as in smoltcp:
//! - [`wire`]: `Packet<T>` views and `Repr` values for RoCEv2 (BTH, AETH, ICRC),
//!   P4 INT v2.1 over UDP, and fablab's ACK extension, plus whole-frame parse/emit.
#![forbid(unsafe_code)]

pub mod cc;
pub mod codec;
pub mod nic;
pub mod packet;
pub mod payload;
pub mod rng;
pub mod sim;
pub mod switch;
pub mod wire;
