//! What a kernel-running device must provide: raw memory, copies, and launching a
//! kernel by name with cuLaunchKernel-style parameters. The real GPU (cudarc) and
//! the CPU emulator of the same kernel sources both implement it, so every op's
//! host-side logic (launch plans, shapes, buffer sizes) is shared and tested.

use std::ffi::c_void;

use tessera_backend::BackendError;

/// Which inner product the Q8_0 matmul uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulPath {
    /// `mma.sync.m16n8k32` int8 tensor cores (sm_80 and later).
    Mma,
    /// `dp4a` per thread (sm_61 and later): the fallback.
    Dp4a,
}

impl MatmulPath {
    /// The path for a device of compute capability `major.minor`; `None` below
    /// sm_61, which has no int8 dot product.
    pub fn for_compute_capability(major: u32, minor: u32) -> Option<MatmulPath> {
        match (major, minor) {
            (m, _) if m >= 8 => Some(MatmulPath::Mma),
            (7, _) | (6, 1..) => Some(MatmulPath::Dp4a),
            _ => None,
        }
    }
}

/// The arithmetic of the matmuls on Q8_0 weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arithmetic {
    /// int8 activations in ggml's per-32 blocks × int8 weights, integer block
    /// sums scaled in f32: the same bits as the CPU fast path and llama.cpp's
    /// `q8_0 × q8_0` dot (`kernels/matmul_q8_0.cu`).
    #[default]
    W8A8,
    /// f16 activations (each row divided by a power of two) × the int8 weights
    /// turned into f16 `q · d` on the fly, f32 accumulation on the f16 tensor
    /// cores (`kernels/matmul_w8a16.cu`); attention on the f16 tensor cores too
    /// (`attention_mma_d*`, head sizes 16–128 in steps of 16). Closer to the f32
    /// reference than W8A8.
    W8A16,
}

impl Arithmetic {
    /// The flag's spelling: `w8a8` or `w8a16`.
    pub fn name(self) -> &'static str {
        match self {
            Arithmetic::W8A8 => "w8a8",
            Arithmetic::W8A16 => "w8a16",
        }
    }
}

impl std::fmt::Display for Arithmetic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Arithmetic {
    type Err = String;

    fn from_str(s: &str) -> Result<Arithmetic, String> {
        match s.to_ascii_lowercase().as_str() {
            "w8a8" => Ok(Arithmetic::W8A8),
            "w8a16" => Ok(Arithmetic::W8A16),
            _ => Err(format!(
                "unknown GPU precision '{s}': expected w8a8 or w8a16"
            )),
        }
    }
}

/// One kernel parameter, passed by address as cuLaunchKernel's `kernelParams`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelArg {
    /// A device address.
    Ptr(u64),
    U32(u32),
    U64(u64),
    F32(f32),
    /// A tensor map (`CUtensorMap`, a `__grid_constant__` parameter).
    TensorMap(TensorMap),
}

/// A tensor map's 128 opaque bytes, as the device encoded them
/// ([`Device::tensor_map_2d`]); 128-byte aligned as CUDA 13's `CUtensorMap`.
#[repr(C, align(128))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorMap(pub [u8; 128]);

/// The element type of a tensor map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorElement {
    U8,
    F16,
}

impl TensorElement {
    pub fn bytes(self) -> usize {
        match self {
            TensorElement::U8 => 1,
            TensorElement::F16 => 2,
        }
    }
}

/// What a 2-D tiled tensor map describes (cuTensorMapEncodeTiled's
/// arguments, rank 2): `rows` rows of `cols` elements, `pitch` bytes apart,
/// at device address `address`, copied in boxes of `box_cols × box_rows`,
/// stored in shared memory as they are or with the 128-byte swizzle;
/// elements outside the tensor arrive as zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorMapSpec {
    pub address: u64,
    pub element: TensorElement,
    pub cols: usize,
    pub rows: usize,
    pub pitch: usize,
    pub box_cols: u32,
    pub box_rows: u32,
    pub swizzle_128: bool,
}

impl TensorMapSpec {
    /// The constraints both encoders check (cuTensorMapEncodeTiled's, for a
    /// 2-D tile): a 16-byte aligned base and pitch, box sides 1 to 256, a box
    /// row a multiple of 16 bytes, exactly 128 bytes under the swizzle.
    pub fn check(&self) -> Result<(), BackendError> {
        let row_bytes = self.box_cols as usize * self.element.bytes();
        let ok = self.address.is_multiple_of(16)
            && self.pitch.is_multiple_of(16)
            && self.pitch >= self.cols * self.element.bytes()
            && (1..=256).contains(&self.box_cols)
            && (1..=256).contains(&self.box_rows)
            && row_bytes.is_multiple_of(16)
            && (!self.swizzle_128 || row_bytes == 128)
            && self.cols > 0
            && self.rows > 0;
        if ok {
            Ok(())
        } else {
            Err(BackendError::Invalid {
                op: "tensor map",
                detail: format!("{self:?} is not a tensor map TMA can use"),
            })
        }
    }
}

