//! The int8 fast path: every instruction-set variant this CPU runs against the
//! scalar variant bit for bit, exact integer sums, and the parity kit's f64
//! oracles with the W8A8 tolerances.

use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_backend::parity::Tolerances;
use tessera_backend::{Backend, HostTensor};
use tessera_backend_cpu::{CpuBackend, CpuWeight, Isa, Precision};
use tessera_gguf::{BlockQ8_0, GgmlType};

/// An `n × k` Q8_0 tensor from its blocks (row-major).
fn q8_tensor(n: usize, k: usize, blocks: &[BlockQ8_0]) -> HostTensor {
    assert_eq!(blocks.len(), n * k / 32);
    HostTensor::in_memory(
        "w",
        GgmlType::Q8_0,
        n,
        k,
        BlockQ8_0::as_bytes(blocks).to_vec(),
    )
    .expect("consistent tensor")
}

/// Random blocks: quantised values over the whole i8 range (−128 included, which
/// a file may hold though ggml's quantiser never writes it), random scales.
fn random_blocks(rng: &mut StdRng, count: usize) -> Vec<BlockQ8_0> {
    (0..count)
        .map(|_| {
            let mut block = BlockQ8_0 {
                d: f16::from_f32(rng.random_range(0.001..0.05)),
                qs: [0; 32],
            };
            for q in &mut block.qs {
                *q = rng.random_range(i8::MIN..=i8::MAX);
            }
            block
        })
        .collect()
}

fn available_isas() -> Vec<Isa> {
    let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.is_available()).collect();
    for isa in Isa::ALL {
        if !isa.is_available() {
            println!("skipped: this CPU does not run the {} kernels", isa.name());
        }
    }
    isas
}

fn backend(isa: Isa, threads: usize) -> CpuBackend {
    CpuBackend::with_isa(Precision::Fast, Some(threads), isa).expect("available")
}

fn matmul(b: &CpuBackend, x: &[f32], rows: usize, w: &CpuWeight) -> Vec<f32> {
    // Activations and output inside larger buffers, as the engine's reused
    // MLP chunk buffers are.
    let mut xb = b.alloc(x.len() + 40).unwrap();
    b.write(&mut xb, x).unwrap();
    let len = rows * w.rows();
    let mut out = b.alloc(len + 40).unwrap();
    b.write(&mut out, &vec![f32::NAN; len + 40]).unwrap();
    b.matmul(&xb, rows, w, &mut out).unwrap();
    let got = b.read(&out, len + 40).unwrap();
    assert!(
        got[len..].iter().all(|v| v.is_nan()),
        "wrote past the output"
    );
    got[..len].to_vec()
}

/// Shapes with rows not a multiple of the 8-row tile and columns not a multiple
/// of the 16-column group.
const SHAPES: [(usize, usize, usize); 7] = [
    (1, 32, 1),
    (3, 32, 31),
    (7, 64, 17),
    (9, 96, 33),
    (17, 256, 48),
    (33, 160, 127),
    (70, 1024, 80),
];

#[test]
fn every_isa_matches_the_scalar_kernel_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(11);
    let isas = available_isas();
    for (rows, k, n) in SHAPES {
        let w = q8_tensor(n, k, &random_blocks(&mut rng, n * k / 32));
        let x: Vec<f32> = (0..rows * k).map(|_| rng.random_range(-3.0..3.0)).collect();
        let scalar = backend(Isa::Scalar, 2);
        let weight = scalar.upload_weight(&w).unwrap();
        let want = matmul(&scalar, &x, rows, &weight);
        for &isa in &isas {
            let got = matmul(&backend(isa, 2), &x, rows, &weight);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{}: {rows}x{k} by {n}, element {i}: {g} vs scalar {w}",
                    isa.name()
                );
            }
        }
    }
}

