//! Query-time uses of the LLM: answering a question from retrieved passages
//! (greedy decoding, for Token F1), and the two LLM re-ranking baselines that UAE
//! is meant to replace:
//! - [`Reranker::Upr`]: query likelihood, `log P(question | passage)` (Sachan et
//!   al., 2022, "Improving Passage Retrieval with Zero-Shot Question Generation");
//! - [`Reranker::YesNo`]: `log P("Yes") - log P("No")` after asking the LLM whether
//!   the passage answers the question (a pointwise relevance judgement).
//!
//! Results are memoised in durable stores ([`AnswerRecord`], [`ScoreRecord`]) keyed
//! by model hash and exact prompt, so a killed benchmark resumes where it stopped.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use uae_core::{Hit, Keyed, Progress};
use uae_lm::{CausalLm, ScoreRequest};

pub use uae_core::Store;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("answer template `{template}` must contain {{context}} and {{question}}")]
    Template { template: String },
    #[error("the LLM tokenizer turns `{word}` into no token")]
    Token { word: String },
    #[error(transparent)]
    Lm(#[from] uae_lm::Error),
    #[error(transparent)]
    Store(#[from] uae_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The labeler's ChatML prompt (passages as context, then the question), plus a
/// request for a short answer: SmolLM2 otherwise writes a paragraph, and Token F1
/// punishes every extra word.
pub const DEFAULT_ANSWER_TEMPLATE: &str =
    "<|im_start|>user\n{context}Question: {question}\nAnswer in a few words.<|im_end|>\n<|im_start|>assistant\n";

/// Prompts and budgets (recorded in the benchmark's report); `uae bench qasper`'s
/// flags with the `cli` feature.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct RagConfig {
    /// Answer prompt with {context} (the passages as `Context: ...` and a blank
    /// line, empty without passages) and {question} placeholders; a typed `\n` is a
    /// newline.
    #[cfg_attr(feature = "cli", arg(long, default_value = DEFAULT_ANSWER_TEMPLATE, value_parser = newlines))]
    pub answer_template: String,
    /// Each passage is cut to this many LLM tokens in prompts (>= 1; the labeler's
    /// budget).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().passage_tokens, value_parser = uae_core::flags::count()))]
    pub passage_tokens: usize,
    /// Longest generated answer, in tokens (1-4096).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().max_new_tokens, value_parser = uae_core::flags::count_in(1, 4096)))]
    pub max_new_tokens: usize,
    /// Prompts decoded together (>= 1). Decoding reads every weight once per step for
    /// the whole batch, so larger batches are nearly free per step (bf16, batch 32:
    /// 52 ms a step vs 35 ms at 8). Answers do not depend on it (rows are independent).
    #[cfg_attr(feature = "cli", arg(long = "answer-batch", value_name = "ANSWER_BATCH", default_value_t = d().max_batch, value_parser = uae_core::flags::count()))]
    pub max_batch: usize,
}

impl Default for RagConfig {
    fn default() -> Self {
        RagConfig {
            answer_template: DEFAULT_ANSWER_TEMPLATE.into(),
            passage_tokens: 256,
            max_new_tokens: 32,
            max_batch: 32,
        }
    }
}

#[cfg(feature = "cli")]
fn d() -> RagConfig {
    RagConfig::default()
}

/// `--answer-template`: a typed `\n` becomes a newline.
#[cfg(feature = "cli")]
fn newlines(s: &str) -> std::result::Result<String, String> {
    Ok(s.replace("\\n", "\n"))
}

/// A generated answer, keyed by model and prompt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnswerRecord {
    pub k: String,
    pub text: String,
}

impl Keyed for AnswerRecord {
    fn key(&self) -> &str {
        &self.k
    }
}

/// A re-ranker score, keyed by model, method, question and passage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoreRecord {
    pub k: String,
    pub s: f32,
}

impl Keyed for ScoreRecord {
    fn key(&self) -> &str {
        &self.k
    }
}

/// An LLM re-ranking method; higher scores rank first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reranker {
    Upr,
    YesNo,
}

