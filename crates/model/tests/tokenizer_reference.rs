//! The tokenizer built from the fixture GGUF's `tokenizer.ggml.*` metadata against the
//! reference ids of the Hugging Face tokenizer (tests/fixtures/tokenizer_cases.json), and
//! the `tokenizer.json` override path fed with what `to_json()` writes.

use std::path::Path;
use std::sync::OnceLock;

use serde::Deserialize;
use tessera_gguf::GgufFile;
use tessera_model::tokenizer::TokenizerError;
use tessera_model::RerankTokenizer;
use unicode_normalization::UnicodeNormalization;

const CASES_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/tokenizer_cases.json"
);

/// Qwen3's vocabulary: 151,643 BPE tokens and 26 added tokens; the GGUF pads the
/// embedding to 151,936 rows with UNUSED `[PAD…]` entries.
const QWEN3_VOCAB: usize = 151_669;
const QWEN3_ROWS: usize = 151_936;
const QWEN3_MERGES: usize = 151_387;

fn gguf_tokenizer() -> &'static RerankTokenizer {
    static TOKENIZER: OnceLock<RerankTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = tessera_fixtures::path("tiny-q8.gguf");
        let file =
            GgufFile::open(&path).unwrap_or_else(|err| panic!("fixture {}: {err}", path.display()));
        RerankTokenizer::from_gguf(&file).expect("tokenizer from the fixture GGUF")
    })
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

/// tokenizer_cases.json: `{"cases": [...]}` as tools/make_fixtures.py writes it, or a bare list.
#[derive(Deserialize)]
#[serde(untagged)]
enum CasesFile {
    Wrapped { cases: Vec<Case> },
    Bare(Vec<Case>),
}

fn reference_cases() -> Vec<Case> {
    let bytes = std::fs::read(CASES_PATH)
        .unwrap_or_else(|err| panic!("fixture {CASES_PATH} must exist: {err}"));
    let cases = match serde_json::from_slice(&bytes).expect("tokenizer_cases.json parses") {
        CasesFile::Wrapped { cases } | CasesFile::Bare(cases) => cases,
    };
    assert!(cases.len() >= 60, "only {} reference cases", cases.len());
    cases
}

/// Encodes every reference string; returns the mismatches, described.
fn mismatches(tokenizer: &RerankTokenizer, cases: &[Case]) -> Vec<String> {
    cases
        .iter()
        .filter_map(|case| {
            let got = tokenizer.encode(&case.text).expect("encode");
            (got != case.ids).then(|| format!("{:?}: got {got:?}, want {:?}", case.text, case.ids))
        })
        .collect()
}

