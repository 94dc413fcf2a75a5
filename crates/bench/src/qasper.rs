//! `uae bench qasper`: every retriever on QASPER in one process: retrieval metrics,
//! answers and Token F1 from the LLM given each retriever's top-k, per-query latency,
//! and the speed-up of plain vector search over LLM re-ranking.
//!
//! Generated answers and re-ranker scores are memoised in `OUT/cache/` (durable,
//! keyed by model hash and prompt), so a killed run resumes where it stopped; so are
//! each bi-encoder's passage embeddings (keyed by its files and the passages).
//! Latencies are always measured afresh.

use crate::{Error, Result};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;
use uae_core::{Hit, Passage, Progress, Query};
use uae_data::{Collection, Qasper};
use uae_encoder::Encoder;
use uae_eval::f1::max_f1;
use uae_eval::{pct_change, percentile, Metrics};
use uae_index::{Bm25Params, ScopedBm25};
use uae_lm::{CausalLm, LmSource};
use uae_rag::{
    cached_answers, cached_rerank_scores, reorder, AnswerRecord, Rag, RagConfig, Reranker,
    ScoreRecord, Store,
};
use uae_search::{cached_passage_embeddings, load_encoder, DenseSearcher};

/// What the benchmark runs, and where it writes.
#[derive(Debug, Clone)]
pub struct QasperBench {
    /// table.json, table.md, chart.svg, answers.jsonl, runs/, cache/.
    pub out: PathBuf,
    /// Evaluate the first N evaluable questions (all: `None`).
    pub questions: Option<usize>,
    /// Questions timed per system and thread setting.
    pub latency_queries: usize,
    /// The base bi-encoder (the "minilm" row and the re-rankers' first stage).
    pub base: PathBuf,
    pub infonce: Option<PathBuf>,
    pub uae: Option<PathBuf>,
    pub uae_mined: Option<PathBuf>,
    /// More fine-tuned bi-encoders as (row name, folder).
    pub models: Vec<(String, PathBuf)>,
    /// Add a row for the `uae` model with bf16 projections.
    pub uae_bf16: bool,
    /// The LLM for answers and re-ranking.
    pub lm: LmSource,
    pub lm_bf16: bool,
    pub rerank_depth: usize,
    pub rerank: bool,
    pub answers: bool,
    /// Token F1 under adaptive selection for every calibrated dense row
    /// ([`crate::selection`]).
    pub selection: bool,
    pub rag: RagConfig,
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

/// `table.json` (and `table.md`, `chart.svg`): the benchmark's table. Named apart
/// from `uae eval`'s `report.json`, a different schema.
#[derive(Serialize)]
pub struct QasperReport {
    pub split: String,
    pub questions: usize,
    pub passages: usize,
    pub latency_queries: usize,
    pub threads: usize,
    pub rerank_depth: usize,
    pub lm: String,
    pub lm_sha256: String,
    pub rag: RagConfig,
    pub seconds: f64,
    pub rows: Vec<Row>,
    pub comparisons: Vec<Comparison>,
    /// The table as markdown (also `table.md`).
    #[serde(skip)]
    pub markdown: String,
}

impl QasperReport {
    pub const FILE: &'static str = "table.json";
    pub const MARKDOWN: &'static str = "table.md";
    pub const CHART: &'static str = "chart.svg";
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

/// How latency is measured: on the first `latency_queries` questions, with the
/// default threads and on `one_thread`.
struct Timing<'a> {
    latency_queries: usize,
    one_thread: &'a rayon::ThreadPool,
}

/// A dense bi-encoder's rankings, searching one query at a time as a server would
/// (index built first), with its latencies.
fn dense_system(
    name: &str,
    (enc, dir): (&Encoder, &Path),
    coll: &Collection,
    cache: &Path,
    timing: &Timing,
    progress: &dyn Progress,
) -> Result<(System, DenseSearcher)> {
    let Timing {
        latency_queries,
        one_thread,
    } = *timing;
    let vecs = cached_passage_embeddings(name, enc, dir, &coll.passages, cache, progress)?;
    let parts = DenseSearcher::new(&coll.passages, &vecs)?;
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

struct RerankRun<'a> {
    rag: &'a Rag<'a>,
    base: &'a Encoder,
    parts: &'a DenseSearcher,
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
    timing: &Timing,
    progress: &dyn Progress,
) -> Result<System> {
    let Timing {
        latency_queries,
        one_thread,
    } = *timing;
    let name = format!("minilm + {} re-rank@{}", method.name(), run.depth);
    // Latency: computed afresh (the scores also fill the cache).
    let mut latency_ms = Vec::new();
    let mut latency_1t_ms = Vec::new();
    progress.start(
        &format!("{} timing", method.name()),
        2 * latency_queries as u64,
    );
    let mut timed = 0;
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
        timed += 1;
        progress.set(timed);
    }
    one_thread.install(|| -> Result<()> {
        for q in coll.queries.iter().take(latency_queries) {
            let t = Instant::now();
            run.query(method, q)?;
            latency_1t_ms.push(ms(t));
            timed += 1;
            progress.set(timed);
        }
        Ok(())
    })?;
    progress.finish();
    // Quality: every question, from the cache where it can.
    progress.start(
        &format!("{} re-rank", method.name()),
        coll.queries.len() as u64,
    );
    let mut rankings = Vec::with_capacity(coll.queries.len());
    for (i, (q, hits)) in coll.queries.iter().zip(first_stage).enumerate() {
        let top: Vec<&str> = hits[..hits.len().min(run.depth)]
            .iter()
            .map(|h| coll.passages[h.passage].text.as_str())
            .collect();
        let s = cached_rerank_scores(run.rag, method, &q.text, &top, store)?;
        rankings.push(reorder(hits, &s));
        progress.set(i as u64 + 1);
    }
    progress.finish();
    Ok(System {
        name,
        kind: "rerank",
        rankings,
        latency_ms,
        latency_1t_ms,
    })
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

/// The LLM re-rankers (UPR, yes/no) over the base model's first stage, their scores
/// memoised in `cache/rerank.jsonl`.
fn add_rerankers(
    run: &RerankRun,
    coll: &Collection,
    cache: &Path,
    systems: &mut Vec<System>,
    timing: &Timing,
    progress: &dyn Progress,
) -> Result<()> {
    let mut store: Store<ScoreRecord> = Store::open(&cache.join("rerank.jsonl"))?;
    let first = systems[1].rankings.clone();
    for method in [Reranker::Upr, Reranker::YesNo] {
        systems.push(rerank_system(
            run, method, coll, &first, &mut store, timing, progress,
        )?);
    }
    Ok(())
}

/// The first-stage rows of the table and what later rows build on.
struct Retrievers {
    /// BM25, the base bi-encoder ("minilm"), then each tuned model.
    systems: Vec<System>,
    /// The base encoder (re-rankers' first stage; counts selection tokens).
    base: Encoder,
    base_searcher: DenseSearcher,
    /// Each f32 dense row: (index in `systems`, model folder); the selection rows read
    /// their calibrations.
    dense_dirs: Vec<(usize, PathBuf)>,
}

/// BM25 and every dense bi-encoder, the base first.
fn retrievers(
    b: &QasperBench,
    coll: &Collection,
    cache: &Path,
    timing: &Timing,
    progress: &dyn Progress,
) -> Result<Retrievers> {
    let mut systems = vec![bm25_system(coll, timing.latency_queries)];
    let base = load_encoder(&b.base, false)?;
    let (sys, base_searcher) =
        dense_system("minilm", (&base, &b.base), coll, cache, timing, progress)?;
    systems.push(sys);
    let mut dense_dirs = vec![(systems.len() - 1, b.base.clone())];
    for (name, dir, bf16) in tuned_models(b) {
        let enc = load_encoder(&dir, bf16)?;
        let (sys, _) = dense_system(&name, (&enc, &dir), coll, cache, timing, progress)?;
        systems.push(sys);
        if !bf16 {
            dense_dirs.push((systems.len() - 1, dir));
        }
    }
    Ok(Retrievers {
        systems,
        base,
        base_searcher,
        dense_dirs,
    })
}

/// (name, model folder, rankings) of each f32 dense row, for `--selection`.
fn dense_rows<'a>(
    systems: &'a [System],
    dense_dirs: &'a [(usize, PathBuf)],
) -> Vec<(&'a str, &'a Path, &'a [Vec<Hit>])> {
    dense_dirs
        .iter()
        .map(|(i, dir)| {
            let s = &systems[*i];
            (s.name.as_str(), dir.as_path(), s.rankings.as_slice())
        })
        .collect()
}

