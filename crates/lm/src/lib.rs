//! Causal LM scoring on the CPU: Llama (2, 3.x), Mistral, Qwen2, Qwen3 and Gemma 3
//! models from GGUF (dequantised to f32 by default, or kept quantised) or from HF
//! safetensors folders.
//!
//! The forward pass takes a packed batch of variable-length sequences (no padding at
//! all: linear layers run on the concatenated tokens, attention per sequence), each
//! with its own KV cache, and returns log-probabilities only where they are asked
//! for (the LM head is the costliest single matmul; scoring needs it on answer
//! positions only). Follows HF transformers' `LlamaForCausalLM`, `MistralForCausalLM`,
//! `Qwen2ForCausalLM`, `Qwen3ForCausalLM` and `Gemma3ForCausalLM`: the families differ
//! only in the knobs of [`LmConfig`] (q/k norms, Gemma's norms after attention and
//! MLP, GeGLU, scaled embeddings, sliding-window layers with their own rotary base,
//! Llama 3's rotary frequency scaling), so one forward pass serves them all.
//! GGUF llama q/k weights are stored permuted by llama.cpp, so rotary embeddings
//! rotate interleaved pairs on them; HF weights and the other GGUF families rotate
//! halves.

pub mod chat;
mod load;
mod tokenizer;

pub use chat::ChatTemplate;
pub use load::{file_sha256, LmPrecision, LmSource};

use candle_core::quantized::QMatMul;
use rayon::prelude::*;
use std::path::PathBuf;
use tokenizers::Tokenizer;
use uae_kernels::bf16::{self, PackedB};
use uae_kernels::{
    gelu_tanh_mul_rows, log_softmax_rows, rms_norm_rows, sgemm, silu_mul_rows, softmax_rows, Mat,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("{path}: unsupported model: {message}")]
    Unsupported { path: PathBuf, message: String },
    #[error("{path}: missing tensor `{name}`")]
    MissingTensor { path: PathBuf, name: String },
    #[error("tokenizer: {message}")]
    Tokenizer { message: String },
    #[error("bad input: {message}")]
    Input { message: String },
    #[error("chat template: {message}")]
    Template { message: String },
    #[error("bf16 weights {}", bf16::UNAVAILABLE)]
    NoBf16,
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum RopeStyle {
    /// Rotate pairs (2i, 2i+1): llama weights as llama.cpp stores them in GGUF.
    Interleaved,
    /// Rotate pairs (i, i + d/2): HF checkpoints.
    Halves,
}

/// A model family: which of [`LmConfig`]'s knobs its checkpoints turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Gemma3,
}

impl Family {
    /// The family of an HF `model_type` or a GGUF `general.architecture`.
    pub fn parse(name: &str) -> Option<Family> {
        Some(match name {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            "gemma3" | "gemma3_text" => Family::Gemma3,
            _ => return None,
        })
    }

    /// Whether q and k are RMS-normed per head before the rotation (Qwen3, Gemma 3).
    pub fn qk_norm(self) -> bool {
        matches!(self, Family::Qwen3 | Family::Gemma3)
    }

    /// Whether attention and MLP outputs are normed before the residual add, with
    /// embeddings scaled by sqrt(hidden) (Gemma).
    pub fn gemma_style(self) -> bool {
        self == Family::Gemma3
    }

    /// What an "unsupported architecture" error lists.
    pub const SUPPORTED: &'static str = "llama (Llama 2 and 3.x), mistral, qwen2, qwen3, gemma3";
}

/// The feed-forward gate's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Act {
    /// SwiGLU: `silu(gate) * up` (Llama, Mistral, Qwen).
    Silu,
    /// GeGLU with the tanh approximation of GELU (Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}

/// How rotary frequencies are stretched for long contexts: each frequency
/// `base^(-2i/d)` is divided by a per-pair factor.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (HF `rope_type: linear`; Gemma 3's global layers).
    Linear(f32),
    /// Llama 3.x (`rope_type: llama3`): low frequencies divided by `factor`, high ones
    /// kept, a smooth blend between (HF `_compute_llama3_parameters`).
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_context: f32,
    },
    /// One divisor per rotated pair, as llama.cpp stores Llama 3's scaling in GGUF
    /// (`rope_freqs.weight`).
    Factors(Vec<f32>),
}

impl RopeScaling {
    /// The divisor of pair `i`'s frequency `freq` (radians per position).
    fn divisor(&self, i: usize, freq: f64) -> f64 {
        match self {
            RopeScaling::None => 1.0,
            RopeScaling::Linear(f) => *f as f64,
            RopeScaling::Factors(v) => v.get(i).copied().unwrap_or(1.0) as f64,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            } => {
                let (f, lo, hi, ctx) = (
                    *factor as f64,
                    *low_freq_factor as f64,
                    *high_freq_factor as f64,
                    *original_context as f64,
                );
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                if wavelen > ctx / lo {
                    f
                } else if wavelen < ctx / hi {
                    1.0
                } else {
                    let smooth = (ctx / wavelen - lo) / (hi - lo);
                    1.0 / ((1.0 - smooth) / f + smooth)
                }
            }
        }
    }
}

