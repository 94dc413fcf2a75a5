//! `uae serve`: flags for the `uae-serve` library (routes and shapes are documented
//! there).

use crate::common::{count, count_in, Bars, DataDir, ENCODER_BF16_HELP};
use anyhow::{Context, Result};
use std::path::PathBuf;
use uae_data::Split;
use uae_serve::{Listener, Service};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Bi-encoder folder (a `uae train` export or any sentence-transformers BERT).
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    model: PathBuf,
    #[arg(long, help = ENCODER_BF16_HELP)]
    bf16: bool,
    /// Corpus to serve: JSONL, one `{"id", "text", "title"?, "scope"?}` per line; a
    /// BEIR corpus.jsonl (`_id`, `title`, `text`) works as it is.
    #[arg(long, conflicts_with = "split")]
    corpus: Option<PathBuf>,
    /// Corpus to serve: the paragraphs of a QASPER split (scope = paper id); the
    /// default when no --corpus is given is the test split.
    #[arg(long)]
    split: Option<Split>,
    #[command(flatten)]
    data: DataDir,
    /// Address to listen on (port 0: any free port; the line on stdout says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Where passage embeddings are cached (default: CORPUS.uae-cache beside the
    /// corpus file, or `runs/serve-cache` for QASPER).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Request-handling threads (1-1024).
    #[arg(long, default_value_t = 2, value_parser = count_in(1, 1024))]
    workers: usize,
    /// Largest `k` a request may ask for (>= 1).
    #[arg(long, default_value_t = 1000, value_parser = count())]
    max_k: usize,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let (passages, default_cache) = match &a.corpus {
        Some(path) => (
            uae_data::read_corpus_jsonl(path)?,
            path.with_extension("uae-cache"),
        ),
        None => (
            a.data.load(a.split.unwrap_or(Split::Test))?.passages(),
            PathBuf::from("runs/serve-cache"),
        ),
    };
    let enc = uae_search::load_encoder(&a.model, a.bf16)?;
    let cache = a.cache_dir.clone().unwrap_or(default_cache);
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let vecs = uae_search::cached_passage_embeddings(
        "corpus",
        &enc,
        &a.model,
        &passages,
        &cache,
        &Bars::default(),
    )?;
    let service = Service::new(enc, a.model.display().to_string(), passages, &vecs, a.max_k)?;
    let listener = Listener::bind(&a.addr)?;
    println!("listening on http://{}", listener.addr());
    listener.serve(&service, a.workers);
    Ok(())
}
