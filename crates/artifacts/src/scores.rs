//! The label folder's LLM stores: `scores.jsonl` (every score, keyed by content),
//! `truncations.jsonl` (a server's passage cuts) and `score-plan.json` (which scores a
//! run computes). The two JSONL files are append-only [`uae_core::store::Store`]s:
//! their format is versioned by the folder's `manifest.json`; the plan carries its
//! own version.

use crate::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;
use uae_core::store::Keyed;

/// One scored (question, passage or none, answer): a line of `scores.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRecord {
    /// The content key (`uae_label::score_key`): the LLM, the template's identity,
    /// the passage budget, the question, the passage and the answer.
    pub k: String,
    /// Mean NLL of the answer tokens.
    pub nll: f32,
    /// Per-token log-probabilities of the answer.
    pub lp: Vec<f32>,
}

impl ScoreRecord {
    pub const FILE: &'static str = "scores.jsonl";
}

impl Keyed for ScoreRecord {
    fn key(&self) -> &str {
        &self.k
    }
}

/// A passage cut to the budget by a server's tokenizer: a line of
/// `truncations.jsonl`, so that a resumed run asks again only for new passages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Truncation {
    /// Hash of the server's model, the budget and the passage text.
    pub k: String,
    /// The cut text.
    pub t: String,
}

impl Truncation {
    pub const FILE: &'static str = "truncations.jsonl";
}

impl Keyed for Truncation {
    fn key(&self) -> &str {
        &self.k
    }
}

/// `score-plan.json`: the scores a local run computes, fixed when it first starts, so
/// that a resumed run forms the same batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScorePlan {
    /// Format version ([`ScorePlan::VERSION`]; plans written before it had none).
    #[serde(default = "first_version")]
    pub version: u32,
    /// The keys, sorted.
    pub keys: Vec<String>,
}

fn first_version() -> u32 {
    1
}

impl ScorePlan {
    pub const FILE: &'static str = "score-plan.json";
    pub const VERSION: u32 = 1;

    /// The plan in `dir`, if one was written.
    pub fn read(dir: &Path) -> Result<Option<ScorePlan>> {
        let path = dir.join(Self::FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(uae_core::Error::io(&path)(e)),
        };
        let plan: ScorePlan =
            serde_json::from_slice(&bytes).map_err(|e| uae_core::Error::Corrupt {
                path: path.clone(),
                line: e.line(),
                message: format!("{e} (delete the file to plan again)"),
            })?;
        if plan.version > Self::VERSION {
            return Err(uae_core::Error::Corrupt {
                path,
                line: 1,
                message: format!(
                    "score plan version {} (this uae reads {})",
                    plan.version,
                    Self::VERSION
                ),
            });
        }
        Ok(Some(plan))
    }

    /// Writes `keys` (sorted here) as the plan of `dir`, atomically.
    pub fn write(dir: &Path, keys: impl IntoIterator<Item = String>) -> Result<()> {
        let mut keys: Vec<String> = keys.into_iter().collect();
        keys.sort();
        let plan = ScorePlan {
            version: Self::VERSION,
            keys,
        };
        uae_core::fs::write_json(&dir.join(Self::FILE), &plan)
    }
}
