//! Retrieval metrics, TREC run/qrels files and reports. No model dependencies.
//!
//! All metrics are per query, then averaged over evaluable queries (those with at
//! least one relevant passage). Relevance is graded (qrels score > 0 is relevant);
//! Recall, Hit, MAP and MRR use it as binary, nDCG@10 uses the grade as gain.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use uae_core::{Hit, Passage, Query};

/// The ranking file of an evaluation folder (TREC run format).
pub const RUN_FILE: &str = "run.trec";
/// The judgements of an evaluation folder (TREC qrels format).
pub const QRELS_FILE: &str = "qrels.trec";

pub mod calibrate;
pub mod compare;
pub mod f1;
pub mod groups;
pub mod lexical;
pub mod question;
pub mod select;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Parse {
        path: std::path::PathBuf,
        line: usize,
        message: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The cut-offs reported for Recall@k and Hit@k.
pub const CUTOFFS: [usize; 4] = [1, 3, 5, 10];

/// Metrics of one query, or their mean over queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(rename = "recall@1")]
    pub recall_1: f64,
    #[serde(rename = "recall@3")]
    pub recall_3: f64,
    #[serde(rename = "recall@5")]
    pub recall_5: f64,
    #[serde(rename = "recall@10")]
    pub recall_10: f64,
    #[serde(rename = "hit@1")]
    pub hit_1: f64,
    #[serde(rename = "hit@3")]
    pub hit_3: f64,
    #[serde(rename = "hit@5")]
    pub hit_5: f64,
    #[serde(rename = "hit@10")]
    pub hit_10: f64,
    pub map: f64,
    pub mrr: f64,
    #[serde(rename = "ndcg@10")]
    pub ndcg_10: f64,
}

impl Metrics {
    /// Scores one ranking (ids best first) against graded relevance (grade > 0).
    /// Returns `None` when there is nothing relevant (the query is not evaluable).
    pub fn of_ranking(ranking: &[&str], gold: &HashMap<&str, u32>) -> Option<Metrics> {
        let n_rel = gold.values().filter(|&&g| g > 0).count();
        if n_rel == 0 {
            return None;
        }
        let rel = |id: &str| gold.get(id).copied().unwrap_or(0);
        let found_at = |k: usize| ranking.iter().take(k).filter(|id| rel(id) > 0).count() as f64;
        let recall = |k| found_at(k) / n_rel as f64;
        let hit = |k| if found_at(k) > 0.0 { 1.0 } else { 0.0 };
        let mut hits = 0.0;
        let mut ap = 0.0;
        let mut rr = 0.0;
        for (i, id) in ranking.iter().enumerate() {
            if rel(id) > 0 {
                hits += 1.0;
                ap += hits / (i + 1) as f64;
                if rr == 0.0 {
                    rr = 1.0 / (i + 1) as f64;
                }
            }
        }
        let dcg: f64 = ranking
            .iter()
            .take(10)
            .enumerate()
            .map(|(i, id)| rel(id) as f64 / ((i + 2) as f64).log2())
            .sum();
        let mut ideal: Vec<u32> = gold.values().copied().filter(|&g| g > 0).collect();
        ideal.sort_unstable_by(|a, b| b.cmp(a));
        let idcg: f64 = ideal
            .iter()
            .take(10)
            .enumerate()
            .map(|(i, &g)| g as f64 / ((i + 2) as f64).log2())
            .sum();
        Some(Metrics {
            recall_1: recall(1),
            recall_3: recall(3),
            recall_5: recall(5),
            recall_10: recall(10),
            hit_1: hit(1),
            hit_3: hit(3),
            hit_5: hit(5),
            hit_10: hit(10),
            map: ap / n_rel as f64,
            mrr: rr,
            ndcg_10: if idcg > 0.0 { dcg / idcg } else { 0.0 },
        })
    }

    /// The mean of per-query metrics (all zero for an empty list).
    pub fn mean(all: &[Metrics]) -> Metrics {
        let n = all.len().max(1) as f64;
        let mut m = Metrics::default();
        for x in all {
            m.recall_1 += x.recall_1 / n;
            m.recall_3 += x.recall_3 / n;
            m.recall_5 += x.recall_5 / n;
            m.recall_10 += x.recall_10 / n;
            m.hit_1 += x.hit_1 / n;
            m.hit_3 += x.hit_3 / n;
            m.hit_5 += x.hit_5 / n;
            m.hit_10 += x.hit_10 / n;
            m.map += x.map / n;
            m.mrr += x.mrr / n;
            m.ndcg_10 += x.ndcg_10 / n;
        }
        m
    }

