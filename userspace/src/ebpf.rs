//! The eBPF objects compiled from `ebpf/*.c` by the build script (each `Err(why)`
//! when this build had no clang or libbpf headers), and loading them.

use std::io;

include!(concat!(env!("OUT_DIR"), "/ebpf.rs"));

/// The object `built`, or an error that says why this build lacks it and what to do.
pub fn object(
    built: Result<&'static [u8], &'static str>,
    needs: &str,
) -> io::Result<&'static [u8]> {
    built.map_err(|why| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{needs} needs an eBPF program, but {why}; run scripts/setup.sh and rebuild"),
        )
    })
}

/// Parses `object` and creates its maps (its programs are loaded one by one by the
/// caller). fablab's programs need no CO-RE relocations, so the loader keeps no
/// kernel BTF; and since aya's loader parses the kernel's BTF when it is made (tens
/// of milliseconds), one loader serves every call.
pub fn load(object: &[u8]) -> io::Result<aya::Ebpf> {
    static LOADER: std::sync::OnceLock<std::sync::Mutex<aya::EbpfLoader<'static>>> =
        std::sync::OnceLock::new();
    let loader = LOADER.get_or_init(|| {
        let mut l = aya::EbpfLoader::new();
        l.btf(None);
        std::sync::Mutex::new(l)
    });
    let mut loader = loader.lock().unwrap_or_else(|p| p.into_inner());
    loader.load(object).map_err(io::Error::other)
}
