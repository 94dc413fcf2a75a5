//! Utility scoring: the LLM's NLL of each reference answer without and with each
//! candidate, in a fixed, deterministic batch plan, into the durable store.

use crate::{Error, PromptFormat, Result};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use uae_artifacts::labels::{Candidate, LabelConfig, LabelSummary, LabeledCandidate, LabeledGroup};
use uae_artifacts::scores::{ScorePlan as PlanFile, ScoreRecord as Record, Truncation};
use uae_core::hash::digest;
use uae_core::{Progress, Store};
use uae_data::QaSet;
use uae_lm::{CausalLm, ScoreGroup, ScoreRequest};

use crate::remote::RemoteLm;

/// Who computes the answer log-probabilities: the LLM in this process, or LLM
/// servers speaking the OpenAI completions API. Their store keys never mix: the
/// local model is named by its file's sha256, a remote one by `openai:{model}`.
#[derive(Clone, Copy)]
pub enum Scorer<'a> {
    Local(&'a CausalLm),
    Remote(&'a RemoteLm),
}

impl Scorer<'_> {
    /// The model identity that enters every store key.
    pub fn model_hash(&self) -> &str {
        match self {
            Scorer::Local(lm) => &lm.model_hash,
            Scorer::Remote(r) => &r.model_hash,
        }
    }
}

/// What `--lm` names: one local model (a GGUF file or a safetensors folder), or one
/// or more servers of the same model (base URLs, `http://HOST:PORT/v1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmSource {
    Local(std::path::PathBuf),
    Servers(Vec<String>),
}

impl LmSource {
    /// Reads the `--lm` values: URLs (anything with `://`) are servers and may repeat;
    /// otherwise exactly one local path. Mixing the two is an error.
    pub fn parse(specs: &[String]) -> crate::Result<Self> {
        let is_url = |s: &String| s.contains("://");
        match specs {
            [] => Err(crate::Error::Invalid("--lm: no LLM given".into())),
            _ if specs.iter().all(is_url) => Ok(LmSource::Servers(specs.to_vec())),
            _ if specs.iter().any(is_url) => Err(crate::Error::Invalid(
                "--lm: either one local model file or one or more server URLs, not both".into(),
            )),
            [one] => Ok(LmSource::Local(one.into())),
            _ => Err(crate::Error::Invalid(
                "--lm: only server URLs can be repeated; a local model is one file or folder"
                    .into(),
            )),
        }
    }
}

/// Every distinct passage text cut to `budget` tokens of the scorer's tokenizer.
/// Remote cuts are kept in `truncations.jsonl` so that a resumed run asks again only
/// for the ones it has not seen.
fn truncate_all(
    scorer: Scorer,
    texts: &[String],
    budget: usize,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    match scorer {
        Scorer::Local(lm) => {
            for t in texts {
                out.insert(t.clone(), lm.truncate(t, budget)?);
            }
        }
        Scorer::Remote(r) => {
            let mut store: Store<Truncation> = Store::open(&dir.join(Truncation::FILE))?;
            let key = |t: &str| {
                digest(&[
                    r.model_hash.as_bytes(),
                    budget.to_string().as_bytes(),
                    t.as_bytes(),
                ])
            };
            let mut missing = Vec::new();
            for t in texts {
                match store.get(&key(t)) {
                    Some(c) => {
                        out.insert(t.clone(), c.t.clone());
                    }
                    None => missing.push(t.clone()),
                }
            }
            progress.start("truncating passages", missing.len() as u64);
            let mut pending = Vec::new();
            let mut done = 0u64;
            let result = r.truncate_all(&missing, budget, &mut |i, cut| {
                pending.push(Truncation {
                    k: key(&missing[i]),
                    t: cut.clone(),
                });
                out.insert(missing[i].clone(), cut);
                done += 1;
                if pending.len() >= 256 {
                    store.append(std::mem::take(&mut pending))?;
                }
                progress.set(done);
                Ok(())
            });
            store.append(pending)?;
            progress.finish();
            result?;
        }
    }
    Ok(out)
}

/// The store key of one score: everything that determines it.
pub fn score_key(
    model_hash: &str,
    cfg: &LabelConfig,
    question: &str,
    passage: Option<&str>,
    answer: &str,
) -> String {
    let template = cfg.template.identity();
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
    prompt: String,
    answer: String,
}

