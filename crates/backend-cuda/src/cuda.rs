//! The real GPU through cudarc (feature `cuda`): the driver and NVRTC are loaded
//! at run time, so building needs no CUDA toolkit. Each kernel file is compiled by
//! NVRTC for the device's own architecture the first time one of its kernels is
//! launched, and the PTX is cached on disk (keyed by source, architecture, NVRTC
//! version and options). One stream orders every copy and launch.

use std::collections::HashMap;
use std::fmt::Display;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};
use tessera_backend::BackendError;

use crate::device::{TensorElement, TensorMap, TensorMapSpec};
use crate::kernels::{fnv1a, module_source, nvrtc_arch, NVRTC_OPTIONS};
use crate::{Device, DeviceIdentity, KernelBackend, Launch, MatmulPath};

/// Dynamic shared memory any launch may take without opting in.
const DEFAULT_DYNAMIC_SHARED: u32 = 48 * 1024;

/// The CUDA backend on a real GPU.
pub type CudaBackend = KernelBackend<CudaDevice>;

impl KernelBackend<CudaDevice> {
    /// GPU number `ordinal`. Without a CUDA driver or NVRTC on this machine, a
    /// clear error (never a panic).
    pub fn new(ordinal: usize) -> Result<CudaBackend, BackendError> {
        Ok(KernelBackend::with_device(CudaDevice::new(ordinal)?))
    }
}

fn device_error(what: &str, error: impl Display) -> BackendError {
    BackendError::Device(format!("{what}: {error}"))
}

/// Whether this machine can run the CUDA backend at all: a driver and NVRTC that
/// load. `Err` says what is missing.
pub fn cuda_available() -> Result<(), BackendError> {
    // SAFETY: these only try to load the shared libraries (dlopen) and report
    // whether that worked; no CUDA call is made.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(BackendError::Device(
            "no CUDA driver: libcuda.so cannot be loaded (no NVIDIA GPU driver on this machine)"
                .into(),
        ));
    }
    // SAFETY: as above.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(BackendError::Device(
            "no NVRTC: libnvrtc.so cannot be loaded; the kernels are compiled at run time \
             and need it (CUDA 12 or 13; put its folder on LD_LIBRARY_PATH)"
                .into(),
        ));
    }
    Ok(())
}

/// How many GPUs the driver sees (after [`cuda_available`]).
pub fn cuda_device_count() -> Result<usize, BackendError> {
    cuda_available()?;
    let count =
        CudaContext::device_count().map_err(|e| device_error("cannot count the GPUs", e))?;
    Ok(usize::try_from(count).unwrap_or(0))
}

/// The driver's CUDA version, e.g. "13.0" ("?" if it does not say).
fn driver_version() -> String {
    let mut version: std::ffi::c_int = 0;
    // SAFETY: writes one int through a valid pointer; the driver was found
    // loadable (cuda_available) before any device is opened.
    let status = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) };
    if status == cudarc::driver::sys::CUresult::CUDA_SUCCESS {
        format!("{}.{}", version / 1000, (version % 1000) / 10)
    } else {
        "?".into()
    }
}

/// The loaded NVRTC's version, e.g. "13.0" (part of the PTX cache key: another
/// NVRTC may emit other PTX).
fn nvrtc_version() -> String {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: writes two ints through valid pointers; NVRTC was found loadable.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if status == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        format!("{major}.{minor}")
    } else {
        String::new()
    }
}

