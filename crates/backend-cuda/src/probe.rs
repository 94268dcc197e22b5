//! Probes of instructions the kernels are about to rely on, runnable on any
//! [`Device`]: on the emulator they check the kernels' use of the emulated
//! instruction; on a GPU they check the emulator's reading of the PTX ISA
//! against the hardware (the GPU tests run them where the instruction exists).

use tessera_backend::BackendError;

use crate::{Device, KernelArg, Launch};

/// Shared memory the wgmma probe takes (`WGMMA_PROBE_SHARED_BYTES`).
pub const WGMMA_PROBE_SHARED_BYTES: usize = 64 * 64 * 2 + 1024;

/// The shared-memory layouts of B the wgmma probe stages and describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WgmmaLayout {
    /// Core matrices of 8 rows × 16 bytes, no swizzle.
    Interleave = 0,
    /// Rows of 128 bytes, 16-byte chunks XOR-swizzled within 1,024-byte atoms.
    Swizzle128 = 1,
}

/// What the probe computed and what it should have: 64 × 64 f32, row-major.
pub struct ProbeResult {
    pub got: Vec<f32>,
    pub want: Vec<f64>,
}

impl ProbeResult {
    /// The largest |got − want| over the largest |want| (NaN counts as ∞).
    pub fn relative_error(&self) -> f64 {
        let scale = self
            .want
            .iter()
            .fold(0.0f64, |m, w| m.max(w.abs()))
            .max(1e-30);
        self.got
            .iter()
            .zip(&self.want)
            .map(|(g, w)| {
                let g = f64::from(*g);
                if g.is_finite() {
                    (g - w).abs() / scale
                } else {
                    f64::INFINITY
                }
            })
            .fold(0.0, f64::max)
    }
}

/// Runs `wgmma_probe_64x64` (kernel `kernel`, the probe or one of its mutants)
/// on 64 × `k` random f16 matrices A and B (seeded), B staged in `layout`:
/// out = A · Bᵀ, against the product in f64 of the same f16 values.
pub fn wgmma_probe<D: Device>(
    device: &D,
    kernel: &'static str,
    k: usize,
    layout: WgmmaLayout,
    seed: u64,
) -> Result<ProbeResult, BackendError> {
    if k == 0 || !k.is_multiple_of(64) {
        return Err(BackendError::Invalid {
            op: "wgmma probe",
            detail: format!("k = {k} is not a multiple of 64"),
        });
    }
    // A small xorshift: values in [-1, 1) that f16 holds exactly (multiples of 2^-8).
    let mut state = seed.max(1);
    let mut value = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) % 512) as f32 / 256.0 - 1.0
    };
    let a: Vec<f32> = (0..64 * k).map(|_| value()).collect();
    let b: Vec<f32> = (0..64 * k).map(|_| value()).collect();
    let bits = |v: &[f32]| -> Vec<u8> {
        v.iter()
            .flat_map(|x| half::f16::from_f32(*x).to_bits().to_le_bytes())
            .collect()
    };
    let upload = |bytes: &[u8]| -> Result<D::Memory, BackendError> {
        let mut memory = device.alloc(bytes.len())?;
        device.upload(&mut memory, 0, bytes)?;
        Ok(memory)
    };
    let a_mem = upload(&bits(&a))?;
    let b_mem = upload(&bits(&b))?;
    let out = device.alloc(64 * 64 * 4)?;
    device.launch(&Launch {
        module: "wgmma_probe",
        kernel,
        grid: [1, 1, 1],
        block: [128, 1, 1],
        shared_bytes: WGMMA_PROBE_SHARED_BYTES as u32,
        args: vec![
            KernelArg::Ptr(device.address(&a_mem)),
            KernelArg::Ptr(device.address(&b_mem)),
            KernelArg::U32(k as u32),
            KernelArg::U32(layout as u32),
            KernelArg::Ptr(device.address(&out)),
        ],
    })?;
    let mut bytes = vec![0u8; 64 * 64 * 4];
    device.download(&out, 0, &mut bytes)?;
    let got = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let want = (0..64 * 64)
        .map(|i| {
            let (m, n) = (i / 64, i % 64);
            (0..k)
                .map(|kk| f64::from(a[m * k + kk]) * f64::from(b[n * k + kk]))
                .sum()
        })
        .collect();
    Ok(ProbeResult { got, want })
}