/// A question to label and its candidates.
pub struct Job<'a> {
    pub set: &'a QaSet,
    /// Renders prompts; its template is the one `cfg.template` records.
    pub prompts: &'a PromptFormat,
    /// (index into `set.questions`, its candidates).
    pub items: Vec<(usize, Vec<Candidate>)>,
}

/// Scores every (question, answer) without and with each candidate, into the store in
/// `dir`, then writes `labels.jsonl` and returns the groups with a summary. Progress
/// is reported after each batch (local) or as answers arrive (remote).
pub fn label(
    scorer: Scorer,
    job: &Job,
    cfg: &LabelConfig,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<(LabelSummary, Vec<LabeledGroup>)> {
    let start = std::time::Instant::now();
    if job.prompts.template() != &cfg.template {
        return Err(Error::Invalid(
            "the prompt format differs from the configuration's template; this is a bug".into(),
        ));
    }
    let mut store: Store<Record> = Store::open(&dir.join(Record::FILE))?;
    let by_id: HashMap<&str, &uae_core::Passage> =
        job.set.corpus.iter().map(|p| (p.id.as_str(), p)).collect();
    let distinct = distinct_passages(job, &by_id);
    let cut = truncate_all(scorer, &distinct, cfg.passage_tokens, dir, progress)?;
    let keys = Keys {
        model_hash: scorer.model_hash().to_string(),
        cfg,
    };
    let (work, plan) = plan_work(job, &keys, &by_id, &cut)?;
    let mut summary = LabelSummary {
        scores_total: work.len(),
        ..Default::default()
    };
    summary.scores_reused = work.iter().filter(|w| store.get(&w.key).is_some()).count();
    let too_long = match scorer {
        Scorer::Local(lm) => {
            let planned = ScorePlan::open(dir, &work, &store)?;
            let work: Vec<&Work> = work.iter().filter(|w| planned.contains(&w.key)).collect();
            score_local(lm, cfg, &work, &mut store, &mut summary, progress)?
        }
        Scorer::Remote(r) => {
            score_remote(r, &work, &mut store, &mut summary, progress)?;
            HashSet::new()
        }
    };
    let (groups, long_ids) = assemble(job, &keys, plan, &store, &too_long);
    let source = job.set.source.display();
    for (id, line) in long_ids.iter().take(LONG_NAMED) {
        let at = line.map(|l| format!(":{l}")).unwrap_or_default();
        tracing::warn!(
            "{source}{at}: left out (question `{id}`): its prompt and answer are longer than the LLM's context, even with the passage cut"
        );
    }
    if long_ids.len() > LONG_NAMED {
        tracing::warn!(
            "{source}: {} more questions left out as too long for the LLM's context (summary.json lists the lines of the first 1,000)",
            long_ids.len() - LONG_NAMED
        );
    }
    summary.skipped_too_long_lines = long_ids.iter().filter_map(|(_, l)| *l).take(1000).collect();
    summary.skipped_too_long = long_ids.len();
    utility_stats(&mut summary, &groups);
    summary.seconds = start.elapsed().as_secs_f64();
    progress.finish();
    LabeledGroup::write_all(dir, &groups)?;
    Ok((summary, groups))
}

/// How many too-long questions the log names one by one.
const LONG_NAMED: usize = 20;

/// What a run's score keys share: the LLM and the configuration.
struct Keys<'a> {
    model_hash: String,
    cfg: &'a LabelConfig,
}

impl Keys<'_> {
    fn key(&self, question: &str, passage: Option<&str>, answer: &str) -> String {
        score_key(&self.model_hash, self.cfg, question, passage, answer)
    }
}

/// Every distinct non-blank passage text among the job's candidates, in first-seen
/// order (each is cut to the budget once).
fn distinct_passages(job: &Job, by_id: &HashMap<&str, &uae_core::Passage>) -> Vec<String> {
    let mut distinct: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (_, cands) in &job.items {
        for c in cands {
            if let Some(p) = by_id.get(c.passage_id.as_str()) {
                if !p.text.trim().is_empty() && seen.insert(p.text.as_str()) {
                    distinct.push(p.text.clone());
                }
            }
        }
    }
    distinct
}

