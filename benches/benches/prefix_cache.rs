//! The shared query-prefix K/V on the tiny model (CPU reference): 16 documents
//! of one query scored with every pair computed whole (the baseline: the
//! prefix prepended to each document, nothing shared), with the prefix shared
//! but computed each time (cache off), and with the prefix taken from the
//! cache (warm).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use tessera_backend_cpu::CpuBackend;
use tessera_engine::{PrefixGroup, Reranker};
use tessera_gguf::GgufFile;

fn bench(c: &mut Criterion) {
    let file = Arc::new(
        GgufFile::open(tessera_tests::fixture("tiny-q8.gguf")).expect("the fixture opens"),
    );
    let reranker = Reranker::load(CpuBackend::reference(), &file, None).expect("loads");
    let prompt = reranker.prompt();
    let prefix = prompt
        .query_prefix(None, "how do I reset my password on the mobile app")
        .expect("prefix");
    let docs: Vec<Vec<u32>> = (0..16)
        .map(|i| {
            let mut ids = prompt
                .document_ids(&format!("document {i} about passwords, logins and resets"))
                .expect("ids");
            ids.extend_from_slice(prompt.suffix_ids());
            ids
        })
        .collect();
    let whole: Vec<Vec<u32>> = docs
        .iter()
        .map(|d| prefix.iter().chain(d).copied().collect())
        .collect();
    let engine = reranker.engine();
    let group_of = || PrefixGroup {
        prefix: &prefix,
        documents: docs.iter().map(Vec::as_slice).collect(),
    };

    let mut group = c.benchmark_group("rerank_16_docs_tiny_model");
    group.bench_function("unshared", |b| {
        let sequences: Vec<&[u32]> = whole.iter().map(Vec::as_slice).collect();
        b.iter(|| engine.score(&sequences).expect("scores"))
    });
    group.bench_function("shared_cache_off", |b| {
        engine.set_prefix_cache_bytes(0);
        b.iter(|| engine.score_groups(&[group_of()]).expect("scores"))
    });
    group.bench_function("shared_cache_warm", |b| {
        engine.set_prefix_cache_bytes(64 << 20);
        engine.score_groups(&[group_of()]).expect("warms the cache");
        b.iter(|| engine.score_groups(&[group_of()]).expect("scores"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
