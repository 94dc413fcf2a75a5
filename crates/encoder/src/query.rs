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

struct QueryLayer {
    qkv: Panels,
    qkv_b: Vec<f32>,
    o: Panels,
    o_b: Vec<f32>,
    ln1: (Vec<f32>, Vec<f32>),
    inter: Panels,
    inter_b: Vec<f32>,
    out: Panels,
    out_b: Vec<f32>,
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

fn panels(t: &Tensor) -> Result<Panels> {
    let (n, k) = t.dims2()?;
    Ok(Panels::from_weight(&vec1(t)?, n, k))
}

impl QueryModel {
    /// Repacks `bert`'s f32 weights (a copy of the projections, ~4 bytes a parameter;
    /// the word embeddings are shared).
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
                let (w, b) = l.stacked_qkv()?;
                Ok(QueryLayer {
                    qkv: panels(&w)?,
                    qkv_b: vec1(&b)?,
                    o: panels(&l.o_w)?,
                    o_b: vec1(&l.o_b)?,
                    ln1: (vec1(&l.ln1_g)?, vec1(&l.ln1_b)?),
                    inter: panels(&l.i_w)?,
                    inter_b: vec1(&l.i_b)?,
                    out: panels(&l.out_w)?,
                    out_b: vec1(&l.out_b)?,
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

    /// Hidden states `[ids.len(), hidden]`, row-major, of one sequence (with its
    /// special tokens). `threads` splits the projections between rayon workers.
    pub fn hidden_states(&self, ids: &[u32], threads: usize) -> Result<Vec<f32>> {
        let (s, h) = (ids.len(), self.hidden);
        if s > self.max_positions {
            return Err(crate::Error::TooLong {
                len: s,
                max: self.max_positions,
            });
        }
        if s == 0 {
            return Ok(Vec::new());
        }
        let idx = Tensor::from_vec(ids.to_vec(), s, self.word.device())?;
        let mut x = vec1(&self.word.index_select(&idx, 0)?)?;
        for (row, pt) in x.chunks_mut(h).zip(self.pos_type.chunks(h)) {
            row.iter_mut().zip(pt).for_each(|(v, p)| *v += p);
        }
        let mut tmp = vec![0f32; s * h];
        layer_norm_rows(&mut tmp, &x, &self.emb_ln.0, &self.emb_ln.1, self.eps);
        std::mem::swap(&mut x, &mut tmp);
        let inter_n = self.layers.first().map_or(0, |l| l.inter.n());
        let mut qkv = vec![0f32; s * 3 * h];
        let mut ctx = vec![0f32; s * h];
        let mut inter = vec![0f32; s * inter_n];
        let mut scores = vec![0f32; s];
        let hd = h / self.heads.max(1);
        let scale = 1.0 / (hd as f32).sqrt();
        for l in &self.layers {
            small_linear(&x, s, &l.qkv, &l.qkv_b, false, &mut qkv, threads);
            for head in 0..self.heads {
                let (qo, ko, vo) = (head * hd, h + head * hd, 2 * h + head * hd);
                for i in 0..s {
                    let q = &qkv[i * 3 * h + qo..i * 3 * h + qo + hd];
                    for (j, sc) in scores.iter_mut().enumerate() {
                        let k = &qkv[j * 3 * h + ko..j * 3 * h + ko + hd];
                        *sc = q.iter().zip(k).map(|(a, b)| a * b).sum();
                    }
                    softmax_scaled(&mut scores, scale);
                    let c = &mut ctx[i * h + qo..i * h + qo + hd];
                    c.fill(0.0);
                    for (j, &p) in scores.iter().enumerate() {
                        let v = &qkv[j * 3 * h + vo..j * 3 * h + vo + hd];
                        c.iter_mut().zip(v).for_each(|(c, v)| *c += p * v);
                    }
                }
            }
            // a = LN(ctx Wo + bo + x)
            small_linear(&ctx, s, &l.o, &l.o_b, false, &mut tmp, threads);
            tmp.iter_mut().zip(&x).for_each(|(t, v)| *t += v);
            layer_norm_rows(&mut x, &tmp, &l.ln1.0, &l.ln1.1, self.eps);
            // x = LN(gelu(a Wi + bi) Wout + bout + a)
            inter.resize(s * l.inter.n(), 0.0);
            small_linear(&x, s, &l.inter, &l.inter_b, true, &mut inter, threads);
            small_linear(&inter, s, &l.out, &l.out_b, false, &mut tmp, threads);
            tmp.iter_mut().zip(&x).for_each(|(t, v)| *t += v);
            layer_norm_rows(&mut x, &tmp, &l.ln2.0, &l.ln2.1, self.eps);
        }
        Ok(x)
    }

    /// One pooled (and, with `normalize`, unit-length) vector.
    pub fn embed(
        &self,
        ids: &[u32],
        pooling: Pooling,
        normalize: bool,
        threads: usize,
    ) -> Result<Vec<f32>> {
        let h = self.hidden;
        let x = self.hidden_states(ids, threads)?;
        let mut v = vec![0f32; h];
        match pooling {
            Pooling::Cls => v.copy_from_slice(&x[..h.min(x.len())]),
            Pooling::Mean => {
                for row in x.chunks(h) {
                    v.iter_mut().zip(row).for_each(|(a, b)| *a += b);
                }
                let n = ids.len().max(1) as f32;
                v.iter_mut().for_each(|a| *a /= n);
            }
        }
        if normalize {
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|a| *a /= norm);
        }
        Ok(v)
    }
}
