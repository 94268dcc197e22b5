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
use tessera_model::{
    ModelConfig, ModelKind, RerankTokenizer, TokenizerError, TruncationSide, Weights,
};

use crate::pack::{next_pass, DEFAULT_MAX_BATCH_TOKENS};
use crate::{Engine, EngineError, LoadError, PrefixGroup};

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

/// One input: text, or token ids a client tokenised itself (OpenAI's
/// `input` may be either).
#[derive(Clone, Copy, Debug)]
pub enum EmbedInput<'a> {
    Text(&'a str),
    Tokens(&'a [u32]),
}

impl<'a> From<&'a str> for EmbedInput<'a> {
    fn from(text: &'a str) -> Self {
        EmbedInput::Text(text)
    }
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
    #[error(
        "input {index}, token {position}: id {id} is not in the vocabulary (ids are below {rows})"
    )]
    TokenOutOfRange {
        index: usize,
        position: usize,
        id: u32,
        rows: usize,
    },
    #[error("the instruction alone is {tokens} tokens; the model takes {max} with the query")]
    InstructionTooLong { tokens: usize, max: usize },
    #[error("input {index} is empty (an array of token ids needs at least one)")]
    EmptyTokens { index: usize },
    #[error("dimensions must be between 1 and {max} (the model's width), got {requested}")]
    Dimensions { requested: usize, max: usize },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// How inputs become the token sequences an embedding model pools: the
/// backend-free half of an [`Embedder`], which a server keeps on its request
/// threads while the model runs on its compute thread.
#[derive(Clone)]
pub struct EmbedFormat {
    tokenizer: Arc<RerankTokenizer>,
    end_of_text: u32,
    /// Tokens one input may have, the end-of-text token included.
    max_tokens: usize,
    width: usize,
    /// Rows of the embedding matrix: token ids must be below.
    vocabulary: usize,
}

/// Inputs tokenised and cut, ready to be computed, and what each will cost.
#[derive(Clone, Debug)]
pub struct PreparedEmbeddings {
    /// Each input's ids, the end-of-text token last.
    pub sequences: Vec<Vec<u32>>,
    pub truncated: Vec<bool>,
    /// Components kept of each vector (`dimensions`, or the full width).
    pub keep: usize,
    /// Scale the kept components to unit length (true from [`EmbedFormat::prepare`]).
    pub normalize: bool,
    /// Leading tokens every sequence shares: the instruction's, as far as
    /// each input's own tokens agree with it (the prompt's final `:` may merge
    /// with a query's first letter), and never an input's last token. 0
    /// without an instruction.
    pub shared: usize,
}

impl PreparedEmbeddings {
    /// The sequences as the scheduler takes them: the shared instruction
    /// tokens as the prefix (computed once, and kept in the prefix cache),
    /// each input's remaining tokens as a document.
    pub fn packed_request(&self) -> crate::PackedRequest {
        crate::PackedRequest {
            prefix: self
                .sequences
                .first()
                .map(|s| s[..self.shared].to_vec())
                .unwrap_or_default(),
            documents: self
                .sequences
                .iter()
                .map(|s| s[self.shared..].to_vec())
                .collect(),
        }
    }

    /// Tokens computed, the end-of-text tokens included: what is billed.
    pub fn total_tokens(&self) -> usize {
        self.sequences.iter().map(Vec::len).sum()
    }

    /// The pooled vectors (as the model returns them, in input order) cut to
    /// `keep` components and (with `normalize`) scaled to unit length.
    pub fn finish(&self, vectors: Vec<Vec<f32>>) -> Vec<Embedding> {
        vectors
            .into_iter()
            .zip(self.sequences.iter().zip(&self.truncated))
            .map(|(mut values, (ids, &truncated))| {
                values.truncate(self.keep);
                if self.normalize {
                    normalise(&mut values);
                }
                Embedding {
                    values,
                    tokens: ids.len(),
                    truncated,
                }
            })
            .collect()
    }
}

