//! The fast CPU path (`Precision::Fast`): Q8_0 matmuls and the score head with
//! activations quantised to int8 blocks of 32 exactly as ggml's
//! `quantize_row_q8_0_ref` (W8A8), integer dot products per block on the widest
//! instruction set the CPU has, f32 accumulation of `isum · d_a · d_w`.
//!
//! Every kernel performs the same f32 operations in the same order (per output,
//! per block: `acc = fma(f32(isum), d_w · d_a, acc)`), and integer sums are
//! exact, so all instruction-set variants give bit-identical results; the scalar
//! variant is their oracle, the reference path (f32 activations) theirs.

pub(crate) mod attention;
mod kernels;
mod pack;
mod quantize;

use std::cell::RefCell;

use rayon::prelude::*;
use tessera_backend::BackendError;
use tessera_gguf::{BlockQ8_0, GgmlType, QK8_0};

use crate::ops::OutPtr;
use crate::CpuWeight;
pub use kernels::Isa;
use kernels::{Activations, ROW_TILE};
use pack::{PackedBlock, GROUP_COLS};

/// Which arithmetic the CPU backend uses for matmuls with Q8_0 weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 activations against dequantised weights (W8A32): the numerical
    /// reference every other path is checked against.
    Reference,
    /// int8 activations (W8A8) and SIMD integer dot products.
    #[default]
    Fast,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Reference => "reference",
            Precision::Fast => "fast",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Precision, String> {
        match s {
            "reference" => Ok(Precision::Reference),
            "fast" => Ok(Precision::Fast),
            other => Err(format!(
                "unknown precision '{other}' (expected reference or fast)"
            )),
        }
    }
}

/// Quantised activations of one matmul, reused between calls on a thread.
#[derive(Default)]
struct QuantisedRows {
    qs: Vec<u8>,
    d: Vec<f32>,
}

thread_local! {
    /// The calling thread's quantised activations (grown, never shrunk).
    static ACTIVATIONS: RefCell<QuantisedRows> = RefCell::default();
    /// A worker's packed weight group (grown, never shrunk).
    static PACKED: RefCell<Vec<PackedBlock>> = const { RefCell::new(Vec::new()) };
}

/// `out = x · wᵀ` for a Q8_0 weight, W8A8. Runs on the current rayon pool.
pub(crate) fn matmul(
    isa: Isa,
    x: &[f32],
    rows: usize,
    weight: &CpuWeight,
    out: &mut [f32],
) -> Result<(), BackendError> {
    let (n, k) = (weight.rows(), weight.cols());
    BackendError::check_len("matmul", "x", rows * k, x.len())?;
    BackendError::check_len("matmul", "out", rows * n, out.len())?;
    if weight.ggml_type() != GgmlType::Q8_0 {
        return Err(BackendError::Invalid {
            op: "matmul",
            detail: format!(
                "the int8 path needs a Q8_0 weight, '{}' is not",
                weight.name()
            ),
        });
    }
    if rows == 0 || n == 0 {
        return Ok(());
    }
    // Re-entrant use on this thread (a pool thread stealing another matmul while
    // it waits) gets a fresh buffer instead of the shared one.
    ACTIVATIONS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => matmul_with(isa, x, rows, weight, out, &mut scratch),
        Err(_) => matmul_with(isa, x, rows, weight, out, &mut QuantisedRows::default()),
    });
    Ok(())
}

