//! Times the fast path's attention op alone on the Qwen3 0.6B/4B head layout
//! (16/8 heads × 128 on 0.6B), for one 512-token sequence (`llama-bench -p 512`'s
//! shape) and for 20 documents × 256 tokens after a shared 32-token prefix.
//! Reports useful GFLOP/s (4·d per visible query-key pair and head).
//!
//!     cargo run --release -p tessera-backend-cpu --example attention_bench [threads] [isa]
//!
//! `isa`: avx512-vnni, avx-vnni, avx2 or scalar (default: the best this CPU has).

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_backend::{AttentionLayout, AttentionShape, Backend, KvRef};
use tessera_backend_cpu::{CpuBackend, Isa, Precision};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads = std::env::args().nth(1).map(|t| t.parse()).transpose()?;
    let isa = match std::env::args().nth(2) {
        None => Isa::best(),
        Some(name) => *Isa::ALL
            .iter()
            .find(|isa| isa.name() == name)
            .ok_or_else(|| format!("unknown isa '{name}'"))?,
    };
    let backend = CpuBackend::with_isa(Precision::Fast, threads, isa)?;
    println!("{} on {} threads", backend.name(), backend.threads());
    let shape = AttentionShape {
        n_heads: 16,
        n_kv_heads: 8,
        head_dim: 128,
    };
    let mut rng = StdRng::seed_from_u64(5);
    for (name, lengths, prefix) in [
        ("prefill 1 x 512", vec![512usize], 0usize),
        ("rerank 20 x 256 + 32 prefix", vec![256; 20], 32),
    ] {
        let tokens: usize = lengths.iter().sum();
        let mut buffer = |len: usize| -> Result<Vec<f32>, Box<dyn std::error::Error>> {
            let data: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut b = backend.alloc(len)?;
            backend.write(&mut b, &data)?;
            Ok(b)
        };
        let q = buffer(tokens * shape.q_width())?;
        let k = buffer(tokens * shape.kv_width())?;
        let v = buffer(tokens * shape.kv_width())?;
        let pk = buffer(prefix.max(1) * shape.kv_width())?;
        let pv = buffer(prefix.max(1) * shape.kv_width())?;
        let mut out = backend.alloc(tokens * shape.q_width())?;
        let seq_prefix: Vec<Option<usize>> =
            lengths.iter().map(|_| (prefix > 0).then_some(0)).collect();
        let layout = AttentionLayout::packed_with_prefixes(&lengths, &seq_prefix);
        let prefixes = [KvRef {
            k: &pk,
            v: &pv,
            len: prefix,
        }];
        let refs: &[KvRef<'_, Vec<f32>>] = if prefix > 0 { &prefixes } else { &[] };
        let visible: usize = lengths
            .iter()
            .map(|&len| (0..len).map(|r| prefix + r + 1).sum::<usize>())
            .sum();
        let flops = 4.0 * visible as f64 * shape.n_heads as f64 * shape.head_dim as f64;
        backend.attention(&q, &k, &v, shape, &layout, refs, &mut out)?;
        let mut best = f64::INFINITY;
        for _ in 0..7 {
            let start = Instant::now();
            backend.attention(&q, &k, &v, shape, &layout, refs, &mut out)?;
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "{name:<30} {:>8.2} ms  {:>6.1} GFLOP/s (best of 7)",
            best * 1e3,
            flops / best / 1e9
        );
    }
    Ok(())
}
