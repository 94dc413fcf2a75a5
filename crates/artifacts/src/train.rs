//! A training run's folder: `manifest.json` (what it trains on, for the resume guard)
//! and `metrics.jsonl` (one line per optimizer step, one per dev evaluation).

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use uae_core::{Error, Result};

/// `RUN/manifest.json`. Generic over the trainer's config type, which this crate
/// does not know; readers that only check the guard fields use `serde_json::Value`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainManifest<C> {
    pub version: String,
    /// The label folder.
    pub labels: String,
    pub labels_lm_sha256: String,
    /// [`crate::labels::fingerprint`] of the labels trained on.
    pub labels_fingerprint: String,
    /// The base model folder.
    pub base: String,
    pub config: C,
    pub dev_questions: usize,
}

impl<C: Serialize + serde::de::DeserializeOwned> TrainManifest<C> {
    pub const FILE: &'static str = "manifest.json";

    pub fn read(dir: &Path) -> Result<Option<Self>> {
        crate::labels::read_json_if_present(&dir.join(Self::FILE))
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        uae_core::fs::write_json(&dir.join(Self::FILE), self)
    }
}

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    pub step: u64,
    pub epoch: usize,
    pub loss: f32,
    pub grad_norm: f32,
    pub lr: f32,
    pub tokens: usize,
    pub seconds: f64,
}

/// One dev evaluation: the metric that picks the best model, and what was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DevLog {
    pub epoch: usize,
    pub step: u64,
    pub dev_metric: f64,
    pub dev: DevScores,
}

/// What a dev evaluation measured: retrieval metrics on dev questions with evidence
/// (written under their usual names, `recall@1`, `map`, ...), or the utility-nDCG@10
/// of held-out labels (`uae train --dev-labels`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DevScores {
    Utility {
        #[serde(rename = "utility-ndcg@10")]
        utility_ndcg_10: f64,
    },
    Retrieval(uae_eval::Metrics),
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricsLine {
    Step(StepLog),
    Dev(DevLog),
}

impl MetricsLine {
    pub const FILE: &'static str = "metrics.jsonl";

    pub fn step(&self) -> u64 {
        match self {
            MetricsLine::Step(s) => s.step,
            MetricsLine::Dev(d) => d.step,
        }
    }

    /// Appends one line to `path`.
    pub fn append(&self, path: &Path) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(Error::io(path))?;
        let line = serde_json::to_string(self).expect("metric lines serialise; this is a bug");
        writeln!(f, "{line}").map_err(Error::io(path))
    }

    /// Every readable line of `path` (none if it does not exist). A line that does
    /// not parse is skipped with a warning: a killed run may leave a torn last line,
    /// and the curves should still be drawn from the rest.
    pub fn read_all(path: &Path) -> Result<Vec<MetricsLine>> {
        if !path.is_file() {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        Ok(text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .filter_map(|(i, l)| match serde_json::from_str(l) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(
                        "{}:{}: skipping an unreadable line: {e}",
                        path.display(),
                        i + 1
                    );
                    None
                }
            })
            .collect())
    }

    /// Keeps only the lines at or before `step` (the checkpoint a run resumes from:
    /// a killed run may have logged steps that the resumed run repeats).
    pub fn trim_after(path: &Path, step: u64) -> Result<()> {
        if !path.is_file() {
            return Ok(());
        }
        let keep: Vec<MetricsLine> = Self::read_all(path)?
            .into_iter()
            .filter(|m| m.step() <= step)
            .collect();
        uae_core::fs::write_jsonl(path, &keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(n: u64) -> MetricsLine {
        MetricsLine::Step(StepLog {
            step: n,
            epoch: 0,
            loss: 1.5,
            grad_norm: 0.5,
            lr: 1e-5,
            tokens: 100,
            seconds: 0.25,
        })
    }

    /// The two line kinds as the trainer has always written them (key sets from a
    /// real `metrics.jsonl`), read back into their variants.
    #[test]
    fn reads_step_and_dev_lines_and_skips_torn_ones() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("metrics.jsonl");
        std::fs::write(
            &p,
            concat!(
                r#"{"step":1,"epoch":0,"loss":2.0,"grad_norm":1.0,"lr":0.00001,"tokens":9,"seconds":0.5}"#,
                "\n",
                r#"{"epoch":0,"step":1,"dev_metric":0.4,"dev":{"recall@1":0.25,"recall@3":0.5,"recall@5":0.5,"recall@10":1.0,"hit@1":0.25,"hit@3":0.5,"hit@5":0.5,"hit@10":1.0,"map":0.4,"mrr":0.4,"ndcg@10":0.5}}"#,
                "\n",
                r#"{"epoch":1,"step":2,"dev_metric":0.7,"dev":{"utility-ndcg@10":0.7}}"#,
                "\n",
                r#"{"step":2,"epo"#
            ),
        )
        .unwrap();
        let lines = MetricsLine::read_all(&p).unwrap();
        assert_eq!(lines.len(), 3);
        assert!(matches!(&lines[0], MetricsLine::Step(s) if s.loss == 2.0));
        match &lines[1] {
            MetricsLine::Dev(DevLog {
                dev_metric,
                dev: DevScores::Retrieval(m),
                ..
            }) => {
                assert_eq!(*dev_metric, 0.4);
                assert_eq!(m.recall_1, 0.25);
            }
            other => panic!("not a retrieval dev line: {other:?}"),
        }
        assert!(matches!(
            &lines[2],
            MetricsLine::Dev(DevLog {
                dev: DevScores::Utility { utility_ndcg_10 },
                ..
            }) if *utility_ndcg_10 == 0.7
        ));
    }

    #[test]
    fn trim_keeps_lines_up_to_the_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("metrics.jsonl");
        for n in 1..=5 {
            step(n).append(&p).unwrap();
        }
        MetricsLine::trim_after(&p, 3).unwrap();
        let steps: Vec<u64> = MetricsLine::read_all(&p)
            .unwrap()
            .iter()
            .map(MetricsLine::step)
            .collect();
        assert_eq!(steps, vec![1, 2, 3]);
    }
}

