//! Compiles the kernels of `kernels/*.cu`, unmodified, with the host C++ compiler
//! against the emulation header (`kernels/emulation/cuda_cpu.h`) into a static
//! library whose C entry point `tessera_emu_launch` runs a kernel by name.
//!
//! For each kernel file a wrapper translation unit includes the header and the
//! file and registers every `TESSERA_KERNEL` it defines. Mutation builds (a kernel
//! file compiled again with a `TESSERA_MUTATE_*` macro, inside a namespace, its
//! kernels registered as `mutant::NAME`) let the tests prove that the parity
//! checks catch a wrong index.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

/// (kernel file stem, macro, namespace) of each mutation build; its kernels are
/// registered as `namespace::name`.
const MUTANTS: &[(&str, &str, &str)] = &[
    (
        "rms_norm",
        "TESSERA_MUTATE_RMS_NORM",
        "mutant_rms_norm_index",
    ),
    (
        "matmul_q8_0",
        "TESSERA_MUTATE_MMA_FRAGMENT",
        "mutant_mma_fragment",
    ),
    (
        "matmul_q8_0",
        "TESSERA_MUTATE_CP_ASYNC_WAIT",
        "mutant_cp_async_wait",
    ),
    (
        "matmul_w8a16",
        "TESSERA_MUTATE_F16_FRAGMENT",
        "mutant_f16_fragment",
    ),
    (
        "matmul_w8a16",
        "TESSERA_MUTATE_PRMT_SELECTOR",
        "mutant_prmt_selector",
    ),
    ("matmul_w8a16", "TESSERA_MUTATE_W16_WAIT", "mutant_w16_wait"),
    (
        "matmul_w8a16",
        "TESSERA_MUTATE_W16_BUFFER",
        "mutant_w16_buffer",
    ),
    (
        "attention",
        "TESSERA_MUTATE_ATTENTION_CAUSAL",
        "mutant_attention_causal",
    ),
    (
        "attention",
        "TESSERA_MUTATE_ATTENTION_GQA",
        "mutant_attention_gqa",
    ),
    (
        "attention",
        "TESSERA_MUTATE_ATTENTION_BARRIER",
        "mutant_attention_barrier",
    ),
    (
        "attention",
        "TESSERA_MUTATE_ATTENTION_WAIT",
        "mutant_attention_wait",
    ),
    (
        "wgmma_probe",
        "TESSERA_MUTATE_WGMMA_SWIZZLE",
        "mutant_wgmma_swizzle",
    ),
    (
        "wgmma_probe",
        "TESSERA_MUTATE_WGMMA_WAIT",
        "mutant_wgmma_wait",
    ),
    (
        "attention",
        "TESSERA_MUTATE_ATTENTION_BUFFER",
        "mutant_attention_buffer",
    ),
    (
        "matmul_w8a16_wgmma",
        "TESSERA_MUTATE_WGMMA_A_FRAGMENT",
        "mutant_wgmma_a_fragment",
    ),
    (
        "matmul_w8a16_wgmma",
        "TESSERA_MUTATE_WGMMA_B_SWIZZLE",
        "mutant_wgmma_b_swizzle",
    ),
    (
        "matmul_w8a16_wgmma",
        "TESSERA_MUTATE_WGMMA_RING_WAIT",
        "mutant_wgmma_ring_wait",
    ),
    (
        "matmul_w8a16_wgmma",
        "TESSERA_MUTATE_MBARRIER_PARITY",
        "mutant_mbarrier_parity",
    ),
    (
        "matmul_w8a16_wgmma",
        "TESSERA_MUTATE_TMA_EXPECT_TX",
        "mutant_tma_expect_tx",
    ),
    (
        "matmul_w8a16_wgmma",
        "TESSERA_MUTATE_TMA_EMPTY_ARRIVE",
        "mutant_tma_empty_arrive",
    ),
    (
        "matmul_w8a16_wgmma",
        "TESSERA_MUTATE_PERSISTENT_RING_PHASE",
        "mutant_persistent_ring_phase",
    ),
    (
        "matmul_w8a16_wgmma",
        "TESSERA_MUTATE_PERSISTENT_RASTER",
        "mutant_persistent_raster",
    ),
    // v4 shares v2/v3's softmax and warp layout (attention_tc.cuh): their
    // causal and GQA mutants again, in its own file's build.
    (
        "attention_wgmma",
        "TESSERA_MUTATE_ATTENTION_CAUSAL",
        "mutant_attention_wgmma_causal",
    ),
    (
        "attention_wgmma",
        "TESSERA_MUTATE_ATTENTION_GQA",
        "mutant_attention_wgmma_gqa",
    ),
    (
        "attention_wgmma",
        "TESSERA_MUTATE_ATTENTION_P_FRAGMENT",
        "mutant_attention_p_fragment",
    ),
    (
        "attention_wgmma",
        "TESSERA_MUTATE_ATTENTION_PREFIX_EDGE",
        "mutant_attention_prefix_edge",
    ),
    (
        "attention_wgmma",
        "TESSERA_MUTATE_ATTENTION_S_WAIT",
        "mutant_attention_s_wait",
    ),
    (
        "attention_wgmma",
        "TESSERA_MUTATE_ATTENTION_O_RESCALE",
        "mutant_attention_o_rescale",
    ),
    (
        "attention_wgmma",
        "TESSERA_MUTATE_ATTENTION_EMPTY_ARRIVE",
        "mutant_attention_empty_arrive",
    ),
];