/// The scores to compute (each distinct key once: every answer without a passage
/// and with each candidate's cut text), and per question its candidates' texts and
/// answers for assembling.
fn plan_work(
    job: &Job,
    keys: &Keys,
    by_id: &HashMap<&str, &uae_core::Passage>,
    cut: &HashMap<String, String>,
) -> Result<(Vec<Work>, Vec<Planned>)> {
    let (mut work, mut plan, mut seen) = (Vec::new(), Vec::new(), HashSet::new());
    for (qi, cands) in &job.items {
        let q = &job.set.questions[*qi];
        let answers: Vec<String> = q.answers.clone();
        if answers.is_empty() {
            continue;
        }
        let mut texts = Vec::new();
        for c in cands {
            let Some(t) = by_id
                .get(c.passage_id.as_str())
                .and_then(|p| cut.get(&p.text))
            else {
                continue;
            };
            texts.push((c.clone(), t.clone()));
        }
        let passages: Vec<Option<&str>> = std::iter::once(None)
            .chain(texts.iter().map(|(_, t)| Some(t.as_str())))
            .collect();
        for a in &answers {
            let answer = job.prompts.answer(a);
            if answer.trim().is_empty() {
                continue;
            }
            for p in &passages {
                let key = keys.key(&q.question, *p, a);
                if seen.insert(key.clone()) {
                    work.push(Work {
                        key,
                        prompt: job.prompts.prompt(*p, &q.question)?,
                        answer: answer.clone(),
                    });
                }
            }
        }
        plan.push((*qi, texts, answers));
    }
    Ok((work, plan))
}

/// The labelled groups: each candidate's utility, the mean over the answers of the
/// NLL without a passage less the NLL with it. A question one of whose prompts did
/// not fit the LLM's context is left out whole (its utilities would compare scores
/// of different prompts); their ids (and lines in your questions file) are returned.
fn assemble(
    job: &Job,
    keys: &Keys,
    plan: Vec<Planned>,
    store: &Store<Record>,
    too_long: &HashSet<String>,
) -> (Vec<LabeledGroup>, Vec<(String, Option<usize>)>) {
    let (mut groups, mut long_ids) = (Vec::new(), Vec::new());
    for (qi, texts, answers) in plan {
        let q = &job.set.questions[qi];
        let key = |p: Option<&str>, a: &str| keys.key(&q.question, p, a);
        let passages = std::iter::once(None).chain(texts.iter().map(|(_, t)| Some(t.as_str())));
        if !too_long.is_empty()
            && passages
                .flat_map(|p| answers.iter().map(move |a| (p, a)))
                .any(|(p, a)| too_long.contains(&key(p, a)))
        {
            long_ids.push((q.id.clone(), q.line));
            continue;
        }
        let nll = |p: Option<&str>, a: &str| -> f32 {
            store.get(&key(p, a)).map(|r| r.nll).unwrap_or(f32::NAN)
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
            cands.push(LabeledCandidate {
                passage_id: c.passage_id.clone(),
                text: text.clone(),
                is_gold: c.is_gold,
                source: c.source.clone(),
                utility,
                per_answer: per,
            });
        }
        groups.push(LabeledGroup {
            question_id: q.id.clone(),
            paper_id: q.scope.clone().unwrap_or_default(),
            question: q.question.clone(),
            answers,
            nll_without: without,
            candidates: cands,
        });
    }
    (groups, long_ids)
}

/// Mean NLL of answer log-probabilities; non-finite values are refused (a null in the
/// store would make it unreadable).
fn record(key: &str, lp: Vec<f32>) -> Result<Record> {
    let nll = -lp.iter().map(|&x| x as f64).sum::<f64>() / lp.len().max(1) as f64;
    if lp.is_empty() || !(nll as f32).is_finite() {
        return Err(crate::Error::NonFiniteScore { key: key.into() });
    }
    Ok(Record {
        k: key.to_string(),
        nll: nll as f32,
        lp,
    })
}

fn rate_message(tokens: usize, start: std::time::Instant) -> String {
    let s = start.elapsed().as_secs_f64().max(1e-3);
    format!("{:.0} tokens/s", tokens as f64 / s)
}

