//! One optimizer step, in the order it runs: the batch's texts ([`flatten`]), the
//! micro-batch plan ([`plan`], pure), GradCache's first pass ([`first_pass`]), the
//! loss and its gradient at the embeddings, the passes back into the weights
//! ([`backward`]: kept graphs at once, the rest re-encoded with the same dropout),
//! and the checked AdamW update.

use crate::trainer::{graph_bytes_per_token, mix, Error, Result, TrainConfig};
use crate::{batch_loss, AdamW, Batch};
use candle_core::{Tensor, Var};
use uae_artifacts::labels::{LabeledCandidate, LabeledGroup};
use uae_encoder::Encoder;

/// What one optimizer step did.
#[derive(Debug, Clone, Copy)]
pub struct StepOutcome {
    pub loss: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    /// Real (unpadded) tokens encoded, questions and passages.
    pub tokens: usize,
    /// Of those, the tokens encoded twice (GradCache's second pass).
    pub reencoded_tokens: usize,
}

/// Which texts a micro-batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Questions,
    Passages,
}

impl Side {
    /// The tag mixed into a micro-batch's dropout seed (1 and 2: the seeds every
    /// checkpoint so far was trained with).
    fn seed_tag(self) -> u64 {
        match self {
            Side::Questions => 1,
            Side::Passages => 2,
        }
    }
}

/// One micro-batch: texts `start..end` of a side, its dropout seed, and whether its
/// autograd graph is kept from the first pass (else it is encoded again for the
/// backward pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MicroBatch {
    pub side: Side,
    pub start: usize,
    pub end: usize,
    pub dropout_seed: u64,
    pub keep_graph: bool,
}

/// The batch's questions and candidates as token ids, with each candidate's owner,
/// utility and gold flag.
pub struct Flat {
    pub owner: Vec<usize>,
    pub utility: Vec<f32>,
    pub gold: Vec<bool>,
    pub questions: Vec<Vec<u32>>,
    pub passages: Vec<Vec<u32>>,
}

impl Flat {
    fn ids(&self, side: Side) -> &[Vec<u32>] {
        match side {
            Side::Questions => &self.questions,
            Side::Passages => &self.passages,
        }
    }

    /// The token ids of a micro-batch.
    fn seqs(&self, m: &MicroBatch) -> Vec<&[u32]> {
        self.ids(m.side)[m.start..m.end]
            .iter()
            .map(Vec::as_slice)
            .collect()
    }
}

/// The candidates of `g` a batch holds: its `max` of highest utility, best first.
pub fn trained_candidates(g: &LabeledGroup, max: usize) -> Vec<&LabeledCandidate> {
    let mut cands: Vec<_> = g.candidates.iter().collect();
    cands.sort_by(|a, b| b.utility.total_cmp(&a.utility));
    cands.truncate(max);
    cands
}

/// Each question's highest-utility candidates (at most `max_candidates`), tokenised;
/// passages cut to `max_passage_tokens`, their last id (\[SEP\]) kept.
pub fn flatten(enc: &Encoder, batch: &[&LabeledGroup], cfg: &TrainConfig) -> Result<Flat> {
    let (mut owner, mut utility, mut gold, mut texts) = (vec![], vec![], vec![], vec![]);
    for (i, g) in batch.iter().enumerate() {
        for c in trained_candidates(g, cfg.max_candidates) {
            owner.push(i);
            utility.push(c.utility);
            gold.push(c.is_gold);
            texts.push(c.text.as_str());
        }
    }
    let qtexts: Vec<&str> = batch.iter().map(|g| g.question.as_str()).collect();
    let questions = enc.tokenize(&qtexts)?;
    let passages = (enc.tokenize(&texts)?.into_iter())
        .map(|v| truncate_keeping_last(v, cfg.max_passage_tokens))
        .collect();
    Ok(Flat {
        owner,
        utility,
        gold,
        questions,
        passages,
    })
}

/// `v` cut to `max` ids, its last id kept at the end.
fn truncate_keeping_last(mut v: Vec<u32>, max: usize) -> Vec<u32> {
    if v.len() > max {
        if let Some(&last) = v.last() {
            v.truncate(max.saturating_sub(1));
            v.push(last);
        }
    }
    v
}

