//! Evaluating a retriever on a collection: rankings, metrics, TREC files and the
//! report `uae eval` writes.

use crate::{bm25_rankings, dense_rankings, load_encoder, Error, Result, Timings};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use uae_core::Progress;
use uae_data::Collection;
use uae_encoder::BatchOptions;
use uae_eval::groups::{GroupMetrics, QueryGroups};
use uae_eval::Metrics;
use uae_index::{Bm25Params, Fusion};

/// Keeps the first `n` queries (in file order; those without gold evidence count but
/// are not scored) and only the passages of their scopes. `uae train --dev-limit`
/// and `uae eval --limit` share it, so their numbers are comparable.
pub fn limit_queries(coll: &mut Collection, n: usize) {
    coll.queries.truncate(n);
    let scopes: HashSet<Option<String>> = coll.queries.iter().map(|q| q.scope.clone()).collect();
    coll.passages.retain(|p| scopes.contains(&p.scope));
}

#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum RetrieverKind {
    Bm25,
    Dense,
    /// Dense and BM25 rankings fused ([`Fusion`]).
    Hybrid,
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub enum Retriever {
    Bm25(Bm25Params),
    Dense {
        model: PathBuf,
        bf16: bool,
        opts: BatchOptions,
    },
    /// The dense model's ranking and BM25's, fused.
    Hybrid {
        model: PathBuf,
        bf16: bool,
        opts: BatchOptions,
        bm25: Bm25Params,
        fusion: Fusion,
    },
}

impl Retriever {
    pub fn kind(&self) -> RetrieverKind {
        match self {
            Retriever::Bm25(_) => RetrieverKind::Bm25,
            Retriever::Dense { .. } => RetrieverKind::Dense,
            Retriever::Hybrid { .. } => RetrieverKind::Hybrid,
        }
    }

    /// The run tag: `bm25`, `dense-{model folder name}` or `hybrid-{model folder
    /// name}-{rrf60 | convex0.5}`.
    pub fn tag(&self) -> String {
        let name = |model: &Path| {
            model
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        match self {
            Retriever::Bm25(_) => "bm25".into(),
            Retriever::Dense { model, .. } => format!("dense-{}", name(model)),
            Retriever::Hybrid { model, fusion, .. } => {
                let f = match fusion {
                    Fusion::Rrf { k } => format!("rrf{k}"),
                    Fusion::Convex { dense_weight } => format!("convex{dense_weight}"),
                };
                format!("hybrid-{}-{f}", name(model))
            }
        }
    }
}

/// `report.json` of `uae eval`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct EvalReport {
    pub collection: String,
    pub retriever: RetrieverKind,
    pub model: Option<String>,
    pub queries: usize,
    pub evaluable_queries: usize,
    pub skipped_queries: usize,
    pub passages: usize,
    pub metrics: Metrics,
    /// The metrics split by a field of the questions (`uae eval --by`), when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<ByField>,
    pub timings: Timings,
}

/// `report.json`'s metrics per value of one field.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ByField {
    pub field: String,
    pub groups: Vec<GroupMetrics>,
}

impl EvalReport {
    pub const FILE: &'static str = "report.json";
    /// The folder's ranking, beside the report.
    pub const RUN: &'static str = uae_eval::RUN_FILE;
    /// The folder's judgements, beside the report.
    pub const QRELS: &'static str = uae_eval::QRELS_FILE;

