//! Benchmarks on a real GPU (feature `cuda`, opted into with `TESSERA_GPU_BENCH=1`;
//! otherwise each prints why it skipped): the Q8_0 matmul in both arithmetics
//! (W8A8, W8A16) beside cuBLAS bf16 and int8 (tests/anchors) at the five
//! Qwen3-4B projection shapes for M = 512, 4096 and 16384 tokens (TFLOP/s, the
//! ratio to cuBLAS bf16), and attention over 100 documents of 256
//! tokens after a 32-token shared prefix; the non-attention work of one 4B layer
//! through the fused ops against the unfused op sequences (the ratio measured in
//! the same run). Run by scripts/gpu-check.sh.
#![cfg(feature = "cuda")]

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_backend::{
    unfused, AttentionLayout, AttentionShape, Backend, GateUp, HostTensor, KvRef, Norm, Qkv, Rope,
    Rows,
};
use tessera_backend_cuda::ops::attention::AttentionKernel;
use tessera_backend_cuda::{cuda_available, Arithmetic, CudaBackend};

mod anchors;
use tessera_gguf::{quantize_row_q8_0, BlockQ8_0, GgmlType};

/// Dense int8 peak in TOPS by device name (without sparsity); `None` when unknown.
fn int8_peak_tops(name: &str) -> Option<f64> {
    if name.contains("H100") || name.contains("H200") {
        Some(1979.0)
    } else if name.contains("A100") {
        Some(624.0)
    } else {
        None
    }
}

fn q8_weight(n: usize, k: usize, rng: &mut StdRng) -> HostTensor {
    let values: Vec<f32> = (0..n * k).map(|_| rng.random_range(-0.5..0.5)).collect();
    let mut blocks = vec![BlockQ8_0::default(); values.len() / 32];
    quantize_row_q8_0(&values, &mut blocks);
    let bytes = BlockQ8_0::as_bytes(&blocks).to_vec();
    HostTensor::in_memory("w", GgmlType::Q8_0, n, k, bytes).expect("consistent tensor")
}

fn time<F: FnMut()>(backend: &CudaBackend, mut f: F) -> f64 {
    f();
    backend.synchronize().expect("sync");
    let reps = 10;
    let start = Instant::now();
    for _ in 0..reps {
        f();
    }
    backend.synchronize().expect("sync");
    start.elapsed().as_secs_f64() / reps as f64
}

/// Whether to run: a benchmark, not a check, so only when asked for.
fn wanted() -> bool {
    if std::env::var_os("TESSERA_GPU_BENCH").is_none() {
        println!("skipped: a GPU benchmark; set TESSERA_GPU_BENCH=1 (scripts/gpu-check.sh does)");
        return false;
    }
    true
}

/// Appends one JSON record to the file `TESSERA_BENCH_JSON` names (JSON Lines,
/// what `tessera bench --format json` writes for end-to-end runs), when set.
fn record(fields: serde_json::Value) {
    let Some(path) = std::env::var_os("TESSERA_BENCH_JSON") else {
        return;
    };
    let mut fields = fields;
    fields["commit"] =
        serde_json::Value::from(option_env!("TESSERA_GIT_COMMIT").unwrap_or("unknown"));
    let line = format!("{fields}\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    if let Err(e) = written {
        println!(
            "cannot append to {}: {e}",
            std::path::Path::new(&path).display()
        );
    }
}

/// The five Qwen3-4B projections as (K, N): q; k and v; gate and up; down; o.
const SHAPES_4B: [(usize, usize); 5] = [
    (2560, 4096),
    (2560, 1024),
    (2560, 9728),
    (9728, 2560),
    (4096, 2560),
];

fn tops(m: usize, n: usize, k: usize, seconds: f64) -> f64 {
    2.0 * (m * n * k) as f64 / seconds / 1e12
}

