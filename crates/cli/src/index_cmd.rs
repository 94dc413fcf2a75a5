use crate::common::{Bars, DataDir, ENCODER_BF16_HELP};
use anyhow::{Context, Result};
use clap::Subcommand;
use serde::Serialize;
use std::path::PathBuf;
use uae_data::Split;

#[derive(Subcommand)]
pub enum IndexCmd {
    /// Writes a corpus's passage vectors for bulk loading into a vector database:
    /// OUT/vectors.npy (`[n, dim]` float32, NumPy format) and OUT/ids.jsonl
    /// (`{"id", "scope"?}` per row, in the same order).
    Export {
        /// Bi-encoder folder (a `uae train` export or any sentence-transformers BERT).
        #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
        model: PathBuf,
        #[arg(long, help = ENCODER_BF16_HELP)]
        bf16: bool,
        /// Corpus JSONL (or a BEIR folder); default: a QASPER split's paragraphs.
        #[arg(long, conflicts_with = "split")]
        corpus: Option<PathBuf>,
        /// QASPER split whose paragraphs are exported (default: test).
        #[arg(long)]
        split: Option<Split>,
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Serialize)]
struct IdRow<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

pub fn run(cmd: IndexCmd) -> Result<()> {
    let IndexCmd::Export {
        model,
        bf16,
        corpus,
        split,
        data,
        out,
    } = cmd;
    let passages = match &corpus {
        Some(c) if c.is_dir() => uae_data::read_corpus_jsonl(&c.join("corpus.jsonl"))?,
        Some(c) => uae_data::read_corpus_jsonl(c)?,
        None => data.load(split.unwrap_or(Split::Test))?.passages(),
    };
    let enc = uae_search::load_encoder(&model, bf16)?;
    let vecs = uae_search::embed_passages(
        &enc,
        &passages,
        uae_encoder::BatchOptions::default(),
        "passages",
        &Bars::default(),
    )?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    uae_artifacts::embeddings::write_npy(&out.join("vectors.npy"), &vecs, enc.dim())?;
    let ids: Vec<IdRow> = passages
        .iter()
        .map(|p| IdRow {
            id: &p.id,
            scope: p.scope.as_deref(),
        })
        .collect();
    uae_core::fs::write_jsonl(&out.join("ids.jsonl"), &ids)?;
    println!(
        "{} vectors of dimension {} in {}",
        vecs.len(),
        enc.dim(),
        out.display()
    );
    Ok(())
}
