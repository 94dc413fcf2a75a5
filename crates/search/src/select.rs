//! Adaptive selection measured on a collection: for every question, the hits a
//! calibrated model's ranking hands the LLM under a fixed top k and under the value
//! rules of [`Selection`] (the ones `/search` applies), what they cost in context
//! tokens, and how much of the evidence they carry. `uae eval` writes it as
//! `selection.json` and `selection.svg` (evidence recall against context tokens).

use crate::Result;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use uae_artifacts::calibration::CalibrationFile;
use uae_core::Hit;
use uae_data::Collection;
use uae_encoder::Encoder;
use uae_eval::lexical::{rank_map, LEXICAL_DEPTH};
use uae_eval::select::{BudgetOrder, Selection, Value};

/// How many top hits the rules look at unless told; also `/search`'s default `k`.
pub const DEPTH: usize = 10;

/// Which rule a row of the sweep varies (`Requested`: the one asked for on the
/// command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    K,
    MinPHelps,
    MinUtility,
    /// A token budget filled in rank order.
    MaxContextTokens,
    /// A token budget filled by expected utility per token.
    MaxContextTokensByValue,
    Requested,
}

/// One selection rule over every question of a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectionRow {
    /// Which rule the sweep varies.
    pub family: Family,
    pub selection: Selection,
    /// Means over every question.
    pub mean_passages: f64,
    pub mean_tokens: f64,
    /// Questions with evidence: how many, the mean share of their evidence passages
    /// selected, the share with at least one selected, the share given nothing.
    pub with_evidence: usize,
    pub evidence_recall: f64,
    pub evidence_hit: f64,
    pub empty_with_evidence: f64,
    /// Questions without evidence (QASPER: unanswerable, or evidence not found in
    /// the text): how many, and the share given nothing.
    pub without_evidence: usize,
    pub empty_without_evidence: f64,
    /// Mean tokens sent for questions without evidence.
    pub tokens_without_evidence: f64,
}

impl std::fmt::Display for SelectionRow {
    /// One line: the rule, what it sends, what it finds.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {:.2} passages, {:.0} tokens a question; evidence recall {:.4}, a question with evidence given nothing {:.1}%, one without evidence given nothing {:.1}% ({} and {} questions)",
            self.selection.name(),
            self.mean_passages,
            self.mean_tokens,
            self.evidence_recall,
            100.0 * self.empty_with_evidence,
            100.0 * self.empty_without_evidence,
            self.with_evidence,
            self.without_evidence
        )
    }
}

/// `selection.json` of `uae eval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectionReport {
    /// The model's calibration.json was fitted on this label folder (none: the
    /// model has no calibration, and only rules that read no value were run).
    pub calibrated_on: Option<String>,
    /// How tokens are counted: whole passages in the bi-encoder's tokenizer.
    pub tokens: String,
    pub rows: Vec<SelectionRow>,
}

impl SelectionReport {
    pub const FILE: &'static str = "selection.json";
    pub const SVG: &'static str = "selection.svg";
}

/// The rules the sweep tries, each family from small to large contexts, all over
/// the top `depth` hits.
pub fn sweep(depth: usize) -> Vec<(Family, Selection)> {
    let mut out: Vec<(Family, Selection)> = [1, 2, 3, 5, 10]
        .into_iter()
        .filter(|&k| k <= depth)
        .map(|k| (Family::K, Selection::top(k)))
        .collect();
    let top = Selection::top(depth);
    for p in [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2] {
        let s = Selection {
            min_p_helps: Some(p),
            ..top
        };
        out.push((Family::MinPHelps, s));
    }
    for u in [3.0, 2.0, 1.5, 1.0, 0.5, 0.25] {
        let s = Selection {
            min_utility: Some(u),
            ..top
        };
        out.push((Family::MinUtility, s));
    }
    for order in [BudgetOrder::Rank, BudgetOrder::ValuePerToken] {
        for t in [64, 128, 256, 512, 1024] {
            let s = Selection {
                max_context_tokens: Some(t),
                budget_order: order,
                ..top
            };
            let family = match order {
                BudgetOrder::Rank => Family::MaxContextTokens,
                BudgetOrder::ValuePerToken => Family::MaxContextTokensByValue,
            };
            out.push((family, s));
        }
    }
    out
}

