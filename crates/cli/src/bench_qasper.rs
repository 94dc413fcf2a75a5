//! `uae bench qasper`: every retriever on QASPER in one process: retrieval metrics,
//! answers and Token F1 from the LLM given each retriever's top-k, per-query latency,
//! and the speed-up of plain vector search over LLM re-ranking.
//!
//! Generated answers and re-ranker scores are memoised in `OUT/cache/` (durable,
//! keyed by model hash and prompt), so a killed run resumes where it stopped; so are
//! each bi-encoder's passage embeddings (keyed by its files and the passages).
//! Latencies are always measured afresh.

use crate::common::{load_encoder, progress, write_json, DataDir, DEFAULT_ENCODER};
use crate::eval_cmd::{score, write_trec};
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;
use uae_core::{Hit, Passage, Query};
use uae_data::{Collection, Qasper, Split};
use uae_encoder::Encoder;
use uae_eval::f1::max_f1;
use uae_eval::Metrics;
use uae_index::{Bm25Params, DenseIndex, ScopedBm25, Scopes};
use uae_rag::{AnswerRecord, Rag, RagConfig, Reranker, ScoreRecord, Store};

#[derive(clap::Args, Debug)]
pub struct QasperBenchArgs {
    /// Output folder: report.json, report.md, chart.{svg,png}, runs/<system>/run.trec and
    /// cache/. Rerunning the same command resumes from cache/.
    #[arg(long)]
    out: PathBuf,
    /// The subset: the first 50 evaluable questions for quality and 10 for latency
    /// (about 15 minutes on 2 cores with all rows).
    #[arg(long)]
    quick: bool,
    /// Evaluate the first N evaluable questions, in file order (default: all; 50
    /// with --quick).
    #[arg(long)]
    questions: Option<usize>,
    /// Questions timed per system and thread setting (default: 50; 10 with --quick).
    #[arg(long)]
    latency_queries: Option<usize>,
    /// The base bi-encoder (the "MiniLM" row and the first stage of the re-rankers).
    #[arg(long, default_value = DEFAULT_ENCODER)]
    base: PathBuf,
    /// The base fine-tuned with `uae train --loss infonce` (row left out when absent).
    #[arg(long)]
    infonce: Option<PathBuf>,
    /// The base fine-tuned with `uae train --loss uae`.
    #[arg(long)]
    uae: Option<PathBuf>,
    /// The base fine-tuned with `--loss uae` on labels from `uae label --candidates mined`.
    #[arg(long)]
    uae_mined: Option<PathBuf>,
    /// More fine-tuned bi-encoders as NAME=DIR (e.g. `kl=runs/kl/model`); repeatable.
    #[arg(long = "model", value_parser = parse_named)]
    models: Vec<(String, PathBuf)>,
    /// Add a row for the `--uae` model with its projections in bf16 on AMX tiles
    /// (query latency ~4x lower; needs an AMX CPU). The other rows stay f32.
    #[arg(long, requires = "uae")]
    uae_bf16: bool,
    /// The LLM for answers and re-ranking (the labeler's).
    #[command(flatten)]
    lm: crate::common::LmArgs,
    /// Base-encoder candidates re-ranked by the LLM per question.
    #[arg(long, default_value_t = 10)]
    rerank_depth: usize,
    /// Leave out the LLM re-ranking rows.
    #[arg(long)]
    no_rerank: bool,
    /// Leave out answer generation (no Token F1).
    #[arg(long)]
    no_answers: bool,
    /// Answer prompt with {context} and {question} placeholders; a typed `\n` is a
    /// newline.
    #[arg(long, default_value = uae_rag::DEFAULT_ANSWER_TEMPLATE)]
    answer_template: String,
    /// Each passage is cut to this many LLM tokens in prompts.
    #[arg(long, default_value_t = 256)]
    passage_tokens: usize,
    /// Longest generated answer, in tokens.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Prompts decoded together. Decoding reads every weight once per step for the
    /// whole batch, so larger batches are nearly free per step (bf16, batch 32: 52 ms a
    /// step vs 35 ms at 8). Answers do not depend on it (rows are independent).
    #[arg(long, default_value_t = 32)]
    answer_batch: usize,
    #[arg(long, default_value = "test")]
    split: Split,
    #[command(flatten)]
    data: DataDir,
}

