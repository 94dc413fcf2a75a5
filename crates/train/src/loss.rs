//! Losses over one training batch of questions and their candidate passages.
//!
//! Notation (issue 4): s_ij = cos(E(q_i), E(p_j)) / tau over every passage j of the
//! batch; C_i are question i's own candidates, B_i the other questions' candidates
//! (in-batch negatives); pi_i = softmax over C_i of u / tau_u (utility temperature).

use candle_core::{DType, Result, Tensor, D};
use serde::{Deserialize, Serialize};

/// Which objective to train with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// The default, chosen by the labels ([`crate::TrainConfig::resolve`]): `uae` on
    /// candidates chosen around the evidence (`uae label --candidates gold`); on mined
    /// or retrieved candidates (no evidence needed), `infonce` on answer-overlap
    /// positives ([`crate::EVIDENCE_FREE`]), or, with a utility bar given, the utility
    /// target where the LLM is sure and, where that bar reaches fewer questions than
    /// answer-match positives do, those positives for the questions it drops
    /// (`hybrid`; [`crate::TrainConfig::fit_to_reach`]).
    Auto,
    /// Utility-modulated InfoNCE: -sum_{j in C_i} pi_ij log softmax_{C_i u B_i}(s_i)_j.
    Uae,
    /// Each candidate j a positive weighted by pi_ij, against B_i and the candidates
    /// of lower utility (LLM-Embedder's stable distillation).
    UaeListwise,
    /// KL(pi_i || softmax_{C_i}(s_i)), candidates only (REPLUG LSR / Atlas).
    Kl,
    /// InfoNCE with gold evidence as positives, everything else in the batch negative;
    /// uses no LLM signal.
    Infonce,
    /// `uae` with a target that mixes both signals: `w` of the mass spread evenly over
    /// the question's positives (gold evidence, or answer-match positives), `1 - w` the
    /// utility softmax; questions without a positive keep the utility target, and
    /// questions under [`LossParams::min_utility`] take their positives alone.
    Hybrid,
    /// MarginMSE (Hofstaetter et al. 2020; sentence-transformers' distillation loss):
    /// for every pair of a question's own candidates, the squared difference between
    /// the similarity margin `s_ij - s_ik` and the utility margin
    /// `(u_ij - u_ik) / tau_u`. No softmax and no in-batch negatives: it learns the
    /// utility's differences, not a distribution.
    MarginMse,
}

/// How a question's utilities are scaled before they become targets (the softmax of
/// `uae`, `uae-listwise`, `kl` and `hybrid`, the margins of `margin-mse`). Utilities
/// of different questions live on different scales: a long answer's mean NLL moves
/// less than a short one's, so one `tau_u` is sharp for some and flat for others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum UtilityNorm {
    /// The utilities in nats, as labelled.
    #[default]
    None,
    /// Per question, `(u - mean) / std` over its candidates (all 0 when they tie):
    /// `tau_u` is then in standard deviations.
    Zscore,
    /// Per question, minus the rank (0 for the best; ties share their mean rank):
    /// only the order counts, and `tau_u` is in ranks.
    Rank,
}

impl UtilityNorm {
    /// Whether the norm changes nothing (skips the field in manifests).
    pub fn is_none(&self) -> bool {
        *self == UtilityNorm::None
    }
}

/// The passages of a batch, flattened: passage j belongs to question `owner[j]`.
pub struct Batch<'a> {
    pub owner: &'a [usize],
    pub utility: &'a [f32],
    pub gold: &'a [bool],
}

const NEG: f32 = -1e9;

/// The objective and its knobs, as [`crate::TrainConfig`] sets them.
#[derive(Debug, Clone, Copy)]
pub struct LossParams {
    pub kind: LossKind,
    /// Similarity temperature.
    pub tau: f32,
    /// Utility temperature.
    pub tau_u: f32,
    /// `hybrid`: the share of the target on the positives.
    pub gold_weight: f32,
    /// Utility losses: a question whose best candidate's utility is below this (nats)
    /// gives no utility target (the LLM found no passage that helps its answer, so
    /// the softmax over its candidates would follow noise); its candidates stay in
    /// the batch as negatives for the others. `hybrid` trains such a question on its
    /// positives alone, if it has any. `None`: every question has a target.
    pub min_utility: Option<f32>,
    /// Utility losses: a question whose best candidate is ahead of its second best by
    /// less than this (nats) gives no utility target either: a bar on each question's
    /// own scale, where the LLM prefers one passage clearly over the rest. Together
    /// with `min_utility` a question must clear both. `None`: no such bar.
    pub min_gap: Option<f32>,
    /// `infonce`: a question's own non-positive candidates whose utility is at least
    /// this (nats) are spared: left out of that question's softmax, neither pulled
    /// up nor pushed down. The LLM says they help answer it, so they are likely
    /// evidence the annotation missed (false negatives); they stay negatives for the
    /// other questions. `None`: every non-positive is a negative.
    pub spare_utility: Option<f32>,
    /// How utilities are scaled per question before they become targets.
    pub utility_norm: UtilityNorm,
}