impl Reranker {
    pub fn name(self) -> &'static str {
        match self {
            Reranker::Upr => "upr",
            Reranker::YesNo => "yes-no",
        }
    }
}

/// The LLM with the benchmark's prompts.
pub struct Rag<'a> {
    pub lm: &'a CausalLm,
    pub cfg: RagConfig,
    yes: u32,
    no: u32,
}

impl<'a> Rag<'a> {
    pub fn new(lm: &'a CausalLm, cfg: RagConfig) -> Result<Self> {
        if !(cfg.answer_template.contains("{context}")
            && cfg.answer_template.contains("{question}"))
        {
            return Err(Error::Template {
                template: cfg.answer_template.clone(),
            });
        }
        let first = |w: &str| -> Result<u32> {
            lm.encode(w)?
                .first()
                .copied()
                .ok_or_else(|| Error::Token { word: w.into() })
        };
        let (yes, no) = (first("Yes")?, first("No")?);
        Ok(Rag { lm, cfg, yes, no })
    }

    /// The answer prompt for `question` with `passages` (best first) as context.
    pub fn answer_prompt(&self, question: &str, passages: &[&str]) -> Result<String> {
        let mut context = String::new();
        if !passages.is_empty() {
            let cut = passages
                .iter()
                .map(|p| self.lm.truncate(p, self.cfg.passage_tokens))
                .collect::<uae_lm::Result<Vec<_>>>()?;
            context = format!("Context: {}\n\n", cut.join("\n\n"));
        }
        Ok(self
            .cfg
            .answer_template
            .replace("{context}", &context)
            .replace("{question}", question))
    }

    /// Greedy answers to `prompts`, decoded `max_batch` at a time in token order, so
    /// that prompts sharing their first passages share a batch and their prefill
    /// ([`uae_lm::CausalLm::generate_shared`]: the same passages at k = 1, 2, 3 run
    /// once). Output is in input order.
    pub fn answers(&self, prompts: &[String]) -> Result<Vec<String>> {
        let ids = prompts
            .iter()
            .map(|p| self.lm.encode_prompt(p))
            .collect::<uae_lm::Result<Vec<_>>>()?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by(|&a, &b| ids[a].cmp(&ids[b]));
        let mut out = vec![String::new(); ids.len()];
        for chunk in order.chunks(self.cfg.max_batch.max(1)) {
            let refs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let gen = self.lm.generate_shared(&refs, self.cfg.max_new_tokens)?;
            for (&i, g) in chunk.iter().zip(gen) {
                out[i] = self.lm.decode(&g)?.trim().to_string();
            }
        }
        Ok(out)
    }

    /// The store key of an answer prompt.
    pub fn answer_key(&self, prompt: &str) -> String {
        uae_core::hash::digest(&[
            self.lm.model_hash.as_bytes(),
            b"answer",
            self.cfg.max_new_tokens.to_string().as_bytes(),
            prompt.as_bytes(),
        ])
    }

    /// The store key of one re-ranker score.
    pub fn score_key(&self, method: Reranker, question: &str, passage: &str) -> String {
        uae_core::hash::digest(&[
            self.lm.model_hash.as_bytes(),
            method.name().as_bytes(),
            self.cfg.passage_tokens.to_string().as_bytes(),
            question.as_bytes(),
            passage.as_bytes(),
        ])
    }