/// The scores a local run computes, fixed when it first starts (`score-plan.json`).
///
/// Batches are formed over these keys only, so scores reused from a copied store cost
/// nothing: planning over every key would recompute each batch that holds a single
/// missing score. A resumed run reads the same plan back, so its batches, and
/// therefore its values, are those of an uninterrupted run (a sequence's NLL depends
/// on its batch within ~1e-6).
struct ScorePlan;

impl ScorePlan {
    /// The run's plan: read back if an earlier start wrote one (with any key since
    /// lost from the store added), else every key of `work` missing from `store`,
    /// written before the first score.
    fn open(
        dir: &Path,
        work: &[Work],
        store: &Store<Record>,
    ) -> Result<std::collections::HashSet<String>> {
        let missing = work
            .iter()
            .filter(|w| store.get(&w.key).is_none())
            .map(|w| w.key.clone());
        let (mut keys, fresh): (std::collections::HashSet<String>, bool) =
            match PlanFile::read(dir)? {
                Some(plan) => (plan.keys.into_iter().collect(), false),
                None => (Default::default(), true),
            };
        let before = keys.len();
        keys.extend(missing);
        if fresh || keys.len() != before {
            PlanFile::write(dir, keys.iter().cloned())?;
        }
        Ok(keys)
    }
}

/// Work items (`members`, a range of the sorted order) whose prompts begin with the
/// same `shared` tokens, run once for all of them.
#[derive(Debug, PartialEq, Eq)]
struct Unit {
    members: std::ops::Range<usize>,
    shared: usize,
}

/// Shorter common prefixes are not worth a pass and a cache copy of their own.
const MIN_SHARED_TOKENS: usize = 16;

/// Cuts lexicographically sorted prompts into runs that share a prefix: a prompt
/// joins the run before it when they share at least [`MIN_SHARED_TOKENS`] and the
/// run's saved tokens (each member after the first skips the prefix) grow by
/// joining; else it starts a run. A run holds at most `max_members` prompts, and its
/// prefix leaves every member at least one token of its own (the row that predicts
/// the answer's first token). A lone prompt is a run with nothing shared.
fn share_prefixes(prompts: &[&[u32]], max_members: usize) -> Vec<Unit> {
    let lcp = |a: &[u32], b: &[u32]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let mut units = Vec::new();
    let (mut s, mut shared) = (0, 0);
    for i in 1..=prompts.len() {
        let n = i - s;
        // The prefix the run would share with prompt i in it, if that saves more.
        let joined = (i < prompts.len() && n < max_members)
            .then(|| {
                let l = lcp(prompts[i - 1], prompts[i]).min(prompts[i].len().saturating_sub(1));
                l.min(if n == 1 {
                    prompts[s].len().saturating_sub(1)
                } else {
                    shared
                })
            })
            .filter(|&with| with >= MIN_SHARED_TOKENS && n * with > (n - 1) * shared);
        match joined {
            Some(with) => shared = with,
            None => {
                units.push(Unit {
                    members: s..i,
                    shared: if n >= 2 { shared } else { 0 },
                });
                (s, shared) = (i, 0);
            }
        }
    }
    units
}

/// Consecutive runs of `units` (ranges of `units`) that fit one LLM pass:
/// at most `max_batch` sequences and `max_batch_tokens` tokens, a run's shared
/// prefix counted once (`lens`: each sequence's prompt and answer tokens). A unit
/// larger than the limits runs alone.
fn batches_of(units: &[Unit], lens: &[usize], cfg: &LabelConfig) -> Vec<std::ops::Range<usize>> {
    let mut batches = Vec::new();
    let mut s = 0;
    let (mut seqs, mut tokens) = (0, 0);
    for (i, u) in units.iter().enumerate() {
        let t = u.shared
            + lens[u.members.clone()]
                .iter()
                .map(|l| l - u.shared)
                .sum::<usize>();
        let n = u.members.len();
        if i > s && (seqs + n > cfg.max_batch || tokens + t > cfg.max_batch_tokens) {
            batches.push(s..i);
            s = i;
            (seqs, tokens) = (0, 0);
        }
        seqs += n;
        tokens += t;
    }
    if s < units.len() {
        batches.push(s..units.len());
    }
    batches
}