/// Whether each question's own candidates clear the bars of `lp` (all true without
/// a bar; false for a question with no candidates).
fn confident(b: &Batch, questions: usize, lp: &LossParams) -> Vec<bool> {
    let mut own = vec![Vec::new(); questions];
    for (&i, &u) in b.owner.iter().zip(b.utility) {
        own[i].push(u);
    }
    own.iter().map(|u| lp.clears(u)).collect()
}

/// What a question trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The utility softmax over its candidates (`hybrid`: with `gold_weight` of it on
    /// the positives).
    Utility,
    /// Its positives alone (`infonce`; `hybrid` under the bar).
    Positives,
    /// Nothing: its candidates are only negatives for the other questions.
    None,
}

impl LossParams {
    /// Whether a question with these own utilities clears the bars: its best at least
    /// `min_utility`, ahead of its second best by at least `min_gap` (a lone candidate
    /// has no second). False without candidates.
    fn clears(&self, utility: &[f32]) -> bool {
        uae_artifacts::labels::best_and_gap(utility.iter().copied()).is_some_and(|(best, gap)| {
            self.min_utility.is_none_or(|m| best >= m) && self.min_gap.is_none_or(|g| gap >= g)
        })
    }

    /// What a question with these own candidates (utilities, positive marks) trains
    /// on under this loss: the rule [`batch_loss`] applies to each question.
    pub fn target(&self, utility: &[f32], gold: &[bool]) -> Target {
        let positives = gold.iter().any(|&g| g);
        let confident = self.clears(utility);
        match self.kind {
            LossKind::Infonce if positives => Target::Positives,
            LossKind::Infonce => Target::None,
            // A question needs a pair of candidates for a margin.
            LossKind::MarginMse if utility.len() < 2 => Target::None,
            _ if confident => Target::Utility,
            LossKind::Hybrid if positives => Target::Positives,
            _ => Target::None,
        }
    }
}

/// Each passage's utility, scaled per question by `norm` (see [`UtilityNorm`]).
fn normalized(b: &Batch, questions: usize, norm: UtilityNorm) -> Vec<f32> {
    let mut v = b.utility.to_vec();
    if norm.is_none() {
        return v;
    }
    for i in 0..questions {
        let own: Vec<usize> = (0..b.owner.len()).filter(|&j| b.owner[j] == i).collect();
        if own.is_empty() {
            continue;
        }
        match norm {
            UtilityNorm::None => {}
            UtilityNorm::Zscore => {
                let n = own.len() as f32;
                let mean = own.iter().map(|&j| b.utility[j]).sum::<f32>() / n;
                let var = own
                    .iter()
                    .map(|&j| (b.utility[j] - mean).powi(2))
                    .sum::<f32>()
                    / n;
                let sd = var.sqrt();
                for &j in &own {
                    v[j] = if sd > 1e-6 {
                        (b.utility[j] - mean) / sd
                    } else {
                        0.0
                    };
                }
            }
            UtilityNorm::Rank => {
                for &j in &own {
                    let above = own.iter().filter(|&&k| b.utility[k] > b.utility[j]).count();
                    let ties = own
                        .iter()
                        .filter(|&&k| b.utility[k] == b.utility[j])
                        .count();
                    // Ranks above..above+ties-1 shared: their mean.
                    v[j] = -(above as f32 + (ties as f32 - 1.0) / 2.0);
                }
            }
        }
    }
    v
}

/// Softmax over each question's own candidates of `v / tau_u` -> `[Q, P]` (0 elsewhere).
fn utility_targets(b: &Batch, v: &[f32], questions: usize, tau_u: f32) -> Vec<f32> {
    let p = b.owner.len();
    let mut t = vec![0f32; questions * p];
    for i in 0..questions {
        let own: Vec<usize> = (0..p).filter(|&j| b.owner[j] == i).collect();
        let m = own
            .iter()
            .map(|&j| v[j] / tau_u)
            .fold(f32::NEG_INFINITY, f32::max);
        let z: f32 = own.iter().map(|&j| (v[j] / tau_u - m).exp()).sum();
        for &j in &own {
            t[i * p + j] = (v[j] / tau_u - m).exp() / z;
        }
    }
    t
}

