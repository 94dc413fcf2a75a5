use crate::common::{progress, write_json, DataDir, DEFAULT_ENCODER};
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use uae_core::{Hit, Query};
use uae_data::{Collection, Split};
use uae_encoder::{BatchOptions, Encoder};
use uae_eval::{write_qrels, write_run, Metrics, RunEntry};
use uae_index::{Bm25Params, DenseIndex, ScopedBm25, Scopes};

#[derive(clap::ValueEnum, Clone, Copy, Debug, Serialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum RetrieverKind {
    Bm25,
    Dense,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// QASPER split (ignored with --beir).
    #[arg(long, default_value = "test")]
    split: Split,
    #[arg(long, value_enum, default_value = "dense")]
    retriever: RetrieverKind,
    /// Bi-encoder folder for --retriever dense.
    #[arg(long, default_value = DEFAULT_ENCODER)]
    model: PathBuf,
    #[arg(long, help = crate::common::ENCODER_BF16_HELP)]
    bf16: bool,
    /// Output folder: run.trec, qrels.trec, report.json.
    #[arg(long)]
    out: PathBuf,
    /// Evaluate on a BEIR-layout folder instead of QASPER (corpus-wide search).
    #[arg(long)]
    beir: Option<PathBuf>,
    /// qrels split name for --beir (qrels/{name}.tsv).
    #[arg(long, default_value = "test")]
    beir_split: String,
    /// BM25 term-frequency saturation.
    #[arg(long, default_value_t = 1.2)]
    k1: f32,
    /// BM25 length normalisation (0: none, 1: full).
    #[arg(long, default_value_t = 0.75)]
    b: f32,
    /// Evaluate the first N questions only (and their papers), as `uae train
    /// --dev-limit` does.
    #[arg(long)]
    limit: Option<usize>,
    /// Most padded tokens per encoder forward pass.
    #[arg(long, default_value_t = 8192)]
    max_tokens: usize,
    #[command(flatten)]
    data: DataDir,
}

#[derive(Serialize)]
pub struct Report {
    pub collection: String,
    pub retriever: RetrieverKind,
    pub model: Option<String>,
    pub queries: usize,
    pub evaluable_queries: usize,
    pub skipped_queries: usize,
    pub passages: usize,
    pub metrics: Metrics,
    pub timings: Timings,
}

#[derive(Serialize, Default)]
pub struct Timings {
    pub index_s: f64,
    pub encode_queries_s: f64,
    pub search_s: f64,
    pub per_query_ms: f64,
}

/// Ranks every candidate for every query with dense vectors (corpus and queries
/// embedded with `enc`).
pub fn dense_rankings(
    enc: &Encoder,
    coll: &Collection,
    opts: BatchOptions,
    timings: &mut Timings,
) -> Result<Vec<Vec<Hit>>> {
    let t = Instant::now();
    let texts: Vec<&str> = coll.passages.iter().map(|p| p.text.as_str()).collect();
    let pb = progress(texts.len() as u64, "passages");
    let vecs = enc.embed_with(&texts, opts, &mut |n| pb.set_position(n as u64))?;
    pb.finish_and_clear();
    let index = DenseIndex::new(&vecs)?;
    timings.index_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let qtexts: Vec<&str> = coll.queries.iter().map(|q| q.text.as_str()).collect();
    let qvecs = enc.embed_with(&qtexts, opts, &mut |_| {})?;
    timings.encode_queries_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let scopes = Scopes::new(&coll.passages);
    let out = coll
        .queries
        .iter()
        .zip(&qvecs)
        .map(|(q, v)| index.search(v, scopes.candidates(q), None))
        .collect::<Result<Vec<_>, _>>()?;
    timings.search_s = t.elapsed().as_secs_f64();
    Ok(out)
}