/// The micro-batches of a step: questions then passages, `micro_batch` texts each,
/// each with its dropout seed; in that order, while the estimated graph memory
/// (`texts x longest x bytes_per_token`) fits `budget_bytes`, a micro-batch keeps its
/// graph. Also the tokens of the others, which are encoded twice.
pub fn plan(
    question_lens: &[usize],
    passage_lens: &[usize],
    micro_batch: usize,
    seed: u64,
    mut budget_bytes: usize,
    bytes_per_token: usize,
) -> (Vec<MicroBatch>, usize) {
    let mut out = Vec::new();
    let mut reencoded = 0;
    for (side, lens) in [
        (Side::Questions, question_lens),
        (Side::Passages, passage_lens),
    ] {
        let mut start = 0;
        while start < lens.len() {
            let end = (start + micro_batch.max(1)).min(lens.len());
            let part = &lens[start..end];
            let longest = part.iter().copied().max().unwrap_or(1);
            let bytes = part.len() * longest * bytes_per_token;
            let keep_graph = bytes <= budget_bytes;
            if keep_graph {
                budget_bytes -= bytes;
            } else {
                reencoded += part.iter().sum::<usize>();
            }
            out.push(MicroBatch {
                side,
                start,
                end,
                dropout_seed: mix(seed, side.seed_tag(), start as u64),
                keep_graph,
            });
            start = end;
        }
    }
    (out, reencoded)
}

/// GradCache's first pass: every micro-batch's embeddings for the loss, detached,
/// as two variables (questions, passages), and the graphs of the micro-batches that
/// keep theirs. The others run without a graph, through a bf16 snapshot of the
/// weights when `cfg.bf16_first_pass` and the CPU has a bf16 unit.
pub fn first_pass(
    enc: &Encoder,
    flat: &Flat,
    plan: &[MicroBatch],
    cfg: &TrainConfig,
) -> Result<(Var, Var, Vec<Option<Tensor>>)> {
    let reencoded = plan.iter().any(|m| !m.keep_graph);
    let snapshot = if cfg.bf16_first_pass && reencoded && uae_kernels::bf16::backend().is_some() {
        Some(enc.model.bf16_snapshot()?)
    } else {
        None
    };
    let (mut kept, mut qe, mut pe) = (Vec::with_capacity(plan.len()), vec![], vec![]);
    for m in plan {
        let batch = enc.batch(&flat.seqs(m))?;
        let v = if m.keep_graph {
            let t = enc.forward_t(&batch, Some(m.dropout_seed))?;
            let v = t.detach();
            kept.push(Some(t));
            v
        } else {
            kept.push(None);
            match &snapshot {
                Some(s) => enc.forward_with(s, &batch, Some(m.dropout_seed))?,
                None => enc.forward_t(&batch, Some(m.dropout_seed))?.detach(),
            }
        };
        match m.side {
            Side::Questions => qe.push(v),
            Side::Passages => pe.push(v),
        }
    }
    let q = Var::from_tensor(&Tensor::cat(&qe, 0)?)?;
    let p = Var::from_tensor(&Tensor::cat(&pe, 0)?)?;
    Ok((q, p, kept))
}

/// Back-propagates `sum(embedding * gradient)` into the weights: one pass through
/// every kept graph together, then each other micro-batch encoded again with its
/// dropout seed. Returns each variable's summed gradient, flattened.
pub fn backward(
    enc: &Encoder,
    vars: &[(String, Var)],
    flat: &Flat,
    plan: &[MicroBatch],
    mut kept: Vec<Option<Tensor>>,
    grads: (&Tensor, &Tensor),
) -> Result<Vec<Option<Vec<f32>>>> {
    let grad_of = |m: &MicroBatch| match m.side {
        Side::Questions => grads.0.narrow(0, m.start, m.end - m.start),
        Side::Passages => grads.1.narrow(0, m.start, m.end - m.start),
    };
    let mut acc: Vec<Option<Vec<f32>>> = vec![None; vars.len()];
    let mut add = |store: candle_core::backprop::GradStore| -> Result<()> {
        for ((_, var), a) in vars.iter().zip(acc.iter_mut()) {
            if let Some(gr) = store.get(var) {
                let gv = gr.flatten_all()?.to_vec1::<f32>()?;
                match a {
                    Some(a) => a.iter_mut().zip(gv).for_each(|(x, y)| *x += y),
                    None => *a = Some(gv),
                }
            }
        }
        Ok(())
    };
    let mut surrogate: Option<Tensor> = None;
    for (m, t) in plan.iter().zip(kept.iter_mut()) {
        if let Some(t) = t.take() {
            let term = (t * grad_of(m)?)?.sum_all()?;
            surrogate = Some(match surrogate {
                Some(acc) => (acc + term)?,
                None => term,
            });
        }
    }
    if let Some(sur) = surrogate {
        add(sur.backward()?)?;
    }
    for m in plan.iter().filter(|m| !m.keep_graph) {
        let emb = enc.forward_t(&enc.batch(&flat.seqs(m))?, Some(m.dropout_seed))?;
        add((emb * grad_of(m)?)?.sum_all()?.backward()?)?;
    }
    Ok(acc)
}