    /// (name, value) pairs in report order.
    pub fn rows(&self) -> [(&'static str, f64); 11] {
        [
            ("recall@1", self.recall_1),
            ("recall@3", self.recall_3),
            ("recall@5", self.recall_5),
            ("recall@10", self.recall_10),
            ("hit@1", self.hit_1),
            ("hit@3", self.hit_3),
            ("hit@5", self.hit_5),
            ("hit@10", self.hit_10),
            ("map", self.map),
            ("mrr", self.mrr),
            ("ndcg@10", self.ndcg_10),
        ]
    }
}

/// One ranked list for one query, for a TREC run file.
pub struct RunEntry<'a> {
    pub qid: &'a str,
    /// (passage id, score), best first.
    pub ranking: Vec<(&'a str, f32)>,
}

fn create(path: &Path) -> Result<std::io::BufWriter<std::fs::File>> {
    std::fs::File::create(path)
        .map(std::io::BufWriter::new)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes a TREC run: `qid Q0 docid rank score tag`, rank from 1.
pub fn write_run(path: &Path, tag: &str, entries: &[RunEntry]) -> Result<()> {
    let mut w = create(path)?;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    for e in entries {
        for (r, (id, s)) in e.ranking.iter().enumerate() {
            writeln!(w, "{} Q0 {} {} {:.6} {}", e.qid, id, r + 1, s, tag).map_err(io)?;
        }
    }
    w.flush().map_err(io)
}

/// Writes TREC qrels: `qid 0 docid grade`.
pub fn write_qrels<'a>(
    path: &Path,
    qrels: impl IntoIterator<Item = (&'a str, &'a [(String, u32)])>,
) -> Result<()> {
    let mut w = create(path)?;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    for (qid, gold) in qrels {
        for (id, g) in gold {
            writeln!(w, "{qid} 0 {id} {g}").map_err(io)?;
        }
    }
    w.flush().map_err(io)
}

/// Formats metrics as a two-column Markdown table.
pub fn table(title: &str, m: &Metrics) -> String {
    let mut s = format!("| {title} | value |\n|---|---|\n");
    for (k, v) in m.rows() {
        s.push_str(&format!("| {k} | {v:.4} |\n"));
    }
    s
}

/// Per-query metrics of `rankings` (one per query, of corpus positions into
/// `passages`) for the evaluable queries (`None` for the others, in query order) and
/// their mean.
pub fn score(
    passages: &[Passage],
    queries: &[Query],
    rankings: &[Vec<Hit>],
) -> (Vec<Option<Metrics>>, Metrics) {
    let per: Vec<Option<Metrics>> = queries
        .iter()
        .zip(rankings)
        .map(|(q, hits)| {
            let ids: Vec<&str> = hits
                .iter()
                .map(|h| passages[h.passage].id.as_str())
                .collect();
            let gold: HashMap<&str, u32> = q.gold.iter().map(|(id, g)| (id.as_str(), *g)).collect();
            Metrics::of_ranking(&ids, &gold)
        })
        .collect();
    let ok: Vec<Metrics> = per.iter().flatten().copied().collect();
    let mean = Metrics::mean(&ok);
    (per, mean)
}

/// Writes `dir/run.trec` (tagged `tag`) and `dir/qrels.trec` (evaluable queries).
pub fn write_trec(
    dir: &Path,
    tag: &str,
    passages: &[Passage],
    queries: &[Query],
    rankings: &[Vec<Hit>],
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let entries: Vec<RunEntry> = queries
        .iter()
        .zip(rankings)
        .map(|(q, hits)| RunEntry {
            qid: &q.id,
            ranking: hits
                .iter()
                .map(|h| (passages[h.passage].id.as_str(), h.score))
                .collect(),
        })
        .collect();
    write_run(&dir.join(RUN_FILE), tag, &entries)?;
    write_qrels(
        &dir.join(QRELS_FILE),
        queries
            .iter()
            .filter(|q| !q.gold.is_empty())
            .map(|q| (q.id.as_str(), q.gold.as_slice())),
    )
}

/// nDCG@k of a ranking with real-valued gains (best first; negative gains count
/// as 0): DCG over the ideal DCG of the same gains. `None` when no gain is positive.
pub fn ndcg_of_gains(gains_in_rank_order: &[f64], k: usize) -> Option<f64> {
    let g: Vec<f64> = gains_in_rank_order.iter().map(|&x| x.max(0.0)).collect();
    let dcg = |v: &[f64]| -> f64 {
        v.iter()
            .take(k)
            .enumerate()
            .map(|(i, x)| x / ((i + 2) as f64).log2())
            .sum()
    };
    let mut ideal = g.clone();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg = dcg(&ideal);
    (idcg > 0.0).then(|| dcg(&g) / idcg)
}

/// The nearest-rank percentile `p` (0-100) of `v`; NaN when `v` is empty.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[i.clamp(1, s.len()) - 1]
}

