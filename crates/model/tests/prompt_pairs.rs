//! Reranker prompts: the reference pairs recorded in tests/fixtures/tiny-q8.json,
//! truncation on either side or refused, and queries that leave no room for a document.

use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use tessera_gguf::GgufFile;
use tessera_model::prompt::{
    PromptError, ASSISTANT_SUFFIX, DEFAULT_INSTRUCTION, DEFAULT_MAX_PAIR_TOKENS, SYSTEM_PREFIX,
};
use tessera_model::{PairTokens, PromptBuilder, RerankTokenizer, TruncationSide};

const PAIRS_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/tiny-q8.json"
);

fn tokenizer() -> Arc<RerankTokenizer> {
    static TOKENIZER: OnceLock<Arc<RerankTokenizer>> = OnceLock::new();
    TOKENIZER
        .get_or_init(|| {
            let path = tessera_fixtures::path("tiny-q8.gguf");
            let file = GgufFile::open(&path)
                .unwrap_or_else(|err| panic!("fixture {}: {err}", path.display()));
            Arc::new(RerankTokenizer::from_gguf(&file).expect("tokenizer from the fixture GGUF"))
        })
        .clone()
}

fn builder(max_pair_tokens: usize) -> PromptBuilder {
    PromptBuilder::new(tokenizer(), max_pair_tokens).expect("prompt builder")
}

#[derive(Deserialize)]
struct PairsFile {
    default_instruction: String,
    prefix: String,
    suffix: String,
    cases: Vec<QueryCase>,
}

#[derive(Deserialize)]
struct QueryCase {
    instruction: Option<String>,
    query: String,
    documents: Vec<String>,
    pairs: Vec<ReferencePair>,
}

#[derive(Deserialize)]
struct ReferencePair {
    ids: Vec<u32>,
    prefix_len: usize,
}

fn reference_pairs() -> PairsFile {
    let bytes = std::fs::read(PAIRS_PATH)
        .unwrap_or_else(|err| panic!("fixture {PAIRS_PATH} must exist: {err}"));
    serde_json::from_slice(&bytes).expect("tiny-q8.json parses")
}

#[test]
fn fixture_prompt_text_is_ours() {
    let file = reference_pairs();
    assert_eq!(file.default_instruction, DEFAULT_INSTRUCTION);
    assert_eq!(file.prefix, SYSTEM_PREFIX);
    assert_eq!(file.suffix, ASSISTANT_SUFFIX);
}

#[test]
fn build_matches_reference_pairs() {
    let builder = builder(DEFAULT_MAX_PAIR_TOKENS);
    let file = reference_pairs();
    let mut checked = 0;
    for case in &file.cases {
        assert_eq!(case.documents.len(), case.pairs.len());
        for (doc, reference) in case.documents.iter().zip(&case.pairs) {
            let pair = builder
                .build(case.instruction.as_deref(), &case.query, doc, None)
                .expect("build");
            assert_eq!(
                pair.ids, reference.ids,
                "query {:?}, document {doc:?}",
                case.query
            );
            assert_eq!(pair.prefix_len, reference.prefix_len, "document {doc:?}");
            assert!(!pair.truncated());
            checked += 1;
        }
    }
    assert!(checked > 0, "no reference pairs");
}

/// The whole prompt tokenized as one string gives the same ids as the recipe's pieces
/// (the suffix and prefix never merge with the text next to them).
#[test]
fn pairs_equal_the_whole_prompt_tokenized_at_once() {
    let builder = builder(DEFAULT_MAX_PAIR_TOKENS);
    for case in &reference_pairs().cases {
        let instruction = case.instruction.as_deref().unwrap_or(DEFAULT_INSTRUCTION);
        for doc in &case.documents {
            let pair = builder
                .build(Some(instruction), &case.query, doc, None)
                .unwrap();
            let whole = format!(
                "{SYSTEM_PREFIX}<Instruct>: {instruction}\n<Query>: {}\n<Document>: {doc}{ASSISTANT_SUFFIX}",
                case.query
            );
            assert_eq!(
                pair.ids,
                tokenizer().encode(&whole).unwrap(),
                "document {doc:?}"
            );
        }
    }
}

#[test]
fn default_instruction_is_used_when_none_is_given() {
    let builder = builder(DEFAULT_MAX_PAIR_TOKENS);
    assert_eq!(
        builder.query_prefix(None, "q").unwrap(),
        builder
            .query_prefix(Some(DEFAULT_INSTRUCTION), "q")
            .unwrap()
    );
    assert_ne!(
        builder.query_prefix(None, "q").unwrap(),
        builder.query_prefix(Some("Find code"), "q").unwrap()
    );
}