fn parse_named(s: &str) -> std::result::Result<(String, PathBuf), String> {
    let (name, dir) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected NAME=DIR"))?;
    if name.is_empty() || dir.is_empty() {
        return Err(format!("`{s}`: expected NAME=DIR"));
    }
    Ok((name.to_string(), PathBuf::from(dir)))
}

/// One retrieval system's results.
struct System {
    name: String,
    kind: &'static str,
    rankings: Vec<Vec<Hit>>,
    latency_ms: Vec<f64>,
    latency_1t_ms: Vec<f64>,
}

#[derive(Serialize, Clone, Copy, Default)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p50_ms_1_thread: f64,
    pub p95_ms_1_thread: f64,
    pub queries: usize,
}

#[derive(Serialize)]
pub struct Row {
    pub system: String,
    pub kind: &'static str,
    pub metrics: Option<Metrics>,
    pub f1_at_1: Option<f64>,
    pub f1_at_3: Option<f64>,
    pub latency: Option<Latency>,
    /// Latency (p50, default threads) of this re-ranker over UAE's.
    pub uae_speedup: Option<f64>,
    pub uae_speedup_1_thread: Option<f64>,
}

#[derive(Serialize)]
struct Report<'a> {
    split: String,
    questions: usize,
    passages: usize,
    latency_queries: usize,
    threads: usize,
    rerank_depth: usize,
    lm: String,
    lm_sha256: String,
    rag: &'a RagConfig,
    seconds: f64,
    rows: &'a [Row],
    comparisons: Vec<Comparison>,
}

/// Relative change of one system over another, in percent.
#[derive(Serialize)]
pub struct Comparison {
    pub system: String,
    pub over: String,
    pub recall_1_pct: f64,
    pub map_pct: f64,
    pub f1_at_1_pct: Option<f64>,
    pub f1_at_3_pct: Option<f64>,
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[i.clamp(1, s.len()) - 1]
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The evaluation subset: the first `n` questions with gold evidence, and every
/// passage of their papers.
fn subset(q: &Qasper, n: Option<usize>) -> Collection {
    let mut coll = q.collection();
    coll.queries.retain(|q| !q.gold.is_empty());
    if let Some(n) = n {
        coll.queries.truncate(n);
    }
    let scopes: HashSet<Option<String>> = coll.queries.iter().map(|q| q.scope.clone()).collect();
    coll.passages.retain(|p| scopes.contains(&p.scope));
    coll
}

/// Encodes and searches one query at a time, as a server would (index built first).
fn dense_system(
    name: &str,
    enc: &Encoder,
    dir: &Path,
    coll: &Collection,
    cache: &Path,
    latency_queries: usize,
    one_thread: &rayon::ThreadPool,
) -> Result<(System, DenseParts)> {
    let vecs = crate::common::passage_embeddings(name, enc, dir, &coll.passages, cache)?;
    let parts = DenseParts {
        index: DenseIndex::new(&vecs)?,
        scopes: Scopes::new(&coll.passages),
    };
    let mut rankings = Vec::with_capacity(coll.queries.len());
    let mut latency_ms = Vec::new();
    for q in &coll.queries {
        let t = Instant::now();
        rankings.push(parts.search(enc, q)?);
        latency_ms.push(ms(t));
    }
    let mut latency_1t_ms = Vec::new();
    one_thread.install(|| -> Result<()> {
        for q in coll.queries.iter().take(latency_queries) {
            let t = Instant::now();
            parts.search(enc, q)?;
            latency_1t_ms.push(ms(t));
        }
        Ok(())
    })?;
    latency_ms.truncate(latency_queries.max(1));
    Ok((
        System {
            name: name.into(),
            kind: "dense",
            rankings,
            latency_ms,
            latency_1t_ms,
        },
        parts,
    ))
}

struct DenseParts {
    index: DenseIndex,
    scopes: Scopes,
}

impl DenseParts {
    fn search(&self, enc: &Encoder, q: &Query) -> Result<Vec<Hit>> {
        let v = enc.embed(&[q.text.as_str()])?;
        Ok(self.index.search(&v[0], self.scopes.candidates(q), None)?)
    }
}

/// Re-orders the first `depth` hits by the LLM's scores (ties keep the first-stage
/// order); the rest keep their order. Scores become descending rank scores.
fn reorder(first_stage: &[Hit], llm: &[f32]) -> Vec<Hit> {
    let depth = llm.len();
    let mut head: Vec<(usize, f32)> = llm.iter().copied().enumerate().collect();
    head.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let order = head
        .iter()
        .map(|&(i, _)| first_stage[i].passage)
        .chain(first_stage[depth..].iter().map(|h| h.passage));
    let n = first_stage.len();
    order
        .enumerate()
        .map(|(r, passage)| Hit {
            passage,
            score: (n - r) as f32,
        })
        .collect()
}

struct RerankRun<'a> {
    rag: &'a Rag<'a>,
    base: &'a Encoder,
    parts: &'a DenseParts,
    passages: &'a [Passage],
    depth: usize,
}

