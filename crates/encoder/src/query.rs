//! The single-query path: one short text through BERT without candle.
//!
//! A server embeds one question at a time, and for ~15 tokens the batch path's fixed
//! costs (tensor allocation per op, GEMM packing, thread-pool dispatch for work that
//! takes microseconds) outweigh the arithmetic. [`QueryModel`] holds the projections
//! pre-packed for [`uae_kernels::small`] and runs the whole forward pass on plain
//! buffers. Same maths as [`crate::Bert::forward_t`] in inference mode (post-LN,
//! exact GELU); the results agree to f32 rounding (see the tests).

use crate::{Bert, Pooling, Result};
use candle_core::Tensor;
use uae_kernels::small::{small_linear, Panels};
use uae_kernels::{layer_norm_rows, softmax_scaled};

/// One projection with its bias, as f32 panels, or bf16 panels for a model that
/// [`crate::Bert::to_bf16`] converted (half the bytes streamed a query).
enum Proj {
    F32(Panels<f32>, Vec<f32>),
    Bf16(Panels<u16>, Vec<f32>),
}

impl Proj {
    fn new(w: &Tensor, b: &Tensor, bf16: bool) -> Result<Self> {
        let (n, k) = w.dims2()?;
        let (w, b) = (vec1(w)?, vec1(b)?);
        Ok(if bf16 {
            Proj::Bf16(Panels::from_weight_bf16(&w, n, k), b)
        } else {
            Proj::F32(Panels::from_weight(&w, n, k), b)
        })
    }

    fn n(&self) -> usize {
        match self {
            Proj::F32(p, _) => p.n(),
            Proj::Bf16(p, _) => p.n(),
        }
    }

    /// `out[m, n] = x[m, k] W^T + b`, then GELU when `gelu`.
    fn run(&self, x: &[f32], m: usize, gelu: bool, out: &mut [f32], threads: usize) {
        match self {
            Proj::F32(p, b) => small_linear(x, m, p, b, gelu, out, threads),
            Proj::Bf16(p, b) => small_linear(x, m, p, b, gelu, out, threads),
        }
    }
}

struct QueryLayer {
    qkv: Proj,
    o: Proj,
    ln1: (Vec<f32>, Vec<f32>),
    inter: Proj,
    out: Proj,
    ln2: (Vec<f32>, Vec<f32>),
}

/// A BERT encoder laid out for one short sequence at a time (inference only).
pub struct QueryModel {
    word: Tensor,
    /// Position embeddings with token type 0 added.
    pos_type: Vec<f32>,
    emb_ln: (Vec<f32>, Vec<f32>),
    layers: Vec<QueryLayer>,
    hidden: usize,
    heads: usize,
    eps: f32,
    max_positions: usize,
}