/// The mean loss over the batch's questions. `q`: `[Q, d]`, `p`: `[P, d]`, both
/// L2-normalised; `tau` scales similarities, `tau_u` utilities. Questions with no
/// target (no candidates; for `infonce`, no gold) are left out of the mean.
pub fn batch_loss(lp: &LossParams, q: &Tensor, p: &Tensor, b: &Batch) -> Result<Tensor> {
    let (nq, _) = q.dims2()?;
    let c = Scores {
        s: (q.matmul(&p.t()?)? / lp.tau as f64)?, // [Q, P]
        nq,
        np: b.owner.len(),
        has: confident(b, nq, lp),
        v: normalized(b, nq, lp.utility_norm),
    };
    match lp.kind {
        // `auto` trains as `uae` where nothing resolved it (the trainer resolves it
        // from the labels before the first step).
        LossKind::Auto | LossKind::Uae => uae(&c, lp, b),
        LossKind::Hybrid => hybrid(&c, lp, b),
        LossKind::Kl => kl(&c, lp, b),
        LossKind::Infonce => infonce(&c, lp, b),
        LossKind::MarginMse => margin_mse(&c, lp, b),
        LossKind::UaeListwise => uae_listwise(&c, lp, b),
    }
}

/// What every loss starts from: the similarity matrix and each question's target
/// status and scaled utilities.
struct Scores {
    /// Similarities over tau, `[Q, P]`.
    s: Tensor,
    nq: usize,
    np: usize,
    /// Questions whose best candidate clears `min_utility` (all without a bar).
    has: Vec<bool>,
    /// The utilities after [`UtilityNorm`].
    v: Vec<f32>,
}

impl Scores {
    /// A `[Q, P]` matrix of `v`.
    fn matrix(&self, v: Vec<f32>) -> Result<Tensor> {
        Tensor::from_vec(v, (self.nq, self.np), self.s.device())
    }
}

/// `uae`: soft cross-entropy against the utility softmax, in-batch negatives.
fn uae(c: &Scores, lp: &LossParams, b: &Batch) -> Result<Tensor> {
    let s = &c.s;
    let nq = c.nq;
    let v = &c.v;
    let has = &c.has;
    let t = utility_targets(b, v, nq, lp.tau_u);
    soft_cross_entropy(s, &c.matrix(t)?, has)
}

/// `hybrid`: `uae` with `gold_weight` of the target on the positives.
fn hybrid(c: &Scores, lp: &LossParams, b: &Batch) -> Result<Tensor> {
    let s = &c.s;
    let nq = c.nq;
    let np = c.np;
    let v = &c.v;
    let mut t = utility_targets(b, v, nq, lp.tau_u);
    let mut has = c.has.clone();
    for i in 0..nq {
        let golds: Vec<usize> = (0..np).filter(|&j| b.owner[j] == i && b.gold[j]).collect();
        if golds.is_empty() {
            continue;
        }
        // Below the utility bar the utility softmax is noise: the positives
        // alone are the target.
        let w = if has[i] { lp.gold_weight } else { 1.0 };
        has[i] = true;
        for j in (0..np).filter(|&j| b.owner[j] == i) {
            let g = if b.gold[j] {
                1.0 / golds.len() as f32
            } else {
                0.0
            };
            t[i * np + j] = w * g + (1.0 - w) * t[i * np + j];
        }
    }
    soft_cross_entropy(s, &c.matrix(t)?, &has)
}

/// `kl`: KL of the utility and similarity distributions over the candidates.
fn kl(c: &Scores, lp: &LossParams, b: &Batch) -> Result<Tensor> {
    let s = &c.s;
    let nq = c.nq;
    let np = c.np;
    let v = &c.v;
    let has = &c.has;
    let t = utility_targets(b, v, nq, lp.tau_u);
    let mut mask = vec![NEG; nq * np];
    for (j, &i) in b.owner.iter().enumerate() {
        mask[i * np + j] = 0.0;
    }
    let lsm = candle_nn::ops::log_softmax(&s.broadcast_add(&c.matrix(mask)?)?, D::Minus1)?;
    // KL = sum t (log t - log q); the entropy term has no gradient but keeps
    // the value a true KL (0 when the distributions agree).
    let ent: Vec<f32> = t
        .iter()
        .map(|&x| if x > 0.0 { x * x.ln() } else { 0.0 })
        .collect();
    let tt = c.matrix(t)?;
    let per_q = ((c.matrix(ent)? - (tt * lsm)?)?).sum(1)?;
    masked_mean(&per_q, has)
}

/// `infonce`: the positives against everything else in the batch (multi-positive),
/// sparing useful non-positives with `spare_utility`.
fn infonce(c: &Scores, lp: &LossParams, b: &Batch) -> Result<Tensor> {
    let s = &c.s;
    let nq = c.nq;
    let np = c.np;
    // Multi-positive: the mean over gold candidates of -log softmax(s_i)_j.
    let mut t = vec![0f32; nq * np];
    let mut has = vec![false; nq];
    for i in 0..nq {
        let golds: Vec<usize> = (0..np).filter(|&j| b.owner[j] == i && b.gold[j]).collect();
        for &j in &golds {
            t[i * np + j] = 1.0 / golds.len() as f32;
        }
        has[i] = !golds.is_empty();
    }
    match lp.spare_utility {
        None => soft_cross_entropy(s, &c.matrix(t)?, &has),
        Some(bar) => {
            let mut mask = vec![0f32; nq * np];
            for (j, &i) in b.owner.iter().enumerate() {
                if !b.gold[j] && b.utility[j] >= bar {
                    mask[i * np + j] = NEG;
                }
            }
            soft_cross_entropy(&s.broadcast_add(&c.matrix(mask)?)?, &c.matrix(t)?, &has)
        }
    }
}

