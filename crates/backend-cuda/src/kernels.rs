//! The kernel sources, embedded at build time, and how NVRTC compiles them: each
//! `.cu` file is one module, with `common.cuh` (and `attention_tc.cuh`, which the
//! tensor-core attention modules share) spliced in where it is included (so
//! NVRTC needs no include path and no CUDA headers).

/// `kernels/common.cuh`.
pub const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// The headers a module may include besides `common.cuh`: (name, source).
pub const HEADERS: &[(&str, &str)] = &[(
    "attention_tc.cuh",
    include_str!("../../../kernels/attention_tc.cuh"),
)];

/// Every module: (file stem, source).
pub const MODULES: &[(&str, &str)] = &[
    ("add", include_str!("../../../kernels/add.cu")),
    ("attention", include_str!("../../../kernels/attention.cu")),
    (
        "attention_wgmma",
        include_str!("../../../kernels/attention_wgmma.cu"),
    ),
    ("copy", include_str!("../../../kernels/copy.cu")),
    ("embedding", include_str!("../../../kernels/embedding.cu")),
    (
        "matmul_dense",
        include_str!("../../../kernels/matmul_dense.cu"),
    ),
    (
        "matmul_q8_0",
        include_str!("../../../kernels/matmul_q8_0.cu"),
    ),
    (
        "matmul_w8a16",
        include_str!("../../../kernels/matmul_w8a16.cu"),
    ),
    (
        "matmul_w8a16_wgmma",
        include_str!("../../../kernels/matmul_w8a16_wgmma.cu"),
    ),
    ("rms_norm", include_str!("../../../kernels/rms_norm.cu")),
    ("rope", include_str!("../../../kernels/rope.cu")),
    ("score_head", include_str!("../../../kernels/score_head.cu")),
    ("swiglu", include_str!("../../../kernels/swiglu.cu")),
    (
        "wgmma_probe",
        include_str!("../../../kernels/wgmma_probe.cu"),
    ),
];

const INCLUDE_COMMON: &str = "#include \"common.cuh\"";

/// The options every NVRTC compilation gets (besides the architecture);
/// `scripts/check-kernels.sh` compiles with the same.
pub const NVRTC_OPTIONS: &[&str] = &["--std=c++17", "--device-as-default-execution-space"];

/// The self-contained source of a module, or `None` for an unknown stem.
pub fn module_source(stem: &str) -> Option<String> {
    MODULES
        .iter()
        .find(|(name, _)| *name == stem)
        .map(|(_, source)| {
            HEADERS.iter().fold(
                source.replacen(INCLUDE_COMMON, COMMON, 1),
                |text, (name, header)| text.replacen(&format!("#include \"{name}\""), header, 1),
            )
        })
}

pub use crate::kernel_names::kernel_names;

/// The virtual architecture NVRTC targets for a device: `compute_XY`, and on
/// compute capability 9.0 `compute_90a`, whose arch-specific instructions
/// (`wgmma`, `setmaxnreg`, TMA multicast) the Hopper kernels need; its PTX runs
/// on sm_90 only, which is what 9.0 is.
pub fn nvrtc_arch(major: u32, minor: u32) -> String {
    match (major, minor) {
        (9, 0) => "compute_90a".to_string(),
        _ => format!("compute_{major}{minor}"),
    }
}

/// A stable 64-bit FNV-1a hash (the on-disk PTX cache key).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for &byte in *part {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        // Separate the parts, so ("ab", "c") and ("a", "bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_includes_common_and_defines_kernels() {
        for (stem, source) in MODULES {
            assert!(
                source.contains(INCLUDE_COMMON),
                "{stem} does not include common.cuh"
            );
            let full = module_source(stem).expect("known stem");
            assert!(!full.contains("#include"), "{stem}: include left in");
            assert!(
                full.contains("quantize_q8_0_lane"),
                "{stem}: common.cuh not spliced"
            );
            assert!(!kernel_names(source).is_empty(), "{stem} defines no kernel");
        }
    }

    #[test]
    fn kernel_names_are_found_with_and_without_launch_bounds() {
        let source = "TESSERA_KERNEL void a_f32(int x) {}\n\
                      TESSERA_KERNEL void __launch_bounds__(128)\n    b_f32(int y) {}";
        assert_eq!(kernel_names(source), vec!["a_f32", "b_f32"]);
    }

    #[test]
    fn architectures_and_cache_keys() {
        assert_eq!(nvrtc_arch(9, 0), "compute_90a");
        assert_eq!(nvrtc_arch(8, 0), "compute_80");
        assert_eq!(nvrtc_arch(8, 9), "compute_89");
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        assert_eq!(fnv1a(&[b"x"]), fnv1a(&[b"x"]));
    }
}