impl EmbedFormat {
    /// The format of an embedding model with `config`, whose token matrix has
    /// `vocabulary` rows.
    pub fn new(
        tokenizer: Arc<RerankTokenizer>,
        config: &ModelConfig,
        vocabulary: usize,
    ) -> Result<EmbedFormat, LoadError> {
        let end_of_text = tokenizer
            .token_to_id("<|endoftext|>")
            .ok_or_else(|| LoadError::MissingToken("<|endoftext|>".into()))?;
        Ok(EmbedFormat {
            tokenizer,
            end_of_text,
            max_tokens: config
                .context_length
                .min(tessera_model::prompt::DEFAULT_MAX_PAIR_TOKENS),
            width: config.hidden,
            vocabulary,
        })
    }

    pub fn tokenizer(&self) -> &Arc<RerankTokenizer> {
        &self.tokenizer
    }

    /// The vector's full width (the largest `dimensions`).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Tokens one input may have, the end-of-text token included.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The token ids an input is embedded from: the (instructed) text, cut to
    /// the context, then the end-of-text token; and whether it was cut. Token
    /// ids given as input are taken as the text's tokens (no instruction).
    pub fn input_ids(
        &self,
        index: usize,
        input: EmbedInput<'_>,
        options: &EmbedOptions,
    ) -> Result<(Vec<u32>, bool), EmbedError> {
        let prompt = match (&options.instruction, input) {
            (Some(task), EmbedInput::Text(_)) => self.prompt_ids(task)?,
            _ => Vec::new(),
        };
        self.cut_ids(index, input, options, &prompt)
    }

    /// [`Self::input_ids`] with the instruction's prompt tokens given
    /// (tokenised once per request; empty without an instruction).
    fn cut_ids(
        &self,
        index: usize,
        input: EmbedInput<'_>,
        options: &EmbedOptions,
        prompt: &[u32],
    ) -> Result<(Vec<u32>, bool), EmbedError> {
        let mut ids = match input {
            EmbedInput::Text(text) => {
                let text = match &options.instruction {
                    Some(task) => format!("{}{text}", instruction_prompt(task)),
                    None => text.to_string(),
                };
                self.tokenizer
                    .encode(&text)
                    .map_err(|source| EmbedError::Tokenizer { index, source })?
            }
            EmbedInput::Tokens(ids) => {
                if ids.is_empty() {
                    return Err(EmbedError::EmptyTokens { index });
                }
                if let Some(position) = ids.iter().position(|&id| id as usize >= self.vocabulary) {
                    return Err(EmbedError::TokenOutOfRange {
                        index,
                        position,
                        id: ids[position],
                        rows: self.vocabulary,
                    });
                }
                ids.to_vec()
            }
        };
        let room = self.max_tokens - 1;
        let mut truncated = false;
        if ids.len() > room {
            // A query is cut, never its instruction: the tokens it shares
            // with the prompt stay at the head.
            let head = agreement(prompt, &ids);
            if head >= room {
                return Err(EmbedError::InstructionTooLong {
                    tokens: head,
                    max: self.max_tokens,
                });
            }
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
                    ids.drain(head..head + ids.len() - room);
                }
            }
            truncated = true;
        }
        ids.push(self.end_of_text);
        Ok((ids, truncated))
    }

    /// The tokens of an instruction's prompt on its own.
    fn prompt_ids(&self, task: &str) -> Result<Vec<u32>, EmbedError> {
        self.tokenizer
            .encode(&instruction_prompt(task))
            .map_err(|source| EmbedError::Tokenizer { index: 0, source })
    }

    /// Every input tokenised and cut, with `dimensions` checked: the
    /// embedding call's preparation, before any model runs.
    pub fn prepare(
        &self,
        inputs: &[EmbedInput<'_>],
        options: &EmbedOptions,
    ) -> Result<PreparedEmbeddings, EmbedError> {
        let keep = match options.dimensions {
            None => self.width,
            Some(n) if (1..=self.width).contains(&n) => n,
            Some(n) => {
                return Err(EmbedError::Dimensions {
                    requested: n,
                    max: self.width,
                })
            }
        };
        let is_text = |input: &EmbedInput<'_>| matches!(input, EmbedInput::Text(_));
        // The instruction's own tokens, once for the request.
        let prompt = match &options.instruction {
            Some(task) if inputs.iter().any(is_text) => self.prompt_ids(task)?,
            _ => Vec::new(),
        };
        let mut sequences: Vec<Vec<u32>> = Vec::with_capacity(inputs.len());
        let mut truncated = Vec::with_capacity(inputs.len());
        for (index, &input) in inputs.iter().enumerate() {
            let own = if is_text(&input) { &prompt[..] } else { &[] };
            let (ids, cut) = self.cut_ids(index, input, options, own)?;
            sequences.push(ids);
            truncated.push(cut);
        }
        // How far every input agrees with the prompt (tokenised whole, a
        // query may merge with the prompt's last token: only the common token
        // prefix is shared), never an input's last token.
        let shared = if inputs.iter().all(is_text) {
            sequences
                .iter()
                .map(|ids| agreement(&prompt, ids).min(ids.len() - 1))
                .min()
                .unwrap_or(0)
        } else {
            0
        };
        Ok(PreparedEmbeddings {
            sequences,
            truncated,
            keep,
            normalize: true,
            shared,
        })
    }
}

