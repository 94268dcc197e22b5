//! The front door's CPU work before any model runs, on the real Qwen3
//! vocabulary (the embedded tiny model's tokenizer): `tessera_engine::prepare`
//! of a 100-document request against the bare tokenizer on the same texts
//! (what preparation adds to tokenising), and one long document split into
//! chunks.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tessera_engine::{prepare, PromptBuilder, RerankOptions};
use tessera_gguf::GgufFile;
use tessera_model::RerankTokenizer;

fn documents() -> Vec<String> {
    (0..100)
        .map(|i| {
            format!(
                "Document {i}: to reset your password, open the login screen, choose \
                 'forgot password' and follow the link we e-mail you. Links expire after \
                 {} minutes; request a new one if yours has. Contact support@example.com.",
                15 + i % 30
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let file = Arc::new(
        GgufFile::open(tessera_tests::fixture("tiny-q8.gguf")).expect("the fixture opens"),
    );
    let tokenizer = Arc::new(RerankTokenizer::from_gguf(&file).expect("tokenizer"));
    let prompt = PromptBuilder::new(Arc::clone(&tokenizer), 8192).expect("prompt");
    let docs = documents();
    let bytes: usize = docs.iter().map(String::len).sum();
    let options = RerankOptions::default();
    let query = "how do I reset my password";

    let mut group = c.benchmark_group("prepare_100_documents");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("tokenizer_only", |b| {
        b.iter(|| {
            for doc in &docs {
                tokenizer.encode(doc).expect("encodes");
            }
        })
    });
    group.bench_function("prepare", |b| {
        b.iter(|| prepare(&prompt, query, &docs, &options).expect("prepares"))
    });
    group.finish();

    let long: String = (0..30_000).map(|i| format!("w{} ", i % 97)).collect();
    let chunked = RerankOptions {
        max_chunks_per_doc: 8,
        ..RerankOptions::default()
    };
    let mut group = c.benchmark_group("prepare_one_long_document");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(long.len() as u64));
    group.bench_function("truncated", |b| {
        b.iter(|| prepare(&prompt, query, &[&long], &options).expect("prepares"))
    });
    group.bench_function("chunked_8", |b| {
        b.iter(|| prepare(&prompt, query, &[&long], &chunked).expect("prepares"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
