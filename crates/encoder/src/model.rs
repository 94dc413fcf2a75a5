//! BERT encoder on candle, trainable.
//!
//! Follows HF transformers' `BertModel` (post-LN, absolute positions, exact GELU).
//! Differences: Q, K and V are one fused projection; attention-probability dropout is
//! not applied (hidden dropout is, with masks drawn from a seeded generator so that a
//! resumed training run repeats the same masks); token type
//! ids are always 0 (single-segment input).

use crate::ops::{
    attention, dropout_add, dropout_mask, gelu_linear_in, layer_norm, linear_bf16, linear_bf16_add,
    linear_in, PackedLinear,
};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// The fields of a HF `config.json` that a BERT encoder needs.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct BertConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_types")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_types() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}

pub(crate) struct Layer {
    pub(crate) q_w: Tensor,
    pub(crate) q_b: Tensor,
    pub(crate) k_w: Tensor,
    pub(crate) k_b: Tensor,
    pub(crate) v_w: Tensor,
    pub(crate) v_b: Tensor,
    /// Q, K, V stacked once at load time for inference-only models.
    pub(crate) qkv: Option<(Tensor, Tensor)>,
    /// QKV, output, intermediate and FFN-output projections in bf16 ([`Bert::to_bf16`]).
    pub(crate) bf16: Option<[PackedLinear; 4]>,
    pub(crate) o_w: Tensor,
    pub(crate) o_b: Tensor,
    pub(crate) ln1_g: Tensor,
    pub(crate) ln1_b: Tensor,
    pub(crate) i_w: Tensor,
    pub(crate) i_b: Tensor,
    pub(crate) out_w: Tensor,
    pub(crate) out_b: Tensor,
    pub(crate) ln2_g: Tensor,
    pub(crate) ln2_b: Tensor,
}

/// A BERT encoder: token ids `[b, s]` -> hidden states `[b, s, h]`.
pub struct Bert {
    pub config: BertConfig,
    pub(crate) word: Tensor,
    pub(crate) pos: Tensor,
    pub(crate) tok_type: Tensor,
    pub(crate) emb_ln_g: Tensor,
    pub(crate) emb_ln_b: Tensor,
    pub(crate) layers: Vec<Layer>,
    dropout: f32,
    /// Run the f32 projections' GEMMs, forward and backward, on the bf16 unit
    /// ([`Bert::set_bf16_gemms`]): mixed-precision training.
    bf16_gemms: bool,
    /// Trainable parameters under their checkpoint names (empty for inference models).
    vars: Vec<(String, Var)>,
    device: Device,
}

struct Loader<'a> {
    path: &'a Path,
    tensors: HashMap<String, Tensor>,
    prefix: &'static str,
    trainable: bool,
    vars: Vec<(String, Var)>,
}

impl Loader<'_> {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let full = format!("{}{}", self.prefix, name);
        let t = self.tensors.remove(&full).ok_or_else(|| Error::Weights {
            path: self.path.to_path_buf(),
            message: format!("missing tensor `{full}`"),
        })?;
        if t.dims() != shape {
            return Err(Error::Weights {
                path: self.path.to_path_buf(),
                message: format!(
                    "tensor `{full}` has shape {:?}, config says {:?}",
                    t.dims(),
                    shape
                ),
            });
        }
        let t = t.to_dtype(DType::F32)?;
        // A model that a diverged run wrote would embed everything as NaN: refuse it.
        if t.flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .any(|x| !x.is_finite())
        {
            return Err(Error::Weights {
                path: self.path.to_path_buf(),
                message: format!("tensor `{full}` holds non-finite values (NaN or inf)"),
            });
        }
        if self.trainable {
            let v = Var::from_tensor(&t)?;
            let t = v.as_tensor().clone();
            self.vars.push((name.to_string(), v));
            Ok(t)
        } else {
            Ok(t)
        }
    }
}