/// Rotary tables: `cos`/`sin` of `position * frequency`, `[positions, head_dim / 2]`.
struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    fn new(base: f32, scaling: &RopeScaling, head_dim: usize, positions: usize) -> Rope {
        let half = head_dim / 2;
        let freqs: Vec<f64> = (0..half)
            .map(|i| {
                let f = (base as f64).powf(-2.0 * i as f64 / head_dim as f64);
                f / scaling.divisor(i, f)
            })
            .collect();
        let mut cos = vec![0f32; positions * half];
        let mut sin = vec![0f32; positions * half];
        for p in 0..positions {
            for (i, f) in freqs.iter().enumerate() {
                let theta = p as f64 * f;
                cos[p * half + i] = theta.cos() as f32;
                sin[p * half + i] = theta.sin() as f32;
            }
        }
        Rope { cos, sin }
    }
}

/// Architecture hyper-parameters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LmConfig {
    pub family: Family,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub rope_base: f32,
    pub rope_scaling: RopeScaling,
    pub rms_eps: f32,
    pub context: usize,
    pub rope: RopeStyle,
    /// RMSNorm over each head's q and k before the rotation (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// RMSNorm of the attention and MLP outputs before the residual add (Gemma 3).
    pub post_norms: bool,
    pub act: Act,
    /// Token embeddings are multiplied by this (Gemma: sqrt(hidden)); 1 elsewhere.
    pub embed_scale: f32,
    /// Attention logits are multiplied by this (1/sqrt(head_dim), or Gemma's
    /// `query_pre_attn_scalar^-0.5`).
    pub attn_scale: f32,
    /// Keys a sliding-window layer sees: the last `window` positions, its own included.
    pub sliding_window: Option<usize>,
    /// Per layer: whether it attends through the sliding window.
    pub sliding_layers: Vec<bool>,
    /// Rotary base of the sliding-window layers, where it differs (Gemma 3: 10,000).
    pub rope_local_base: Option<f32>,
}

/// A linear map `y = x W^T (+ b)` with `W: [out, in]`.
pub(crate) enum Weight {
    /// `w` holds W^T, `[in, out]` row-major, which gemm reads with unit column stride.
    F32 {
        w: Vec<f32>,
        out: usize,
        inp: usize,
    },
    /// W^T rounded to bf16 and packed for the bf16 GEMM (AMX or AVX512_BF16) ([`CausalLm::to_bf16`]).
    Bf16(PackedB),
    Quant {
        q: QMatMul,
        out: usize,
        inp: usize,
    },
}

impl Weight {
    fn out(&self) -> usize {
        match self {
            Weight::F32 { out, .. } | Weight::Quant { out, .. } => *out,
            Weight::Bf16(p) => p.n(),
        }
    }

    /// `y[n, out] (+)= x[n, in] W^T`, `y` with row stride `y_rs` (to write a column block).
    fn apply(
        &self,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        y_rs: usize,
        accumulate: bool,
    ) -> Result<()> {
        match self {
            Weight::F32 { w, out, inp } => {
                let threads = rayon::current_num_threads();
                sgemm(
                    n,
                    *out,
                    *inp,
                    Mat {
                        data: x,
                        rs: *inp,
                        cs: 1,
                    },
                    Mat {
                        data: w,
                        rs: *out,
                        cs: 1,
                    },
                    y,
                    y_rs,
                    accumulate,
                    threads,
                );
            }
            Weight::Bf16(p) => {
                let x = Mat {
                    data: x,
                    rs: p.k(),
                    cs: 1,
                };
                bf16::gemm(n, x, p, y, y_rs, accumulate, rayon::current_num_threads());
            }
            Weight::Quant { q, out, inp } => {
                let xt = candle_core::Tensor::from_slice(x, (n, *inp), &candle_core::Device::Cpu)?;
                let r = xt.apply(q)?.flatten_all()?.to_vec1::<f32>()?;
                for (row, src) in y.chunks_mut(y_rs).zip(r.chunks(*out)) {
                    for (d, s) in row[..*out].iter_mut().zip(src) {
                        *d = if accumulate { *d + s } else { *s };
                    }
                }
            }
        }
        Ok(())
    }
}

/// Several weights applied to the same input, outputs side by side (`[q | k | v]`).
pub(crate) struct Group {
    parts: Vec<Weight>,
    bias: Option<Vec<f32>>,
}

impl Group {
    fn out(&self) -> usize {
        self.parts.iter().map(Weight::out).sum()
    }

    fn apply(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let total = self.out();
        let mut y = vec![0f32; n * total];
        if let Some(b) = &self.bias {
            y.par_chunks_mut(total).for_each(|r| r.copy_from_slice(b));
        }
        let mut off = 0;
        for p in &self.parts {
            p.apply(x, n, &mut y[off..], total, self.bias.is_some())?;
            off += p.out();
        }
        Ok(y)
    }
}

