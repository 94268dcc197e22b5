//! Checks beyond the shared parity kit, on the emulated kernels: the two Q8_0
//! matmul paths (mma.sync, dp4a) give bit-identical results, equal to the CPU
//! backend's int8 path, on shapes with several tiles and pipeline stages and
//! ragged edges; the fused kernels (RMSNorm + Q8_0 quantisation, QK-norm + RoPE)
//! equal their unfused sequences, and so do the backend's fused ops (norm + the
//! projections that share it, residual adds in the matmul epilogue, SwiGLU +
//! quantisation), bit for bit — in the W8A16 arithmetic too, whose f16 rows are
//! checked against out-of-range activations.

use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_backend::{unfused, Backend, GateUp, HostTensor, Norm, Rope, Rows};
use tessera_backend_cpu::{CpuBackend, Isa, Precision};
use tessera_backend_cuda::ops::matmul::{quantize, QuantisedRows};
use tessera_backend_cuda::ops::w8a16::{self, HalfRows};
use tessera_backend_cuda::ops::{rms_norm, rope};
use tessera_backend_cuda::{KernelBackend, MatmulPath};
use tessera_cuda_emulated::{emulated_w8a16, EmulatedCudaBackend, EmulatedDevice};
use tessera_gguf::{dequantize_row_q8_0, quantize_row_q8_0, BlockQ8_0, GgmlType};

fn random(rng: &mut StdRng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}

fn tensor(values: &[f32], rows: usize, cols: usize, ty: GgmlType) -> HostTensor {
    let bytes = match ty {
        GgmlType::Q8_0 => {
            let mut blocks = vec![BlockQ8_0::default(); values.len() / 32];
            quantize_row_q8_0(values, &mut blocks);
            BlockQ8_0::as_bytes(&blocks).to_vec()
        }
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        other => panic!("not used here: {other:?}"),
    };
    HostTensor::in_memory("w", ty, rows, cols, bytes).expect("consistent tensor")
}

fn backend(path: MatmulPath) -> EmulatedCudaBackend {
    KernelBackend::with_device(EmulatedDevice::new(path))
}

fn matmul_on<B: Backend>(b: &B, x: &[f32], rows: usize, w: &HostTensor) -> Vec<f32> {
    let weight = b.upload_weight(w).expect("upload");
    let mut xb = b.alloc(x.len()).expect("alloc");
    b.write(&mut xb, x).expect("write");
    let mut out = b.alloc(rows * w.rows).expect("alloc");
    b.matmul(&xb, rows, &weight, &mut out).expect("matmul");
    b.read(&out, rows * w.rows).expect("read")
}

#[test]
fn mma_and_dp4a_paths_equal_the_cpu_int8_path_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(11);
    // 3 row tiles (the last ragged), 4 column tiles (ragged), 13 Q8_0 blocks: four
    // pipeline stages, the last holding one block.
    let (rows, k, n) = (130, 416, 200);
    let x = random(&mut rng, rows * k, 2.0);
    let w = tensor(&random(&mut rng, n * k, 0.5), n, k, GgmlType::Q8_0);
    let cpu = CpuBackend::with_isa(Precision::Fast, Some(1), Isa::Scalar).expect("scalar path");
    let want = matmul_on(&cpu, &x, rows, &w);
    for path in [MatmulPath::Mma, MatmulPath::Dp4a] {
        let got = matmul_on(&backend(path), &x, rows, &w);
        let mismatches = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            mismatches,
            0,
            "{path:?}: {mismatches} of {} outputs differ",
            want.len()
        );
    }
}

