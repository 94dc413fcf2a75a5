//! Calibration: from a retriever's score to what a passage is worth to the LLM.
//!
//! Fitted on held-out labelled candidates (`uae label` on dev questions): each pair
//! is the model's score of a candidate for its question and the candidate's utility
//! (how much it lowers the answer's NLL, in nats). Two maps are fitted:
//! - **expected utility**: isotonic regression (pool-adjacent-violators) of utility
//!   on score, a non-decreasing step function; between steps the two neighbouring
//!   levels are interpolated linearly, beyond them the end levels hold;
//! - **p(helps)**, the probability that utility >= [`HELPS_NATS`]: isotonic
//!   regression of the 0/1 outcome, or a logistic fit, whichever has the lower log
//!   loss on a held-out fifth of the pairs (isotonic follows any monotone shape but
//!   overfits few pairs; the logistic is smooth and needs little data). The choice
//!   and both losses are recorded.
//!
//! Optionally a third: p(helps) given the question as well ([`crate::question`]),
//! and a fourth on top, given the passage's BM25 rank as well ([`crate::lexical`]),
//! each kept only where it holds out better.
//!
//! ECE (expected calibration error over equal-width bins) and the Brier score
//! measure how well probabilities match outcomes.

use crate::lexical::LexicalTerm;
use crate::question::QuestionTerm;
use serde::{Deserialize, Serialize};

/// A passage "helps" when it lowers the answer's NLL by at least this much (nats).
pub const HELPS_NATS: f32 = 1.0;

/// A non-decreasing step function fitted by pool-adjacent-violators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Isotonic {
    /// Block centres (mean score of each pooled block), increasing.
    pub x: Vec<f64>,
    /// Block levels (weighted mean target), non-decreasing.
    pub y: Vec<f64>,
}

impl Isotonic {
    /// Fits `targets` on `scores` (same length, at least one pair; non-finite pairs
    /// are dropped). `None` when no finite pair is left.
    pub fn fit(scores: &[f32], targets: &[f32]) -> Option<Isotonic> {
        let mut pairs: Vec<(f64, f64)> = scores
            .iter()
            .zip(targets)
            .filter(|(s, t)| s.is_finite() && t.is_finite())
            .map(|(&s, &t)| (s as f64, t as f64))
            .collect();
        if pairs.is_empty() {
            return None;
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Blocks: (sum of x, sum of y, count); equal scores start pooled.
        let mut blocks: Vec<(f64, f64, f64)> = Vec::new();
        for (x, y) in pairs {
            match blocks.last_mut() {
                Some(b) if b.0 / b.2 == x => {
                    b.0 += x;
                    b.1 += y;
                    b.2 += 1.0;
                }
                _ => blocks.push((x, y, 1.0)),
            }
            while blocks.len() >= 2 {
                let n = blocks.len();
                let (a, b) = (blocks[n - 2], blocks[n - 1]);
                if a.1 / a.2 <= b.1 / b.2 {
                    break;
                }
                blocks.truncate(n - 2);
                blocks.push((a.0 + b.0, a.1 + b.1, a.2 + b.2));
            }
        }
        Some(Isotonic {
            x: blocks.iter().map(|b| b.0 / b.2).collect(),
            y: blocks.iter().map(|b| b.1 / b.2).collect(),
        })
    }

    /// The fitted value at `score`.
    pub fn predict(&self, score: f32) -> f64 {
        let s = score as f64;
        let n = self.x.len();
        if n == 0 {
            return 0.0;
        }
        // At or below the first centre, and for a NaN score: the lowest level.
        if s.is_nan() || s <= self.x[0] {
            return self.y[0];
        }
        if s >= self.x[n - 1] {
            return self.y[n - 1];
        }
        let i = self.x.partition_point(|&x| x <= s);
        let (x0, x1, y0, y1) = (self.x[i - 1], self.x[i], self.y[i - 1], self.y[i]);
        y0 + (y1 - y0) * (s - x0) / (x1 - x0)
    }
}

/// `p = 1 / (1 + exp(-(a * score + b)))`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    pub a: f64,
    pub b: f64,
}