impl Bert {
    /// Loads weights from a safetensors file (names with or without a `bert.` prefix).
    /// With `trainable`, every parameter becomes a `Var` (see [`Bert::vars`]).
    pub fn load(
        config: BertConfig,
        weights: &Path,
        device: &Device,
        trainable: bool,
    ) -> Result<Self> {
        let act = config.hidden_act.as_str();
        if !matches!(act, "gelu" | "gelu_python") {
            return Err(Error::Unsupported {
                path: weights.to_path_buf(),
                message: format!("hidden_act `{act}` (only exact `gelu` is implemented)"),
            });
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(Error::Unsupported {
                path: weights.to_path_buf(),
                message: "hidden_size must be a multiple of num_attention_heads".into(),
            });
        }
        let tensors =
            candle_core::safetensors::load(weights, device).map_err(|e| Error::Weights {
                path: weights.to_path_buf(),
                message: e.to_string(),
            })?;
        let prefix = if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let mut ld = Loader {
            path: weights,
            tensors,
            prefix,
            trainable,
            vars: Vec::new(),
        };
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let word = ld.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let pos = ld.get(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let tok_type = ld.get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        let emb_ln_g = ld.get("embeddings.LayerNorm.weight", &[h])?;
        let emb_ln_b = ld.get("embeddings.LayerNorm.bias", &[h])?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}.");
            let mut g = |n: &str, shape: &[usize]| ld.get(&format!("{p}{n}"), shape);
            let mut layer = Layer {
                q_w: g("attention.self.query.weight", &[h, h])?,
                q_b: g("attention.self.query.bias", &[h])?,
                k_w: g("attention.self.key.weight", &[h, h])?,
                k_b: g("attention.self.key.bias", &[h])?,
                v_w: g("attention.self.value.weight", &[h, h])?,
                v_b: g("attention.self.value.bias", &[h])?,
                qkv: None,
                bf16: None,
                o_w: g("attention.output.dense.weight", &[h, h])?,
                o_b: g("attention.output.dense.bias", &[h])?,
                ln1_g: g("attention.output.LayerNorm.weight", &[h])?,
                ln1_b: g("attention.output.LayerNorm.bias", &[h])?,
                i_w: g("intermediate.dense.weight", &[i, h])?,
                i_b: g("intermediate.dense.bias", &[i])?,
                out_w: g("output.dense.weight", &[h, i])?,
                out_b: g("output.dense.bias", &[h])?,
                ln2_g: g("output.LayerNorm.weight", &[h])?,
                ln2_b: g("output.LayerNorm.bias", &[h])?,
            };
            if !trainable {
                layer.qkv = Some(layer.stacked_qkv()?);
            }
            layers.push(layer);
        }
        let dropout = config.hidden_dropout_prob as f32;
        Ok(Bert {
            vars: ld.vars,
            config,
            word,
            pos,
            tok_type,
            emb_ln_g,
            emb_ln_b,
            layers,
            dropout,
            bf16_gemms: false,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Rounds the four projections of every layer to bf16 for the bf16 GEMM (AMX
    /// tiles or AVX512_BF16, whichever the CPU has; embeddings, layer norms and
    /// attention stay f32). Errors for trainable models, non-CPU devices, and CPUs
    /// with neither.
    pub fn to_bf16(&mut self) -> Result<()> {
        if !self.vars.is_empty() || !self.device.is_cpu() {
            return Err(Error::Precision(
                "for inference on the CPU only (this model is trainable or on a GPU)".into(),
            ));
        }
        if uae_kernels::bf16::backend().is_none() {
            return Err(Error::Precision(uae_kernels::bf16::UNAVAILABLE.into()));
        }
        for l in &mut self.layers {
            let (w, b) = match &l.qkv {
                Some((w, b)) => (w.clone(), b.clone()),
                None => l.stacked_qkv()?,
            };
            l.bf16 = Some([
                PackedLinear::new(&w, &b)?,
                PackedLinear::new(&l.o_w, &l.o_b)?,
                PackedLinear::new(&l.i_w, &l.i_b)?,
                PackedLinear::new(&l.out_w, &l.out_b)?,
            ]);
        }
        Ok(())
    }

    /// A gradient-free copy of this model (weights shared, not copied) laid out as
    /// [`Bert::load`] lays out an inference model (stacked QKV): the embeddings it
    /// gives equal those of the model exported and loaded again, bit for bit, so a
    /// trainer can evaluate without a round trip through the disk.
    pub fn inference_copy(&self) -> Result<Bert> {
        let mut copy = self.detached();
        for l in &mut copy.layers {
            l.qkv = Some(l.stacked_qkv()?);
        }
        Ok(copy)
    }

    /// A gradient-free copy of this model (weights shared, not copied) with its
    /// projections packed in bf16: GradCache's first pass, which only needs the
    /// embeddings, runs on it. Errors without a bf16 unit (AMX or AVX512_BF16).
    pub fn bf16_snapshot(&self) -> Result<Bert> {
        let mut snap = self.detached();
        snap.to_bf16()?;
        Ok(snap)
    }

    /// The weights detached from the graph (shared, not copied), nothing stacked.
    fn detached(&self) -> Bert {
        let d = |t: &Tensor| t.detach();
        let layers = self
            .layers
            .iter()
            .map(|l| Layer {
                q_w: d(&l.q_w),
                q_b: d(&l.q_b),
                k_w: d(&l.k_w),
                k_b: d(&l.k_b),
                v_w: d(&l.v_w),
                v_b: d(&l.v_b),
                qkv: None,
                bf16: None,
                o_w: d(&l.o_w),
                o_b: d(&l.o_b),
                ln1_g: d(&l.ln1_g),
                ln1_b: d(&l.ln1_b),
                i_w: d(&l.i_w),
                i_b: d(&l.i_b),
                out_w: d(&l.out_w),
                out_b: d(&l.out_b),
                ln2_g: d(&l.ln2_g),
                ln2_b: d(&l.ln2_b),
            })
            .collect();
        Bert {
            config: self.config.clone(),
            word: d(&self.word),
            pos: d(&self.pos),
            tok_type: d(&self.tok_type),
            emb_ln_g: d(&self.emb_ln_g),
            emb_ln_b: d(&self.emb_ln_b),
            layers,
            dropout: self.dropout,
            bf16_gemms: false,
            vars: Vec::new(),
            device: self.device.clone(),
        }
    }

    /// Mixed precision for a trainable model: every projection's GEMM, forward and
    /// backward, rounds its inputs to bf16 and sums in f32 on the bf16 unit (AMX tiles
    /// or AVX512_BF16), as PyTorch's CPU autocast does for linear layers. Weights,
    /// gradients, optimizer state, layer norms, attention and the loss stay f32.
    /// Copies made for inference ([`Bert::inference_copy`]) are plain f32. Errors on
    /// a CPU with neither unit, or a model on another device.
    pub fn set_bf16_gemms(&mut self, on: bool) -> Result<()> {
        if on && !self.device.is_cpu() {
            return Err(Error::Precision(
                "bf16 GEMMs are for the CPU (this model is on a GPU)".into(),
            ));
        }
        if on && uae_kernels::bf16::backend().is_none() {
            return Err(Error::Precision(uae_kernels::bf16::UNAVAILABLE.into()));
        }
        self.bf16_gemms = on;
        Ok(())
    }

    /// Whether [`Bert::to_bf16`] has run.
    pub fn is_bf16(&self) -> bool {
        self.layers.iter().any(|l| l.bf16.is_some())
    }

    /// Trainable parameters with their checkpoint names (without any `bert.` prefix).
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// The embedding layer for ids `[b, s]`: word, position and token-type
    /// embeddings summed and layer-normed, `[b * s, h]`.
    fn embeddings(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let h = self.config.hidden_size;
        if s > self.config.max_position_embeddings {
            return Err(Error::TooLong {
                len: s,
                max: self.config.max_position_embeddings,
            });
        }
        let we = self
            .word
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, s, h))?;
        let pe = self.pos.narrow(0, 0, s)?.unsqueeze(0)?;
        let te = self.tok_type.narrow(0, 0, 1)?.unsqueeze(0)?;
        let x = we
            .broadcast_add(&(pe.broadcast_add(&te)?))?
            .reshape((b * s, h))?;
        Ok(layer_norm(
            &x,
            &self.emb_ln_g,
            &self.emb_ln_b,
            self.config.layer_norm_eps,
        )?)
    }

    /// Hidden states `[b, s, h]` for right-padded ids `[b, s]` (u32) whose sequence `i`
    /// has `lens[i]` real tokens. `dropout_seed: Some(seed)` is training mode: hidden
    /// dropout on, its masks a function of the seed; `None` is inference.
    pub fn forward_t(
        &self,
        ids: &Tensor,
        lens: &[usize],
        dropout_seed: Option<u64>,
    ) -> Result<Tensor> {
        // Dropout sites are numbered in order, so every pass with the same seed (the
        // bf16 branch included) draws the same masks: GradCache relies on it.
        let site = std::cell::Cell::new(0u64);
        let next_site = || {
            site.set(site.get() + 1);
            site.get()
        };
        let p = match dropout_seed {
            Some(seed) if self.dropout > 0.0 => Some((self.dropout, seed)),
            _ => None,
        };
        let drop_add = |x: Tensor, r: &Tensor| -> Result<Tensor> {
            let site = next_site();
            Ok(match p {
                Some((p, seed)) => dropout_add(&x, r, p, seed, site)?,
                None => (x + r)?,
            })
        };
        let (b, s) = ids.dims2()?;
        let h = self.config.hidden_size;
        let x = self.embeddings(ids)?;
        let mut x = match p {
            Some((p, seed)) => {
                let mask = dropout_mask(x.elem_count(), p, seed, next_site());
                (x.clone() * Tensor::from_vec(mask, x.shape(), x.device())?)?
            }
            None => x,
        };
        let eps = self.config.layer_norm_eps;
        for layer in &self.layers {
            if let Some([qkv_p, o_p, i_p, out_p]) = &layer.bf16 {
                let qkv = linear_bf16(&x, qkv_p, false)?.reshape((b, s, 3 * h))?;
                let ctx =
                    attention(&qkv, self.config.num_attention_heads, lens)?.reshape((b * s, h))?;
                // Same dropout sites as the f32 branch, so a training-mode pass here
                // draws the same masks (GradCache's first pass relies on it). Without
                // dropout the residual sum is fused into the GEMM.
                let linear_add = |x: &Tensor, w, r: &Tensor| -> Result<Tensor> {
                    match p {
                        Some(_) => drop_add(linear_bf16(x, w, false)?, r),
                        None => {
                            next_site();
                            Ok(linear_bf16_add(x, w, r)?)
                        }
                    }
                };
                let a = linear_add(&ctx, o_p, &x)?;
                let a = layer_norm(&a, &layer.ln1_g, &layer.ln1_b, eps)?;
                let inter = linear_bf16(&a, i_p, true)?;
                let o = linear_add(&inter, out_p, &a)?;
                x = layer_norm(&o, &layer.ln2_g, &layer.ln2_b, eps)?;
                continue;
            }
            let (w, bias) = match &layer.qkv {
                Some((w, b)) => (w.clone(), b.clone()),
                None => layer.stacked_qkv()?,
            };
            let mp = self.bf16_gemms;
            let qkv = linear_in(&x, &w, &bias, false, mp)?.reshape((b, s, 3 * h))?;
            let ctx =
                attention(&qkv, self.config.num_attention_heads, lens)?.reshape((b * s, h))?;
            let a = drop_add(linear_in(&ctx, &layer.o_w, &layer.o_b, false, mp)?, &x)?;
            let a = layer_norm(&a, &layer.ln1_g, &layer.ln1_b, eps)?;
            // With gradients, the GELU output is recomputed in the backward pass
            // instead of being kept; without, it is the first GEMM's epilogue.
            let o = if a.track_op() || layer.out_w.track_op() {
                let pre = linear_in(&a, &layer.i_w, &layer.i_b, false, mp)?;
                gelu_linear_in(&pre, &layer.out_w, &layer.out_b, mp)?
            } else {
                let inter = linear_in(&a, &layer.i_w, &layer.i_b, true, mp)?;
                linear_in(&inter, &layer.out_w, &layer.out_b, false, mp)?
            };
            let o = drop_add(o, &a)?;
            x = layer_norm(&o, &layer.ln2_g, &layer.ln2_b, eps)?;
        }
        Ok(x.reshape((b, s, h))?)
    }
}

impl Layer {
    pub(crate) fn stacked_qkv(&self) -> Result<(Tensor, Tensor)> {
        Ok((
            Tensor::cat(&[&self.q_w, &self.k_w, &self.v_w], 0)?,
            Tensor::cat(&[&self.q_b, &self.k_b, &self.v_b], 0)?,
        ))
    }
}
