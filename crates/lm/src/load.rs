//! Loading weights and configuration from GGUF files and HF safetensors folders.

use crate::tokenizer::{from_gguf, from_json};
use crate::{CausalLm, Error, Group, Layer, LmConfig, Parts, Result, RopeStyle, Weight};
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
    if arch != "llama" && arch != "qwen2" {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            message: format!("architecture `{arch}` (llama and qwen2 are supported)"),
        });
    }
    let u = |k: &str| -> Result<usize> {
        md.get(&format!("{arch}.{k}"))
            .and_then(|v| v.to_u32().ok())
            .map(|v| v as usize)
            .ok_or_else(|| err(format!("missing metadata {arch}.{k}")))
    };
    let fl = |k: &str, d: f32| {
        md.get(&format!("{arch}.{k}"))
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(d)
    };
    let hidden = u("embedding_length")?;
    let heads = u("attention.head_count")?;
    let tensor = |f: &mut std::fs::File, name: &str| {
        content
            .tensor(f, name, &Device::Cpu)
            .map_err(|_| Error::MissingTensor {
                path: path.to_path_buf(),
                name: name.into(),
            })
    };
    let embed_q = tensor(&mut f, "token_embd.weight")?;
    let vocab = embed_q.shape().dims()[0];
    let config = LmConfig {
        arch: arch.clone(),
        hidden,
        layers: u("block_count")?,
        heads,
        kv_heads: u("attention.head_count_kv").unwrap_or(heads),
        head_dim: hidden / heads,
        ffn: u("feed_forward_length")?,
        vocab,
        rope_base: fl("rope.freq_base", 10_000.0),
        rms_eps: fl("attention.layer_norm_rms_epsilon", 1e-5),
        context: u("context_length").unwrap_or(4096),
        rope: if arch == "llama" {
            RopeStyle::Interleaved
        } else {
            RopeStyle::Halves
        },
    };
    let embed = flat(&embed_q.dequantize(&Device::Cpu)?)?;
    let weight = |f: &mut std::fs::File, name: &str| -> Result<Weight> {
        let q = tensor(f, name)?;
        let (out, inp) = q.shape().dims2()?;
        if quantized {
            Ok(Weight::Quant {
                q: QMatMul::from_qtensor(q)?,
                out,
                inp,
            })
        } else {
            dense(&q.dequantize(&Device::Cpu)?)
        }
    };
    let vecf = |f: &mut std::fs::File, name: &str| -> Result<Vec<f32>> {
        flat(&tensor(f, name)?.dequantize(&Device::Cpu)?)
    };
    let mut layers = Vec::with_capacity(config.layers);
    for l in 0..config.layers {
        let n = |s: &str| format!("blk.{l}.{s}");
        let bias = if arch == "qwen2" {
            let mut b = vecf(&mut f, &n("attn_q.bias"))?;
            b.extend(vecf(&mut f, &n("attn_k.bias"))?);
            b.extend(vecf(&mut f, &n("attn_v.bias"))?);
            Some(b)
        } else {
            None
        };
        let qkv = group(
            vec![
                weight(&mut f, &n("attn_q.weight"))?,
                weight(&mut f, &n("attn_k.weight"))?,
                weight(&mut f, &n("attn_v.weight"))?,
            ],
            bias,
        );
        let gate_up = group(
            vec![
                weight(&mut f, &n("ffn_gate.weight"))?,
                weight(&mut f, &n("ffn_up.weight"))?,
            ],
            None,
        );
        layers.push(Layer {
            attn_norm: vecf(&mut f, &n("attn_norm.weight"))?,
            qkv,
            o: weight(&mut f, &n("attn_output.weight"))?,
            ffn_norm: vecf(&mut f, &n("ffn_norm.weight"))?,
            gate_up,
            down: weight(&mut f, &n("ffn_down.weight"))?,
        });
    }
    let norm = vecf(&mut f, "output_norm.weight")?;
    let head = if content.tensor_infos.contains_key("output.weight") {
        Some(weight(&mut f, "output.weight")?)
    } else {
        None
    };
    let (tokenizer, eos) = from_gguf(md).map_err(|e| match e {
        Error::Tokenizer { message } => err(format!("tokenizer in GGUF metadata: {message}")),
        e => e,
    })?;
    let hash = file_sha256(path)?;
    Ok(CausalLm::finish(Parts {
        config,
        embed,
        layers,
        norm,
        head,
        tokenizer,
        model_hash: hash,
        eos,
    }))
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
    #[serde(default = "default_theta")]
    rope_theta: f32,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default = "default_ctx")]
    max_position_embeddings: usize,
    eos_token_id: Option<serde_json::Value>,
}

