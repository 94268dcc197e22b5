//! `tessera generate`: a random Qwen3 reranker or embedding GGUF of any shape,
//! with the real Qwen3 vocabulary and prompt metadata copied from the embedded
//! model, written the way llama.cpp writes the conversion (Q8_0 matrices, F32
//! norms; a reranker with `cls.output.weight` and `qwen3.pooling_type` = rank,
//! an embedding model with no head and pooling last). Qwen3-Reranker-N and
//! Qwen3-Embedding-N share Qwen3-N's shape. For benchmarks and tests: its
//! outputs mean nothing.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tessera_gguf::{GgmlType, GgufWriter, MetaArray, MetaValue, QK8_0};

use crate::model_source;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shape {
    /// hidden 64, 2 layers (tests).
    Tiny,
    /// Qwen3-0.6B: hidden 1024, 28 layers, 16/8 heads, head_dim 128, FFN 3072.
    #[value(name = "0.6b")]
    Qwen3_0_6b,
    /// Qwen3-4B: hidden 2560, 36 layers, 32/8 heads, head_dim 128, FFN 9728.
    #[value(name = "4b")]
    Qwen3_4b,
    /// Qwen3-8B: hidden 4096, 36 layers, 32/8 heads, head_dim 128, FFN 12288
    /// (Qwen3-Embedding-8B).
    #[value(name = "8b")]
    Qwen3_8b,
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Model shape: the tiny test shape or a real Qwen3 size.
    #[arg(long, value_enum)]
    shape: Shape,
    /// Override the number of layers (e.g. a shallow 4B-shaped model), 1 to 1000.
    #[arg(long, value_parser = crate::flags::count::<1, 1000>)]
    layers: Option<usize>,
    /// Seed of the random weights (the same seed gives the same file).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write the GGUF file.
    #[arg(long)]
    out: PathBuf,
    /// What the model is for: a reranker (a yes/no `cls.output.weight` head,
    /// pooling rank) or an embedding model (no head, pooling last).
    #[arg(long, value_enum, default_value = "reranker")]
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Reranker,
    Embedding,
}

struct Dims {
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    ffn: usize,
}

impl Shape {
    /// The hyper-parameters a model of this shape is written with (those
    /// `tessera tune` takes the matmul shapes from).
    pub fn config(self) -> tessera_model::ModelConfig {
        let d = dims(self);
        tessera_model::ModelConfig {
            n_layers: d.layers,
            hidden: d.hidden,
            ffn: d.ffn,
            n_heads: d.heads,
            n_kv_heads: d.kv_heads,
            head_dim: d.head_dim,
            rms_eps: RMS_EPS,
            rope_theta: ROPE_THETA,
            context_length: CONTEXT_LENGTH,
        }
    }
}

const RMS_EPS: f32 = 1e-6;
const ROPE_THETA: f32 = 1e6;
const CONTEXT_LENGTH: usize = 40_960;

/// Rows of the embedding matrix in Qwen3 checkpoints (the vocabulary is padded).
const VOCAB_ROWS: usize = 151_936;

fn dims(shape: Shape) -> Dims {
    match shape {
        Shape::Tiny => Dims {
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: 32,
            ffn: 128,
        },
        Shape::Qwen3_0_6b => Dims {
            hidden: 1024,
            layers: 28,
            heads: 16,
            kv_heads: 8,
            head_dim: 128,
            ffn: 3072,
        },
        Shape::Qwen3_4b => Dims {
            hidden: 2560,
            layers: 36,
            heads: 32,
            kv_heads: 8,
            head_dim: 128,
            ffn: 9728,
        },
        Shape::Qwen3_8b => Dims {
            hidden: 4096,
            layers: 36,
            heads: 32,
            kv_heads: 8,
            head_dim: 128,
            ffn: 12288,
        },
    }
}

/// Random Q8_0 data for `rows × cols` with weights of about `std` spread.
fn random_q8_0(rng: &mut StdRng, rows: usize, cols: usize, std: f32) -> Vec<u8> {
    let blocks = rows * cols / QK8_0;
    let mut bytes = vec![0u8; blocks * 34];
    rng.fill_bytes(&mut bytes);
    // Uniform int8 has a standard deviation of about 74.
    let d = half::f16::from_f32(std / 74.0).to_le_bytes();
    for block in bytes.chunks_exact_mut(34) {
        block[..2].copy_from_slice(&d);
        // -128 would make the block asymmetric; ggml never writes it.
        for q in &mut block[2..] {
            if *q == 0x80 {
                *q = 0x81;
            }
        }
    }
    bytes
}