/// Both arithmetics of our Q8_0 matmul (the activation conversion included, as
/// the engine's unfused matmul runs it) against cuBLAS bf16 and int8 on the same
/// shapes, same card, same run. Ratios are cuBLAS bf16's time over ours (> 1:
/// ours is faster).
#[test]
fn matmul_q8_0_throughput() {
    if !wanted() {
        return;
    }
    if let Err(why) = cuda_available() {
        println!("skipped: {why}");
        return;
    }
    let w8a8 = CudaBackend::new(0).expect("GPU");
    let w8a16 = CudaBackend::new(0)
        .expect("GPU")
        .with_arithmetic(Arithmetic::W8A16);
    let name = w8a8.name();
    let peak = int8_peak_tops(&name);
    println!("device: {name}");
    let anchors = match cudarc::driver::CudaContext::new(0)
        .map_err(|e| e.to_string())
        .and_then(anchors::Anchors::new)
    {
        Ok(anchors) => anchors,
        Err(why) => {
            println!("cuBLAS anchors skipped: {why}");
            None
        }
    };
    let w8a16 = match w8a16 {
        Ok(b) => Some(b),
        Err(why) => {
            println!("w8a16 skipped: {why}");
            None
        }
    };
    let mut rng = StdRng::seed_from_u64(1);
    println!(
        "{:<24} {:>17} {:>17} {:>17} {:>17} {:>8} {:>8}",
        "matmul (M K N)",
        "w8a8 ms TOPS",
        "w8a16 ms TFLOP/s",
        "cuBLAS bf16",
        "cuBLAS int8",
        "w8a8/bf",
        "w8a16/bf"
    );
    for (k, n) in SHAPES_4B {
        let host = q8_weight(n, k, &mut rng);
        let weight8 = w8a8.upload_weight(&host).expect("upload");
        let weight16 = w8a16
            .as_ref()
            .map(|b| b.upload_weight(&host).expect("upload"));
        for m in [512usize, 4096, 16384] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut xb = w8a8.alloc(m * k).expect("alloc");
            w8a8.write(&mut xb, &x).expect("write");
            let mut out = w8a8.alloc(m * n).expect("alloc");
            let s8 = time(&w8a8, || {
                w8a8.matmul(&xb, m, &weight8, &mut out).expect("matmul")
            });
            let s16 = match (&w8a16, &weight16) {
                (Some(b), Some(w)) => {
                    let mut xb = b.alloc(m * k).expect("alloc");
                    b.write(&mut xb, &x).expect("write");
                    let mut out = b.alloc(m * n).expect("alloc");
                    Some(time(b, || b.matmul(&xb, m, w, &mut out).expect("matmul")))
                }
                _ => None,
            };
            let anchor = anchors.as_ref().map(|a| a.time(m, n, k));
            let bf16_s = anchor.as_ref().and_then(|a| a.bf16_s);
            let int8_s = anchor.as_ref().and_then(|a| a.int8_s);
            let cell = |s: Option<f64>| {
                s.map_or("-".to_string(), |s| {
                    format!("{:>7.3} {:>7.1}", s * 1e3, tops(m, n, k, s))
                })
            };
            let ratio = |ours: Option<f64>| match (ours, bf16_s) {
                (Some(ours), Some(bf)) => format!("{:.2}x", bf / ours),
                _ => "-".to_string(),
            };
            let share = peak.map_or("-".to_string(), |p| {
                format!("{:.1}%", 100.0 * tops(m, n, k, s8) / p)
            });
            println!(
                "matmul {m:>5} {k:>5} {n:>5}   {:>17} {:>17} {:>17} {:>17} {:>8} {:>8}  (w8a8 {share} of dense int8 peak)",
                cell(Some(s8)),
                cell(s16),
                cell(bf16_s),
                cell(int8_s),
                ratio(Some(s8)),
                ratio(s16),
            );
            record(serde_json::json!({
                "bench": "matmul_q8_0",
                "device": name,
                "m": m, "k": k, "n": n,
                "w8a8_ms": s8 * 1e3,
                "w8a16_ms": s16.map(|s| s * 1e3),
                "cublas_bf16_ms": bf16_s.map(|s| s * 1e3),
                "cublas_int8_ms": int8_s.map(|s| s * 1e3),
                "w8a8_tops": tops(m, n, k, s8),
                "w8a16_tflops": s16.map(|s| tops(m, n, k, s)),
                "int8_peak_share": peak.map(|p| tops(m, n, k, s8) / p),
            }));
            if let Some(note) = anchor.and_then(|a| a.note) {
                println!("  cuBLAS: {note}");
            }
        }
    }
}

#[test]
fn attention_throughput() {
    if !wanted() {
        return;
    }
    if let Err(why) = cuda_available() {
        println!("skipped: {why}");
        return;
    }
    // W8A8 runs the f32 kernel; W8A16 the f16 tensor-core ones: v3 (f16 K/V,
    // the default), v2 (K/V converted per tile) and, on compute capability
    // 9.0, v4 (wgmma) in the same run.
    for (arithmetic, kernel) in [
        (Arithmetic::W8A8, AttentionKernel::F16Kv),
        (Arithmetic::W8A16, AttentionKernel::F16Kv),
        (Arithmetic::W8A16, AttentionKernel::Mma),
        (Arithmetic::W8A16, AttentionKernel::Wgmma),
    ] {
        match CudaBackend::new(0)
            .expect("GPU")
            .with_arithmetic(arithmetic)
        {
            Ok(backend) => {
                let backend = backend.with_attention(kernel);
                if backend.attention_kernel(128) != kernel {
                    println!(
                        "attention {arithmetic} {} skipped: not on this device",
                        kernel.name()
                    );
                    continue;
                }
                attention_on(&backend, arithmetic)
            }
            Err(why) => println!("attention {arithmetic} skipped: {why}"),
        }
    }
}

