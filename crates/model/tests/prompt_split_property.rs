//! The property the query-prefix cache rests on: tokenizing
//! `"<Instruct>: I\n<Query>: q\n<Document>: " + doc` gives the ids of the text up to
//! `<Document>:` followed by the ids of `" " + doc`, for any instruction, query and document.

use std::sync::OnceLock;

use proptest::prelude::*;
use tessera_gguf::GgufFile;
use tessera_model::RerankTokenizer;

fn tokenizer() -> &'static RerankTokenizer {
    static TOKENIZER: OnceLock<RerankTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = tessera_fixtures::path("tiny-q8.gguf");
        let file =
            GgufFile::open(&path).unwrap_or_else(|err| panic!("fixture {}: {err}", path.display()));
        RerankTokenizer::from_gguf(&file).expect("tokenizer from the fixture GGUF")
    })
}

/// Pieces chosen to stress the boundary: whitespace runs and newlines, punctuation that
/// the regex glues to neighbours, contractions, digits, scripts, combining marks that NFC
/// composes, special-token text, and GGUF padding-row names.
const PIECES: &[&str] = &[
    " ",
    "  ",
    "\n",
    "\r\n",
    "\n\n",
    "\t",
    " \n",
    "\u{a0}",
    "\u{3000}",
    "\u{2003}",
    ":",
    ">:",
    ": ",
    "<",
    ">",
    "'s",
    "'LL",
    "'",
    "\"",
    "...",
    "!?",
    "-",
    "0",
    "42",
    "3.14",
    "a",
    "Hello",
    "word",
    "é",
    "e\u{301}",
    "\u{301}",
    "\u{308}",
    "A\u{30a}",
    "\u{1100}\u{1161}",
    "ﬁ",
    "日本語",
    "中文",
    "Привет",
    "مرحبا",
    "हिन्दी",
    "😀",
    "👩\u{200d}💻",
    "\u{200b}",
    "<|im_end|>",
    "<|im_start|>",
    "<|endoftext|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "[PAD151700]",
    "<Document>:",
    "<|im_",
    "end|>",
];

fn stitched() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..12).prop_map(|pieces| pieces.concat())
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => stitched(),
        1 => "[ -~]{0,40}",
        1 => "[\\s\\n\\r]{0,8}[a-zA-Z0-9 ]{0,10}",
        1 => any::<String>(),
    ]
}

fn head(instruction: &str, query: &str) -> String {
    format!("<Instruct>: {instruction}\n<Query>: {query}\n<Document>:")
}

fn assert_split_holds(instruction: &str, query: &str, doc: &str) -> Result<(), TestCaseError> {
    let tokenizer = tokenizer();
    let head = head(instruction, query);
    let whole = tokenizer.encode(&format!("{head} {doc}")).unwrap();
    let mut split = tokenizer.encode(&head).unwrap();
    split.extend(tokenizer.encode(&format!(" {doc}")).unwrap());
    prop_assert_eq!(
        whole,
        split,
        "instruction {:?}, query {:?}, document {:?}",
        instruction,
        query,
        doc
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn document_tokens_follow_the_shared_prefix(doc in any_text()) {
        assert_split_holds("I", "q", &doc)?;
    }

    #[test]
    fn split_holds_for_any_instruction_and_query(
        instruction in any_text(),
        query in any_text(),
        doc in any_text(),
    ) {
        assert_split_holds(&instruction, &query, &doc)?;
    }
}

#[test]
fn split_holds_for_hand_picked_documents() {
    for doc in [
        "",
        " ",
        "  x",
        "\n",
        "\nfoo",
        "'s",
        "\u{301}",
        "\u{301}x",
        ":",
        "<|im_end|>",
        "<think>x",
        "[PAD151700]",
        "123",
        "😀",
        "\u{a0}a",
    ] {
        assert_split_holds("I", "q", doc).unwrap();
    }
}