/// Buffers are stream-ordered allocations (`cuMemAllocAsync`) from the device's
/// default pool. That pool's release threshold is 0 by default: at every
/// synchronisation (each batch reads its scores back) it would hand all freed
/// memory back to the driver, and the next batch would map it again. With the
/// threshold at its maximum the pool keeps what it has, so after the first batch
/// of a size the per-pass activations come from the pool: the arena, without the
/// engine holding buffers between passes. Without async allocation (no pool),
/// nothing to set.
fn keep_freed_memory(ctx: &CudaContext) -> Result<(), BackendError> {
    if !ctx.has_async_alloc() {
        return Ok(());
    }
    use cudarc::driver::{result::device, result::mem_pool, sys};
    let mut threshold = u64::MAX;
    // SAFETY: the device handle comes from a live context; the attribute takes a
    // u64 (cuuint64_t), which `threshold` is, and outlives the call.
    unsafe {
        let pool = device::get_default_mem_pool(ctx.cu_device())
            .map_err(|e| device_error("default memory pool", e))?;
        mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .map_err(|e| device_error("memory pool release threshold", e))
    }
}

/// A GPU and the kernels compiled for it so far.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    arch: String,
    identity: DeviceIdentity,
    path: MatmulPath,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
    /// Each kernel file's module, loaded (and JIT-compiled by the driver) once
    /// for all its kernels.
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

