//! Utility labels: how much each candidate passage lowers the LLM's NLL of the
//! reference answer. u(p) = NLL(a | q) - NLL(a | p, q), mean over a question's
//! distinct reference answers; positive when the passage helps.
//!
//! Candidates come from [`mine`]; scores go to a durable [`Store`]; [`label`] runs
//! the job in a fixed, deterministic batch plan so that a killed run, restarted,
//! recomputes the same batches and ends with the same store.

mod store;

pub use store::{Keyed, Record, Store};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use uae_core::Hit;
use uae_data::Qasper;
use uae_lm::{CausalLm, ScoreRequest};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: corrupt record: {message}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "{path}: labels were made with {what} `{found}`, this run uses `{want}`; use another --out"
    )]
    Mismatch {
        path: PathBuf,
        what: &'static str,
        found: String,
        want: String,
    },
    #[error(transparent)]
    Lm(#[from] uae_lm::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Which passages are scored for a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateMode {
    /// Gold evidence + hard negatives (questions with matched evidence only).
    Gold,
    /// No evidence labels: top dense + top BM25 + random, for every answerable question.
    Mined,
}

/// Prompt layout. `chatml` is SmolLM2-Instruct's chat format without a system turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Template {
    Chatml,
    Plain,
}

impl Template {
    /// The prompt text; the answer is appended right after it (for `plain`, after a space).
    pub fn prompt(self, passage: Option<&str>, question: &str) -> String {
        let ctx = passage
            .map(|p| format!("Context: {p}\n\n"))
            .unwrap_or_default();
        match self {
            Template::Chatml => format!(
                "<|im_start|>user\n{ctx}Question: {question}<|im_end|>\n<|im_start|>assistant\n"
            ),
            Template::Plain => format!("{ctx}Question: {question}\nAnswer:"),
        }
    }

    pub fn answer(self, answer: &str) -> String {
        match self {
            Template::Chatml => answer.to_string(),
            Template::Plain => format!(" {answer}"),
        }
    }
}

/// Labeling configuration (recorded in `manifest.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelConfig {
    pub candidates: CandidateMode,
    /// Top-ranked non-gold paragraphs from the base encoder.
    pub dense_negatives: usize,
    /// Top-ranked non-gold paragraphs from BM25.
    pub bm25_negatives: usize,
    /// Uniformly random other paragraphs of the paper.
    pub random_negatives: usize,
    /// Passage truncation, in LLM tokens (the answer is never truncated).
    pub passage_tokens: usize,
    pub template: Template,
    pub seed: u64,
    /// Sequences per LLM forward pass.
    pub max_batch: usize,
    /// Tokens per LLM forward pass.
    pub max_batch_tokens: usize,
}

impl Default for LabelConfig {
    fn default() -> Self {
        LabelConfig {
            candidates: CandidateMode::Gold,
            dense_negatives: 3,
            bm25_negatives: 2,
            random_negatives: 1,
            passage_tokens: 256,
            template: Template::Chatml,
            seed: 0,
            max_batch: 16,
            max_batch_tokens: 4096,
        }
    }
}

/// One candidate of a question: a paragraph number in its paper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub n: usize,
    pub is_gold: bool,
    /// Where it came from: gold, dense, bm25, random.
    pub source: String,
}

