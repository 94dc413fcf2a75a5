//! Evaluating a retriever on a collection: rankings, metrics, TREC files and the
//! report `uae eval` writes.

use crate::{bm25_rankings, dense_rankings, load_encoder, Error, Result, Timings};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use uae_artifacts::calibration::CalibrationFile;
use uae_artifacts::labels::LabeledGroup;
use uae_core::Progress;
use uae_data::Collection;
use uae_encoder::BatchOptions;
use uae_eval::groups::{GroupMetrics, QueryGroups};
use uae_eval::select::Selection;
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
    Dense(DenseModel),
    /// The dense model's ranking and BM25's, fused.
    Hybrid {
        dense: DenseModel,
        bm25: Bm25Params,
        fusion: Fusion,
    },
}

/// A bi-encoder that ranks a collection.
#[derive(Debug, Clone)]
pub struct DenseModel {
    pub model: PathBuf,
    pub bf16: bool,
    pub opts: BatchOptions,
    /// Keep passage embeddings here, reused by the next run of the same model over
    /// the same passages.
    pub cache: Option<PathBuf>,
}

impl DenseModel {
    /// Loads the model and ranks every query of `coll`; the passages' embeddings are
    /// read from the cache when an earlier run of the same model over the same
    /// passages left them there.
    fn rank(
        &self,
        coll: &Collection,
        timings: &mut Timings,
        progress: &dyn Progress,
    ) -> Result<(Vec<Vec<uae_core::Hit>>, uae_encoder::Encoder)> {
        let enc = load_encoder(&self.model, self.bf16)?;
        let Some(dir) = &self.cache else {
            let r = dense_rankings(&enc, coll, self.opts, timings, progress)?;
            return Ok((r, enc));
        };
        let t = std::time::Instant::now();
        let vecs = crate::cached_passage_embeddings(
            &coll.name,
            &enc,
            &self.model,
            &coll.passages,
            dir,
            progress,
        )?;
        let r = crate::dense_rankings_over(&enc, coll, &vecs, self.opts, t, timings)?;
        Ok((r, enc))
    }
}

