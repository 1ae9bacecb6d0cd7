//! Fuzzes every wire parser with arbitrary bytes: `cargo +nightly fuzz run frame_parser`
//! from `dataplane/`. A frame that parses must emit and parse back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fablab_dataplane::wire::fuzz::check_frame(data);
});
