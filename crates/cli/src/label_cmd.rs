use crate::common::{count, count_in, named, Bars, DataDir, LmArgs};
use anyhow::Result;
use std::path::PathBuf;
use uae_data::Split;
use uae_label::{CandidateMode, LabelConfig, LabelRun, Template};

#[derive(clap::Args)]
pub struct LabelArgs {
    /// QASPER split to label (ignored with --questions).
    #[arg(long, default_value = "train")]
    split: Split,
    /// Your own corpus: JSONL, one `{"id", "text", "title"?, "scope"?}` per line, or a
    /// BEIR folder (its corpus.jsonl). Needs --questions.
    #[arg(long, requires = "questions")]
    corpus: Option<PathBuf>,
    /// Your own questions: JSONL, one `{"id"?, "question", "answers": [...] or
    /// "answer", "scope"?, "positives"?: [passage ids]}` per line. Questions without
    /// an answer are skipped (counted in the summary). Needs --corpus.
    #[arg(long, requires = "corpus")]
    questions: Option<PathBuf>,
    /// Label only the first N eligible questions (in file order; >= 1).
    #[arg(long, value_parser = count())]
    limit: Option<usize>,
    /// Output folder: scores.jsonl (durable store), labels.jsonl, manifest.json,
    /// summary.json, utility-histogram.svg, cache/ (the mining encoder's passage
    /// embeddings, in pieces). Rerunning the same command resumes, mid-mining too.
    #[arg(long)]
    out: PathBuf,
    /// Which passages are scored: `gold` (the evidence + hard negatives; questions
    /// with evidence only) or `mined` (top dense + BM25 + random, no evidence
    /// needed). Default: `gold` for QASPER, `mined` for your own data.
    #[arg(long, value_parser = named::<CandidateMode>(&["gold", "mined"]))]
    candidates: Option<CandidateMode>,
    #[command(flatten)]
    lm: LmArgs,
    /// Bi-encoder that mines dense hard negatives.
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    encoder: PathBuf,
    /// Top non-gold paragraphs by the base encoder, per question (0 or more).
    #[arg(long, default_value_t = 3, value_parser = count_in(0, u32::MAX as u64))]
    dense_negatives: usize,
    /// Top non-gold paragraphs by BM25, per question (0 or more).
    #[arg(long, default_value_t = 2, value_parser = count_in(0, u32::MAX as u64))]
    bm25_negatives: usize,
    /// Random other paragraphs of the paper, per question (0 or more).
    #[arg(long, default_value_t = 1, value_parser = count_in(0, u32::MAX as u64))]
    random_negatives: usize,
    /// Passage truncation in LLM tokens (>= 1; answers are never truncated).
    #[arg(long, default_value_t = 256, value_parser = count())]
    passage_tokens: usize,
    /// Prompt layout: `chatml` (SmolLM2-Instruct's turn, no system message) or
    /// `plain` ("Context: ...\n\nQuestion: ...\nAnswer:", for base models).
    #[arg(long, default_value = "chatml", value_parser = named::<Template>(&["chatml", "plain"]))]
    template: Template,
    /// Seed for the random negatives.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sequences per LLM forward pass (>= 1).
    #[arg(long, default_value_t = 16, value_parser = count())]
    max_batch: usize,
    /// Tokens per LLM forward pass (>= 1; a longer sequence runs alone).
    #[arg(long, default_value_t = 4096, value_parser = count())]
    max_batch_tokens: usize,
    #[command(flatten)]
    data: DataDir,
}

pub fn run(a: LabelArgs) -> Result<()> {
    let (set, split) = match (&a.corpus, &a.questions) {
        (Some(c), Some(q)) => {
            let set = uae_data::QaSet::load(c, q)?;
            let name = set.name.clone();
            (set, name)
        }
        _ => (a.data.load(a.split)?.qa_set(), a.split.to_string()),
    };
    let default_mode = match a.questions {
        Some(_) => CandidateMode::Mined,
        None => CandidateMode::Gold,
    };
    let config = LabelConfig {
        candidates: a.candidates.unwrap_or(default_mode),
        dense_negatives: a.dense_negatives,
        bm25_negatives: a.bm25_negatives,
        random_negatives: a.random_negatives,
        passage_tokens: a.passage_tokens,
        template: a.template,
        seed: a.seed,
        max_batch: a.max_batch,
        max_batch_tokens: a.max_batch_tokens,
    };
    let lm = a.lm.load()?;
    let run = LabelRun {
        set: &set,
        split,
        corpus_path: a.corpus.clone(),
        limit: a.limit,
        out: a.out,
        lm: &lm,
        lm_path: a.lm.lm.clone(),
        encoder: a.encoder,
        config,
    };
    let (summary, _) = uae_label::run(&run, &Bars::default())?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