/// Runs the benchmark on `qasper` and writes its files; returns the report.
pub fn run(b: &QasperBench, qasper: &Qasper, progress: &dyn Progress) -> Result<QasperReport> {
    let started = Instant::now();
    let coll = subset(qasper, b.questions);
    if coll.queries.is_empty() {
        return Err(Error::NoEvaluableQuestions {
            split: qasper.split.to_string(),
        });
    }
    let latency_queries = b.latency_queries.min(coll.queries.len()).max(1);
    let cache = b.out.join("cache");
    std::fs::create_dir_all(&cache).map_err(uae_core::Error::io(&cache))?;
    tracing::info!(
        questions = coll.queries.len(),
        passages = coll.passages.len(),
        latency_queries,
        "QASPER {} subset",
        qasper.split
    );
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| Error::ThreadPool(e.to_string()))?;
    let timing = Timing {
        latency_queries,
        one_thread: &one_thread,
    };

    let Retrievers {
        mut systems,
        base,
        base_searcher,
        dense_dirs,
    } = retrievers(b, &coll, &cache, &timing, progress)?;
    let lm: Option<CausalLm> = if b.rerank || b.answers || b.selection {
        Some(b.lm.load(b.lm_bf16)?)
    } else {
        None
    };
    let rag = lm
        .as_ref()
        .map(|lm| Rag::new(lm, b.rag.clone()))
        .transpose()?;
    if let (Some(rag), true) = (&rag, b.rerank) {
        let run = RerankRun {
            rag,
            base: &base,
            parts: &base_searcher,
            passages: &coll.passages,
            depth: b.rerank_depth.max(1),
        };
        add_rerankers(&run, &coll, &cache, &mut systems, &timing, progress)?;
    }
    // One answer store for the top-k rows and the selection rows (they share prompts).
    let mut answers: Option<Store<AnswerRecord>> = match rag {
        Some(_) if b.answers || b.selection => Some(Store::open(&cache.join("answers.jsonl"))?),
        _ => None,
    };
    let (f1, brackets) = match (&rag, &mut answers, b.answers) {
        (Some(rag), Some(store), true) => {
            answer_f1(rag, qasper, &coll, &systems, store, &b.out, progress)?
        }
        _ => (vec![(None, None); systems.len()], Vec::new()),
    };
    if let (Some(rag), Some(store), true) = (&rag, &mut answers, b.selection) {
        let refs = references(&questions_of(qasper, &coll));
        let run = crate::selection::SelectionRun {
            rag,
            coll: &coll,
            refs: &refs,
            enc: &base,
            out: &b.out,
        };
        let dense = dense_rows(&systems, &dense_dirs);
        crate::selection::measure_calibrated(&run, &dense, store, progress)?;
    }
    let rows = rows(&coll, &systems, &f1, brackets);
    let comparisons = headline_comparisons(&rows);
    let mut report = QasperReport {
        split: qasper.split.to_string(),
        questions: coll.queries.len(),
        passages: coll.passages.len(),
        latency_queries,
        threads: rayon::current_num_threads(),
        rerank_depth: b.rerank_depth,
        lm: b.lm.path.display().to_string(),
        lm_sha256: lm
            .as_ref()
            .map(|l| l.model_hash.clone())
            .unwrap_or_default(),
        rag: b.rag.clone(),
        seconds: started.elapsed().as_secs_f64(),
        rows,
        comparisons,
        markdown: String::new(),
    };
    report.markdown = markdown(&report);
    write_outputs(&b.out, &coll, &systems, &report)?;
    Ok(report)
}

