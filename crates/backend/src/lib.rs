//! The `Backend` trait: device buffers and the ops of a Qwen3 forward pass, the
//! types every backend shares, and the op parity kit that checks a backend's ops
//! against plain f64 oracles.

pub mod contract;
mod error;
mod layout;
#[cfg(feature = "kit")]
pub mod parity;
pub mod profile;
pub mod unfused;

pub use error::BackendError;
pub use layout::{AttentionLayout, KvRef, Sequence};
pub use tessera_gguf::HostTensor;

/// Parameters of the attention op that do not change between calls of one model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    pub fn q_width(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_width(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

/// `rows × width` f32 activations at the start of `data`.
pub struct Rows<'a, B> {
    pub data: &'a B,
    pub rows: usize,
    pub width: usize,
}

/// An RMSNorm: its weight (one value per element of a row) and epsilon.
pub struct Norm<'a, W> {
    pub weight: &'a W,
    pub eps: f32,
}

/// The attention op's projections: q `[tokens, n_heads·d]`, k and v
/// `[tokens, n_kv_heads·d]`.
pub struct Qkv<'a, B> {
    pub q: &'a B,
    pub k: &'a B,
    pub v: &'a B,
}

/// RoPE's position of each token and its base.
pub struct Rope<'a> {
    pub positions: &'a [u32],
    pub theta: f32,
}

/// SwiGLU's inputs: gate and up, `rows × ffn` each.
pub struct GateUp<'a, B> {
    pub gate: &'a B,
    pub up: &'a B,
    pub rows: usize,
    pub ffn: usize,
}

// Views of borrowed buffers: copyable whatever the buffer type is.
macro_rules! copy_view {
    ($($name:ident<$($p:ident),*>),*) => {$(
        impl<$($p),*> Clone for $name<'_, $($p),*> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<$($p),*> Copy for $name<'_, $($p),*> {}
    )*};
}
copy_view!(Rows<B>, Norm<W>, Qkv<B>, GateUp<B>);

impl Clone for Rope<'_> {
    fn clone(&self) -> Self {
        *self
    }
}
impl Copy for Rope<'_> {}

/// Token rows of the MLP processed at once unless a backend asks for more
/// ([`Backend::mlp_chunk_rows`]).
pub const DEFAULT_MLP_CHUNK_ROWS: usize = 512;

/// A compute device. Activations are f32 row-major matrices held in `Buffer`s;
/// weights are uploaded once as `Weight`s in their file layout (Q8_0, F32, F16, BF16).
///
/// Every op takes explicit element counts: a buffer may be larger than the data it
/// holds (the engine reuses the MLP's chunk buffers for a shorter last chunk).
pub trait Backend {
    type Buffer;
    type Weight;

    /// Human-readable name, e.g. "cpu-reference".
    fn name(&self) -> String;

    /// The most f32 values one activation buffer may hold, when the device
    /// limits it (a wgpu storage binding); the engine splits larger batches
    /// into several passes. `None`: no limit beyond memory.
    fn max_activation_elements(&self) -> Option<usize> {
        None
    }

    fn upload_weight(&self, tensor: &HostTensor) -> Result<Self::Weight, BackendError>;
    /// A buffer of `len` f32 values; contents unspecified.
    fn alloc(&self, len: usize) -> Result<Self::Buffer, BackendError>;
    fn write(&self, buf: &mut Self::Buffer, data: &[f32]) -> Result<(), BackendError>;
    fn read(&self, buf: &Self::Buffer, len: usize) -> Result<Vec<f32>, BackendError>;