/// A loaded Qwen3 embedding model.
pub struct Embedder<B: Backend> {
    engine: Engine<B>,
    format: EmbedFormat,
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
        let weights = Weights::load_without_head(file)?;
        let format = EmbedFormat::new(
            Arc::new(tokenizer),
            &weights.config,
            weights.token_embd.rows,
        )?;
        let engine = Engine::new(backend, &weights)?;
        Ok(Embedder { engine, format })
    }

    pub fn engine(&self) -> &Engine<B> {
        &self.engine
    }

    /// How inputs are tokenised for this model.
    pub fn format(&self) -> &EmbedFormat {
        &self.format
    }

    /// The vector's full width (the largest `dimensions`).
    pub fn width(&self) -> usize {
        self.format.width()
    }

    /// [`EmbedFormat::input_ids`] of a text.
    pub fn input_ids(
        &self,
        index: usize,
        text: &str,
        options: &EmbedOptions,
    ) -> Result<(Vec<u32>, bool), EmbedError> {
        self.format
            .input_ids(index, EmbedInput::Text(text), options)
    }

    /// Every input's unit vector, in order, in passes of at most
    /// [`DEFAULT_MAX_BATCH_TOKENS`] tokens (one longer input alone).
    pub fn embed(
        &self,
        inputs: &[impl AsRef<str>],
        options: &EmbedOptions,
    ) -> Result<Vec<Embedding>, EmbedError> {
        let inputs: Vec<EmbedInput<'_>> = inputs
            .iter()
            .map(|t| EmbedInput::Text(t.as_ref()))
            .collect();
        let prepared = self.format.prepare(&inputs, options)?;
        // As the server runs it: the shared instruction tokens once per pass.
        let request = prepared.packed_request();
        let documents = &request.documents;
        let mut vectors = Vec::with_capacity(documents.len());
        let mut start = 0;
        while start < documents.len() {
            let lengths = documents[start..].iter().map(Vec::len);
            let taken = next_pass([(request.prefix.len(), lengths)], DEFAULT_MAX_BATCH_TOKENS)[0];
            let group = PrefixGroup {
                prefix: &request.prefix,
                documents: documents[start..start + taken]
                    .iter()
                    .map(Vec::as_slice)
                    .collect(),
            };
            vectors.extend(self.engine.embed_groups(&[group])?.into_iter().flatten());
            start += taken;
        }
        Ok(prepared.finish(vectors))
    }
}

/// How many leading tokens of `ids` are the prompt's own.
fn agreement(prompt: &[u32], ids: &[u32]) -> usize {
    prompt.iter().zip(ids).take_while(|(a, b)| a == b).count()
}

/// What precedes a query's text (the official Qwen3-Embedding format).
fn instruction_prompt(task: &str) -> String {
    format!("Instruct: {task}\nQuery:")
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
