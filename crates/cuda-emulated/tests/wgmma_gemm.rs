//! The wgmma W8A16 GEMM (`kernels/matmul_w8a16_wgmma.cu`) beyond the kit's
//! small cases, on the emulated device: a k loop deep enough that every ring
//! slot is refilled while other stages are in flight, an odd stage count (the
//! all-zero padding stage) ending in a half-filled stage (k = 33 blocks),
//! several row and feature tiles with ragged edges, unsplit and split —
//! against the f64 product of the f32 activations and the exact `q · d`
//! weights (the W8A32 oracle), at the W8A16 tolerance; the persistent
//! configuration also on a grid of fewer blocks than work units, its ring
//! running on across them. And its mutants: each slip fails its case.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_backend::parity::Tolerances;
use tessera_backend::{Backend, HostTensor};
use tessera_backend_cuda::ops::w8a16::{GemmChoice, GemmConfig, GEMM_CONFIGS};
use tessera_backend_cuda::{Arithmetic, GemmPolicy, KernelBackend, MatmulPath};
use tessera_cuda_emulated::EmulatedDevice;
use tessera_gguf::{dequantize_row_q8_0, quantize_row_q8_0, BlockQ8_0, GgmlType};

/// The deep case: rows (two 128-row tiles, the second of 2 rows), k (33 Q8_0
/// blocks: 17 stages of 64, the last half beyond k) and features (three
/// 128-feature tiles, the last of 1).
const DEEP: [usize; 3] = [130, 33 * 32, 257];

/// More work units than blocks for the persistent configuration: three
/// 256-token tiles (the last half filled) × three 128-feature tiles (the last
/// half filled) = 9 units, k 7 blocks (4 stages, the last half beyond k:
/// a unit's stages do not fill the 5-slot ring evenly, so its slots and
/// phases shift from unit to unit).
const UNITS: [usize; 3] = [640, 7 * 32, 320];

/// Two raster bands: nine 256-token tiles (a full band of 8 and a band of 1,
/// its tile 152 of 256 rows) × two 128-feature tiles (the second of 72) = 18
/// units, k 3 blocks (2 stages, the second half beyond k).
const BANDS: [usize; 3] = [8 * 256 + 152, 3 * 32, 200];

struct Case {
    rows: usize,
    n: usize,
    x: Vec<f32>,
    w: HostTensor,
    /// The f64 product with the exact weights, row-major [rows, n].
    want: Vec<f64>,
}

fn case([rows, k, n]: [usize; 3]) -> Case {
    let mut rng = StdRng::seed_from_u64(27);
    let mut random = |len: usize, scale: f32| -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-scale..scale)).collect()
    };
    let x = random(rows * k, 2.0);
    let mut blocks = vec![BlockQ8_0::default(); n * k / 32];
    quantize_row_q8_0(&random(n * k, 0.5), &mut blocks);
    let mut exact = vec![0.0f32; n * k];
    dequantize_row_q8_0(&blocks, &mut exact);
    let w = HostTensor::in_memory(
        "w",
        GgmlType::Q8_0,
        n,
        k,
        BlockQ8_0::as_bytes(&blocks).to_vec(),
    )
    .expect("consistent tensor");
    let mut want = vec![0.0f64; rows * n];
    for r in 0..rows {
        for j in 0..n {
            want[r * n + j] = (0..k)
                .map(|c| f64::from(x[r * k + c]) * f64::from(exact[j * k + c]))
                .sum();
        }
    }
    Case {
        rows,
        n,
        x,
        w,
        want,
    }
}