impl Logistic {
    /// Maximum likelihood by Newton's method (a small ridge keeps separable data
    /// finite). `None` without a finite pair.
    pub fn fit(scores: &[f32], outcomes: &[bool]) -> Option<Logistic> {
        let pairs: Vec<(f64, f64)> = scores
            .iter()
            .zip(outcomes)
            .filter(|(s, _)| s.is_finite())
            .map(|(&s, &o)| (s as f64, if o { 1.0 } else { 0.0 }))
            .collect();
        if pairs.is_empty() {
            return None;
        }
        let ridge = 1e-3;
        let (mut a, mut b) = (0.0f64, 0.0f64);
        for _ in 0..100 {
            let (mut ga, mut gb, mut haa, mut hab, mut hbb) =
                (ridge * a, ridge * b, ridge, 0.0, ridge);
            for &(x, y) in &pairs {
                let p = sigmoid(a * x + b);
                let w = (p * (1.0 - p)).max(1e-12);
                ga += (p - y) * x;
                gb += p - y;
                haa += w * x * x;
                hab += w * x;
                hbb += w;
            }
            let det = haa * hbb - hab * hab;
            if det.abs() < 1e-18 {
                break;
            }
            let da = (hbb * ga - hab * gb) / det;
            let db = (haa * gb - hab * ga) / det;
            a -= da;
            b -= db;
            if da.abs() + db.abs() < 1e-10 {
                break;
            }
        }
        (a.is_finite() && b.is_finite()).then_some(Logistic { a, b })
    }

    pub fn predict(&self, score: f32) -> f64 {
        sigmoid(self.a * score as f64 + self.b)
    }
}

pub(crate) fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The fitted p(helps) map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum HelpsMap {
    Isotonic(Isotonic),
    Logistic(Logistic),
}

impl HelpsMap {
    pub fn predict(&self, score: f32) -> f64 {
        match self {
            HelpsMap::Isotonic(m) => m.predict(score).clamp(0.0, 1.0),
            HelpsMap::Logistic(m) => m.predict(score),
        }
    }
}

/// Both maps, and how the p(helps) map was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibrator {
    pub expected_utility: Isotonic,
    pub p_helps: HelpsMap,
    /// Held-out log loss of each p(helps) candidate (isotonic, logistic).
    pub held_out_log_loss: (f64, f64),
    /// Pairs fitted on.
    pub pairs: usize,
    /// p(helps) given the question too (its predicted difficulty for the LLM), kept
    /// when it held out better than the cosine alone ([`QuestionTerm::fit`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<QuestionTerm>,
    /// p(helps) given the passage's BM25 rank too (and the question's difficulty when
    /// `question` is kept), kept when it held out better ([`LexicalTerm::fit`]).
    /// Read where the caller ranks the query's candidates by BM25
    /// ([`QueryCalibration::predict_lexical`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical: Option<LexicalTerm>,
}

/// A calibration applied to one query: its predicted difficulty computed once.
#[derive(Debug, Clone, Copy)]
pub struct QueryCalibration<'a> {
    calibrator: &'a Calibrator,
    difficulty: Option<f64>,
}

impl QueryCalibration<'_> {
    /// (expected utility in nats, p(helps)) of a passage scored `score` at BM25 rank
    /// `rank` for this query (from 1; `None`: not among the top
    /// [`crate::lexical::LEXICAL_DEPTH`]). Without a lexical term, [`Self::predict`].
    pub fn predict_lexical(&self, score: f32, rank: Option<usize>) -> (f64, f64) {
        match &self.calibrator.lexical {
            Some(l) => (
                self.calibrator.expected_utility.predict(score),
                l.p_helps(score, self.difficulty, rank),
            ),
            None => self.predict(score),
        }
    }

    /// (expected utility in nats, p(helps)) of a passage scored `score` for this
    /// query, its BM25 rank unknown.
    pub fn predict(&self, score: f32) -> (f64, f64) {
        let c = self.calibrator;
        let p = match (&c.question, self.difficulty) {
            (Some(t), Some(d)) => t.p_helps(score, d),
            _ => c.p_helps.predict(score),
        };
        (c.expected_utility.predict(score), p)
    }
}

