//! cuBLAS reference timings ("anchors") for the GPU benchmark: the same product as
//! our Q8_0 matmul, out[m, n] = x[m, k] · w[n, k]ᵀ, through NVIDIA's library on the
//! same device in the same run, so the benchmark can report ratios against it.
//!
//! Two anchors:
//! - bf16: `cublasGemmEx` with bf16 inputs and output and f32 accumulation
//!   (`CUBLAS_COMPUTE_32F`) — what PyTorch runs for a bf16 `nn.Linear`
//!   (`at::cuda::blas::gemm<BFloat16>` writes a bf16 tensor). It is the dense
//!   16-bit baseline a user would otherwise reach for.
//! - int8: `cublasLtMatmul` with int8 inputs, `CUBLAS_COMPUTE_32I` and int32 output
//!   (int32 alpha = 1, beta = 0) — what `torch._int_mm` runs, and cuBLAS's int8
//!   tensor-core (IMMA) path. One scale per tensor is then a single multiply that
//!   any consumer folds into its epilogue; int32 output also writes the same 4 bytes
//!   per element as our f32 output, so the two move the same traffic. Only if cuBLASLt
//!   finds no int32-output kernel do we time its other IMMA variant, int8 output with
//!   one f32 scale, and say so in the note.
//!
//! libcublas and libcublasLt are opened at run time (cudarc's dynamic loading); when
//! either is missing the anchors are skipped with a printed reason.
#![allow(dead_code)] // gpu_bench may use only part of this module.

use std::any::Any;
use std::ffi::c_void;
use std::mem::size_of;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm};
use cudarc::cublaslt::result::{self as lt, CublasError as LtError};
use cudarc::cublaslt::sys as lt_sys;
use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, DriverError,
    ValidAsZeroBits,
};
use half::bf16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Timed calls per measurement, after one untimed warm-up call.
const REPS: u32 = 10;
/// cuBLASLt workspace: NVIDIA's recommendation for Hopper (4 MiB suffices before it).
const WORKSPACE_BYTES: usize = 32 << 20;
/// Elements of random data uploaded once and tiled over every input buffer: random
/// bits keep the tensor cores' power draw (and so their clocks) realistic, where a
/// constant fill would flatter the anchor.
const NOISE_LEN: usize = 1 << 20;

/// cuBLAS timings of out[m, n] = x[m, k] · w[n, k]ᵀ on the current device, seconds per
/// call (mean of 10 after a warm-up); `None` fields when that path is unavailable (with
/// the reason in `note`).
#[derive(Debug, Clone, PartialEq)]
pub struct Anchor {
    pub bf16_s: Option<f64>,
    pub int8_s: Option<f64>,
    pub note: Option<String>,
}

/// cuBLAS and cuBLASLt handles bound to the device's default stream, and the random
/// data the inputs are filled from.
pub struct Anchors {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    lt: Owned<lt_sys::cublasLtHandle_t>,
    noise_bf16: CudaSlice<bf16>,
    noise_i8: CudaSlice<i8>,
}

impl Anchors {
    /// `Ok(None)` with a printed reason when libcublas / libcublasLt cannot be loaded;
    /// `Err` when they load but the handles or buffers cannot be created.
    pub fn new(ctx: Arc<CudaContext>) -> Result<Option<Anchors>, String> {
        if let Some(why) = missing_library() {
            println!("cuBLAS anchors skipped: {why}");
            return Ok(None);
        }
        contained(|| Self::open(&ctx)).map(Some)
    }