fn vec1(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

impl QueryModel {
    /// Repacks `bert`'s f32 weights (a copy of the projections, ~4 bytes a parameter;
    /// the word embeddings are shared). For a model converted to bf16 the panels hold
    /// bf16 weights, rounded as the bf16 GEMMs round them; activations and sums stay
    /// f32.
    pub fn new(bert: &Bert) -> Result<Self> {
        let c = &bert.config;
        let h = c.hidden_size;
        let pos = vec1(&bert.pos)?;
        let tok0 = vec1(&bert.tok_type.narrow(0, 0, 1)?)?;
        let pos_type = pos
            .chunks(h)
            .flat_map(|row| row.iter().zip(&tok0).map(|(p, t)| p + t))
            .collect();
        let layers = bert
            .layers
            .iter()
            .map(|l| {
                let bf16 = l.bf16.is_some();
                let (w, b) = l.stacked_qkv()?;
                let [qkv, o, inter, out] = [
                    Proj::new(&w, &b, bf16)?,
                    Proj::new(&l.o_w, &l.o_b, bf16)?,
                    Proj::new(&l.i_w, &l.i_b, bf16)?,
                    Proj::new(&l.out_w, &l.out_b, bf16)?,
                ];
                Ok(QueryLayer {
                    qkv,
                    o,
                    ln1: (vec1(&l.ln1_g)?, vec1(&l.ln1_b)?),
                    inter,
                    out,
                    ln2: (vec1(&l.ln2_g)?, vec1(&l.ln2_b)?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(QueryModel {
            word: bert.word.clone(),
            pos_type,
            emb_ln: (vec1(&bert.emb_ln_g)?, vec1(&bert.emb_ln_b)?),
            layers,
            hidden: h,
            heads: c.num_attention_heads,
            eps: c.layer_norm_eps as f32,
            max_positions: c.max_position_embeddings,
        })
    }

    /// Hidden states of several sequences (each with its special tokens), their rows
    /// concatenated: `[sum of lengths, hidden]`, row-major. The projections see all
    /// rows at once (each weight is streamed once for the lot); attention stays
    /// within each sequence. `threads` splits the projections between rayon workers.
    pub fn hidden_states(&self, seqs: &[&[u32]], threads: usize) -> Result<Vec<f32>> {
        let h = self.hidden;
        if let Some(long) = seqs.iter().find(|s| s.len() > self.max_positions) {
            return Err(crate::Error::TooLong {
                len: long.len(),
                max: self.max_positions,
            });
        }
        let s: usize = seqs.iter().map(|q| q.len()).sum();
        if s == 0 {
            return Ok(Vec::new());
        }
        let all: Vec<u32> = seqs.iter().flat_map(|q| q.iter().copied()).collect();
        let idx = Tensor::from_vec(all, s, self.word.device())?;
        let mut x = vec1(&self.word.index_select(&idx, 0)?)?;
        let mut at = 0;
        for q in seqs {
            for (row, pt) in x[at * h..(at + q.len()) * h]
                .chunks_mut(h)
                .zip(self.pos_type.chunks(h))
            {
                row.iter_mut().zip(pt).for_each(|(v, p)| *v += p);
            }
            at += q.len();
        }
        let mut tmp = vec![0f32; s * h];
        layer_norm_rows(&mut tmp, &x, &self.emb_ln.0, &self.emb_ln.1, self.eps);
        std::mem::swap(&mut x, &mut tmp);
        let inter_n = self.layers.first().map_or(0, |l| l.inter.n());
        let mut qkv = vec![0f32; s * 3 * h];
        let mut ctx = vec![0f32; s * h];
        let mut inter = vec![0f32; s * inter_n];
        let longest = seqs.iter().map(|q| q.len()).max().unwrap_or(0);
        let mut scores = vec![0f32; longest];
        let hd = h / self.heads.max(1);
        let scale = 1.0 / (hd as f32).sqrt();
        for l in &self.layers {
            l.qkv.run(&x, s, false, &mut qkv, threads);
            let mut start = 0;
            for q in seqs {
                let n = q.len();
                let rows = &qkv[start * 3 * h..(start + n) * 3 * h];
                let ctx = &mut ctx[start * h..(start + n) * h];
                let scores = &mut scores[..n];
                for head in 0..self.heads {
                    let (qo, ko, vo) = (head * hd, h + head * hd, 2 * h + head * hd);
                    for i in 0..n {
                        let q = &rows[i * 3 * h + qo..i * 3 * h + qo + hd];
                        for (j, sc) in scores.iter_mut().enumerate() {
                            let k = &rows[j * 3 * h + ko..j * 3 * h + ko + hd];
                            *sc = q.iter().zip(k).map(|(a, b)| a * b).sum();
                        }
                        softmax_scaled(scores, scale);
                        let c = &mut ctx[i * h + qo..i * h + qo + hd];
                        c.fill(0.0);
                        for (j, &p) in scores.iter().enumerate() {
                            let v = &rows[j * 3 * h + vo..j * 3 * h + vo + hd];
                            c.iter_mut().zip(v).for_each(|(c, v)| *c += p * v);
                        }
                    }
                }
                start += n;
            }
            // a = LN(ctx Wo + bo + x)
            l.o.run(&ctx, s, false, &mut tmp, threads);
            tmp.iter_mut().zip(&x).for_each(|(t, v)| *t += v);
            layer_norm_rows(&mut x, &tmp, &l.ln1.0, &l.ln1.1, self.eps);
            // x = LN(gelu(a Wi + bi) Wout + bout + a)
            inter.resize(s * l.inter.n(), 0.0);
            l.inter.run(&x, s, true, &mut inter, threads);
            l.out.run(&inter, s, false, &mut tmp, threads);
            tmp.iter_mut().zip(&x).for_each(|(t, v)| *t += v);
            layer_norm_rows(&mut x, &tmp, &l.ln2.0, &l.ln2.1, self.eps);
        }
        Ok(x)
    }

    /// One pooled (and, with `normalize`, unit-length) vector per sequence.
    pub fn embed(
        &self,
        seqs: &[&[u32]],
        pooling: Pooling,
        normalize: bool,
        threads: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let h = self.hidden;
        let x = self.hidden_states(seqs, threads)?;
        let mut out = Vec::with_capacity(seqs.len());
        let mut start = 0;
        for q in seqs {
            let rows = &x[start * h..(start + q.len()) * h];
            start += q.len();
            let mut v = vec![0f32; h];
            match pooling {
                Pooling::Cls => {
                    if let Some(first) = rows.get(..h) {
                        v.copy_from_slice(first);
                    }
                }
                Pooling::Mean => {
                    for row in rows.chunks(h) {
                        v.iter_mut().zip(row).for_each(|(a, b)| *a += b);
                    }
                    let n = q.len().max(1) as f32;
                    v.iter_mut().for_each(|a| *a /= n);
                }
            }
            if normalize {
                let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|a| *a /= norm);
            }
            out.push(v);
        }
        Ok(out)
    }
}