/// UAE against the base, against `infonce`, mined against the base, bf16 against f32
/// (the rows present).
fn headline_comparisons(rows: &[Row]) -> Vec<Comparison> {
    [
        ("minilm + uae", "minilm"),
        ("minilm + uae", "minilm + infonce"),
        ("minilm + uae (mined)", "minilm"),
        ("minilm + uae (bf16)", "minilm + uae"),
    ]
    .iter()
    .filter_map(|(sys, over)| compare(rows, sys, over))
    .collect()
}

/// Each system's TREC run (`runs/<system>/`) and the table, its markdown and chart.
fn write_outputs(
    out: &std::path::Path,
    coll: &Collection,
    systems: &[System],
    report: &QasperReport,
) -> Result<()> {
    for s in systems {
        let dir = out.join("runs").join(slug(&s.name));
        uae_eval::write_trec(
            &dir,
            &slug(&s.name),
            &coll.passages,
            &coll.queries,
            &s.rankings,
        )?;
    }
    uae_core::fs::write_json(&out.join(QasperReport::FILE), report)?;
    uae_core::fs::atomic_write(
        &out.join(QasperReport::MARKDOWN),
        report.markdown.as_bytes(),
    )?;
    uae_core::fs::atomic_write(
        &out.join(QasperReport::CHART),
        chart(&report.rows).as_bytes(),
    )?;
    Ok(())
}

