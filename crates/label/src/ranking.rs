//! `retrieved` candidates: a retriever's own top passages, read from a TREC run file,
//! so that the LLM scores what the retriever would hand it. The mean utility of the
//! top passage is then a retrieval metric that needs answers, not evidence labels.

use crate::mine::Mined;
use crate::{Error, Result};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use uae_artifacts::labels::{Candidate, Retrieved};
use uae_data::QaSet;

/// Each question's top passages from a run file.
pub struct Ranking {
    path: PathBuf,
    top_k: usize,
    sha256: String,
    lists: BTreeMap<String, Vec<String>>,
}

impl Ranking {
    /// Reads a TREC run (`qid Q0 docid rank score tag`) and keeps each question's
    /// `top_k` passages, best first. Errors name the file and line.
    pub fn read(path: &Path, top_k: usize) -> Result<Ranking> {
        let run = uae_eval::compare::read_run(path)
            .map_err(|e| Error::Invalid(format!("--ranking: {e}")))?;
        if run.is_empty() {
            return Err(Error::Invalid(format!(
                "--ranking {}: no ranked passages in the file",
                path.display()
            )));
        }
        let sha256 = uae_core::hash::file_sha256(path)?;
        let lists = run
            .into_iter()
            .map(|(q, mut ids)| {
                ids.truncate(top_k);
                (q, ids)
            })
            .collect();
        Ok(Ranking {
            path: path.to_path_buf(),
            top_k,
            sha256,
            lists,
        })
    }

    /// Whether the run ranks passages for question `qid`.
    pub fn contains(&self, qid: &str) -> bool {
        self.lists.contains_key(qid)
    }

    /// What the manifest records.
    pub fn config(&self) -> Retrieved {
        Retrieved {
            top_k: self.top_k,
            run_sha256: self.sha256.clone(),
        }
    }

    /// The candidates of the `eligible` questions (indices into `set.questions`), in
    /// rank order; a passage marked gold when it is one of the question's positives.
    /// A passage id the corpus does not have is an error (a run over another corpus).
    pub fn candidates(&self, set: &QaSet, eligible: &[usize]) -> Result<Mined> {
        let known: HashSet<&str> = set.corpus.iter().map(|p| p.id.as_str()).collect();
        eligible
            .iter()
            .map(|&qi| {
                let q = &set.questions[qi];
                let ids = self.lists.get(&q.id).map(Vec::as_slice).unwrap_or_default();
                let cands = ids
                    .iter()
                    .map(|id| {
                        if !known.contains(id.as_str()) {
                            return Err(Error::Invalid(format!(
                                "--ranking {}: question `{}` ranks passage `{id}`, which is not in the corpus of {}",
                                self.path.display(),
                                q.id,
                                set.name
                            )));
                        }
                        Ok(Candidate {
                            passage_id: id.clone(),
                            is_gold: q.positives.contains(id),
                            source: "retrieved".into(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok((qi, cands))
            })
            .collect()
    }
}

/// What a `retrieved` label folder says of its retriever, per question, in this
/// order: the top passage's utility (nats), the best utility of the labelled top k,
/// and whether the top passage helps by at least 1 nat (1 or 0).
pub const UTILITY_METRICS: [&str; 3] = ["utility@1", "best@k", "helps@1"];

/// The per-question [`UTILITY_METRICS`] of a `uae label --candidates retrieved`
/// folder, and its manifest. Questions whose top passage could not be scored are
/// left out.
pub fn retrieved_utilities(
    dir: &Path,
) -> Result<(
    uae_artifacts::labels::LabelManifest,
    BTreeMap<String, Vec<f64>>,
)> {
    use uae_artifacts::labels::{CandidateMode, LabelManifest, LabeledGroup};
    let manifest = LabelManifest::read(dir)?.ok_or_else(|| {
        Error::Invalid(format!(
            "{}: no manifest.json (not a `uae label` folder)",
            dir.display()
        ))
    })?;
    if manifest.config.candidates != CandidateMode::Retrieved {
        return Err(Error::Invalid(format!(
            "{}: labelled with {:?} candidates; a retriever's utilities come from `uae label --candidates retrieved --ranking RUN`",
            dir.display(),
            manifest.config.candidates
        )));
    }
    let rows = LabeledGroup::read_all(dir)?
        .into_iter()
        .filter_map(|g| {
            let u: Vec<f64> = g.candidates.iter().map(|c| c.utility as f64).collect();
            let first = *u.first()?;
            let best = u.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let helps = if first >= 1.0 { 1.0 } else { 0.0 };
            Some((g.question_id, vec![first, best, helps]))
        })
        .collect();
    Ok((manifest, rows))
}

/// Whether two `retrieved` folders' utilities can be compared: the same LLM,
/// template, passage budget, question set and top k.
pub fn comparable(
    a: &uae_artifacts::labels::LabelManifest,
    b: &uae_artifacts::labels::LabelManifest,
) -> bool {
    let k = |m: &uae_artifacts::labels::LabelManifest| m.config.retrieved.as_ref().map(|r| r.top_k);
    a.lm_sha256 == b.lm_sha256
        && a.config.template == b.config.template
        && a.config.passage_tokens == b.config.passage_tokens
        && a.split == b.split
        && k(a) == k(b)
}