/// The in-process LLM, in a fixed batch plan: prompts sorted by their tokens (then
/// key), cut into runs that share a prefix ([`share_prefixes`]), the runs cut into
/// batches by sequence count and token budget. The plan depends only on the keys in
/// `work`, so a killed run recomputes the same batches.
fn score_local(
    lm: &CausalLm,
    cfg: &LabelConfig,
    work: &[&Work],
    store: &mut Store<Record>,
    summary: &mut LabelSummary,
    progress: &dyn Progress,
) -> Result<HashSet<String>> {
    struct Ids<'a> {
        key: &'a str,
        prompt: Vec<u32>,
        answer: Vec<u32>,
    }
    let mut ids = Vec::with_capacity(work.len());
    // Sequences the model cannot take: not scored, their questions left out.
    let mut too_long = HashSet::new();
    for &w in work {
        let answer = lm.encode(&w.answer)?;
        if answer.is_empty() {
            continue;
        }
        let prompt = lm.encode_prompt(&w.prompt)?;
        if prompt.len() + answer.len() > lm.max_tokens() {
            too_long.insert(w.key.clone());
            continue;
        }
        ids.push(Ids {
            key: &w.key,
            prompt,
            answer,
        });
    }
    // Lexicographic order puts prompts that share a prefix (one passage with several
    // questions, one prompt with several answers) next to each other.
    ids.sort_by(|a, b| (&a.prompt, &a.answer, a.key).cmp(&(&b.prompt, &b.answer, b.key)));
    let prompts: Vec<&[u32]> = ids.iter().map(|w| w.prompt.as_slice()).collect();
    let units = share_prefixes(&prompts, cfg.max_batch.max(1));
    let lens: Vec<usize> = ids
        .iter()
        .map(|w| w.prompt.len() + w.answer.len())
        .collect();
    let batches = batches_of(&units, &lens, cfg);
    let start = std::time::Instant::now();
    // Progress over this run's plan: what an earlier start of it already stored.
    let mut done = work.iter().filter(|w| store.get(&w.key).is_some()).count();
    progress.start("scoring", work.len() as u64);
    progress.skip(done as u64);
    for range in batches {
        let batch = &units[range];
        let members = batch[0].members.start..batch[batch.len() - 1].members.end;
        if ids[members].iter().all(|w| store.get(w.key).is_some()) {
            continue;
        }
        // The whole batch is recomputed even if part of it was stored before a kill,
        // so every value comes from the same batch composition as an uninterrupted run.
        let groups: Vec<ScoreGroup> = batch
            .iter()
            .map(|u| ScoreGroup {
                shared: u.shared,
                reqs: ids[u.members.clone()]
                    .iter()
                    .map(|w| ScoreRequest {
                        context: &w.prompt,
                        targets: &w.answer,
                    })
                    .collect(),
            })
            .collect();
        let lps = lm.score_groups(&groups)?;
        let mut records = Vec::new();
        for (u, lps) in batch.iter().zip(lps) {
            // A lone prompt's run shares nothing (`shared` is 0).
            summary.tokens_shared += u.shared * (u.members.len() - 1);
            for (w, lp) in ids[u.members.clone()].iter().zip(lps) {
                summary.tokens_scored += w.prompt.len() + w.answer.len();
                if store.get(w.key).is_none() {
                    records.push(record(w.key, lp)?);
                }
            }
        }
        summary.scores_computed += records.len();
        done += records.len();
        store.append(records)?;
        progress.set(done as u64);
        progress.message(&rate_message(summary.tokens_scored, start));
    }
    progress.finish();
    Ok(too_long)
}