#[test]
fn fused_rms_norm_and_quantisation_equal_the_two_kernels() {
    let mut rng = StdRng::seed_from_u64(12);
    let (rows, dim) = (9, 320);
    let b = backend(MatmulPath::Mma);
    let x = random(&mut rng, rows * dim, 3.0);
    let w = b
        .upload_weight(&tensor(&random(&mut rng, dim, 1.5), 1, dim, GgmlType::F32))
        .expect("upload");
    let mut xb = b.alloc(x.len()).expect("alloc");
    b.write(&mut xb, &x).expect("write");

    let mut normed = b.alloc(x.len()).expect("alloc");
    b.rms_norm(&xb, &w, rows, dim, 1e-6, &mut normed)
        .expect("rms_norm");
    let separate = QuantisedRows::alloc(b.device(), rows, dim).expect("alloc");
    quantize(&b, &normed, rows, dim, &separate).expect("quantize");

    let mut fused_out = b.alloc(x.len()).expect("alloc");
    let fused = QuantisedRows::alloc(b.device(), rows, dim).expect("alloc");
    let x_rows = Rows {
        data: &xb,
        rows,
        width: dim,
    };
    let norm = Norm {
        weight: &w,
        eps: 1e-6,
    };
    rms_norm::rms_norm_q8_0(&b, x_rows, norm, Some(&mut fused_out), &fused).expect("fused");

    assert_eq!(
        b.read(&fused_out, x.len()).expect("read"),
        b.read(&normed, x.len()).expect("read")
    );
    let (q_fused, d_fused) = fused.download(b.device(), rows).expect("download");
    let (q_separate, d_separate) = separate.download(b.device(), rows).expect("download");
    assert_eq!(q_fused, q_separate);
    assert_eq!(d_fused, d_separate);
    // And the quantisation is ggml's: the CPU reference quantiser on the same rows.
    let normed = b.read(&normed, x.len()).expect("read");
    let mut blocks = vec![BlockQ8_0::default(); rows * dim / 32];
    quantize_row_q8_0(&normed, &mut blocks);
    let q_ref: Vec<i8> = blocks.iter().flat_map(|blk| blk.qs).collect();
    let d_ref: Vec<f32> = blocks.iter().map(|blk| blk.d.to_f32()).collect();
    assert_eq!(q_fused, q_ref);
    assert_eq!(d_fused, d_ref);
}

#[test]
fn fused_qk_norm_and_rope_equal_the_two_kernels() {
    let mut rng = StdRng::seed_from_u64(13);
    let (tokens, heads, head_dim) = (7, 6, 128);
    let b = backend(MatmulPath::Mma);
    let x = random(&mut rng, tokens * heads * head_dim, 2.0);
    let positions: Vec<u32> = (0..tokens).map(|_| rng.random_range(0..5000)).collect();
    let w = b
        .upload_weight(&tensor(
            &random(&mut rng, head_dim, 1.5),
            1,
            head_dim,
            GgmlType::F32,
        ))
        .expect("upload");
    let mut separate = b.alloc(x.len()).expect("alloc");
    b.write(&mut separate, &x).expect("write");
    b.rms_norm_inplace(&mut separate, &w, tokens * heads, head_dim, 1e-6)
        .expect("norm");
    b.rope(&mut separate, &positions, heads, head_dim, 1e6)
        .expect("rope");
    let mut fused = b.alloc(x.len()).expect("alloc");
    b.write(&mut fused, &x).expect("write");
    let norm = Norm {
        weight: &w,
        eps: 1e-6,
    };
    let rotation = Rope {
        positions: &positions,
        theta: 1e6,
    };
    rope::rms_norm_rope(&b, &mut fused, norm, rotation, heads, head_dim).expect("fused");
    let (a, c) = (
        b.read(&separate, x.len()).unwrap(),
        b.read(&fused, x.len()).unwrap(),
    );
    // Only the sum of squares is added in another order (one warp, not a block).
    let worst = a
        .iter()
        .zip(&c)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 2e-5, "largest difference {worst}");
}

