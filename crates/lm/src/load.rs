//! Loading weights and configuration from GGUF files and HF safetensors folders.

use crate::tokenizer::from_gguf;
use crate::{
    Act, CausalLm, ChatTemplate, Error, Family, Group, Layer, LmConfig, Parts, Result, RopeScaling,
    RopeStyle, Weight,
};
use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where a model comes from, and whether GGUF weights stay quantised.
#[derive(Debug, Clone)]
pub struct LmSource {
    /// A `.gguf` file, or a folder with one `.gguf`, or a HF folder with
    /// `config.json`, `*.safetensors` and `tokenizer.json`.
    pub path: PathBuf,
    /// Keep GGUF weights quantised (slower on CPU for prefill; less memory).
    pub quantized: bool,
}

/// How a local LLM's weights are held. With the `cli` feature these are the
/// `--quantized` and `--bf16` flags of every command that loads one (`uae label`,
/// `uae bench label`, `uae bench qasper`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct LmPrecision {
    /// Local LLM only: keep GGUF weights quantised (less memory, ~20x slower prefill
    /// on CPU).
    #[cfg_attr(feature = "cli", arg(long, conflicts_with = "bf16"))]
    pub quantized: bool,
    /// Local LLM only: round the weights to bf16 and multiply on AMX tiles (Intel
    /// Sapphire Rapids or later) or with AVX512_BF16 (AMD Zen 4 or later, Intel
    /// Cooper Lake or later), whichever the CPU has: faster scoring, NLL within 0.02
    /// nats of f32 on the fixtures; an error on a CPU with neither. Labels and caches
    /// are keyed apart from f32 ones.
    #[cfg_attr(feature = "cli", arg(long))]
    pub bf16: bool,
}

impl LmSource {
    /// The model at `path`, held as `precision` says, loaded.
    pub fn open(path: &Path, precision: LmPrecision) -> Result<CausalLm> {
        LmSource {
            path: path.to_path_buf(),
            quantized: precision.quantized,
        }
        .load(precision.bf16)
    }
}

/// sha256 of a file, hex.
pub fn file_sha256(path: &Path) -> Result<String> {
    uae_core::hash::file_sha256(path).map_err(|e| Error::Load {
        path: path.to_path_buf(),
        message: match e {
            uae_core::Error::Io { source, .. } => source.to_string(),
            other => other.to_string(),
        },
    })
}

impl LmSource {
    /// Loads the model; with `bf16`, its weights are rounded to bf16 for the bf16
    /// GEMM (an error on CPUs with neither AMX nor AVX512_BF16).
    pub fn load(&self, bf16: bool) -> Result<CausalLm> {
        let mut lm = CausalLm::load(self)?;
        if bf16 {
            lm.to_bf16()?;
        }
        Ok(lm)
    }
}

/// `[out, in]` weights become a transposed f32 [`Weight`].
fn dense(t: &Tensor) -> Result<Weight> {
    let (out, inp) = t.dims2()?;
    Ok(Weight::F32 {
        w: flat(&t.t()?.contiguous()?)?,
        out,
        inp,
    })
}

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

impl CausalLm {
    pub fn load(src: &LmSource) -> Result<Self> {
        let p = &src.path;
        if p.is_file() {
            return load_gguf(p, src.quantized);
        }
        if !p.is_dir() {
            return Err(Error::Load {
                path: p.clone(),
                message: "no such model file or folder".into(),
            });
        }
        if p.join("config.json").is_file() {
            return load_hf(p);
        }
        let ggufs: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| Error::Load {
                path: p.clone(),
                message: e.to_string(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.extension().is_some_and(|x| x == "gguf"))
            .collect();
        match ggufs.as_slice() {
            [one] => load_gguf(one, src.quantized),
            [] => Err(Error::Load {
                path: p.clone(),
                message: "folder has neither a .gguf file nor config.json".into(),
            }),
            _ => Err(Error::Load {
                path: p.clone(),
                message: "folder has several .gguf files; name one".into(),
            }),
        }
    }
}

/// Reads a GGUF file's hyper-parameters, weights and tokenizer. Names and
/// conventions follow llama.cpp's converter (`convert_hf_to_gguf.py`): llama q/k
/// permuted for interleaved rotation, Gemma norms stored as `1 + w`, Llama 3's
/// rotary scaling as `rope_freqs.weight`.
/// Reads a GGUF file's tensors by name.
struct GgufReader<'a> {
    f: std::fs::File,
    content: &'a gguf_file::Content,
    path: &'a Path,
    /// Keep projection weights quantised.
    quantized: bool,
}