/// `margin-mse`: similarity margins regressed on utility margins.
fn margin_mse(c: &Scores, lp: &LossParams, b: &Batch) -> Result<Tensor> {
    let s = &c.s;
    let nq = c.nq;
    let np = c.np;
    let v = &c.v;
    let has = &c.has;
    // Every pair (j, k) of a question's own candidates; each question with a
    // pair weighs the same.
    let (mut left, mut right, mut margin, mut weight) = (vec![], vec![], vec![], vec![]);
    let own: Vec<Vec<usize>> = (0..nq)
        .map(|i| (0..np).filter(|&j| b.owner[j] == i).collect())
        .collect();
    let with_pairs = (0..nq).filter(|&i| has[i] && own[i].len() >= 2).count();
    for i in (0..nq).filter(|&i| has[i] && own[i].len() >= 2) {
        let c = &own[i];
        let pairs = (c.len() * (c.len() - 1) / 2) as f32;
        for x in 0..c.len() {
            for &k in &c[x + 1..] {
                let j = c[x];
                left.push((i * np + j) as u32);
                right.push((i * np + k) as u32);
                margin.push((v[j] - v[k]) / lp.tau_u);
                weight.push(1.0 / (pairs * with_pairs as f32));
            }
        }
    }
    let n = left.len();
    if n == 0 {
        return Tensor::zeros((), DType::F32, c.s.device());
    }
    let flat = s.flatten_all()?;
    let pick = |ix: Vec<u32>| flat.index_select(&Tensor::from_vec(ix, n, c.s.device())?, 0);
    let d = (pick(left)? - pick(right)?)?;
    let err = (d - Tensor::from_vec(margin, n, c.s.device())?)?.sqr()?;
    (err * Tensor::from_vec(weight, n, c.s.device())?)?.sum_all()
}

/// `uae-listwise`: each candidate a positive weighted by its utility share.
fn uae_listwise(c: &Scores, lp: &LossParams, b: &Batch) -> Result<Tensor> {
    let s = &c.s;
    let nq = c.nq;
    let np = c.np;
    let v = &c.v;
    let has = &c.has;
    let t = utility_targets(b, v, nq, lp.tau_u);
    // One row per (question i, own candidate j): visible are j itself, B_i and
    // own candidates of strictly lower utility.
    let mut rows = Vec::new();
    let mut masks = Vec::new();
    let mut cols = Vec::new();
    let mut weights = Vec::new();
    for (j, &i) in b.owner.iter().enumerate().filter(|&(_, &i)| has[i]) {
        rows.push(i as u32);
        cols.push(j as u32);
        weights.push(t[i * np + j] / (nq as f32));
        masks.extend((0..np).map(|k| {
            let visible = k == j || b.owner[k] != i || b.utility[k] < b.utility[j];
            if visible {
                0.0
            } else {
                NEG
            }
        }));
    }
    let n = rows.len();
    if n == 0 {
        return Tensor::zeros((), DType::F32, c.s.device());
    }
    let srows = s.index_select(&Tensor::from_vec(rows, n, c.s.device())?, 0)?;
    let lsm = candle_nn::ops::log_softmax(
        &srows.broadcast_add(&Tensor::from_vec(masks, (n, np), c.s.device())?)?,
        D::Minus1,
    )?;
    let picked = lsm
        .gather(&Tensor::from_vec(cols, (n, 1), c.s.device())?, 1)?
        .squeeze(1)?;
    let questions = has.iter().filter(|&&h| h).count().max(1) as f32;
    // Weights carry 1/Q; rescale to the mean over questions with a target.
    (picked * Tensor::from_vec(weights, n, c.s.device())?)?
        .sum_all()?
        .neg()?
        * (nq as f64 / questions as f64)
}

/// Mean over questions with a target of -sum_j t_ij log softmax(s_i)_j, over all
/// passages of the batch (own candidates and in-batch negatives).
fn soft_cross_entropy(s: &Tensor, targets: &Tensor, has: &[bool]) -> Result<Tensor> {
    let lsm = candle_nn::ops::log_softmax(s, D::Minus1)?;
    masked_mean(&(targets * lsm)?.sum(1)?.neg()?, has)
}

