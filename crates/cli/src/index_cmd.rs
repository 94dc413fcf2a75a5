use crate::common::{Bars, DataDir, ENCODER_BF16_HELP};
use anyhow::Result;
use clap::Subcommand;
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
        Some(c) => uae_data::read_corpus(c)?,
        None => data.load(split.unwrap_or(Split::Test))?.passages(),
    };
    let enc = uae_search::load_encoder(&model, bf16)?;
    let (n, dim) = uae_search::export_index(&enc, &passages, &out, &Bars::default())?;
    println!("{n} vectors of dimension {dim} in {}", out.display());
    Ok(())
}
