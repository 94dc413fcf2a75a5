//! `uae serve`: flags for the `uae-serve` library (routes and shapes are documented
//! there).

use crate::common::{count, count_in, Bars, ModelCorpus};
use anyhow::Result;
use std::path::PathBuf;
use std::time::Duration;
use uae_serve::batcher::BatchLimits;
use uae_serve::{Deployment, ServeConfig};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    mc: ModelCorpus,
    /// Address to listen on (port 0: any free port). The line `listening on URL` on
    /// stdout says which, once the corpus is embedded (/search answers 503 before).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Where passage embeddings are cached (default: CORPUS.uae-cache beside the
    /// corpus file, or `runs/serve-cache` for QASPER).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Threads answering connections (1-1024); the encoder runs on its own thread
    /// and the matmul pool (--threads).
    #[arg(long, default_value_t = 2, value_parser = count_in(1, 1024))]
    workers: usize,
    /// Largest `k` a search may ask for (>= 1).
    #[arg(long, default_value_t = 1000, value_parser = count())]
    max_k: usize,
    /// Largest request body in bytes (>= 1; 413 beyond; TEI's default).
    #[arg(long, default_value_t = 2_000_000, value_parser = count())]
    payload_limit: usize,
    /// Most tokens in one model pass across batched requests (>= 1).
    #[arg(long, default_value_t = 16384, value_parser = count())]
    max_batch_tokens: usize,
    /// Most requests in one model pass (>= 1).
    #[arg(long, default_value_t = 64, value_parser = count())]
    max_batch_requests: usize,
    /// Most requests waiting for the encoder (1-100000); more get 429.
    #[arg(long, default_value_t = 512, value_parser = count_in(1, 100_000))]
    max_concurrent_requests: usize,
    /// Milliseconds a request may wait for the encoder (1-3600000); one that waited
    /// longer gets 503 with `Retry-After` instead of a late answer, so that latency
    /// stays bounded when more arrives than the CPU can embed.
    #[arg(long, default_value_t = 2_000, value_parser = count_in(1, 3_600_000))]
    max_queue_wait_ms: usize,
    /// Seconds requests in flight may take to finish after SIGTERM/SIGINT (0-3600);
    /// meanwhile /health answers 503 and new work 503, then the server exits 0.
    #[arg(long, default_value_t = 30, value_parser = count_in(0, 3_600))]
    shutdown_timeout: usize,
    /// The model's name in /info, /health and the embeddings `model` field (default:
    /// the model folder's name; never a local path).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Most inputs in one request (>= 1; 422 beyond).
    #[arg(long, default_value_t = 512, value_parser = count())]
    max_client_batch_size: usize,
    /// Refuse inputs longer than the model's limit (422) instead of cutting them.
    #[arg(long)]
    no_truncate: bool,
    /// Require `Authorization: Bearer KEY` on every route but /health (401 otherwise).
    #[arg(long, env = "UAE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Milliseconds a client has to send a request's headers (then the connection
    /// closes) and its body (then 408) (1-3600000).
    #[arg(long, default_value_t = 10_000, value_parser = count_in(1, 3_600_000))]
    read_timeout_ms: usize,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let passages = a.mc.passages()?;
    let default_cache = match &a.mc.corpus {
        Some(path) => path.with_extension("uae-cache"),
        None => PathBuf::from("runs/serve-cache"),
    };
    let enc = a.mc.encoder()?;
    let calibration = uae_artifacts::calibration::CalibrationFile::read(&a.mc.model)?;
    if let Some(c) = &calibration {
        tracing::info!(labels = %c.labels, ece = c.ece, "calibrated: hits carry expected utility and p(helps)");
    }
    let cfg = ServeConfig {
        model_name: a
            .served_model_name
            .clone()
            .unwrap_or_else(|| uae_serve::model_name(&a.mc.model)),
        max_k: a.max_k,
        payload_limit: a.payload_limit,
        max_client_batch_size: a.max_client_batch_size,
        batch: BatchLimits {
            max_batch_tokens: a.max_batch_tokens,
            max_batch_requests: a.max_batch_requests,
            max_concurrent_requests: a.max_concurrent_requests,
            max_queue_wait: Duration::from_millis(a.max_queue_wait_ms as u64),
        },
        truncate: !a.no_truncate,
        api_key: a.api_key.clone(),
        read_timeout: Duration::from_millis(a.read_timeout_ms as u64),
        shutdown_timeout: Duration::from_secs(a.shutdown_timeout as u64),
        calibration: calibration.map(|c| c.calibrator),
    };
    let d = Deployment {
        addr: a.addr,
        model_dir: a.mc.model,
        passages,
        cache_dir: a.cache_dir.unwrap_or(default_cache),
        workers: a.workers,
    };
    uae_serve::run(enc, d, cfg, &Bars::default(), |addr| {
        println!("listening on http://{addr}")
    })?;
    Ok(())
}