pub(crate) struct Layer {
    attn_norm: Vec<f32>,
    qkv: Group,
    /// Per-head RMSNorm weights of q and k (`[head_dim]`), where the family has them.
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    o: Weight,
    /// Norm of the attention output before the residual add (Gemma).
    post_attn_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    gate_up: Group,
    down: Weight,
    /// Norm of the MLP output before the residual add (Gemma).
    post_ffn_norm: Option<Vec<f32>>,
}

/// Keys and values of the tokens a sequence has seen, per layer (`[len, kv_dim]`).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps the first `len` tokens (nothing when `len` is not shorter). Exact: under
    /// causal attention a token's keys and values do not depend on later tokens.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        for rows in self.k.iter_mut().chain(self.v.iter_mut()) {
            let width = rows.len() / self.len;
            rows.truncate(len * width);
        }
        self.len = len;
    }
}

/// Prompts that share fewer leading tokens than this are prefilled apart by
/// [`CausalLm::generate_shared`] (a chat template's header alone is no reason to
/// clone a cache).
pub const MIN_SHARED_TOKENS: usize = 16;

/// Generation needs at least one prompt token to predict from.
fn no_empty(prompts: &[&[u32]]) -> Result<()> {
    if prompts.iter().any(|p| p.is_empty()) {
        return Err(Error::Input {
            message: "empty prompt".into(),
        });
    }
    Ok(())
}

/// The number of leading tokens `a` and `b` share.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A causal LM ready to score and generate.
pub struct CausalLm {
    pub config: LmConfig,
    pub(crate) embed: Vec<f32>,
    pub(crate) layers: Vec<Layer>,
    pub(crate) norm: Vec<f32>,
    /// `None`: tied to the token embedding.
    pub(crate) head: Option<Weight>,
    pub tokenizer: Tokenizer,
    /// sha256 of the weights file (keys label stores).
    pub model_hash: String,
    pub eos: Vec<u32>,
    /// Prepended to every prompt ([`CausalLm::encode_prompt`]) where the model was
    /// trained with one (Gemma, Llama, Mistral; not SmolLM2 or Qwen).
    pub bos: Option<u32>,
    /// The model's own chat template (GGUF `tokenizer.chat_template`, or
    /// `chat_template` of an HF folder), where it ships one.
    pub chat_template: Option<ChatTemplate>,
    /// Rotary tables of the global layers and, where their base differs, of the
    /// sliding-window layers.
    rope_global: Rope,
    rope_local: Option<Rope>,
    /// Positions the rotary tables cover.
    positions: usize,
}

/// Everything a loader produces; [`CausalLm::finish`] adds the rotary tables.
pub(crate) struct Parts {
    pub config: LmConfig,
    pub embed: Vec<f32>,
    pub layers: Vec<Layer>,
    pub norm: Vec<f32>,
    pub head: Option<Weight>,
    pub tokenizer: Tokenizer,
    pub model_hash: String,
    pub eos: Vec<u32>,
    pub bos: Option<u32>,
    pub chat_template: Option<ChatTemplate>,
}

/// One sequence to score: log p(targets[i] | context + targets[..i]).
#[derive(Debug, Clone, Copy)]
pub struct ScoreRequest<'a> {
    pub context: &'a [u32],
    pub targets: &'a [u32],
}

/// Requests whose contexts all begin with the same `shared` tokens (a passage
/// scored with several questions, a prompt with several answers): see
/// [`CausalLm::score_groups`]. `shared` must be shorter than every context.
#[derive(Debug, Clone)]
pub struct ScoreGroup<'a> {
    pub shared: usize,
    pub reqs: Vec<ScoreRequest<'a>>,
}

impl CausalLm {
    pub(crate) fn finish(parts: Parts) -> Self {
        let Parts {
            config,
            embed,
            layers,
            norm,
            head,
            tokenizer,
            model_hash,
            eos,
            bos,
            chat_template,
        } = parts;
        let positions = config.context.min(32_768);
        let rope_global = Rope::new(
            config.rope_base,
            &config.rope_scaling,
            config.head_dim,
            positions,
        );
        let rope_local = config
            .rope_local_base
            .map(|b| Rope::new(b, &RopeScaling::None, config.head_dim, positions));
        CausalLm {
            config,
            embed,
            layers,
            norm,
            head,
            tokenizer,
            model_hash,
            eos,
            bos,
            chat_template,
            rope_global,
            rope_local,
            positions,
        }
    }