fn assert_matches_reference(tokenizer: &RerankTokenizer) {
    let cases = reference_cases();
    let bad = mismatches(tokenizer, &cases);
    assert!(
        bad.is_empty(),
        "{} of {} cases differ:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}

#[test]
fn gguf_tokenizer_matches_reference_ids() {
    assert_matches_reference(gguf_tokenizer());
}

#[test]
fn gguf_tokenizer_decodes_to_nfc_text() {
    let tokenizer = gguf_tokenizer();
    for case in reference_cases() {
        let decoded = tokenizer.decode(&case.ids).expect("decode");
        let nfc: String = case.text.nfc().collect();
        assert_eq!(decoded, nfc, "decode of {:?}", case.text);
    }
}

#[test]
fn override_path_round_trip_matches_reference_ids() {
    let json = gguf_tokenizer().to_json().expect("to_json");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tokenizer_round_trip.json");
    std::fs::write(&path, json).expect("write tokenizer.json");
    let reloaded = RerankTokenizer::from_file(&path).expect("from_file");
    assert_matches_reference(&reloaded);

    let summary = reloaded.summary();
    assert_eq!(summary.source, path.display().to_string());
    assert_eq!(summary.pre_tokenizer, "qwen2");
    assert_eq!(summary.vocab_size, QWEN3_VOCAB);
    assert_eq!(summary.merges, QWEN3_MERGES);
    assert_eq!(summary.added_tokens, 26);
}

/// Hugging Face's own `tokenizer.json` keeps added tokens out of `model.vocab`; the
/// loader then numbers them in order after the BPE vocabulary.
#[test]
fn override_path_accepts_added_tokens_outside_the_model_vocab() {
    let mut json: serde_json::Value =
        serde_json::from_str(&gguf_tokenizer().to_json().unwrap()).unwrap();
    let added: Vec<String> = json["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|token| token["content"].as_str().unwrap().to_owned())
        .collect();
    let vocab = json["model"]["vocab"].as_object_mut().unwrap();
    for content in &added {
        vocab
            .remove(content)
            .expect("added token in the model vocab");
    }
    let reloaded = RerankTokenizer::from_json_bytes(json.to_string().as_bytes()).unwrap();
    assert_matches_reference(&reloaded);
    assert_eq!(reloaded.token_to_id("<think>"), Some(151_667));
}

/// A file whose declared added-token ids disagree with the ids the loader gives is refused
/// (the `tokenizers` crate would only log it).
#[test]
fn override_path_refuses_added_token_ids_that_do_not_resolve() {
    let mut json: serde_json::Value =
        serde_json::from_str(&gguf_tokenizer().to_json().unwrap()).unwrap();
    json["model"]["vocab"]
        .as_object_mut()
        .unwrap()
        .remove("<think>")
        .expect("<think> in the model vocab");
    let err = RerankTokenizer::from_json_bytes(json.to_string().as_bytes()).unwrap_err();
    assert!(
        matches!(&err, TokenizerError::AddedTokenId { content, expected: 151_667, .. } if content == "<think>"),
        "{err}"
    );
}

#[test]
fn override_path_reports_unreadable_files_by_path() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-tokenizer.json");
    let err = RerankTokenizer::from_file(&path).unwrap_err();
    assert!(matches!(err, TokenizerError::ReadFile { .. }), "{err}");
    assert!(err.to_string().contains("no-such-tokenizer.json"), "{err}");

    let err = RerankTokenizer::from_json_bytes(b"{\"model\": 3}").unwrap_err();
    assert!(matches!(err, TokenizerError::ParseJson { .. }), "{err}");
}

#[test]
fn yes_and_no_are_single_tokens() {
    let tokenizer = gguf_tokenizer();
    assert_eq!(tokenizer.encode("yes").unwrap(), [9693]);
    assert_eq!(tokenizer.encode("no").unwrap(), [2152]);
    assert_eq!(tokenizer.token_to_id("yes"), Some(9693));
    assert_eq!(tokenizer.token_to_id("no"), Some(2152));
}

#[test]
fn added_tokens_written_in_text_are_recognised() {
    let tokenizer = gguf_tokenizer();
    assert_eq!(tokenizer.encode("<think>").unwrap(), [151_667]);
    assert_eq!(tokenizer.encode("</think>").unwrap(), [151_668]);
    assert_eq!(tokenizer.encode("<|im_end|>").unwrap(), [151_645]);
    assert_eq!(tokenizer.encode("<|im_start|>").unwrap(), [151_644]);
    let ids = tokenizer.encode("a<|im_end|>b<think>c").unwrap();
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert_eq!((ids[1], ids[3]), (151_645, 151_667));
    assert_eq!(tokenizer.decode(&ids).unwrap(), "a<|im_end|>b<think>c");
}

#[test]
fn unused_padding_rows_never_match() {
    let tokenizer = gguf_tokenizer();
    assert_eq!(tokenizer.token_to_id("[PAD151700]"), None);
    let ids = tokenizer.encode("[PAD151700]").unwrap();
    assert!(ids.len() > 1, "{ids:?}");
    assert!(ids.iter().all(|&id| (id as usize) < QWEN3_VOCAB), "{ids:?}");
    assert_eq!(tokenizer.decode(&ids).unwrap(), "[PAD151700]");
    let err = tokenizer.decode(&[151_700]).unwrap_err();
    assert!(
        matches!(err, TokenizerError::UnknownId { id: 151_700 }),
        "{err}"
    );
}

#[test]
fn gguf_summary_counts_the_vocabulary() {
    let tokenizer = gguf_tokenizer();
    let summary = tokenizer.summary();
    assert_eq!(summary.source, "gguf");
    assert_eq!(summary.model, "BPE");
    assert_eq!(summary.pre_tokenizer, "qwen2");
    assert_eq!(summary.vocab_size, QWEN3_VOCAB);
    assert_eq!(tokenizer.vocab_size(), QWEN3_VOCAB);
    assert_eq!(summary.merges, QWEN3_MERGES);
    assert_eq!(summary.added_tokens, 26);
    // llama.cpp's converter also marks `<|fim_*|>`, `<|repo_name|>`, `<|file_sep|>`
    // CONTROL because they look special; Hugging Face marks 14 of the 26 special.
    assert_eq!(summary.special_tokens, 20);
    assert_eq!(summary.unused_padding, QWEN3_ROWS - QWEN3_VOCAB);
    let shown = summary.to_string();
    assert!(
        shown.contains("qwen2") && shown.contains("151669"),
        "{shown}"
    );
}
