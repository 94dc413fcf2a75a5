//! Utility scoring: the LLM's NLL of each reference answer without and with each
//! candidate, in a fixed, deterministic batch plan, into the durable store.

use crate::Result;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use uae_artifacts::labels::{Candidate, LabelConfig, LabelSummary, LabeledCandidate, LabeledGroup};
use uae_core::hash::digest;
use uae_core::{Keyed, Progress, Store};
use uae_data::QaSet;
use uae_lm::{CausalLm, ScoreRequest};

/// One scored (question, passage or none, answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The key from [`score_key`].
    pub k: String,
    /// Mean NLL of the answer tokens.
    pub nll: f32,
    /// Per-token log-probabilities of the answer.
    pub lp: Vec<f32>,
}

impl Keyed for Record {
    fn key(&self) -> &str {
        &self.k
    }
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
    digest(&[
        model_hash.as_bytes(),
        template.as_bytes(),
        budget.as_bytes(),
        question.as_bytes(),
        p.as_bytes(),
        answer.as_bytes(),
    ])
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
    pub set: &'a QaSet,
    /// (index into `set.questions`, its candidates).
    pub items: Vec<(usize, Vec<Candidate>)>,
}

/// Scores every (question, answer) without and with each candidate, into the store in
/// `dir`, then writes `labels.jsonl` and returns the groups with a summary. Progress
/// is reported after each batch.
pub fn label(
    lm: &CausalLm,
    job: &Job,
    cfg: &LabelConfig,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<(LabelSummary, Vec<LabeledGroup>)> {
    let start = std::time::Instant::now();
    let mut store: Store<Record> = Store::open(&dir.join("scores.jsonl"))?;
    let mut work: Vec<Work> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut plan: Vec<Planned> = Vec::new();
    let by_id: HashMap<&str, &uae_core::Passage> =
        job.set.corpus.iter().map(|p| (p.id.as_str(), p)).collect();
    for (qi, cands) in &job.items {
        let q = &job.set.questions[*qi];
        let answers: Vec<String> = q.answers.clone();
        if answers.is_empty() {
            continue;
        }
        let mut texts = Vec::new();
        for c in cands {
            let Some(p) = by_id
                .get(c.passage_id.as_str())
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
                let key = score_key(&lm.model_hash, cfg, &q.question, *p, a);
                if seen.insert(key.clone()) {
                    work.push(Work {
                        key,
                        prompt: lm.encode(&cfg.template.prompt(*p, &q.question))?,
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
    let mut summary = LabelSummary {
        scores_total: total,
        ..Default::default()
    };
    let mut done = work.iter().filter(|w| store.get(&w.key).is_some()).count();
    summary.scores_reused = done;
    progress.start("scoring", total as u64);
    progress.set(done as u64);
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
                if !(nll as f32).is_finite() {
                    // Never stored: a null in the store would make it unreadable.
                    return Err(crate::Error::NonFiniteScore { key: w.key.clone() });
                }
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
        progress.set(done as u64);
    }
    // Assemble groups.
    let mut groups = Vec::new();
    let (mut g_sum, mut n_sum, mut best_gold, mut best_n) = (0f64, 0f64, 0usize, 0usize);
    for (qi, texts, answers) in plan {
        let q = &job.set.questions[qi];
        let nll = |p: Option<&str>, a: &str| -> f32 {
            store
                .get(&score_key(&lm.model_hash, cfg, &q.question, p, a))
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
                passage_id: c.passage_id.clone(),
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
            paper_id: q.scope.clone().unwrap_or_default(),
            question: q.question.clone(),
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
    progress.finish();
    LabeledGroup::write_all(dir, &groups)?;
    Ok((summary, groups))
}
