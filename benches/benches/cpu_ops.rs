//! The CPU backend's hot ops, fast path against the reference in the same run:
//! the Q8_0 matmul (int8 activations and SIMD dots against f32 activations)
//! and attention (blocked, grouped query vectors against one row at a time),
//! at Qwen3-Reranker-4B shapes with 64 token rows.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tessera_backend::{AttentionLayout, AttentionShape, Backend, HostTensor, Qkv};
use tessera_backend_cpu::CpuBackend;
use tessera_gguf::{quantize_row_q8_0, BlockQ8_0, GgmlType};

const TOKENS: usize = 64;
const HIDDEN: usize = 2560;

/// Deterministic values in [-scale, scale) (no RNG dependency, same every run).
fn values(len: usize, scale: f32) -> Vec<f32> {
    let mut state = 0x9e37_79b9_u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn q8_weight(rows: usize, cols: usize) -> HostTensor {
    let mut blocks = vec![BlockQ8_0::default(); rows * cols / 32];
    quantize_row_q8_0(&values(rows * cols, 0.5), &mut blocks);
    HostTensor::in_memory(
        "w",
        GgmlType::Q8_0,
        rows,
        cols,
        BlockQ8_0::as_bytes(&blocks).to_vec(),
    )
    .expect("consistent tensor")
}

fn backends() -> [(&'static str, CpuBackend); 2] {
    [
        ("reference", CpuBackend::reference()),
        ("fast", CpuBackend::fast()),
    ]
}

fn matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul_q8_0_64x2560_by_2560");
    group.sample_size(10);
    group.throughput(Throughput::Elements((2 * TOKENS * HIDDEN * HIDDEN) as u64));
    let tensor = q8_weight(HIDDEN, HIDDEN);
    for (name, b) in backends() {
        let w = b.upload_weight(&tensor).expect("upload");
        let mut x = b.alloc(TOKENS * HIDDEN).expect("alloc");
        b.write(&mut x, &values(TOKENS * HIDDEN, 1.0))
            .expect("write");
        let mut out = b.alloc(TOKENS * HIDDEN).expect("alloc");
        group.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter(|| b.matmul(&x, TOKENS, &w, &mut out).expect("matmul"))
        });
    }
    group.finish();
}

fn attention(c: &mut Criterion) {
    let shape = AttentionShape {
        n_heads: 32,
        n_kv_heads: 8,
        head_dim: 128,
    };
    let tokens = 256;
    let layout = AttentionLayout::packed(&[tokens]);
    let mut group = c.benchmark_group("attention_causal_256_tokens_32x8x128");
    group.sample_size(10);
    let pairs = tokens * (tokens + 1) / 2;
    group.throughput(Throughput::Elements((4 * 128 * 32 * pairs) as u64));
    for (name, b) in backends() {
        let buffer = |len: usize, scale: f32| {
            let mut buf = b.alloc(len).expect("alloc");
            b.write(&mut buf, &values(len, scale)).expect("write");
            buf
        };
        let q = buffer(tokens * shape.q_width(), 1.5);
        let k = buffer(tokens * shape.kv_width(), 1.5);
        let v = buffer(tokens * shape.kv_width(), 1.0);
        let mut out = b.alloc(tokens * shape.q_width()).expect("alloc");
        group.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter(|| {
                let qkv = Qkv {
                    q: &q,
                    k: &k,
                    v: &v,
                };
                b.attention(qkv, shape, &layout, &[], &mut out)
                    .expect("attention")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, matmul, attention);
criterion_main!(benches);
