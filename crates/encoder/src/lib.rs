//! BERT-family bi-encoder on candle: tokenize, forward (train and inference), pool,
//! normalise. Reads any sentence-transformers / HF folder (BERT, BGE, MiniLM).

mod model;
pub mod ops;
mod query;

pub use candle_core::Device;
pub use model::{Bert, BertConfig};
pub use query::QueryModel;

use candle_core::Tensor;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationParams};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{dir}: model folder has no {file}")]
    MissingFile { dir: PathBuf, file: &'static str },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: cannot load tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("tokenizing failed: {message}")]
    Encode { message: String },
    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("{path}: unsupported model: {message}")]
    Unsupported { path: PathBuf, message: String },
    #[error("bf16: {0}")]
    Precision(String),
    #[error("sequence of {len} tokens exceeds the model's {max} positions")]
    TooLong { len: usize, max: usize },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// How the bi-encoder multiplies. With the `cli` feature this is the `--bf16` flag
/// of every command that loads one (`uae eval`, `embed`, `serve`, `explore`, the
/// encoder benches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct EncoderPrecision {
    /// Run the bi-encoder's projections in bf16 on AMX tiles (Intel Sapphire Rapids
    /// or later) or with AVX512_BF16 (AMD Zen 4 or later, Intel Cooper Lake or
    /// later): faster, cosine >= 0.9999 to f32 on the fixtures; an error on a CPU
    /// with neither.
    #[cfg_attr(feature = "cli", arg(long))]
    pub bf16: bool,
}

/// How token vectors become one text vector (sentence-transformers' `1_Pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
pub enum Pooling {
    Mean,
    Cls,
}

#[derive(Deserialize)]
struct PoolingFile {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

#[derive(Deserialize)]
struct SbertFile {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
}

/// Batching knobs for [`Encoder::embed`].
#[derive(Debug, Clone, Copy, serde::Serialize, Deserialize)]
pub struct BatchOptions {
    /// Upper bound on padded tokens per forward pass (`batch * longest`).
    pub max_tokens: usize,
    /// Upper bound on texts per forward pass.
    pub max_batch: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            max_tokens: 8192,
            max_batch: 32,
        }
    }
}

/// A right-padded batch of token ids.
pub struct Batch {
    /// `[b, s]` u32 token ids.
    pub ids: Tensor,
    pub lens: Vec<usize>,
}

/// The files of a sentence-transformers folder besides `model.safetensors`: what an
/// export copies from its base, and (with the weights) what fixes a model's embeddings.
pub const FOLDER_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
];

/// A sentence-transformers style bi-encoder: tokenizer + BERT + pooling (+ L2 norm).
pub struct Encoder {
    pub model: Bert,
    tokenizer: Tokenizer,
    pub pooling: Pooling,
    pub normalize: bool,
    pub max_seq_length: usize,
    pub dir: PathBuf,
    /// The single-query layout of `model`, built on first use ([`Encoder::embed_query`]).
    query: std::sync::OnceLock<QueryModel>,
    /// The tokenizer without truncation, built on first use ([`Encoder::token_counts`]).
    whole: std::sync::OnceLock<Tokenizer>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        message: format!("invalid JSON: {e}"),
    })
}

fn require(dir: &Path, file: &'static str) -> Result<PathBuf> {
    let p = dir.join(file);
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::MissingFile {
            dir: dir.to_path_buf(),
            file,
        })
    }
}

