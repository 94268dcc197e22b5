//! What this machine can do at best, measured in the same run as a benchmark
//! (not quoted from a data sheet): on the CPU a large memory copy's bandwidth
//! and the fast path's own Q8_0 matmul at a large shape; on CUDA a
//! device-to-device copy and cuBLAS's bf16 GEMM on a large product
//! (`tessera_backend_cuda::ceilings`). A benchmark's achieved rates are read
//! against them.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tessera_backend::{Backend, BackendError, HostTensor};
use tessera_backend_cpu::{CpuBackend, Precision};
use tessera_gguf::{quantize_row_q8_0, BlockQ8_0, GgmlType};

/// The ceilings of one device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ceilings {
    /// Bytes copied per second by one large `memcpy` (read once, written once).
    pub copy_gb_per_s: f64,
    /// The fast path's Q8_0 matmul at `matmul_shape`, 2·rows·k·n per second.
    pub matmul_gflop_per_s: f64,
    /// `rows×k×n` of that matmul.
    pub matmul_shape: String,
    /// Which matmul: the CPU fast path's Q8_0 kernel, cuBLAS bf16.
    #[serde(default)]
    pub matmul_kernel: String,
    /// Which copy: host memory, device to device; and its size.
    #[serde(default)]
    pub copy_kind: String,
}

/// Sizes of the measurement: the copy's bytes and the matmul's (rows, k, n).
#[derive(Clone, Copy, Debug)]
pub struct CeilingSizes {
    pub copy_bytes: usize,
    pub matmul: (usize, usize, usize),
    /// Timed repetitions (the best counts).
    pub repeats: usize,
}

impl Default for CeilingSizes {
    /// 256 MiB copied; a 512 × 2560 by 2560 × 2560 matmul (one Qwen3-4B
    /// projection at a served batch); three repetitions.
    fn default() -> Self {
        CeilingSizes {
            copy_bytes: 256 << 20,
            matmul: (512, 2560, 2560),
            repeats: 3,
        }
    }
}

/// The CPU's ceilings with `threads` workers (all cores when `None`).
pub fn cpu_ceilings(threads: Option<usize>, sizes: CeilingSizes) -> Result<Ceilings, BackendError> {
    let repeats = sizes.repeats.max(1);
    let source = vec![1u8; sizes.copy_bytes.max(1)];
    let mut target = vec![0u8; source.len()];
    let mut best_copy = f64::INFINITY;
    for _ in 0..repeats {
        let start = Instant::now();
        target.copy_from_slice(&source);
        std::hint::black_box(&mut target);
        best_copy = best_copy.min(start.elapsed().as_secs_f64());
    }
    let (rows, k, n) = sizes.matmul;
    let backend = CpuBackend::with_options(Precision::Fast, threads)?;
    let weights: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919) % 255) as f32 / 127.0 - 1.0)
        .collect();
    let mut blocks = vec![BlockQ8_0::default(); weights.len() / 32];
    quantize_row_q8_0(&weights, &mut blocks);
    let tensor = HostTensor::in_memory(
        "ceiling",
        GgmlType::Q8_0,
        n,
        k,
        BlockQ8_0::as_bytes(&blocks).to_vec(),
    )
    .map_err(|e| BackendError::Device(e.to_string()))?;
    let weight = backend.upload_weight(&tensor)?;
    let x_values: Vec<f32> = (0..rows * k)
        .map(|i| ((i * 104_729) % 251) as f32 / 125.0 - 1.0)
        .collect();
    let mut x = backend.alloc(rows * k)?;
    backend.write(&mut x, &x_values)?;
    let mut out = backend.alloc(rows * n)?;
    backend.matmul(&x, rows, &weight, &mut out)?; // warm-up
    let mut best_matmul = f64::INFINITY;
    for _ in 0..repeats {
        let start = Instant::now();
        backend.matmul(&x, rows, &weight, &mut out)?;
        backend.synchronize()?;
        best_matmul = best_matmul.min(start.elapsed().as_secs_f64());
    }
    Ok(Ceilings {
        copy_gb_per_s: sizes.copy_bytes as f64 / best_copy / 1e9,
        matmul_gflop_per_s: 2.0 * (rows * k * n) as f64 / best_matmul / 1e9,
        matmul_shape: format!("{rows}x{k}x{n}"),
        matmul_kernel: "cpu fast-path Q8_0 matmul".into(),
        copy_kind: format!("host memcpy of {} MiB", sizes.copy_bytes >> 20),
    })
}

/// The ceilings of CUDA device `ordinal`: a 1 GiB device-to-device copy and
/// cuBLAS's bf16 GEMM at 8192 × 8192 × 8192 (an error in a build without the
/// `cuda` feature, or without libcublas, saying so).
pub fn cuda_ceilings(ordinal: usize) -> Result<Ceilings, BackendError> {
    let c = tessera_backend_cuda::ceilings::measure(ordinal, 1 << 30, (8192, 8192, 8192))
        .map_err(BackendError::Device)?;
    Ok(Ceilings {
        copy_gb_per_s: c.copy_gb_per_s,
        matmul_gflop_per_s: c.bf16_gflop_per_s,
        matmul_shape: format!("{}x{}x{}", c.shape.0, c.shape.1, c.shape.2),
        matmul_kernel: c.gemm,
        copy_kind: format!("device-to-device copy of {} MiB", c.copy_bytes >> 20),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_are_measured_and_positive() {
        let sizes = CeilingSizes {
            copy_bytes: 1 << 20,
            matmul: (16, 256, 128),
            repeats: 2,
        };
        let c = cpu_ceilings(Some(1), sizes).unwrap();
        assert!(
            c.copy_gb_per_s > 0.0 && c.copy_gb_per_s.is_finite(),
            "{c:?}"
        );
        assert!(
            c.matmul_gflop_per_s > 0.0 && c.matmul_gflop_per_s.is_finite(),
            "{c:?}"
        );
        assert_eq!(c.matmul_shape, "16x256x128");
    }
}
