use crate::common::{count, Bars};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use uae_encoder::BatchOptions;

#[derive(clap::Args)]
pub struct EmbedArgs {
    /// JSONL input: one object per line with a "text" field and an optional "id".
    #[arg(long)]
    input: PathBuf,
    /// JSONL output: {"id", "embedding"} per input line, in input order.
    #[arg(long)]
    out: PathBuf,
    /// Sentence-transformers model folder (BERT family).
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    model: PathBuf,
    #[command(flatten)]
    precision: uae_encoder::EncoderPrecision,
    /// Most padded tokens per forward pass (memory vs. speed; >= 1).
    #[arg(long, default_value_t = 8192, value_parser = count())]
    max_tokens: usize,
    /// Most texts per forward pass (>= 1).
    #[arg(long, default_value_t = 32, value_parser = count())]
    batch: usize,
}

#[derive(Deserialize)]
struct In {
    #[serde(default)]
    id: Option<serde_json::Value>,
    text: String,
}

#[derive(Serialize)]
struct Out<'a> {
    id: serde_json::Value,
    embedding: &'a [f32],
}

pub fn run(a: EmbedArgs) -> Result<()> {
    let rows: Vec<In> = uae_data::read_jsonl(&a.input)?;
    anyhow::ensure!(!rows.is_empty(), "{}: no texts to embed", a.input.display());
    let enc = uae_search::load_encoder(&a.model, a.precision.bf16)?;
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let opts = BatchOptions {
        max_tokens: a.max_tokens,
        max_batch: a.batch,
    };
    let vecs = uae_search::embed_texts(&enc, &texts, opts, "embedding", &Bars::default())?;
    let out: Vec<Out> = rows
        .iter()
        .zip(&vecs)
        .enumerate()
        .map(|(i, (r, v))| Out {
            id: r.id.clone().unwrap_or_else(|| serde_json::Value::from(i)),
            embedding: v,
        })
        .collect();
    uae_core::fs::write_jsonl(&a.out, &out)?;
    tracing::info!(texts = rows.len(), dim = enc.dim(), out = %a.out.display(), "embedded");
    Ok(())
}
