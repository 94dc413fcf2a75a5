use crate::common::{progress, DEFAULT_ENCODER};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
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
    #[arg(long, default_value = DEFAULT_ENCODER)]
    model: PathBuf,
    #[arg(long, help = crate::common::ENCODER_BF16_HELP)]
    bf16: bool,
    /// Most padded tokens per forward pass (memory vs. speed).
    #[arg(long, default_value_t = 8192)]
    max_tokens: usize,
    /// Most texts per forward pass.
    #[arg(long, default_value_t = 32)]
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
    id: &'a serde_json::Value,
    embedding: &'a [f32],
}

pub fn run(a: EmbedArgs) -> Result<()> {
    let rows: Vec<In> = uae_data::read_jsonl(&a.input)?;
    anyhow::ensure!(!rows.is_empty(), "{}: no texts to embed", a.input.display());
    let enc = crate::common::load_encoder_in(&a.model, a.bf16)?;
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let pb = progress(texts.len() as u64, "embedding");
    let opts = BatchOptions {
        max_tokens: a.max_tokens,
        max_batch: a.batch,
    };
    let vecs = enc.embed_with(&texts, opts, &mut |n| pb.set_position(n as u64))?;
    pb.finish_and_clear();
    let tmp = a.out.with_extension("partial");
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    for (i, (r, v)) in rows.iter().zip(&vecs).enumerate() {
        let id = r.id.clone().unwrap_or_else(|| serde_json::Value::from(i));
        serde_json::to_writer(
            &mut w,
            &Out {
                id: &id,
                embedding: v,
            },
        )?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    drop(w);
    std::fs::rename(&tmp, &a.out).with_context(|| format!("writing {}", a.out.display()))?;
    tracing::info!(texts = rows.len(), dim = enc.dim(), out = %a.out.display(), "embedded");
    Ok(())
}