    /// Rounds every f32 weight matrix (and a tied LM head) to bf16 for the bf16 GEMM
    /// (AMX tiles or AVX512_BF16): faster prefill, half the weight memory, and NLLs
    /// within a few hundredths of a nat of f32 (see BENCHMARKS.md). `model_hash` gets a
    /// `+bf16` suffix, so label and answer caches never mix the two precisions.
    /// Errors when the CPU has neither; quantised weights stay as they are.
    pub fn to_bf16(&mut self) -> Result<()> {
        if bf16::backend().is_none() {
            return Err(Error::NoBf16);
        }
        if self.model_hash.ends_with("+bf16") {
            return Ok(());
        }
        let pack = |w: &mut Weight| {
            if let Weight::F32 { w: m, out, inp } = w {
                let mat = Mat {
                    data: m,
                    rs: *out,
                    cs: 1,
                };
                *w = Weight::Bf16(PackedB::new(mat, *inp, *out));
            }
        };
        for l in &mut self.layers {
            l.qkv.parts.iter_mut().for_each(pack);
            l.gate_up.parts.iter_mut().for_each(pack);
            pack(&mut l.o);
            pack(&mut l.down);
        }
        match &mut self.head {
            Some(w) => pack(w),
            None => {
                let (h, vocab) = (self.config.hidden, self.config.vocab);
                let mat = Mat {
                    data: &self.embed,
                    rs: 1,
                    cs: h,
                };
                self.head = Some(Weight::Bf16(PackedB::new(mat, h, vocab)));
            }
        }
        self.model_hash.push_str("+bf16");
        Ok(())
    }

    /// The longest sequence (context and targets) the model takes.
    pub fn max_tokens(&self) -> usize {
        self.positions
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache {
            k: vec![Vec::new(); self.config.layers],
            v: vec![Vec::new(); self.config.layers],
            len: 0,
        }
    }

