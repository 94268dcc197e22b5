//! The adapter every wgpu test runs on, or a printed reason why there is none.

use std::io::Write;

use tessera_backend_wgpu::{WgpuBackend, WgpuOptions};

/// Set (by CI's `wgpu-lavapipe` step) where an adapter must exist: a missing
/// one fails the test instead of skipping it.
pub const REQUIRE_ENV: &str = "TESSERA_REQUIRE_WGPU";

/// A backend on any adapter, lavapipe included; `None` (with the reason written
/// to stderr, past the test harness's capture) when this machine has none.
pub fn backend(test: &str, options: WgpuOptions) -> Option<WgpuBackend> {
    let options = WgpuOptions {
        allow_cpu_adapter: true,
        ..options
    };
    match WgpuBackend::with_options(&options) {
        Ok(b) => {
            println!("{test}: on {}", b.adapter());
            Some(b)
        }
        Err(e) if std::env::var_os(REQUIRE_ENV).is_some() => {
            panic!("{test}: {REQUIRE_ENV} is set but there is no wgpu adapter: {e}")
        }
        Err(e) => {
            // Not through the captured `println!`: a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: no wgpu adapter ({e}); install mesa-vulkan-drivers for lavapipe"
            );
            None
        }
    }
}