/// Candidates for question `q` (index into `qasper.questions`). `dense` and `bm25` are
/// that question's rankings (paragraph numbers, best first).
pub fn mine(
    qasper: &Qasper,
    q: usize,
    dense: &[usize],
    bm25: &[usize],
    cfg: &LabelConfig,
) -> Vec<Candidate> {
    let question = &qasper.questions[q];
    let paper = &qasper.papers[question.paper];
    let gold: BTreeSet<usize> = question.gold.iter().copied().collect();
    let mut out: Vec<Candidate> = Vec::new();
    let push = |n: usize, source: &str, out: &mut Vec<Candidate>| {
        if !out.iter().any(|c| c.n == n) {
            out.push(Candidate {
                n,
                is_gold: gold.contains(&n),
                source: source.into(),
            });
        }
    };
    let skip_gold = cfg.candidates == CandidateMode::Gold;
    if skip_gold {
        for &n in &gold {
            push(n, "gold", &mut out);
        }
    }
    for (list, k, name) in [
        (dense, cfg.dense_negatives, "dense"),
        (bm25, cfg.bm25_negatives, "bm25"),
    ] {
        let mut taken = 0;
        for &n in list {
            if taken == k {
                break;
            }
            if (skip_gold && gold.contains(&n)) || out.iter().any(|c| c.n == n) {
                continue;
            }
            push(n, name, &mut out);
            taken += 1;
        }
    }
    // Random paragraphs, from a generator seeded by (seed, question id): stable across runs.
    let pool: Vec<usize> = paper
        .paragraphs
        .iter()
        .filter(|p| {
            !p.text.trim().is_empty()
                && !out.iter().any(|c| c.n == p.n)
                && (!skip_gold || !gold.contains(&p.n))
        })
        .map(|p| p.n)
        .collect();
    let mut state = u64::from_le_bytes(
        sha(&[&cfg.seed.to_le_bytes(), question.id.as_bytes()])[..8]
            .try_into()
            .expect("8 bytes; this is a bug"),
    );
    let mut pool = pool;
    for _ in 0..cfg.random_negatives.min(pool.len()) {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let i = ((state >> 33) as usize) % pool.len();
        let n = pool.swap_remove(i);
        push(n, "random", &mut out);
    }
    out
}

/// A 128-bit hex key over length-prefixed parts (store keys).
pub fn digest(parts: &[&[u8]]) -> String {
    hex::encode(&sha(parts)[..16])
}

fn sha(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// The store key of one score: everything that determines it.
pub fn score_key(
    model_hash: &str,
    cfg: &LabelConfig,
    question: &str,
    passage: Option<&str>,
    answer: &str,
) -> String {
    let template = serde_json::to_string(&cfg.template).unwrap_or_default();
    let budget = cfg.passage_tokens.to_string();
    let p = passage
        .map(|p| format!("P{p}"))
        .unwrap_or_else(|| "-".into());
    hex::encode(
        &sha(&[
            model_hash.as_bytes(),
            template.as_bytes(),
            budget.as_bytes(),
            question.as_bytes(),
            p.as_bytes(),
            answer.as_bytes(),
        ])[..16],
    )
}

/// A labeled question, as the trainer reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabeledGroup {
    pub question_id: String,
    pub paper_id: String,
    pub question: String,
    pub answers: Vec<String>,
    /// NLL of each answer without a passage.
    pub nll_without: Vec<f32>,
    pub candidates: Vec<LabeledCandidate>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabeledCandidate {
    pub passage_id: String,
    pub text: String,
    pub is_gold: bool,
    pub source: String,
    /// Mean over answers of NLL(a | q) - NLL(a | p, q).
    pub utility: f32,
    pub per_answer: Vec<f32>,
}

/// What one labeling run did, and what the labels say.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub questions: usize,
    pub candidates: usize,
    pub scores_total: usize,
    pub scores_computed: usize,
    pub scores_reused: usize,
    pub tokens_scored: usize,
    pub seconds: f64,
    pub mean_utility_gold: f64,
    pub mean_utility_non_gold: f64,
    pub gold_candidates: usize,
    pub non_gold_candidates: usize,
    /// Among questions with at least one gold and one non-gold candidate.
    pub best_is_gold_fraction: f64,
}

/// A question ready to assemble: (index, candidates with truncated text, answers).
type Planned = (usize, Vec<(Candidate, String)>, Vec<String>);

struct Work {
    key: String,
    prompt: Vec<u32>,
    answer: Vec<u32>,
}

/// A question to label and its candidates.
pub struct Job<'a> {
    pub qasper: &'a Qasper,
    pub items: Vec<(usize, Vec<Candidate>)>,
}

