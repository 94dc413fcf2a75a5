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