impl CudaDevice {
    pub fn new(ordinal: usize) -> Result<CudaDevice, BackendError> {
        cuda_available()?;
        let ctx = CudaContext::new(ordinal).map_err(|e| device_error("cannot open the GPU", e))?;
        // One stream orders everything: no cross-stream events are needed.
        // SAFETY: no other stream of this context touches our allocations.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        keep_freed_memory(&ctx)?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| device_error("compute capability", e))?;
        let (major, minor) = (major as u32, minor as u32);
        let path = MatmulPath::for_compute_capability(major, minor).ok_or_else(|| {
            BackendError::Device(format!(
                "compute capability {major}.{minor} has no int8 dot product (sm_61 or later needed)"
            ))
        })?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let multiprocessors = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(|e| device_error("multiprocessor count", e))?;
        let optin = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )
            .map_err(|e| device_error("shared memory per block", e))?;
        let identity = DeviceIdentity {
            name: name.clone(),
            compute_capability: format!("{major}.{minor}"),
            driver: driver_version(),
            multiprocessors: multiprocessors.max(1) as usize,
            max_shared_per_block: optin.max(0) as usize,
        };
        Ok(CudaDevice {
            identity,
            name: format!(
                "cuda ({name}, sm_{major}{minor}, {path:?}, driver CUDA {})",
                driver_version()
            ),
            arch: nvrtc_arch(major, minor),
            ctx,
            stream,
            path,
            functions: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
        })
    }

    /// Bytes of device memory in use (by every process and this one's pools) and
    /// the device's total.
    pub fn memory_in_use(&self) -> Result<(usize, usize), BackendError> {
        let (free, total) = self
            .ctx
            .mem_get_info()
            .map_err(|e| device_error("memory info", e))?;
        Ok((total - free, total))
    }

    /// Where compiled PTX is kept: `$TESSERA_KERNEL_CACHE`, else the user cache.
    fn cache_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("TESSERA_KERNEL_CACHE") {
            return Some(PathBuf::from(dir));
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("tessera").join("kernels"))
    }

    /// The PTX of a kernel file for this device, from the disk cache or NVRTC.
    fn ptx(&self, stem: &str) -> Result<Ptx, BackendError> {
        let source = module_source(stem)
            .ok_or_else(|| BackendError::Device(format!("no kernel file named {stem}.cu")))?;
        let version = nvrtc_version();
        let options = NVRTC_OPTIONS.join(" ");
        let key = fnv1a(&[
            source.as_bytes(),
            self.arch.as_bytes(),
            version.as_bytes(),
            options.as_bytes(),
        ]);
        let cached =
            Self::cache_dir().map(|d| d.join(format!("{stem}-{}-{key:016x}.ptx", self.arch)));
        if let Some(text) = cached
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
        {
            return Ok(Ptx::from_src(text));
        }
        let mut opts = vec![format!("--gpu-architecture={}", self.arch)];
        opts.extend(NVRTC_OPTIONS.iter().map(|o| o.to_string()));
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(
            &source,
            CompileOptions {
                options: opts,
                name: Some(format!("{stem}.cu")),
                ..CompileOptions::default()
            },
        )
        .map_err(|e| match e {
            CompileError::CompileError { log, .. } => BackendError::Device(format!(
                "NVRTC cannot compile {stem}.cu for {}:\n{}",
                self.arch,
                log.to_string_lossy()
            )),
            other => device_error(&format!("NVRTC on {stem}.cu"), other),
        })?;
        if let Some(path) = cached {
            // Best effort: a cache that cannot be written only costs a recompile.
            let temp = path.with_extension(format!("{}.tmp", std::process::id()));
            let written = path
                .parent()
                .map(std::fs::create_dir_all)
                .transpose()
                .and_then(|_| std::fs::write(&temp, ptx.to_src()))
                .and_then(|()| std::fs::rename(&temp, &path));
            if written.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
        }
        Ok(ptx)
    }

    /// Opts `function` in to more dynamic shared memory than the 48 KiB every
    /// launch may take, up to what this GPU allows a block (sm_80: 163 KiB,
    /// sm_86/89: 99 KiB, sm_90: 227 KiB); a launch over that is refused by name.
    fn allow_dynamic_shared(
        &self,
        function: &CudaFunction,
        launch: &Launch,
    ) -> Result<(), BackendError> {
        use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
        let most = self
            .ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(|e| device_error("shared memory per block", e))?;
        if i64::from(launch.shared_bytes) > i64::from(most) {
            return Err(BackendError::Device(format!(
                "kernel {} needs {} bytes of shared memory per block; this GPU allows {most}",
                launch.kernel, launch.shared_bytes
            )));
        }
        function
            .set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                most,
            )
            .map_err(|e| device_error(&format!("shared memory of {}", launch.kernel), e))
    }

    fn function(&self, launch: &Launch) -> Result<CudaFunction, BackendError> {
        let mut functions = self
            .functions
            .lock()
            .map_err(|_| BackendError::Device("kernel table poisoned by a panic".into()))?;
        if let Some(f) = functions.get(launch.kernel) {
            return Ok(f.clone());
        }
        let module = {
            let mut modules = self
                .modules
                .lock()
                .map_err(|_| BackendError::Device("module table poisoned by a panic".into()))?;
            match modules.get(launch.module) {
                Some(module) => Arc::clone(module),
                None => {
                    let module = self
                        .ctx
                        .load_module(self.ptx(launch.module)?)
                        .map_err(|e| device_error(&format!("loading {}.cu", launch.module), e))?;
                    modules.insert(launch.module, Arc::clone(&module));
                    module
                }
            }
        };
        let f = module.load_function(launch.kernel).map_err(|e| {
            device_error(
                &format!("kernel {} in {}.cu", launch.kernel, launch.module),
                e,
            )
        })?;
        if launch.shared_bytes > DEFAULT_DYNAMIC_SHARED {
            self.allow_dynamic_shared(&f, launch)?;
        }
        functions.insert(launch.kernel, f.clone());
        Ok(f)
    }

    fn check(
        memory: &CudaSlice<u8>,
        offset: usize,
        len: usize,
        what: &str,
    ) -> Result<(), BackendError> {
        if offset.checked_add(len).is_none_or(|end| end > memory.len()) {
            return Err(BackendError::Device(format!(
                "{what} of {len} bytes at {offset} outside an allocation of {}",
                memory.len()
            )));
        }
        Ok(())
    }
}

impl Device for CudaDevice {
    type Memory = CudaSlice<u8>;

    fn name(&self) -> String {
        self.name.clone()
    }

    fn identity(&self) -> DeviceIdentity {
        self.identity.clone()
    }

    fn matmul_path(&self) -> MatmulPath {
        self.path
    }

    fn alloc(&self, bytes: usize) -> Result<CudaSlice<u8>, BackendError> {
        // SAFETY: the contents are unspecified by the trait; every op writes before
        // it reads.
        unsafe { self.stream.alloc::<u8>(bytes.max(1)) }
            .map_err(|e| device_error(&format!("cannot allocate {bytes} bytes"), e))
    }