    /// Token ids of `text`; special tokens written in the text (`<|im_start|>`) are
    /// recognised, no BOS/EOS is added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Tokenizer {
                message: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of a prompt that begins a sequence: [`CausalLm::encode`] with the
    /// model's BOS token in front where it uses one and the text (a chat template that
    /// writes `<bos>` itself) does not already start with it.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let ids = self.encode(text)?;
        Ok(match self.bos {
            Some(b) if ids.first() != Some(&b) => std::iter::once(b).chain(ids).collect(),
            _ => ids,
        })
    }

    /// `text` cut to its first `budget` tokens (unchanged when it fits).
    pub fn truncate(&self, text: &str, budget: usize) -> Result<String> {
        let ids = self.encode(text)?;
        if ids.len() <= budget {
            Ok(text.to_string())
        } else {
            self.decode(&ids[..budget])
        }
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| Error::Tokenizer {
                message: e.to_string(),
            })
    }

    /// The rotary table of layer `li`.
    fn rope_of(&self, li: usize) -> &Rope {
        match (&self.rope_local, self.config.sliding_layers.get(li)) {
            (Some(local), Some(true)) => local,
            _ => &self.rope_global,
        }
    }

    fn rope(&self, table: &Rope, x: &mut [f32], heads: usize, pos: usize) {
        let hd = self.config.head_dim;
        let half = hd / 2;
        let (c, s) = (
            &table.cos[pos * half..(pos + 1) * half],
            &table.sin[pos * half..(pos + 1) * half],
        );
        for h in x.chunks_mut(hd).take(heads) {
            match self.config.rope {
                RopeStyle::Interleaved => {
                    for i in 0..half {
                        let (a, b) = (h[2 * i], h[2 * i + 1]);
                        h[2 * i] = a * c[i] - b * s[i];
                        h[2 * i + 1] = a * s[i] + b * c[i];
                    }
                }
                RopeStyle::Halves => {
                    for i in 0..half {
                        let (a, b) = (h[i], h[i + half]);
                        h[i] = a * c[i] - b * s[i];
                        h[i + half] = a * s[i] + b * c[i];
                    }
                }
            }
        }
    }

    /// One layer's attention for the new tokens of every sequence (their q, k, v in
    /// `qkv`, rows from `starts[i]`; k and v already appended to the caches): one task
    /// per (sequence, head), causal over cache and new tokens, within `window` when
    /// the layer slides. Returns the context rows `[total, heads * head_dim]`.
    fn attend(
        &self,
        li: usize,
        qkv: &[f32],
        starts: &[usize],
        tokens: &[&[u32]],
        caches: &[KvCache],
        window: Option<usize>,
    ) -> Vec<f32> {
        let c = &self.config;
        let hd = c.head_dim;
        let (qd, kvd) = (c.heads * hd, c.kv_heads * hd);
        let qkv_w = qd + 2 * kvd;
        let group = c.heads / c.kv_heads;
        let scale = c.attn_scale;
        let total: usize = tokens.iter().map(|t| t.len()).sum();
        // Attention, one task per (sequence, head): causal over cache + new tokens.
        let tasks: Vec<(usize, usize)> = (0..tokens.len())
            .flat_map(|s| (0..c.heads).map(move |hh| (s, hh)))
            .collect();
        let outs: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|&(si, hh)| {
                let n = tokens[si].len();
                let past = caches[si].len;
                let keys = past + n;
                let g = hh / group;
                let mut p = vec![0f32; n * keys];
                let q = Mat {
                    data: &qkv[starts[si] * qkv_w + hh * hd..],
                    rs: qkv_w,
                    cs: 1,
                };
                let kt = Mat {
                    data: &caches[si].k[li][g * hd..],
                    rs: 1,
                    cs: kvd,
                };
                sgemm(n, keys, hd, q, kt, &mut p, keys, false, 1);
                for (r, row) in p.chunks_mut(keys).enumerate() {
                    let visible = past + r + 1;
                    let first = window.map_or(0, |w| visible.saturating_sub(w));
                    softmax_rows(&mut row[first..visible], visible - first, scale);
                    row[..first].fill(0.0);
                    row[visible..].fill(0.0);
                }
                let mut o = vec![0f32; n * hd];
                let v = Mat {
                    data: &caches[si].v[li][g * hd..],
                    rs: kvd,
                    cs: 1,
                };
                sgemm(
                    n,
                    hd,
                    keys,
                    Mat {
                        data: &p,
                        rs: keys,
                        cs: 1,
                    },
                    v,
                    &mut o,
                    hd,
                    false,
                    1,
                );
                o
            })
            .collect();
        let mut ctx = vec![0f32; total * qd];
        for (&(si, hh), o) in tasks.iter().zip(outs) {
            for (r, src) in o.chunks(hd).enumerate() {
                let d = (starts[si] + r) * qd + hh * hd;
                ctx[d..d + hd].copy_from_slice(src);
            }
        }
        ctx
    }

    /// The embeddings of every new token, sequence after sequence, `[total, hidden]`
    /// (scaled where the family scales them, as Gemma does by sqrt(hidden)).
    fn embed_tokens(&self, tokens: &[&[u32]], total: usize) -> Result<Vec<f32>> {
        let c = &self.config;
        let h = c.hidden;
        let mut x = vec![0f32; total * h];
        for (row, &id) in x.chunks_mut(h).zip(tokens.iter().flat_map(|t| t.iter())) {
            let id = id as usize;
            if id >= c.vocab {
                return Err(Error::Input {
                    message: format!("token id {id} outside the vocabulary"),
                });
            }
            row.copy_from_slice(&self.embed[id * h..(id + 1) * h]);
            if c.embed_scale != 1.0 {
                row.iter_mut().for_each(|v| *v *= c.embed_scale);
            }
        }
        Ok(x)
    }

    /// Runs new tokens through the model, appending to each sequence's cache, and
    /// returns the final hidden states (after the last norm), `[sum of lens, hidden]`.
    pub fn forward(&self, caches: &mut [KvCache], tokens: &[&[u32]]) -> Result<Vec<f32>> {
        let c = &self.config;
        if caches.len() != tokens.len() {
            return Err(Error::Input {
                message: "one cache per sequence".into(),
            });
        }
        let (h, hd) = (c.hidden, c.head_dim);
        let (qd, kvd) = (c.heads * hd, c.kv_heads * hd);
        let qkv_w = qd + 2 * kvd;
        let mut starts = Vec::with_capacity(tokens.len());
        let mut total = 0;
        for (cache, t) in caches.iter().zip(tokens) {
            if cache.len + t.len() > self.positions {
                return Err(Error::Input {
                    message: format!(
                        "sequence of {} tokens exceeds the context",
                        cache.len + t.len()
                    ),
                });
            }
            starts.push(total);
            total += t.len();
        }
        let mut x = self.embed_tokens(tokens, total)?;
        let mut xn = vec![0f32; total * h];
        for (li, layer) in self.layers.iter().enumerate() {
            let table = self.rope_of(li);
            let window = match c.sliding_layers.get(li) {
                Some(true) => c.sliding_window,
                _ => None,
            };
            xn.par_chunks_mut(h * 8)
                .zip(x.par_chunks(h * 8))
                .for_each(|(o, i)| rms_norm_rows(o, i, &layer.attn_norm, c.rms_eps));
            let mut qkv = layer.qkv.apply(&xn, total)?;
            // Per-head q/k norms, then rotary embeddings at each token's absolute position.
            for (si, t) in tokens.iter().enumerate() {
                let off = caches[si].len;
                qkv[starts[si] * qkv_w..(starts[si] + t.len()) * qkv_w]
                    .par_chunks_mut(qkv_w)
                    .enumerate()
                    .for_each(|(r, row)| {
                        let (q, k) = row.split_at_mut(qd);
                        let k = &mut k[..kvd];
                        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                            norm_in_place(q, qn, c.rms_eps);
                            norm_in_place(k, kn, c.rms_eps);
                        }
                        self.rope(table, q, c.heads, off + r);
                        self.rope(table, k, c.kv_heads, off + r);
                    });
            }
            for (si, t) in tokens.iter().enumerate() {
                let cache = &mut caches[si];
                for r in 0..t.len() {
                    let row = &qkv[(starts[si] + r) * qkv_w..(starts[si] + r + 1) * qkv_w];
                    cache.k[li].extend_from_slice(&row[qd..qd + kvd]);
                    cache.v[li].extend_from_slice(&row[qd + kvd..]);
                }
            }
            let ctx = self.attend(li, &qkv, &starts, tokens, caches, window);
            residual_add(&layer.o, &ctx, total, &mut x, &layer.post_attn_norm, c)?;
            xn.par_chunks_mut(h * 8)
                .zip(x.par_chunks(h * 8))
                .for_each(|(o, i)| rms_norm_rows(o, i, &layer.ffn_norm, c.rms_eps));
            let gu = layer.gate_up.apply(&xn, total)?;
            let mut act = vec![0f32; total * c.ffn];
            act.par_chunks_mut(c.ffn * 8)
                .zip(gu.par_chunks(2 * c.ffn * 8))
                .for_each(|(o, g)| match c.act {
                    Act::Silu => silu_mul_rows(o, g, c.ffn),
                    Act::GeluTanh => gelu_tanh_mul_rows(o, g, c.ffn),
                });
            residual_add(&layer.down, &act, total, &mut x, &layer.post_ffn_norm, c)?;
        }
        for (cache, t) in caches.iter_mut().zip(tokens) {
            cache.len += t.len();
        }
        xn.par_chunks_mut(h * 8)
            .zip(x.par_chunks(h * 8))
            .for_each(|(o, i)| rms_norm_rows(o, i, &self.norm, c.rms_eps));
        Ok(xn)
    }

    /// Log-softmax over the vocabulary for hidden rows `[n, hidden]` -> `[n, vocab]`.
    pub fn log_probs(&self, hidden: &[f32]) -> Result<Vec<f32>> {
        let (h, vocab) = (self.config.hidden, self.config.vocab);
        let n = hidden.len() / h;
        let mut logits = vec![0f32; n * vocab];
        match &self.head {
            Some(w) => w.apply(hidden, n, &mut logits, vocab, false)?,
            None => sgemm(
                n,
                vocab,
                h,
                Mat {
                    data: hidden,
                    rs: h,
                    cs: 1,
                },
                Mat {
                    data: &self.embed,
                    rs: 1,
                    cs: h,
                },
                &mut logits,
                vocab,
                false,
                rayon::current_num_threads(),
            ),
        }
        logits
            .par_chunks_mut(vocab)
            .for_each(|r| log_softmax_rows(r, vocab));
        Ok(logits)
    }

    /// Scores a batch in one packed forward pass: for each request, the log-probability
    /// of every target token given the context and the targets before it.
    pub fn score(&self, reqs: &[ScoreRequest]) -> Result<Vec<Vec<f32>>> {
        let group = ScoreGroup {
            shared: 0,
            reqs: reqs.to_vec(),
        };
        Ok(self.score_groups(std::slice::from_ref(&group))?.remove(0))
    }

    /// Scores groups of requests whose contexts begin with the same `shared` tokens:
    /// that prefix runs once per group (one packed pass over every group's prefix),
    /// and each request continues from a copy of its group's KV cache (a second packed
    /// pass over everything after the prefixes). Values equal [`CausalLm::score`] on
    /// the same requests up to float summation order: a token sees the same keys at
    /// the same positions either way. Output: per group, per request, as `score`.
    pub fn score_groups(&self, groups: &[ScoreGroup]) -> Result<Vec<Vec<Vec<f32>>>> {
        for g in groups {
            let Some(first) = g.reqs.first() else {
                continue;
            };
            for r in &g.reqs {
                if r.context.is_empty() || r.targets.is_empty() {
                    return Err(Error::Input {
                        message: "scoring needs a non-empty context and target".into(),
                    });
                }
                // The token before the first target must be computed after the prefix.
                if g.shared >= r.context.len() || r.context[..g.shared] != first.context[..g.shared]
                {
                    return Err(Error::Input {
                        message: format!(
                            "a group's {} shared tokens must begin every context and leave one of it",
                            g.shared
                        ),
                    });
                }
            }
        }
        // A prefix is worth its own pass only when two or more requests read it.
        let shared = |g: &ScoreGroup| if g.reqs.len() >= 2 { g.shared } else { 0 };
        let prefixed: Vec<usize> = (0..groups.len())
            .filter(|&gi| shared(&groups[gi]) > 0)
            .collect();
        let prefixes: Vec<&[u32]> = prefixed
            .iter()
            .map(|&gi| &groups[gi].reqs[0].context[..groups[gi].shared])
            .collect();
        let mut prefix_caches: Vec<KvCache> = prefixes.iter().map(|_| self.new_cache()).collect();
        if !prefixes.is_empty() {
            self.forward(&mut prefix_caches, &prefixes)?;
        }
        let mut caches = Vec::new();
        let mut seqs: Vec<Vec<u32>> = Vec::new();
        let mut firsts = Vec::new(); // per sequence: its row that predicts targets[0]
        let mut start = 0;
        let mut next_prefix = 0;
        for g in groups {
            let s = shared(g);
            let cache = if s > 0 {
                next_prefix += 1;
                &prefix_caches[next_prefix - 1]
            } else {
                &KvCache::default()
            };
            for r in &g.reqs {
                caches.push(if s > 0 {
                    cache.clone()
                } else {
                    self.new_cache()
                });
                let seq = [&r.context[s..], &r.targets[..r.targets.len() - 1]].concat();
                firsts.push(start + r.context.len() - s - 1);
                start += seq.len();
                seqs.push(seq);
            }
        }
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let hidden = self.forward(&mut caches, &refs)?;
        // Rows that predict targets: the last context token's row to the sequence's end.
        let h = self.config.hidden;
        let mut rows = Vec::new();
        let mut end = 0;
        for (s, &first) in seqs.iter().zip(&firsts) {
            end += s.len();
            rows.extend_from_slice(&hidden[first * h..end * h]);
        }
        let lp = self.log_probs(&rows)?;
        let vocab = self.config.vocab;
        let mut out = Vec::with_capacity(groups.len());
        let mut row = 0;
        for g in groups {
            let mut per = Vec::with_capacity(g.reqs.len());
            for r in &g.reqs {
                per.push(
                    r.targets
                        .iter()
                        .enumerate()
                        .map(|(i, &t)| lp[(row + i) * vocab + t as usize])
                        .collect(),
                );
                row += r.targets.len();
            }
            out.push(per);
        }
        Ok(out)
    }

    /// Scores one target by feeding it token by token through the KV cache (slow;
    /// the reference that [`CausalLm::score`] is tested against).
    pub fn score_incremental(&self, context: &[u32], targets: &[u32]) -> Result<Vec<f32>> {
        let mut cache = self.new_cache();
        let h = self.config.hidden;
        let hidden = self.forward(std::slice::from_mut(&mut cache), &[context])?;
        let mut last = hidden[hidden.len() - h..].to_vec();
        let mut out = Vec::new();
        for &t in targets {
            let lp = self.log_probs(&last)?;
            out.push(lp[t as usize]);
            last = self.forward(std::slice::from_mut(&mut cache), &[&[t]])?;
        }
        Ok(out)
    }

    /// Runs fresh sequences in one packed pass; returns their caches and the final
    /// hidden row of each (`[prompts, hidden]`: what predicts the next token).
    pub fn prefill(&self, prompts: &[&[u32]]) -> Result<(Vec<KvCache>, Vec<f32>)> {
        let h = self.config.hidden;
        let mut caches: Vec<KvCache> = prompts.iter().map(|_| self.new_cache()).collect();
        let hidden = self.forward(&mut caches, prompts)?;
        let mut rows = Vec::with_capacity(prompts.len() * h);
        let mut end = 0;
        for p in prompts {
            end += p.len();
            rows.extend_from_slice(&hidden[(end - 1) * h..end * h]);
        }
        Ok((caches, rows))
    }

    /// Greedy decoding of several prompts at once: one packed prefill, then one
    /// forward pass per step over every sequence still running (weights are read
    /// once per step for the whole batch). Each output equals [`CausalLm::generate`]
    /// on its prompt alone, up to float summation order.
    pub fn generate_batch(&self, prompts: &[&[u32]], max_new: usize) -> Result<Vec<Vec<u32>>> {
        no_empty(prompts)?;
        let (caches, rows) = self.prefill(prompts)?;
        self.decode_greedy(caches, rows, max_new)
    }

    /// [`CausalLm::generate_batch`] for prompts that share leading tokens (the same
    /// passages first, a different number after them, or a different question):
    /// prompts are grouped by shared prefix (at least [`MIN_SHARED_TOKENS`]), the
    /// longest of each group is prefilled once, and every other member starts from
    /// a copy of its cache cut to the tokens they share, running only the rest.
    /// Each output equals [`CausalLm::generate`] on its prompt alone, up to float
    /// summation order.
    pub fn generate_shared(&self, prompts: &[&[u32]], max_new: usize) -> Result<Vec<Vec<u32>>> {
        no_empty(prompts)?;
        // Groups of neighbours in token order; the root is a group's longest prompt.
        let mut order: Vec<usize> = (0..prompts.len()).collect();
        order.sort_by(|&a, &b| prompts[a].cmp(prompts[b]));
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for &i in &order {
            match groups.last_mut() {
                Some(g)
                    if common_prefix(prompts[g[g.len() - 1]], prompts[i]) >= MIN_SHARED_TOKENS =>
                {
                    g.push(i)
                }
                _ => groups.push(vec![i]),
            }
        }
        let roots: Vec<usize> = groups
            .iter()
            .map(|g| {
                *g.iter()
                    .max_by_key(|&&i| (prompts[i].len(), std::cmp::Reverse(i)))
                    .expect("groups are not empty; this is a bug")
            })
            .collect();
        let root_tokens: Vec<&[u32]> = roots.iter().map(|&r| prompts[r]).collect();
        let (root_caches, root_rows) = self.prefill(&root_tokens)?;
        let h = self.config.hidden;
        let mut caches: Vec<KvCache> = vec![KvCache::default(); prompts.len()];
        let mut rows = vec![0f32; prompts.len() * h];
        // Members: a copy of the root's cache cut to what they share (at least one
        // token of their own is left to run, for the row that predicts the next).
        let (mut members, mut member_caches, mut suffixes) = (Vec::new(), Vec::new(), Vec::new());
        for (gi, g) in groups.iter().enumerate() {
            let root = roots[gi];
            for &i in g {
                if prompts[i] == prompts[root] {
                    caches[i] = root_caches[gi].clone();
                    rows[i * h..(i + 1) * h].copy_from_slice(&root_rows[gi * h..(gi + 1) * h]);
                    continue;
                }
                let shared = common_prefix(prompts[i], prompts[root]).min(prompts[i].len() - 1);
                let mut c = root_caches[gi].clone();
                c.truncate(shared);
                members.push(i);
                member_caches.push(c);
                suffixes.push(&prompts[i][shared..]);
            }
        }
        if !members.is_empty() {
            let hidden = self.forward(&mut member_caches, &suffixes)?;
            let mut end = 0;
            for ((&i, c), s) in members.iter().zip(member_caches).zip(&suffixes) {
                end += s.len();
                rows[i * h..(i + 1) * h].copy_from_slice(&hidden[(end - 1) * h..end * h]);
                caches[i] = c;
            }
        }
        self.decode_greedy(caches, rows, max_new)
    }

    /// Greedy decoding from prefilled sequences: `rows[i]` (`[sequences, hidden]`)
    /// predicts sequence `i`'s next token after `caches[i]`.
    fn decode_greedy(
        &self,
        mut caches: Vec<KvCache>,
        mut rows: Vec<f32>,
        max_new: usize,
    ) -> Result<Vec<Vec<u32>>> {
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); caches.len()];
        let mut active: Vec<usize> = (0..caches.len()).collect();
        for _ in 0..max_new {
            if active.is_empty() {
                break;
            }
            let lp = self.log_probs(&rows)?;
            let vocab = self.config.vocab;
            let mut next_active = Vec::with_capacity(active.len());
            let mut next_tokens = Vec::with_capacity(active.len());
            for (r, &i) in active.iter().enumerate() {
                let t = argmax(&lp[r * vocab..(r + 1) * vocab]);
                if !self.eos.contains(&t) {
                    out[i].push(t);
                    next_active.push(i);
                    next_tokens.push([t]);
                }
            }
            active = next_active;
            if active.is_empty() || out[active[0]].len() >= max_new {
                break;
            }
            let mut step_caches: Vec<KvCache> = active
                .iter()
                .map(|&i| std::mem::take(&mut caches[i]))
                .collect();
            let toks: Vec<&[u32]> = next_tokens.iter().map(|t| t.as_slice()).collect();
            rows = self.forward(&mut step_caches, &toks)?;
            for (&i, c) in active.iter().zip(step_caches) {
                caches[i] = c;
            }
        }
        Ok(out)
    }

    /// Greedy decoding with the KV cache: up to `max_new` tokens, stopping at EOS.
    pub fn generate(&self, prompt: &[u32], max_new: usize) -> Result<Vec<u32>> {
        no_empty(&[prompt])?;
        let mut cache = self.new_cache();
        let h = self.config.hidden;
        let mut hidden = self.forward(std::slice::from_mut(&mut cache), &[prompt])?;
        let mut out = Vec::new();
        for _ in 0..max_new {
            let lp = self.log_probs(&hidden[hidden.len() - h..])?;
            let next = argmax(&lp);
            if self.eos.contains(&next) {
                break;
            }
            out.push(next);
            hidden = self.forward(std::slice::from_mut(&mut cache), &[&[next]])?;
        }
        Ok(out)
    }
}