/// LLM servers: every missing score as one echo request, stored as answers arrive
/// (in groups, so a kill loses at most a few seconds of answers). Requests go in
/// work order, not sorted for shared prefixes as the local path is: vLLM does not
/// read its prefix cache for a request that asks for prompt log-probabilities
/// (vllm-project/vllm#17251), so no order saves a server any work.
fn score_remote(
    r: &RemoteLm,
    work: &[Work],
    store: &mut Store<Record>,
    summary: &mut LabelSummary,
    progress: &dyn Progress,
) -> Result<()> {
    let todo: Vec<&Work> = work
        .iter()
        .filter(|w| store.get(&w.key).is_none())
        .collect();
    let prompts: Vec<String> = todo
        .iter()
        .map(|w| format!("{}{}", w.prompt, w.answer))
        .collect();
    let answer_chars: Vec<usize> = todo.iter().map(|w| w.answer.chars().count()).collect();
    let start = std::time::Instant::now();
    let mut last_flush = std::time::Instant::now();
    let mut done = summary.scores_reused;
    progress.start("scoring (remote)", work.len() as u64);
    progress.skip(done as u64);
    let mut pending: Vec<Record> = Vec::new();
    let mut computed = 0;
    let mut tokens = 0;
    let result = r.score_all(prompts, &answer_chars, &mut |i, echo| {
        tokens += echo.prompt_tokens;
        pending.push(record(&todo[i].key, echo.answer_lp)?);
        computed += 1;
        done += 1;
        if pending.len() >= 64 || last_flush.elapsed().as_secs_f64() > 2.0 {
            store.append(std::mem::take(&mut pending))?;
            last_flush = std::time::Instant::now();
        }
        progress.set(done as u64);
        progress.message(&rate_message(tokens, start));
        Ok(())
    });
    store.append(pending)?;
    summary.scores_computed += computed;
    summary.tokens_scored += tokens;
    progress.finish();
    result
}

/// The summary's counts and utility statistics over `groups`: questions,
/// candidates, gold and other candidates with their mean utilities, and how often
/// the best candidate is gold (among questions with both kinds).
pub(crate) fn utility_stats(summary: &mut LabelSummary, groups: &[LabeledGroup]) {
    let (mut g_sum, mut n_sum, mut best_gold, mut best_n) = (0f64, 0f64, 0usize, 0usize);
    summary.questions = groups.len();
    summary.candidates = 0;
    summary.gold_candidates = 0;
    summary.non_gold_candidates = 0;
    summary.questions_best_utility_at_least.clear();
    summary.questions_best_gap_at_least.clear();
    for g in groups {
        for c in &g.candidates {
            if c.is_gold {
                g_sum += c.utility as f64;
                summary.gold_candidates += 1;
            } else {
                n_sum += c.utility as f64;
                summary.non_gold_candidates += 1;
            }
        }
        let cands = &g.candidates;
        if cands.iter().any(|c| c.is_gold) && cands.iter().any(|c| !c.is_gold) {
            best_n += 1;
            if let Some(best) = cands.iter().max_by(|a, b| a.utility.total_cmp(&b.utility)) {
                best_gold += best.is_gold as usize;
            }
        }
        summary.candidates += cands.len();
        if let Some((best, gap)) =
            uae_artifacts::labels::best_and_gap(cands.iter().map(|c| c.utility))
        {
            for bar in uae_artifacts::labels::BEST_UTILITY_BARS {
                *summary
                    .questions_best_utility_at_least
                    .entry(bar.to_string())
                    .or_default() += (best >= bar) as usize;
            }
            for bar in uae_artifacts::labels::BEST_GAP_BARS {
                *summary
                    .questions_best_gap_at_least
                    .entry(bar.to_string())
                    .or_default() += (gap >= bar) as usize;
            }
        }
    }
    summary.mean_utility_gold = g_sum / summary.gold_candidates.max(1) as f64;
    summary.mean_utility_non_gold = n_sum / summary.non_gold_candidates.max(1) as f64;
    summary.best_is_gold_fraction = best_gold as f64 / best_n.max(1) as f64;
}

#[cfg(test)]
mod lm_source_tests {
    use super::LmSource;