fn masked_mean(per_q: &Tensor, has: &[bool]) -> Result<Tensor> {
    let n = has.iter().filter(|&&h| h).count();
    if n == 0 {
        return Tensor::zeros((), DType::F32, per_q.device());
    }
    let m: Vec<f32> = has
        .iter()
        .map(|&h| if h { 1.0 / n as f32 } else { 0.0 })
        .collect();
    (per_q * Tensor::from_vec(m, has.len(), per_q.device())?)?.sum_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn unit(v: &[[f32; 2]]) -> Tensor {
        let flat: Vec<f32> = v
            .iter()
            .flat_map(|r| {
                let n = (r[0] * r[0] + r[1] * r[1]).sqrt();
                [r[0] / n, r[1] / n]
            })
            .collect();
        Tensor::from_vec(flat, (v.len(), 2), &Device::Cpu).unwrap()
    }

    /// Every loss `auto` can resolve to and every one named.
    const EVERY_LOSS: [LossKind; 6] = [
        LossKind::Uae,
        LossKind::UaeListwise,
        LossKind::Kl,
        LossKind::Infonce,
        LossKind::Hybrid,
        LossKind::MarginMse,
    ];

    fn lp(kind: LossKind, tau: f32, tau_u: f32, gold_weight: f32) -> LossParams {
        LossParams {
            kind,
            tau,
            tau_u,
            gold_weight,
            min_utility: None,
            min_gap: None,
            spare_utility: None,
            utility_norm: UtilityNorm::None,
        }
    }

    fn val(t: Tensor) -> f64 {
        t.to_scalar::<f32>().unwrap() as f64
    }

    // One question q = (1, 0); passages p0 = (1, 0), p1 = (0, 1), both its candidates.
    // With tau = 1: s = [1, 0]; softmax(s) = [0.731059, 0.268941],
    // log = [-0.313262, -1.313262].
    // Utilities u = [1, 0], tau_u = 1: pi = [0.731059, 0.268941].
    fn one_question() -> (Tensor, Tensor) {
        (unit(&[[1.0, 0.0]]), unit(&[[1.0, 0.0], [0.0, 1.0]]))
    }

    /// `one_question`'s batch: u = [1, 0], p0 gold.
    const ONE: Batch<'static> = Batch {
        owner: &[0, 0],
        utility: &[1.0, 0.0],
        gold: &[true, false],
    };

    /// The loss of `kind` at tau, tau_u and gold weight 0.5.
    fn loss_of(kind: LossKind, tau: f32, tau_u: f32, q: &Tensor, p: &Tensor, b: &Batch) -> f64 {
        val(batch_loss(&lp(kind, tau, tau_u, 0.5), q, p, b).unwrap())
    }

    #[track_caller]
    fn assert_near(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-5, "got {got}, want {want}");
    }

    /// uae = -(0.731059 * -0.313262 + 0.268941 * -1.313262) = 0.582203.
    #[test]
    fn uae_by_hand() {
        let (q, p) = one_question();
        assert_near(loss_of(LossKind::Uae, 1.0, 1.0, &q, &p, &ONE), 0.582203);
    }

    /// KL(pi || softmax(s)) = 0 when they agree (both [0.731, 0.269] here).
    #[test]
    fn kl_is_zero_when_distributions_agree() {
        let (q, p) = one_question();
        assert_near(loss_of(LossKind::Kl, 1.0, 1.0, &q, &p, &ONE), 0.0);
        // Utilities [0, 0]: pi = [0.5, 0.5]; KL = 0.5 ln(0.5/0.731059) + 0.5 ln(0.5/0.268941)
        // = 0.5 * (-0.379885) + 0.5 * 0.620115 = 0.120115.
        let b = Batch {
            utility: &[0.0, 0.0],
            ..ONE
        };
        assert_near(loss_of(LossKind::Kl, 1.0, 1.0, &q, &p, &b), 0.120115);
    }

    /// infonce with p0 gold: -log 0.731059 = 0.313262. An in-batch negative p2 = (0, 1)
    /// owned by question 1 enters the denominator: s = [1, 0, 0],
    /// -log(e / (e + 2)) = 0.551445; question 1 has no gold and is left out.
    #[test]
    fn infonce_by_hand_with_in_batch_negative() {
        let (q, p) = one_question();
        let b = Batch {
            utility: &[0.0, 0.0],
            ..ONE
        };
        assert_near(loss_of(LossKind::Infonce, 1.0, 1.0, &q, &p, &b), 0.313262);
        let q2 = unit(&[[1.0, 0.0], [0.0, 1.0]]);
        let p3 = unit(&[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]);
        let b = Batch {
            owner: &[0, 0, 1],
            utility: &[0.0; 3],
            gold: &[true, false, false],
        };
        assert_near(loss_of(LossKind::Infonce, 1.0, 1.0, &q2, &p3, &b), 0.551445);
    }

    /// hybrid is `uae` at weight 0 and `infonce` at weight 1 (every question has a
    /// positive here); in between, the loss of the mixed target is the mix of the
    /// two losses (cross-entropy is linear in the target). A question without a
    /// positive keeps its utility target at any weight.
    #[test]
    fn hybrid_mixes_uae_and_infonce() {
        let q = unit(&[[1.0, 0.2], [0.3, 1.0]]);
        let p = unit(&[[1.0, 0.0], [0.5, 1.0], [0.0, 1.0], [1.0, 1.0]]);
        let b = Batch {
            owner: &[0, 0, 1, 1],
            utility: &[0.3, 1.5, 1.0, -0.5],
            gold: &[true, false, false, true],
        };
        let loss = |k, w| val(batch_loss(&lp(k, 0.5, 1.0, w), &q, &p, &b).unwrap());
        let (uae, nce) = (loss(LossKind::Uae, 0.5), loss(LossKind::Infonce, 0.5));
        assert_near(loss(LossKind::Hybrid, 0.0), uae);
        assert_near(loss(LossKind::Hybrid, 1.0), nce);
        assert_near(loss(LossKind::Hybrid, 0.3), 0.3 * nce + 0.7 * uae);
        let none = Batch {
            gold: &[false; 4],
            ..b
        };
        let h = val(batch_loss(&lp(LossKind::Hybrid, 0.5, 1.0, 0.8), &q, &p, &none).unwrap());
        assert_near(h, uae);
    }

    /// q0 = (1, 0) owns p0 = (1, 0) (gold) and p1 = (0, 1) with u = [1, 0]; q1 = (0, 1)
    /// owns p2 = (0, 1), p3 = (1, 0) with u = [0.2, -0.5].
    fn two_questions() -> (Tensor, Tensor, Batch<'static>) {
        let q = unit(&[[1.0, 0.0], [0.0, 1.0]]);
        let p = unit(&[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]);
        let b = Batch {
            owner: &[0, 0, 1, 1],
            utility: &[1.0, 0.0, 0.2, -0.5],
            gold: &[true, false, false, false],
        };
        (q, p, b)
    }

    /// `min_utility` drops the target of a question whose best candidate is below it;
    /// its candidates stay as in-batch negatives. q0 = (1, 0) owns p0 = (1, 0) and
    /// p1 = (0, 1) with u = [1, 0]; q1 = (0, 1) owns p2 = (0, 1), p3 = (1, 0) with
    /// u = [0.2, -0.5]. tau = tau_u = 1. q0's row s = [1, 0, 0, 1],
    /// log softmax = [-1.006409, -2.006409, -2.006409, -1.006409], pi = [0.731059,
    /// 0.268941]: loss 0.731059 * 1.006409 + 0.268941 * 2.006409 = 1.275350.
    /// Hybrid (weight 0.5, p0 gold) with a bar above every utility trains q0 on its
    /// positive alone: 1.006409; with the bar under q0's best (1.0) on the mix
    /// [0.865529, 0.134471]: 1.140880.
    #[test]
    fn min_utility_gates_the_utility_target() {
        let (q, p, b) = two_questions();
        let gated = |kind, bar| {
            let params = LossParams {
                min_utility: bar,
                ..lp(kind, 1.0, 1.0, 0.5)
            };
            val(batch_loss(&params, &q, &p, &b).unwrap())
        };
        assert_near(gated(LossKind::Uae, Some(0.5)), 1.275350);
        assert!((gated(LossKind::Uae, Some(0.1)) - gated(LossKind::Uae, None)).abs() < 1e-6);
        assert!((gated(LossKind::Uae, Some(0.1)) - 1.275350).abs() > 1e-2);
        assert_eq!(gated(LossKind::Uae, Some(5.0)), 0.0);
        assert_eq!(gated(LossKind::UaeListwise, Some(5.0)), 0.0);
        assert_eq!(gated(LossKind::Kl, Some(5.0)), 0.0);
        assert_near(gated(LossKind::Hybrid, Some(5.0)), 1.006409);
        assert_near(gated(LossKind::Hybrid, Some(0.5)), 1.140880);
        // infonce has no utility target: the bar changes nothing.
        assert_eq!(
            gated(LossKind::Infonce, Some(5.0)),
            gated(LossKind::Infonce, None)
        );
    }

    /// `min_gap` is a bar on each question's own scale: the batch of
    /// `min_utility_gates_the_utility_target`, where q0's best is 1.0 ahead of its
    /// second and q1's 0.7 ahead. A gap of 0.8 keeps q0 alone (the loss of the 0.5
    /// bar, 1.275350) though q1's best is positive; 0.5 keeps both (no bar); 2 keeps
    /// neither. With both bars a question must clear each.
    #[test]
    fn min_gap_gates_on_each_question_scale() {
        let (q, p, b) = two_questions();
        let gated = |bar, gap| {
            let params = LossParams {
                min_utility: bar,
                min_gap: gap,
                ..lp(LossKind::Uae, 1.0, 1.0, 0.5)
            };
            val(batch_loss(&params, &q, &p, &b).unwrap())
        };
        assert_near(gated(None, Some(0.8)), 1.275350);
        assert_eq!(gated(None, Some(0.5)), gated(None, None));
        assert_eq!(gated(None, Some(2.0)), 0.0);
        assert_near(gated(Some(0.1), Some(0.8)), 1.275350);
        assert_eq!(gated(Some(1.5), Some(0.1)), 0.0);
        // A lone candidate has no second: only `min_utility` can drop it.
        let only = |gap| LossParams {
            min_gap: gap,
            ..lp(LossKind::Uae, 1.0, 1.0, 0.0)
        };
        assert_eq!(only(Some(9.0)).target(&[0.3], &[false]), Target::Utility);
        assert_eq!(
            only(Some(9.0)).target(&[0.3, 0.2], &[false, false]),
            Target::None
        );
    }

    /// [`LossParams::target`] says what [`batch_loss`] does with a question: no loss
    /// where it says `None`, a loss elsewhere, and `hybrid` under the bar trains the
    /// positives alone (the `infonce` loss). Every loss, with and without a bar
    /// between the question's two utilities, with and without a positive.
    #[test]
    fn target_says_what_batch_loss_trains() {
        let (q, p) = one_question();
        let mut seen = std::collections::HashSet::new();
        for kind in EVERY_LOSS {
            for (bar, gap) in [
                (None, None),
                (Some(0.5), None),
                (Some(5.0), None),
                (None, Some(0.5)),
                (None, Some(5.0)),
            ] {
                for gold in [[true, false], [false, false]] {
                    let params = LossParams {
                        min_utility: bar,
                        min_gap: gap,
                        ..lp(kind, 1.0, 0.5, 0.5)
                    };
                    let b = Batch {
                        owner: &[0, 0],
                        utility: &[1.0, 0.0],
                        gold: &gold,
                    };
                    let target = params.target(b.utility, b.gold);
                    let loss = val(batch_loss(&params, &q, &p, &b).unwrap());
                    let case =
                        format!("{kind:?}, bar {bar:?}, gap {gap:?}, gold {gold:?}: {target:?}");
                    assert_eq!(loss == 0.0, target == Target::None, "{case}, loss {loss}");
                    if kind == LossKind::Hybrid && target == Target::Positives {
                        let infonce = LossParams {
                            kind: LossKind::Infonce,
                            ..params
                        };
                        let want = val(batch_loss(&infonce, &q, &p, &b).unwrap());
                        assert_near(loss, want);
                    }
                    seen.insert(format!("{target:?}"));
                }
            }
        }
        assert_eq!(seen.len(), 3, "every kind of target was reached");
        // A question with no candidates trains nothing; margins need two.
        assert_eq!(
            lp(LossKind::Uae, 1.0, 1.0, 0.0).target(&[], &[]),
            Target::None
        );
        assert_eq!(
            lp(LossKind::MarginMse, 1.0, 1.0, 0.0).target(&[3.0], &[false]),
            Target::None
        );
    }

    /// `spare_utility` takes a question's useful non-positives out of its own softmax
    /// only. q0 = (1, 0) owns p0 = (1, 0) (gold) and p1 = (0.6, 0.8) (not gold, u 2);
    /// q1 = (0, 1) owns p2 = (0, 1) (gold). tau = 1. Plain InfoNCE, q0's row
    /// s = [1, 0.6, 0]: -log(e / (e + e^0.6 + 1)) = 0.712067; q1's row s = [0, 0.8, 1]:
    /// -log(e / (1 + e^0.8 + e)) = 0.782352; mean 0.747210. With p1 spared (bar 1.5)
    /// q0's row is -log(e / (e + 1)) = 0.313262 and q1's is unchanged (p1 is not its
    /// candidate): mean 0.547807. A bar above p1's utility changes nothing.
    #[test]
    fn spare_utility_drops_useful_negatives_from_their_own_question() {
        let q = unit(&[[1.0, 0.0], [0.0, 1.0]]);
        let p = unit(&[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]);
        let b = Batch {
            owner: &[0, 0, 1],
            utility: &[1.0, 2.0, 1.0],
            gold: &[true, false, true],
        };
        let spared = |bar| {
            let params = LossParams {
                spare_utility: bar,
                ..lp(LossKind::Infonce, 1.0, 1.0, 0.5)
            };
            val(batch_loss(&params, &q, &p, &b).unwrap())
        };
        assert_near(spared(None), 0.747210);
        assert_near(spared(Some(1.5)), 0.547807);
        assert_near(spared(Some(2.5)), 0.747210);
    }

    /// z-scores: u = [1, 0] -> [1, -1] (mean 0.5, sd 0.5); with tau_u = 2 the
    /// target is softmax([0.5, -0.5]) = [0.731059, 0.268941], the same as the raw
    /// utilities at tau_u = 1, so the loss is `uae_by_hand`'s 0.582203. Ranks: u =
    /// [1, 0] -> [0, -1], at tau_u = 1 the same again. Ties share their rank: three
    /// candidates u = [2, 2, 0] rank [-0.5, -0.5, -2]; and a question whose
    /// candidates all tie has z-scores 0 (a flat target).
    #[test]
    fn utility_norms_rescale_each_question() {
        let (q, p) = one_question();
        let normed = |norm, tau_u| {
            let params = LossParams {
                utility_norm: norm,
                ..lp(LossKind::Uae, 1.0, tau_u, 0.5)
            };
            val(batch_loss(&params, &q, &p, &ONE).unwrap())
        };
        assert_near(normed(UtilityNorm::Zscore, 2.0), 0.582203);
        assert_near(normed(UtilityNorm::Rank, 1.0), 0.582203);
        assert!((normed(UtilityNorm::Zscore, 1.0) - 0.582203).abs() > 1e-2);
        let three = Batch {
            owner: &[0, 0, 0, 1, 1],
            utility: &[2.0, 2.0, 0.0, 5.0, 5.0],
            gold: &[false; 5],
        };
        assert_eq!(
            normalized(&three, 2, UtilityNorm::Rank),
            vec![-0.5, -0.5, -2.0, -0.5, -0.5]
        );
        assert_eq!(normalized(&three, 2, UtilityNorm::Zscore)[3..], [0.0, 0.0]);
        // Scale and shift of one question's utilities change no z-score.
        let shifted = Batch {
            utility: &[7.0, 7.0, 1.0, 5.0, 5.0],
            ..three
        };
        let (a, b) = (
            normalized(&three, 2, UtilityNorm::Zscore),
            normalized(&shifted, 2, UtilityNorm::Zscore),
        );
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6));
    }

    /// margin-mse, one question: s = [1, 0] (tau 1), u = [1, 0]. At tau_u = 1 the
    /// margins agree: loss 0. At tau_u = 0.5 the utility margin is 2: (1 - 2)^2 = 1.
    /// Two questions each weigh half: q1 = (0, 1) owns p2 = (0, 1) and p3 = (1, 0)
    /// (s = [1, 0]) with u = [0, 3]: at tau_u = 1, (1 - (-3))^2 = 16; the mean with
    /// q0's 0 is 8. A question with one candidate has no pair and is left out.
    #[test]
    fn margin_mse_by_hand() {
        let (q, p) = one_question();
        let m = |tau_u, q: &Tensor, p: &Tensor, b: &Batch| {
            val(batch_loss(&lp(LossKind::MarginMse, 1.0, tau_u, 0.5), q, p, b).unwrap())
        };
        assert!(m(1.0, &q, &p, &ONE).abs() < 1e-6);
        assert_near(m(0.5, &q, &p, &ONE), 1.0);
        let q2 = unit(&[[1.0, 0.0], [0.0, 1.0]]);
        let p4 = unit(&[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]);
        let b2 = Batch {
            owner: &[0, 0, 1, 1],
            utility: &[1.0, 0.0, 0.0, 3.0],
            gold: &[false; 4],
        };
        assert!((m(1.0, &q2, &p4, &b2) - 8.0).abs() < 1e-4);
        let p3 = unit(&[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]);
        let b3 = Batch {
            owner: &[0, 0, 1],
            utility: &[1.0, 0.0, 9.0],
            gold: &[false; 3],
        };
        assert!(m(1.0, &q2, &p3, &b3).abs() < 1e-6);
    }

    /// uae-listwise, one question, u = [1, 0], pi = [0.731059, 0.268941]:
    /// row for p0 sees p0 and the lower-utility p1: -log 0.731059 = 0.313262;
    /// row for p1 sees only itself: -log 1 = 0.
    /// Loss = 0.731059 * 0.313262 + 0.268941 * 0 = 0.229014.
    #[test]
    fn listwise_by_hand() {
        let (q, p) = one_question();
        assert_near(
            loss_of(LossKind::UaeListwise, 1.0, 1.0, &q, &p, &ONE),
            0.229014,
        );
    }

    /// Gradients flow to both question and passage embeddings for every loss.
    #[test]
    fn losses_are_differentiable() {
        let q = candle_core::Var::from_tensor(&unit(&[[1.0, 0.2], [0.3, 1.0]])).unwrap();
        let p =
            candle_core::Var::from_tensor(&unit(&[[1.0, 0.0], [0.5, 1.0], [0.0, 1.0], [1.0, 1.0]]))
                .unwrap();
        let b = Batch {
            owner: &[0, 0, 1, 1],
            utility: &[2.0, 0.5, 1.0, -0.5],
            gold: &[true, false, true, false],
        };
        for kind in EVERY_LOSS {
            let l = batch_loss(&lp(kind, 0.05, 1.0, 0.5), &q, &p, &b).unwrap();
            let g = l.backward().unwrap();
            for v in [&q, &p] {
                let n = g
                    .get(v)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(n > 0.0, "{kind:?}");
            }
        }
    }
}