impl RerankRun<'_> {
    /// Query time, from the question alone: base retrieval, then LLM scores of the top.
    fn query(&self, method: Reranker, q: &Query) -> Result<(Vec<Hit>, Vec<f32>)> {
        let hits = self.parts.search(self.base, q)?;
        let top: Vec<&str> = hits
            .iter()
            .take(self.depth)
            .map(|h| self.passages[h.passage].text.as_str())
            .collect();
        let s = self.rag.rerank_scores(method, &q.text, &top)?;
        Ok((hits, s))
    }
}

fn rerank_system(
    run: &RerankRun,
    method: Reranker,
    coll: &Collection,
    first_stage: &[Vec<Hit>],
    store: &mut Store<ScoreRecord>,
    latency_queries: usize,
    one_thread: &rayon::ThreadPool,
) -> Result<System> {
    let name = format!("minilm + {} re-rank@{}", method.name(), run.depth);
    // Latency: computed afresh (the scores also fill the cache).
    let mut latency_ms = Vec::new();
    let mut latency_1t_ms = Vec::new();
    let pb = progress(
        2 * latency_queries as u64,
        &format!("{} timing", method.name()),
    );
    for q in coll.queries.iter().take(latency_queries) {
        let t = Instant::now();
        let (hits, s) = run.query(method, q)?;
        latency_ms.push(ms(t));
        let recs = hits
            .iter()
            .zip(&s)
            .map(|(h, &s)| ScoreRecord {
                k: run
                    .rag
                    .score_key(method, &q.text, &coll.passages[h.passage].text),
                s,
            })
            .collect();
        store.append(recs)?;
        pb.inc(1);
    }
    one_thread.install(|| -> Result<()> {
        for q in coll.queries.iter().take(latency_queries) {
            let t = Instant::now();
            run.query(method, q)?;
            latency_1t_ms.push(ms(t));
            pb.inc(1);
        }
        Ok(())
    })?;
    pb.finish_and_clear();
    // Quality: every question, from the cache where it can.
    let pb = progress(
        coll.queries.len() as u64,
        &format!("{} re-rank", method.name()),
    );
    let mut rankings = Vec::with_capacity(coll.queries.len());
    for (q, hits) in coll.queries.iter().zip(first_stage) {
        let top = &hits[..hits.len().min(run.depth)];
        let keys: Vec<String> = top
            .iter()
            .map(|h| {
                run.rag
                    .score_key(method, &q.text, &coll.passages[h.passage].text)
            })
            .collect();
        if keys.iter().any(|k| store.get(k).is_none()) {
            let texts: Vec<&str> = top
                .iter()
                .map(|h| coll.passages[h.passage].text.as_str())
                .collect();
            let s = run.rag.rerank_scores(method, &q.text, &texts)?;
            store.append(
                keys.iter()
                    .zip(s)
                    .map(|(k, s)| ScoreRecord { k: k.clone(), s })
                    .collect(),
            )?;
        }
        let s: Vec<f32> = keys
            .iter()
            .map(|k| store.get(k).map(|r| r.s))
            .collect::<Option<_>>()
            .context("re-ranker score missing after scoring; this is a bug")?;
        rankings.push(reorder(hits, &s));
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(System {
        name,
        kind: "rerank",
        rankings,
        latency_ms,
        latency_1t_ms,
    })
}

/// Generates (or reads from the cache) the answer to every prompt; returns them in order.
fn answers(rag: &Rag, prompts: &[String], store: &mut Store<AnswerRecord>) -> Result<Vec<String>> {
    let keys: Vec<String> = prompts.iter().map(|p| rag.answer_key(p)).collect();
    let mut todo: Vec<usize> = Vec::new();
    let mut seen = HashSet::new();
    for (i, k) in keys.iter().enumerate() {
        if store.get(k).is_none() && seen.insert(k.clone()) {
            todo.push(i);
        }
    }
    tracing::info!(
        prompts = prompts.len(),
        distinct_new = todo.len(),
        "generating answers"
    );
    // Similar lengths together: each chunk's batches finish their prefill together.
    todo.sort_by_key(|&i| std::cmp::Reverse(prompts[i].len()));
    let pb = progress(todo.len() as u64, "answers");
    for chunk in todo.chunks(4 * rag.cfg.max_batch.max(1)) {
        let ps: Vec<String> = chunk.iter().map(|&i| prompts[i].clone()).collect();
        let out = rag.answers(&ps)?;
        store.append(
            chunk
                .iter()
                .zip(out)
                .map(|(&i, text)| AnswerRecord {
                    k: keys[i].clone(),
                    text,
                })
                .collect(),
        )?;
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    keys.iter()
        .map(|k| {
            store
                .get(k)
                .map(|r| r.text.clone())
                .context("answer missing after generation; this is a bug")
        })
        .collect()
}

/// Mean Token F1 of `preds` against each question's references.
fn mean_f1(preds: &[String], refs: &[Vec<String>]) -> f64 {
    let n = preds.len().max(1) as f64;
    preds
        .iter()
        .zip(refs)
        .map(|(p, r)| max_f1(p, r))
        .sum::<f64>()
        / n
}

pub fn run(a: QasperBenchArgs) -> Result<()> {
    let started = Instant::now();
    let qasper = a.data.load(a.split)?;
    let n = a.questions.or(a.quick.then_some(50));
    let latency_queries = a.latency_queries.unwrap_or(if a.quick { 10 } else { 50 });
    let coll = subset(&qasper, n);
    anyhow::ensure!(
        !coll.queries.is_empty(),
        "no {} question has gold evidence",
        a.split
    );
    let latency_queries = latency_queries.min(coll.queries.len()).max(1);
    std::fs::create_dir_all(a.out.join("cache"))
        .with_context(|| format!("creating {}", a.out.display()))?;
    // Reference answers for Token F1: every annotation, "Unanswerable" included.
    let by_id: HashMap<&str, &uae_data::Question> = qasper
        .questions
        .iter()
        .map(|q| (q.id.as_str(), q))
        .collect();
    let questions: Vec<&uae_data::Question> =
        coll.queries.iter().map(|q| by_id[q.id.as_str()]).collect();
    let refs: Vec<Vec<String>> = questions.iter().map(|q| q.f1_references()).collect();
    tracing::info!(
        questions = coll.queries.len(),
        passages = coll.passages.len(),
        latency_queries,
        "QASPER {} subset",
        a.split
    );
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .context("building a one-thread pool")?;

    let mut systems: Vec<System> = Vec::new();
    // BM25.
    {
        let index = ScopedBm25::new(&coll.passages, Bm25Params::default());
        let mut rankings = Vec::new();
        let mut lat = Vec::new();
        for q in &coll.queries {
            let t = Instant::now();
            rankings.push(index.search(q, None));
            lat.push(ms(t));
        }
        lat.truncate(latency_queries);
        let lat1 = lat.clone(); // BM25 search is single-threaded.
        systems.push(System {
            name: "bm25".into(),
            kind: "bm25",
            rankings,
            latency_ms: lat,
            latency_1t_ms: lat1,
        });
    }
    // Dense bi-encoders: the base first (the re-rankers' first stage).
    let base = load_encoder(&a.base)?;
    let cache = a.out.join("cache");
    let (sys, base_parts) = dense_system(
        "minilm",
        &base,
        &a.base,
        &coll,
        &cache,
        latency_queries,
        &one_thread,
    )?;
    systems.push(sys);
    // (row name, model folder, bf16 projections)
    let mut tuned: Vec<(String, PathBuf, bool)> = Vec::new();
    for (name, dir) in [
        ("minilm + infonce", &a.infonce),
        ("minilm + uae", &a.uae),
        ("minilm + uae (mined)", &a.uae_mined),
    ] {
        match dir {
            Some(d) => tuned.push((name.into(), d.clone(), false)),
            None => tracing::warn!("no model given for `{name}`; row left out"),
        }
    }
    if let (true, Some(d)) = (a.uae_bf16, &a.uae) {
        tuned.push(("minilm + uae (bf16)".into(), d.clone(), true));
    }
    tuned.extend(
        a.models
            .iter()
            .map(|(n, d)| (format!("minilm + {n}"), d.clone(), false)),
    );
    for (name, dir, bf16) in &tuned {
        let enc = crate::common::load_encoder_in(dir, *bf16)?;
        let (sys, _) = dense_system(name, &enc, dir, &coll, &cache, latency_queries, &one_thread)?;
        systems.push(sys);
    }

    let cfg = RagConfig {
        answer_template: a.answer_template.replace("\\n", "\n"),
        passage_tokens: a.passage_tokens,
        max_new_tokens: a.max_new_tokens,
        max_batch: a.answer_batch.max(1),
    };
    let need_lm = !(a.no_rerank && a.no_answers);
    let lm = if need_lm { Some(a.lm.load()?) } else { None };
    let rag = lm
        .as_ref()
        .map(|lm| Rag::new(lm, cfg.clone()))
        .transpose()?;
    if let (Some(rag), false) = (&rag, a.no_rerank) {
        let mut store: Store<ScoreRecord> = Store::open(&a.out.join("cache/rerank.jsonl"))?;
        let run = RerankRun {
            rag,
            base: &base,
            parts: &base_parts,
            passages: &coll.passages,
            depth: a.rerank_depth.max(1),
        };
        let first = systems[1].rankings.clone();
        for method in [Reranker::Upr, Reranker::YesNo] {
            let sys = rerank_system(
                &run,
                method,
                &coll,
                &first,
                &mut store,
                latency_queries,
                &one_thread,
            )?;
            systems.push(sys);
        }
    }

    // Answers: each system's top-1 and top-3, then the brackets.
    let mut f1: Vec<(Option<f64>, Option<f64>)> = vec![(None, None); systems.len()];
    let mut brackets: Vec<(String, f64)> = Vec::new();
    if let (Some(rag), false) = (&rag, a.no_answers) {
        let mut store: Store<AnswerRecord> = Store::open(&a.out.join("cache/answers.jsonl"))?;
        let mut prompts = Vec::new();
        for s in &systems {
            for k in [1, 3] {
                for (q, hits) in coll.queries.iter().zip(&s.rankings) {
                    let ctx: Vec<&str> = hits
                        .iter()
                        .take(k)
                        .map(|h| coll.passages[h.passage].text.as_str())
                        .collect();
                    prompts.push(rag.answer_prompt(&q.text, &ctx)?);
                }
            }
        }
        let paper_of: HashMap<&str, &uae_data::Paper> =
            qasper.papers.iter().map(|p| (p.id.as_str(), p)).collect();
        for q in &questions {
            prompts.push(rag.answer_prompt(&q.text, &[])?);
        }
        for q in &questions {
            let paper = paper_of[q.paper_id.as_str()];
            let gold: Vec<&str> = paper
                .paragraphs
                .iter()
                .filter(|p| q.gold.contains(&p.n))
                .map(|p| p.text.as_str())
                .collect();
            prompts.push(rag.answer_prompt(&q.text, &gold)?);
        }
        let out = answers(rag, &prompts, &mut store)?;
        let nq = coll.queries.len();
        let mut chunks = out.chunks(nq);
        for f in f1.iter_mut() {
            let k1 = chunks.next().context("answer count; this is a bug")?;
            let k3 = chunks.next().context("answer count; this is a bug")?;
            *f = (Some(mean_f1(k1, &refs)), Some(mean_f1(k3, &refs)));
        }
        for name in ["LLM, no context", "LLM, gold evidence"] {
            let c = chunks.next().context("answer count; this is a bug")?;
            brackets.push((name.into(), mean_f1(c, &refs)));
        }
        write_answers(&a.out, &systems, &coll, &out)?;
    }

    // Rows, TREC runs, comparisons.
    let mut rows = Vec::new();
    for (s, f) in systems.iter().zip(&f1) {
        let (_, m) = score(&coll, &s.rankings);
        write_trec(
            &a.out.join("runs").join(slug(&s.name)),
            &slug(&s.name),
            &coll,
            &s.rankings,
        )?;
        rows.push(Row {
            system: s.name.clone(),
            kind: s.kind,
            metrics: Some(m),
            f1_at_1: f.0,
            f1_at_3: f.1,
            latency: Some(Latency {
                p50_ms: percentile(&s.latency_ms, 50.0),
                p95_ms: percentile(&s.latency_ms, 95.0),
                p50_ms_1_thread: percentile(&s.latency_1t_ms, 50.0),
                p95_ms_1_thread: percentile(&s.latency_1t_ms, 95.0),
                queries: s.latency_ms.len(),
            }),
            uae_speedup: None,
            uae_speedup_1_thread: None,
        });
    }
    for (name, f) in brackets {
        rows.push(Row {
            system: name,
            kind: "answer-bracket",
            metrics: None,
            f1_at_1: Some(f),
            f1_at_3: Some(f),
            latency: None,
            uae_speedup: None,
            uae_speedup_1_thread: None,
        });
    }
    // UAE's query latency (its own row, else the base's: the same network).
    let uae_lat = rows
        .iter()
        .find(|r| r.system == "minilm + uae")
        .or_else(|| rows.iter().find(|r| r.system == "minilm"))
        .and_then(|r| r.latency);
    if let Some(u) = uae_lat {
        for r in rows.iter_mut().filter(|r| r.kind == "rerank") {
            if let Some(l) = r.latency {
                r.uae_speedup = Some(l.p50_ms / u.p50_ms);
                r.uae_speedup_1_thread = Some(l.p50_ms_1_thread / u.p50_ms_1_thread);
            }
        }
    }
    let mut comparisons = Vec::new();
    for (sys, over) in [
        ("minilm + uae", "minilm"),
        ("minilm + uae", "minilm + infonce"),
        ("minilm + uae (mined)", "minilm"),
        ("minilm + uae (bf16)", "minilm + uae"),
    ] {
        if let Some(c) = compare(&rows, sys, over) {
            comparisons.push(c);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let report = Report {
        split: a.split.to_string(),
        questions: coll.queries.len(),
        passages: coll.passages.len(),
        latency_queries,
        threads: rayon::current_num_threads(),
        rerank_depth: a.rerank_depth,
        lm: a.lm.lm.display().to_string(),
        lm_sha256: lm
            .as_ref()
            .map(|l| l.model_hash.clone())
            .unwrap_or_default(),
        rag: &cfg,
        seconds,
        rows: &rows,
        comparisons,
    };
    write_json(&a.out.join("report.json"), &report)?;
    let md = markdown(&report);
    std::fs::write(a.out.join("report.md"), &md)
        .with_context(|| format!("writing {}", a.out.display()))?;
    let (svg, png) = charts(&rows);
    std::fs::write(a.out.join("chart.svg"), svg)
        .and_then(|()| std::fs::write(a.out.join("chart.png"), png))
        .with_context(|| format!("writing charts in {}", a.out.display()))?;
    println!("{md}");
    Ok(())
}

fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// `answers.jsonl`: each system's answers at k = 1 and 3, next to the question.
fn write_answers(out: &Path, systems: &[System], coll: &Collection, all: &[String]) -> Result<()> {
    use std::io::Write;
    let path = out.join("answers.jsonl");
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?,
    );
    let nq = coll.queries.len();
    for (i, s) in systems.iter().enumerate() {
        for (j, k) in [1, 3].into_iter().enumerate() {
            let base = (2 * i + j) * nq;
            for (qi, q) in coll.queries.iter().enumerate() {
                let line = serde_json::json!({"system": s.name, "k": k, "question_id": q.id, "answer": all[base + qi]});
                writeln!(f, "{line}")?;
            }
        }
    }
    f.flush()?;
    Ok(())
}

fn pct(new: f64, old: f64) -> f64 {
    100.0 * (new - old) / old
}

fn compare(rows: &[Row], sys: &str, over: &str) -> Option<Comparison> {
    let a = rows.iter().find(|r| r.system == sys)?;
    let b = rows.iter().find(|r| r.system == over)?;
    let (ma, mb) = (a.metrics?, b.metrics?);
    Some(Comparison {
        system: sys.into(),
        over: over.into(),
        recall_1_pct: pct(ma.recall_1, mb.recall_1),
        map_pct: pct(ma.map, mb.map),
        f1_at_1_pct: a.f1_at_1.zip(b.f1_at_1).map(|(x, y)| pct(x, y)),
        f1_at_3_pct: a.f1_at_3.zip(b.f1_at_3).map(|(x, y)| pct(x, y)),
    })
}

fn markdown(r: &Report) -> String {
    let f = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "–".into());
    let t = |v: Option<f64>| {
        v.map(|x| {
            if x < 10.0 {
                format!("{x:.2}")
            } else {
                format!("{x:.0}")
            }
        })
        .unwrap_or_else(|| "–".into())
    };
    let mut s = format!(
        "QASPER {}: {} questions with gold evidence, {} passages; latency over {} questions; re-rank depth {}.\n\n",
        r.split, r.questions, r.passages, r.latency_queries, r.rerank_depth
    );
    s += "| system | R@1 | R@5 | MAP | MRR | F1 @1 | F1 @3 | p50 ms | p95 ms | p50 ms 1T | p95 ms 1T | UAE speed-up (1T) |\n";
    s += "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for row in r.rows {
        let m = row.metrics;
        let l = row.latency;
        let speed = match (row.uae_speedup, row.uae_speedup_1_thread) {
            (Some(a), Some(b)) => format!("{a:.0}x ({b:.0}x)"),
            _ => "–".into(),
        };
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.system,
            f(m.map(|m| m.recall_1)),
            f(m.map(|m| m.recall_5)),
            f(m.map(|m| m.map)),
            f(m.map(|m| m.mrr)),
            f(row.f1_at_1),
            f(row.f1_at_3),
            t(l.map(|l| l.p50_ms)),
            t(l.map(|l| l.p95_ms)),
            t(l.map(|l| l.p50_ms_1_thread)),
            t(l.map(|l| l.p95_ms_1_thread)),
            speed
        );
    }
    if r.rows.iter().any(|row| row.kind == "answer-bracket") {
        s += "\nThe two `LLM, ...` rows bracket Token F1: no passage, and all gold evidence paragraphs (the same value in both F1 columns).\n";
    }
    for c in &r.comparisons {
        let p = |v: Option<f64>| v.map(|x| format!("{x:+.1}%")).unwrap_or_else(|| "–".into());
        s += &format!(
            "\n- {} over {}: R@1 {:+.1}%, MAP {:+.1}%, Token F1 @1 {}, @3 {}",
            c.system,
            c.over,
            c.recall_1_pct,
            c.map_pct,
            p(c.f1_at_1_pct),
            p(c.f1_at_3_pct)
        );
    }
    s += "\n\nThe paper (UAE over BGE-Base): R@1 +30.59%, MAP +30.16%, Token F1 +17.3%, over 180x faster than LLM re-ranking.\n";
    s += &format!("\nWall time: {:.0} s.\n", r.seconds);
    s
}

