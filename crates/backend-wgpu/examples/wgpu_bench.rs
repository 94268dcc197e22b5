//! Per-op and end-to-end throughput of the wgpu backend beside the CPU backend
//! (reference and fast) in the same run. Each op's rate comes from its own
//! byte and flop counts; every timed loop ends with `synchronize`. Shapes are
//! Qwen3-Reranker-4B's (hidden 2560, FFN 9728, 32/8 heads of 128) with a small
//! token count, so the run stays short on lavapipe.
//!
//! `cargo run --release -p tessera-backend-wgpu --example wgpu_bench`

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_backend::{AttentionLayout, AttentionShape, Backend, HostTensor};
use tessera_backend_cpu::{CpuBackend, Precision};
use tessera_backend_wgpu::WgpuBackend;
use tessera_engine::{RerankOptions, Reranker};
use tessera_gguf::{quantize_row_q8_0, BlockQ8_0, GgmlType, GgufFile};

const HIDDEN: usize = 2560;
const FFN: usize = 9728;
const HEADS: usize = 32;
const KV_HEADS: usize = 8;
const HEAD_DIM: usize = 128;
const TOKENS: usize = 64;
const VOCAB: usize = 4096;

/// One op's measurement: seconds per call and what a call moves and computes.
struct Rate {
    op: String,
    seconds: f64,
    bytes: f64,
    flops: f64,
}

fn random(rng: &mut StdRng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}