/// One optimizer step over a batch of questions.
pub fn step(
    enc: &Encoder,
    vars: &[(String, Var)],
    opt: &mut AdamW,
    batch: &[&LabeledGroup],
    cfg: &TrainConfig,
    lr: f32,
    seed: u64,
) -> Result<StepOutcome> {
    let flat = flatten(enc, batch, cfg)?;
    let lens = |ids: &[Vec<u32>]| ids.iter().map(Vec::len).collect::<Vec<_>>();
    let (qlens, plens) = (lens(&flat.questions), lens(&flat.passages));
    let tokens = qlens.iter().chain(&plens).sum();
    let (plan, reencoded_tokens) = plan(
        &qlens,
        &plens,
        cfg.micro_batch,
        seed,
        cfg.graph_memory_mb.saturating_mul(1 << 20),
        graph_bytes_per_token(&enc.model.config),
    );
    let (q, p, kept) = first_pass(enc, &flat, &plan, cfg)?;
    let b = Batch {
        owner: &flat.owner,
        utility: &flat.utility,
        gold: &flat.gold,
    };
    let loss = batch_loss(&cfg.loss_params(), &q, &p, &b)?;
    let lg = loss.backward()?;
    let grad = |v: &Var| {
        lg.get(v)
            .cloned()
            .map_or_else(|| Tensor::zeros_like(v.as_tensor()), Ok)
    };
    let (gq, gp) = (grad(&q)?, grad(&p)?);
    let acc = backward(enc, vars, &flat, &plan, kept, (&gq, &gp))?;
    let loss = loss.to_scalar::<f32>()?;
    let norm = AdamW::grad_norm(&acc);
    for (what, value) in [("loss", loss), ("gradient norm", norm)] {
        if !value.is_finite() {
            return Err(Error::NonFinite {
                step: 0,
                what,
                value,
            });
        }
    }
    let grad_norm = opt.step_flat(vars, acc, lr, Some(cfg.clip))?;
    Ok(StepOutcome {
        loss,
        grad_norm,
        tokens,
        reencoded_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_keeps_graphs_in_order_while_they_fit() {
        // 3 questions, 5 passages, micro-batches of 2, 10 bytes a token.
        let (q, p) = ([4, 6, 5], [10, 3, 3, 8, 2]);
        let (all, re) = plan(&q, &p, 2, 7, usize::MAX, 10);
        let spans: Vec<_> = all.iter().map(|m| (m.side, m.start, m.end)).collect();
        assert_eq!(
            spans,
            [
                (Side::Questions, 0, 2),
                (Side::Questions, 2, 3),
                (Side::Passages, 0, 2),
                (Side::Passages, 2, 4),
                (Side::Passages, 4, 5),
            ]
        );
        assert!(all.iter().all(|m| m.keep_graph) && re == 0);
        // Seeds differ by side and start, and repeat for the same step seed.
        assert_eq!(all[0].dropout_seed, mix(7, 1, 0));
        assert_eq!(all[2].dropout_seed, mix(7, 2, 0));
        assert_ne!(all[0].dropout_seed, all[2].dropout_seed);
        // Budget 250 bytes: questions 2x6x10 = 120 and 1x5x10 = 50 fit, passages
        // 2x10x10 = 200 does not (80 left), 2x8x10 = 160 neither, 1x2x10 = 20 does.
        let (some, re) = plan(&q, &p, 2, 7, 250, 10);
        let keep: Vec<bool> = some.iter().map(|m| m.keep_graph).collect();
        assert_eq!(keep, [true, true, false, false, true]);
        assert_eq!(re, 10 + 3 + 3 + 8);
        // Budget 0: plain GradCache, everything encoded twice.
        let (none, re) = plan(&q, &p, 2, 7, 0, 10);
        assert!(none.iter().all(|m| !m.keep_graph));
        assert_eq!(re, 4 + 6 + 5 + 10 + 3 + 3 + 8 + 2);
    }

    #[test]
    fn truncation_keeps_the_last_id() {
        assert_eq!(
            truncate_keeping_last(vec![101, 5, 6, 7, 102], 3),
            [101, 5, 102]
        );
        assert_eq!(truncate_keeping_last(vec![101, 102], 3), [101, 102]);
    }
}