/// The GEMM's NMSE against the f64 product with `choice` on `device`, or the
/// launch's error.
fn nmse(device: EmulatedDevice, choice: GemmChoice, case: &Case) -> Result<f64, String> {
    let b = KernelBackend::with_device(device)
        .with_arithmetic(Arithmetic::W8A16)
        .expect("the emulated mma device runs W8A16")
        .with_gemm_policy(GemmPolicy::Fixed(choice));
    let weight = b.upload_weight(&case.w).map_err(|e| e.to_string())?;
    let mut xb = b.alloc(case.x.len()).map_err(|e| e.to_string())?;
    b.write(&mut xb, &case.x).map_err(|e| e.to_string())?;
    let mut out = b.alloc(case.rows * case.n).map_err(|e| e.to_string())?;
    b.matmul(&xb, case.rows, &weight, &mut out)
        .map_err(|e| e.to_string())?;
    let got = b
        .read(&out, case.rows * case.n)
        .map_err(|e| e.to_string())?;
    let (mut err, mut size) = (0.0f64, 0.0f64);
    for (g, w) in got.iter().zip(&case.want) {
        err += (f64::from(*g) - w).powi(2);
        size += w * w;
    }
    Ok(err / size)
}

fn wgmma_configs() -> impl Iterator<Item = &'static tessera_backend_cuda::ops::w8a16::GemmConfig> {
    GEMM_CONFIGS.iter().filter(|c| c.wgmma)
}

#[test]
fn the_wgmma_gemm_matches_the_f64_product_through_a_deep_pipeline() {
    let case = case(DEEP);
    let tolerance = Tolerances::W8A16.matmul;
    assert_eq!(wgmma_configs().count(), 4);
    for config in wgmma_configs() {
        // Split three ways: shares of 6, 6 and 5 stages (the last padded).
        for split_k in [1, 3] {
            let choice = GemmChoice { config, split_k };
            let got = nmse(EmulatedDevice::new(MatmulPath::Mma), choice, &case);
            println!("{choice}: NMSE {got:?}");
            let got = got.unwrap_or_else(|e| panic!("{choice}: {e}"));
            assert!(got <= tolerance, "{choice}: NMSE {got} > {tolerance}");
        }
    }
}

/// Each new piece of the wgmma GEMM has a mutant that must fail the deep case
/// on every configuration it is compiled into: the A registers' fragment order
/// (registers 1 and 2 swapped); with cp.async, the activations' 128-byte
/// swizzle (chunks stored unswizzled under a swizzling descriptor) and the
/// ring's wgmma wait (two groups left in flight, so a slot is refilled while a
/// wgmma may still read it — the emulator reports the overwritten operand);
/// with TMA, the full barrier's phase parity (the consumers pass the wait for
/// the phase already past, read slots before their copies land and free them,
/// so the producer arrives again on a phase still waiting for its bytes), the
/// expected
/// transaction bytes (the weights' left out: more bytes complete than
/// expected) and the empty barrier (a slot freed while its wgmma may still
/// read it: overwritten operand).
#[test]
fn wgmma_gemm_mutants_fail_the_deep_case() {
    let case = case(DEEP);
    let tolerance = Tolerances::W8A16.matmul;
    for config in wgmma_configs() {
        let choice = GemmChoice { config, split_k: 1 };
        let spaces: &[(&str, Option<&str>)] = if config.tma {
            &[
                ("mutant_wgmma_a_fragment", None),
                (
                    "mutant_mbarrier_parity",
                    Some("more arrivals than the barrier's count"),
                ),
                (
                    "mutant_tma_expect_tx",
                    Some("more transaction bytes completed than expected"),
                ),
                (
                    "mutant_tma_empty_arrive",
                    Some("written before wgmma.wait_group"),
                ),
            ]
        } else {
            &[
                ("mutant_wgmma_a_fragment", None),
                ("mutant_wgmma_b_swizzle", None),
                (
                    "mutant_wgmma_ring_wait",
                    Some("written before wgmma.wait_group"),
                ),
            ]
        };
        for &(space, error) in spaces {
            let mutant = format!("{space}::{}", config.kernel);
            let device =
                EmulatedDevice::new(MatmulPath::Mma).with_kernel_replaced(config.kernel, &mutant);
            let got = nmse(device, choice, &case);
            println!("{mutant}: {got:?}");
            match (error, got) {
                (Some(expected), Err(e)) => assert!(e.contains(expected), "{mutant}: {e}"),
                (Some(_), Ok(v)) => panic!("{mutant} ran to the end: NMSE {v}"),
                // NaN (a slot read before it landed) fails as surely.
                (None, Ok(v)) => assert!(
                    v.is_nan() || v > 1e3 * tolerance,
                    "{mutant}: NMSE {v} passes"
                ),
                (None, Err(e)) => panic!("{mutant}: {e}"),
            }
        }
    }
}