fn matmul_with(
    isa: Isa,
    x: &[f32],
    rows: usize,
    weight: &CpuWeight,
    out: &mut [f32],
    scratch: &mut QuantisedRows,
) {
    let (n, k) = (weight.rows(), weight.cols());
    let blocks = k / QK8_0;
    if scratch.qs.len() < rows * k {
        scratch.qs.resize(rows * k, 0);
    }
    if scratch.d.len() < rows * blocks {
        scratch.d.resize(rows * blocks, 0.0);
    }
    let biased = isa.wants_biased_activations();
    scratch.qs[..rows * k]
        .par_chunks_mut(k)
        .zip(scratch.d[..rows * blocks].par_chunks_mut(blocks))
        .zip(x[..rows * k].par_chunks(k))
        .for_each(|((qs, d), x)| quantize::quantize_row(isa, x, qs, d, biased));
    let acts = Activations {
        qs: &scratch.qs[..rows * k],
        d: &scratch.d[..rows * blocks],
        k,
        blocks,
    };
    let bytes = weight.bytes();
    let out_ptr = OutPtr::new(out);
    (0..n.div_ceil(GROUP_COLS))
        .into_par_iter()
        .for_each(|group| {
            PACKED.with(|cell| {
                let mut fresh = Vec::new();
                let mut borrowed = cell.try_borrow_mut();
                let packed = match borrowed.as_mut() {
                    Ok(packed) => &mut **packed,
                    Err(_) => &mut fresh,
                };
                pack::pack_group(isa, bytes, n, k, group, packed);
                let first = group * GROUP_COLS;
                let cols = GROUP_COLS.min(n - first);
                let mut tile = [[0.0f32; GROUP_COLS]; ROW_TILE];
                for row0 in (0..rows).step_by(ROW_TILE) {
                    let tile_rows = ROW_TILE.min(rows - row0);
                    kernels::tile(isa, &acts, row0, tile_rows, packed, &mut tile);
                    for (r, values) in tile.iter().take(tile_rows).enumerate() {
                        // SAFETY: row0 + r < rows and first + cols <= n, so the span is
                        // inside `out[..rows * n]` (checked by the caller); the columns
                        // of this group belong to this task alone.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                values.as_ptr(),
                                out_ptr.get().add((row0 + r) * n + first),
                                cols,
                            );
                        }
                    }
                }
            });
        });
}

/// The score head, W8A8: each input row quantised as for a matmul, then an
/// integer dot product per block with the two head rows. Non-Q8_0 heads keep
/// f32 activations (`None`: the caller uses the reference).
pub(crate) fn score_head(
    x: &[f32],
    rows: usize,
    weight: &CpuWeight,
    head_rows: [usize; 2],
    out: &mut [f32],
) -> Option<Result<(), BackendError>> {
    if weight.ggml_type() != GgmlType::Q8_0 {
        return None;
    }
    let k = weight.cols();
    let blocks = k / QK8_0;
    let checked = BackendError::check_len("score_head", "x", rows * k, x.len())
        .and_then(|()| BackendError::check_len("score_head", "out", rows * 2, out.len()));
    if let Err(e) = checked {
        return Some(Err(e));
    }
    if let Some(&bad) = head_rows.iter().find(|&&r| r >= weight.rows()) {
        return Some(Err(BackendError::Invalid {
            op: "score_head",
            detail: format!(
                "head row {bad} is outside '{}' ({} rows)",
                weight.name(),
                weight.rows()
            ),
        }));
    }
    let row_bytes = blocks * (2 + QK8_0);
    let head = head_rows.map(|r| &weight.bytes()[r * row_bytes..(r + 1) * row_bytes]);
    let mut qs = vec![0u8; k];
    let mut d = vec![0.0f32; blocks];
    for (o, row) in out
        .chunks_exact_mut(2)
        .zip(x.chunks_exact(k.max(1)))
        .take(rows)
    {
        quantize::quantize_row(Isa::Scalar, row, &mut qs, &mut d, false);
        for (o, w) in o.iter_mut().zip(head) {
            let mut acc = 0.0f32;
            for (b, (a, &da)) in qs.chunks_exact(QK8_0).zip(&d).enumerate() {
                let block = BlockQ8_0::read(w, b).expect("the row holds `blocks` blocks");
                let isum: i32 = a
                    .iter()
                    .zip(&block.qs)
                    .map(|(&a, &w)| i32::from(a as i8) * i32::from(w))
                    .sum();
                acc = (isum as f32).mul_add(block.d.to_f32() * da, acc);
            }
            *o = acc;
        }
    }
    Some(Ok(()))
}
