use crate::common::{load_encoder, progress, write_json, DataDir, DEFAULT_ENCODER};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use uae_data::Split;
use uae_encoder::BatchOptions;
use uae_index::{Bm25Params, DenseIndex, ScopedBm25, Scopes};
use uae_label::{
    label, mine, paragraph_numbers, utility_histogram, CandidateMode, Job, LabelConfig, Template,
};

pub const DEFAULT_LM: &str = "models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf";

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
    #[arg(long, default_value = "train")]
    split: Split,
    /// Label only the first N eligible questions (in file order).
    #[arg(long)]
    limit: Option<usize>,
    /// Output folder: scores.jsonl (durable store), labels.jsonl, manifest.json,
    /// summary.json, utility-histogram.svg. Rerunning the same command resumes.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "gold")]
    candidates: Mode,
    #[command(flatten)]
    lm: crate::common::LmArgs,
    /// Bi-encoder that mines dense hard negatives.
    #[arg(long, default_value = DEFAULT_ENCODER)]
    encoder: PathBuf,
    /// Top non-gold paragraphs by the base encoder, per question.
    #[arg(long, default_value_t = 3)]
    dense_negatives: usize,
    /// Top non-gold paragraphs by BM25, per question.
    #[arg(long, default_value_t = 2)]
    bm25_negatives: usize,
    /// Random other paragraphs of the paper, per question.
    #[arg(long, default_value_t = 1)]
    random_negatives: usize,
    /// Passage truncation in LLM tokens (answers are never truncated).
    #[arg(long, default_value_t = 256)]
    passage_tokens: usize,
    #[arg(long, value_enum, default_value = "chatml")]
    template: TemplateArg,
    /// Seed for the random negatives.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sequences per LLM forward pass.
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// Tokens per LLM forward pass.
    #[arg(long, default_value_t = 4096)]
    max_batch_tokens: usize,
    #[command(flatten)]
    data: DataDir,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    version: String,
    split: String,
    limit: Option<usize>,
    data_file: String,
    lm: String,
    lm_sha256: String,
    encoder: String,
    config: LabelConfig,
}