    /// `out[i, :] = table[ids[i], :]` (rows dequantised to f32).
    fn embedding(
        &self,
        table: &Self::Weight,
        ids: &[u32],
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError>;

    /// Row-wise RMSNorm over `rows` rows of `dim`: `out = x / sqrt(mean(x²) + eps) * w`.
    /// Used with `dim = head_dim` and `rows = tokens × heads` for QK-norm.
    fn rms_norm(
        &self,
        x: &Self::Buffer,
        weight: &Self::Weight,
        rows: usize,
        dim: usize,
        eps: f32,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError>;

    /// In-place RMSNorm (QK-norm on q and k).
    fn rms_norm_inplace(
        &self,
        x: &mut Self::Buffer,
        weight: &Self::Weight,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<(), BackendError>;

    /// `out[rows, n] = x[rows, k] · wᵀ` where `w` is `[n, k]` (n output features).
    fn matmul(
        &self,
        x: &Self::Buffer,
        rows: usize,
        weight: &Self::Weight,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError>;

    /// NeoX-style rotary embedding in place on `[tokens, heads, head_dim]`
    /// (pairs `(i, i + head_dim/2)`), token `t` at position `positions[t]`.
    fn rope(
        &self,
        x: &mut Self::Buffer,
        positions: &[u32],
        heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<(), BackendError>;

    /// Causal GQA attention over packed sequences ([`Qkv`]), `out` is
    /// `[tokens, n_heads·d]`. Each sequence attends to its prefix's K/V
    /// (`prefixes[seq.prefix]`, all of it) and, causally, to its own tokens;
    /// never to another sequence. Keys are visited in order: prefix first, then
    /// the sequence's own.
    fn attention(
        &self,
        qkv: Qkv<'_, Self::Buffer>,
        shape: AttentionShape,
        layout: &AttentionLayout,
        prefixes: &[KvRef<'_, Self::Buffer>],
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError>;

    /// `out = silu(gate) * up` over `len` elements.
    fn swiglu(
        &self,
        gate: &Self::Buffer,
        up: &Self::Buffer,
        len: usize,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError>;

    /// `x += y` over `len` elements.
    fn add_inplace(
        &self,
        x: &mut Self::Buffer,
        y: &Self::Buffer,
        len: usize,
    ) -> Result<(), BackendError>;

    /// `out[r, :] = x[rows[r], :]` for rows of width `dim`.
    fn gather_rows(
        &self,
        x: &Self::Buffer,
        rows: &[usize],
        dim: usize,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError>;

    /// Copies `rows` rows of `width` from `src` (starting at `src_row`) into `dst`
    /// (starting at `dst_row`).
    fn copy_rows(
        &self,
        src: &Self::Buffer,
        src_row: usize,
        dst: &mut Self::Buffer,
        dst_row: usize,
        rows: usize,
        width: usize,
    ) -> Result<(), BackendError>;

    /// Score head: `out[r, j] = x[r, :] · w[head_rows[j], :]` for j in {0 (yes), 1 (no)}.
    fn score_head(
        &self,
        x: &Self::Buffer,
        rows: usize,
        weight: &Self::Weight,
        head_rows: [usize; 2],
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError>;

    /// Token rows the engine gives the MLP at once: bounds its `rows × ffn`
    /// intermediates. A device that needs large matmuls to fill itself asks
    /// for more.
    fn mlp_chunk_rows(&self) -> usize {
        DEFAULT_MLP_CHUNK_ROWS
    }

    // Fused ops. Each default runs the basic ops it stands for
    // (`unfused::*`); a backend overrides them where one kernel can do the
    // work of several (fewer launches, activations read and written once).

    /// RMSNorm of `x` (`norm` of `x.width` values), then one matmul per weight
    /// on the normalised rows: `outs[i] = rms_norm(x) · weights[i]ᵀ`. `normed`
    /// is workspace for `rows × width` values; its contents afterwards are
    /// unspecified (a fusing backend may never write it).
    fn rms_norm_matmuls(
        &self,
        x: Rows<'_, Self::Buffer>,
        norm: Norm<'_, Self::Weight>,
        weights: &[&Self::Weight],
        normed: &mut Self::Buffer,
        outs: &mut [&mut Self::Buffer],
    ) -> Result<(), BackendError> {
        unfused::rms_norm_matmuls(self, x, norm, weights, normed, outs)
    }

    /// QK-norm (each head of q with `q_norm`, of k with `k_norm`) then RoPE, in
    /// place: q is `[tokens, n_heads, head_dim]`, k is
    /// `[tokens, n_kv_heads, head_dim]`, token `t` at `rope.positions[t]`.
    fn qk_norm_rope(
        &self,
        q: &mut Self::Buffer,
        k: &mut Self::Buffer,
        q_norm: Norm<'_, Self::Weight>,
        k_norm: Norm<'_, Self::Weight>,
        rope: Rope<'_>,
        shape: AttentionShape,
    ) -> Result<(), BackendError> {
        unfused::qk_norm_rope(self, q, k, q_norm, k_norm, rope, shape)
    }

    /// `out[rows, n] += x · wᵀ` (a residual add). `scratch` is workspace for
    /// `rows × n` values, contents afterwards unspecified.
    fn matmul_add(
        &self,
        x: &Self::Buffer,
        rows: usize,
        weight: &Self::Weight,
        n: usize,
        scratch: &mut Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        unfused::matmul_add(self, x, rows, weight, n, scratch, out)
    }

    /// `out[rows, n] += swiglu(gate, up) · downᵀ` ([`GateUp`]). `act`
    /// (`rows × ffn`) and `scratch` (`rows × n`) are workspace, contents
    /// afterwards unspecified.
    fn swiglu_matmul_add(
        &self,
        gate_up: GateUp<'_, Self::Buffer>,
        down: &Self::Weight,
        n: usize,
        act: &mut Self::Buffer,
        scratch: &mut Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        unfused::swiglu_matmul_add(self, gate_up, down, n, act, scratch, out)
    }

    /// Waits for queued work (no-op on synchronous backends).
    fn synchronize(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
