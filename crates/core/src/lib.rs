//! Shared vocabulary of `uae`: passages, queries, hits, and the ranking order.
//!
//! This crate has no ML dependencies: every stage can name a passage or a hit
//! without pulling in candle. It also holds the plumbing every stage shares:
//! content hashing ([`hash`]), the durable append-only store ([`store`]), atomic
//! file replacement ([`fs`]), line-by-line reading of input files ([`lines`]), seeded generators ([`rng`]) and the progress callback
//! ([`progress`]) through which libraries report long work.

pub mod error;
#[cfg(feature = "cli")]
pub mod flags;
pub mod fs;
pub mod hash;
pub mod lines;
pub mod progress;
pub mod rng;
pub mod store;

pub use error::{Error, Result};
pub use progress::{NoProgress, Progress};
pub use rng::{Lcg64, SplitMix64};
pub use store::{Keyed, Store};

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// A retrievable unit of text (a QASPER paragraph, a BEIR document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    /// Unique id, e.g. `{paper_id}#{n}` for QASPER.
    pub id: String,
    /// The retrieval scope the passage belongs to (the paper for QASPER); `None`
    /// means the passage is searched corpus-wide.
    pub scope: Option<String>,
    /// Free-form label shown to people (QASPER: the section name).
    pub section: Option<String>,
    pub text: String,
}

/// A question to evaluate retrieval with, and its relevance judgements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    pub id: String,
    pub text: String,
    /// Only passages with the same scope are candidates; `None`: all passages.
    pub scope: Option<String>,
    /// Relevant passage ids with graded relevance (> 0). Empty: not evaluable.
    pub gold: Vec<(String, u32)>,
}

/// One ranked result: an index into the corpus' passage list and its score
/// (higher is better).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub passage: usize,
    pub score: f32,
}

/// Orders hits best first: higher score first, ties broken by corpus position
/// (lower index first), so that rankings are deterministic. NaN scores sort last.
pub fn hit_order(a: &Hit, b: &Hit) -> Ordering {
    match (a.score.is_nan(), b.score.is_nan()) {
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => b
            .score
            .partial_cmp(&a.score)
            .unwrap_or(Ordering::Equal)
            .then(a.passage.cmp(&b.passage)),
    }
}

/// Sorts hits best first (see [`hit_order`]) and keeps the top `k` (all if `k` is `None`).
pub fn rank(mut hits: Vec<Hit>, k: Option<usize>) -> Vec<Hit> {
    let k = k.unwrap_or(hits.len()).min(hits.len());
    if k < hits.len() && k > 0 {
        hits.select_nth_unstable_by(k - 1, hit_order);
        hits.truncate(k);
    } else if k == 0 {
        hits.clear();
    }
    hits.sort_by(hit_order);
    hits
}

/// Normalises whitespace: trims, and collapses every run of whitespace into one space.
pub fn normalize_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_break_by_corpus_position() {
        let hits = vec![
            Hit {
                passage: 3,
                score: 1.0,
            },
            Hit {
                passage: 1,
                score: 1.0,
            },
            Hit {
                passage: 2,
                score: 2.0,
            },
            Hit {
                passage: 0,
                score: f32::NAN,
            },
        ];
        let order: Vec<usize> = rank(hits.clone(), None).iter().map(|h| h.passage).collect();
        assert_eq!(order, vec![2, 1, 3, 0]);
        let top2: Vec<usize> = rank(hits, Some(2)).iter().map(|h| h.passage).collect();
        assert_eq!(top2, vec![2, 1]);
    }

    #[test]
    fn whitespace_is_collapsed() {
        assert_eq!(normalize_ws("  a\t b\n\nc "), "a b c");
    }
}
