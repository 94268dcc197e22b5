//! The int8 tile kernels: up to `ROW_TILE` activation rows against one packed
//! group of 16 weight columns, one variant per instruction set, picked at run
//! time. All variants compute the same integer sums and the same f32 operations
//! in the same order, so they agree bit for bit.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avxvnni;
mod scalar;

use super::pack::{PackedBlock, GROUP_COLS};

/// Activation rows per kernel call (the weight group is reused this many times
/// from registers and L1).
pub(crate) const ROW_TILE: usize = 8;

/// Quantised activations: `rows × k` int8 values (biased to u8 for the VNNI
/// kernels) and one f32 scale per block of 32.
pub(crate) struct Activations<'a> {
    pub qs: &'a [u8],
    pub d: &'a [f32],
    pub k: usize,
    pub blocks: usize,
}

/// The instruction sets the int8 kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust: the oracle of the SIMD variants.
    Scalar,
    /// AVX2 `vpmaddubsw` with the sign trick (|w| · sign(a, w)).
    Avx2,
    /// AVX-VNNI `vpdpbusd` on 256-bit vectors, activations biased to u8.
    AvxVnni,
    /// AVX-512 VNNI `vpdpbusd` on 512-bit vectors, activations biased to u8.
    Avx512Vnni,
}

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::AvxVnni, Isa::Avx512Vnni];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avx-vnni",
            Isa::Avx512Vnni => "avx512-vnni",
        }
    }

    /// Whether this CPU runs the variant.
    pub fn is_available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            match self {
                Isa::Scalar => true,
                Isa::Avx2 => avx2,
                Isa::AvxVnni => avx2 && is_x86_feature_detected!("avxvnni"),
                Isa::Avx512Vnni => {
                    is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("avx512vnni")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Scalar
        }
    }

    /// The fastest variant this CPU runs.
    pub fn best() -> Isa {
        [Isa::Avx512Vnni, Isa::AvxVnni, Isa::Avx2]
            .into_iter()
            .find(|isa| isa.is_available())
            .unwrap_or(Isa::Scalar)
    }

    /// `vpdpbusd` multiplies unsigned by signed bytes: those kernels take
    /// activations plus 128 and subtract 128 · Σw (`PackedBlock::corr`).
    pub(crate) fn wants_biased_activations(self) -> bool {
        matches!(self, Isa::AvxVnni | Isa::Avx512Vnni)
    }
}

/// `out[r][c]` for activation rows `row0 .. row0 + rows` (`rows <= ROW_TILE`)
/// and the 16 columns of `packed`.
///
/// The caller guarantees `isa.is_available()` and that the activations hold
/// the rows and `packed.len()` blocks per row, quantised for `isa`.
pub(crate) fn tile(
    isa: Isa,
    acts: &Activations<'_>,
    row0: usize,
    rows: usize,
    packed: &[PackedBlock],
    out: &mut [[f32; GROUP_COLS]; ROW_TILE],
) {
    debug_assert!((1..=ROW_TILE).contains(&rows) && isa.is_available());
    debug_assert!((row0 + rows) * acts.k <= acts.qs.len() && packed.len() == acts.blocks);
    match isa {
        Isa::Scalar => scalar::tile(acts, row0, rows, packed, out),
        // SAFETY (all three): the caller checked the CPU features, and the
        // bounds asserted above are the ones the kernels rely on.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::tile(acts, row0, rows, packed, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => unsafe { avxvnni::tile(acts, row0, rows, packed, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { avx512::tile(acts, row0, rows, packed, out) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => scalar::tile(acts, row0, rows, packed, out),
    }
}