/// Mean log loss of probabilities against outcomes (probabilities clamped away
/// from 0 and 1).
pub fn log_loss(p: &[f64], outcomes: &[bool]) -> f64 {
    let n = p.len().max(1) as f64;
    p.iter()
        .zip(outcomes)
        .map(|(&p, &o)| {
            let p = p.clamp(1e-6, 1.0 - 1e-6);
            if o {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum::<f64>()
        / n
}

/// Mean squared difference of probabilities and outcomes.
pub fn brier(p: &[f64], outcomes: &[bool]) -> f64 {
    let n = p.len().max(1) as f64;
    p.iter()
        .zip(outcomes)
        .map(|(&p, &o)| (p - if o { 1.0 } else { 0.0 }).powi(2))
        .sum::<f64>()
        / n
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    pub mean_predicted: f64,
    pub observed: f64,
    pub count: usize,
}

/// Expected calibration error over `bins` equal-width bins of [0, 1], and the bins
/// (empty ones left out): the count-weighted mean |observed - predicted|.
pub fn ece(p: &[f64], outcomes: &[bool], bins: usize) -> (f64, Vec<Bin>) {
    let bins = bins.max(1);
    let mut acc = vec![(0.0f64, 0.0f64, 0usize); bins];
    for (&p, &o) in p.iter().zip(outcomes) {
        let i = ((p.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        acc[i].0 += p;
        acc[i].1 += if o { 1.0 } else { 0.0 };
        acc[i].2 += 1;
    }
    let n = p.len().max(1) as f64;
    let out: Vec<Bin> = acc
        .into_iter()
        .filter(|b| b.2 > 0)
        .map(|(sp, so, c)| Bin {
            mean_predicted: sp / c as f64,
            observed: so / c as f64,
            count: c,
        })
        .collect();
    let e = out
        .iter()
        .map(|b| b.count as f64 / n * (b.observed - b.mean_predicted).abs())
        .sum();
    (e, out)
}

/// A 95% interval of [`ece`] by resampling questions (each pair belongs to
/// `question[i]`), so the error of a check on a few hundred pairs is read with its
/// noise: the 2.5th and 97.5th percentiles of `rounds` resamples.
pub fn ece_interval(
    p: &[f64],
    outcomes: &[bool],
    question: &[usize],
    bins: usize,
    rounds: usize,
) -> [f64; 2] {
    let mut by_question: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, &q) in question
        .iter()
        .enumerate()
        .take(p.len().min(outcomes.len()))
    {
        by_question.entry(q).or_default().push(i);
    }
    let groups: Vec<Vec<usize>> = by_question.into_values().collect();
    if groups.is_empty() {
        return [f64::NAN, f64::NAN];
    }
    let mut rng = uae_core::SplitMix64::new(0x0ECE);
    let (mut sp, mut so) = (Vec::new(), Vec::new());
    let eces: Vec<f64> = (0..rounds.max(1))
        .map(|_| {
            sp.clear();
            so.clear();
            for _ in 0..groups.len() {
                let g = &groups[(rng.next_u64() % groups.len() as u64) as usize];
                sp.extend(g.iter().map(|&i| p[i]));
                so.extend(g.iter().map(|&i| outcomes[i]));
            }
            ece(&sp, &so, bins).0
        })
        .collect();
    [
        crate::percentile(&eces, 2.5),
        crate::percentile(&eces, 97.5),
    ]
}

impl Calibrator {
    /// Fits both maps on (score, utility) pairs. Every fifth pair (by position)
    /// is held out to choose the p(helps) map, which is then refitted on all pairs.
    /// `None` with fewer than 10 finite pairs.
    pub fn fit(scores: &[f32], utilities: &[f32]) -> Option<Calibrator> {
        let pairs: Vec<(f32, f32)> = scores
            .iter()
            .zip(utilities)
            .filter(|(s, u)| s.is_finite() && u.is_finite())
            .map(|(&s, &u)| (s, u))
            .collect();
        if pairs.len() < 10 {
            return None;
        }
        let (s, u): (Vec<f32>, Vec<f32>) = pairs.iter().copied().unzip();
        let helps: Vec<bool> = u.iter().map(|&u| u >= HELPS_NATS).collect();
        let split = |keep: bool| -> (Vec<f32>, Vec<bool>) {
            s.iter()
                .zip(&helps)
                .enumerate()
                .filter(|(i, _)| (i % 5 == 4) == keep)
                .map(|(_, (&s, &h))| (s, h))
                .unzip()
        };
        let (fit_s, fit_h) = split(false);
        let (held_s, held_h) = split(true);
        let as_f32 =
            |h: &[bool]| -> Vec<f32> { h.iter().map(|&b| f32::from(u8::from(b))).collect() };
        let iso = Isotonic::fit(&fit_s, &as_f32(&fit_h))?;
        let logi = Logistic::fit(&fit_s, &fit_h)?;
        let iso_loss = log_loss(
            &held_s.iter().map(|&x| iso.predict(x)).collect::<Vec<_>>(),
            &held_h,
        );
        let logi_loss = log_loss(
            &held_s.iter().map(|&x| logi.predict(x)).collect::<Vec<_>>(),
            &held_h,
        );
        let p_helps = if iso_loss < logi_loss {
            HelpsMap::Isotonic(Isotonic::fit(&s, &as_f32(&helps))?)
        } else {
            HelpsMap::Logistic(Logistic::fit(&s, &helps)?)
        };
        Some(Calibrator {
            expected_utility: Isotonic::fit(&s, &u)?,
            p_helps,
            held_out_log_loss: (iso_loss, logi_loss),
            pairs: pairs.len(),
            question: None,
            lexical: None,
        })
    }

    /// (expected utility in nats, p(helps)) of a passage scored `score`, by the
    /// cosine alone (no query at hand; see [`Calibrator::for_query`]).
    pub fn predict(&self, score: f32) -> (f64, f64) {
        (
            self.expected_utility.predict(score),
            self.p_helps.predict(score),
        )
    }

    /// The calibration for the query embedded as `query` (the model's query vector):
    /// with a question term, p(helps) also reads the query's predicted difficulty.
    pub fn for_query(&self, query: &[f32]) -> QueryCalibration<'_> {
        QueryCalibration {
            calibrator: self,
            difficulty: self.question.as_ref().map(|t| t.difficulty.predict(query)),
        }
    }

    /// Whether predictions read the query ([`Calibrator::for_query`]).
    pub fn reads_query(&self) -> bool {
        self.question.is_some()
    }

    /// Whether p(helps) reads each passage's BM25 rank for the query.
    pub fn reads_lexical(&self) -> bool {
        self.lexical.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uae_core::SplitMix64;

    fn uniform(rng: &mut SplitMix64) -> f64 {
        (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Perfectly calibrated probabilities: the ECE interval holds the sample's own
    /// ECE and shrinks with more questions; miscalibrated ones sit clear of 0.
    #[test]
    fn ece_interval_resamples_questions() {
        let mut rng = SplitMix64::new(9);
        let make = |rng: &mut SplitMix64, questions: usize, shift: f64| {
            let (mut p, mut o, mut q) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..questions {
                for _ in 0..5 {
                    let truth = uniform(rng) * 0.6;
                    p.push((truth + shift).clamp(0.0, 1.0));
                    o.push(uniform(rng) < truth);
                    q.push(i);
                }
            }
            (p, o, q)
        };
        let (p, o, q) = make(&mut rng, 150, 0.0);
        let [lo, hi] = ece_interval(&p, &o, &q, 10, 500);
        let e = ece(&p, &o, 10).0;
        assert!(lo <= e && e <= hi && hi < 0.1, "{lo} {e} {hi}");
        let (p, o, q) = make(&mut rng, 3_000, 0.0);
        let [lo2, hi2] = ece_interval(&p, &o, &q, 10, 200);
        assert!(hi2 - lo2 < (hi - lo) / 2.0, "{lo2} {hi2} against {lo} {hi}");
        let (p, o, q) = make(&mut rng, 150, 0.15);
        let [lo, _] = ece_interval(&p, &o, &q, 10, 500);
        assert!(lo > 0.08, "{lo}");
        assert!(ece_interval(&[], &[], &[], 10, 10)[0].is_nan());
    }

    #[test]
    fn pav_pools_violators_and_interpolates() {
        let m = Isotonic::fit(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!(m.y, vec![1.0, 2.5, 4.0]);
        assert_eq!(m.x, vec![1.0, 2.5, 4.0]);
        assert_eq!(m.predict(0.0), 1.0);
        assert_eq!(m.predict(9.0), 4.0);
        assert!((m.predict(3.25) - 3.25).abs() < 1e-12);
        // Non-decreasing whatever the data.
        let m = Isotonic::fit(&[5.0, 4.0, 3.0, 2.0, 1.0], &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!(m.y, vec![3.0]);
        assert!(Isotonic::fit(&[f32::NAN], &[1.0]).is_none());
    }

    /// Scores uniform in [-1, 1]; a passage helps with probability sigmoid(4s - 1),
    /// and its utility is 2s + noise: the fit recovers both.
    #[test]
    fn recovers_a_known_logistic_and_a_linear_utility() {
        let mut rng = SplitMix64::new(7);
        let n = 20_000;
        let (mut s, mut u) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let x = (uniform(&mut rng) * 2.0 - 1.0) as f32;
            let helps = uniform(&mut rng) < sigmoid(4.0 * x as f64 - 1.0);
            // Utility at least 1 nat exactly when it helps; its level follows x.
            let level = 2.0 * x + (uniform(&mut rng) as f32 - 0.5) * 0.1;
            s.push(x);
            u.push(if helps {
                1.0 + level.abs()
            } else {
                -level.abs()
            });
        }
        let helps: Vec<bool> = u.iter().map(|&v| v >= HELPS_NATS).collect();
        let l = Logistic::fit(&s, &helps).unwrap();
        assert!((l.a - 4.0).abs() < 0.2 && (l.b + 1.0).abs() < 0.1, "{l:?}");
        let c = Calibrator::fit(&s, &u).unwrap();
        for x in [-0.8f32, -0.2, 0.3, 0.9] {
            let p = c.p_helps.predict(x);
            assert!(
                (p - sigmoid(4.0 * x as f64 - 1.0)).abs() < 0.05,
                "p({x}) = {p}"
            );
        }
        let probs: Vec<f64> = s.iter().map(|&x| c.p_helps.predict(x)).collect();
        let (e, bins) = ece(&probs, &helps, 10);
        assert!(e < 0.02, "ECE {e}");
        assert!(bins.iter().map(|b| b.count).sum::<usize>() == n);
        assert!(brier(&probs, &helps) < 0.25);
        // Expected utility rises with the score.
        assert!(c.predict(0.9).0 > c.predict(0.0).0 && c.predict(0.0).0 > c.predict(-0.9).0);
    }

    #[test]
    fn ece_and_brier_of_known_cases() {
        let (e, bins) = ece(&[0.25, 0.25, 0.75, 0.75], &[false, true, true, true], 2);
        // Bin 1: predicted .25, observed .5; bin 2: .75 vs 1.
        assert!((e - 0.25).abs() < 1e-12, "{e}");
        assert_eq!(bins.len(), 2);
        assert!((brier(&[1.0, 0.0], &[true, true]) - 0.5).abs() < 1e-12);
        assert!(Calibrator::fit(&[0.1; 5], &[1.0; 5]).is_none());
    }
}