/// The largest block sums a Q8_0 file allows (activations at ±127, weights at
/// −128, which ggml's quantiser never writes but a file may hold): |isum| =
/// 32·127·128 per block, the bound the kernels' conversion-free int → float
/// relies on. Both signs, every path, equal to the CPU's int8 path bit for bit.
#[test]
fn extreme_block_sums_are_exact_on_every_path() {
    let (rows, k, n) = (3, 96, 5);
    // Rows of equal magnitude quantise to ±127 in every element.
    let x: Vec<f32> = (0..rows * k)
        .map(|i| if (i / k) % 2 == 0 { 1.5 } else { -0.75 })
        .collect();
    // Raw blocks: scale 1.0 (f16 0x3c00), quants −128 (even rows) or 127.
    let mut bytes = Vec::new();
    for r in 0..n {
        for _ in 0..k / 32 {
            bytes.extend_from_slice(&0x3c00u16.to_le_bytes());
            let q: i8 = if r % 2 == 0 { -128 } else { 127 };
            bytes.extend(std::iter::repeat_n(q as u8, 32));
        }
    }
    let w = HostTensor::in_memory("w", GgmlType::Q8_0, n, k, bytes).expect("consistent tensor");
    let cpu = CpuBackend::with_isa(Precision::Fast, Some(1), Isa::Scalar).expect("scalar path");
    let want = matmul_on(&cpu, &x, rows, &w);
    // Row 0 against weight row 0: 3 blocks of 127·(−128)·32 at d_x = f16(1.5/127).
    let d_x = f64::from(half::f16::from_f32(1.5 / 127.0).to_f32());
    let expected = 3.0 * -520_192.0 * d_x;
    assert!(
        (f64::from(want[0]) - expected).abs() <= 1e-6 * expected.abs(),
        "CPU int8 path: {} vs {expected}",
        want[0]
    );
    for path in [MatmulPath::Mma, MatmulPath::Dp4a] {
        let got = matmul_on(&backend(path), &x, rows, &w);
        let same = got
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{path:?}: {got:?} vs {want:?}");
    }
}

fn upload_values<B: Backend>(b: &B, values: &[f32]) -> B::Buffer {
    let mut buf = b.alloc(values.len()).expect("alloc");
    b.write(&mut buf, values).expect("write");
    buf
}

