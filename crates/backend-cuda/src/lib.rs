//! The CUDA backend: the ops of `tessera_backend::Backend` as our own kernels
//! (`kernels/*.cu`), launched on any [`Device`]. With the `cuda` feature the device
//! is a real GPU through cudarc ([`CudaBackend`]), the kernels compiled at run time
//! by NVRTC for its architecture; the `tessera-cuda-emulated` test crate runs the
//! same kernels, launched by this same host code, on the CPU.
//!
//! Each op is an entry point (shape checks, in `ops/`) that builds a [`Launch`]
//! plan (grid, block, shared memory, parameters) from pure functions that are unit
//! tested without a GPU.

pub mod agreement;
pub mod ceilings;
pub mod device;
mod kernel_names;
pub mod kernels;
mod memory;
pub mod ops;
pub mod probe;
pub mod tuning;

#[cfg(feature = "cuda")]
mod cuda;

use std::sync::{Arc, Mutex};

use tessera_backend::{
    AttentionLayout, AttentionShape, Backend, BackendError, GateUp, HostTensor, KvRef, Norm, Qkv,
    Rope, Rows,
};

pub use device::{Arithmetic, Device, DeviceIdentity, KernelArg, Launch, MatmulPath};
pub use memory::{DeviceBuffer, DeviceWeight};

#[cfg(feature = "cuda")]
pub use cuda::{cuda_available, cuda_device_count, CudaBackend, CudaDevice};

/// Token rows the engine gives the MLP at once on this backend: large enough
/// that every projection of the 4B shapes fills an H100 (the 2560-wide down
/// projection is 40 column tiles; 4,096 rows make 2,560 tiles, several per SM),
/// small enough that the `rows × ffn` intermediates stay ≈ 160 MB each.
pub const MLP_CHUNK_ROWS: usize = 4096;