/// What a rule keeps for one question.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    /// Passage indices (into the collection), in the order the rule keeps them.
    pub passages: Vec<usize>,
    /// Their tokens (whole passages, the bi-encoder's tokenizer).
    pub tokens: usize,
}

/// Each question's ranking, its hits' values and its evidence, ready for rules.
pub struct Valued<'a> {
    coll: &'a Collection,
    rankings: &'a [Vec<Hit>],
    values: Vec<Vec<Value>>,
    tokens: HashMap<usize, usize>,
}

impl<'a> Valued<'a> {
    /// Values the top `depth` hits of every ranking with `value(query index, hit)`
    /// (a calibration applied to the model's cosine for the hit) and counts their
    /// tokens with `enc`'s tokenizer.
    pub fn new(
        coll: &'a Collection,
        rankings: &'a [Vec<Hit>],
        value: impl Fn(usize, &Hit) -> Value,
        enc: &Encoder,
        depth: usize,
    ) -> Result<Valued<'a>> {
        let values = rankings
            .iter()
            .enumerate()
            .map(|(q, r)| r.iter().take(depth).map(|h| value(q, h)).collect())
            .collect();
        let seen: Vec<usize> = rankings
            .iter()
            .flat_map(|r| r.iter().take(depth).map(|h| h.passage))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut tokens = HashMap::with_capacity(seen.len());
        for chunk in seen.chunks(256) {
            let texts: Vec<&str> = chunk
                .iter()
                .map(|&p| coll.passages[p].text.as_str())
                .collect();
            tokens.extend(chunk.iter().copied().zip(enc.token_counts(&texts)?));
        }
        Ok(Valued {
            coll,
            rankings,
            values,
            tokens,
        })
    }

    /// What `selection` hands the LLM for each question, in query order.
    pub fn picks(&self, selection: Selection) -> Vec<Pick> {
        self.rankings
            .iter()
            .zip(&self.values)
            .map(|(ranking, values)| {
                let len = |i: usize| self.tokens.get(&ranking[i].passage).copied().unwrap_or(0);
                let kept = selection.select(values, len);
                Pick {
                    tokens: kept.iter().map(|&i| len(i)).sum(),
                    passages: kept.iter().map(|&i| ranking[i].passage).collect(),
                }
            })
            .collect()
    }

    /// What `selection` hands the LLM over the whole collection.
    pub fn row(&self, family: Family, selection: Selection) -> SelectionRow {
        let ids: HashMap<&str, usize> = self
            .coll
            .passages
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.as_str(), i))
            .collect();
        let (mut passages, mut tokens) = (0usize, 0usize);
        let (mut with, mut recall, mut hit, mut empty_with) = (0usize, 0.0, 0usize, 0usize);
        let (mut without, mut empty_without, mut tokens_without) = (0usize, 0usize, 0usize);
        for (q, pick) in self.coll.queries.iter().zip(self.picks(selection)) {
            let (kept, n_tokens) = (pick.passages, pick.tokens);
            passages += kept.len();
            tokens += n_tokens;
            let gold: HashSet<usize> = q
                .gold
                .iter()
                .filter(|(_, g)| *g > 0)
                .filter_map(|(id, _)| ids.get(id.as_str()).copied())
                .collect();
            if gold.is_empty() {
                without += 1;
                empty_without += usize::from(kept.is_empty());
                tokens_without += n_tokens;
                continue;
            }
            with += 1;
            let found = kept.iter().filter(|p| gold.contains(p)).count();
            recall += found as f64 / gold.len() as f64;
            hit += usize::from(found > 0);
            empty_with += usize::from(kept.is_empty());
        }
        let share = |a: usize, n: usize| if n == 0 { 0.0 } else { a as f64 / n as f64 };
        let all = self.coll.queries.len();
        SelectionRow {
            family,
            selection,
            mean_passages: share(passages, all),
            mean_tokens: share(tokens, all),
            with_evidence: with,
            evidence_recall: if with == 0 { 0.0 } else { recall / with as f64 },
            evidence_hit: share(hit, with),
            empty_with_evidence: share(empty_with, with),
            without_evidence: without,
            empty_without_evidence: share(empty_without, without),
            tokens_without_evidence: share(tokens_without, without),
        }
    }
}