impl Retriever {
    pub fn kind(&self) -> RetrieverKind {
        match self {
            Retriever::Bm25(_) => RetrieverKind::Bm25,
            Retriever::Dense(_) => RetrieverKind::Dense,
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
            Retriever::Dense(d) => format!("dense-{}", name(&d.model)),
            Retriever::Hybrid { dense, fusion, .. } => {
                let f = match fusion {
                    Fusion::Rrf { k } => format!("rrf{k}"),
                    Fusion::Convex { dense_weight } => format!("convex{dense_weight}"),
                };
                format!("hybrid-{}-{f}", name(&dense.model))
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
    /// With a calibrated model: what the requested selection (`--min-p-helps`,
    /// `--min-utility`, `--max-context-tokens`, over the top `--k`) hands the LLM.
    /// The sweep of rules is in selection.json.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<crate::select::SelectionRow>,
    /// With `--labels`: the model's calibration checked on held-out labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<crate::calibrate::CalibrationCheck>,
    pub timings: Timings,
}

/// What `uae eval` adds to the metrics, when asked.
#[derive(Debug, Default)]
pub struct Extras<'a> {
    /// Report every metric per group too (`--by`).
    pub groups: Option<&'a QueryGroups>,
    /// Adaptive selection over each question's top `k` (`k` alone: the sweep only).
    /// Needs a dense retriever and a model with calibration.json.
    pub selection: Option<Selection>,
    /// Held-out labels (folder, its groups) to check the model's calibration on.
    pub labels: Option<(&'a Path, &'a [LabeledGroup])>,
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
/// `qrels.trec` and `report.json` into `out`; with `extras`, also `groups.json`
/// and the metrics of each group, `selection.json`/`selection.svg` (a calibrated
/// model), `reliability.svg` (held-out labels).
pub fn evaluate(
    coll: &Collection,
    retriever: &Retriever,
    out: &Path,
    extras: &Extras,
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
    let calibration = calibration_for(retriever, extras)?;
    let mut timings = Timings::default();
    let Ranked {
        rankings,
        dense,
        enc,
    } = rank(coll, retriever, &mut timings, progress)?;
    let (per, metrics) = uae_eval::score(&coll.passages, &coll.queries, &rankings);
    let by = match extras.groups {
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
    let file = calibration.as_ref();
    let selection = match &enc {
        Some(enc) => crate::select::measure(
            coll,
            &rankings,
            dense.as_deref(),
            enc,
            file,
            extras.selection,
            out,
        )?,
        None => None,
    };
    let check = match (enc.as_ref().zip(file), extras.labels) {
        (Some((enc, file)), Some((labels, groups))) => Some(crate::calibrate::check(
            enc, file, labels, groups, out, progress,
        )?),
        _ => None,
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
        model: enc.as_ref().map(|e| e.dir.display().to_string()),
        queries: coll.queries.len(),
        evaluable_queries: evaluable,
        skipped_queries: coll.queries.len() - evaluable,
        passages: coll.passages.len(),
        metrics,
        by,
        selection,
        calibration: check,
        timings,
    };
    uae_core::fs::write_json(&out.join(EvalReport::FILE), &report)?;
    Ok(report)
}

/// The model's calibration, when the retriever has a model (dense or hybrid) and
/// the model has one; asking for selection rules or a calibration check without one is refused
/// before any work.
fn calibration_for(retriever: &Retriever, extras: &Extras) -> Result<Option<CalibrationFile>> {
    let wants = extras.selection.is_some_and(|s| s.uses_values()) || extras.labels.is_some();
    let refuse = |why: String| Err(Error::Options(why));
    let (Retriever::Dense(DenseModel { model, .. })
    | Retriever::Hybrid {
        dense: DenseModel { model, .. },
        ..
    }) = retriever
    else {
        // BM25 has no cosines to value and no model tokenizer to count with.
        return match wants || extras.selection.is_some_and(|s| s.filters()) {
            true => refuse(
                "--min-utility, --min-p-helps, --max-context-tokens and --labels need --retriever dense or hybrid (the calibration maps the model's cosines; bm25 has none)".into(),
            ),
            false => Ok(None),
        };
    };
    match CalibrationFile::read(model)? {
        Some(file) => Ok(Some(file)),
        None if wants => refuse(format!(
            "{}: no {} (run `uae calibrate --model {0} --labels DEV_LABELS`) for --min-utility, --min-p-helps, --max-context-tokens or --labels",
            model.display(),
            CalibrationFile::FILE
        )),
        None => Ok(None),
    }
}

/// Every query's ranking under a retriever.
struct Ranked {
    rankings: Vec<Vec<uae_core::Hit>>,
    /// A hybrid's dense rankings (the model's cosines of its fused hits).
    dense: Option<Vec<Vec<uae_core::Hit>>>,
    /// The encoder, when the retriever has one.
    enc: Option<uae_encoder::Encoder>,
}

fn rank(
    coll: &Collection,
    retriever: &Retriever,
    timings: &mut Timings,
    progress: &dyn Progress,
) -> Result<Ranked> {
    Ok(match retriever {
        Retriever::Bm25(params) => Ranked {
            rankings: bm25_rankings(coll, *params, timings),
            dense: None,
            enc: None,
        },
        Retriever::Dense(d) => {
            let (rankings, enc) = d.rank(coll, timings, progress)?;
            Ranked {
                rankings,
                dense: None,
                enc: Some(enc),
            }
        }
        Retriever::Hybrid {
            dense: model,
            bm25,
            fusion,
        } => {
            let (dense, enc) = model.rank(coll, timings, progress)?;
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
            Ranked {
                rankings: fused,
                dense: Some(dense),
                enc: Some(enc),
            }
        }
    })
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
        let e = evaluate(&coll, &r, out.path(), &Extras::default(), &NoProgress).unwrap_err();
        assert!(e.to_string().contains("none of its 1 questions"), "{e}");
        assert!(!out.path().join(EvalReport::FILE).exists());
    }
}