    fn address(&self, memory: &CudaSlice<u8>) -> u64 {
        memory.device_ptr(&self.stream).0
    }

    fn upload(
        &self,
        memory: &mut CudaSlice<u8>,
        offset: usize,
        data: &[u8],
    ) -> Result<(), BackendError> {
        Self::check(memory, offset, data.len(), "upload")?;
        if data.is_empty() {
            return Ok(());
        }
        let mut view = memory.slice_mut(offset..offset + data.len());
        self.stream
            .memcpy_htod(data, &mut view)
            .map_err(|e| device_error("upload", e))
    }

    fn download(
        &self,
        memory: &CudaSlice<u8>,
        offset: usize,
        out: &mut [u8],
    ) -> Result<(), BackendError> {
        Self::check(memory, offset, out.len(), "download")?;
        if out.is_empty() {
            return Ok(());
        }
        let view = memory.slice(offset..offset + out.len());
        self.stream
            .memcpy_dtoh(&view, out)
            .map_err(|e| device_error("download", e))?;
        self.synchronize()
    }

    fn launch(&self, launch: &Launch) -> Result<(), BackendError> {
        let function = self.function(launch)?;
        let mut params = launch.params();
        self.ctx
            .bind_to_thread()
            .map_err(|e| device_error("binding the context", e))?;
        let [gx, gy, gz] = launch.grid;
        let [bx, by, bz] = launch.block;
        // SAFETY: `params` points at one value per kernel parameter, in order and
        // of the parameter's size (the plan is built for this kernel's signature),
        // alive until the call returns (the driver copies them at launch); every
        // address among them is a live allocation of this context.
        unsafe {
            cudarc::driver::result::launch_kernel(
                function.cu_function(),
                (gx, gy, gz),
                (bx, by, bz),
                launch.shared_bytes,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| device_error(&format!("launching {}", launch.kernel), e))
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        self.stream
            .synchronize()
            .map_err(|e| device_error("synchronize", e))
    }

    /// cuTensorMapEncodeTiled, rank 2: dimensions and strides innermost
    /// first, element strides 1, no interleave, zero fill outside the tensor.
    fn tensor_map_2d(&self, spec: &TensorMapSpec) -> Result<TensorMap, BackendError> {
        use cudarc::driver::sys;
        spec.check()?;
        if !self.identity.has_wgmma() {
            return Err(BackendError::Device(format!(
                "{}: the TMA kernels run on compute capability 9.0 only",
                self.name
            )));
        }
        let data_type = match spec.element {
            TensorElement::U8 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT8,
            TensorElement::F16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        };
        let swizzle = if spec.swizzle_128 {
            sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B
        } else {
            sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE
        };
        let dims: [u64; 2] = [spec.cols as u64, spec.rows as u64];
        let strides: [u64; 1] = [spec.pitch as u64];
        let boxes: [u32; 2] = [spec.box_cols, spec.box_rows];
        let element_strides: [u32; 2] = [1, 1];
        let mut map = sys::CUtensorMap { opaque: [0; 16] };
        self.ctx
            .bind_to_thread()
            .map_err(|e| device_error("binding the context", e))?;
        // SAFETY: every pointer is to a live local array of the rank's length
        // (strides: rank − 1); the address is a device allocation of this
        // context (the caller's); the map is written by the driver.
        let status = unsafe {
            sys::cuTensorMapEncodeTiled(
                &mut map,
                data_type,
                2,
                spec.address as *mut std::ffi::c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                boxes.as_ptr(),
                element_strides.as_ptr(),
                sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                swizzle,
                sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
        };
        if status != sys::CUresult::CUDA_SUCCESS {
            return Err(device_error(
                &format!("cuTensorMapEncodeTiled for {spec:?}"),
                format!("{status:?}"),
            ));
        }
        let mut bytes = [0u8; 128];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(map.opaque) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        Ok(TensorMap(bytes))
    }
}
