//! The lexical term of a calibration: whether a passage helps the LLM depends on
//! whether it holds the question's words, which a small bi-encoder's cosine only
//! partly sees. Among a question's top passages, the passage's BM25 rank over the
//! question's candidates (its scope, or the corpus) separates those that help from
//! those that do not better than any other passage feature measured (BENCHMARKS.md,
//! "What BM25 knows about a passage's utility").
//!
//! - **feature**: `ln(r)`, `r` the passage's BM25 rank from 1, capped at
//!   [`LEXICAL_DEPTH`] + 1 (a passage below the top [`LEXICAL_DEPTH`], or sharing no
//!   word with the question);
//! - **p(helps)** = `sigmoid(a * cosine + c * difficulty + e * ln(r) + b)`, the
//!   difficulty being the question term's prediction ([`crate::question`]) when the
//!   calibration keeps one (`c` = 0 otherwise), fitted on the labelled pairs with
//!   the difficulty predicted out of fold.
//!
//! [`LexicalTerm::fit`] keeps the term only when it lowers the log loss held out by
//! question against the same logistic without the rank.

use crate::calibrate::{log_loss, sigmoid};
use crate::question::{fit_logistic, fold, FOLDS};
use serde::{Deserialize, Serialize};

/// How deep a BM25 ranking is read for the rank feature: `/search`'s hybrid depth.
pub const LEXICAL_DEPTH: usize = 100;

/// The feature of a passage at BM25 rank `rank` (from 1; `None` or past `depth`:
/// not among the top `depth`).
pub fn rank_feature(rank: Option<usize>, depth: usize) -> f64 {
    let cap = depth.max(1) + 1;
    (rank.unwrap_or(cap).clamp(1, cap) as f64).ln()
}

/// Passage -> its BM25 rank (from 1) for the first `depth` hits of `bm25`, a ranking
/// best first.
pub fn rank_map(bm25: &[uae_core::Hit], depth: usize) -> std::collections::HashMap<usize, usize> {
    bm25.iter()
        .take(depth)
        .enumerate()
        .map(|(r, h)| (h.passage, r + 1))
        .collect()
}

/// Each passage's BM25 rank (from 1) in `bm25`, a ranking best first, or `None`
/// when it is not among its first `depth`.
pub fn ranks_in(bm25: &[uae_core::Hit], passages: &[usize], depth: usize) -> Vec<Option<usize>> {
    let at = rank_map(bm25, depth);
    passages.iter().map(|p| at.get(p).copied()).collect()
}

/// A labelled pair for the lexical term: the model's score, the passage's BM25 rank
/// for its question (`None`: not in the top [`LEXICAL_DEPTH`]), whether it helped,
/// and its question (an index into the calibration questions).
#[derive(Debug, Clone, Copy)]
pub struct LexicalRow {
    pub score: f32,
    pub rank: Option<usize>,
    pub helps: bool,
    pub question: usize,
}

/// p(helps | cosine, the question's predicted difficulty, the passage's BM25 rank).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LexicalTerm {
    /// `p = sigmoid(a * cosine + c * difficulty + e * ln(rank) + b)`.
    pub a: f64,
    pub c: f64,
    pub e: f64,
    pub b: f64,
    /// Ranks past this count as `depth + 1`.
    pub depth: usize,
    /// Whether `c` reads the question term's difficulty.
    pub reads_difficulty: bool,
    /// Log loss held out by question: this map, and the same without the rank.
    pub held_out_log_loss: (f64, f64),
}

/// (features, helps, fold) of one pair.
type Row = (Vec<f64>, bool, usize);

impl LexicalTerm {
    /// p(helps) of a passage scored `score` at BM25 rank `rank` for a question of
    /// predicted `difficulty` (read only when the term was fitted with one).
    pub fn p_helps(&self, score: f32, difficulty: Option<f64>, rank: Option<usize>) -> f64 {
        let d = if self.reads_difficulty {
            difficulty.unwrap_or(0.0)
        } else {
            0.0
        };
        let z =
            self.a * score as f64 + self.c * d + self.e * rank_feature(rank, self.depth) + self.b;
        sigmoid(z)
    }

    /// Fits the term on `pairs`; `difficulty[q]`: question `q`'s out-of-fold
    /// predicted difficulty, when the calibration keeps a question term. `None` with
    /// fewer than 2 questions per fold, or when the rank does not lower the held-out
    /// log loss.
    pub fn fit(pairs: &[LexicalRow], difficulty: Option<&[f64]>) -> Option<LexicalTerm> {
        let questions: std::collections::HashSet<usize> =
            pairs.iter().map(|p| p.question).collect();
        if questions.len() < 2 * FOLDS {
            return None;
        }
        let rows: Vec<Row> = pairs
            .iter()
            .filter(|p| p.score.is_finite())
            .filter_map(|p| {
                let mut x = vec![p.score as f64];
                if let Some(d) = difficulty {
                    x.push(*d.get(p.question).filter(|v| v.is_finite())?);
                }
                x.push(rank_feature(p.rank, LEXICAL_DEPTH));
                Some((x, p.helps, fold(p.question)))
            })
            .collect();
        let held_out_log_loss = held_out(&rows)?;
        if held_out_log_loss.0 >= held_out_log_loss.1 {
            return None;
        }
        let all: Vec<(Vec<f64>, bool)> = rows.iter().map(|r| (r.0.clone(), r.1)).collect();
        let t = fit_logistic(&all)?;
        let (c, e, b) = match difficulty {
            Some(_) => (t[1], t[2], t[3]),
            None => (0.0, t[1], t[2]),
        };
        Some(LexicalTerm {
            a: t[0],
            c,
            e,
            b,
            depth: LEXICAL_DEPTH,
            reads_difficulty: difficulty.is_some(),
            held_out_log_loss,
        })
    }
}