/// `RUN/ckpt-*/state.json`, the file a checkpoint's writer writes last (so a folder
/// with it is complete): where the run is and how many steps AdamW has taken. Beside
/// it, `model.safetensors` and `optimizer.safetensors` (AdamW's moments as `m.NAME`,
/// `v.NAME`). Generic over the trainer's state type, which this crate does not know.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState<S> {
    /// Format version ([`CheckpointState::VERSION`]; checkpoints written before it
    /// had none).
    #[serde(default = "first_version")]
    pub version: u32,
    pub state: S,
    pub optimizer_step: u64,
}

fn first_version() -> u32 {
    1
}

impl<S: Serialize + serde::de::DeserializeOwned> CheckpointState<S> {
    pub const FILE: &'static str = "state.json";
    pub const VERSION: u32 = 1;
    /// The checkpoint's weights.
    pub const MODEL: &'static str = "model.safetensors";
    /// The checkpoint's AdamW moments.
    pub const OPTIMIZER: &'static str = "optimizer.safetensors";

    /// The state in checkpoint folder `dir`; an error names what is wrong.
    pub fn read(dir: &Path) -> std::result::Result<Self, String> {
        let text = std::fs::read_to_string(dir.join(Self::FILE)).map_err(|e| e.to_string())?;
        let s: Self = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if s.version > Self::VERSION {
            return Err(format!(
                "checkpoint version {} (this uae reads {})",
                s.version,
                Self::VERSION
            ));
        }
        Ok(s)
    }

    /// Writes the state into checkpoint folder `dir`, atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        uae_core::fs::write_json(&dir.join(Self::FILE), self)
    }
}

/// `RUN/ckpt.json`: the current checkpoint folder. Checkpoints are written to new
/// folders and this pointer is replaced in one rename, so a kill at any moment
/// leaves it naming a complete folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointPointer {
    #[serde(default = "first_version")]
    pub version: u32,
    /// The folder's name inside the run folder.
    pub dir: String,
}

impl CheckpointPointer {
    pub const FILE: &'static str = "ckpt.json";

    /// The pointer of run folder `out`, if there is a readable one.
    pub fn read(out: &Path) -> Option<CheckpointPointer> {
        let text = std::fs::read_to_string(out.join(Self::FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Points run folder `out` at checkpoint folder `dir` (one atomic rename).
    pub fn write(out: &Path, dir: &str) -> Result<()> {
        let p = CheckpointPointer {
            version: 1,
            dir: dir.to_string(),
        };
        uae_core::fs::write_json(&out.join(Self::FILE), &p)
    }
}
