//! Pieces shared by subcommands: data location, model loading, progress bars.

use anyhow::{Context, Result};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use uae_data::{Qasper, Split};
use uae_encoder::Encoder;

/// `--data-dir` for QASPER, shared by subcommands.
#[derive(clap::Args, Clone, Debug)]
pub struct DataDir {
    /// Folder with qasper-{train,dev,test}-v0.3.json[.gz].
    #[arg(long, env = "UAE_DATA_DIR", default_value = "../shared/data/qasper")]
    pub data_dir: PathBuf,
}

impl DataDir {
    pub fn load(&self, split: Split) -> Result<Qasper> {
        Qasper::load_split(&self.data_dir, split).with_context(|| format!("loading QASPER {split}"))
    }
}

/// Keeps the first `n` queries (in file order; those without gold evidence count but
/// are not scored) and only the passages of their papers. `uae train --dev-limit`
/// and `uae eval --limit` share it, so their numbers are comparable.
pub fn limit_queries(coll: &mut uae_data::Collection, n: usize) {
    coll.queries.truncate(n);
    let scopes: std::collections::HashSet<Option<String>> =
        coll.queries.iter().map(|q| q.scope.clone()).collect();
    coll.passages.retain(|p| scopes.contains(&p.scope));
}

/// `--lm`, `--quantized`, `--bf16`: which LLM, and in what precision.
#[derive(clap::Args, Clone, Debug)]
pub struct LmArgs {
    /// The LLM: a GGUF file (llama/qwen2) or a HF safetensors folder.
    #[arg(long, default_value = crate::label_cmd::DEFAULT_LM)]
    pub lm: PathBuf,
    /// Keep GGUF weights quantised (less memory, ~20x slower prefill on CPU).
    #[arg(long, conflicts_with = "bf16")]
    pub quantized: bool,
    /// Round the weights to bf16 and multiply on Intel AMX tiles: 2-3x faster on
    /// Sapphire Rapids or later, NLL within 0.01 nats of f32 on the fixtures. Labels and
    /// caches are keyed apart from f32 ones.
    #[arg(long)]
    pub bf16: bool,
}

impl LmArgs {
    pub fn load(&self) -> Result<uae_lm::CausalLm> {
        let mut lm = uae_lm::CausalLm::load(&uae_lm::LmSource {
            path: self.lm.clone(),
            quantized: self.quantized,
        })
        .with_context(|| format!("loading the LLM {}", self.lm.display()))?;
        if self.bf16 {
            lm.to_bf16()?;
        }
        Ok(lm)
    }
}

pub const DEFAULT_ENCODER: &str = "models/all-MiniLM-L6-v2";

pub fn load_encoder(dir: &Path) -> Result<Encoder> {
    Encoder::load(dir, &Device::Cpu, false).with_context(|| {
        format!(
            "loading bi-encoder from {} (run scripts/fetch-models.sh?)",
            dir.display()
        )
    })
}

/// [`load_encoder`], then the projections in bf16 on AMX tiles when `bf16` is set.
pub fn load_encoder_in(dir: &Path, bf16: bool) -> Result<Encoder> {
    let mut enc = load_encoder(dir)?;
    if bf16 {
        enc.model.to_bf16()?;
    }
    Ok(enc)
}

/// Help text shared by the encoders' `--bf16` flags.
pub const ENCODER_BF16_HELP: &str = "Run the bi-encoder's projections in bf16 on Intel AMX \
tiles (Sapphire Rapids or later): faster, cosine >= 0.9999 to f32 on the fixtures";

/// A progress bar on stderr with rate and ETA. When stderr is not a terminal (a job
/// under `nohup`), indicatif draws nothing, so a log line is written every 30 s instead.
pub fn progress(len: u64, what: &str) -> ProgressBar {
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
            let rate = pos as f64 / pb.elapsed().as_secs_f64().max(1e-9);
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

pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// What determines a model folder's embeddings: its files' sha256s (weights,
/// tokenizer, pooling and length settings). The list and its order are part of the
/// cache key: changing them invalidates every cached embedding.
pub fn model_fingerprint(dir: &Path) -> Result<String> {
    let mut parts = Vec::new();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        let p = dir.join(f);
        if p.is_file() {
            parts.push(format!("{f}={}", uae_lm::file_sha256(&p)?));
        }
    }
    Ok(parts.join(","))
}

/// Passage embeddings, from `cache/emb-<key>.bin` when an earlier run of the same model
/// over the same passages left them there (key: model files + passage texts). The file
/// is `n: u64, dim: u64` then `n * dim` little-endian f32, written whole and renamed, so
/// a killed run leaves either nothing or a complete file.
pub fn passage_embeddings(
    name: &str,
    enc: &Encoder,
    dir: &Path,
    passages: &[uae_core::Passage],
    cache: &Path,
) -> Result<Vec<Vec<f32>>> {
    let texts: Vec<&str> = passages.iter().map(|p| p.text.as_str()).collect();
    let fp = model_fingerprint(dir)?;
    let mut parts: Vec<&[u8]> = vec![b"passage-embeddings-v1", fp.as_bytes()];
    if enc.model.is_bf16() {
        parts.push(b"bf16"); // f32 keys stay as they were
    }
    parts.extend(texts.iter().map(|t| t.as_bytes()));
    let path = cache.join(format!("emb-{}.bin", uae_label::digest(&parts)));
    let dim = enc.dim();
    if let Ok(bytes) = std::fs::read(&path) {
        let head =
            |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        if bytes.len() >= 16
            && head(0) as usize == texts.len()
            && head(1) as usize == dim
            && bytes.len() == 16 + texts.len() * dim * 4
        {
            tracing::info!("{name}: passage embeddings from {}", path.display());
            let floats: Vec<f32> = bytes[16..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            return Ok(floats.chunks(dim).map(<[f32]>::to_vec).collect());
        }
        tracing::warn!("{}: malformed, embedding again", path.display());
    }
    let pb = progress(texts.len() as u64, &format!("{name} index"));
    let vecs = enc.embed_with(&texts, uae_encoder::BatchOptions::default(), &mut |n| {
        pb.set_position(n as u64)
    })?;
    pb.finish_and_clear();
    let mut bytes = Vec::with_capacity(16 + texts.len() * dim * 4);
    bytes.extend((texts.len() as u64).to_le_bytes());
    bytes.extend((dim as u64).to_le_bytes());
    for v in &vecs {
        for x in v {
            bytes.extend(x.to_le_bytes());
        }
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(vecs)
}
