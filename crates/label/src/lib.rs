//! Utility labels: how much each candidate passage lowers the LLM's NLL of the
//! reference answer. u(p) = NLL(a | q) - NLL(a | p, q), mean over a question's
//! distinct reference answers; positive when the passage helps.
//!
//! [`run`] is a whole labeling run (manifest and resume checks, eligibility,
//! mining, scoring, summary, histogram). Candidates come from [`mine`]; scores go
//! to a durable store; [`label`] runs the job in a fixed, deterministic batch plan
//! so that a killed run, restarted, recomputes the same batches and ends with the
//! same store.

pub mod export;
pub mod merge;
pub mod mine;
mod options;
mod prompt;
mod ranking;
pub mod remote;
mod run;
mod score;

pub use mine::{mine, mine_all};
pub use options::{label as label_command, LabelOptions, LabelTarget, Llm};
pub use prompt::{PromptFormat, TemplateChoice};
pub use ranking::Ranking;
pub use remote::{RemoteLm, RemoteOptions};
pub use run::{run, utility_histogram, LabelRun, DEFAULT_LM};
pub use score::{label, score_key, Job, LmSource, Scorer};
pub use uae_artifacts::labels::{
    Candidate, CandidateMode, LabelConfig, LabelManifest, LabelSummary, LabeledCandidate,
    LabeledGroup, Template,
};
pub use uae_artifacts::scores::ScoreRecord as Record;

use std::path::PathBuf;

/// The label folder's utility histogram (for people; nothing reads it back).
pub const HISTOGRAM: &str = "utility-histogram.svg";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{path}: labels were made with {what} {found}, this run uses {want}; choose another --out"
    )]
    Mismatch {
        path: PathBuf,
        what: &'static str,
        found: String,
        want: String,
    },
    #[error(
        "no question of {split} has an answer to label (and, with --candidates gold, a positive)"
    )]
    NothingToLabel { split: String },
    #[error("the LLM gave a non-finite NLL for score {key}; nothing of that batch was stored")]
    NonFiniteScore { key: String },
    #[error("LLM server {url}: {message}")]
    Remote { url: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Files(#[from] uae_core::Error),
    #[error(transparent)]
    Lm(#[from] uae_lm::Error),
    #[error(transparent)]
    Search(#[from] uae_search::Error),
    #[error(transparent)]
    Index(#[from] uae_index::Error),
}

impl From<uae_encoder::Error> for Error {
    fn from(e: uae_encoder::Error) -> Self {
        Error::Search(e.into())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
