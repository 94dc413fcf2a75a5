//! The search layer: a bi-encoder and an index together. Dense and BM25 rankings of
//! a collection, a dense searcher for one query at a time (what a server and the
//! latency benchmark do), cached passage embeddings, and the evaluation of a
//! retriever on a collection (metrics, TREC files, report).
//!
//! Used by label mining, training's dev evaluation, `uae eval`, the QASPER
//! benchmark and the server, so all of them rank the same way.

pub mod compare;
mod evaluate;
mod options;

pub mod calibrate;
pub mod select;
pub use evaluate::{
    evaluate, limit_queries, query_groups, ByField, DenseModel, EvalReport, Extras, Retriever,
    RetrieverKind,
};
pub use options::{EvalOptions, FusionKind, SelectOptions};

use std::path::{Path, PathBuf};
use std::time::Instant;
use uae_artifacts::embeddings::{model_fingerprint, EmbeddingCache};
use uae_core::{Hit, Passage, Progress, Query};
use uae_data::Collection;
use uae_encoder::{BatchOptions, Encoder};
use uae_index::{Bm25Params, DenseIndex, ScopedBm25, Scopes};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{other}: scored by another LLM or prompt template than {labels}; a calibration's question term needs no-context NLLs of one LLM")]
    OtherLlm {
        labels: std::path::PathBuf,
        other: std::path::PathBuf,
    },
    #[error("loading bi-encoder from {path} (run scripts/fetch-models.sh?): {source}")]
    LoadEncoder {
        path: PathBuf,
        #[source]
        source: uae_encoder::Error,
    },
    #[error(transparent)]
    Encoder(#[from] uae_encoder::Error),
    #[error(transparent)]
    Index(#[from] uae_index::Error),
    #[error(transparent)]
    Files(#[from] uae_core::Error),
    #[error(transparent)]
    Eval(#[from] uae_eval::Error),
    #[error(transparent)]
    Data(#[from] uae_data::Error),
    #[error("{0}")]
    Compare(String),
    /// Options that cannot go together, or need a file that is not there.
    #[error("{0}")]
    Options(String),
    #[error("{collection}: none of its {queries} questions has a relevant passage (`positives`, qrels), so there is nothing to score")]
    NothingToEvaluate { collection: String, queries: usize },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The default bi-encoder folder (what `scripts/fetch-models.sh` unpacks).
pub const DEFAULT_ENCODER: &str = "models/all-MiniLM-L6-v2";

/// Loads an inference bi-encoder from `dir`; with `bf16`, its projections run in
/// bf16 (AMX tiles or AVX512_BF16; an error on CPUs with neither).
pub fn load_encoder(dir: &Path, bf16: bool) -> Result<Encoder> {
    let mut enc = Encoder::load(dir, &uae_encoder::Device::Cpu, false).map_err(|source| {
        Error::LoadEncoder {
            path: dir.to_path_buf(),
            source,
        }
    })?;
    if bf16 {
        enc.model.to_bf16()?;
    }
    Ok(enc)
}

/// Wall time of the phases of a ranking run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Timings {
    pub index_s: f64,
    pub encode_queries_s: f64,
    pub search_s: f64,
    pub per_query_ms: f64,
}

/// Embeds texts in batches, reported to `progress` as phase `what`.
pub fn embed_texts(
    enc: &Encoder,
    texts: &[&str],
    opts: BatchOptions,
    what: &str,
    progress: &dyn Progress,
) -> Result<Vec<Vec<f32>>> {
    progress.start(what, texts.len() as u64);
    let vecs = enc.embed_with(texts, opts, &mut |n| progress.set(n as u64))?;
    progress.finish();
    Ok(vecs)
}

/// Embeds passages' texts (see [`embed_texts`]).
pub fn embed_passages(
    enc: &Encoder,
    passages: &[Passage],
    opts: BatchOptions,
    what: &str,
    progress: &dyn Progress,
) -> Result<Vec<Vec<f32>>> {
    let texts: Vec<&str> = passages.iter().map(|p| p.text.as_str()).collect();
    embed_texts(enc, &texts, opts, what, progress)
}

/// Passage embeddings, from `cache/emb-KEY.bin` when an earlier run of the same
/// model (the files of `model_dir`) over the same passages left them there;
/// otherwise embedded and cached.
pub fn cached_passage_embeddings(
    name: &str,
    enc: &Encoder,
    model_dir: &Path,
    passages: &[Passage],
    cache_dir: &Path,
    progress: &dyn Progress,
) -> Result<Vec<Vec<f32>>> {
    let texts: Vec<&str> = passages.iter().map(|p| p.text.as_str()).collect();
    let fp = model_fingerprint(model_dir)?;
    let cache = EmbeddingCache::new(cache_dir, &fp, enc.model.is_bf16(), &texts);
    if let Some(v) = cache.load(texts.len(), enc.dim()) {
        tracing::info!("{name}: passage embeddings from {}", cache.path.display());
        return Ok(v);
    }
    let vecs = embed_passages(
        enc,
        passages,
        BatchOptions::default(),
        &format!("{name} index"),
        progress,
    )?;
    cache.save(&vecs, enc.dim())?;
    Ok(vecs)
}

/// One row of `ids.jsonl` beside an exported `vectors.npy`.
#[derive(serde::Serialize)]
struct IdRow<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

/// Embeds `passages` and writes `out/vectors.npy` (`[n, dim]` float32) and
/// `out/ids.jsonl` (`{"id", "scope"?}` per row, in the same order), for bulk loading
/// into a vector database. Returns (rows, dimension).
pub fn export_index(
    enc: &Encoder,
    passages: &[Passage],
    out: &Path,
    progress: &dyn Progress,
) -> Result<(usize, usize)> {
    let vecs = embed_passages(enc, passages, BatchOptions::default(), "passages", progress)?;
    uae_artifacts::embeddings::write_npy(&out.join("vectors.npy"), &vecs, enc.dim())?;
    let ids: Vec<IdRow> = passages
        .iter()
        .map(|p| IdRow {
            id: &p.id,
            scope: p.scope.as_deref(),
        })
        .collect();
    uae_core::fs::write_jsonl(&out.join("ids.jsonl"), &ids)?;
    Ok((vecs.len(), enc.dim()))
}

/// A dense index over a passage list with its scopes: searches one query at a time,
/// as a server does.
pub struct DenseSearcher {
    pub index: DenseIndex,
    pub scopes: Scopes,
}

impl DenseSearcher {
    pub fn new(passages: &[Passage], vecs: &[Vec<f32>]) -> Result<Self> {
        Ok(DenseSearcher {
            index: DenseIndex::new(vecs)?,
            scopes: Scopes::new(passages),
        })
    }

    /// Every candidate of `q` (its scope's passages, or all), best first.
    pub fn search(&self, enc: &Encoder, q: &Query) -> Result<Vec<Hit>> {
        let v = enc.embed(&[q.text.as_str()])?;
        Ok(self.index.search(&v[0], self.scopes.candidates(q), None)?)
    }

    /// The top `k` of `candidates` for an embedded query.
    pub fn top(&self, v: &[f32], candidates: &[usize], k: Option<usize>) -> Result<Vec<Hit>> {
        Ok(self.index.search(v, candidates, k)?)
    }
}

/// How deep corpus-wide (unscoped) queries are ranked: the top 1,000, as BEIR's
/// evaluation does, so that memory stays O(queries x 1,000) however large the
/// corpus. Scoped queries rank every passage of their scope.
pub const CORPUS_WIDE_DEPTH: usize = 1000;

/// Ranks every candidate for every query with dense vectors (corpus and queries
/// embedded with `enc`, in batches); corpus-wide queries to [`CORPUS_WIDE_DEPTH`],
/// through the blocked exact search.
pub fn dense_rankings(
    enc: &Encoder,
    coll: &Collection,
    opts: BatchOptions,
    timings: &mut Timings,
    progress: &dyn Progress,
) -> Result<Vec<Vec<Hit>>> {
    let t = Instant::now();
    let vecs = embed_passages(enc, &coll.passages, opts, "passages", progress)?;
    dense_rankings_over(enc, coll, &vecs, opts, t, timings)
}

/// [`dense_rankings`] with the passages already embedded (`vecs`, in corpus order;
/// a cache's); `t` is when indexing began.
pub fn dense_rankings_over(
    enc: &Encoder,
    coll: &Collection,
    vecs: &[Vec<f32>],
    opts: BatchOptions,
    t: Instant,
    timings: &mut Timings,
) -> Result<Vec<Vec<Hit>>> {
    let searcher = DenseSearcher::new(&coll.passages, vecs)?;
    timings.index_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let qtexts: Vec<&str> = coll.queries.iter().map(|q| q.text.as_str()).collect();
    let qvecs = enc.embed_with(&qtexts, opts, &mut |_| {})?;
    timings.encode_queries_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let wide: Vec<usize> = (0..coll.queries.len())
        .filter(|&i| coll.queries[i].scope.is_none())
        .collect();
    let wide_vecs: Vec<Vec<f32>> = wide.iter().map(|&i| qvecs[i].clone()).collect();
    let mut wide_hits = searcher
        .index
        .search_all(&wide_vecs, CORPUS_WIDE_DEPTH)?
        .into_iter();
    let mut out = Vec::with_capacity(coll.queries.len());
    for (q, v) in coll.queries.iter().zip(&qvecs) {
        out.push(if q.scope.is_none() {
            wide_hits.next().unwrap_or_default()
        } else {
            searcher.top(v, searcher.scopes.candidates(q), None)?
        });
    }
    timings.search_s = t.elapsed().as_secs_f64();
    Ok(out)
}

/// Ranks every candidate for every query with BM25 (statistics per scope);
/// corpus-wide queries to [`CORPUS_WIDE_DEPTH`].
pub fn bm25_rankings(
    coll: &Collection,
    params: Bm25Params,
    timings: &mut Timings,
) -> Vec<Vec<Hit>> {
    let t = Instant::now();
    let index = ScopedBm25::new(&coll.passages, params);
    timings.index_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let out = coll
        .queries
        .iter()
        .map(|q| {
            let depth = q.scope.is_none().then_some(CORPUS_WIDE_DEPTH);
            index.search(q, depth)
        })
        .collect();
    timings.search_s = t.elapsed().as_secs_f64();
    out
}