/// `x += W(input)`, or `x += norm(W(input))` where the layer normalises its output
/// before the residual add (Gemma's post-attention and post-feed-forward norms).
fn residual_add(
    w: &Weight,
    input: &[f32],
    n: usize,
    x: &mut [f32],
    post_norm: &Option<Vec<f32>>,
    c: &LmConfig,
) -> Result<()> {
    let h = c.hidden;
    let Some(nw) = post_norm else {
        return w.apply(input, n, x, h, true);
    };
    let mut y = vec![0f32; n * h];
    w.apply(input, n, &mut y, h, false)?;
    let mut yn = vec![0f32; n * h];
    yn.par_chunks_mut(h * 8)
        .zip(y.par_chunks(h * 8))
        .for_each(|(o, i)| rms_norm_rows(o, i, nw, c.rms_eps));
    x.par_chunks_mut(h * 8)
        .zip(yn.par_chunks(h * 8))
        .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, s)| *d += s));
    Ok(())
}

/// RMSNorm of each `w.len()`-wide head of `x`, in place (q/k norms).
fn norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let src = x.to_vec();
    rms_norm_rows(x, &src, w, eps);
}

/// Index of the largest value; the first one on ties (greedy decoding).
fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |b, (i, &x)| {
            if x > b.1 {
                (i, x)
            } else {
                b
            }
        })
        .0 as u32
}