    #[test]
    fn local_path_servers_and_mixtures() {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            LmSource::parse(&v(&["m.gguf"])).unwrap(),
            LmSource::Local("m.gguf".into())
        );
        assert_eq!(
            LmSource::parse(&v(&["http://a/v1", "http://b/v1"])).unwrap(),
            LmSource::Servers(v(&["http://a/v1", "http://b/v1"]))
        );
        for bad in [&[][..], &["a.gguf", "b.gguf"], &["a.gguf", "http://b/v1"]] {
            assert!(LmSource::parse(&v(bad)).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod stats_tests {
    use super::utility_stats;
    use uae_artifacts::labels::{LabelSummary, LabeledCandidate, LabeledGroup};

    fn group(utilities: &[(f32, bool)]) -> LabeledGroup {
        LabeledGroup {
            question_id: "q".into(),
            paper_id: String::new(),
            question: "?".into(),
            answers: vec!["a".into()],
            nll_without: vec![1.0],
            candidates: utilities
                .iter()
                .map(|&(utility, is_gold)| LabeledCandidate {
                    passage_id: "p".into(),
                    text: "t".into(),
                    is_gold,
                    source: "dense".into(),
                    utility,
                    per_answer: vec![utility],
                })
                .collect(),
        }
    }

    /// Best utilities 2.5, 0.7 and -0.1 (and a question with no candidates): counts
    /// per bar, mean utilities and how often the best candidate is gold.
    #[test]
    fn summary_counts_questions_by_best_utility() {
        let groups = [
            group(&[(2.5, true), (0.1, false)]),
            group(&[(0.2, true), (0.7, false)]),
            group(&[(-0.1, false)]),
            group(&[]),
        ];
        let mut s = LabelSummary::default();
        utility_stats(&mut s, &groups);
        let at = |k: &str| s.questions_best_utility_at_least[k];
        assert_eq!((at("0.5"), at("1"), at("2"), at("3")), (2, 1, 1, 0));
        // Gaps 2.4, 0.5 (on the 0.5 bar's edge in f32) and a lone candidate's (every
        // bar).
        let gap = |k: &str| s.questions_best_gap_at_least[k];
        assert_eq!((gap("1"), gap("2")), (2, 2));
        assert_eq!((s.questions, s.candidates, s.gold_candidates), (4, 5, 2));
        assert!((s.mean_utility_gold - 1.35).abs() < 1e-6);
        assert!((s.best_is_gold_fraction - 0.5).abs() < 1e-12);
        // Recomputing (a resumed or merged run) replaces the counts.
        utility_stats(&mut s, &groups[..1]);
        assert_eq!(s.questions_best_utility_at_least["2"], 1);
        assert_eq!(s.questions_best_utility_at_least["0.5"], 1);
        assert_eq!(s.questions_best_gap_at_least["0.5"], 1);
    }
}

#[cfg(test)]
mod share_tests {
    use super::{share_prefixes, Unit, MIN_SHARED_TOKENS};

    fn unit(members: std::ops::Range<usize>, shared: usize) -> Unit {
        Unit { members, shared }
    }

    /// A prompt of `head` tokens from `from`, then `tail` tokens from `tag`.
    fn prompt(from: u32, head: usize, tag: u32, tail: usize) -> Vec<u32> {
        (0..head as u32)
            .map(|i| from + i)
            .chain((0..tail as u32).map(|i| tag * 1000 + i))
            .collect()
    }

    #[test]
    fn runs_share_a_passage_and_never_a_short_or_whole_prompt() {
        let m = MIN_SHARED_TOKENS;
        let p = [
            prompt(0, 40, 1, 10), // passage A with three questions
            prompt(0, 40, 2, 10),
            prompt(0, 40, 3, 10),
            prompt(100, m - 1, 4, 10), // two prompts sharing too little
            prompt(100, m - 1, 5, 10),
            prompt(200, 30, 6, 0), // one prompt, twice (two answers): all but one token
            prompt(200, 30, 6, 0),
            prompt(300, 50, 7, 5), // passage B: the run stops when the prefix would shrink
            prompt(300, 50, 8, 5), // too much for its gain
            prompt(300, 20, 9, 40),
        ];
        let refs: Vec<&[u32]> = p.iter().map(Vec::as_slice).collect();
        let units = share_prefixes(&refs, 16);
        assert_eq!(
            units,
            vec![
                unit(0..3, 40),
                unit(3..4, 0),
                unit(4..5, 0),
                unit(5..7, 29),
                unit(7..9, 50),
                unit(9..10, 0),
            ]
        );
        // Every member keeps a token of its own and begins with the shared prefix.
        for u in &units {
            for i in u.members.clone() {
                assert!(u.shared < p[i].len());
                assert_eq!(p[i][..u.shared], p[u.members.start][..u.shared]);
            }
        }
        // A cap on members cuts a run; the empty input has no run.
        assert_eq!(
            share_prefixes(&refs[..3], 2),
            vec![unit(0..2, 40), unit(2..3, 0)]
        );
        assert!(share_prefixes(&[], 4).is_empty());
    }
}
