//! The names of the kernels a `.cu` source defines. A file of its own, with no
//! dependencies, so that `crates/cuda-emulated/build.rs` (which registers every
//! kernel with the emulator) includes this same parser instead of a copy.

/// The names of the kernels a module defines (`TESSERA_KERNEL void name(`,
/// with or without `__launch_bounds__(…)` before the name).
pub fn kernel_names(source: &str) -> Vec<&str> {
    source
        .split("TESSERA_KERNEL void")
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.trim_start();
            let rest = rest
                .strip_prefix("__launch_bounds__(")
                .and_then(|r| r.split_once(')'))
                .map_or(rest, |(_, after)| after.trim_start());
            let end = rest.find('(')?;
            Some(rest[..end].trim())
        })
        .filter(|name| !name.is_empty())
        .collect()
}