fn persistent() -> &'static tessera_backend_cuda::ops::w8a16::GemmConfig {
    let config = GemmConfig::named("wgmma-tma-persistent-256x128").expect("registered");
    assert!(config.persistent && config.tma && config.wgmma);
    config
}

/// The persistent configuration with fewer blocks than work units: 9 units
/// on 2 blocks (5 and 4 each), and split two ways 18 on 3 — every block's
/// ring, initialised once, runs on through its units, the producer loading
/// the next unit's stages while the consumers store the last one's; and 18
/// units in two raster bands, a full one and a short one, on 4 blocks.
#[test]
fn the_persistent_gemm_carries_its_ring_across_more_units_than_blocks() {
    let units = case(UNITS);
    let bands = case(BANDS);
    let tolerance = Tolerances::W8A16.matmul;
    for (case, blocks, split_k) in [(&units, 2, 1), (&units, 3, 2), (&bands, 4, 1)] {
        let choice = GemmChoice {
            config: persistent(),
            split_k,
        };
        let device = EmulatedDevice::new(MatmulPath::Mma).with_multiprocessors(blocks);
        let got = nmse(device, choice, case);
        println!(
            "{choice}, {} rows, on {blocks} blocks: NMSE {got:?}",
            case.rows
        );
        let got = got.unwrap_or_else(|e| panic!("{choice}: {e}"));
        assert!(got <= tolerance, "{choice}: NMSE {got} > {tolerance}");
    }
}

/// The persistent schedule's own slips fail: the ring counted from zero
/// again at each unit (phase bits reset, the first stages' empty waits
/// skipped: the producer arrives on a full barrier whose phase still waits
/// for the consumers, more arrivals than its count) on the multi-unit case,
/// and a raster that maps two units to one tile and none to another (NMSE)
/// on every case with a short band.
#[test]
fn persistent_gemm_mutants_fail() {
    let tolerance = Tolerances::W8A16.matmul;
    let config = persistent();
    let units = case(UNITS);
    let deep = case(DEEP);
    let bands = case(BANDS);
    let runs: [(&str, &Case, Option<&str>); 4] = [
        (
            "mutant_persistent_ring_phase",
            &units,
            Some("more arrivals than the barrier's count"),
        ),
        ("mutant_persistent_raster", &units, None),
        ("mutant_persistent_raster", &deep, None),
        ("mutant_persistent_raster", &bands, None),
    ];
    for (space, case, error) in runs {
        let mutant = format!("{space}::{}", config.kernel);
        let device = EmulatedDevice::new(MatmulPath::Mma)
            .with_multiprocessors(2)
            .with_kernel_replaced(config.kernel, &mutant);
        let choice = GemmChoice { config, split_k: 1 };
        let got = nmse(device, choice, case);
        println!("{mutant} ({} rows): {got:?}", case.rows);
        match (error, got) {
            (Some(expected), Err(e)) => assert!(e.contains(expected), "{mutant}: {e}"),
            (Some(_), Ok(v)) => panic!("{mutant} ran to the end: NMSE {v}"),
            (None, Ok(v)) => assert!(
                v.is_nan() || v > 1e3 * tolerance,
                "{mutant}: NMSE {v} passes"
            ),
            (None, Err(e)) => panic!("{mutant}: {e}"),
        }
    }
}