    fn open(ctx: &Arc<CudaContext>) -> Result<Anchors, String> {
        ctx.bind_to_thread().map_err(driver)?;
        // The default stream, like our backend's: a new stream would switch a shared
        // context into cudarc's multi-stream mode (event tracking on every buffer
        // use), and the legacy stream keeps our work and cuBLAS's from overlapping.
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| format!("cublasCreate: {e}"))?;
        let raw = lt::create_handle().map_err(|e| format!("cublasLtCreate: {e}"))?;
        let lt = Owned::new(raw, lt::destroy_handle);
        let mut rng = StdRng::seed_from_u64(7);
        let values: Vec<bf16> = (0..NOISE_LEN)
            .map(|_| bf16::from_f32(rng.random_range(-1.0..1.0)))
            .collect();
        let noise_bf16 = stream.clone_htod(&values).map_err(driver)?;
        let values: Vec<i8> = (0..NOISE_LEN)
            .map(|_| rng.random_range(-127..=127))
            .collect();
        let noise_i8 = stream.clone_htod(&values).map_err(driver)?;
        // SAFETY: a plain query of the loaded library's version; no handle involved.
        let version = unsafe { lt_sys::cublasLtGetVersion() };
        println!(
            "cuBLAS anchors: cuBLASLt {}.{}.{}",
            version / 10_000,
            version / 100 % 100,
            version % 100
        );
        Ok(Anchors {
            stream,
            blas,
            lt,
            noise_bf16,
            noise_i8,
        })
    }

    /// Both anchors for one shape; a path that fails leaves its field `None` and says
    /// why in `note` (this never panics).
    pub fn time(&self, m: usize, n: usize, k: usize) -> Anchor {
        let mut notes = Vec::new();
        let bf16_s = match contained(|| self.time_bf16(m, n, k)) {
            Ok(seconds) => Some(seconds),
            Err(why) => {
                notes.push(format!("bf16: {why}"));
                None
            }
        };
        let int8_s = match contained(|| self.time_int8(m, n, k)) {
            Ok((seconds, fallback)) => {
                notes.extend(fallback);
                Some(seconds)
            }
            Err(why) => {
                notes.push(format!("int8: {why}"));
                None
            }
        };
        Anchor {
            bf16_s,
            int8_s,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        }
    }

    fn time_bf16(&self, m: usize, n: usize, k: usize) -> Result<f64, String> {
        let cfg = tessera_backend_cuda::ceilings::row_major_bf16_gemm(m, n, k)?;
        let x = self.filled(&self.noise_bf16, m * k)?;
        let w = self.filled(&self.noise_bf16, n * k)?;
        let mut out = self.stream.alloc_zeros::<bf16>(m * n).map_err(driver)?;
        self.mean_seconds(|| {
            // SAFETY: w holds n·k, x m·k and out m·n elements, exactly the extents that
            // cfg's sizes and leading dimensions address; all three are allocations of
            // this context and outlive the call (mean_seconds synchronizes before
            // returning).
            unsafe { self.blas.gemm(cfg, &w, &x, &mut out) }
                .map_err(|e| format!("cublasGemmEx: {e}"))
        })
    }

    /// Seconds per call and, when the int32-output kernel was unavailable, a note
    /// saying which variant was timed instead.
    fn time_int8(&self, m: usize, n: usize, k: usize) -> Result<(f64, Option<String>), String> {
        blas_dims(m, n, k)?;
        // IMMA with the regular (column-major) ordering: leading dimensions and the
        // GEMM's own m and k (our n and k) multiples of 4.
        if !n.is_multiple_of(4) || !k.is_multiple_of(4) {
            return Err(format!(
                "IMMA needs n and k multiples of 4 (n = {n}, k = {k})"
            ));
        }
        let x = self.filled(&self.noise_i8, m * k)?;
        let w = self.filled(&self.noise_i8, n * k)?;
        match self.time_lt_int8(Int8Output::Int32, &x, &w, m, n, k) {
            Ok(seconds) => Ok((seconds, None)),
            Err(first) => {
                let seconds = self
                    .time_lt_int8(Int8Output::Int8, &x, &w, m, n, k)
                    .map_err(|second| format!("int32 output: {first}; int8 output: {second}"))?;
                let note = format!(
                    "int8: int32 output unavailable ({first}), timed int8 output with an f32 scale"
                );
                Ok((seconds, Some(note)))
            }
        }
    }

    fn time_lt_int8(
        &self,
        output: Int8Output,
        x: &CudaSlice<i8>,
        w: &CudaSlice<i8>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<f64, String> {
        let (scale_type, out_type, out_bytes) = output.types();
        let desc = Owned::new(
            lt::create_matmul_desc(lt_sys::cublasComputeType_t::CUBLAS_COMPUTE_32I, scale_type)
                .map_err(lt_status("cublasLtMatmulDescCreate"))?,
            lt::destroy_matmul_desc,
        );
        // The "TN" form IMMA requires: A (w, stored k × n) transposed, B (x, stored
        // k × m) not, giving column-major outᵀ (n × m), i.e. row-major out[m, n].
        let transpose = cublasOperation_t::CUBLAS_OP_T as i32;
        // SAFETY: desc is live; TRANSA takes an int32 cublasOperation_t, which
        // `transpose` is, for the size passed.
        unsafe {
            lt::set_matmul_desc_attribute(
                desc.raw,
                lt_sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                (&transpose as *const i32).cast(),
                size_of::<i32>(),
            )
        }
        .map_err(lt_status("cublasLtMatmulDescSetAttribute(TRANSA)"))?;
        let a = layout(lt_sys::cudaDataType_t::CUDA_R_8I, k, n)?;
        let b = layout(lt_sys::cudaDataType_t::CUDA_R_8I, k, m)?;
        let d = layout(out_type, n, m)?;
        let pref = Owned::new(
            lt::create_matmul_pref().map_err(lt_status("cublasLtMatmulPreferenceCreate"))?,
            lt::destroy_matmul_pref,
        );
        let workspace_limit = WORKSPACE_BYTES as u64;
        // SAFETY: pref is live; MAX_WORKSPACE_BYTES takes a uint64, the size passed.
        unsafe {
            lt::set_matmul_pref_attribute(
                pref.raw,
                lt_sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&workspace_limit as *const u64).cast(),
                size_of::<u64>(),
            )
        }
        .map_err(lt_status("cublasLtMatmulPreferenceSetAttribute"))?;
        // SAFETY: every descriptor is live and describes the buffers passed below;
        // C and D share one layout (beta = 0, C aliases D).
        let heuristic = unsafe {
            lt::get_matmul_algo_heuristic(
                self.lt.raw,
                desc.raw,
                a.raw,
                b.raw,
                d.raw,
                d.raw,
                pref.raw,
            )
        }
        .map_err(lt_status("cublasLtMatmulAlgoGetHeuristic"))?;

        let mut out = self
            .stream
            .alloc_zeros::<u8>(m * n * out_bytes)
            .map_err(driver)?;
        let mut workspace = self
            .stream
            .alloc_zeros::<u8>(WORKSPACE_BYTES)
            .map_err(driver)?;
        let (alpha, beta) = output.scales();
        let stream = self.stream.cu_stream() as lt_sys::cudaStream_t;
        let (w_ptr, _w_use) = w.device_ptr(&self.stream);
        let (x_ptr, _x_use) = x.device_ptr(&self.stream);
        let (out_ptr, _out_use) = out.device_ptr_mut(&self.stream);
        let (workspace_ptr, _workspace_use) = workspace.device_ptr_mut(&self.stream);
        self.mean_seconds(|| {
            // SAFETY: the descriptors are live and match the buffers (w: n·k int8,
            // x: m·k int8, out: m·n elements of the output type, all 256-byte aligned
            // allocations of this context); alpha and beta are host values of the
            // scale type (the default host pointer mode); the algorithm came from the
            // heuristic for these descriptors with at most WORKSPACE_BYTES of workspace;
            // every buffer outlives the call (mean_seconds synchronizes).
            unsafe {
                lt::matmul(
                    self.lt.raw,
                    desc.raw,
                    (&alpha as *const u32).cast(),
                    (&beta as *const u32).cast(),
                    w_ptr as *const c_void,
                    a.raw,
                    x_ptr as *const c_void,
                    b.raw,
                    out_ptr as *const c_void,
                    d.raw,
                    out_ptr as *mut c_void,
                    d.raw,
                    &heuristic.algo,
                    workspace_ptr as *mut c_void,
                    WORKSPACE_BYTES,
                    stream,
                )
            }
            .map_err(lt_status("cublasLtMatmul"))
        })
    }

    /// A new buffer of `len` elements tiled with copies of `noise`.
    fn filled<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        noise: &CudaSlice<T>,
        len: usize,
    ) -> Result<CudaSlice<T>, String> {
        let mut buffer = self.stream.alloc_zeros::<T>(len).map_err(driver)?;
        let mut start = 0;
        while start < len {
            let chunk = noise.len().min(len - start);
            let mut target = buffer.slice_mut(start..start + chunk);
            self.stream
                .memcpy_dtod(&noise.slice(..chunk), &mut target)
                .map_err(driver)?;
            start += chunk;
        }
        Ok(buffer)
    }

    /// Mean seconds of `REPS` calls after one warm-up (which also absorbs cuBLAS's
    /// first-call set-up), the stream drained before and after the timed calls.
    fn mean_seconds(&self, mut call: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
        call()?;
        self.stream.synchronize().map_err(driver)?;
        let start = Instant::now();
        for _ in 0..REPS {
            call()?;
        }
        self.stream.synchronize().map_err(driver)?;
        Ok(start.elapsed().as_secs_f64() / f64::from(REPS))
    }
}