// The backend's own parser, the same file.
#[path = "../backend-cuda/src/kernel_names.rs"]
mod kernel_names;

/// `mutant`: (macro, namespace).
fn wrapper(
    header: &Path,
    kernels: &Path,
    stem: &str,
    names: &[String],
    mutant: Option<(&str, &str)>,
) -> String {
    let mut text = String::new();
    let function = match mutant {
        None => format!("tessera_emu_register_{stem}"),
        Some((_, space)) => format!("tessera_emu_register_{space}"),
    };
    if let Some((flag, _)) = mutant {
        writeln!(text, "#define {flag} 1").unwrap();
    }
    writeln!(text, "#include \"{}\"", header.display()).unwrap();
    writeln!(
        text,
        "#include \"{}\"",
        kernels.join("common.cuh").display()
    )
    .unwrap();
    let file = kernels.join(format!("{stem}.cu"));
    match mutant {
        None => writeln!(text, "#include \"{}\"", file.display()).unwrap(),
        Some((_, space)) => writeln!(
            text,
            "namespace {space} {{\n#include \"{}\"\n}}",
            file.display()
        )
        .unwrap(),
    }
    writeln!(text, "void {function}() {{").unwrap();
    for name in names {
        let (label, symbol) = match mutant {
            None => (name.clone(), name.clone()),
            Some((_, space)) => (format!("{space}::{name}"), format!("{space}::{name}")),
        };
        writeln!(
            text,
            "    cuda_emu::register_kernel(\"{label}\", &cuda_emu::kernel_entry<&{symbol}>);"
        )
        .unwrap();
    }
    writeln!(text, "}}").unwrap();
    text
}

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let kernels = manifest
        .join("../../kernels")
        .canonicalize()
        .expect("the kernels/ folder of the workspace");
    let emulation = kernels.join("emulation");
    let header = emulation.join("cuda_cpu.h");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed={}", kernels.display());

    let mut stems: Vec<String> = fs::read_dir(&kernels)
        .expect("kernels/ is readable")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "cu").then(|| path.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    stems.sort();

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        // The kernels read int8 tiles as 32-bit words, as GPU code does.
        .flag("-fno-strict-aliasing")
        .flag("-Wno-unused-parameter")
        .flag("-Wno-unused-function")
        .flag("-Wno-unknown-pragmas")
        // Tensor maps are 128-byte aligned parameters; GCC notes an old ABI change.
        .flag("-Wno-psabi")
        .file(emulation.join("cuda_cpu.cpp"));
    let mut registry = String::new();
    let mut calls = String::new();
    let mut add_wrapper =
        |stem: &str, mutant: Option<(&str, &str)>, registry: &mut String, calls: &mut String| {
            let source = fs::read_to_string(kernels.join(format!("{stem}.cu")))
                .expect("kernel file is readable");
            let names: Vec<String> = kernel_names::kernel_names(&source)
                .into_iter()
                .map(String::from)
                .collect();
            let text = wrapper(&header, &kernels, stem, &names, mutant);
            let unit = mutant.map_or(stem, |(_, space)| space);
            let path = out.join(format!("emu_{unit}.cpp"));
            fs::write(&path, text).expect("OUT_DIR is writable");
            build.file(&path);
            writeln!(registry, "void tessera_emu_register_{unit}();").unwrap();
            writeln!(calls, "    tessera_emu_register_{unit}();").unwrap();
        };
    for stem in &stems {
        add_wrapper(stem, None, &mut registry, &mut calls);
    }
    for (stem, flag, space) in MUTANTS {
        add_wrapper(stem, Some((flag, space)), &mut registry, &mut calls);
    }
    let registry_path = out.join("emu_registry.cpp");
    fs::write(
        &registry_path,
        format!("{registry}extern \"C\" void tessera_emu_register_all() {{\n{calls}}}\n"),
    )
    .expect("OUT_DIR is writable");
    build.file(&registry_path);
    build.compile("tessera_cuda_emu");
}