#[test]
fn pair_parts_are_where_they_say() {
    let builder = builder(DEFAULT_MAX_PAIR_TOKENS);
    let prefix = builder.query_prefix(None, "what is rust").unwrap();
    let doc = builder
        .document_ids("Rust is a systems programming language.")
        .unwrap();
    let pair = builder.pair(&prefix, &doc, None).unwrap();
    assert_eq!(pair.prefix_len, prefix.len());
    assert_eq!(pair.doc_ids(), doc.as_slice());
    assert_eq!(pair.doc_len, doc.len());
    assert_eq!(&pair.ids[..prefix.len()], prefix.as_slice());
    assert_eq!(&pair.ids[prefix.len() + doc.len()..], builder.suffix_ids());
    assert_eq!(
        pair.len(),
        prefix.len() + doc.len() + builder.suffix_ids().len()
    );
    assert!(!pair.is_empty() && !pair.truncated());
    assert_eq!(pair.doc_tokens_dropped, 0);
    // The suffix ends the prompt with `<think>\n\n</think>\n\n`.
    let think = tokenizer().token_to_id("<think>").unwrap();
    assert!(builder.suffix_ids().contains(&think));
}

/// A builder whose limit leaves exactly `room` document tokens beside `prefix`.
fn builder_with_room(prefix_len: usize, room: usize) -> PromptBuilder {
    let suffix_len = builder(DEFAULT_MAX_PAIR_TOKENS).suffix_ids().len();
    builder(prefix_len + suffix_len + room)
}

fn long_document_pair(
    truncation: Option<TruncationSide>,
) -> (Vec<u32>, Vec<u32>, Result<PairTokens, PromptError>) {
    let prefix = builder(DEFAULT_MAX_PAIR_TOKENS)
        .query_prefix(None, "q")
        .unwrap();
    let builder = builder_with_room(prefix.len(), 7);
    let doc = builder
        .document_ids("one two three four five six seven eight nine ten eleven twelve")
        .unwrap();
    assert!(doc.len() > 7, "{doc:?}");
    let result = builder.pair(&prefix, &doc, truncation);
    (prefix, doc, result)
}

#[test]
fn truncation_right_keeps_the_head() {
    let (prefix, doc, pair) = long_document_pair(Some(TruncationSide::Right));
    let pair = pair.unwrap();
    assert_eq!(pair.doc_ids(), &doc[..7]);
    assert_eq!(pair.doc_tokens_dropped, doc.len() - 7);
    assert!(pair.truncated());
    assert_eq!(pair.prefix_len, prefix.len());
    assert_eq!(
        pair.len(),
        builder_with_room(prefix.len(), 7).max_pair_tokens()
    );
}

#[test]
fn truncation_left_keeps_the_tail() {
    let (_, doc, pair) = long_document_pair(Some(TruncationSide::Left));
    let pair = pair.unwrap();
    assert_eq!(pair.doc_ids(), &doc[doc.len() - 7..]);
    assert_eq!(pair.doc_tokens_dropped, doc.len() - 7);
    assert_eq!(TruncationSide::default(), TruncationSide::Right);
}

#[test]
fn no_truncation_refuses_a_long_document() {
    let (_, doc, pair) = long_document_pair(None);
    match pair {
        Err(PromptError::DocumentTooLong { doc_tokens, room }) => {
            assert_eq!((doc_tokens, room), (doc.len(), 7));
        }
        other => panic!("expected DocumentTooLong, got {other:?}"),
    }
}

#[test]
fn a_document_that_exactly_fits_is_kept_whole() {
    let builder0 = builder(DEFAULT_MAX_PAIR_TOKENS);
    let prefix = builder0.query_prefix(None, "q").unwrap();
    let doc = builder0
        .document_ids("exactly fitting document text")
        .unwrap();
    let builder = builder_with_room(prefix.len(), doc.len());
    let pair = builder.pair(&prefix, &doc, None).unwrap();
    assert_eq!(pair.doc_ids(), doc.as_slice());
    assert_eq!(pair.len(), builder.max_pair_tokens());
}

#[test]
fn a_query_that_leaves_no_room_is_refused() {
    let prefix_len = builder(DEFAULT_MAX_PAIR_TOKENS)
        .query_prefix(None, "a long query")
        .unwrap()
        .len();
    let builder = builder_with_room(prefix_len, 0);
    match builder.query_prefix(None, "a long query") {
        Err(PromptError::QueryTooLong {
            prefix_tokens,
            max_pair_tokens,
        }) => {
            assert_eq!(prefix_tokens, prefix_len);
            assert_eq!(max_pair_tokens, builder.max_pair_tokens());
        }
        other => panic!("expected QueryTooLong, got {other:?}"),
    }
    let err = builder
        .build(None, "a long query", "doc", Some(TruncationSide::Right))
        .unwrap_err();
    assert!(matches!(err, PromptError::QueryTooLong { .. }), "{err}");
    // One token of room is enough.
    assert!(builder_with_room(prefix_len, 1)
        .query_prefix(None, "a long query")
        .is_ok());
}

#[test]
fn a_limit_below_the_fixed_prompt_is_refused() {
    let err = PromptBuilder::new(tokenizer(), 10).unwrap_err();
    assert!(
        matches!(
            err,
            PromptError::LimitTooSmall {
                max_pair_tokens: 10,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn empty_document_is_a_single_space_token() {
    let builder = builder(DEFAULT_MAX_PAIR_TOKENS);
    assert_eq!(
        builder.document_ids("").unwrap(),
        tokenizer().encode(" ").unwrap()
    );
}
