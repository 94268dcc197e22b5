//! The property each fuzz target checks, as plain functions: `fuzz/` feeds them
//! libFuzzer's inputs, and this crate's tests replay the committed corpus and every
//! past crash through them on each `cargo test`, no fuzzer needed.
//!
//! Each function panics exactly when the code under test misbehaves: a panic of
//! its own, an out-of-bounds read, or an answer that breaks an invariant.

use std::sync::{Arc, OnceLock};

use tessera_engine::EmbedFormat;
use tessera_gguf::GgufFile;
use tessera_model::{ModelConfig, PromptBuilder, RerankTokenizer, TruncationSide};
use tessera_server::{validate_embeddings, validate_request, ServerOptions};

/// A target's check: panics when the code under test misbehaves on `data`.
pub type Check = fn(&[u8]);

/// The targets, by the names `fuzz/` and the corpus folders use.
pub const TARGETS: [(&str, Check); 4] = [
    ("gguf", gguf),
    ("prompt", prompt),
    ("request", request),
    ("embeddings", embeddings),
];

/// The tiny fixture model (the real Qwen3 vocabulary and merges), rebuilt once
/// per process by `tessera-fixtures`.
fn fixture() -> &'static [u8] {
    tessera_fixtures::bytes("tiny-q8.gguf")
}

fn tokenizer() -> &'static Arc<RerankTokenizer> {
    static TOKENIZER: OnceLock<Arc<RerankTokenizer>> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let file = GgufFile::from_static(fixture()).expect("the fixture parses");
        Arc::new(RerankTokenizer::from_gguf(&file).expect("the fixture has a tokenizer"))
    })
}

/// GGUF bytes: any input parses or is refused; a file that parses hands out only
/// in-bounds metadata and tensor data, and the model and tokenizer readers built
/// on it refuse what they cannot use instead of panicking.
pub fn gguf(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    for (key, value) in file.metadata() {
        // Identity, not equality: a NaN value is not equal to itself.
        assert!(file.get(key).is_some_and(|v| std::ptr::eq(v, value)));
        let _ = (
            file.get_u32(key),
            file.get_f32(key),
            file.get_i32_array(key),
        );
    }
    for info in file.tensors() {
        assert_eq!(file.tensor_data(info).len() as u64, info.size);
    }
    let _ = ModelConfig::from_gguf(&file);
    // Building a tokenizer from a 150k-entry vocabulary is slow; only small ones.
    if data.len() < 1 << 16 {
        let _ = RerankTokenizer::from_gguf(&file);
    }
}

/// Text through the tokenizer and the prompt builder. The first byte picks the
/// pair limit (so truncation is reached often) and the truncation side; the rest,
/// as lossy UTF-8, is split at the first NUL into query and document.
pub fn prompt(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (query, doc) = text.split_once('\0').unwrap_or((&text, ""));
    let tokenizer = Arc::clone(tokenizer());
    let max_pair = 56 + usize::from(control & 0x7f) * 4;
    let prompt = PromptBuilder::new(tokenizer, max_pair).expect("56 tokens hold the fixed prompt");
    let side = match control >> 7 {
        0 => TruncationSide::Right,
        _ => TruncationSide::Left,
    };
    let ids = prompt.tokenizer().encode(doc).expect("any text tokenizes");
    let vocab = prompt.tokenizer().vocab_size() as u32;
    assert!(
        ids.iter().all(|&id| id < vocab),
        "ids within the vocabulary"
    );
    let _ = prompt.tokenizer().decode(&ids).expect("own ids decode");
    let Ok(prefix) = prompt.query_prefix(None, query) else {
        return;
    };
    assert!(prefix.starts_with(prompt.system_ids()));
    let doc_ids = prompt.document_ids(doc).expect("any text tokenizes");
    let pair = prompt
        .pair(&prefix, &doc_ids, Some(side))
        .expect("a truncating pair always fits");
    assert!(
        pair.ids.len() <= max_pair,
        "{} > {max_pair}",
        pair.ids.len()
    );
    assert_eq!(pair.prefix_len, prefix.len());
    assert_eq!(pair.doc_len + pair.doc_tokens_dropped, doc_ids.len());
    assert!(pair.ids.ends_with(prompt.suffix_ids()));
    if let Ok(whole) = prompt.pair(&prefix, &doc_ids, None) {
        assert_eq!(whole.ids, pair.ids, "no truncation when it fits");
    }
}

