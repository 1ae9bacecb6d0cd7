//! The whole fablab CLI, with one more congestion-control algorithm.
mod aimd_int;

use fablab_dataplane::cc::Registry;

fn main() -> std::process::ExitCode {
    let mut registry = Registry::default();
    registry.register("aimd-int", aimd_int::factory);
    fablab::main_with(registry)
}