pub fn run(a: LabelArgs) -> Result<()> {
    let qasper = a.data.load(a.split)?;
    let cfg = LabelConfig {
        candidates: match a.candidates {
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
        max_batch: a.max_batch.max(1),
        max_batch_tokens: a.max_batch_tokens.max(1),
    };
    let eligible: Vec<usize> = qasper
        .questions
        .iter()
        .enumerate()
        .filter(|(_, q)| {
            !q.references().is_empty()
                && (cfg.candidates == CandidateMode::Mined || !q.gold.is_empty())
        })
        .map(|(i, _)| i)
        .take(a.limit.unwrap_or(usize::MAX))
        .collect();
    anyhow::ensure!(
        !eligible.is_empty(),
        "no question of {} has an answer to label",
        a.split
    );
    let lm = a.lm.load()?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let manifest = Manifest {
        version: env!("CARGO_PKG_VERSION").into(),
        split: a.split.to_string(),
        limit: a.limit,
        data_file: qasper.path.display().to_string(),
        lm: a.lm.lm.display().to_string(),
        lm_sha256: lm.model_hash.clone(),
        encoder: a.encoder.display().to_string(),
        config: cfg.clone(),
    };
    let mpath = a.out.join("manifest.json");
    if mpath.is_file() {
        let old: Manifest = serde_json::from_str(&std::fs::read_to_string(&mpath)?)
            .with_context(|| format!("{}: unreadable manifest", mpath.display()))?;
        anyhow::ensure!(
            old.lm_sha256 == manifest.lm_sha256,
            "{}: labels were made with LLM sha256 {}, this run uses {}; choose another --out",
            mpath.display(),
            old.lm_sha256,
            manifest.lm_sha256
        );
        anyhow::ensure!(
            serde_json::to_value(&old.config)? == serde_json::to_value(&cfg)?
                && old.split == manifest.split,
            "{}: labels were made with another configuration ({}); choose another --out",
            mpath.display(),
            serde_json::to_string(&old.config)?
        );
    }
    write_json(&mpath, &manifest)?;

    let cands_path = a.out.join("candidates.jsonl");
    let items = match read_candidates(&cands_path, &qasper, &eligible)? {
        Some(items) => {
            tracing::info!(path = %cands_path.display(), "reusing mined candidates");
            items
        }
        None => {
            let items = mine_all(&qasper, &eligible, &a.encoder, &cfg)?;
            write_candidates(&cands_path, &qasper, &items)?;
            items
        }
    };
    let job = Job {
        qasper: &qasper,
        items,
    };
    let pb = progress(0, "scoring");
    let summary = label(&lm, &job, &cfg, &a.out, &mut |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    })?;
    pb.finish_and_clear();
    write_json(&a.out.join("summary.json"), &summary)?;
    let groups = uae_label::read_labels(&a.out)?;
    let (svg, png) = utility_histogram(&groups);
    std::fs::write(a.out.join("utility-histogram.svg"), svg)?;
    std::fs::write(a.out.join("utility-histogram.png"), png)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// Each eligible question (index into the split) with its candidates.
type Mined = Vec<(usize, Vec<uae_label::Candidate>)>;

#[derive(Serialize, Deserialize)]
struct MinedRow {
    question_id: String,
    candidates: Vec<uae_label::Candidate>,
}

/// Ranks the paragraphs of the papers involved by the base encoder and BM25, and
/// mines each question's candidates.
fn mine_all(
    qasper: &uae_data::Qasper,
    eligible: &[usize],
    encoder: &std::path::Path,
    cfg: &LabelConfig,
) -> Result<Mined> {
    let papers: std::collections::BTreeSet<&str> = eligible
        .iter()
        .map(|&i| qasper.questions[i].paper_id.as_str())
        .collect();
    let coll = qasper.collection();
    let passages: Vec<uae_core::Passage> = coll
        .passages
        .iter()
        .filter(|p| p.scope.as_deref().is_some_and(|s| papers.contains(s)))
        .cloned()
        .collect();
    let ids: Vec<String> = passages.iter().map(|p| p.id.clone()).collect();
    let enc = load_encoder(encoder)?;
    let texts: Vec<&str> = passages.iter().map(|p| p.text.as_str()).collect();
    let pb = progress(texts.len() as u64, "mining");
    let vecs = enc.embed_with(&texts, BatchOptions::default(), &mut |n| {
        pb.set_position(n as u64)
    })?;
    pb.finish_and_clear();
    let index = DenseIndex::new(&vecs)?;
    let scopes = Scopes::new(&passages);
    let bm25 = ScopedBm25::new(&passages, Bm25Params::default());
    let qtexts: Vec<&str> = eligible
        .iter()
        .map(|&i| qasper.questions[i].text.as_str())
        .collect();
    let qvecs = enc.embed(&qtexts)?;
    let mut items = Vec::new();
    for (&qi, qv) in eligible.iter().zip(&qvecs) {
        let query = &coll.queries[qi];
        let dense = paragraph_numbers(&index.search(qv, scopes.candidates(query), Some(50))?, &ids);
        let sparse = paragraph_numbers(&bm25.search(query, Some(50)), &ids);
        items.push((qi, mine(qasper, qi, &dense, &sparse, cfg)));
    }
    Ok(items)
}

fn write_candidates(
    path: &std::path::Path,
    qasper: &uae_data::Qasper,
    items: &Mined,
) -> Result<()> {
    let mut s = String::new();
    for (qi, c) in items {
        let row = MinedRow {
            question_id: qasper.questions[*qi].id.clone(),
            candidates: c.clone(),
        };
        s.push_str(&serde_json::to_string(&row)?);
        s.push('\n');
    }
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, s).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Candidates mined by an earlier run of the same command (the manifest check has
/// already established that the config matches); `None` if absent or stale.
fn read_candidates(
    path: &std::path::Path,
    qasper: &uae_data::Qasper,
    eligible: &[usize],
) -> Result<Option<Mined>> {
    if !path.is_file() {
        return Ok(None);
    }
    let rows: Vec<MinedRow> = uae_data::read_jsonl(path)?;
    if rows.len() != eligible.len()
        || rows
            .iter()
            .zip(eligible)
            .any(|(r, &qi)| r.question_id != qasper.questions[qi].id)
    {
        return Ok(None);
    }
    Ok(Some(
        eligible
            .iter()
            .copied()
            .zip(rows.into_iter().map(|r| r.candidates))
            .collect(),
    ))
}
