//! What subcommands share: the data folder, LLM and model-and-corpus flags, and
//! progress bars (the binary's side of `uae_core::Progress`). Flag-value parsers live
//! in `uae_core::flags`, beside the library configs that use them.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use uae_data::{Qasper, Split};

/// `--data-dir` for QASPER, shared by subcommands.
#[derive(clap::Args, Clone, Debug)]
pub struct DataDir {
    /// Folder with qasper-{train,dev,test}-v0.3.json[.gz].
    #[arg(long, env = "UAE_DATA_DIR", default_value = uae_data::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

impl DataDir {
    pub fn load(&self, split: Split) -> Result<Qasper> {
        Qasper::load_split(&self.data_dir, split).with_context(|| format!("loading QASPER {split}"))
    }
}

/// `--lm`, `--quantized`, `--bf16`: which LLM, and in what precision.
#[derive(clap::Args, Clone, Debug)]
pub struct LmArgs {
    /// The LLM: a GGUF file or an HF safetensors folder of a Llama (2, 3.x), Mistral,
    /// Qwen2, Qwen3 or Gemma 3 model.
    #[arg(long, default_value = uae_label::DEFAULT_LM)]
    pub lm: PathBuf,
    #[command(flatten)]
    pub precision: uae_lm::LmPrecision,
}

impl LmArgs {
    pub fn source(&self) -> uae_lm::LmSource {
        uae_lm::LmSource {
            path: self.lm.clone(),
            quantized: self.precision.quantized,
        }
    }
}

/// `--model`, `--bf16`, `--corpus`/`--split`: a bi-encoder and the passages it
/// serves or exports.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelCorpus {
    /// Bi-encoder folder (a `uae train` export or any sentence-transformers BERT).
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    pub model: PathBuf,
    #[command(flatten)]
    pub precision: uae_encoder::EncoderPrecision,
    /// The corpus: JSONL, one `{"id", "text", "title"?, "scope"?}` per line, or a
    /// BEIR folder (its corpus.jsonl with `_id`).
    #[arg(long, conflicts_with = "split")]
    pub corpus: Option<PathBuf>,
    /// The corpus: the paragraphs of a QASPER split (scope = paper id); the default
    /// without --corpus is the test split.
    #[arg(long)]
    pub split: Option<Split>,
    #[command(flatten)]
    pub data: DataDir,
}

impl ModelCorpus {
    pub fn passages(&self) -> Result<Vec<uae_core::Passage>> {
        Ok(match &self.corpus {
            Some(c) => uae_data::read_corpus(c)?,
            None => self
                .data
                .load(self.split.unwrap_or(Split::Test))?
                .passages(),
        })
    }

    pub fn encoder(&self) -> Result<uae_encoder::Encoder> {
        Ok(uae_search::load_encoder(&self.model, self.precision.bf16)?)
    }
}

pub use uae_core::flags::{count, count_in};

/// A progress bar on stderr with rate and ETA. When stderr is not a terminal (a job
/// under `nohup`), indicatif draws nothing, so a log line is written every 30 s instead.
/// `skipped` holds the units that were done before the phase started (see
/// [`uae_core::Progress::skip`]); the logged rate leaves them out.
fn bar(len: u64, what: &str, skipped: Arc<AtomicU64>) -> ProgressBar {
    use std::io::IsTerminal;
    let pb = ProgressBar::new(len);
    if !std::io::stderr().is_terminal() {
        let weak = pb.downgrade();
        let what = what.to_string();
        std::thread::spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(30));
            let Some(pb) = weak.upgrade() else { break };
            if pb.is_finished() {
                break;
            }
            let (pos, len) = (pb.position(), pb.length().unwrap_or(0));
            let fresh = pos.saturating_sub(skipped.load(Ordering::Relaxed));
            let rate = fresh as f64 / pb.elapsed().as_secs_f64().max(1e-9);
            let eta = if rate > 0.0 {
                (len.saturating_sub(pos)) as f64 / rate
            } else {
                f64::NAN
            };
            tracing::info!(
                "{what}: {pos}/{len} ({rate:.2}/s, ETA {:.0} min)",
                eta / 60.0
            );
        });
    }
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} ETA {eta}",
        )
        .expect("static progress template is valid; this is a bug")
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Progress bars for the libraries' phases: one bar at a time, with the units its
/// phase skipped (already done when it started).
#[derive(Default)]
pub struct Bars(Mutex<Option<(ProgressBar, Arc<AtomicU64>)>>);

impl Bars {
    fn with(&self, f: impl FnOnce(&ProgressBar, &AtomicU64)) {
        if let Some((pb, skipped)) = self.0.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            f(pb, skipped);
        }
    }
}

impl uae_core::Progress for Bars {
    fn start(&self, what: &str, total: u64) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((old, _)) = slot.take() {
            old.finish_and_clear();
        }
        let skipped = Arc::new(AtomicU64::new(0));
        *slot = Some((bar(total, what, skipped.clone()), skipped));
    }

    fn set_total(&self, total: u64) {
        self.with(|pb, _| pb.set_length(total));
    }

    fn set(&self, done: u64) {
        self.with(|pb, _| pb.set_position(done));
    }

    fn skip(&self, done: u64) {
        self.with(|pb, skipped| {
            skipped.store(done, Ordering::Relaxed);
            pb.set_position(done);
            // The terminal bar's rate and ETA start from here, as the log line's do.
            pb.reset_eta();
            pb.reset_elapsed();
        });
    }

    fn message(&self, msg: &str) {
        self.with(|pb, _| pb.set_message(msg.to_string()));
    }

    fn finish(&self) {
        if let Some((pb, _)) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            pb.finish_and_clear();
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        uae_core::Progress::finish(self);
    }
}
