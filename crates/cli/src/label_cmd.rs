use crate::common::{count, count0, Bars, DataDir, LmArgs};
use anyhow::Result;
use std::path::PathBuf;
use uae_data::Split;
use uae_label::{CandidateMode, LabelConfig, LabelRun, Template};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Mode {
    /// Gold evidence + hard negatives (questions with matched text evidence).
    Gold,
    /// No evidence labels: top dense + BM25 + random, for every answerable question.
    Mined,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum TemplateArg {
    /// SmolLM2-Instruct's ChatML turn (no system message).
    Chatml,
    /// "Context: ...\n\nQuestion: ...\nAnswer:" for base models.
    Plain,
}

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
    /// summary.json, utility-histogram.svg. Rerunning the same command resumes.
    #[arg(long)]
    out: PathBuf,
    /// Which passages are scored. Default: `gold` for QASPER (its evidence is
    /// annotated), `mined` for your own data (no evidence needed).
    #[arg(long, value_enum)]
    candidates: Option<Mode>,
    #[command(flatten)]
    lm: LmArgs,
    /// Bi-encoder that mines dense hard negatives.
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    encoder: PathBuf,
    /// Top non-gold paragraphs by the base encoder, per question (0 or more).
    #[arg(long, default_value_t = 3, value_parser = count0())]
    dense_negatives: usize,
    /// Top non-gold paragraphs by BM25, per question (0 or more).
    #[arg(long, default_value_t = 2, value_parser = count0())]
    bm25_negatives: usize,
    /// Random other paragraphs of the paper, per question (0 or more).
    #[arg(long, default_value_t = 1, value_parser = count0())]
    random_negatives: usize,
    /// Passage truncation in LLM tokens (>= 1; answers are never truncated).
    #[arg(long, default_value_t = 256, value_parser = count())]
    passage_tokens: usize,
    #[arg(long, value_enum, default_value = "chatml")]
    template: TemplateArg,
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
    let default_mode = if a.questions.is_some() {
        Mode::Mined
    } else {
        Mode::Gold
    };
    let config = LabelConfig {
        candidates: match a.candidates.unwrap_or(default_mode) {
            Mode::Gold => CandidateMode::Gold,
            Mode::Mined => CandidateMode::Mined,
        },
        dense_negatives: a.dense_negatives,
        bm25_negatives: a.bm25_negatives,
        random_negatives: a.random_negatives,
        passage_tokens: a.passage_tokens,
        template: match a.template {
            TemplateArg::Chatml => Template::Chatml,
            TemplateArg::Plain => Template::Plain,
        },
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