/// Relative change of `new` over `old`, in percent.
pub fn pct_change(new: f64, old: f64) -> f64 {
    100.0 * (new - old) / old
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gains [0, 2, 1] in rank order: DCG = 2/log2(3) + 1/log2(4) = 1.261860 + 0.5;
    /// ideal [2, 1, 0]: 2 + 1/log2(3) = 2.630930; ratio 0.669672.
    #[test]
    fn ndcg_of_gains_by_hand() {
        let v = ndcg_of_gains(&[0.0, 2.0, 1.0], 10).unwrap();
        assert!((v - 0.669672).abs() < 1e-6, "{v}");
        assert_eq!(ndcg_of_gains(&[-1.0, 0.0], 10), None);
        assert_eq!(ndcg_of_gains(&[3.0, -2.0], 10), Some(1.0));
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 10.0);
        assert_eq!(percentile(&v, 95.0), 19.0);
        assert_eq!(percentile(&[3.0], 95.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
        assert_eq!(pct_change(1.5, 1.0), 50.0);
    }

    fn gold<'a>(ids: &[&'a str]) -> HashMap<&'a str, u32> {
        ids.iter().map(|&i| (i, 1)).collect()
    }

    /// Ranking a b c d e, relevant {b, d}. By hand:
    /// R@1 = 0, R@3 = 1/2, R@5 = 1; hit@1 = 0, hit@3 = 1;
    /// AP = (1/2 + 2/4) / 2 = 0.5; RR = 1/2;
    /// DCG = 1/log2(3) + 1/log2(5) = 0.630930 + 0.430677 = 1.061606,
    /// IDCG = 1 + 1/log2(3) = 1.630930, nDCG = 0.650920.
    #[test]
    fn metrics_match_hand_computation() {
        let m = Metrics::of_ranking(&["a", "b", "c", "d", "e"], &gold(&["b", "d"])).unwrap();
        assert_eq!(m.recall_1, 0.0);
        assert_eq!(m.recall_3, 0.5);
        assert_eq!(m.recall_5, 1.0);
        assert_eq!(m.hit_1, 0.0);
        assert_eq!(m.hit_3, 1.0);
        assert!((m.map - 0.5).abs() < 1e-12);
        assert!((m.mrr - 0.5).abs() < 1e-12);
        assert!((m.ndcg_10 - 0.650920).abs() < 1e-6, "{}", m.ndcg_10);
    }

    /// A relevant passage that is never ranked counts as missed: relevant {a, z},
    /// ranking a b: R@1 = 1/2, AP = (1/1) / 2 = 0.5, RR = 1.
    #[test]
    fn unranked_relevant_passages_count_as_missed() {
        let m = Metrics::of_ranking(&["a", "b"], &gold(&["a", "z"])).unwrap();
        assert_eq!(m.recall_1, 0.5);
        assert_eq!(m.map, 0.5);
        assert_eq!(m.mrr, 1.0);
        assert!(Metrics::of_ranking(&["a"], &gold(&[])).is_none());
    }

    /// Graded nDCG: ranking x y, grades x=1, y=2. DCG = 1 + 2/log2(3) = 2.261860;
    /// IDCG = 2 + 1/log2(3) = 2.630930; nDCG = 0.859719.
    #[test]
    fn graded_ndcg() {
        let g: HashMap<&str, u32> = [("x", 1), ("y", 2)].into_iter().collect();
        let m = Metrics::of_ranking(&["x", "y"], &g).unwrap();
        assert!((m.ndcg_10 - 0.859719).abs() < 1e-6, "{}", m.ndcg_10);
    }

    #[test]
    fn mean_averages_each_metric() {
        let a = Metrics {
            map: 1.0,
            recall_1: 1.0,
            ..Default::default()
        };
        let b = Metrics::default();
        let m = Metrics::mean(&[a, b]);
        assert_eq!(m.map, 0.5);
        assert_eq!(m.recall_1, 0.5);
    }
}