/// Each query's BM25 ranks (from 1) of its top [`LEXICAL_DEPTH`] passages, ranked as
/// `uae calibrate` ranked the labelled candidates (default BM25 parameters): what a
/// calibration's lexical term reads. `None` when `calibrator` has no such term.
pub fn lexical_ranks(
    coll: &Collection,
    calibrator: &uae_eval::calibrate::Calibrator,
) -> Option<LexicalRanks> {
    calibrator.reads_lexical().then(|| {
        let index = uae_index::ScopedBm25::with_global(&coll.passages, Default::default());
        LexicalRanks(
            coll.queries
                .iter()
                .map(|q| rank_map(&index.search(q, Some(LEXICAL_DEPTH)), LEXICAL_DEPTH))
                .collect(),
        )
    })
}

/// Per query: passage -> BM25 rank, for its top [`LEXICAL_DEPTH`] passages.
pub struct LexicalRanks(Vec<HashMap<usize, usize>>);

impl LexicalRanks {
    /// Passage `passage`'s rank for query `q` (`None`: past the depth).
    pub fn rank(&self, q: usize, passage: usize) -> Option<usize> {
        self.0.get(q).and_then(|m| m.get(&passage).copied())
    }
}

/// The value of hit `h` of query `q` scored `score` under the query's calibration
/// `c`, reading its BM25 rank where `lexical` holds the ranks ([`lexical_ranks`]).
pub fn hit_value(
    c: &uae_eval::calibrate::QueryCalibration,
    lexical: Option<&LexicalRanks>,
    q: usize,
    h: &Hit,
    score: f32,
) -> Value {
    match lexical {
        Some(l) => c.predict_lexical(score, l.rank(q, h.passage)),
        None => c.predict(score),
    }
}

/// What `uae eval` measures of selection over `rankings` (ranked with `enc`; a
/// hybrid's `dense` rankings give each fused hit its cosine): with a calibration
/// `file`, the whole sweep; without one, only rules that read no value, and only
/// when `requested` asks for a rule. Writes selection.json/.svg; returns the
/// requested rule's row.
pub fn measure(
    coll: &Collection,
    rankings: &[Vec<Hit>],
    dense: Option<&[Vec<Hit>]>,
    enc: &Encoder,
    file: Option<&CalibrationFile>,
    requested: Option<Selection>,
    out: &Path,
) -> Result<Option<SelectionRow>> {
    // `--k` alone sets the depth of the sweep; a rule beyond it is reported too.
    let depth = requested.map_or(DEPTH, |s| s.k);
    let requested = requested.filter(Selection::filters);
    if file.is_none() && requested.is_none() {
        return Ok(None);
    }
    // A fused hit is valued by the model's cosine for it (from the dense ranking;
    // past its depth, as the ranking's last).
    let cosines: Option<Vec<HashMap<usize, f32>>> = dense.map(|d| {
        d.iter()
            .map(|r| r.iter().map(|h| (h.passage, h.score)).collect())
            .collect()
    });
    let cosine = |q: usize, h: &Hit| match (&cosines, dense) {
        (Some(c), Some(d)) => c[q]
            .get(&h.passage)
            .copied()
            .unwrap_or_else(|| d[q].last().map_or(f32::NEG_INFINITY, |last| last.score)),
        _ => h.score,
    };
    let per_query = match file {
        Some(f) => {
            let texts: Vec<&str> = coll.queries.iter().map(|q| q.text.as_str()).collect();
            crate::calibrate::for_queries(enc, &f.calibrator, &texts, &uae_core::NoProgress)?
        }
        None => Vec::new(),
    };
    let lexical = file.and_then(|f| lexical_ranks(coll, &f.calibrator));
    let value = |q: usize, h: &Hit| match per_query.get(q) {
        Some(c) => hit_value(c, lexical.as_ref(), q, h, cosine(q, h)),
        None => (0.0, 0.0),
    };
    let valued = Valued::new(coll, rankings, value, enc, depth)?;
    let calibrated_on = file.map(|f| f.labels.as_str());
    let report = write_report(&valued, depth, requested, calibrated_on, out)?;
    Ok(report
        .rows
        .into_iter()
        .find(|r| r.family == Family::Requested))
}

