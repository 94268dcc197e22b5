//! The CUDA backend with its kernels executed on the CPU: `kernels/*.cu`, compiled
//! by the host C++ compiler against `kernels/emulation/cuda_cpu.h` (each CUDA
//! thread a fiber, warp instructions emulated lane-exactly), launched by the very
//! host code of `tessera-backend-cuda`. Test infrastructure only: it lets the op
//! parity kit and the model parity tests run every kernel on machines without a
//! GPU. Device memory is host memory, poisoned (all bits set: NaN as f32) when
//! allocated, so a kernel that reads what nobody wrote fails its checks.

use std::alloc::Layout;
use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tessera_backend::BackendError;
use tessera_backend_cuda::device::{TensorMap, TensorMapSpec};
use tessera_backend_cuda::{Arithmetic, Device, DeviceIdentity, KernelBackend, Launch, MatmulPath};

extern "C" {
    fn tessera_emu_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        shared_bytes: u32,
        args: *mut *mut c_void,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
}

/// The CUDA backend on the emulated device.
pub type EmulatedCudaBackend = KernelBackend<EmulatedDevice>;

/// The emulated device with the tensor-core (mma.sync) matmul path, as an sm_80+ GPU.
pub fn emulated() -> EmulatedCudaBackend {
    KernelBackend::with_device(EmulatedDevice::new(MatmulPath::Mma))
}

/// The emulated sm_80+ device with the Q8_0 matmuls in W8A16 (f16 tensor cores).
pub fn emulated_w8a16() -> EmulatedCudaBackend {
    emulated()
        .with_arithmetic(Arithmetic::W8A16)
        .expect("the mma path runs W8A16")
}