/// The fine-tuned rows: (row name, model folder, bf16 projections).
fn tuned_models(b: &QasperBench) -> Vec<(String, PathBuf, bool)> {
    let mut tuned = Vec::new();
    for (name, dir) in [
        ("minilm + infonce", &b.infonce),
        ("minilm + uae", &b.uae),
        ("minilm + uae (mined)", &b.uae_mined),
    ] {
        match dir {
            Some(d) => tuned.push((name.to_string(), d.clone(), false)),
            None => tracing::warn!("no model given for `{name}`; row left out"),
        }
    }
    if let (true, Some(d)) = (b.uae_bf16, &b.uae) {
        tuned.push(("minilm + uae (bf16)".into(), d.clone(), true));
    }
    tuned.extend(
        b.models
            .iter()
            .map(|(n, d)| (format!("minilm + {n}"), d.clone(), false)),
    );
    tuned
}

/// BM25 over each question's paper, timed per query (single-threaded, so both
/// thread settings share the timings).
fn bm25_system(coll: &Collection, latency_queries: usize) -> System {
    let index = ScopedBm25::new(&coll.passages, Bm25Params::default());
    let mut rankings = Vec::new();
    let mut lat = Vec::new();
    for q in &coll.queries {
        let t = Instant::now();
        rankings.push(index.search(q, None));
        lat.push(ms(t));
    }
    lat.truncate(latency_queries);
    System {
        name: "bm25".into(),
        kind: "bm25",
        rankings,
        latency_1t_ms: lat.clone(),
        latency_ms: lat,
    }
}

/// Token F1 of the LLM's answers from each system's top 1 and top 3, and the two
/// brackets (no passage; all gold evidence). Writes `answers.jsonl`.
fn answer_f1(
    rag: &Rag,
    qasper: &Qasper,
    coll: &Collection,
    systems: &[System],
    store: &mut Store<AnswerRecord>,
    out: &Path,
    progress: &dyn Progress,
) -> Result<AnswerF1> {
    let questions = questions_of(qasper, coll);
    let refs = references(&questions);
    let mut prompts = Vec::new();
    for s in systems {
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
    let all = cached_answers(rag, &prompts, store, progress)?;
    // One chunk of answers per (system, k), then one per bracket, in prompt order.
    let mut chunks = all.chunks(coll.queries.len());
    let mut next = || {
        chunks
            .next()
            .expect("one chunk per prompt group; this is a bug")
    };
    let f1 = systems
        .iter()
        .map(|_| {
            let (k1, k3) = (next(), next());
            (Some(mean_f1(k1, &refs)), Some(mean_f1(k3, &refs)))
        })
        .collect();
    let brackets = ["LLM, no context", "LLM, gold evidence"]
        .into_iter()
        .map(|name| (name.to_string(), mean_f1(next(), &refs)))
        .collect();
    write_answers(out, systems, coll, &all)?;
    Ok((f1, brackets))
}

/// The QASPER question of each query of `coll` (built from `qasper`).
fn questions_of<'q>(qasper: &'q Qasper, coll: &Collection) -> Vec<&'q uae_data::Question> {
    let by_id: HashMap<&str, &uae_data::Question> = qasper
        .questions
        .iter()
        .map(|q| (q.id.as_str(), q))
        .collect();
    coll.queries.iter().map(|q| by_id[q.id.as_str()]).collect()
}