impl GgufReader<'_> {
    fn tensor(&mut self, name: &str) -> Result<candle_core::quantized::QTensor> {
        self.content
            .tensor(&mut self.f, name, &Device::Cpu)
            .map_err(|_| Error::MissingTensor {
                path: self.path.to_path_buf(),
                name: name.into(),
            })
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// A projection, dequantised to f32 unless `quantized`.
    fn weight(&mut self, name: &str) -> Result<Weight> {
        let q = self.tensor(name)?;
        let (out, inp) = q.shape().dims2()?;
        if self.quantized {
            Ok(Weight::Quant {
                q: QMatMul::from_qtensor(q)?,
                out,
                inp,
            })
        } else {
            dense(&q.dequantize(&Device::Cpu)?)
        }
    }

    fn vecf(&mut self, name: &str) -> Result<Vec<f32>> {
        flat(&self.tensor(name)?.dequantize(&Device::Cpu)?)
    }

    fn opt(&mut self, name: &str, on: bool) -> Result<Option<Vec<f32>>> {
        if on {
            self.vecf(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Layer `l` (llama.cpp's `blk.{l}.*` names).
    fn layer(&mut self, l: usize, family: Family, config: &LmConfig) -> Result<Layer> {
        let n = |s: &str| format!("blk.{l}.{s}");
        let bias = if family == Family::Qwen2 {
            let mut b = self.vecf(&n("attn_q.bias"))?;
            b.extend(self.vecf(&n("attn_k.bias"))?);
            b.extend(self.vecf(&n("attn_v.bias"))?);
            Some(b)
        } else {
            None
        };
        let qkv = group(
            vec![
                self.weight(&n("attn_q.weight"))?,
                self.weight(&n("attn_k.weight"))?,
                self.weight(&n("attn_v.weight"))?,
            ],
            bias,
        );
        let gate_up = group(
            vec![
                self.weight(&n("ffn_gate.weight"))?,
                self.weight(&n("ffn_up.weight"))?,
            ],
            None,
        );
        let gemma = family.gemma_style();
        Ok(Layer {
            attn_norm: self.vecf(&n("attn_norm.weight"))?,
            qkv,
            q_norm: self.opt(&n("attn_q_norm.weight"), config.qk_norm)?,
            k_norm: self.opt(&n("attn_k_norm.weight"), config.qk_norm)?,
            o: self.weight(&n("attn_output.weight"))?,
            post_attn_norm: self.opt(&n("post_attention_norm.weight"), gemma)?,
            ffn_norm: self.vecf(&n("ffn_norm.weight"))?,
            gate_up,
            down: self.weight(&n("ffn_down.weight"))?,
            post_ffn_norm: self.opt(&n("post_ffw_norm.weight"), gemma)?,
        })
    }
}

fn load_gguf(path: &Path, quantized: bool) -> Result<CausalLm> {
    let err = |message: String| Error::Load {
        path: path.to_path_buf(),
        message,
    };
    let mut f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let content = gguf_file::Content::read(&mut f)
        .map_err(|e| err(format!("not a readable GGUF file: {e}")))?;
    let md = &content.metadata;
    let arch = md
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| err("no general.architecture".into()))?;
    let family = Family::parse(&arch).ok_or_else(|| Error::Unsupported {
        path: path.to_path_buf(),
        message: format!("architecture `{arch}` (supported: {})", Family::SUPPORTED),
    })?;
    let mut r = GgufReader {
        f,
        content: &content,
        path,
        quantized,
    };
    let embed_q = r.tensor("token_embd.weight")?;
    let vocab = embed_q.shape().dims()[0];
    let rope_factors = if r.has("rope_freqs.weight") {
        Some(r.vecf("rope_freqs.weight")?)
    } else {
        None
    };
    let config = gguf_config(md, &arch, family, vocab, rope_factors).map_err(|e| match e {
        Error::Input { message } => err(message),
        e => e,
    })?;
    let embed = flat(&embed_q.dequantize(&Device::Cpu)?)?;
    let layers = (0..config.layers)
        .map(|l| r.layer(l, family, &config))
        .collect::<Result<Vec<_>>>()?;
    let norm = r.vecf("output_norm.weight")?;
    let head = if r.has("output.weight") {
        Some(r.weight("output.weight")?)
    } else {
        None
    };
    let gguf_tok = from_gguf(md).map_err(|e| match e {
        Error::Tokenizer { message } => err(format!("tokenizer in GGUF metadata: {message}")),
        e => e,
    })?;
    let chat_template = match md
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
    {
        Some(src) => Some(
            ChatTemplate::new(src, &gguf_tok.bos_text, &gguf_tok.eos_text)
                .map_err(|e| err(format!("tokenizer.chat_template: {e}")))?,
        ),
        None => None,
    };
    let hash = file_sha256(path)?;
    Ok(CausalLm::finish(Parts {
        config,
        embed,
        layers,
        norm,
        head,
        tokenizer: gguf_tok.tokenizer,
        model_hash: hash,
        eos: gguf_tok.eos,
        bos: gguf_tok.bos,
        chat_template,
    }))
}

/// The hyper-parameters a GGUF file's metadata gives for `family` (`arch.*` keys),
/// with llama.cpp's fixed choices where the file says nothing (Gemma 3: every sixth
/// layer global, a local rotary base of 10,000, the head size as attention scale but
/// for 27B). `rope_factors`: the `rope_freqs.weight` divisors, where present.
fn gguf_config(
    md: &HashMap<String, gguf_file::Value>,
    arch: &str,
    family: Family,
    vocab: usize,
    rope_factors: Option<Vec<f32>>,
) -> Result<LmConfig> {
    let u = |k: &str| -> Result<usize> {
        md.get(&format!("{arch}.{k}"))
            .and_then(|v| {
                v.to_u32()
                    .ok()
                    .or_else(|| v.to_u64().ok().map(|x| x as u32))
            })
            .map(|v| v as usize)
            .ok_or_else(|| Error::Input {
                message: format!("missing metadata {arch}.{k}"),
            })
    };
    let fl = |k: &str| md.get(&format!("{arch}.{k}")).and_then(|v| v.to_f32().ok());
    let hidden = u("embedding_length")?;
    let heads = u("attention.head_count")?;
    let layers_n = u("block_count")?;
    let head_dim = u("attention.key_length").unwrap_or(hidden / heads.max(1));
    let gemma = family.gemma_style();
    let rope_scaling = match rope_factors {
        Some(v) => RopeScaling::Factors(v),
        None => match md
            .get(&format!("{arch}.rope.scaling.type"))
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
        {
            Some("linear") => RopeScaling::Linear(fl("rope.scaling.factor").unwrap_or(1.0)),
            _ => RopeScaling::None,
        },
    };
    let sliding_window = if gemma {
        u("attention.sliding_window").ok()
    } else {
        None
    };
    // llama.cpp's Gemma 3: every sixth layer global, the rest sliding (`set_swa_pattern(6)`).
    let sliding_layers = (0..layers_n)
        .map(|l| sliding_window.is_some() && l % 6 < 5)
        .collect();
    Ok(LmConfig {
        family,
        hidden,
        layers: layers_n,
        heads,
        kv_heads: u("attention.head_count_kv").unwrap_or(heads),
        head_dim,
        ffn: u("feed_forward_length")?,
        vocab,
        rope_base: fl("rope.freq_base").unwrap_or(10_000.0),
        rope_scaling,
        rms_eps: fl("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        context: u("context_length").unwrap_or(4096),
        // llama.cpp permutes q/k of the llama family (Mistral is written as llama).
        rope: if matches!(family, Family::Llama | Family::Mistral) {
            RopeStyle::Interleaved
        } else {
            RopeStyle::Halves
        },
        qk_norm: family.qk_norm(),
        post_norms: gemma,
        act: if gemma { Act::GeluTanh } else { Act::Silu },
        embed_scale: if gemma { (hidden as f32).sqrt() } else { 1.0 },
        // llama.cpp: Gemma 3 27B scales by hidden / heads, the others by the head size.
        attn_scale: if gemma && layers_n == 62 {
            1.0 / ((hidden / heads) as f32).sqrt()
        } else {
            1.0 / (head_dim as f32).sqrt()
        },
        sliding_window,
        sliding_layers,
        rope_local_base: if gemma { Some(10_000.0) } else { None },
    })
}

/// Stacks f32 weights side by side into one `[in, sum of outs]` matrix (one GEMM);
/// quantised ones stay separate.
fn group(parts: Vec<Weight>, bias: Option<Vec<f32>>) -> Group {
    let all_f32: Option<Vec<(&Vec<f32>, usize, usize)>> = parts
        .iter()
        .map(|p| match p {
            Weight::F32 { w, out, inp } => Some((w, *out, *inp)),
            Weight::Quant { .. } | Weight::Bf16(_) => None,
        })
        .collect();
    let Some(mats) = all_f32 else {
        return Group { parts, bias };
    };
    let inp = mats[0].2;
    let out: usize = mats.iter().map(|m| m.1).sum();
    let mut w = Vec::with_capacity(inp * out);
    for r in 0..inp {
        for (m, o, _) in &mats {
            w.extend_from_slice(&m[r * o..(r + 1) * o]);
        }
    }
    Group {
        parts: vec![Weight::F32 { w, out, inp }],
        bias,
    }
}

/// The parts of an HF `config.json` the families read. Rotary settings come in two
/// shapes: transformers 4 (`rope_theta`, `rope_scaling`, Gemma's
/// `rope_local_base_freq`) and transformers 5 (`rope_parameters`, per layer type for
/// Gemma); both are read.
#[derive(Deserialize)]
struct HfConfig {
    model_type: String,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f32,
    rope_theta: Option<f32>,
    rope_scaling: Option<serde_json::Value>,
    rope_parameters: Option<serde_json::Value>,
    rope_local_base_freq: Option<f32>,
    tie_word_embeddings: Option<bool>,
    #[serde(default = "default_ctx")]
    max_position_embeddings: usize,
    eos_token_id: Option<serde_json::Value>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    sliding_window_pattern: Option<usize>,
    layer_types: Option<Vec<String>>,
    query_pre_attn_scalar: Option<f32>,
    hidden_activation: Option<String>,
    hidden_act: Option<String>,
}

fn default_eps() -> f32 {
    1e-6
}
fn default_ctx() -> usize {
    4096
}

/// Rotary base and scaling from one HF rope dict (`rope_scaling` or `rope_parameters`).
fn hf_rope(v: Option<&serde_json::Value>, theta: Option<f32>) -> (f32, RopeScaling) {
    let num = |k: &str| {
        v.and_then(|v| v.get(k))
            .and_then(|x| x.as_f64())
            .map(|x| x as f32)
    };
    let base = num("rope_theta").or(theta).unwrap_or(10_000.0);
    let kind = v
        .and_then(|v| v.get("rope_type").or_else(|| v.get("type")))
        .and_then(|x| x.as_str())
        .unwrap_or("default");
    let scaling = match kind {
        "linear" => RopeScaling::Linear(num("factor").unwrap_or(1.0)),
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor").unwrap_or(1.0),
            low_freq_factor: num("low_freq_factor").unwrap_or(1.0),
            high_freq_factor: num("high_freq_factor").unwrap_or(4.0),
            original_context: num("original_max_position_embeddings").unwrap_or(8192.0),
        },
        _ => RopeScaling::None,
    };
    (base, scaling)
}

impl HfConfig {
    fn family(&self, path: &Path) -> Result<Family> {
        Family::parse(&self.model_type).ok_or_else(|| Error::Unsupported {
            path: path.to_path_buf(),
            message: format!(
                "model_type `{}` (supported: {})",
                self.model_type,
                Family::SUPPORTED
            ),
        })
    }

    fn config(&self, family: Family) -> Result<LmConfig> {
        let gemma = family.gemma_style();
        let heads = self.num_attention_heads;
        let head_dim = self.head_dim.unwrap_or(self.hidden_size / heads.max(1));
        let params = self.rope_parameters.as_ref();
        // transformers 5 keeps Gemma's two rotary settings under the layer types.
        let (global, local) = match params {
            Some(p) if p.get("full_attention").is_some() => {
                (p.get("full_attention"), p.get("sliding_attention"))
            }
            Some(p) => (Some(p), None),
            None => (self.rope_scaling.as_ref(), None),
        };
        let (rope_base, rope_scaling) = hf_rope(global, self.rope_theta);
        let rope_local_base = match local {
            Some(l) => Some(hf_rope(Some(l), None).0),
            None if gemma => Some(self.rope_local_base_freq.unwrap_or(10_000.0)),
            None => None,
        };
        let layers = self.num_hidden_layers;
        let window = match family {
            Family::Gemma3 | Family::Mistral => self.sliding_window,
            Family::Qwen2 | Family::Qwen3 if self.use_sliding_window == Some(true) => {
                self.sliding_window
            }
            _ => None,
        };
        let sliding_layers: Vec<bool> = match (&self.layer_types, window) {
            (_, None) => vec![false; layers],
            (Some(t), Some(_)) => t.iter().map(|k| k == "sliding_attention").collect(),
            (None, Some(_)) if gemma => {
                let p = self.sliding_window_pattern.unwrap_or(6).max(1);
                (0..layers).map(|l| (l + 1) % p != 0).collect()
            }
            (None, Some(_)) => vec![true; layers],
        };
        let act = match self
            .hidden_activation
            .as_deref()
            .or(self.hidden_act.as_deref())
        {
            Some("gelu_pytorch_tanh") | Some("gelu_tanh") => Act::GeluTanh,
            Some("silu") | None => Act::Silu,
            Some(other) => {
                return Err(Error::Input {
                    message: format!("activation `{other}` is not supported"),
                })
            }
        };
        Ok(LmConfig {
            family,
            hidden: self.hidden_size,
            layers,
            heads,
            kv_heads: self.num_key_value_heads.unwrap_or(heads),
            head_dim,
            ffn: self.intermediate_size,
            vocab: self.vocab_size,
            rope_base,
            rope_scaling,
            rms_eps: self.rms_norm_eps,
            context: self.max_position_embeddings,
            rope: RopeStyle::Halves,
            qk_norm: family.qk_norm(),
            post_norms: gemma,
            act,
            embed_scale: if gemma {
                (self.hidden_size as f32).sqrt()
            } else {
                1.0
            },
            attn_scale: 1.0 / self.query_pre_attn_scalar.unwrap_or(head_dim as f32).sqrt(),
            sliding_window: window,
            sliding_layers,
            rope_local_base,
        })
    }
}

/// Every `*.safetensors` of `dir`, by name, and a hash over their sha256s.
fn read_safetensors(dir: &Path) -> Result<(HashMap<String, Tensor>, String)> {
    let err = |path: &Path, message: String| Error::Load {
        path: path.to_path_buf(),
        message,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| err(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    if files.is_empty() {
        return Err(err(dir, "no .safetensors files".into()));
    }
    files.sort();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut hasher = Sha256::new();
    for f in &files {
        tensors.extend(
            candle_core::safetensors::load(f, &Device::Cpu).map_err(|e| err(f, e.to_string()))?,
        );
        hasher.update(file_sha256(f)?.as_bytes());
    }
    Ok((tensors, hex::encode(hasher.finalize())))
}

/// Reads an HF folder: `config.json`, `*.safetensors`, `tokenizer.json` and, where
/// present, `tokenizer_config.json` / `chat_template.jinja` for the chat template.
/// Names follow transformers' `*ForCausalLM` of each family; Gemma's norms are stored
/// as `w` and applied as `1 + w`.
/// An HF checkpoint's tensors, taken by name as the model is built.
struct HfTensors<'a> {
    tensors: HashMap<String, Tensor>,
    dir: &'a Path,
    /// Added to every norm weight (Gemma's RMSNorm multiplies by `1 + w`).
    shift: f32,
}

impl HfTensors<'_> {
    fn take(&mut self, name: &str) -> Result<Tensor> {
        self.tensors
            .remove(name)
            .ok_or_else(|| Error::MissingTensor {
                path: self.dir.to_path_buf(),
                name: name.into(),
            })
    }

    fn norm(&mut self, name: &str) -> Result<Vec<f32>> {
        let shift = self.shift;
        Ok(flat(&self.take(name)?)?
            .into_iter()
            .map(|v| v + shift)
            .collect())
    }

    fn weight(&mut self, name: &str) -> Result<Weight> {
        dense(&self.take(name)?)
    }

    /// Layer `l` (transformers' `model.layers.{l}.*` names).
    fn layer(&mut self, l: usize, family: Family, config: &LmConfig) -> Result<Layer> {
        let n = |s: &str| format!("model.layers.{l}.{s}");
        let bias = if family == Family::Qwen2 {
            let mut b = flat(&self.take(&n("self_attn.q_proj.bias"))?)?;
            b.extend(flat(&self.take(&n("self_attn.k_proj.bias"))?)?);
            b.extend(flat(&self.take(&n("self_attn.v_proj.bias"))?)?);
            Some(b)
        } else {
            None
        };
        let qkv = group(
            vec![
                self.weight(&n("self_attn.q_proj.weight"))?,
                self.weight(&n("self_attn.k_proj.weight"))?,
                self.weight(&n("self_attn.v_proj.weight"))?,
            ],
            bias,
        );
        let gate_up = group(
            vec![
                self.weight(&n("mlp.gate_proj.weight"))?,
                self.weight(&n("mlp.up_proj.weight"))?,
            ],
            None,
        );
        let (q_norm, k_norm) = if config.qk_norm {
            (
                Some(self.norm(&n("self_attn.q_norm.weight"))?),
                Some(self.norm(&n("self_attn.k_norm.weight"))?),
            )
        } else {
            (None, None)
        };
        // Gemma: input -> attention -> post_attention norm; pre_feedforward -> MLP ->
        // post_feedforward norm. The others: post_attention_layernorm is the MLP's input norm.
        let (post_attn_norm, ffn_norm, post_ffn_norm) = if family.gemma_style() {
            (
                Some(self.norm(&n("post_attention_layernorm.weight"))?),
                self.norm(&n("pre_feedforward_layernorm.weight"))?,
                Some(self.norm(&n("post_feedforward_layernorm.weight"))?),
            )
        } else {
            (
                None,
                self.norm(&n("post_attention_layernorm.weight"))?,
                None,
            )
        };
        Ok(Layer {
            attn_norm: self.norm(&n("input_layernorm.weight"))?,
            qkv,
            q_norm,
            k_norm,
            o: self.weight(&n("self_attn.o_proj.weight"))?,
            post_attn_norm,
            ffn_norm,
            gate_up,
            down: self.weight(&n("mlp.down_proj.weight"))?,
            post_ffn_norm,
        })
    }
}

fn load_hf(dir: &Path) -> Result<CausalLm> {
    let err = |path: &Path, message: String| Error::Load {
        path: path.to_path_buf(),
        message,
    };
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| err(&cfg_path, e.to_string()))?;
    let raw: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| err(&cfg_path, format!("invalid config: {e}")))?;
    if raw.get("text_config").is_some() {
        return Err(Error::Unsupported {
            path: cfg_path,
            message: "a multimodal checkpoint (it has a text_config): point --lm at its text-only model or a GGUF of it".into(),
        });
    }
    let hc: HfConfig =
        serde_json::from_value(raw).map_err(|e| err(&cfg_path, format!("invalid config: {e}")))?;
    let family = hc.family(&cfg_path)?;
    let gemma = family.gemma_style();
    let config = hc
        .config(family)
        .map_err(|e| err(&cfg_path, e.to_string()))?;
    let (tensors, model_hash) = read_safetensors(dir)?;
    // A checkpoint without `lm_head.weight` ties it whatever the config leaves unsaid.
    let tied = hc
        .tie_word_embeddings
        .unwrap_or(gemma || !tensors.contains_key("lm_head.weight"));
    let mut t = HfTensors {
        tensors,
        dir,
        // Gemma's RMSNorm multiplies by (1 + w).
        shift: if gemma { 1.0 } else { 0.0 },
    };
    let embed = flat(&t.take("model.embed_tokens.weight")?)?;
    let layers = (0..config.layers)
        .map(|l| t.layer(l, family, &config))
        .collect::<Result<Vec<_>>>()?;
    let final_norm = t.norm("model.norm.weight")?;
    let head = if tied {
        None
    } else {
        Some(t.weight("lm_head.weight")?)
    };
    let tok = crate::tokenizer::from_hf_folder(dir)?;
    let eos = match &hc.eos_token_id {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|v| vec![v as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u32)
            .collect(),
        _ => tok.eos,
    };
    Ok(CausalLm::finish(Parts {
        config,
        embed,
        layers,
        norm: final_norm,
        head,
        tokenizer: tok.tokenizer,
        model_hash,
        eos,
        bos: tok.bos,
        chat_template: tok.chat_template,
    }))
}