/// The served workload (100 documents of 256 tokens after a 32-token query
/// prefix) and one long pair (8,160 document tokens after the same prefix).
const ATTENTION_CASES: [(usize, usize, usize); 2] = [(100, 256, 32), (1, 8160, 32)];

fn attention_on(backend: &CudaBackend, arithmetic: Arithmetic) {
    for (docs, doc_len, prefix_len) in ATTENTION_CASES {
        attention_case(backend, arithmetic, docs, doc_len, prefix_len);
    }
}

fn attention_case(
    backend: &CudaBackend,
    arithmetic: Arithmetic,
    docs: usize,
    doc_len: usize,
    prefix_len: usize,
) {
    let shape = AttentionShape {
        n_heads: 32,
        n_kv_heads: 8,
        head_dim: 128,
    };
    let tokens = docs * doc_len;
    let mut rng = StdRng::seed_from_u64(2);
    let mut buffer = |len: usize| {
        let data: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut b = backend.alloc(len).expect("alloc");
        backend.write(&mut b, &data).expect("write");
        b
    };
    let q = buffer(tokens * shape.q_width());
    let k = buffer(tokens * shape.kv_width());
    let v = buffer(tokens * shape.kv_width());
    let pk = buffer(prefix_len * shape.kv_width());
    let pv = buffer(prefix_len * shape.kv_width());
    let mut out = backend.alloc(tokens * shape.q_width()).expect("alloc");
    let layout = AttentionLayout::packed_with_prefixes(&vec![doc_len; docs], &vec![Some(0); docs]);
    let prefixes = [KvRef {
        k: &pk,
        v: &pv,
        len: prefix_len,
    }];
    let seconds = time(backend, || {
        let qkv = Qkv {
            q: &q,
            k: &k,
            v: &v,
        };
        backend
            .attention(qkv, shape, &layout, &prefixes, &mut out)
            .expect("attention")
    });
    // QKᵀ and PV over the visible keys of every row.
    let visible: usize = (0..doc_len).map(|r| prefix_len + r + 1).sum::<usize>() * docs;
    let flops = 4.0 * visible as f64 * shape.n_heads as f64 * shape.head_dim as f64;
    let kernel = match arithmetic {
        Arithmetic::W8A8 => "f32",
        Arithmetic::W8A16 => backend.attention_kernel(shape.head_dim).name(),
    };
    println!(
        "attention {arithmetic} {kernel} {docs} docs × {doc_len} tokens + {prefix_len}-token prefix, 32/8 heads × 128: {:.3} ms, {:.1} TFLOP/s",
        seconds * 1e3,
        flops / seconds / 1e12
    );
    record(serde_json::json!({
        "bench": "attention",
        "device": backend.name(),
        "arithmetic": arithmetic.name(),
        "kernel": kernel,
        "docs": docs, "doc_tokens": doc_len, "prefix_tokens": prefix_len,
        "heads": shape.n_heads, "kv_heads": shape.n_kv_heads, "head_dim": shape.head_dim,
        "ms": seconds * 1e3,
        "tflops": flops / seconds / 1e12,
    }));
}

fn f32_weight(values: &[f32]) -> HostTensor {
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    HostTensor::in_memory("norm", GgmlType::F32, 1, values.len(), bytes).expect("consistent tensor")
}

/// One Qwen3-4B layer without its attention op, as the engine runs it: norm +
/// q/k/v projections, QK-norm + RoPE, o projection + residual, norm + gate/up,
/// SwiGLU + down projection + residual. Fused ops against `unfused::*` (what
/// every other backend runs), same buffers, same card, same run: timings only;
/// that the fused ops compute what the unfused ones do is the parity kit's
/// job (`every_op_on_the_gpu*`, and the emulated kernels in CI).
#[test]
fn time_one_layer_fused_and_unfused() {
    if !wanted() {
        return;
    }
    if let Err(why) = cuda_available() {
        println!("skipped: {why}");
        return;
    }
    for arithmetic in [Arithmetic::W8A8, Arithmetic::W8A16] {
        match CudaBackend::new(0)
            .expect("GPU")
            .with_arithmetic(arithmetic)
        {
            Ok(b) => time_layer_ops(&b),
            Err(why) => println!("{arithmetic} skipped: {why}"),
        }
    }
}