#[test]
fn fused_ops_equal_their_unfused_sequences_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(14);
    // Several row and column tiles, ragged edges, several pipeline stages.
    let (rows, dim, ffn) = (70, 320, 288);
    let ns = [130, 64];
    for (label, b) in [
        ("mma", backend(MatmulPath::Mma)),
        ("dp4a", backend(MatmulPath::Dp4a)),
        // One GEMM configuration for grouped and single launches alike: the
        // configurations share their summation order, split-K does not (a
        // grouped launch fills the device sooner and may be split less).
        (
            "w8a16",
            emulated_w8a16().with_gemm_policy(tessera_backend_cuda::GemmPolicy::Fixed(
                tessera_backend_cuda::ops::w8a16::GemmChoice {
                    config: tessera_backend_cuda::ops::w8a16::GemmConfig::named("128x128").unwrap(),
                    split_k: 1,
                },
            )),
        ),
    ] {
        let x = random(&mut rng, rows * dim, 3.0);
        let norm = b
            .upload_weight(&tensor(&random(&mut rng, dim, 1.5), 1, dim, GgmlType::F32))
            .expect("upload");
        let weights: Vec<_> = ns
            .iter()
            .map(|&n| {
                let values = random(&mut rng, n * dim, 0.5);
                b.upload_weight(&tensor(&values, n, dim, GgmlType::Q8_0))
                    .expect("upload")
            })
            .collect();
        let refs: Vec<_> = weights.iter().collect();
        let xb = upload_values(&b, &x);

        // RMSNorm + the projections that share it.
        let run = |fused: bool| -> Vec<Vec<f32>> {
            let mut normed = b.alloc(rows * dim).expect("alloc");
            let mut outs: Vec<_> = ns
                .iter()
                .map(|&n| b.alloc(rows * n).expect("alloc"))
                .collect();
            let mut out_refs: Vec<_> = outs.iter_mut().collect();
            let x = Rows {
                data: &xb,
                rows,
                width: dim,
            };
            let norm = Norm {
                weight: &norm,
                eps: 1e-6,
            };
            if fused {
                b.rms_norm_matmuls(x, norm, &refs, &mut normed, &mut out_refs)
            } else {
                unfused::rms_norm_matmuls(&b, x, norm, &refs, &mut normed, &mut out_refs)
            }
            .expect("norm + matmuls");
            outs.iter()
                .zip(ns)
                .map(|(o, n)| b.read(o, rows * n).expect("read"))
                .collect()
        };
        assert_eq!(run(true), run(false), "{label}: rms_norm_matmuls");

        // Residual add in the epilogue.
        let n = ns[0];
        let residual = random(&mut rng, rows * n, 2.0);
        let run = |fused: bool| -> Vec<f32> {
            let mut scratch = b.alloc(rows * n).expect("alloc");
            let mut out = upload_values(&b, &residual);
            if fused {
                b.matmul_add(&xb, rows, &weights[0], n, &mut scratch, &mut out)
            } else {
                unfused::matmul_add(&b, &xb, rows, &weights[0], n, &mut scratch, &mut out)
            }
            .expect("matmul_add");
            b.read(&out, rows * n).expect("read")
        };
        assert_eq!(run(true), run(false), "{label}: matmul_add");

        // SwiGLU quantised in place of the f32 round trip, then the residual add.
        let gate = upload_values(&b, &random(&mut rng, rows * ffn, 6.0));
        let up = upload_values(&b, &random(&mut rng, rows * ffn, 2.0));
        let down = b
            .upload_weight(&tensor(
                &random(&mut rng, dim * ffn, 0.5),
                dim,
                ffn,
                GgmlType::Q8_0,
            ))
            .expect("upload");
        let residual = random(&mut rng, rows * dim, 2.0);
        let run = |fused: bool| -> Vec<f32> {
            let mut act = b.alloc(rows * ffn).expect("alloc");
            let mut scratch = b.alloc(rows * dim).expect("alloc");
            let mut out = upload_values(&b, &residual);
            let gate_up = GateUp {
                gate: &gate,
                up: &up,
                rows,
                ffn,
            };
            if fused {
                b.swiglu_matmul_add(gate_up, &down, dim, &mut act, &mut scratch, &mut out)
            } else {
                unfused::swiglu_matmul_add(
                    &b,
                    gate_up,
                    &down,
                    dim,
                    &mut act,
                    &mut scratch,
                    &mut out,
                )
            }
            .expect("swiglu_matmul_add");
            b.read(&out, rows * dim).expect("read")
        };
        let (fused, plain) = (run(true), run(false));
        assert_eq!(fused, plain, "{label}: swiglu_matmul_add");
        assert_ne!(fused, residual, "{label}: the product was added");
    }
}

/// Activations far outside f16's range (a "massive activation" of 3e5, one of
/// -7e4) and rows far below it (≈ 1e-3) go through W8A16 without overflow or
/// lost precision: each row is divided by a power of two that puts its largest
/// |x| in [2^14, 2^15), the f16 values are that quotient rounded once, and the
/// matmul multiplies the row back (against the W8A32 oracle, within 1e-3 of
/// Σ|x·w| per output).
#[test]
fn w8a16_rows_are_scaled_by_powers_of_two_into_f16_range() {
    let b = emulated_w8a16();
    let mut rng = StdRng::seed_from_u64(21);
    let (rows, k, n) = (3, 96, 40);
    let mut x = random(&mut rng, rows * k, 1.0);
    x[5] = 3.0e5;
    x[k + 7] = -7.0e4;
    for v in &mut x[2 * k..] {
        *v *= 1e-3;
    }
    let xb = upload_values(&b, &x);
    // Both layouts hold the same values (read back through the host's own
    // index of each).
    for layout in [w8a16::F16Layout::FragmentTiles, w8a16::F16Layout::WgmmaRows] {
        let halves = HalfRows::alloc(b.device(), rows, k).expect("alloc");
        w8a16::to_f16(&b, &xb, rows, k, &halves, layout).expect("to_f16");
        let (bits, scales) = halves.download(b.device(), rows).expect("download");
        check_scaled_rows(&x, rows, k, &bits, &scales);
    }
    let w = tensor(&random(&mut rng, n * k, 0.5), n, k, GgmlType::Q8_0);
    let mut exact = vec![0.0f32; n * k];
    dequantize_row_q8_0(
        BlockQ8_0::slice_from_bytes(w.bytes()).expect("whole blocks"),
        &mut exact,
    );
    let got = matmul_on(&b, &x, rows, &w);
    for r in 0..rows {
        for j in 0..n {
            let (mut sum, mut size) = (0.0f64, 0.0f64);
            for c in 0..k {
                let p = f64::from(x[r * k + c]) * f64::from(exact[j * k + c]);
                sum += p;
                size += p.abs();
            }
            let err = (f64::from(got[r * n + j]) - sum).abs();
            assert!(
                err <= 1e-3 * size,
                "row {r} feature {j}: {} vs {sum} (Σ|x·w| {size})",
                got[r * n + j]
            );
        }
    }
}

