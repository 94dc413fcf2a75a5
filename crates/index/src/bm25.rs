//! Okapi BM25.
//!
//! Tokenisation: Unicode-lowercased words, split on every character that is not
//! alphanumeric (so "BERT-base's" -> ["bert", "base", "s"]); no stemming, no stop
//! words. Score: sum over query tokens (repeats count) of
//! idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |d| / avgdl)), with the
//! non-negative Lucene idf ln(1 + (N - df + 0.5) / (df + 0.5)).
//! Defaults k1 = 1.2, b = 0.75. Statistics (N, df, avgdl) are per scope: for
//! QASPER, each paper is its own little collection.

use crate::Scopes;
use std::collections::HashMap;
use uae_core::{rank, Hit, Passage, Query};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bm25Params {
    pub k1: f32,
    pub b: f32,
}

impl Default for Bm25Params {
    fn default() -> Self {
        Bm25Params { k1: 1.2, b: 0.75 }
    }
}

/// Lowercase alphanumeric word tokens.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// A BM25 index over one collection of documents.
#[derive(Debug, Clone)]
pub struct Bm25 {
    params: Bm25Params,
    vocab: HashMap<String, u32>,
    /// Per term: (document, term frequency) postings.
    postings: Vec<Vec<(u32, u32)>>,
    doc_len: Vec<f32>,
    avgdl: f32,
}

impl Bm25 {
    pub fn new<'a>(docs: impl IntoIterator<Item = &'a str>, params: Bm25Params) -> Self {
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut postings: Vec<Vec<(u32, u32)>> = Vec::new();
        let mut doc_len = Vec::new();
        for (d, text) in docs.into_iter().enumerate() {
            let mut tf: HashMap<u32, u32> = HashMap::new();
            let toks = tokenize(text);
            doc_len.push(toks.len() as f32);
            for t in toks {
                let next = vocab.len() as u32;
                let id = *vocab.entry(t).or_insert(next);
                if id as usize == postings.len() {
                    postings.push(Vec::new());
                }
                *tf.entry(id).or_default() += 1;
            }
            let mut tf: Vec<_> = tf.into_iter().collect();
            tf.sort_unstable();
            for (id, c) in tf {
                postings[id as usize].push((d as u32, c));
            }
        }
        let avgdl = if doc_len.is_empty() {
            0.0
        } else {
            doc_len.iter().sum::<f32>() / doc_len.len() as f32
        };
        Bm25 {
            params,
            vocab,
            postings,
            doc_len,
            avgdl,
        }
    }

    pub fn len(&self) -> usize {
        self.doc_len.len()
    }

    pub fn is_empty(&self) -> bool {
        self.doc_len.is_empty()
    }

    fn idf(&self, df: usize) -> f32 {
        let n = self.len() as f32;
        let df = df as f32;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }

    /// The BM25 score of every document for `query` (0 for documents sharing no term).
    pub fn scores(&self, query: &str) -> Vec<f32> {
        let mut out = vec![0f32; self.len()];
        let Bm25Params { k1, b } = self.params;
        for t in tokenize(query) {
            let Some(&id) = self.vocab.get(&t) else {
                continue;
            };
            let post = &self.postings[id as usize];
            let idf = self.idf(post.len());
            for &(d, tf) in post {
                let tf = tf as f32;
                let norm = if self.avgdl > 0.0 {
                    1.0 - b + b * self.doc_len[d as usize] / self.avgdl
                } else {
                    1.0
                };
                out[d as usize] += idf * tf * (k1 + 1.0) / (tf + k1 * norm);
            }
        }
        out
    }
}

/// One BM25 index per scope (and one over unscoped passages), mapping results back
/// to corpus positions.
#[derive(Debug, Clone)]
pub struct ScopedBm25 {
    scopes: Scopes,
    per_scope: HashMap<String, Bm25>,
    global: Option<Bm25>,
}

impl ScopedBm25 {
    /// Statistics per scope, plus corpus-wide ones when some passage has no scope.
    pub fn new(passages: &[Passage], params: Bm25Params) -> Self {
        Self::build(passages, params, false)
    }

    /// [`ScopedBm25::new`], with corpus-wide statistics in any case, so that
    /// unscoped queries search a fully scoped corpus too.
    pub fn with_global(passages: &[Passage], params: Bm25Params) -> Self {
        Self::build(passages, params, true)
    }

    fn build(passages: &[Passage], params: Bm25Params, global: bool) -> Self {
        let scopes = Scopes::new(passages);
        let per_scope = scopes
            .iter()
            .map(|(s, idx)| {
                let docs = idx.iter().map(|&i| passages[i].text.as_str());
                (s.clone(), Bm25::new(docs, params))
            })
            .collect();
        let global = (global || passages.iter().any(|p| p.scope.is_none()))
            .then(|| Bm25::new(passages.iter().map(|p| p.text.as_str()), params));
        ScopedBm25 {
            scopes,
            per_scope,
            global,
        }
    }

    /// Ranks the query's candidates by BM25 (best first, ties by corpus position).
    pub fn search(&self, query: &Query, k: Option<usize>) -> Vec<Hit> {
        let (index, cands) = match &query.scope {
            Some(s) => (self.per_scope.get(s), self.scopes.scope(s)),
            None => (self.global.as_ref(), self.scopes.candidates(query)),
        };
        let Some(index) = index else {
            return Vec::new();
        };
        let scores = index.scores(&query.text);
        let hits = cands
            .iter()
            .zip(scores)
            .map(|(&passage, score)| Hit { passage, score })
            .collect();
        rank(hits, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_lowercases_and_splits_on_punctuation() {
        assert_eq!(
            tokenize("BERT-base's F1, 3.5!"),
            vec!["bert", "base", "s", "f1", "3", "5"]
        );
    }

    /// Hand computation: docs "a b", "a c c", "d"; N=3, avgdl=(2+3+1)/3=2, k1=1.2, b=0.75.
    /// query "c": df=1, idf=ln(1+(3-1+0.5)/1.5)=ln(8/3)=0.980829;
    /// doc1: tf=2, norm=1-0.75+0.75*3/2=1.375, score=0.980829*2*2.2/(2+1.2*1.375)=1.182367.
    #[test]
    fn scores_match_hand_computation() {
        let bm = Bm25::new(["a b", "a c c", "d"], Bm25Params::default());
        let s = bm.scores("c");
        assert_eq!(s[0], 0.0);
        assert!((s[1] - 1.182367).abs() < 1e-5, "{}", s[1]);
        assert_eq!(s[2], 0.0);
    }
}
