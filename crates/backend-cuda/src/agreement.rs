//! `tessera tune`'s gate: before a W8A16 GEMM configuration is timed for a
//! shape, it must compute what the built-in choice computes on the same random
//! inputs. A kernel the emulator passes but a card gets wrong (the wgmma
//! kernels were written and checked without one) is then left out of the
//! table, with the reason printed, instead of serving because it was fast.

use half::f16;
use tessera_backend::BackendError;

use crate::ops::w8a16::{
    builtin_choice, gemm_with, GemmChoice, HalfRows, GEMM_CONFIGS, TILE_GROUP,
};
use crate::{Device, DeviceBuffer, DeviceWeight, KernelBackend};

/// The largest NMSE between a configuration's outputs and the built-in
/// choice's that counts as the same result: both sum the same exact f16
/// products in f32, in other orders (≈ 1e-13 apart); a wrong fragment, swizzle
/// or pipeline step costs 1e-2 or more.
pub const AGREEMENT_NMSE: f64 = 1e-6;

/// A configuration whose outputs differ from the built-in choice's.
#[derive(Clone, Debug, PartialEq)]
pub struct Disagreement {
    pub config: &'static str,
    /// Against `reference` (NaN when the outputs were not finite).
    pub nmse: f64,
    pub reference: &'static str,
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} disagrees with {} (NMSE {:.2e}, more than {AGREEMENT_NMSE:.0e}): not timed",
            self.config, self.reference, self.nmse
        )
    }
}

/// A small xorshift generator: the inputs only need to be varied and the
/// same for every configuration.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Fills `weights` (Q8_0 planes) with random int8 values and scales, and
/// runs the built-in choice and every other configuration the device runs
/// (split 1) on the same random f16 rows (`rows` × their k). Returns the
/// configurations whose outputs differ from the built-in choice's by more
/// than [`AGREEMENT_NMSE`].
pub fn disagreements<D: Device>(
    b: &KernelBackend<D>,
    rows: usize,
    weights: &mut [DeviceWeight<D::Memory>],
) -> Result<Vec<Disagreement>, BackendError> {
    let device = b.device();
    let Some(k) = weights.first().map(|w| w.cols) else {
        return Ok(Vec::new());
    };
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    for weight in weights.iter_mut() {
        let values = weight.rows * k;
        let quants: Vec<u8> = (0..values)
            .map(|_| (noise.unit() * 127.0).round() as i8 as u8)
            .collect();
        device.upload(&mut weight.data, 0, &quants)?;
        let scales: Vec<u16> = (0..values / 32)
            .map(|_| f16::from_f32((1.5 + noise.unit()) / 512.0).to_bits())
            .collect();
        if let Some(plane) = weight.scales.as_mut() {
            device.upload(plane, 0, bytemuck::cast_slice(&scales))?;
        }
    }
    let x: Vec<u16> = (0..rows * k)
        .map(|_| f16::from_f32(noise.unit()).to_bits())
        .collect();
    let mut halves = HalfRows::alloc(device, rows, k)?;
    let ns: Vec<usize> = weights.iter().map(|w| w.rows).collect();
    let weight_refs: Vec<&DeviceWeight<D::Memory>> = weights.iter().collect();
    let mut outs = ns
        .iter()
        .map(|&n| {
            Ok(DeviceBuffer {
                memory: device.alloc(rows * n * 4)?,
                len: rows * n,
            })
        })
        .collect::<Result<Vec<_>, BackendError>>()?;
    let mut run = |choice: GemmChoice| -> Result<Vec<Vec<f32>>, BackendError> {
        let layout = choice.config.layout;
        let mut tiled = vec![0u16; rows.div_ceil(TILE_GROUP) * TILE_GROUP * k];
        for row in 0..rows {
            for c in 0..k {
                tiled[layout.index(row, c, k)] = x[row * k + c];
            }
        }
        device.upload(&mut halves.values, 0, bytemuck::cast_slice(&tiled))?;
        device.upload(
            &mut halves.row_scales,
            0,
            bytemuck::cast_slice(&vec![1.0f32; rows]),
        )?;
        halves.set_layout(layout);
        let mut out_refs: Vec<&mut DeviceBuffer<D::Memory>> = outs.iter_mut().collect();
        gemm_with(b, choice, &halves, rows, &weight_refs, false, &mut out_refs)?;
        outs.iter()
            .map(|out| {
                let mut values = vec![0.0f32; out.len];
                device.download(&out.memory, 0, bytemuck::cast_slice_mut(&mut values))?;
                Ok(values)
            })
            .collect()
    };
    let identity = device.identity();
    let builtin = builtin_choice(&identity, rows, &ns, k);
    let reference = run(GemmChoice {
        split_k: 1,
        ..builtin
    })?;
    let mut found = Vec::new();
    for config in GEMM_CONFIGS
        .iter()
        .filter(|c| c.runs_on(&identity) && *c != builtin.config)
    {
        let got = run(GemmChoice { config, split_k: 1 })?;
        let nmse = nmse(&got, &reference);
        if nmse.is_nan() || nmse > AGREEMENT_NMSE {
            found.push(Disagreement {
                config: config.name,
                nmse,
                reference: builtin.config.name,
            });
        }
    }
    Ok(found)
}

fn nmse(got: &[Vec<f32>], want: &[Vec<f32>]) -> f64 {
    let (mut err, mut size) = (0.0f64, 0.0f64);
    for (g, w) in got.iter().zip(want) {
        for (a, b) in g.iter().zip(w) {
            err += (f64::from(*a) - f64::from(*b)).powi(2);
            size += f64::from(*b).powi(2);
        }
    }
    err / size
}