/// A one-tensor GGUF in memory (Q8_0 or F32).
fn tensor(rng: &mut StdRng, rows: usize, cols: usize, ty: GgmlType) -> Result<HostTensor> {
    let values = random(rng, rows * cols, 0.5);
    let bytes = match ty {
        GgmlType::Q8_0 => {
            let mut blocks = vec![BlockQ8_0::default(); values.len() / 32];
            quantize_row_q8_0(&values, &mut blocks);
            BlockQ8_0::as_bytes(&blocks).to_vec()
        }
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    Ok(HostTensor::in_memory("w", ty, rows, cols, bytes)?)
}

/// Seconds per call of `f`: one warm-up call, one synchronised probe call to
/// size the run (about 0.3 s, at least 2 calls), then the calls back to back
/// with one `synchronize` at the end.
fn time<B: Backend>(b: &B, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    b.synchronize()?;
    let probe = Instant::now();
    f()?;
    b.synchronize()?;
    let once = probe.elapsed().as_secs_f64();
    let calls = ((0.3 / once) as u32).clamp(2, 200);
    let start = Instant::now();
    for _ in 0..calls {
        f()?;
    }
    b.synchronize()?;
    let seconds = start.elapsed().as_secs_f64() / f64::from(calls);
    eprintln!("  {calls} calls, {:.3} ms each", seconds * 1e3);
    Ok(seconds)
}

fn buffer<B: Backend>(b: &B, rng: &mut StdRng, len: usize) -> Result<B::Buffer> {
    let mut buf = b.alloc(len)?;
    b.write(&mut buf, &random(rng, len, 1.0))?;
    Ok(buf)
}

fn bench_ops<B: Backend>(b: &B) -> Result<Vec<Rate>> {
    eprintln!("ops on {}", b.name());
    let mut rng = StdRng::seed_from_u64(7);
    let mut rates = Vec::new();
    let f = 4.0; // bytes per f32
    let t = TOKENS;
    let x = buffer(b, &mut rng, t * FFN)?;
    let y = buffer(b, &mut rng, t * FFN)?;
    let mut out = b.alloc(t * FFN)?;

    for (rows, n, k) in [(t, HIDDEN, HIDDEN), (t, FFN, HIDDEN), (1, FFN, HIDDEN)] {
        let w = b.upload_weight(&tensor(&mut rng, n, k, GgmlType::Q8_0)?)?;
        let seconds = time(b, || Ok(b.matmul(&x, rows, &w, &mut out)?))?;
        rates.push(Rate {
            op: format!("matmul Q8_0 {rows}x{k} by {n}"),
            seconds,
            bytes: (n * k) as f64 * 34.0 / 32.0 + f * (rows * (k + n)) as f64,
            flops: 2.0 * (rows * n * k) as f64,
        });
    }
    let norm = b.upload_weight(&tensor(&mut rng, 1, HIDDEN, GgmlType::F32)?)?;
    let seconds = time(b, || Ok(b.rms_norm(&x, &norm, t, HIDDEN, 1e-6, &mut out)?))?;
    rates.push(Rate {
        op: format!("rms_norm {t}x{HIDDEN}"),
        seconds,
        bytes: f * (2 * t * HIDDEN + HIDDEN) as f64,
        flops: 4.0 * (t * HIDDEN) as f64,
    });
    let positions: Vec<u32> = (0..t as u32).collect();
    let mut q = buffer(b, &mut rng, t * HEADS * HEAD_DIM)?;
    let seconds = time(b, || Ok(b.rope(&mut q, &positions, HEADS, HEAD_DIM, 1e6)?))?;
    rates.push(Rate {
        op: format!("rope {t}x{HEADS}x{HEAD_DIM}"),
        seconds,
        bytes: f * (2 * t * HEADS * HEAD_DIM) as f64,
        flops: 3.0 * (t * HEADS * HEAD_DIM) as f64,
    });
    let shape = AttentionShape {
        n_heads: HEADS,
        n_kv_heads: KV_HEADS,
        head_dim: HEAD_DIM,
    };
    let kv = buffer(b, &mut rng, t * KV_HEADS * HEAD_DIM)?;
    let layout = AttentionLayout::packed(&[t]);
    let seconds = time(b, || {
        Ok(b.attention(&q, &kv, &kv, shape, &layout, &[], &mut out)?)
    })?;
    // Causal: t(t+1)/2 (query, key) pairs per head, 2 flops × 2 (QK and PV) per dim.
    let pairs = (t * (t + 1) / 2 * HEADS) as f64;
    rates.push(Rate {
        op: format!("attention causal {t} tok, {HEADS}/{KV_HEADS} heads"),
        seconds,
        bytes: f * (2 * t * HEADS * HEAD_DIM + 2 * t * KV_HEADS * HEAD_DIM) as f64,
        flops: 4.0 * pairs * HEAD_DIM as f64,
    });
    let len = t * FFN;
    let seconds = time(b, || Ok(b.swiglu(&x, &y, len, &mut out)?))?;
    rates.push(Rate {
        op: format!("swiglu {t}x{FFN}"),
        seconds,
        bytes: f * (3 * len) as f64,
        flops: 5.0 * len as f64,
    });
    let mut acc = buffer(b, &mut rng, len)?;
    let seconds = time(b, || Ok(b.add_inplace(&mut acc, &y, len)?))?;
    rates.push(Rate {
        op: format!("add {t}x{FFN}"),
        seconds,
        bytes: f * (3 * len) as f64,
        flops: len as f64,
    });
    let table = b.upload_weight(&tensor(&mut rng, VOCAB, HIDDEN, GgmlType::Q8_0)?)?;
    let ids: Vec<u32> = (0..t).map(|_| rng.random_range(0..VOCAB as u32)).collect();
    let seconds = time(b, || Ok(b.embedding(&table, &ids, &mut out)?))?;
    rates.push(Rate {
        op: format!("embedding Q8_0 {t} of {VOCAB}x{HIDDEN}"),
        seconds,
        bytes: (t * HIDDEN) as f64 * (34.0 / 32.0 + f),
        flops: (t * HIDDEN) as f64,
    });
    let seconds = time(b, || Ok(b.score_head(&x, 16, &table, [1, 2], &mut out)?))?;
    rates.push(Rate {
        op: format!("score_head Q8_0 16x{HIDDEN}"),
        seconds,
        bytes: (2 * HIDDEN) as f64 * 34.0 / 32.0 + f * (16 * HIDDEN) as f64,
        flops: 4.0 * (16 * HIDDEN) as f64,
    });
    Ok(rates)
}

/// Seconds per rerank of every case of a fixture, and the tokens it scores.
fn bench_model<B: Backend>(backend: B, stem: &str) -> Result<(f64, usize)> {
    let path = tessera_tests::fixture(&format!("{stem}.gguf"));
    let file = Arc::new(GgufFile::open(&path)?);
    eprintln!("{stem} on {}", backend.name());
    let reranker = Reranker::load(backend, &file, None)?;
    reranker.engine().set_prefix_cache_bytes(0);
    let reference = tessera_tests::load_reference(stem);
    let mut tokens = 0;
    let run = |tokens: &mut usize| -> Result<()> {
        for case in &reference.cases {
            let docs: Vec<&str> = case.documents.iter().map(String::as_str).collect();
            let options = RerankOptions {
                instruction: case.instruction.clone(),
                ..RerankOptions::default()
            };
            *tokens += reranker.rerank(&case.query, &docs, &options)?.total_tokens;
        }
        Ok(())
    };
    run(&mut tokens)?;
    let tokens_per_run = tokens;
    let start = Instant::now();
    let mut runs = 0;
    while runs < 3 || start.elapsed().as_secs_f64() < 1.0 {
        run(&mut tokens)?;
        runs += 1;
    }
    Ok((
        start.elapsed().as_secs_f64() / f64::from(runs),
        tokens_per_run,
    ))
}

fn main() -> Result<()> {
    let wgpu = WgpuBackend::new(true)?;
    println!("wgpu adapter: {}", wgpu.adapter());
    let cpu_ref = CpuBackend::new();
    let cpu_fast = CpuBackend::with_options(Precision::Fast, None)?;
    println!(
        "cpu: {} and {} on {} threads",
        cpu_ref.name(),
        cpu_fast.name(),
        cpu_fast.threads()
    );
    let columns = [
        ("wgpu", bench_ops(&wgpu)?),
        ("cpu-ref", bench_ops(&cpu_ref)?),
        ("cpu-fast", bench_ops(&cpu_fast)?),
    ];
    println!(
        "\n| op | wgpu ms | wgpu GB/s | wgpu GFLOP/s | cpu-ref ms | cpu-fast ms | wgpu / cpu-fast |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (i, r) in columns[0].1.iter().enumerate() {
        let (cref, cfast) = (&columns[1].1[i], &columns[2].1[i]);
        println!(
            "| {} | {:.3} | {:.2} | {:.2} | {:.3} | {:.3} | {:.2}× |",
            r.op,
            r.seconds * 1e3,
            r.bytes / r.seconds / 1e9,
            r.flops / r.seconds / 1e9,
            cref.seconds * 1e3,
            cfast.seconds * 1e3,
            cfast.seconds / r.seconds,
        );
    }
    println!(
        "\n| fixture (all cases, no prefix cache) | tokens | wgpu ms | cpu-ref ms | cpu-fast ms |"
    );
    println!("|---|---:|---:|---:|---:|");
    for stem in tessera_tests::MODEL_FIXTURES {
        let (w, tokens) = bench_model(WgpuBackend::new(true)?, stem)?;
        let (r, _) = bench_model(CpuBackend::new(), stem)?;
        let (fa, _) = bench_model(CpuBackend::with_options(Precision::Fast, None)?, stem)?;
        println!(
            "| {stem} | {tokens} | {:.1} | {:.1} | {:.1} |",
            w * 1e3,
            r * 1e3,
            fa * 1e3
        );
    }
    Ok(())
}
