//! A CUDA device's own ceilings, measured in the same run as a benchmark: the
//! bandwidth of a large device-to-device copy and cuBLAS's bf16 GEMM rate on a
//! large product (bf16 inputs and output, f32 accumulation: what a bf16
//! `nn.Linear` runs, the dense 16-bit rate a user would otherwise get).
//! libcublas is opened at run time, as the benchmark's anchors open it
//! (`tests/anchors/`), so building needs no CUDA toolkit; without the `cuda`
//! feature, or without the library, [`measure`] says why instead.

/// What [`measure`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuCeilings {
    /// Bytes copied per second (each read once and written once).
    pub copy_gb_per_s: f64,
    pub copy_bytes: usize,
    /// 2·m·n·k per second of the GEMM.
    pub bf16_gflop_per_s: f64,
    /// (m, n, k) of the GEMM.
    pub shape: (usize, usize, usize),
    /// What ran it: `cuBLAS <version> bf16 GEMM (f32 accumulate)`.
    pub gemm: String,
}

/// Timed calls per measurement, after one untimed warm-up; the best counts.
#[cfg(feature = "cuda")]
const REPS: usize = 10;

/// cuBLAS's arguments for the row-major bf16 product out[m, n] = x[m, k] ·
/// w[n, k]ᵀ, called as `gemm(cfg, &w, &x, &mut out)`: cuBLAS is column-major, so
/// out is computed as outᵀ (n × m, ld n) = w · xᵀ, where row-major w[n, k] reads
/// as a k × n matrix (ld k) taken transposed and x[m, k] as a k × m matrix (ld
/// k) taken as is. Refuses shapes that are empty or exceed cuBLAS's `int`.
#[cfg(feature = "cuda")]
pub fn row_major_bf16_gemm(
    m: usize,
    n: usize,
    k: usize,
) -> Result<cudarc::cublas::GemmConfig<half::bf16>, String> {
    use cudarc::cublas::sys::cublasOperation_t;
    use half::bf16;

    let dims = [m, n, k].map(|v| i32::try_from(v).ok().filter(|&v| v > 0));
    let [Some(m32), Some(n32), Some(k32)] = dims else {
        return Err(format!(
            "GEMM shape {m}x{n}x{k} is empty or exceeds cuBLAS's int"
        ));
    };
    Ok(cudarc::cublas::GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_T,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: n32,
        n: m32,
        k: k32,
        alpha: bf16::ONE,
        lda: k32,
        ldb: k32,
        beta: bf16::ZERO,
        ldc: n32,
    })
}

/// The ceilings of device `ordinal`: a copy of `copy_bytes` and the bf16 GEMM
/// out[m, n] = x[m, k] · w[n, k]ᵀ at `(m, n, k)`.
#[cfg(feature = "cuda")]
pub fn measure(
    ordinal: usize,
    copy_bytes: usize,
    (m, n, k): (usize, usize, usize),
) -> Result<GpuCeilings, String> {
    use std::time::Instant;

    use cudarc::cublas::{CudaBlas, Gemm};
    use cudarc::driver::CudaContext;
    use half::bf16;

    let driver = |e: cudarc::driver::DriverError| format!("CUDA driver: {e}");
    // SAFETY: probing for the library only opens it and runs its initialisers.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(
            "libcublas cannot be loaded; add its directory to LD_LIBRARY_PATH \
                    (scripts/find-cublas.sh prints it)"
                .into(),
        );
    }
    let cfg = row_major_bf16_gemm(m, n, k)?;
    let ctx = CudaContext::new(ordinal).map_err(driver)?;
    // The default stream, as the backend's: our work and cuBLAS's stay ordered.
    let stream = ctx.default_stream();
    let best = |call: &mut dyn FnMut() -> Result<(), String>| -> Result<f64, String> {
        call()?;
        stream.synchronize().map_err(driver)?;
        let mut best = f64::INFINITY;
        for _ in 0..REPS {
            let start = Instant::now();
            call()?;
            stream.synchronize().map_err(driver)?;
            best = best.min(start.elapsed().as_secs_f64());
        }
        Ok(best)
    };

    let source = stream
        .alloc_zeros::<u8>(copy_bytes.max(1))
        .map_err(driver)?;
    let mut target = stream.alloc_zeros::<u8>(source.len()).map_err(driver)?;
    let copy_s = best(&mut || stream.memcpy_dtod(&source, &mut target).map_err(driver))?;
    drop((source, target));

    // Pseudo-random inputs: a constant fill would flatter the rate (the tensor
    // cores draw less power, so they clock higher, on repeated bits).
    let values = |len: usize, seed: u64| -> Vec<bf16> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                bf16::from_f32((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
            })
            .collect()
    };
    let x = stream.clone_htod(&values(m * k, 1)).map_err(driver)?;
    let w = stream.clone_htod(&values(n * k, 2)).map_err(driver)?;
    let mut out = stream.alloc_zeros::<bf16>(m * n).map_err(driver)?;
    let blas = CudaBlas::new(stream.clone()).map_err(|e| format!("cublasCreate: {e}"))?;
    let gemm_s = best(&mut || {
        // SAFETY: w holds n·k, x m·k and out m·n elements, the extents cfg's
        // sizes and leading dimensions address; all are allocations of this
        // context that outlive the call (`best` synchronises before returning).
        unsafe { blas.gemm(cfg, &w, &x, &mut out) }.map_err(|e| format!("cublasGemmEx: {e}"))
    })?;
    let mut version = 0;
    // SAFETY: the handle is live; the call writes one int.
    let known = unsafe { cudarc::cublas::sys::cublasGetVersion_v2(*blas.handle(), &mut version) };
    let version = match known {
        cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS => format!(
            " {}.{}.{}",
            version / 10_000,
            version / 100 % 100,
            version % 100
        ),
        _ => String::new(),
    };
    Ok(GpuCeilings {
        copy_gb_per_s: copy_bytes as f64 / copy_s / 1e9,
        copy_bytes,
        bf16_gflop_per_s: 2.0 * (m * n * k) as f64 / gemm_s / 1e9,
        shape: (m, n, k),
        gemm: format!("cuBLAS{version} bf16 GEMM (f32 accumulate)"),
    })
}

/// Without the `cuda` feature there is no device to measure.
#[cfg(not(feature = "cuda"))]
pub fn measure(
    _ordinal: usize,
    _copy_bytes: usize,
    _shape: (usize, usize, usize),
) -> Result<GpuCeilings, String> {
    Err("this build has no CUDA (build with --features cuda)".into())
}

#[cfg(test)]
mod tests {
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_cuda_the_reason_names_the_feature() {
        let why = super::measure(0, 1 << 20, (64, 64, 64)).unwrap_err();
        assert!(why.contains("--features cuda"), "{why}");
    }
}
