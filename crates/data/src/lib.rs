//! Data loading: QASPER v0.3 (official JSON, plain or gzip) and BEIR-layout corpora,
//! turned into `uae-core` passages and queries.

mod beir;
mod corpus;
mod error;
mod io;
mod qa;
mod qasper;
mod source;

pub use beir::load_beir;
pub use corpus::{read_corpus, read_corpus_jsonl};
pub use error::{Error, Result};
pub use io::{open_maybe_gz, read_jsonl, read_jsonl_lenient, read_jsonl_lines};
pub use qa::{QaItem, QaSet, SkippedRow, MAX_QA_TEXT_BYTES};
pub use qasper::{
    default_data_dir, Answer, AnswerKind, Paper, Paragraph, Qasper, QasperStats, Question, Split,
    DEFAULT_DATA_DIR,
};
pub use source::Source;
#[cfg(feature = "cli")]
pub use source::SourceArgs;

use uae_core::{Passage, Query};

/// A retrieval collection: passages and the queries judged against them.
#[derive(Debug, Clone)]
pub struct Collection {
    pub name: String,
    pub passages: Vec<Passage>,
    pub queries: Vec<Query>,
}

impl Collection {
    /// Queries that have at least one relevant passage (the ones metrics average over).
    pub fn evaluable(&self) -> impl Iterator<Item = &Query> {
        self.queries.iter().filter(|q| !q.gold.is_empty())
    }
}
