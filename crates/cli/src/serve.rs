//! `uae serve`: `ServeConfig`'s flags plus where to listen and what to serve (routes
//! and shapes are documented in the `uae-serve` library).

use crate::common::{count_in, Bars, ModelCorpus};
use anyhow::Result;
use std::path::PathBuf;
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
    /// The model's name in /info, /health and the embeddings `model` field (default:
    /// the model folder's name; never a local path).
    #[arg(long)]
    served_model_name: Option<String>,
    #[command(flatten)]
    explore: uae_serve::explore::ExploreFlags,
    #[command(flatten)]
    config: ServeConfig,
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
    let (explorer, against) = a.explore.open(a.mc.precision.bf16)?;
    let cfg = ServeConfig {
        model_name: (a.served_model_name.clone())
            .unwrap_or_else(|| uae_serve::model_name(&a.mc.model)),
        calibration: calibration.map(|c| c.calibrator),
        ..a.config
    };
    let d = Deployment {
        addr: a.addr,
        model_dir: a.mc.model,
        passages,
        cache_dir: a.cache_dir.unwrap_or(default_cache),
        workers: a.workers,
        explorer,
        against,
    };
    uae_serve::run(enc, d, cfg, &Bars::default(), |addr| {
        println!("listening on http://{addr}")
    })?;
    Ok(())
}

/// `uae explore`.
pub fn explore(a: uae_serve::explore::ExploreConfig) -> Result<()> {
    uae_serve::explore::serve_labels(a, &Bars::default(), |addr| {
        println!("listening on http://{addr}")
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {

    /// The flags' defaults are the library's, and `--no-truncate` turns truncation off.
    #[test]
    fn flag_defaults_are_the_config_defaults() {
        let crate::Cmd::Serve(a) = crate::parse(&["serve"]) else {
            panic!("not serve")
        };
        let want = uae_serve::ServeConfig::default();
        assert_eq!(format!("{:?}", a.config), format!("{want:?}"));
        let crate::Cmd::Serve(a) =
            crate::parse(&["serve", "--no-truncate", "--max-queue-wait-ms", "5"])
        else {
            panic!("not serve")
        };
        assert!(!a.config.truncate);
        assert_eq!(a.config.batch.max_queue_wait_ms, 5);
    }
}