    /// The report in `dir`, if `uae eval` wrote one there.
    pub fn read(dir: &Path) -> Result<Option<EvalReport>> {
        let path = dir.join(Self::FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(uae_core::Error::io(&path))?;
        serde_json::from_str(&text).map(Some).map_err(|e| {
            uae_core::Error::Corrupt {
                path,
                line: e.line(),
                message: e.to_string(),
            }
            .into()
        })
    }
}

/// The questions of `coll` grouped by their values of `field` in `source` (`uae eval
/// --by`; see [`uae_data::Source::field_values`]).
pub fn query_groups(
    source: &uae_data::Source,
    coll: &Collection,
    field: &str,
) -> Result<QueryGroups> {
    let mut of = source.field_values(field)?;
    let kept: HashSet<&str> = coll.queries.iter().map(|q| q.id.as_str()).collect();
    of.retain(|q, _| kept.contains(q.as_str()));
    Ok(QueryGroups {
        field: field.to_string(),
        of,
    })
}

/// Ranks every query of `coll`, scores the rankings, and writes `run.trec`,
/// `qrels.trec` and `report.json` into `out`; with `groups`, also `groups.json` and
/// the metrics of each group in the report.
pub fn evaluate(
    coll: &Collection,
    retriever: &Retriever,
    out: &Path,
    groups: Option<&QueryGroups>,
    progress: &dyn Progress,
) -> Result<EvalReport> {
    // Metrics averaged over no question would be written as zeros that read like a
    // result.
    if coll.evaluable().next().is_none() {
        return Err(Error::NothingToEvaluate {
            collection: coll.name.clone(),
            queries: coll.queries.len(),
        });
    }
    let mut timings = Timings::default();
    let (rankings, model) = match retriever {
        Retriever::Bm25(params) => (bm25_rankings(coll, *params, &mut timings), None),
        Retriever::Dense { model, bf16, opts } => {
            let enc = load_encoder(model, *bf16)?;
            (
                dense_rankings(&enc, coll, *opts, &mut timings, progress)?,
                Some(model.display().to_string()),
            )
        }
        Retriever::Hybrid {
            model,
            bf16,
            opts,
            bm25,
            fusion,
        } => {
            let enc = load_encoder(model, *bf16)?;
            let dense = dense_rankings(&enc, coll, *opts, &mut timings, progress)?;
            let mut bm25_timings = Timings::default();
            let lexical = bm25_rankings(coll, *bm25, &mut bm25_timings);
            let t = std::time::Instant::now();
            let fused = dense
                .iter()
                .zip(&lexical)
                .map(|(d, b)| fusion.fuse(d, b, Some(crate::CORPUS_WIDE_DEPTH)))
                .collect();
            timings.index_s += bm25_timings.index_s;
            timings.search_s += bm25_timings.search_s + t.elapsed().as_secs_f64();
            (fused, Some(model.display().to_string()))
        }
    };
    let (per, metrics) = uae_eval::score(&coll.passages, &coll.queries, &rankings);
    let by = match groups {
        Some(g) => {
            g.write(out)?;
            let per: BTreeMap<String, Metrics> = coll
                .queries
                .iter()
                .zip(per)
                .filter_map(|(q, m)| Some((q.id.clone(), m?)))
                .collect();
            Some(ByField {
                field: g.field.clone(),
                groups: g.metrics(&per),
            })
        }
        None => None,
    };
    let evaluable = coll.evaluable().count();
    timings.per_query_ms =
        1000.0 * (timings.encode_queries_s + timings.search_s) / coll.queries.len().max(1) as f64;
    uae_eval::write_trec(
        out,
        &retriever.tag(),
        &coll.passages,
        &coll.queries,
        &rankings,
    )?;
    let report = EvalReport {
        collection: coll.name.clone(),
        retriever: retriever.kind(),
        model,
        queries: coll.queries.len(),
        evaluable_queries: evaluable,
        skipped_queries: coll.queries.len() - evaluable,
        passages: coll.passages.len(),
        metrics,
        by,
        timings,
    };
    uae_core::fs::write_json(&out.join(EvalReport::FILE), &report)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use uae_core::{NoProgress, Passage, Query};

    #[test]
    fn no_evaluable_question_is_an_error_not_a_table_of_zeros() {
        let coll = Collection {
            name: "mine".into(),
            passages: vec![Passage {
                id: "p".into(),
                scope: None,
                section: None,
                text: "a passage".into(),
            }],
            queries: vec![Query {
                id: "q".into(),
                text: "a question".into(),
                scope: None,
                gold: vec![],
            }],
        };
        let out = tempfile::tempdir().unwrap();
        let r = Retriever::Bm25(Bm25Params { k1: 1.2, b: 0.75 });
        let e = evaluate(&coll, &r, out.path(), None, &NoProgress).unwrap_err();
        assert!(e.to_string().contains("none of its 1 questions"), "{e}");
        assert!(!out.path().join(EvalReport::FILE).exists());
    }
}