    /// Scores each passage for `question` in one packed forward pass (higher: more
    /// relevant). UPR: summed log-probability of the question's tokens after the
    /// passage. Yes/no: `log P(Yes) - log P(No)` for the first answer token.
    pub fn rerank_scores(
        &self,
        method: Reranker,
        question: &str,
        passages: &[&str],
    ) -> Result<Vec<f32>> {
        if passages.is_empty() {
            return Ok(Vec::new());
        }
        let cut = passages
            .iter()
            .map(|p| self.lm.truncate(p, self.cfg.passage_tokens))
            .collect::<uae_lm::Result<Vec<_>>>()?;
        match method {
            Reranker::Upr => {
                // UPR's prompt, as a plain continuation (the question is the target).
                let target = self.lm.encode(&format!(" {question}"))?;
                let contexts = cut
                    .iter()
                    .map(|p| {
                        self.lm.encode_prompt(&format!(
                            "Passage: {p}\nPlease write a question based on this passage.\nQuestion:"
                        ))
                    })
                    .collect::<uae_lm::Result<Vec<_>>>()?;
                let reqs: Vec<ScoreRequest> = contexts
                    .iter()
                    .map(|c| ScoreRequest {
                        context: c,
                        targets: &target,
                    })
                    .collect();
                let lp = self.lm.score(&reqs)?;
                Ok(lp.iter().map(|v| v.iter().sum()).collect())
            }
            Reranker::YesNo => {
                let prompts = cut
                    .iter()
                    .map(|p| {
                        self.lm.encode_prompt(&format!(
                            "<|im_start|>user\nPassage: {p}\n\nQuestion: {question}\n\nDoes the passage answer the question? Answer Yes or No.<|im_end|>\n<|im_start|>assistant\n"
                        ))
                    })
                    .collect::<uae_lm::Result<Vec<_>>>()?;
                let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
                let (_, rows) = self.lm.prefill(&refs)?;
                let lp = self.lm.log_probs(&rows)?;
                let v = self.lm.config.vocab;
                Ok((0..refs.len())
                    .map(|i| lp[i * v + self.yes as usize] - lp[i * v + self.no as usize])
                    .collect())
            }
        }
    }
}

/// The answer to every prompt, generated or read from `store` (each distinct new
/// prompt generated once, stored as its chunk finishes, so a killed run resumes);
/// in prompt order.
pub fn cached_answers(
    rag: &Rag,
    prompts: &[String],
    store: &mut Store<AnswerRecord>,
    progress: &dyn Progress,
) -> Result<Vec<String>> {
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
    // Prompts that begin alike together: they share a batch's prefill.
    todo.sort_by(|&a, &b| prompts[a].cmp(&prompts[b]));
    progress.start("answers", todo.len() as u64);
    let mut done = 0;
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
        done += chunk.len();
        progress.set(done as u64);
    }
    progress.finish();
    Ok(keys
        .iter()
        .map(|k| {
            store
                .get(k)
                .map(|r| r.text.clone())
                .expect("every answer was stored above; this is a bug")
        })
        .collect())
}

/// The re-ranker's scores of `passages` for `question`, from `store` when all are
/// there, else computed together and stored.
pub fn cached_rerank_scores(
    rag: &Rag,
    method: Reranker,
    question: &str,
    passages: &[&str],
    store: &mut Store<ScoreRecord>,
) -> Result<Vec<f32>> {
    let keys: Vec<String> = passages
        .iter()
        .map(|p| rag.score_key(method, question, p))
        .collect();
    if keys.iter().any(|k| store.get(k).is_none()) {
        let s = rag.rerank_scores(method, question, passages)?;
        store.append(
            keys.iter()
                .zip(s)
                .map(|(k, s)| ScoreRecord { k: k.clone(), s })
                .collect(),
        )?;
    }
    Ok(keys
        .iter()
        .map(|k| {
            store
                .get(k)
                .map(|r| r.s)
                .expect("every score was stored above; this is a bug")
        })
        .collect())
}

/// Re-orders the first `llm.len()` hits by the LLM's scores (ties keep the
/// first-stage order); the rest keep their order. Scores become descending rank
/// scores.
pub fn reorder(first_stage: &[Hit], llm: &[f32]) -> Vec<Hit> {
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

#[cfg(test)]
mod unit {
    use super::*;

    /// The flags as `uae bench qasper` flattens them: a typed `\n` in the template
    /// is a newline, and the defaults are `RagConfig::default`'s.
    #[cfg(feature = "cli")]
    #[test]
    fn a_typed_newline_in_the_answer_template_is_a_newline() {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            rag: RagConfig,
        }
        let f = Flags::try_parse_from(["t", "--answer-template", "Q: {question}\\n{context}A:"])
            .unwrap();
        assert_eq!(f.rag.answer_template, "Q: {question}\n{context}A:");
        let f = Flags::try_parse_from(["t"]).unwrap();
        assert_eq!(
            format!("{:?}", f.rag),
            format!("{:?}", RagConfig::default())
        );
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
}