/// The two IMMA output variants cuBLASLt offers with regular layouts.
#[derive(Debug, Clone, Copy)]
enum Int8Output {
    /// int32 out, int32 alpha and beta.
    Int32,
    /// int8 out, one f32 scale for the whole tensor (alpha).
    Int8,
}

impl Int8Output {
    /// Scale type, output type, output bytes per element.
    fn types(self) -> (lt_sys::cudaDataType_t, lt_sys::cudaDataType_t, usize) {
        use lt_sys::cudaDataType_t::{CUDA_R_32F, CUDA_R_32I, CUDA_R_8I};
        match self {
            Int8Output::Int32 => (CUDA_R_32I, CUDA_R_32I, 4),
            Int8Output::Int8 => (CUDA_R_32F, CUDA_R_8I, 1),
        }
    }

    /// alpha and beta as the bits of the scale type (4 bytes either way; 0 is 0 in
    /// both).
    fn scales(self) -> (u32, u32) {
        match self {
            Int8Output::Int32 => (1, 0),
            // Sums of k products of values up to 127 need scaling down to fit int8
            // (saturation would not change the timing, but keep it honest).
            Int8Output::Int8 => ((1.0f32 / 4096.0).to_bits(), 0),
        }
    }
}

/// A cuBLASLt object destroyed once, when dropped.
struct Owned<T: Copy> {
    raw: T,
    destroy: unsafe fn(T) -> Result<(), LtError>,
}