impl Encoder {
    /// Loads a model folder: `config.json`, `model.safetensors`, `tokenizer.json`, and
    /// optionally `sentence_bert_config.json` (max_seq_length, default 512 capped by
    /// the model), `1_Pooling/config.json` (default mean) and `modules.json` (L2
    /// normalisation iff it lists a `Normalize` module).
    pub fn load(dir: &Path, device: &Device, trainable: bool) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Config {
                path: dir.to_path_buf(),
                message: "model folder not found".into(),
            });
        }
        let config_path = require(dir, "config.json")?;
        let weights = require(dir, "model.safetensors")?;
        let tok_path = require(dir, "tokenizer.json")?;
        let config: BertConfig = read_json(&config_path)?;
        if let Some(mt) = config.model_type.as_deref().filter(|&mt| mt != "bert") {
            return Err(Error::Unsupported {
                path: config_path,
                message: format!(
                    "model_type `{mt}` (BERT checkpoints such as MiniLM and BGE are supported)"
                ),
            });
        }
        let sbert = dir.join("sentence_bert_config.json");
        let max_seq_length = if sbert.is_file() {
            read_json::<SbertFile>(&sbert)?
                .max_seq_length
                .unwrap_or(512)
        } else {
            512
        }
        .min(config.max_position_embeddings);
        let pool_path = dir.join("1_Pooling").join("config.json");
        let pooling = if pool_path.is_file() {
            let p: PoolingFile = read_json(&pool_path)?;
            if p.pooling_mode_cls_token {
                Pooling::Cls
            } else if p.pooling_mode_mean_tokens {
                Pooling::Mean
            } else {
                return Err(Error::Unsupported {
                    path: pool_path,
                    message: "only mean or CLS pooling is supported".into(),
                });
            }
        } else {
            Pooling::Mean
        };
        let modules = dir.join("modules.json");
        let normalize = if modules.is_file() {
            read_json::<Vec<Module>>(&modules)?
                .iter()
                .any(|m| m.kind.ends_with("Normalize"))
        } else {
            false
        };
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| Error::Tokenizer {
            path: tok_path.clone(),
            message: e.to_string(),
        })?;
        // tokenizer.json files often carry their own truncation/padding (MiniLM's: 128);
        // ours are set explicitly: truncate to max_seq_length, pad ourselves.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer {
                path: tok_path.clone(),
                message: e.to_string(),
            })?;
        tokenizer.with_padding(None);
        let model = Bert::load(config, &weights, device, trainable)?;
        Ok(Encoder {
            model,
            tokenizer,
            pooling,
            normalize,
            max_seq_length,
            dir: dir.to_path_buf(),
            query: std::sync::OnceLock::new(),
            whole: std::sync::OnceLock::new(),
        })
    }

    /// A gradient-free inference copy of this (trainable) encoder: same tokenizer and
    /// pooling, weights shared (see [`Bert::inference_copy`]).
    pub fn inference_copy(&self) -> Result<Encoder> {
        Ok(Encoder {
            model: self.model.inference_copy()?,
            tokenizer: self.tokenizer.clone(),
            pooling: self.pooling,
            normalize: self.normalize,
            max_seq_length: self.max_seq_length,
            dir: self.dir.clone(),
            query: std::sync::OnceLock::new(),
            whole: std::sync::OnceLock::new(),
        })
    }

    pub fn dim(&self) -> usize {
        self.model.config.hidden_size
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids with special tokens, truncated to `max_seq_length`.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        Ok(self
            .tokenize_checked(texts)?
            .into_iter()
            .map(|(ids, _)| ids)
            .collect())
    }

    /// Pads token id lists (right, id 0) into one batch.
    pub fn batch(&self, seqs: &[&[u32]]) -> Result<Batch> {
        let s = seqs.iter().map(|x| x.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; seqs.len() * s];
        for (row, seq) in ids.chunks_mut(s).zip(seqs) {
            row[..seq.len()].copy_from_slice(seq);
        }
        let lens = seqs.iter().map(|x| x.len().max(1)).collect();
        Ok(Batch {
            ids: Tensor::from_vec(ids, (seqs.len(), s), self.device())?,
            lens,
        })
    }

    /// Pooled (and, per modules.json, normalised) vectors `[b, h]`; differentiable.
    /// `dropout_seed`: `Some` for training (seeded dropout), `None` for inference.
    pub fn forward_t(&self, batch: &Batch, dropout_seed: Option<u64>) -> Result<Tensor> {
        self.forward_with(&self.model, batch, dropout_seed)
    }

    /// [`Encoder::forward_t`] through another network with this encoder's pooling
    /// (e.g. a [`Bert::bf16_snapshot`] of `self.model`).
    pub fn forward_with(
        &self,
        model: &Bert,
        batch: &Batch,
        dropout_seed: Option<u64>,
    ) -> Result<Tensor> {
        let hidden = model.forward_t(&batch.ids, &batch.lens, dropout_seed)?;
        let (b, s, _) = hidden.dims3()?;
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let mask: Vec<f32> = batch
                    .lens
                    .iter()
                    .flat_map(|&n| (0..s).map(move |j| if j < n { 1.0 / n as f32 } else { 0.0 }))
                    .collect();
                let mask = Tensor::from_vec(mask, (b, s, 1), self.device())?;
                hidden.broadcast_mul(&mask)?.sum(1)?
            }
        };
        if self.normalize {
            let norm = pooled
                .sqr()?
                .sum_keepdim(1)?
                .sqrt()?
                .clamp(1e-12, f64::MAX)?;
            Ok(pooled.broadcast_div(&norm)?)
        } else {
            Ok(pooled)
        }
    }

    /// [`Encoder::tokenize`], and whether each text was cut to `max_seq_length`.
    pub fn tokenize_checked(&self, texts: &[&str]) -> Result<Vec<(Vec<u32>, bool)>> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Encode {
                message: e.to_string(),
            })?;
        Ok(enc
            .into_iter()
            .map(|e| {
                let cut = !e.get_overflowing().is_empty();
                (e.get_ids().to_vec(), cut)
            })
            .collect())
    }

    /// How many tokens each whole text has (no special tokens, no truncation): what
    /// a context budget counts.
    pub fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>> {
        let whole = self.whole.get_or_init(|| {
            let mut t = self.tokenizer.clone();
            t.with_truncation(None).ok();
            t
        });
        let enc = whole
            .encode_batch(texts.to_vec(), false)
            .map_err(|e| Error::Encode {
                message: e.to_string(),
            })?;
        Ok(enc.iter().map(|e| e.len()).collect())
    }

    /// The special tokens the tokenizer puts around one text (BERT: `[CLS]` before,
    /// `[SEP]` after), found by tokenising a probe text with and without them.
    pub fn special_tokens(&self) -> Result<(Vec<u32>, Vec<u32>)> {
        let encode = |special| {
            self.tokenizer
                .encode("a", special)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| Error::Encode {
                    message: e.to_string(),
                })
        };
        let (bare, full) = (encode(false)?, encode(true)?);
        let at = full
            .windows(bare.len().max(1))
            .position(|w| w == bare.as_slice())
            .unwrap_or(full.len());
        let end = (at + bare.len()).min(full.len());
        Ok((full[..at].to_vec(), full[end..].to_vec()))
    }

    /// Token ids given by a client, as the model must see them: the special tokens
    /// of [`Encoder::special_tokens`] added where they are missing (ids that already
    /// carry them are kept), the text between them cut so that the whole fits
    /// `max_seq_length`.
    pub fn with_special_tokens(&self, ids: &[u32], specials: &(Vec<u32>, Vec<u32>)) -> Vec<u32> {
        let (pre, post) = specials;
        let mut body = ids;
        if !pre.is_empty() && body.starts_with(pre) {
            body = &body[pre.len()..];
        }
        if !post.is_empty() && body.ends_with(post) {
            body = &body[..body.len() - post.len()];
        }
        let room = self.max_seq_length.saturating_sub(pre.len() + post.len());
        let body = &body[..body.len().min(room)];
        [pre.as_slice(), body, post.as_slice()].concat()
    }

    /// The vocabulary size: token ids must be below it.
    pub fn vocab_size(&self) -> usize {
        self.model.config.vocab_size
    }

    /// Embeds texts (inference): groups them by length into batches within `opts`,
    /// pads each to its longest member, returns vectors in input order. `progress`
    /// is called with the number of texts finished so far.
    pub fn embed_with(
        &self,
        texts: &[&str],
        opts: BatchOptions,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Vec<f32>>> {
        let ids = self.tokenize(texts)?;
        self.embed_ids(&ids, opts, progress)
    }

    /// [`Encoder::embed_with`] from token ids (with special tokens, each at most
    /// `max_seq_length` long and below [`Encoder::vocab_size`]).
    pub fn embed_ids(
        &self,
        ids: &[Vec<u32>],
        opts: BatchOptions,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![Vec::new(); ids.len()];
        let mut done = 0;
        for group in plan_batches(&ids.iter().map(Vec::len).collect::<Vec<_>>(), opts) {
            let seqs: Vec<&[u32]> = group.iter().map(|&i| ids[i].as_slice()).collect();
            let vecs = self
                .forward_t(&self.batch(&seqs)?, None)?
                .to_vec2::<f32>()?;
            for (&i, v) in group.iter().zip(vecs) {
                out[i] = v;
            }
            done += group.len();
            progress(done);
        }
        Ok(out)
    }

    /// One text's vector through the single-query path ([`QueryModel`]): for a
    /// short text, several times faster than a batch of one. In f32 it equals
    /// [`Encoder::embed`] to f32 rounding; after [`Bert::to_bf16`] its projections
    /// run in bf16 as the batch path's do. `threads` splits each projection
    /// between rayon workers (1 avoids the pool entirely).
    pub fn embed_query(&self, text: &str, threads: usize) -> Result<Vec<f32>> {
        let ids = self.tokenize(&[text])?.pop().unwrap_or_default();
        self.embed_query_ids(&ids, threads)
    }

    /// [`Encoder::embed_query`] from token ids (with special tokens).
    pub fn embed_query_ids(&self, ids: &[u32], threads: usize) -> Result<Vec<f32>> {
        Ok(self
            .embed_queries_ids(&[ids.to_vec()], threads)?
            .pop()
            .unwrap_or_default())
    }

    /// A few short texts' vectors (as token ids) through the single-query path: their
    /// rows share each projection, so every weight is streamed once for all of them.
    /// Worth it up to a few hundred tokens in all; past that the batch path's GEMM
    /// wins. A trainable model or one off the CPU goes through the batch path, since
    /// its weights change or live elsewhere.
    pub fn embed_queries_ids(&self, ids: &[Vec<u32>], threads: usize) -> Result<Vec<Vec<f32>>> {
        if !self.model.vars().is_empty() || !self.device().is_cpu() {
            return self.embed_ids(ids, BatchOptions::default(), &mut |_| {});
        }
        if let Some(bad) = ids
            .iter()
            .flatten()
            .find(|&&i| i as usize >= self.vocab_size())
        {
            return Err(Error::Encode {
                message: format!("token id {bad} is outside the vocabulary"),
            });
        }
        let seqs: Vec<&[u32]> = ids
            .iter()
            .map(|q| &q[..q.len().min(self.max_seq_length)])
            .collect();
        self.query_model()?
            .embed(&seqs, self.pooling, self.normalize, threads)
    }

    /// Builds the single-query layout now (about 4 bytes a projection parameter, a
    /// fraction of a second), so that the first query does not pay for it.
    pub fn prepare_query_path(&self) -> Result<()> {
        if self.model.vars().is_empty() && self.device().is_cpu() {
            self.query_model()?;
        }
        Ok(())
    }

    fn query_model(&self) -> Result<&QueryModel> {
        if let Some(m) = self.query.get() {
            return Ok(m);
        }
        let built = QueryModel::new(&self.model)?;
        Ok(self.query.get_or_init(|| built))
    }

    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed_with(texts, BatchOptions::default(), &mut |_| {})
    }
}

