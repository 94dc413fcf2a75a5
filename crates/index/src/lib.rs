//! Search without models: exact dense top-k over normalised vectors, and Okapi BM25.
//! Both respect scopes (QASPER searches within one paper; BEIR corpus-wide), and
//! [`Fusion`] joins their rankings (hybrid retrieval).

mod bm25;
mod dense;
mod fusion;

pub use bm25::{tokenize, Bm25, Bm25Params, ScopedBm25};
pub use dense::{dot, DenseIndex};
pub use fusion::{Fusion, DEFAULT_DENSE_WEIGHT, DEFAULT_RRF_K};

use std::collections::HashMap;
use uae_core::{Passage, Query};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("vector {index} has dimension {got}, the index has {want}")]
    Dim {
        index: usize,
        got: usize,
        want: usize,
    },
    #[error("the index is empty")]
    Empty,
}

pub type Result<T> = std::result::Result<T, Error>;

/// Which passages each scope holds (corpus positions, in corpus order).
#[derive(Debug, Clone, Default)]
pub struct Scopes {
    by_scope: HashMap<String, Vec<usize>>,
    all: Vec<usize>,
}

impl Scopes {
    pub fn new(passages: &[Passage]) -> Self {
        let mut by_scope: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in passages.iter().enumerate() {
            if let Some(s) = &p.scope {
                by_scope.entry(s.clone()).or_default().push(i);
            }
        }
        Scopes {
            by_scope,
            all: (0..passages.len()).collect(),
        }
    }

    /// The candidate passages of a query: its scope's passages, or all of them.
    /// An unknown scope has no candidates.
    pub fn candidates(&self, query: &Query) -> &[usize] {
        match &query.scope {
            Some(s) => self.by_scope.get(s).map(Vec::as_slice).unwrap_or(&[]),
            None => &self.all,
        }
    }

    /// Every passage, in corpus order (what an unscoped query searches).
    pub fn all(&self) -> &[usize] {
        &self.all
    }

    pub fn scope(&self, name: &str) -> &[usize] {
        self.by_scope.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Vec<usize>)> {
        self.by_scope.iter()
    }
}