pub fn bm25_rankings(
    coll: &Collection,
    params: Bm25Params,
    timings: &mut Timings,
) -> Vec<Vec<Hit>> {
    let t = Instant::now();
    let index = ScopedBm25::new(&coll.passages, params);
    timings.index_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let out = coll.queries.iter().map(|q| index.search(q, None)).collect();
    timings.search_s = t.elapsed().as_secs_f64();
    out
}

/// Per-query metrics for evaluable queries (in query order) and their mean.
pub fn score(coll: &Collection, rankings: &[Vec<Hit>]) -> (Vec<Option<Metrics>>, Metrics) {
    let per: Vec<Option<Metrics>> = coll
        .queries
        .iter()
        .zip(rankings)
        .map(|(q, hits)| {
            let ids: Vec<&str> = hits
                .iter()
                .map(|h| coll.passages[h.passage].id.as_str())
                .collect();
            let gold: HashMap<&str, u32> = q.gold.iter().map(|(id, g)| (id.as_str(), *g)).collect();
            Metrics::of_ranking(&ids, &gold)
        })
        .collect();
    let ok: Vec<Metrics> = per.iter().flatten().copied().collect();
    let mean = Metrics::mean(&ok);
    (per, mean)
}

pub fn write_trec(dir: &Path, tag: &str, coll: &Collection, rankings: &[Vec<Hit>]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let entries: Vec<RunEntry> = coll
        .queries
        .iter()
        .zip(rankings)
        .map(|(q, hits)| RunEntry {
            qid: &q.id,
            ranking: hits
                .iter()
                .map(|h| (coll.passages[h.passage].id.as_str(), h.score))
                .collect(),
        })
        .collect();
    write_run(&dir.join("run.trec"), tag, &entries)?;
    let evaluable: Vec<&Query> = coll.evaluable().collect();
    write_qrels(
        &dir.join("qrels.trec"),
        evaluable.iter().map(|q| (q.id.as_str(), q.gold.as_slice())),
    )?;
    Ok(())
}

pub fn run(a: EvalArgs) -> Result<()> {
    let mut coll = match &a.beir {
        Some(dir) => uae_data::load_beir(dir, &a.beir_split)?,
        None => a.data.load(a.split)?.collection(),
    };
    if let Some(n) = a.limit {
        crate::common::limit_queries(&mut coll, n);
    }
    let mut timings = Timings::default();
    let (rankings, model) = match a.retriever {
        RetrieverKind::Bm25 => (
            bm25_rankings(&coll, Bm25Params { k1: a.k1, b: a.b }, &mut timings),
            None,
        ),
        RetrieverKind::Dense => {
            let enc = crate::common::load_encoder_in(&a.model, a.bf16)?;
            let opts = BatchOptions {
                max_tokens: a.max_tokens,
                ..Default::default()
            };
            (
                dense_rankings(&enc, &coll, opts, &mut timings)?,
                Some(a.model.display().to_string()),
            )
        }
    };
    let (_, metrics) = score(&coll, &rankings);
    let evaluable = coll.evaluable().count();
    timings.per_query_ms =
        1000.0 * (timings.encode_queries_s + timings.search_s) / coll.queries.len().max(1) as f64;
    let tag = match a.retriever {
        RetrieverKind::Bm25 => "bm25".to_string(),
        RetrieverKind::Dense => format!(
            "dense-{}",
            a.model
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
    };
    write_trec(&a.out, &tag, &coll, &rankings)?;
    let report = Report {
        collection: coll.name.clone(),
        retriever: a.retriever,
        model,
        queries: coll.queries.len(),
        evaluable_queries: evaluable,
        skipped_queries: coll.queries.len() - evaluable,
        passages: coll.passages.len(),
        metrics,
        timings,
    };
    write_json(&a.out.join("report.json"), &report)?;
    println!(
        "{} on {}: {} evaluable of {} queries ({} without matched text evidence skipped), {} passages\n",
        tag, report.collection, evaluable, report.queries, report.skipped_queries, report.passages
    );
    print!("{}", uae_eval::table(&tag, &report.metrics));
    Ok(())
}
