//! The embedding front door: texts in, L2-normalised vectors out, the way the
//! official Qwen3-Embedding recipe computes them. A query may carry an
//! instruction (`Instruct: {task}\nQuery:{text}`), documents none; the text is
//! tokenised whole, the end-of-text token appended, and the pooled vector is the
//! final norm's hidden state at that last token ([`Engine::embed`]).
//! `dimensions` keeps the first N components and normalises again (the models
//! are trained for it, Matryoshka-style).

use std::sync::Arc;

use tessera_backend::Backend;
use tessera_gguf::GgufFile;
use tessera_model::{ModelKind, RerankTokenizer, TokenizerError, TruncationSide, Weights};

use crate::pack::{next_pass, DEFAULT_MAX_BATCH_TOKENS};
use crate::{Engine, EngineError, LoadError};

/// How one embedding call treats its inputs.
#[derive(Clone, Debug)]
pub struct EmbedOptions {
    /// The task of a query (`Instruct: {instruction}\nQuery:{text}`); `None`
    /// embeds the text as it is (documents).
    pub instruction: Option<String>,
    /// Keep the first N components (then normalise); `None` keeps all.
    pub dimensions: Option<usize>,
    /// An input longer than the context is cut on this side; `None` refuses it.
    pub truncation: Option<TruncationSide>,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            instruction: None,
            dimensions: None,
            truncation: Some(TruncationSide::Right),
        }
    }
}

/// One input's vector and what it cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    /// Unit length (L2).
    pub values: Vec<f32>,
    /// Tokens computed (the end-of-text token included): what is billed.
    pub tokens: usize,
    pub truncated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("input {index}: cannot tokenize: {source}")]
    Tokenizer {
        index: usize,
        source: TokenizerError,
    },
    #[error("input {index} is {tokens} tokens long, more than the {max} the model takes")]
    TooLong {
        index: usize,
        tokens: usize,
        max: usize,
    },
    #[error("dimensions must be between 1 and {max} (the model's width), got {requested}")]
    Dimensions { requested: usize, max: usize },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A loaded Qwen3 embedding model.
pub struct Embedder<B: Backend> {
    engine: Engine<B>,
    tokenizer: Arc<RerankTokenizer>,
    end_of_text: u32,
    /// Tokens one input may have, the end-of-text token included.
    max_tokens: usize,
}

impl<B: Backend> Embedder<B> {
    /// Loads an embedding GGUF (pooling `last`); a reranker is refused.
    pub fn load(
        backend: B,
        file: &Arc<GgufFile>,
        tokenizer: Option<RerankTokenizer>,
    ) -> Result<Embedder<B>, LoadError> {
        let (kind, pooling) = ModelKind::from_gguf(file)?;
        if kind != ModelKind::Embedding {
            return Err(LoadError::NotEmbedding { pooling });
        }
        let tokenizer = match tokenizer {
            Some(t) => t,
            None => RerankTokenizer::from_gguf(file)?,
        };
        let end_of_text = tokenizer
            .token_to_id("<|endoftext|>")
            .ok_or_else(|| LoadError::MissingToken("<|endoftext|>".into()))?;
        // An embedding model has no score head; the rows named here are never
        // used by the embed pass.
        let weights = Weights::load(file, [end_of_text, end_of_text])?;
        let max_tokens = weights
            .config
            .context_length
            .min(tessera_model::prompt::DEFAULT_MAX_PAIR_TOKENS);
        let engine = Engine::new(backend, &weights)?;
        Ok(Embedder {
            engine,
            tokenizer: Arc::new(tokenizer),
            end_of_text,
            max_tokens,
        })
    }

    pub fn engine(&self) -> &Engine<B> {
        &self.engine
    }

    /// The vector's full width (the largest `dimensions`).
    pub fn width(&self) -> usize {
        self.engine.config().hidden
    }

    /// The token ids an input is embedded from: the (instructed) text, cut to
    /// the context, then the end-of-text token; and whether it was cut.
    pub fn input_ids(
        &self,
        index: usize,
        text: &str,
        options: &EmbedOptions,
    ) -> Result<(Vec<u32>, bool), EmbedError> {
        let text = match &options.instruction {
            Some(task) => format!("Instruct: {task}\nQuery:{text}"),
            None => text.to_string(),
        };
        let mut ids = self
            .tokenizer
            .encode(&text)
            .map_err(|source| EmbedError::Tokenizer { index, source })?;
        let room = self.max_tokens - 1;
        let mut truncated = false;
        if ids.len() > room {
            match options.truncation {
                None => {
                    return Err(EmbedError::TooLong {
                        index,
                        tokens: ids.len() + 1,
                        max: self.max_tokens,
                    })
                }
                Some(TruncationSide::Right) => ids.truncate(room),
                Some(TruncationSide::Left) => {
                    ids.drain(..ids.len() - room);
                }
            }
            truncated = true;
        }
        ids.push(self.end_of_text);
        Ok((ids, truncated))
    }

    /// Every input's unit vector, in order, in passes of at most
    /// [`DEFAULT_MAX_BATCH_TOKENS`] tokens (one longer input alone).
    pub fn embed(
        &self,
        inputs: &[impl AsRef<str>],
        options: &EmbedOptions,
    ) -> Result<Vec<Embedding>, EmbedError> {
        let width = self.width();
        let keep = match options.dimensions {
            None => width,
            Some(n) if (1..=width).contains(&n) => n,
            Some(n) => {
                return Err(EmbedError::Dimensions {
                    requested: n,
                    max: width,
                })
            }
        };
        let mut sequences = Vec::with_capacity(inputs.len());
        let mut truncated = Vec::with_capacity(inputs.len());
        for (index, text) in inputs.iter().enumerate() {
            let (ids, cut) = self.input_ids(index, text.as_ref(), options)?;
            sequences.push(ids);
            truncated.push(cut);
        }
        let mut vectors = Vec::with_capacity(sequences.len());
        let mut start = 0;
        while start < sequences.len() {
            let lengths = sequences[start..].iter().map(Vec::len);
            let taken = next_pass([(0, lengths)], DEFAULT_MAX_BATCH_TOKENS)[0];
            let pass: Vec<&[u32]> = sequences[start..start + taken]
                .iter()
                .map(Vec::as_slice)
                .collect();
            vectors.extend(self.engine.embed(&pass)?);
            start += taken;
        }
        Ok(vectors
            .into_iter()
            .zip(sequences.iter().zip(truncated))
            .map(|(mut values, (ids, truncated))| {
                values.truncate(keep);
                normalise(&mut values);
                Embedding {
                    values,
                    tokens: ids.len(),
                    truncated,
                }
            })
            .collect())
    }
}

/// Scales `values` to unit L2 length (a zero vector stays zero).
pub fn normalise(values: &mut [f32]) {
    let norm = values
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for v in values {
            *v = (f64::from(*v) / norm) as f32;
        }
    }
}