impl KernelArg {
    /// The address of the value (what the launch API reads `sizeof(param)` bytes from).
    pub fn as_param(&self) -> *mut c_void {
        match self {
            KernelArg::Ptr(v) | KernelArg::U64(v) => v as *const u64 as *mut c_void,
            KernelArg::U32(v) => v as *const u32 as *mut c_void,
            KernelArg::F32(v) => v as *const f32 as *mut c_void,
            KernelArg::TensorMap(map) => map.0.as_ptr() as *mut c_void,
        }
    }
}

/// One kernel launch: which kernel (module = the `.cu` file stem), the grid, the
/// block, dynamic shared memory, and the parameters in declaration order.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub module: &'static str,
    pub kernel: &'static str,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    pub args: Vec<KernelArg>,
}

impl Launch {
    /// The parameter pointer array for a launch API; valid while `self` lives.
    pub fn params(&self) -> Vec<*mut c_void> {
        self.args.iter().map(KernelArg::as_param).collect()
    }
}

/// What a tuning table is measured on and must match to be used
/// ([`crate::tuning::TuningTable`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceIdentity {
    /// The product name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// `major.minor`, e.g. `9.0`.
    pub compute_capability: String,
    /// The driver's CUDA version, e.g. `13.0`.
    pub driver: String,
    /// Streaming multiprocessors (what split-K and tile choices fill).
    pub multiprocessors: usize,
    /// The most shared memory one block may opt in to (sm_80: 163 KiB,
    /// sm_86/89: 99 KiB, sm_90: 227 KiB): configurations above it are never
    /// chosen. (0 in a table that does not record it: no device matches.)
    #[serde(default)]
    pub max_shared_per_block: usize,
}

impl DeviceIdentity {
    /// What the CPU emulator (`tessera-cuda-emulated`) reports as its compute
    /// capability.
    pub const EMULATED: &'static str = "emulated";

    /// Whether the device runs the wgmma kernels: compute capability 9.0
    /// (sm_90a: NVRTC targets compute_90a there, and no later architecture
    /// has wgmma), or the emulator, which implements it.
    pub fn has_wgmma(&self) -> bool {
        self.compute_capability == "9.0" || self.compute_capability == Self::EMULATED
    }
}

/// A device that runs the kernels of `kernels/`. Memory is untyped bytes; the
/// backend keeps the element types.
pub trait Device {
    /// An owned allocation; freed on drop (in stream order on a GPU).
    type Memory;

    fn name(&self) -> String;
    /// The product, architecture, driver and size a tuning table is keyed by.
    fn identity(&self) -> DeviceIdentity;
    /// The Q8_0 matmul inner product this device runs.
    fn matmul_path(&self) -> MatmulPath;
    /// `bytes` bytes (at least 256-byte aligned); contents unspecified. Zero bytes
    /// is allowed and gives an allocation that must not be accessed.
    fn alloc(&self, bytes: usize) -> Result<Self::Memory, BackendError>;
    /// The device address of the allocation's first byte.
    fn address(&self, memory: &Self::Memory) -> u64;
    /// Copies `data` to `memory` at byte `offset`.
    fn upload(
        &self,
        memory: &mut Self::Memory,
        offset: usize,
        data: &[u8],
    ) -> Result<(), BackendError>;
    /// Copies from `memory` at byte `offset` into `out` (waiting for queued work).
    fn download(
        &self,
        memory: &Self::Memory,
        offset: usize,
        out: &mut [u8],
    ) -> Result<(), BackendError>;
    fn launch(&self, launch: &Launch) -> Result<(), BackendError>;
    /// A 2-D tensor map for the TMA kernels (compute capability 9.0); devices
    /// without TMA refuse.
    fn tensor_map_2d(&self, spec: &TensorMapSpec) -> Result<TensorMap, BackendError> {
        Err(BackendError::Device(format!(
            "{} has no tensor memory accelerator (asked for {spec:?})",
            self.name()
        )))
    }
    /// Waits for all queued work.
    fn synchronize(&self) -> Result<(), BackendError>;
}
