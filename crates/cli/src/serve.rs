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
    explore: ExploreFlags,
    #[command(flatten)]
    config: ServeConfig,
}

/// What the explorer page (`GET /`) shows beside the served model's search.
#[derive(clap::Args, Debug, Clone)]
pub struct ExploreFlags {
    /// A label folder (`uae label --out`) to browse on the page: every question's
    /// candidates by utility, filters, histograms.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// A second bi-encoder (e.g. the base model) searched over the same corpus at
    /// /against/search: the page shows both rankings side by side, moved passages
    /// marked.
    #[arg(long)]
    against: Option<PathBuf>,
    /// Two `uae eval` folders (or two `uae label --candidates retrieved` folders) to
    /// compare on the page, as `uae compare A B` does, with the questions where they
    /// differ most.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    compare: Vec<PathBuf>,
}

impl ExploreFlags {
    /// The explorer's label folder and comparison, and the `--against` model.
    fn open(
        &self,
        bf16: bool,
    ) -> Result<(uae_serve::explore::Explorer, Option<uae_serve::Against>)> {
        use uae_serve::explore::{CompareView, Explorer, LabelsView};
        let labels = match &self.labels {
            Some(dir) => Some(LabelsView::open(dir)?),
            None => None,
        };
        let compare = match self.compare.as_slice() {
            [a, b] => Some(CompareView::open(a, b)?),
            _ => None,
        };
        let against = match &self.against {
            Some(dir) => Some(uae_serve::Against {
                encoder: uae_search::load_encoder(dir, bf16)?,
                dir: dir.clone(),
                name: uae_serve::model_name(dir),
            }),
            None => None,
        };
        let explorer = Explorer {
            labels,
            compare,
            ..Default::default()
        };
        Ok((explorer, against))
    }
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

/// `uae explore`: the explorer page over a label folder, searching its labelled
/// passages with a model; no corpus server needed.
#[derive(clap::Args, Debug)]
pub struct ExploreArgs {
    /// The label folder (`uae label --out`).
    labels: PathBuf,
    /// Bi-encoder that searches the folder's labelled passages on the page.
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    model: PathBuf,
    #[command(flatten)]
    precision: uae_encoder::EncoderPrecision,
    /// A second bi-encoder searched beside --model (e.g. the base model), both
    /// rankings side by side.
    #[arg(long)]
    against: Option<PathBuf>,
    /// Two `uae eval` (or `uae label --candidates retrieved`) folders to compare.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    compare: Vec<PathBuf>,
    /// Address to listen on: loopback unless you say otherwise (port 0: any free
    /// port). The line `listening on URL` on stdout says which.
    #[arg(long, default_value = "127.0.0.1:8090")]
    addr: String,
    /// Where the passages' embeddings are cached (default: LABELS/explore-cache).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Require this key on the page and every route: `Authorization: Bearer KEY`, or
    /// the browser's password prompt (any user name).
    #[arg(long, env = "UAE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

/// The distinct passages of a label folder (as the LLM saw them), scoped by question
/// scope: what `uae explore` searches.
fn labelled_passages(index: &uae_artifacts::labels::LabelIndex) -> Result<Vec<uae_core::Passage>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for r in &index.rows {
        let Some(g) = index.group(r.n)? else { continue };
        for c in g.candidates {
            if seen.insert(c.passage_id.clone()) {
                out.push(uae_core::Passage {
                    id: c.passage_id,
                    text: c.text,
                    scope: (!g.paper_id.is_empty()).then(|| g.paper_id.clone()),
                    section: None,
                });
            }
        }
    }
    Ok(out)
}

pub fn explore(a: ExploreArgs) -> Result<()> {
    let flags = ExploreFlags {
        labels: Some(a.labels.clone()),
        against: a.against.clone(),
        compare: a.compare.clone(),
    };
    let (explorer, against) = flags.open(a.precision.bf16)?;
    let passages = match &explorer.labels {
        Some(l) => labelled_passages(&l.index)?,
        None => Vec::new(),
    };
    if passages.is_empty() {
        anyhow::bail!("{}: no labelled passage to explore", a.labels.display());
    }
    let enc = uae_search::load_encoder(&a.model, a.precision.bf16)?;
    let calibration = uae_artifacts::calibration::CalibrationFile::read(&a.model)?;
    let cfg = ServeConfig {
        model_name: uae_serve::model_name(&a.model),
        calibration: calibration.map(|c| c.calibrator),
        api_key: a.api_key,
        ..ServeConfig::default()
    };
    let d = Deployment {
        addr: a.addr,
        model_dir: a.model,
        passages,
        cache_dir: a
            .cache_dir
            .unwrap_or_else(|| a.labels.join("explore-cache")),
        workers: 2,
        explorer,
        against,
    };
    uae_serve::run(enc, d, cfg, &Bars::default(), |addr| {
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
