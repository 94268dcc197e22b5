//! Benchmarks on a real GPU (feature `cuda`, opted into with `TESSERA_GPU_BENCH=1`;
//! otherwise each prints why it skipped): the Q8_0 matmul at the
//! Qwen3-4B projection shapes for M = 512, 4096 and 16384 tokens (TFLOP/s and the
//! share of the card's dense int8 peak), and attention over 100 documents of 256
//! tokens after a 32-token shared prefix. Run by scripts/gpu-check.sh.
#![cfg(feature = "cuda")]

use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_backend::{AttentionLayout, AttentionShape, Backend, HostTensor, KvRef};
use tessera_backend_cuda::{cuda_available, CudaBackend};
use tessera_gguf::{quantize_row_q8_0, BlockQ8_0, GgmlType, GgufFile, GgufWriter};

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
    let mut writer = GgufWriter::new();
    writer
        .add_tensor(
            "w",
            vec![k as u64, n as u64],
            GgmlType::Q8_0,
            BlockQ8_0::as_bytes(&blocks).to_vec(),
        )
        .expect("tensor");
    let mut file = Vec::new();
    writer.write_to(&mut file).expect("in memory");
    let file = Arc::new(GgufFile::from_bytes(file).expect("parses"));
    HostTensor::from_gguf(&file, "w")
        .expect("2-D")
        .expect("present")
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

#[test]
fn matmul_q8_0_throughput() {
    if !wanted() {
        return;
    }
    if let Err(why) = cuda_available() {
        println!("skipped: {why}");
        return;
    }
    let backend = CudaBackend::new(0).expect("GPU");
    let name = backend.name();
    let peak = int8_peak_tops(&name);
    println!("device: {name}");
    let mut rng = StdRng::seed_from_u64(1);
    for (k, n) in [(2560, 4096), (2560, 1024), (2560, 9728), (9728, 2560)] {
        let weight = backend
            .upload_weight(&q8_weight(n, k, &mut rng))
            .expect("upload");
        for m in [512usize, 4096, 16384] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut xb = backend.alloc(m * k).expect("alloc");
            backend.write(&mut xb, &x).expect("write");
            let mut out = backend.alloc(m * n).expect("alloc");
            let seconds = time(&backend, || {
                backend.matmul(&xb, m, &weight, &mut out).expect("matmul")
            });
            let tops = 2.0 * (m * n * k) as f64 / seconds / 1e12;
            let share = peak.map_or("-".to_string(), |p| format!("{:.1}%", 100.0 * tops / p));
            println!("matmul_q8_0 M={m:>5} K={k:>5} N={n:>5}: {:>8.3} ms {tops:>7.1} TOPS ({share} of dense int8 peak)", seconds * 1e3);
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
    let backend = CudaBackend::new(0).expect("GPU");
    let shape = AttentionShape {
        n_heads: 32,
        n_kv_heads: 8,
        head_dim: 128,
    };
    let (docs, doc_len, prefix_len) = (100, 256, 32);
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
    let seconds = time(&backend, || {
        backend
            .attention(&q, &k, &v, shape, &layout, &prefixes, &mut out)
            .expect("attention")
    });
    // QKᵀ and PV over the visible keys of every row.
    let visible: usize = (0..doc_len).map(|r| prefix_len + r + 1).sum::<usize>() * docs;
    let flops = 4.0 * visible as f64 * shape.n_heads as f64 * shape.head_dim as f64;
    println!(
        "attention {docs} docs × {doc_len} tokens + {prefix_len}-token prefix, 32/8 heads × 128: {:.3} ms, {:.1} TFLOP/s",
        seconds * 1e3,
        flops / seconds / 1e12
    );
}