/// Grouped bars of R@1, MAP and Token F1 @1 per system: (SVG, PNG).
fn charts(rows: &[Row]) -> (String, Vec<u8>) {
    use uae_eval::plot::{bars_png, bars_svg, Series};
    let labels: Vec<String> = rows.iter().map(|r| r.system.clone()).collect();
    let col = |f: &dyn Fn(&Row) -> Option<f64>| -> Vec<f64> {
        rows.iter().map(|r| f(r).unwrap_or(0.0)).collect()
    };
    let series = [
        Series {
            name: "R@1",
            color: "#1f77b4",
            values: col(&|r| r.metrics.map(|m| m.recall_1)),
        },
        Series {
            name: "MAP",
            color: "#ff7f0e",
            values: col(&|r| r.metrics.map(|m| m.map)),
        },
        Series {
            name: "Token F1 @1",
            color: "#2ca02c",
            values: col(&|r| r.f1_at_1),
        },
    ];
    (bars_svg(&labels, &series), bars_png(&labels, &series))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 10.0);
        assert_eq!(percentile(&v, 95.0), 19.0);
        assert_eq!(percentile(&[3.0], 95.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn reorder_sorts_the_head_and_keeps_the_tail() {
        let hits: Vec<Hit> = (0..5)
            .map(|i| Hit {
                passage: 10 + i,
                score: 1.0 - i as f32 * 0.1,
            })
            .collect();
        // LLM prefers the third, then ties between the first two keep their order.
        let out = reorder(&hits, &[0.5, 0.5, 2.0]);
        let order: Vec<usize> = out.iter().map(|h| h.passage).collect();
        assert_eq!(order, vec![12, 10, 11, 13, 14]);
        assert!(out.windows(2).all(|w| w[0].score > w[1].score));
    }

    #[test]
    fn named_models_parse() {
        assert_eq!(
            parse_named("kl=runs/kl/model").unwrap(),
            ("kl".to_string(), PathBuf::from("runs/kl/model"))
        );
        assert!(parse_named("kl").is_err());
        assert!(parse_named("=x").is_err());
    }

    #[test]
    fn slugs_are_file_names() {
        assert_eq!(slug("minilm + uae (mined)"), "minilm-uae-mined");
        assert_eq!(slug("minilm + upr re-rank@10"), "minilm-upr-re-rank-10");
    }
}