fn norm_weight(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut noise = vec![0u8; len];
    rng.fill_bytes(&mut noise);
    noise
        .iter()
        .flat_map(|&b| (1.0f32 + (f32::from(b) - 127.5) / 1024.0).to_le_bytes())
        .collect()
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let mut d = dims(args.shape);
    if let Some(layers) = args.layers {
        d.layers = layers;
    }
    let source = model_source::embedded_file()?;
    let mut w = GgufWriter::new();
    let u32v = |v: usize| MetaValue::U32(v as u32);
    w.add_metadata("general.architecture", MetaValue::String("qwen3".into()));
    w.add_metadata(
        "general.name",
        MetaValue::String(format!("tessera-random-{:?}", args.shape)),
    );
    w.add_metadata("general.file_type", MetaValue::U32(7)); // MOSTLY_Q8_0
    w.add_metadata("qwen3.block_count", u32v(d.layers));
    w.add_metadata("qwen3.context_length", u32v(CONTEXT_LENGTH));
    w.add_metadata("qwen3.embedding_length", u32v(d.hidden));
    w.add_metadata("qwen3.feed_forward_length", u32v(d.ffn));
    w.add_metadata("qwen3.attention.head_count", u32v(d.heads));
    w.add_metadata("qwen3.attention.head_count_kv", u32v(d.kv_heads));
    w.add_metadata("qwen3.attention.key_length", u32v(d.head_dim));
    w.add_metadata("qwen3.attention.value_length", u32v(d.head_dim));
    w.add_metadata(
        "qwen3.attention.layer_norm_rms_epsilon",
        MetaValue::F32(RMS_EPS),
    );
    w.add_metadata("qwen3.rope.freq_base", MetaValue::F32(ROPE_THETA));
    match args.kind {
        Kind::Reranker => {
            w.add_metadata("qwen3.pooling_type", MetaValue::U32(4)); // rank
            w.add_metadata(
                "qwen3.classifier.output_labels",
                MetaValue::Array(MetaArray::String(vec!["yes".into(), "no".into()])),
            );
        }
        Kind::Embedding => w.add_metadata("qwen3.pooling_type", MetaValue::U32(3)), // last
    }
    for (key, value) in source.metadata() {
        if key.starts_with("tokenizer.") {
            w.add_metadata(key.clone(), value.clone());
        }
    }
    let tokens = source.get_str_array("tokenizer.ggml.tokens")?;
    if tokens.len() != VOCAB_ROWS {
        bail!(
            "the embedded model's vocabulary has {} entries, expected {VOCAB_ROWS}",
            tokens.len()
        );
    }
    let find = |t: &str| {
        tokens
            .iter()
            .position(|x| x == t)
            .with_context(|| format!("no token '{t}'"))
    };
    let (yes, no) = (find("yes")?, find("no")?);

    let mut rng = StdRng::seed_from_u64(args.seed);
    let h = d.hidden as u64;
    let q8 =
        |rng: &mut StdRng, rows: usize, cols: usize, std: f32| random_q8_0(rng, rows, cols, std);
    let embd = q8(&mut rng, VOCAB_ROWS, d.hidden, 0.05);
    let row_bytes = d.hidden / QK8_0 * 34;
    let mut cls = embd[yes * row_bytes..(yes + 1) * row_bytes].to_vec();
    cls.extend_from_slice(&embd[no * row_bytes..(no + 1) * row_bytes]);
    w.add_tensor(
        "token_embd.weight",
        vec![h, VOCAB_ROWS as u64],
        GgmlType::Q8_0,
        embd,
    )?;
    let std_in = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
    let (qw, kvw) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
    // A rewritten progress line on a terminal; plain lines, every eighth layer
    // and the last, into a file or pipe (no carriage returns in logs).
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    for i in 0..d.layers {
        if terminal {
            eprint!("\rgenerating layer {}/{}", i + 1, d.layers);
        } else if i % 8 == 0 || i + 1 == d.layers {
            eprintln!("generating layer {}/{}", i + 1, d.layers);
        }
        let n = |part: &str| format!("blk.{i}.{part}.weight");
        let mut matrix = |name: &str, rows: usize, cols: usize| -> anyhow::Result<()> {
            let data = q8(&mut rng, rows, cols, std_in(cols));
            w.add_tensor(
                n(name),
                vec![cols as u64, rows as u64],
                GgmlType::Q8_0,
                data,
            )?;
            Ok(())
        };
        matrix("attn_q", qw, d.hidden)?;
        matrix("attn_k", kvw, d.hidden)?;
        matrix("attn_v", kvw, d.hidden)?;
        matrix("attn_output", d.hidden, qw)?;
        matrix("ffn_gate", d.ffn, d.hidden)?;
        matrix("ffn_up", d.ffn, d.hidden)?;
        matrix("ffn_down", d.hidden, d.ffn)?;
        for (name, len) in [
            ("attn_norm", d.hidden),
            ("ffn_norm", d.hidden),
            ("attn_q_norm", d.head_dim),
            ("attn_k_norm", d.head_dim),
        ] {
            let data = norm_weight(&mut rng, len);
            w.add_tensor(n(name), vec![len as u64], GgmlType::F32, data)?;
        }
    }
    if terminal {
        eprintln!();
    }
    w.add_tensor(
        "output_norm.weight",
        vec![h],
        GgmlType::F32,
        norm_weight(&mut rng, d.hidden),
    )?;
    if args.kind == Kind::Reranker {
        w.add_tensor("cls.output.weight", vec![h, 2], GgmlType::Q8_0, cls)?;
    }
    w.write_file(&args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "wrote {} ({:.1} MiB)",
        args.out.display(),
        size as f64 / (1 << 20) as f64
    );
    Ok(())
}
