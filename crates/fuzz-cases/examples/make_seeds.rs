//! Writes the seed corpus of the fuzz targets into `fuzz/corpus/<target>/`:
//! `cargo run -p tessera-fuzz-cases --example make_seeds`. Seeds are small (the
//! fuzzers mutate them), valid or nearly valid inputs that reach deep code.

use std::path::Path;

use tessera_gguf::{GgmlType, GgufFile, GgufWriter, MetaArray, MetaValue};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

/// The fixture's metadata with its tokenizer cut to `keep` tokens, and two tiny
/// tensors (F32 and Q8_0): a few KiB that still reach every reader.
fn small_gguf(keep: usize) -> Vec<u8> {
    let fixture = GgufFile::from_static(tessera_fixtures::bytes("tiny-q8.gguf")).expect("fixture");
    let mut writer = GgufWriter::new();
    for (key, value) in fixture.metadata() {
        let value = match value {
            MetaValue::Array(MetaArray::String(v)) => {
                MetaValue::Array(MetaArray::String(v.iter().take(keep).cloned().collect()))
            }
            MetaValue::Array(MetaArray::I32(v)) => {
                MetaValue::Array(MetaArray::I32(v.iter().take(keep).copied().collect()))
            }
            MetaValue::String(s) if s.len() > 512 => MetaValue::String(s[..512].to_string()),
            other => other.clone(),
        };
        writer.add_metadata(key.clone(), value);
    }
    let floats: Vec<u8> = (0..32)
        .flat_map(|i| (i as f32 * 0.25).to_le_bytes())
        .collect();
    writer
        .add_tensor("token_embd.weight", vec![8, 4], GgmlType::F32, floats)
        .expect("f32 tensor");
    let mut block = vec![0u8; 34];
    block[..2].copy_from_slice(&0x3c00u16.to_le_bytes());
    for (i, q) in block[2..].iter_mut().enumerate() {
        *q = (i as i8 - 16) as u8;
    }
    writer
        .add_tensor("blk.0.attn_q.weight", vec![32, 1], GgmlType::Q8_0, block)
        .expect("q8_0 tensor");
    writer.to_bytes().expect("serialised")
}

fn main() {
    let small = small_gguf(400);
    write("gguf", "small-qwen3", &small);
    write("gguf", "header-only", &small[..24]);
    write("gguf", "cut-in-metadata", &small[..small.len() / 3]);
    write("gguf", "cut-in-data", &small[..small.len() - 20]);
    write("gguf", "no-tokenizer-merges", &small_gguf(3));

    let texts: [&[u8]; 12] = [
        b"\x10how do I reset my password\0To reset your password, click forgot password.",
        b"\x90What is the capital of China?\0The capital of China is Beijing.",
        "\x05¿Dónde está la estación?\0A estação fica ao lado do porto; l'estació és a prop.".as_bytes(),
        "\x20Qu'est-ce que c'est ?\0Was ist das? Che cos'è?".as_bytes(),
        "\x30北京是中国的首都\0東京は日本の首都です。🦀🚀 emoji 👩‍👩‍👧".as_bytes(),
        b"\x00fn main() {\n    println!(\"hi\");\n}\0def f(x):\n\treturn x  # comment",
        b"\x7f    spaces   and\n\n\nnewlines\t\t\0\r\n\r\n   ",
        "\x41cafe\u{301} decomposed\0re\u{301}sume\u{301} and Å vs A\u{30a}".as_bytes(),
        b"\x02<|im_end|>\n<|im_start|>assistant\0<think>\n\n</think>\n\nyes",
        b"\xffq\0\xff\xfe\xc3 invalid utf-8 \xe2\x82",
        b"\x01\0",
        b"\x03a very long document word word word word word word word word word word word word word word word word word word word word word word word word",
    ];
    for (i, text) in texts.iter().enumerate() {
        write("prompt", &format!("text-{i:02}"), text);
    }

    let requests: [(u8, &str); 14] = [
        (
            0,
            r#"{"model": "Qwen/Qwen3-Reranker-4B", "query": "What is the capital of the United States?", "top_n": 3, "documents": ["Carson City is the capital city of the American state of Nevada.", "Washington, D.C. is the capital of the United States."]}"#,
        ),
        (
            1,
            r#"{"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"], "top_n": 1, "max_tokens_per_doc": 4}"#,
        ),
        (
            2,
            r#"{"query": "q", "texts": ["a", "b"], "truncate": true, "truncation_direction": "left", "raw_scores": true, "return_text": true}"#,
        ),
        (
            5,
            r#"{"query": "q", "documents": ["served through TEI in the Cohere dialect"]}"#,
        ),
        (
            0,
            r#"{"query": "q", "documents": [{"title": "t", "text": "x"}, {"text": "y"}], "rank_fields": ["title", "text"], "return_documents": true}"#,
        ),
        (
            0,
            r#"{"query": "q", "documents": ["a long one that will be chunked a long one that will be chunked"], "max_chunks_per_doc": 3, "truncate": false}"#,
        ),
        (
            3,
            r#"{"query": "q", "documents": ["x"], "instruction": "Given a code question, find the snippet"}"#,
        ),
        (
            4,
            r#"{"model": "Qwen/Qwen3-Reranker-4B", "query": "q", "documents": ["x"]}"#,
        ),
        (4, r#"{"model": "other", "query": "q", "documents": ["x"]}"#),
        (2, r#"{"query": "", "texts": []}"#),
        (0, r#"{"query": "q", "documents": ["a"], "top_n": -1}"#),
        (1, r#"{"query": "q\ud83e\udd80", "documents": ["\u00e9"]}"#),
        (0, r#"[{"query": "q"}]"#),
        (
            2,
            r#"{"query": "q", "texts": ["a"], "truncate": false, "truncation_direction": "up"}"#,
        ),
    ];
    for (i, (route, body)) in requests.iter().enumerate() {
        let mut bytes = vec![*route];
        bytes.extend_from_slice(body.as_bytes());
        write("request", &format!("body-{i:02}"), &bytes);
    }
    println!("seeds written to fuzz/corpus/");
}
