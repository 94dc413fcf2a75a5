//! Hybrid retrieval: two rankings of one query's candidates (dense and BM25) fused
//! into one, as vector databases do.
//!
//! - [`Fusion::Rrf`]: reciprocal rank fusion (Cormack, Clarke and Büttcher 2009):
//!   `score(p) = sum over rankings of 1 / (k + rank(p))`, rank from 1; a passage
//!   missing from a ranking adds nothing. Scores need no scale and nothing to tune
//!   (k = 60, the paper's and Elasticsearch's). The default, as issue 30 fixed it:
//!   it needs no dev set and no per-model weight.
//! - [`Fusion::Convex`]: `w * dense' + (1 - w) * bm25'` of min-max normalised scores
//!   (per query, over the union; a missing passage scores its ranking's minimum),
//!   with `w` chosen on dev. Chosen on QASPER dev for the base MiniLM, `w` = 0.7
//!   beat RRF on QASPER test and on SciFact (MAP +6.7% and +4.9%, intervals above
//!   0); a fine-tuned model wants its own weight (BENCHMARKS.md, "Hybrid
//!   retrieval"; `scripts/fusion_weight.sh`).
//!
//! Ties are broken by corpus position, as every ranking here is.

use uae_core::{hit_order, Hit};

/// How two rankings are fused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fusion {
    /// Reciprocal rank fusion with constant `k` (> 0).
    Rrf { k: f32 },
    /// `dense_weight * dense + (1 - dense_weight) * bm25`, scores min-max normalised.
    Convex { dense_weight: f32 },
}

/// Convex fusion's dense weight when none is given: QASPER dev's best for the base
/// MiniLM (see the module's notes).
pub const DEFAULT_DENSE_WEIGHT: f32 = 0.7;
/// Reciprocal rank fusion's constant, as the paper and Elasticsearch use it.
pub const DEFAULT_RRF_K: f32 = 60.0;

impl Default for Fusion {
    fn default() -> Self {
        Fusion::Rrf { k: DEFAULT_RRF_K }
    }
}

impl Fusion {
    /// The fused ranking of `dense` and `bm25` (each best first), cut to `depth`.
    pub fn fuse(&self, dense: &[Hit], bm25: &[Hit], depth: Option<usize>) -> Vec<Hit> {
        let mut scores: std::collections::HashMap<usize, f32> = std::collections::HashMap::new();
        match *self {
            Fusion::Rrf { k } => {
                for list in [dense, bm25] {
                    for (r, h) in list.iter().enumerate() {
                        *scores.entry(h.passage).or_default() += 1.0 / (k + (r + 1) as f32);
                    }
                }
            }
            Fusion::Convex { dense_weight } => {
                for p in dense.iter().chain(bm25) {
                    scores.insert(p.passage, 0.0);
                }
                for (list, w) in [(dense, dense_weight), (bm25, 1.0 - dense_weight)] {
                    let lo = list.iter().map(|h| h.score).fold(f32::INFINITY, f32::min);
                    let hi = list
                        .iter()
                        .map(|h| h.score)
                        .fold(f32::NEG_INFINITY, f32::max);
                    let span = hi - lo;
                    let by: std::collections::HashMap<usize, f32> =
                        list.iter().map(|h| (h.passage, h.score)).collect();
                    for (p, s) in scores.iter_mut() {
                        let raw = by.get(p).copied().unwrap_or(lo);
                        if span > 0.0 && span.is_finite() {
                            *s += w * (raw - lo) / span;
                        }
                    }
                }
            }
        }
        let mut hits: Vec<Hit> = scores
            .into_iter()
            .map(|(passage, score)| Hit { passage, score })
            .collect();
        hits.sort_by(hit_order);
        if let Some(d) = depth {
            hits.truncate(d);
        }
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(ids: &[usize]) -> Vec<Hit> {
        ids.iter()
            .enumerate()
            .map(|(r, &passage)| Hit {
                passage,
                score: 10.0 - r as f32,
            })
            .collect()
    }

    #[test]
    fn rrf_sums_reciprocal_ranks() {
        // 3 is 2nd and 1st: 1/62 + 1/61 beats 1 (1st, missing: 1/61).
        let f = Fusion::Rrf { k: 60.0 }.fuse(&hits(&[1, 3, 5]), &hits(&[3, 7]), None);
        let order: Vec<usize> = f.iter().map(|h| h.passage).collect();
        assert_eq!(order, vec![3, 1, 7, 5]);
        assert!((f[0].score - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-7);
        // Equal fused scores break by corpus position.
        let t = Fusion::Rrf { k: 60.0 }.fuse(&hits(&[9]), &hits(&[2]), Some(1));
        assert_eq!(t[0].passage, 2);
    }

    #[test]
    fn convex_weights_normalised_scores() {
        let dense = vec![
            Hit {
                passage: 0,
                score: 0.9,
            },
            Hit {
                passage: 1,
                score: 0.5,
            },
            Hit {
                passage: 2,
                score: 0.1,
            },
        ];
        let bm25 = vec![
            Hit {
                passage: 2,
                score: 12.0,
            },
            Hit {
                passage: 1,
                score: 6.0,
            },
            Hit {
                passage: 0,
                score: 0.0,
            },
        ];
        // Normalised: dense 1, .5, 0; bm25 0, .5, 1.
        let only_dense = Fusion::Convex { dense_weight: 1.0 }.fuse(&dense, &bm25, None);
        assert_eq!(only_dense[0].passage, 0);
        let only_bm25 = Fusion::Convex { dense_weight: 0.0 }.fuse(&dense, &bm25, None);
        assert_eq!(only_bm25[0].passage, 2);
        let even = Fusion::Convex { dense_weight: 0.5 }.fuse(&dense, &bm25, None);
        assert!(
            even.iter().all(|h| (h.score - 0.5).abs() < 1e-6),
            "{even:?}"
        );
        assert_eq!(even[0].passage, 0, "ties by corpus position");
    }
}