/// A request body on one of the rerank routes (first byte picks the route), through
/// the server's own parsing, validation and tokenisation: a 4xx naming the problem
/// or a job whose every pair fits the context.
pub fn request(data: &[u8]) {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let path = ["/v1/rerank", "/v2/rerank", "/rerank"][usize::from(control % 3)];
    let options = ServerOptions {
        max_documents: 64,
        served_model_names: if control & 4 == 0 {
            Vec::new()
        } else {
            vec!["Qwen/Qwen3-Reranker-4B".into()]
        },
        ..ServerOptions::default()
    };
    let prompt = PromptBuilder::new(Arc::clone(tokenizer()), 256).expect("room for the prompt");
    match validate_request(&options, &prompt, path, body) {
        Ok(valid) => {
            assert!(valid.documents >= 1 && valid.documents <= options.max_documents);
            assert!(valid.pairs.len() >= valid.documents);
            for pair in &valid.pairs {
                assert!(valid.prefix.len() + pair.len() <= prompt.max_pair_tokens());
                assert!(pair.ends_with(prompt.suffix_ids()));
            }
            assert!(valid.truncated.iter().all(|&i| i < valid.documents));
            let computed: usize = valid
                .pairs
                .iter()
                .map(|p| valid.prefix.len() + p.len())
                .sum();
            assert_eq!(valid.total_tokens, computed, "billing counts every pair");
        }
        Err(failure) => assert_client_error(&failure),
    }
}

/// An embedding request body on `/v1/embeddings` or `/embed` (first byte picks
/// the route and the served names), through the server's own parsing,
/// validation and preparation with a 256-token context: a 4xx naming the
/// problem, or sequences that fit, each ending with the end-of-text token, in
/// the vocabulary, with a shared prefix every one of them starts with.
pub fn embeddings(data: &[u8]) {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let path = ["/v1/embeddings", "/embed"][usize::from(control % 2)];
    let options = ServerOptions {
        max_documents: 64,
        embedding_served_model_names: if control & 4 == 0 {
            Vec::new()
        } else {
            vec!["Qwen/Qwen3-Embedding-8B".into()]
        },
        ..ServerOptions::default()
    };
    let format = embed_format();
    match validate_embeddings(&options, format, path, body) {
        Ok(prepared) => {
            let n = prepared.sequences.len();
            assert!(n >= 1 && n <= options.max_documents);
            assert_eq!(prepared.truncated.len(), n);
            assert!(prepared.keep >= 1 && prepared.keep <= format.width());
            let end_of_text = format.tokenizer().token_to_id("<|endoftext|>");
            for ids in &prepared.sequences {
                assert!(!ids.is_empty() && ids.len() <= format.max_tokens());
                assert_eq!(ids.last().copied(), end_of_text);
                assert!(ids.len() > prepared.shared, "an input keeps its last token");
                assert_eq!(
                    ids[..prepared.shared],
                    prepared.sequences[0][..prepared.shared]
                );
                assert!(ids.iter().all(|&id| (id as usize) < EMBED_ROWS));
            }
            let request = prepared.packed_request();
            assert_eq!(request.documents.len(), n);
            assert_eq!(
                request.tokens(),
                prepared.total_tokens(),
                "billing counts every token"
            );
        }
        Err(failure) => assert_client_error(&failure),
    }
}

/// A refusal is the client's to fix (4xx) and says why.
fn assert_client_error(failure: &tessera_server::error::Failure) {
    let status = failure.error.status.as_u16();
    assert!(
        (400..500).contains(&status),
        "{status}: {}",
        failure.error.message
    );
    assert!(!failure.error.message.is_empty());
}

/// Rows of the token matrix the embedding format is told about.
const EMBED_ROWS: usize = 151_936;

/// An embedding model's input format over the fixture's tokenizer, with a
/// 256-token context so that truncation is reached quickly.
fn embed_format() -> &'static EmbedFormat {
    static FORMAT: OnceLock<EmbedFormat> = OnceLock::new();
    FORMAT.get_or_init(|| {
        let file = GgufFile::from_static(fixture()).expect("the fixture parses");
        let mut config = ModelConfig::from_gguf(&file).expect("the fixture's config");
        config.context_length = 256;
        EmbedFormat::new(Arc::clone(tokenizer()), &config, EMBED_ROWS).expect("end-of-text")
    })
}