/// Log loss held out by question: of the logistic on every feature, and of the same
/// without the last (the rank). `None` when a fit fails or nothing is held out.
fn held_out(rows: &[Row]) -> Option<(f64, f64)> {
    let without = |x: &[f64]| x[..x.len() - 1].to_vec();
    let predict = |t: &[f64], x: &[f64]| {
        sigmoid(x.iter().zip(t).map(|(a, w)| a * w).sum::<f64>() + t[t.len() - 1])
    };
    let (mut p_with, mut p_without, mut outcomes) = (Vec::new(), Vec::new(), Vec::new());
    for f in 0..FOLDS {
        let (fit, held): (Vec<&Row>, Vec<&Row>) = rows.iter().partition(|r| r.2 != f);
        if held.is_empty() {
            continue;
        }
        let with = fit_logistic(&fit.iter().map(|r| (r.0.clone(), r.1)).collect::<Vec<_>>())?;
        let base = fit_logistic(&fit.iter().map(|r| (without(&r.0), r.1)).collect::<Vec<_>>())?;
        for r in held {
            p_with.push(predict(&with, &r.0));
            p_without.push(predict(&base, &without(&r.0)));
            outcomes.push(r.1);
        }
    }
    (!outcomes.is_empty()).then(|| {
        (
            log_loss(&p_with, &outcomes),
            log_loss(&p_without, &outcomes),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uae_core::{Hit, SplitMix64};

    fn uniform(rng: &mut SplitMix64) -> f64 {
        (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn rank_feature_caps_past_the_depth() {
        assert_eq!(rank_feature(Some(1), 100), 0.0);
        assert!((rank_feature(Some(10), 100) - 10f64.ln()).abs() < 1e-12);
        assert_eq!(rank_feature(None, 100), 101f64.ln());
        assert_eq!(rank_feature(Some(5_000), 100), 101f64.ln());
        assert_eq!(
            rank_feature(Some(0), 100),
            0.0,
            "a rank below 1 counts as 1"
        );
        let bm25: Vec<Hit> = [7, 3, 9]
            .iter()
            .map(|&passage| Hit {
                passage,
                score: 1.0,
            })
            .collect();
        assert_eq!(
            ranks_in(&bm25, &[3, 4, 7, 9], 2),
            vec![Some(2), None, Some(1), None]
        );
    }

    /// Pairs whose help depends on the BM25 rank as well as the cosine: the term is
    /// kept, holds out better, recovers the generating coefficients (with and without
    /// a difficulty beside it); when the rank is noise, no term is kept.
    #[test]
    fn keeps_a_lexical_term_only_when_the_rank_predicts_help() {
        let mut rng = SplitMix64::new(5);
        let make = |rng: &mut SplitMix64, informative: bool| {
            let mut pairs = Vec::new();
            let mut diff = Vec::new();
            for q in 0..400 {
                let d = uniform(rng) * 4.0;
                diff.push(d);
                for _ in 0..5 {
                    let s = (uniform(rng) * 0.8) as f32;
                    let rank = 1 + (uniform(rng) * 60.0) as usize;
                    let lex = if informative {
                        -0.8 * (rank as f64).ln()
                    } else {
                        0.0
                    };
                    let p = sigmoid(2.0 * s as f64 + 0.5 * d + lex + 0.5);
                    pairs.push(LexicalRow {
                        score: s,
                        rank: Some(rank),
                        helps: uniform(rng) < p,
                        question: q,
                    });
                }
            }
            (pairs, diff)
        };
        let (pairs, diff) = make(&mut rng, true);
        let t = LexicalTerm::fit(&pairs, Some(&diff)).expect("an informative rank");
        assert!(
            t.held_out_log_loss.0 < t.held_out_log_loss.1 - 0.01,
            "{t:?}"
        );
        assert!((t.e + 0.8).abs() < 0.25 && (t.c - 0.5).abs() < 0.2, "{t:?}");
        assert!(t.reads_difficulty);
        // The top BM25 hit is likelier to help than the 50th at the same cosine.
        let (top, deep) = (
            t.p_helps(0.4, Some(2.0), Some(1)),
            t.p_helps(0.4, Some(2.0), Some(50)),
        );
        assert!(top > deep + 0.3, "{top} {deep}");
        // Without a difficulty the rank still tells.
        let alone = LexicalTerm::fit(&pairs, None).expect("the rank alone");
        assert!(
            !alone.reads_difficulty && alone.c == 0.0 && alone.e < -0.4,
            "{alone:?}"
        );

        let (pairs, diff) = make(&mut rng, false);
        assert!(LexicalTerm::fit(&pairs, Some(&diff)).is_none());
        assert!(
            LexicalTerm::fit(&pairs[..20], None).is_none(),
            "too few questions"
        );
    }
}