impl<T: Copy> Owned<T> {
    fn new(raw: T, destroy: unsafe fn(T) -> Result<(), LtError>) -> Self {
        Owned { raw, destroy }
    }
}

impl<T: Copy> Drop for Owned<T> {
    fn drop(&mut self) {
        // SAFETY: `raw` came from the create call `destroy` matches, and this is its
        // only destruction. A failure here has nowhere useful to go.
        let _ = unsafe { (self.destroy)(self.raw) };
    }
}

/// A column-major `rows × cols` layout with leading dimension `rows`.
fn layout(
    data_type: lt_sys::cudaDataType_t,
    rows: usize,
    cols: usize,
) -> Result<Owned<lt_sys::cublasLtMatrixLayout_t>, String> {
    let raw = lt::create_matrix_layout(data_type, rows as u64, cols as u64, rows as i64)
        .map_err(lt_status("cublasLtMatrixLayoutCreate"))?;
    Ok(Owned::new(raw, lt::destroy_matrix_layout))
}

/// m, n, k as the `int` cuBLAS takes, refusing empty shapes.
fn blas_dims(m: usize, n: usize, k: usize) -> Result<[i32; 3], String> {
    let convert = |v: usize| i32::try_from(v).ok().filter(|&v| v > 0);
    match (convert(m), convert(n), convert(k)) {
        (Some(m), Some(n), Some(k)) => Ok([m, n, k]),
        _ => Err(format!(
            "shape m = {m}, n = {n}, k = {k} is empty or exceeds cuBLAS's int"
        )),
    }
}

/// Why libcublas or libcublasLt cannot be opened, if one cannot.
fn missing_library() -> Option<String> {
    let probes: [(&str, fn()); 2] = [
        // SAFETY: opening the library runs only its own initialisers; cudarc keeps the
        // handle for the life of the process, and no cuBLAS function is called here.
        ("libcublas", || unsafe {
            cudarc::cublas::sys::culib();
        }),
        // SAFETY: as above, for libcublasLt.
        ("libcublasLt", || unsafe {
            cudarc::cublaslt::sys::culib();
        }),
    ];
    probes.into_iter().find_map(|(name, probe)| {
        catch_unwind(probe).err().map(|payload| {
            format!(
                "{name} cannot be loaded ({}); add its directory to LD_LIBRARY_PATH \
                 (scripts/find-cublas.sh prints it)",
                panic_text(payload.as_ref())
            )
        })
    })
}

/// Runs `f`, turning a panic inside cudarc (a library or symbol missing at run time,
/// a failed allocation in a constructor) into an error message.
fn contained<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| Err(panic_text(payload.as_ref())))
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic without a message".to_string()
    }
}

fn driver(e: DriverError) -> String {
    format!("CUDA driver: {e}")
}

fn lt_status(call: &'static str) -> impl Fn(LtError) -> String {
    move |e| format!("{call}: {:?}", e.0)
}