/// Each question's reference answers for Token F1: every annotation,
/// "Unanswerable" included.
fn references(questions: &[&uae_data::Question]) -> Vec<Vec<String>> {
    questions.iter().map(|q| q.f1_references()).collect()
}

/// Token F1 of a system's answers from its top 1 and top 3 (`None`: not measured).
type F1Pair = (Option<f64>, Option<f64>);

/// Each system's [`F1Pair`], and the brackets' (row name, Token F1).
type AnswerF1 = (Vec<F1Pair>, Vec<(String, f64)>);

/// The report's rows: each system (metrics, F1, latency), the brackets, and the
/// re-rankers' speed-up over UAE's query latency.
fn rows(
    coll: &Collection,
    systems: &[System],
    f1: &[F1Pair],
    brackets: Vec<(String, f64)>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for (s, f) in systems.iter().zip(f1) {
        let (_, m) = uae_eval::score(&coll.passages, &coll.queries, &s.rankings);
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
    rows
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
    #[derive(Serialize)]
    struct Line<'a> {
        system: &'a str,
        k: usize,
        question_id: &'a str,
        answer: &'a str,
    }
    let mut lines = Vec::new();
    let nq = coll.queries.len();
    for (i, s) in systems.iter().enumerate() {
        for (j, k) in [1, 3].into_iter().enumerate() {
            let base = (2 * i + j) * nq;
            for (qi, q) in coll.queries.iter().enumerate() {
                lines.push(Line {
                    system: &s.name,
                    k,
                    question_id: &q.id,
                    answer: &all[base + qi],
                });
            }
        }
    }
    Ok(uae_core::fs::write_jsonl(
        &out.join("answers.jsonl"),
        &lines,
    )?)
}

fn compare(rows: &[Row], sys: &str, over: &str) -> Option<Comparison> {
    let a = rows.iter().find(|r| r.system == sys)?;
    let b = rows.iter().find(|r| r.system == over)?;
    let (ma, mb) = (a.metrics?, b.metrics?);
    Some(Comparison {
        system: sys.into(),
        over: over.into(),
        recall_1_pct: pct_change(ma.recall_1, mb.recall_1),
        map_pct: pct_change(ma.map, mb.map),
        f1_at_1_pct: a.f1_at_1.zip(b.f1_at_1).map(|(x, y)| pct_change(x, y)),
        f1_at_3_pct: a.f1_at_3.zip(b.f1_at_3).map(|(x, y)| pct_change(x, y)),
    })
}

fn markdown(r: &QasperReport) -> String {
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
    for row in &r.rows {
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

/// Grouped bars of R@1, MAP and Token F1 @1 per system, as SVG.
fn chart(rows: &[Row]) -> String {
    use uae_plot::{bars_svg, Series};
    let labels: Vec<String> = rows.iter().map(|r| r.system.clone()).collect();
    let col = |f: &dyn Fn(&Row) -> Option<f64>| -> Vec<f64> {
        rows.iter().map(|r| f(r).unwrap_or(f64::NAN)).collect()
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
    bars_svg(&labels, &series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_file_names() {
        assert_eq!(slug("minilm + uae (mined)"), "minilm-uae-mined");
        assert_eq!(slug("minilm + upr re-rank@10"), "minilm-upr-re-rank-10");
    }
}