/// Groups sequence indices into batches: longest first, each batch within
/// `max_batch` texts and `max_tokens` padded tokens (a single over-long text still
/// gets a batch of its own).
pub fn plan_batches(lens: &[usize], opts: BatchOptions) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by(|&a, &b| lens[b].cmp(&lens[a]).then(a.cmp(&b)));
    let mut batches = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let l = lens[i].max(1);
        let new_longest = longest.max(l);
        if !cur.is_empty()
            && (cur.len() + 1 > opts.max_batch || (cur.len() + 1) * new_longest > opts.max_tokens)
        {
            batches.push(std::mem::take(&mut cur));
            longest = 0;
        }
        longest = longest.max(l);
        cur.push(i);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_budgets_and_cover_everything() {
        let lens = [5, 100, 7, 100, 3, 50, 1];
        let b = plan_batches(
            &lens,
            BatchOptions {
                max_tokens: 200,
                max_batch: 3,
            },
        );
        let mut seen: Vec<usize> = b.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lens.len()).collect::<Vec<_>>());
        for batch in &b {
            let longest = batch.iter().map(|&i| lens[i]).max().unwrap();
            assert!(batch.len() <= 3 && (batch.len() == 1 || batch.len() * longest <= 200));
        }
        assert_eq!(b[0], vec![1, 3]);
    }
}