/// A table on the device: its slot, its bytes and the memory holding them.
type HeldTable<M> = (&'static str, Vec<u8>, M);

/// The kernels of `kernels/` on a device.
pub struct KernelBackend<D: Device> {
    device: D,
    /// The int8 activations of the matmuls, reused from op to op (grown when a
    /// larger batch needs it, never shrunk).
    quantised: Mutex<Option<ops::matmul::QuantisedRows<D::Memory>>>,
    /// The f16 activations of the W8A16 matmuls, reused the same way.
    halves: Mutex<Option<ops::w8a16::HalfRows<D::Memory>>>,
    /// Small host tables the ops upload (token positions, RoPE frequencies,
    /// attention tiles) by slot, with their bytes: every layer of a pass asks
    /// for the same ones, which then go up once per pass instead of per layer.
    tables: Mutex<Vec<HeldTable<D::Memory>>>,
    /// The split-K shares of the W8A16 GEMMs (f32), reused the same way.
    partials: Mutex<Option<(D::Memory, usize)>>,
    /// The f16 K/V rows of the v3 attention, reused the same way.
    kv16: Mutex<Option<(D::Memory, usize)>>,
    /// W8A16's tensor-core attention; `None`: a tuning table's choice for the
    /// head size, else [`ops::attention::AttentionKernel::F16Kv`].
    attention: Option<ops::attention::AttentionKernel>,
    mlp_chunk_rows: usize,
    arithmetic: Arithmetic,
    gemm: GemmPolicy,
    /// The device's identity, read once: every GEMM and attention launch
    /// consults its SM count and shared-memory limit.
    identity: DeviceIdentity,
}

/// How the backend picks each W8A16 GEMM's configuration.
#[derive(Clone, Debug)]
pub enum GemmPolicy {
    /// [`tuning::builtin_choice`] for the device's multiprocessors.
    Builtin,
    /// A tuning table's choice where it has the shape, else the built-in one.
    Table(Arc<tuning::TuningTable>),
    /// One choice for every GEMM (tests, benchmarks).
    Fixed(ops::w8a16::GemmChoice),
}

impl<D: Device> KernelBackend<D> {
    pub fn with_device(device: D) -> KernelBackend<D> {
        KernelBackend {
            identity: device.identity(),
            device,
            quantised: Mutex::new(None),
            halves: Mutex::new(None),
            tables: Mutex::new(Vec::new()),
            partials: Mutex::new(None),
            kv16: Mutex::new(None),
            attention: None,
            mlp_chunk_rows: MLP_CHUNK_ROWS,
            arithmetic: Arithmetic::W8A8,
            gemm: GemmPolicy::Builtin,
        }
    }

    /// The same backend with the Q8_0 matmuls in `arithmetic`; an error when the
    /// device cannot run it (W8A16 needs the f16 tensor cores of sm_80 or later).
    pub fn with_arithmetic(
        mut self,
        arithmetic: Arithmetic,
    ) -> Result<KernelBackend<D>, BackendError> {
        if arithmetic == Arithmetic::W8A16 && self.device.matmul_path() != MatmulPath::Mma {
            return Err(BackendError::Device(format!(
                "{} has no f16 tensor-core mma (sm_80 or later): use --gpu-precision w8a8",
                self.device.name()
            )));
        }
        self.arithmetic = arithmetic;
        Ok(self)
    }

    /// The arithmetic of the Q8_0 matmuls.
    pub fn arithmetic(&self) -> Arithmetic {
        self.arithmetic
    }

    /// The same backend with the W8A16 GEMMs chosen by `policy`.
    pub fn with_gemm_policy(mut self, policy: GemmPolicy) -> KernelBackend<D> {
        self.gemm = policy;
        self
    }

    /// The same backend running what `table` says, once the table is checked
    /// to be this device's (`path` names it in the error).
    pub fn with_tuning(
        self,
        table: tuning::TuningTable,
        path: &std::path::Path,
    ) -> Result<KernelBackend<D>, tuning::TuningError> {
        table.check(path, &self.identity, self.arithmetic)?;
        Ok(self.with_gemm_policy(GemmPolicy::Table(Arc::new(table))))
    }

    pub fn gemm_policy(&self) -> &GemmPolicy {
        &self.gemm
    }

    /// The configuration of a W8A16 GEMM of `rows` rows by the weights of
    /// `ns` output features over `k`.
    pub fn gemm_choice(&self, rows: usize, ns: &[usize], k: usize) -> ops::w8a16::GemmChoice {
        let identity = &self.identity;
        let builtin = || tuning::builtin_choice(identity, rows, ns, k);
        match &self.gemm {
            GemmPolicy::Builtin => builtin(),
            GemmPolicy::Table(table) => table
                .choose(ns, k, rows)
                .filter(|c| c.config.fits(identity))
                .map(|c| tuning::split_for_rows(identity, c, rows, ns, k))
                .unwrap_or_else(builtin),
            GemmPolicy::Fixed(choice) => *choice,
        }
    }

    /// The same backend with W8A16 attention on `kernel`, whatever a tuning
    /// table says.
    pub fn with_attention(mut self, kernel: ops::attention::AttentionKernel) -> KernelBackend<D> {
        self.attention = Some(kernel);
        self
    }

    /// The tensor-core attention W8A16 runs at `head_dim`: the one set by
    /// [`Self::with_attention`], else the tuning table's, else v3 — v3 for
    /// v4 (wgmma) on a device without wgmma, and v2 wherever v3's shared
    /// memory does not fit the device (sm_86/89).
    pub fn attention_kernel(&self, head_dim: usize) -> ops::attention::AttentionKernel {
        use ops::attention::AttentionKernel;
        let mut wanted = match (self.attention, &self.gemm) {
            (Some(kernel), _) => kernel,
            (None, GemmPolicy::Table(table)) => {
                table.attention_choice(head_dim).unwrap_or_default()
            }
            (None, _) => AttentionKernel::default(),
        };
        let fits =
            |k: AttentionKernel| k.shared_bytes(head_dim) <= self.identity.max_shared_per_block;
        if wanted == AttentionKernel::Wgmma && !(self.identity.has_wgmma() && fits(wanted)) {
            wanted = AttentionKernel::F16Kv;
        }
        if wanted == AttentionKernel::F16Kv && !fits(wanted) {
            return AttentionKernel::Mma;
        }
        wanted
    }

    /// Runs `op` on a device buffer of at least `bytes` bytes for split-K
    /// shares, grown when needed and reused (stream order makes reuse safe).
    pub(crate) fn with_partials<R>(
        &self,
        bytes: usize,
        op: impl FnOnce(&D::Memory) -> Result<R, BackendError>,
    ) -> Result<R, BackendError> {
        with_scratch(&self.device, &self.partials, bytes, op)
    }

    /// As `with_partials`, for the v3 attention's f16 K/V rows.
    pub(crate) fn with_kv16<R>(
        &self,
        bytes: usize,
        op: impl FnOnce(&D::Memory) -> Result<R, BackendError>,
    ) -> Result<R, BackendError> {
        with_scratch(&self.device, &self.kv16, bytes, op)
    }

    /// The same backend with the MLP run `rows` token rows at a time (at least
    /// one).
    pub fn with_mlp_chunk_rows(mut self, rows: usize) -> KernelBackend<D> {
        self.mlp_chunk_rows = rows.max(1);
        self
    }

    /// Runs `op` with the backend's quantised-activation buffer shaped as (at
    /// least) `rows × k`, allocating a larger one first when needed.
    pub(crate) fn with_quantised<R>(
        &self,
        rows: usize,
        k: usize,
        op: impl FnOnce(&ops::matmul::QuantisedRows<D::Memory>) -> Result<R, BackendError>,
    ) -> Result<R, BackendError> {
        with_reshaped(
            &self.quantised,
            |q| q.reshape(rows, k),
            || ops::matmul::QuantisedRows::alloc(&self.device, rows, k),
            op,
        )
    }

    /// As `with_quantised`, for the f16 activation rows of the W8A16 matmuls.
    pub(crate) fn with_halves<R>(
        &self,
        rows: usize,
        k: usize,
        op: impl FnOnce(&ops::w8a16::HalfRows<D::Memory>) -> Result<R, BackendError>,
    ) -> Result<R, BackendError> {
        with_reshaped(
            &self.halves,
            |h| h.reshape(rows, k),
            || ops::w8a16::HalfRows::alloc(&self.device, rows, k),
            op,
        )
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    /// Runs `op` with the device addresses of `tables` (slot name, bytes), each
    /// uploaded only when the slot does not hold those bytes already. The lock
    /// is held through `op`, so no slot is replaced while its launch is being
    /// queued; a replaced table is freed in stream order after the work queued
    /// before it.
    pub(crate) fn with_tables<R>(
        &self,
        tables: &[(&'static str, &[u8])],
        op: impl FnOnce(&[u64]) -> Result<R, BackendError>,
    ) -> Result<R, BackendError> {
        let mut held = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let mut addresses = Vec::with_capacity(tables.len());
        for &(slot, bytes) in tables {
            let index = match held.iter().position(|(name, _, _)| *name == slot) {
                Some(i) if held[i].1 == bytes => i,
                found => {
                    let mut memory = self.device.alloc(bytes.len())?;
                    self.device.upload(&mut memory, 0, bytes)?;
                    let entry = (slot, bytes.to_vec(), memory);
                    match found {
                        Some(i) => {
                            held[i] = entry;
                            i
                        }
                        None => {
                            held.push(entry);
                            held.len() - 1
                        }
                    }
                }
            };
            addresses.push(self.device.address(&held[index].2));
        }
        op(&addresses)
    }

    /// A temporary device copy of a small host table (token ids, positions, tiles).
    fn upload_table<T: bytemuck::Pod>(&self, values: &[T]) -> Result<D::Memory, BackendError> {
        let bytes = bytemuck::cast_slice(values);
        let mut mem = self.device.alloc(bytes.len())?;
        self.device.upload(&mut mem, 0, bytes)?;
        Ok(mem)
    }

    fn address(&self, buffer: &DeviceBuffer<D::Memory>) -> u64 {
        self.device.address(&buffer.memory)
    }
}

/// Runs `op` on the scratch memory in `slot` (with its size), replaced by a
/// larger allocation first when it holds fewer than `bytes` (the old one freed
/// first, so both never need to fit at once).
fn with_scratch<D: Device, R>(
    device: &D,
    slot: &Mutex<Option<(D::Memory, usize)>>,
    bytes: usize,
    op: impl FnOnce(&D::Memory) -> Result<R, BackendError>,
) -> Result<R, BackendError> {
    let mut held = slot.lock().unwrap_or_else(|e| e.into_inner());
    if held.as_ref().is_none_or(|(_, size)| *size < bytes) {
        *held = None;
        *held = Some((device.alloc(bytes)?, bytes));
    }
    op(&held.as_ref().expect("filled above").0)
}

/// Runs `op` on the activation buffer in `slot` once `reshape` says it fits,
/// else on a new one from `alloc` (the old one freed first, so both never need
/// to fit at once). Work on the device is stream-ordered, so reusing the buffer
/// between launches is safe; the lock only guards the host-side handle.
fn with_reshaped<T, R>(
    slot: &Mutex<Option<T>>,
    reshape: impl FnOnce(&mut T) -> bool,
    alloc: impl FnOnce() -> Result<T, BackendError>,
    op: impl FnOnce(&T) -> Result<R, BackendError>,
) -> Result<R, BackendError> {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if !slot.as_mut().is_some_and(reshape) {
        *slot = None;
        *slot = Some(alloc()?);
    }
    op(slot.as_ref().expect("filled above"))
}

impl<D: Device> Backend for KernelBackend<D> {
    type Buffer = DeviceBuffer<D::Memory>;
    type Weight = DeviceWeight<D::Memory>;

    /// The device and the arithmetic of its Q8_0 matmuls, e.g.
    /// `cuda (NVIDIA H200, sm_90, Mma), w8a16`.
    fn name(&self) -> String {
        format!("{}, {}", self.device.name(), self.arithmetic)
    }

    fn upload_weight(&self, tensor: &HostTensor) -> Result<Self::Weight, BackendError> {
        DeviceWeight::upload(&self.device, tensor)
    }

    fn alloc(&self, len: usize) -> Result<Self::Buffer, BackendError> {
        let bytes = len.checked_mul(4).ok_or_else(|| {
            BackendError::Device(format!(
                "a buffer of {len} f32 values does not fit in memory"
            ))
        })?;
        Ok(DeviceBuffer {
            memory: self.device.alloc(bytes)?,
            len,
        })
    }

    fn write(&self, buf: &mut Self::Buffer, data: &[f32]) -> Result<(), BackendError> {
        BackendError::check_len("write", "buffer", data.len(), buf.len)?;
        self.device
            .upload(&mut buf.memory, 0, bytemuck::cast_slice(data))
    }

    fn read(&self, buf: &Self::Buffer, len: usize) -> Result<Vec<f32>, BackendError> {
        BackendError::check_len("read", "buffer", len, buf.len)?;
        let mut out = vec![0.0f32; len];
        self.device
            .download(&buf.memory, 0, bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }

    fn embedding(
        &self,
        table: &Self::Weight,
        ids: &[u32],
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        ops::embedding::embedding(self, table, ids, out)
    }

    fn rms_norm(
        &self,
        x: &Self::Buffer,
        weight: &Self::Weight,
        rows: usize,
        dim: usize,
        eps: f32,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        let out_address = self.address(out);
        ops::rms_norm::rms_norm(self, x, weight, rows, dim, eps, (out_address, out.len))
    }

    fn rms_norm_inplace(
        &self,
        x: &mut Self::Buffer,
        weight: &Self::Weight,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<(), BackendError> {
        let x_address = self.address(x);
        ops::rms_norm::rms_norm(self, x, weight, rows, dim, eps, (x_address, x.len))
    }

    fn matmul(
        &self,
        x: &Self::Buffer,
        rows: usize,
        weight: &Self::Weight,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        ops::matmul::matmul(self, x, rows, weight, out)
    }

    fn rope(
        &self,
        x: &mut Self::Buffer,
        positions: &[u32],
        heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<(), BackendError> {
        ops::rope::rope(self, x, positions, heads, head_dim, theta)
    }

    fn attention(
        &self,
        qkv: Qkv<'_, Self::Buffer>,
        shape: AttentionShape,
        layout: &AttentionLayout,
        prefixes: &[KvRef<'_, Self::Buffer>],
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        ops::attention::attention(self, qkv, shape, layout, prefixes, out)
    }

    fn swiglu(
        &self,
        gate: &Self::Buffer,
        up: &Self::Buffer,
        len: usize,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        ops::swiglu::swiglu(self, gate, up, len, out)
    }

    fn add_inplace(
        &self,
        x: &mut Self::Buffer,
        y: &Self::Buffer,
        len: usize,
    ) -> Result<(), BackendError> {
        ops::add::add_inplace(self, x, y, len)
    }

    fn gather_rows(
        &self,
        x: &Self::Buffer,
        rows: &[usize],
        dim: usize,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        ops::copy::gather_rows(self, x, rows, dim, out)
    }

    fn copy_rows(
        &self,
        src: &Self::Buffer,
        src_row: usize,
        dst: &mut Self::Buffer,
        dst_row: usize,
        rows: usize,
        width: usize,
    ) -> Result<(), BackendError> {
        ops::copy::copy_rows(self, src, src_row, dst, dst_row, rows, width)
    }

    fn score_head(
        &self,
        x: &Self::Buffer,
        rows: usize,
        weight: &Self::Weight,
        head_rows: [usize; 2],
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        ops::score_head::score_head(self, x, rows, weight, head_rows, out)
    }

    fn mlp_chunk_rows(&self) -> usize {
        self.mlp_chunk_rows
    }

    fn rms_norm_matmuls(
        &self,
        x: Rows<'_, Self::Buffer>,
        norm: Norm<'_, Self::Weight>,
        weights: &[&Self::Weight],
        normed: &mut Self::Buffer,
        outs: &mut [&mut Self::Buffer],
    ) -> Result<(), BackendError> {
        ops::fused::rms_norm_matmuls(self, x, norm, weights, normed, outs)
    }

    fn qk_norm_rope(
        &self,
        q: &mut Self::Buffer,
        k: &mut Self::Buffer,
        q_norm: Norm<'_, Self::Weight>,
        k_norm: Norm<'_, Self::Weight>,
        rope: Rope<'_>,
        shape: AttentionShape,
    ) -> Result<(), BackendError> {
        ops::rope::qk_norm_rope(self, q, k, q_norm, k_norm, rope, shape)
    }

    fn matmul_add(
        &self,
        x: &Self::Buffer,
        rows: usize,
        weight: &Self::Weight,
        n: usize,
        scratch: &mut Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        ops::fused::matmul_add(self, x, rows, weight, n, scratch, out)
    }

    fn swiglu_matmul_add(
        &self,
        gate_up: GateUp<'_, Self::Buffer>,
        down: &Self::Weight,
        n: usize,
        act: &mut Self::Buffer,
        scratch: &mut Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        ops::fused::swiglu_matmul_add(self, gate_up, down, n, act, scratch, out)
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        self.device.synchronize()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// Host memory with an upload counter: enough to check the table cache.
    struct Counting {
        uploads: Cell<usize>,
    }

    impl Device for Counting {
        type Memory = Vec<u8>;

        fn name(&self) -> String {
            "counting".into()
        }

        fn identity(&self) -> DeviceIdentity {
            DeviceIdentity {
                name: "counting".into(),
                compute_capability: "none".into(),
                driver: "none".into(),
                multiprocessors: 1,
                max_shared_per_block: 48 * 1024,
            }
        }

        fn matmul_path(&self) -> MatmulPath {
            MatmulPath::Mma
        }

        fn alloc(&self, bytes: usize) -> Result<Vec<u8>, BackendError> {
            Ok(vec![0; bytes])
        }

        fn address(&self, memory: &Vec<u8>) -> u64 {
            memory.as_ptr() as u64
        }

        fn upload(
            &self,
            memory: &mut Vec<u8>,
            offset: usize,
            data: &[u8],
        ) -> Result<(), BackendError> {
            self.uploads.set(self.uploads.get() + 1);
            memory[offset..offset + data.len()].copy_from_slice(data);
            Ok(())
        }

        fn download(
            &self,
            memory: &Vec<u8>,
            offset: usize,
            out: &mut [u8],
        ) -> Result<(), BackendError> {
            out.copy_from_slice(&memory[offset..offset + out.len()]);
            Ok(())
        }

        fn launch(&self, _: &Launch) -> Result<(), BackendError> {
            Ok(())
        }

        fn synchronize(&self) -> Result<(), BackendError> {
            Ok(())
        }
    }

    #[test]
    fn tables_go_up_once_while_their_bytes_stay_the_same() {
        let b = KernelBackend::with_device(Counting {
            uploads: Cell::new(0),
        });
        let uploads = |b: &KernelBackend<Counting>| b.device().uploads.get();
        let first = b
            .with_tables(&[("positions", &[1, 2, 3]), ("freq", &[9])], |a| {
                Ok(a.to_vec())
            })
            .unwrap();
        assert_eq!(uploads(&b), 2);
        // Every layer of a pass asks again: nothing goes up.
        for _ in 0..3 {
            let again = b
                .with_tables(&[("positions", &[1, 2, 3]), ("freq", &[9])], |a| {
                    Ok(a.to_vec())
                })
                .unwrap();
            assert_eq!(again, first);
        }
        assert_eq!(uploads(&b), 2);
        // New positions (the next pass): that slot alone is replaced.
        b.with_tables(&[("positions", &[4, 5]), ("freq", &[9])], |a| {
            assert_eq!(a[1], first[1]);
            Ok(())
        })
        .unwrap();
        assert_eq!(uploads(&b), 3);
        let held = b.tables.lock().unwrap();
        assert_eq!(
            held.iter().find(|t| t.0 == "positions").unwrap().2,
            vec![4, 5]
        );
    }
}