#[test]
fn integer_sums_are_exact_on_every_isa() {
    // Unit scales everywhere: activations are integers whose every block holds
    // ±127 (so d = 127/127 = 1 and q = x), weights have d = 1. The output is
    // then the exact integer dot product (|sum| < 2^24 for k <= 1024).
    let mut rng = StdRng::seed_from_u64(12);
    for (rows, k, n) in SHAPES {
        let mut blocks = random_blocks(&mut rng, n * k / 32);
        for b in &mut blocks {
            b.d = f16::ONE;
        }
        let w = q8_tensor(n, k, &blocks);
        let mut x: Vec<f32> = (0..rows * k)
            .map(|_| f32::from(rng.random_range(-127i8..=127)))
            .collect();
        for (i, block) in x.chunks_exact_mut(32).enumerate() {
            block[i % 32] = if i % 2 == 0 { 127.0 } else { -127.0 };
        }
        let want: Vec<f32> = x
            .chunks_exact(k)
            .flat_map(|xr| {
                blocks.chunks_exact(k / 32).map(move |wr| {
                    let sum: i64 = wr
                        .iter()
                        .flat_map(|b| b.qs.iter())
                        .zip(xr)
                        .map(|(&q, &a)| i64::from(q) * a as i64)
                        .sum();
                    sum as f32
                })
            })
            .collect();
        for isa in available_isas() {
            let b = backend(isa, 2);
            let weight = b.upload_weight(&w).unwrap();
            assert_eq!(
                matmul(&b, &x, rows, &weight),
                want,
                "{}: {rows}x{k} by {n}",
                isa.name()
            );
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut rng = StdRng::seed_from_u64(13);
    let (rows, k, n) = (45, 512, 200);
    let w = q8_tensor(n, k, &random_blocks(&mut rng, n * k / 32));
    let x: Vec<f32> = (0..rows * k).map(|_| rng.random_range(-1.0..1.0)).collect();
    let one = CpuBackend::with_options(Precision::Fast, Some(1)).unwrap();
    let weight = one.upload_weight(&w).unwrap();
    let want = matmul(&one, &x, rows, &weight);
    for threads in [2, 3, 7] {
        let b = CpuBackend::with_options(Precision::Fast, Some(threads)).unwrap();
        assert_eq!(matmul(&b, &x, rows, &weight), want, "{threads} threads");
    }
    // A row's result does not depend on the other rows of the batch.
    let alone = matmul(&one, &x[5 * k..6 * k], 1, &weight);
    assert_eq!(alone, want[5 * n..6 * n]);
}

#[test]
fn fast_path_is_within_w8a8_of_the_reference() {
    // Against the f32-activation reference directly: NMSE of the activation
    // rounding alone (weights identical).
    let mut rng = StdRng::seed_from_u64(14);
    let (rows, k, n) = (24, 1024, 64);
    let w = q8_tensor(n, k, &random_blocks(&mut rng, n * k / 32));
    let x: Vec<f32> = (0..rows * k).map(|_| rng.random_range(-1.0..1.0)).collect();
    let reference = CpuBackend::new();
    let weight = reference.upload_weight(&w).unwrap();
    let want = matmul(&reference, &x, rows, &weight);
    let got = matmul(&CpuBackend::fast(), &x, rows, &weight);
    let want64: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
    let nmse = tessera_backend::parity::nmse(&got, &want64);
    println!("fast vs reference matmul: nmse {nmse:.2e}");
    assert!(
        nmse > 0.0 && nmse < Tolerances::W8A8.matmul,
        "nmse {nmse:.2e}"
    );
}

#[test]
fn backends_say_what_they_run() {
    assert_eq!(CpuBackend::new().precision(), Precision::Reference);
    assert_eq!(CpuBackend::new().name(), "cpu-reference");
    let fast = CpuBackend::fast();
    assert_eq!(fast.precision(), Precision::Fast);
    assert_eq!(fast.isa(), Isa::best());
    assert!(fast.name().starts_with("cpu-fast"));
    assert_eq!(
        CpuBackend::with_options(Precision::Fast, Some(3))
            .unwrap()
            .threads(),
        3
    );
    assert!(CpuBackend::with_options(Precision::Fast, Some(0)).is_err());
    assert_eq!("fast".parse::<Precision>(), Ok(Precision::Fast));
    assert_eq!("reference".parse::<Precision>(), Ok(Precision::Reference));
    assert!("int4".parse::<Precision>().is_err());
}