/// Each row of `bits` (f16, row-major) is row r of `x` divided by its power
/// of two `scales[r]`, which puts the row's largest |x| in [2^14, 2^15).
fn check_scaled_rows(x: &[f32], rows: usize, k: usize, bits: &[u16], scales: &[f32]) {
    for r in 0..rows {
        let row = &x[r * k..(r + 1) * k];
        let amax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = scales[r];
        assert_eq!(scale, 2.0f32.powi(scale.log2() as i32), "row {r}: {scale}");
        assert!(
            (16_384.0..32_768.0).contains(&(amax / scale)),
            "row {r}: max {amax} / {scale}"
        );
        for (c, &v) in row.iter().enumerate() {
            assert_eq!(
                f16::from_bits(bits[r * k + c]),
                f16::from_f32(v / scale),
                "row {r} column {c}"
            );
        }
    }
}

/// The emulated wgmma (m64n64k16, A in registers, B K-major in shared memory by
/// descriptor, no swizzle and 128-byte swizzle, chained over k and waited per
/// group) computes A · Bᵀ: each instruction rounds once to f32, so 8 of them
/// over k = 128 stay within a few f32 ulps of the f64 product. The probe's two
/// mutants — chunks stored unswizzled under a swizzle descriptor, results never
/// waited for — each fail.
#[test]
fn the_wgmma_probe_computes_the_product_in_both_layouts() {
    use tessera_backend_cuda::probe::{wgmma_probe, WgmmaLayout};
    let device = EmulatedDevice::new(MatmulPath::Mma);
    for layout in [WgmmaLayout::Interleave, WgmmaLayout::Swizzle128] {
        for (k, seed) in [(64, 1), (128, 2)] {
            let result = wgmma_probe(&device, "wgmma_probe_64x64", k, layout, seed).unwrap();
            let error = result.relative_error();
            println!("{layout:?} k {k}: relative error {error:.2e}");
            assert!(error < 1e-6, "{layout:?} k {k}: {error:.2e}");
        }
    }
    let swizzle = EmulatedDevice::new(MatmulPath::Mma).with_kernel_replaced(
        "wgmma_probe_64x64",
        "mutant_wgmma_swizzle::wgmma_probe_64x64",
    );
    let wrong = wgmma_probe(
        &swizzle,
        "wgmma_probe_64x64",
        128,
        WgmmaLayout::Swizzle128,
        2,
    )
    .unwrap();
    assert!(
        wrong.relative_error() > 1e-2,
        "{:.2e}",
        wrong.relative_error()
    );
    let unwaited = EmulatedDevice::new(MatmulPath::Mma)
        .with_kernel_replaced("wgmma_probe_64x64", "mutant_wgmma_wait::wgmma_probe_64x64");
    let early = wgmma_probe(
        &unwaited,
        "wgmma_probe_64x64",
        128,
        WgmmaLayout::Interleave,
        2,
    )
    .unwrap();
    assert!(
        early.relative_error().is_infinite(),
        "results read before the wait must be NaN"
    );
}