fn default_eps() -> f32 {
    1e-6
}
fn default_theta() -> f32 {
    10_000.0
}
fn default_ctx() -> usize {
    4096
}

fn load_hf(dir: &Path) -> Result<CausalLm> {
    let err = |path: &Path, message: String| Error::Load {
        path: path.to_path_buf(),
        message,
    };
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| err(&cfg_path, e.to_string()))?;
    let hc: HfConfig =
        serde_json::from_str(&text).map_err(|e| err(&cfg_path, format!("invalid config: {e}")))?;
    if hc.model_type != "llama" && hc.model_type != "qwen2" {
        return Err(Error::Unsupported {
            path: cfg_path,
            message: format!(
                "model_type `{}` (llama and qwen2 are supported)",
                hc.model_type
            ),
        });
    }
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| err(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    if files.is_empty() {
        return Err(err(dir, "no .safetensors files".into()));
    }
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut hasher = Sha256::new();
    let mut sorted = files.clone();
    sorted.sort();
    for f in &sorted {
        tensors.extend(
            candle_core::safetensors::load(f, &Device::Cpu).map_err(|e| err(f, e.to_string()))?,
        );
        hasher.update(file_sha256(f)?.as_bytes());
    }
    let mut take = |name: &str| -> Result<Tensor> {
        tensors.remove(name).ok_or_else(|| Error::MissingTensor {
            path: dir.to_path_buf(),
            name: name.into(),
        })
    };
    let w = |t: Tensor| dense(&t);
    let heads = hc.num_attention_heads;
    let config = LmConfig {
        arch: hc.model_type.clone(),
        hidden: hc.hidden_size,
        layers: hc.num_hidden_layers,
        heads,
        kv_heads: hc.num_key_value_heads.unwrap_or(heads),
        head_dim: hc.head_dim.unwrap_or(hc.hidden_size / heads),
        ffn: hc.intermediate_size,
        vocab: hc.vocab_size,
        rope_base: hc.rope_theta,
        rms_eps: hc.rms_norm_eps,
        context: hc.max_position_embeddings,
        rope: RopeStyle::Halves,
    };
    let embed_t = take("model.embed_tokens.weight")?;
    let embed = flat(&embed_t)?;
    let mut layers = Vec::new();
    for l in 0..config.layers {
        let n = |s: &str| format!("model.layers.{l}.{s}");
        let bias = if hc.model_type == "qwen2" {
            let mut b = flat(&take(&n("self_attn.q_proj.bias"))?)?;
            b.extend(flat(&take(&n("self_attn.k_proj.bias"))?)?);
            b.extend(flat(&take(&n("self_attn.v_proj.bias"))?)?);
            Some(b)
        } else {
            None
        };
        let qkv = group(
            vec![
                w(take(&n("self_attn.q_proj.weight"))?)?,
                w(take(&n("self_attn.k_proj.weight"))?)?,
                w(take(&n("self_attn.v_proj.weight"))?)?,
            ],
            bias,
        );
        let gate_up = group(
            vec![
                w(take(&n("mlp.gate_proj.weight"))?)?,
                w(take(&n("mlp.up_proj.weight"))?)?,
            ],
            None,
        );
        layers.push(Layer {
            attn_norm: flat(&take(&n("input_layernorm.weight"))?)?,
            qkv,
            o: w(take(&n("self_attn.o_proj.weight"))?)?,
            ffn_norm: flat(&take(&n("post_attention_layernorm.weight"))?)?,
            gate_up,
            down: w(take(&n("mlp.down_proj.weight"))?)?,
        });
    }
    let norm = flat(&take("model.norm.weight")?)?;
    let head = if hc.tie_word_embeddings {
        None
    } else {
        Some(w(take("lm_head.weight")?)?)
    };
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = from_json(&tok_path)?;
    let eos = match &hc.eos_token_id {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|v| vec![v as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u32)
            .collect(),
        _ => Vec::new(),
    };
    Ok(CausalLm::finish(Parts {
        config,
        embed,
        layers,
        norm,
        head,
        tokenizer,
        model_hash: hex::encode(hasher.finalize()),
        eos,
    }))
}