/// Scores every (question, answer) without and with each candidate, into the store in
/// `dir`, then writes `labels.jsonl` and `summary.json`. `progress(done, total)` is
/// called after each batch.
pub fn label(
    lm: &CausalLm,
    job: &Job,
    cfg: &LabelConfig,
    dir: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Summary> {
    let start = std::time::Instant::now();
    let mut store: Store = Store::open(&dir.join("scores.jsonl"))?;
    let mut work: Vec<Work> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut plan: Vec<Planned> = Vec::new();
    for (qi, cands) in &job.items {
        let q = &job.qasper.questions[*qi];
        let paper = &job.qasper.papers[q.paper];
        let answers: Vec<String> = q.references();
        if answers.is_empty() {
            continue;
        }
        let mut texts = Vec::new();
        for c in cands {
            let Some(p) = paper
                .paragraphs
                .get(c.n)
                .filter(|p| !p.text.trim().is_empty())
            else {
                continue;
            };
            texts.push((c.clone(), lm.truncate(&p.text, cfg.passage_tokens)?));
        }
        let passages: Vec<Option<&str>> = std::iter::once(None)
            .chain(texts.iter().map(|(_, t)| Some(t.as_str())))
            .collect();
        for a in &answers {
            let aids = lm.encode(&cfg.template.answer(a))?;
            if aids.is_empty() {
                continue;
            }
            for p in &passages {
                let key = score_key(&lm.model_hash, cfg, &q.text, *p, a);
                if seen.insert(key.clone()) {
                    work.push(Work {
                        key,
                        prompt: lm.encode(&cfg.template.prompt(*p, &q.text))?,
                        answer: aids.clone(),
                    });
                }
            }
        }
        plan.push((*qi, texts, answers));
    }
    // A fixed batch plan: sort by length (then key), cut by count and token budget.
    work.sort_by(|a, b| {
        (a.prompt.len() + a.answer.len())
            .cmp(&(b.prompt.len() + b.answer.len()))
            .then(a.key.cmp(&b.key))
    });
    let mut batches: Vec<std::ops::Range<usize>> = Vec::new();
    let mut s = 0;
    let mut tokens = 0;
    for (i, w) in work.iter().enumerate() {
        let t = w.prompt.len() + w.answer.len();
        if i > s && (i - s >= cfg.max_batch || tokens + t > cfg.max_batch_tokens) {
            batches.push(s..i);
            s = i;
            tokens = 0;
        }
        tokens += t;
    }
    if s < work.len() {
        batches.push(s..work.len());
    }
    let total = work.len();
    let mut summary = Summary {
        scores_total: total,
        ..Default::default()
    };
    let mut done = work.iter().filter(|w| store.get(&w.key).is_some()).count();
    summary.scores_reused = done;
    progress(done, total);
    for range in batches {
        let batch = &work[range];
        if batch.iter().all(|w| store.get(&w.key).is_some()) {
            continue;
        }
        // The whole batch is recomputed even if part of it was stored before a kill,
        // so every value comes from the same batch composition as an uninterrupted run.
        let reqs: Vec<ScoreRequest> = batch
            .iter()
            .map(|w| ScoreRequest {
                context: &w.prompt,
                targets: &w.answer,
            })
            .collect();
        let lps = lm.score(&reqs)?;
        let mut records = Vec::new();
        for (w, lp) in batch.iter().zip(lps) {
            summary.tokens_scored += w.prompt.len() + w.answer.len();
            if store.get(&w.key).is_none() {
                let nll = -lp.iter().map(|&x| x as f64).sum::<f64>() / lp.len() as f64;
                records.push(Record {
                    k: w.key.clone(),
                    nll: nll as f32,
                    lp,
                });
            }
        }
        summary.scores_computed += records.len();
        done += records.len();
        store.append(records)?;
        progress(done, total);
    }
    // Assemble groups.
    let mut groups = Vec::new();
    let (mut g_sum, mut n_sum, mut best_gold, mut best_n) = (0f64, 0f64, 0usize, 0usize);
    for (qi, texts, answers) in plan {
        let q = &job.qasper.questions[qi];
        let paper = &job.qasper.papers[q.paper];
        let nll = |p: Option<&str>, a: &str| -> f32 {
            store
                .get(&score_key(&lm.model_hash, cfg, &q.text, p, a))
                .map(|r| r.nll)
                .unwrap_or(f32::NAN)
        };
        let without: Vec<f32> = answers.iter().map(|a| nll(None, a)).collect();
        let mut cands = Vec::new();
        for (c, text) in &texts {
            let per: Vec<f32> = answers
                .iter()
                .zip(&without)
                .map(|(a, w)| w - nll(Some(text), a))
                .collect();
            let utility = per.iter().sum::<f32>() / per.len() as f32;
            if c.is_gold {
                g_sum += utility as f64;
                summary.gold_candidates += 1;
            } else {
                n_sum += utility as f64;
                summary.non_gold_candidates += 1;
            }
            cands.push(LabeledCandidate {
                passage_id: paper.passage_id(c.n),
                text: text.clone(),
                is_gold: c.is_gold,
                source: c.source.clone(),
                utility,
                per_answer: per,
            });
        }
        if cands.iter().any(|c| c.is_gold) && cands.iter().any(|c| !c.is_gold) {
            best_n += 1;
            let best = cands
                .iter()
                .max_by(|a, b| a.utility.total_cmp(&b.utility))
                .expect("non-empty; this is a bug");
            best_gold += best.is_gold as usize;
        }
        summary.candidates += cands.len();
        groups.push(LabeledGroup {
            question_id: q.id.clone(),
            paper_id: q.paper_id.clone(),
            question: q.text.clone(),
            answers,
            nll_without: without,
            candidates: cands,
        });
    }
    summary.questions = groups.len();
    summary.mean_utility_gold = g_sum / summary.gold_candidates.max(1) as f64;
    summary.mean_utility_non_gold = n_sum / summary.non_gold_candidates.max(1) as f64;
    summary.best_is_gold_fraction = best_gold as f64 / best_n.max(1) as f64;
    summary.seconds = start.elapsed().as_secs_f64();
    write_jsonl(&dir.join("labels.jsonl"), &groups)?;
    Ok(summary)
}

fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("partial");
    let mut s = String::new();
    for r in rows {
        s.push_str(&serde_json::to_string(r).expect("labels serialise; this is a bug"));
        s.push('\n');
    }
    std::fs::write(&tmp, s).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads `labels.jsonl` from a label folder: one group per question.
pub fn read_labels(dir: &Path) -> Result<Vec<LabeledGroup>> {
    let path = dir.join("labels.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Corrupt {
                path: path.clone(),
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

/// The utility histogram of gold and other candidates (fractions of each), as
/// (SVG, PNG).
pub fn utility_histogram(groups: &[LabeledGroup]) -> (String, Vec<u8>) {
    use uae_eval::plot::{histogram_png, histogram_svg, Series};
    let (mut gold, mut other) = (Vec::new(), Vec::new());
    for c in groups.iter().flat_map(|g| &g.candidates) {
        if c.is_gold { &mut gold } else { &mut other }.push(c.utility as f64);
    }
    let series = [
        Series {
            name: "other candidates",
            color: "#888888",
            values: other,
        },
        Series {
            name: "gold evidence",
            color: "#d62728",
            values: gold,
        },
    ];
    let label = "utility (nats): NLL(a|q) - NLL(a|p,q)";
    (
        histogram_svg(-4.0, 8.0, 48, label, &series),
        histogram_png(-4.0, 8.0, 48, label, &series),
    )
}

/// Turns rankings of corpus positions into paragraph numbers within each question's paper.
pub fn paragraph_numbers(hits: &[Hit], passage_ids: &[String]) -> Vec<usize> {
    hits.iter()
        .filter_map(|h| {
            passage_ids[h.passage]
                .rsplit_once('#')
                .and_then(|(_, n)| n.parse().ok())
        })
        .collect()
}