/// Runs the sweep (and `requested`, when given) and writes `selection.json` and
/// `selection.svg` into `out`; returns the report.
pub fn write_report(
    valued: &Valued,
    depth: usize,
    requested: Option<Selection>,
    calibrated_on: Option<&str>,
    out: &Path,
) -> Result<SelectionReport> {
    // Without a calibration, only the rules that read no value.
    let mut rows: Vec<SelectionRow> = sweep(depth)
        .into_iter()
        .filter(|(_, s)| calibrated_on.is_some() || !s.uses_values())
        .map(|(family, s)| valued.row(family, s))
        .collect();
    if let Some(s) = requested {
        rows.push(valued.row(Family::Requested, s));
    }
    let report = SelectionReport {
        calibrated_on: calibrated_on.map(str::to_string),
        tokens: "whole passages in the bi-encoder's tokenizer, no special tokens".into(),
        rows,
    };
    uae_core::fs::write_json(&out.join(SelectionReport::FILE), &report)?;
    let svg = out.join(SelectionReport::SVG);
    std::fs::write(&svg, curve_svg(&report.rows)).map_err(uae_core::Error::io(&svg))?;
    Ok(report)
}

/// Evidence recall against mean context tokens, one curve per rule family.
fn curve_svg(rows: &[SelectionRow]) -> String {
    let families = [
        (Family::K, "top k", "#4c78a8"),
        (Family::MinPHelps, "min p(helps)", "#f58518"),
        (Family::MinUtility, "min expected utility", "#54a24b"),
        (
            Family::MaxContextTokens,
            "token budget, rank order",
            "#9d755d",
        ),
        (
            Family::MaxContextTokensByValue,
            "token budget, value/token",
            "#b279a2",
        ),
        (Family::Requested, "requested", "#e45756"),
    ];
    let series: Vec<uae_plot::Series<Vec<(f64, f64)>>> = families
        .iter()
        .map(|&(family, name, color)| {
            let mut values: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.family == family)
                .map(|r| (r.mean_tokens, r.evidence_recall))
                .collect();
            values.sort_by(|a, b| a.0.total_cmp(&b.0));
            uae_plot::Series {
                name,
                color,
                values,
            }
        })
        .filter(|s| !s.values.is_empty())
        .collect();
    uae_plot::lines_svg(
        "mean context tokens per question (y: evidence recall)",
        &series,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use uae_core::{Passage, Query};

    fn coll() -> Collection {
        let p = |id: &str| Passage {
            id: id.into(),
            scope: None,
            section: None,
            text: String::new(),
        };
        let q = |id: &str, gold: &[&str]| Query {
            id: id.into(),
            text: String::new(),
            scope: None,
            gold: gold.iter().map(|g| (g.to_string(), 1)).collect(),
        };
        Collection {
            name: "t".into(),
            passages: vec![p("a"), p("b"), p("c")],
            queries: vec![q("q1", &["a", "c"]), q("q2", &[])],
        }
    }

    #[test]
    fn rows_count_evidence_tokens_and_empty_answers() {
        let c = coll();
        let hit = |passage, score| Hit { passage, score };
        let rankings = vec![
            vec![hit(0, 0.9), hit(1, 0.5), hit(2, 0.4)],
            vec![hit(1, 0.2), hit(0, 0.1)],
        ];
        let valued = Valued {
            coll: &c,
            rankings: &rankings,
            values: vec![
                vec![(2.0, 0.9), (0.1, 0.2), (1.0, 0.6)],
                vec![(0.0, 0.1), (0.0, 0.05)],
            ],
            tokens: HashMap::from([(0, 100), (1, 50), (2, 30)]),
        };
        let r = valued.row(Family::K, Selection::top(1));
        assert_eq!((r.with_evidence, r.without_evidence), (1, 1));
        assert_eq!(r.evidence_recall, 0.5);
        assert_eq!(r.evidence_hit, 1.0);
        assert_eq!(r.mean_tokens, (100.0 + 50.0) / 2.0);
        assert_eq!(r.empty_without_evidence, 0.0);
        let s = Selection {
            min_p_helps: Some(0.5),
            ..Selection::top(10)
        };
        let r = valued.row(Family::MinPHelps, s);
        assert_eq!(r.evidence_recall, 1.0);
        assert_eq!(r.mean_passages, 1.0);
        assert_eq!(r.empty_without_evidence, 1.0);
        assert_eq!(r.tokens_without_evidence, 0.0);
        assert_eq!(r.mean_tokens, 130.0 / 2.0);
    }

    #[test]
    fn the_sweep_stays_within_the_depth() {
        assert!(sweep(3).iter().all(|(_, s)| s.k <= 3));
        assert!(sweep(10)
            .iter()
            .any(|(f, _)| *f == Family::MaxContextTokens));
    }
}
