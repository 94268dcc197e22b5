//! The backend flags every command that runs the model takes: `--backend`,
//! `--precision`, `--gpu-precision`, `--tuning`, `--threads`, each with its `TESSERA_*`
//! variable. What they select is `tessera-runtime`'s business.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, ValueEnum};
use tessera_runtime::{Arithmetic, BackendChoice, BackendOptions, Precision, Tuning};

/// `--backend`: the runtime's [`BackendChoice`], with help texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendFlag {
    /// CUDA if a device is present (build with `--features cuda`), else a real
    /// (non-CPU) wgpu adapter (`--features wgpu`), else the CPU.
    Auto,
    /// The CPU backend (`--precision` picks its arithmetic).
    Cpu,
    /// Our CUDA kernels on device 0 (needs a build with `--features cuda`).
    Cuda,
    /// WGSL shaders on any wgpu adapter, a CPU one (lavapipe) included when
    /// chosen explicitly (needs a build with `--features wgpu`).
    Wgpu,
}

impl From<BackendFlag> for BackendChoice {
    fn from(flag: BackendFlag) -> BackendChoice {
        match flag {
            BackendFlag::Auto => BackendChoice::Auto,
            BackendFlag::Cpu => BackendChoice::Cpu,
            BackendFlag::Cuda => BackendChoice::Cuda,
            BackendFlag::Wgpu => BackendChoice::Wgpu,
        }
    }
}

#[derive(Args, Clone, Debug)]
pub struct BackendArgs {
    /// Where to run: auto picks CUDA, then a GPU wgpu adapter, then the CPU.
    #[arg(long, env = "TESSERA_BACKEND", value_enum, default_value = "auto")]
    backend: BackendFlag,
    /// CPU arithmetic: fast (int8 activations, SIMD) or reference (f32 activations).
    #[arg(long, env = "TESSERA_PRECISION", default_value_t = Precision::Fast)]
    pub precision: Precision,
    /// Arithmetic of the CUDA matmuls on Q8_0 weights: w8a8 (int8 activations,
    /// llama.cpp's bits) or w8a16 (f16 activations and attention on the f16
    /// tensor cores, closer to f32; sm_80+).
    #[arg(
        long,
        env = "TESSERA_GPU_PRECISION",
        default_value = "w8a8",
        value_parser = PossibleValuesParser::new(["w8a8", "w8a16"])
            .map(|s| s.parse::<Arithmetic>().expect("one of the possible values"))
    )]
    pub gpu_precision: Arithmetic,
    /// Which W8A16 GEMM configurations CUDA runs: a table `tessera tune` wrote
    /// (it must have been measured on this GPU and driver), `default` (this
    /// GPU's table in the user cache when there is one, else the built-in
    /// choice) or `builtin`.
    #[arg(
        long,
        env = "TESSERA_TUNING",
        value_name = "FILE|default|builtin",
        default_value = "default"
    )]
    pub tuning: Tuning,
    /// CPU worker threads (default: all cores), from 1 to 4096.
    #[arg(long, env = "TESSERA_THREADS", value_parser = crate::flags::count::<1, { crate::flags::MAX_THREADS }>)]
    threads: Option<usize>,
}

impl BackendArgs {
    pub fn choice(&self) -> BackendChoice {
        self.backend.into()
    }

    /// The options these flags give, without a profiler.
    pub fn options(&self) -> BackendOptions {
        BackendOptions {
            precision: self.precision,
            threads: self.threads,
            gpu_precision: self.gpu_precision,
            tuning: self.tuning.clone(),
            profiler: None,
        }
    }
}