fn time_layer_ops(b: &CudaBackend) {
    println!("device: {}", b.name());
    let (hidden, ffn) = (2560, 9728);
    let shape = AttentionShape {
        n_heads: 32,
        n_kv_heads: 8,
        head_dim: 128,
    };
    let (qw, kvw) = (shape.q_width(), shape.kv_width());
    let mut rng = StdRng::seed_from_u64(3);
    let mut up_w = |n, k| b.upload_weight(&q8_weight(n, k, &mut rng)).expect("upload");
    let (wq, wk, wv, wo) = (
        up_w(qw, hidden),
        up_w(kvw, hidden),
        up_w(kvw, hidden),
        up_w(hidden, qw),
    );
    let (wg, wu, wd) = (up_w(ffn, hidden), up_w(ffn, hidden), up_w(hidden, ffn));
    let norm = |len: usize| {
        b.upload_weight(&f32_weight(&vec![1.0; len]))
            .expect("upload")
    };
    let (attn_norm, ffn_norm, q_norm, k_norm) = (norm(hidden), norm(hidden), norm(128), norm(128));
    for m in [4096usize, 16384] {
        let mut rng = StdRng::seed_from_u64(m as u64);
        let mut buffer = |len: usize| {
            let data: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut buf = b.alloc(len).expect("alloc");
            b.write(&mut buf, &data).expect("write");
            buf
        };
        let mut x = buffer(m * hidden);
        let attn = buffer(m * qw);
        let (mut normed, mut proj) = (buffer(m * hidden), buffer(m * hidden));
        let (mut q, mut k, mut v) = (buffer(m * qw), buffer(m * kvw), buffer(m * kvw));
        let (mut gate, mut up, mut act) = (buffer(m * ffn), buffer(m * ffn), buffer(m * ffn));
        let positions: Vec<u32> = (0..m as u32).map(|t| t % 4096).collect();
        let mut layer = |fused: bool| {
            let norm = |weight| Norm { weight, eps: 1e-6 };
            let rope = Rope {
                positions: &positions,
                theta: 1e6,
            };
            let result = if fused {
                let x_rows = Rows {
                    data: &x,
                    rows: m,
                    width: hidden,
                };
                b.rms_norm_matmuls(
                    x_rows,
                    norm(&attn_norm),
                    &[&wq, &wk, &wv],
                    &mut normed,
                    &mut [&mut q, &mut k, &mut v],
                )
                .and_then(|_| {
                    b.qk_norm_rope(&mut q, &mut k, norm(&q_norm), norm(&k_norm), rope, shape)
                })
                .and_then(|_| b.matmul_add(&attn, m, &wo, hidden, &mut proj, &mut x))
                .and_then(|_| {
                    let x_rows = Rows {
                        data: &x,
                        rows: m,
                        width: hidden,
                    };
                    b.rms_norm_matmuls(
                        x_rows,
                        norm(&ffn_norm),
                        &[&wg, &wu],
                        &mut normed,
                        &mut [&mut gate, &mut up],
                    )
                })
                .and_then(|_| {
                    let gate_up = GateUp {
                        gate: &gate,
                        up: &up,
                        rows: m,
                        ffn,
                    };
                    b.swiglu_matmul_add(gate_up, &wd, hidden, &mut act, &mut proj, &mut x)
                })
            } else {
                let x_rows = Rows {
                    data: &x,
                    rows: m,
                    width: hidden,
                };
                unfused::rms_norm_matmuls(
                    b,
                    x_rows,
                    norm(&attn_norm),
                    &[&wq, &wk, &wv],
                    &mut normed,
                    &mut [&mut q, &mut k, &mut v],
                )
                .and_then(|_| {
                    unfused::qk_norm_rope(
                        b,
                        &mut q,
                        &mut k,
                        norm(&q_norm),
                        norm(&k_norm),
                        rope,
                        shape,
                    )
                })
                .and_then(|_| unfused::matmul_add(b, &attn, m, &wo, hidden, &mut proj, &mut x))
                .and_then(|_| {
                    let x_rows = Rows {
                        data: &x,
                        rows: m,
                        width: hidden,
                    };
                    unfused::rms_norm_matmuls(
                        b,
                        x_rows,
                        norm(&ffn_norm),
                        &[&wg, &wu],
                        &mut normed,
                        &mut [&mut gate, &mut up],
                    )
                })
                .and_then(|_| {
                    let gate_up = GateUp {
                        gate: &gate,
                        up: &up,
                        rows: m,
                        ffn,
                    };
                    unfused::swiglu_matmul_add(b, gate_up, &wd, hidden, &mut act, &mut proj, &mut x)
                })
            };
            result.expect("layer ops");
        };
        let unfused_s = time(b, || layer(false));
        let fused_s = time(b, || layer(true));
        println!(
            "layer_ops M={m:>5}: unfused {:>8.3} ms, fused {:>8.3} ms, unfused/fused {:.2}x",
            unfused_s * 1e3,
            fused_s * 1e3,
            unfused_s / fused_s
        );
        record(serde_json::json!({
            "bench": "layer_ops",
            "device": b.name(),
            "m": m,
            "unfused_ms": unfused_s * 1e3,
            "fused_ms": fused_s * 1e3,
        }));
    }
}