/// Host memory standing in for device memory; 256-byte aligned like cudaMalloc.
pub struct HostMemory {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: the allocation is owned uniquely by this value; shared references only
// read its address.
unsafe impl Send for HostMemory {}
unsafe impl Sync for HostMemory {}

impl Drop for HostMemory {
    fn drop(&mut self) {
        // SAFETY: allocated in `EmulatedDevice::alloc` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

impl HostMemory {
    fn check(&self, offset: usize, len: usize, what: &'static str) -> Result<(), BackendError> {
        let end = offset.saturating_add(len);
        if end > self.layout.size() {
            return Err(BackendError::Device(format!(
                "{what} of {len} bytes at {offset} outside an allocation of {}",
                self.layout.size()
            )));
        }
        Ok(())
    }
}

/// Runs kernels on the CPU. `replaced` redirects launches of a kernel to another
/// registered kernel (the mutation builds).
#[derive(Clone, Debug)]
pub struct EmulatedDevice {
    path: MatmulPath,
    replaced: Vec<(String, CString)>,
    faults: Option<Arc<AtomicUsize>>,
    multiprocessors: usize,
    max_shared_per_block: usize,
}

impl EmulatedDevice {
    pub fn new(path: MatmulPath) -> EmulatedDevice {
        EmulatedDevice {
            path,
            replaced: Vec::new(),
            faults: None,
            multiprocessors: EMULATED_MULTIPROCESSORS,
            max_shared_per_block: EMULATED_MAX_SHARED_PER_BLOCK,
        }
    }

    /// The same device allowing a block at most `bytes` of shared memory (as a
    /// GPU's opt-in limit: 99 KiB on sm_86/89); larger launches are refused.
    pub fn with_max_shared_per_block(mut self, bytes: usize) -> EmulatedDevice {
        self.max_shared_per_block = bytes;
        self
    }

    /// The same device claiming `count` multiprocessors (what the built-in
    /// W8A16 GEMM choice fills: fewer make it split k sooner).
    pub fn with_multiprocessors(mut self, count: usize) -> EmulatedDevice {
        self.multiprocessors = count.max(1);
        self
    }

    /// While `faults` is above zero, each launch fails with a device error (and
    /// counts it down): a stand-in for a CUDA error in a batch, for the tests of
    /// what the engine and the server do with one.
    pub fn with_launch_faults(mut self, faults: Arc<AtomicUsize>) -> EmulatedDevice {
        self.faults = Some(faults);
        self
    }

    /// Launches of `kernel` run `replacement` instead (e.g. `mutant::rms_norm_f32`).
    pub fn with_kernel_replaced(mut self, kernel: &str, replacement: &str) -> EmulatedDevice {
        let replacement = CString::new(replacement).expect("kernel names have no NUL");
        self.replaced.push((kernel.to_string(), replacement));
        self
    }
}

const POISON: u8 = 0xff;

/// The multiprocessors the emulated device claims by default: few, so the
/// parity kit's small matmuls take the split-K path of the built-in choice.
pub const EMULATED_MULTIPROCESSORS: usize = 4;

/// Shared memory a block may take on the emulated device by default: sm_90's
/// opt-in limit.
pub const EMULATED_MAX_SHARED_PER_BLOCK: usize = 227 * 1024;

impl Device for EmulatedDevice {
    type Memory = HostMemory;

    fn name(&self) -> String {
        let path = match self.path {
            MatmulPath::Mma => "mma.sync",
            MatmulPath::Dp4a => "dp4a",
        };
        format!("cuda-emulated ({path})")
    }

    fn identity(&self) -> DeviceIdentity {
        DeviceIdentity {
            name: self.name(),
            compute_capability: DeviceIdentity::EMULATED.into(),
            driver: "none".into(),
            multiprocessors: self.multiprocessors,
            max_shared_per_block: self.max_shared_per_block,
        }
    }

    fn matmul_path(&self) -> MatmulPath {
        self.path
    }

    fn alloc(&self, bytes: usize) -> Result<HostMemory, BackendError> {
        let size = bytes.max(1).div_ceil(16) * 16;
        let layout = Layout::from_size_align(size, 256)
            .map_err(|e| BackendError::Device(format!("cannot allocate {bytes} bytes: {e}")))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return Err(BackendError::Device(format!(
                "cannot allocate {bytes} bytes"
            )));
        }
        // SAFETY: `ptr` points at `size` writable bytes.
        unsafe { std::ptr::write_bytes(ptr, POISON, size) };
        Ok(HostMemory { ptr, layout })
    }

    fn address(&self, memory: &HostMemory) -> u64 {
        memory.ptr as u64
    }

    fn upload(
        &self,
        memory: &mut HostMemory,
        offset: usize,
        data: &[u8],
    ) -> Result<(), BackendError> {
        memory.check(offset, data.len(), "upload")?;
        // SAFETY: bounds checked above; source and destination do not overlap
        // (`data` is a host slice, `memory` is exclusively borrowed).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), memory.ptr.add(offset), data.len()) };
        Ok(())
    }

    fn download(
        &self,
        memory: &HostMemory,
        offset: usize,
        out: &mut [u8],
    ) -> Result<(), BackendError> {
        memory.check(offset, out.len(), "download")?;
        // SAFETY: bounds checked above; `out` is an exclusive host slice.
        unsafe {
            std::ptr::copy_nonoverlapping(memory.ptr.add(offset), out.as_mut_ptr(), out.len())
        };
        Ok(())
    }

    fn launch(&self, launch: &Launch) -> Result<(), BackendError> {
        if let Some(faults) = &self.faults {
            if faults
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(BackendError::Device(format!(
                    "launching {}: an injected device fault",
                    launch.kernel
                )));
            }
        }
        if launch.shared_bytes as usize > self.max_shared_per_block {
            return Err(BackendError::Device(format!(
                "kernel {} needs {} bytes of shared memory per block; this device allows {}",
                launch.kernel, launch.shared_bytes, self.max_shared_per_block
            )));
        }
        let name = match self.replaced.iter().find(|(k, _)| k == launch.kernel) {
            Some((_, replacement)) => replacement.clone(),
            None => CString::new(launch.kernel).expect("kernel names have no NUL"),
        };
        let mut params = launch.params();
        let mut error = [0 as c_char; 512];
        // SAFETY: `params` points at the launch's argument values, which outlive the
        // call; the kernel's parameter list is the one the plan was built for (the
        // same list the GPU receives); grid and block are 3-element arrays; the error
        // buffer's length is passed.
        let status = unsafe {
            tessera_emu_launch(
                name.as_ptr(),
                launch.grid.as_ptr(),
                launch.block.as_ptr(),
                launch.shared_bytes,
                params.as_mut_ptr(),
                error.as_mut_ptr(),
                error.len(),
            )
        };
        if status != 0 {
            let bytes: Vec<u8> = error
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            return Err(BackendError::Device(format!(
                "emulated launch of {}: {}",
                launch.kernel,
                String::from_utf8_lossy(&bytes)
            )));
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// The emulator's own encoding (`EmuTensorMap` in `cuda_cpu.h`; the
    /// driver's is opaque): magic, base, cols, rows, pitch, box, element
    /// size, swizzle.
    fn tensor_map_2d(&self, spec: &TensorMapSpec) -> Result<TensorMap, BackendError> {
        spec.check()?;
        let mut bytes = [0u8; 128];
        let words: [u64; 5] = [
            EMU_TENSOR_MAP_MAGIC,
            spec.address,
            spec.cols as u64,
            spec.rows as u64,
            spec.pitch as u64,
        ];
        for (i, w) in words.iter().enumerate() {
            bytes[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
        }
        let small: [u32; 4] = [
            spec.box_cols,
            spec.box_rows,
            spec.element.bytes() as u32,
            if spec.swizzle_128 { 128 } else { 0 },
        ];
        for (i, w) in small.iter().enumerate() {
            bytes[40 + 4 * i..44 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        Ok(TensorMap(bytes))
    }
}

/// `kEmuTensorMapMagic` of `cuda_cpu.h` ("TESSTMAP").
const EMU_TENSOR_MAP_MAGIC: u64 = 0x5041_4d54_5353_4554;
