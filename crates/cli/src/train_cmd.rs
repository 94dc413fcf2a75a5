use crate::common::{progress, write_json, DataDir, DEFAULT_ENCODER};
use crate::eval_cmd::{dense_rankings, score, Timings};
use anyhow::{Context, Result};
use candle_core::Device;
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};
use uae_data::{Collection, Split};
use uae_encoder::{BatchOptions, Encoder};
use uae_train::{Hooks, LossKind, StepLog, TrainConfig};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LossArg {
    /// Utility-modulated InfoNCE: utility softmax as soft targets, in-batch negatives.
    Uae,
    /// Each candidate a positive weighted by its utility share, against lower-utility ones.
    UaeListwise,
    /// KL(utility distribution || similarity distribution) over the candidates.
    Kl,
    /// Plain InfoNCE on gold evidence (no LLM signal): the ablation.
    Infonce,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Label folder written by `uae label` (labels.jsonl).
    #[arg(long)]
    labels: PathBuf,
    #[arg(long, value_enum, default_value = "uae")]
    loss: LossArg,
    /// Output: model/ (best by dev MAP, sentence-transformers layout), ckpt/,
    /// metrics.jsonl, manifest.json. Rerunning the same command resumes.
    #[arg(long)]
    out: PathBuf,
    /// Base bi-encoder to fine-tune.
    #[arg(long, default_value = DEFAULT_ENCODER)]
    base: PathBuf,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Questions per optimizer step.
    #[arg(long, default_value_t = 16)]
    batch_questions: usize,
    /// Most candidates per question.
    #[arg(long, default_value_t = 8)]
    max_candidates: usize,
    /// Texts per forward/backward micro-batch (memory bound).
    #[arg(long, default_value_t = 32)]
    micro_batch: usize,
    /// Peak learning rate (linear warm-up over 10% of steps, then linear decay).
    #[arg(long, default_value_t = 2e-5)]
    lr: f32,
    /// Similarity temperature tau.
    #[arg(long, default_value_t = 0.05)]
    tau: f32,
    /// Utility temperature tau_u (nats): lower sharpens the target distribution
    /// (on dev, 0.1 beat 0.25, which beat 1).
    #[arg(long, default_value_t = 0.1)]
    tau_u: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checkpoint every N optimizer steps.
    #[arg(long, default_value_t = 50)]
    checkpoint_every: u64,
    /// Also evaluate on dev (and keep the best model) every N optimizer steps; 0: at
    /// epoch ends only. Each evaluation embeds the dev papers (minutes on 2 cores).
    #[arg(long, default_value_t = 0)]
    eval_every: u64,
    /// Run GradCache's first pass (embeddings for the loss, no gradient) with the
    /// projections in bf16 on AMX tiles when the CPU has them: faster steps, gradient
    /// of a loss evaluated at embeddings within ~1e-5 of f32 (dev metrics equal to 4
    /// decimals). Ignored without AMX; `--bf16-first-pass false` for exact f32.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    bf16_first_pass: bool,
    /// Evaluate on the first N dev questions only (default: all).
    #[arg(long)]
    dev_limit: Option<usize>,
    #[command(flatten)]
    data: DataDir,
}

struct CliHooks {
    pb: ProgressBar,
    dev: Collection,
    out: PathBuf,
}

impl Hooks for CliHooks {
    fn on_step(&mut self, log: &StepLog, total: u64) {
        self.pb.set_length(total);
        self.pb.set_position(log.step);
        self.pb.set_message(format!("loss {:.4}", log.loss));
    }

    fn evaluate(
        &mut self,
        enc: &Encoder,
        epoch: usize,
    ) -> uae_train::trainer::Result<(f64, serde_json::Value)> {
        // Evaluate an inference copy (stacked QKV, no graph) exported to a temp folder.
        let tmp = self.out.join("dev-eval-model");
        uae_train::export(enc, &enc.dir, &tmp)?;
        let inf = Encoder::load(&tmp, &Device::Cpu, false)?;
        let mut t = Timings::default();
        let rankings =
            dense_rankings(&inf, &self.dev, BatchOptions::default(), &mut t).map_err(|e| {
                uae_train::trainer::Error::Checkpoint {
                    path: tmp.clone(),
                    message: e.to_string(),
                }
            })?;
        let (_, m) = score(&self.dev, &rankings);
        let _ = std::fs::remove_dir_all(&tmp);
        tracing::info!(epoch, recall_1 = m.recall_1, map = m.map, "dev");
        let detail = serde_json::to_value(m).unwrap_or_default();
        Ok((m.map, detail))
    }
}

pub fn run(a: TrainArgs) -> Result<()> {
    let groups = uae_label::read_labels(&a.labels).with_context(|| {
        format!(
            "reading labels from {} (run `uae label` first)",
            a.labels.display()
        )
    })?;
    anyhow::ensure!(
        groups.iter().any(|g| !g.candidates.is_empty()),
        "{}: no labeled question has candidates",
        a.labels.display()
    );
    let cfg = TrainConfig {
        loss: match a.loss {
            LossArg::Uae => LossKind::Uae,
            LossArg::UaeListwise => LossKind::UaeListwise,
            LossArg::Kl => LossKind::Kl,
            LossArg::Infonce => LossKind::Infonce,
        },
        epochs: a.epochs,
        batch_questions: a.batch_questions.max(1),
        max_candidates: a.max_candidates.max(1),
        micro_batch: a.micro_batch.max(1),
        lr: a.lr,
        tau: a.tau,
        tau_u: a.tau_u,
        seed: a.seed,
        checkpoint_every: a.checkpoint_every.max(1),
        eval_every: a.eval_every,
        bf16_first_pass: a.bf16_first_pass,
        ..Default::default()
    };
    if cfg.loss == LossKind::Infonce {
        anyhow::ensure!(
            groups
                .iter()
                .any(|g| g.candidates.iter().any(|c| c.is_gold)),
            "{}: infonce needs gold candidates; these labels have none (mined?)",
            a.labels.display()
        );
    }
    let mut dev = a.data.load(Split::Dev)?.collection();
    if let Some(n) = a.dev_limit {
        crate::common::limit_queries(&mut dev, n);
    }
    let enc = Encoder::load(&a.base, &Device::Cpu, true)
        .with_context(|| format!("loading {} for training", a.base.display()))?;
    std::fs::create_dir_all(&a.out)?;
    let (labels_lm, fingerprint) = labels_fingerprint(&a.labels, &groups);
    let manifest_path = a.out.join("manifest.json");
    if let Ok(text) = std::fs::read_to_string(&manifest_path) {
        let old: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        // Resuming on other labels would silently train a mixture.
        if let Some(f) = old["labels_fingerprint"].as_str() {
            anyhow::ensure!(
                f == fingerprint,
                "{}: this run was trained on other labels (LLM {}, from {}); these come from LLM {} in {}. Use another --out",
                a.out.display(),
                old["labels_lm_sha256"].as_str().unwrap_or("?"),
                old["labels"].as_str().unwrap_or("?"),
                labels_lm,
                a.labels.display()
            );
        }
        if let Some(b) = old["base"].as_str() {
            anyhow::ensure!(
                Path::new(b) == a.base,
                "{}: this run fine-tunes {b}, not {}; use another --out",
                a.out.display(),
                a.base.display()
            );
        }
    }
    write_json(
        &manifest_path,
        &serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "labels": a.labels.display().to_string(),
            "labels_lm_sha256": labels_lm,
            "labels_fingerprint": fingerprint,
            "base": a.base.display().to_string(),
            "config": cfg,
            "dev_questions": dev.queries.len(),
        }),
    )?;
    let mut hooks = CliHooks {
        pb: progress(0, "training"),
        dev,
        out: a.out.clone(),
    };
    let state = uae_train::train(&enc, &a.base, &groups, &cfg, &a.out, &mut hooks)?;
    hooks.pb.finish_and_clear();
    write_curves(&a.out)?;
    println!("{}", serde_json::to_string_pretty(&state)?);
    Ok(())
}

/// `loss.{svg,png}` (per-step loss and its 10-step moving average) and
/// `dev.{svg,png}` (dev R@1 and MAP at each evaluation), drawn from `metrics.jsonl`.
fn write_curves(out: &std::path::Path) -> Result<()> {
    use uae_eval::plot::{lines_png, lines_svg, Series};
    let path = out.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (mut loss, mut r1, mut map) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(step) = v["step"].as_f64() else {
            continue;
        };
        if let Some(l) = v["loss"].as_f64() {
            loss.push((step, l));
        }
        if let Some(m) = v["dev"]["map"].as_f64().or(v["dev_metric"].as_f64()) {
            map.push((step, m));
        }
        if let Some(r) = v["dev"]["recall@1"].as_f64() {
            r1.push((step, r));
        }
    }
    let avg: Vec<(f64, f64)> = (0..loss.len())
        .map(|i| {
            let w = &loss[i.saturating_sub(9)..=i];
            (
                loss[i].0,
                w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64,
            )
        })
        .collect();
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let p = out.join(name);
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))
    };
    let loss = [
        Series {
            name: "loss",
            color: "#bbbbbb",
            values: loss,
        },
        Series {
            name: "loss, 10-step mean",
            color: "#d62728",
            values: avg,
        },
    ];
    let dev = [
        Series {
            name: "dev R@1",
            color: "#1f77b4",
            values: r1,
        },
        Series {
            name: "dev MAP",
            color: "#ff7f0e",
            values: map,
        },
    ];
    for (name, series) in [("loss", &loss), ("dev", &dev)] {
        write(
            &format!("{name}.svg"),
            lines_svg("optimizer step", series).as_bytes(),
        )?;
        write(&format!("{name}.png"), &lines_png("optimizer step", series))?;
    }
    Ok(())
}
/// The labeling LLM's sha256 (from the label folder's manifest) and a digest of
/// every question, candidate and utility: what a resumed run must train on.
fn labels_fingerprint(dir: &Path, groups: &[uae_label::LabeledGroup]) -> (String, String) {
    let lm = std::fs::read_to_string(dir.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["lm_sha256"].as_str().map(String::from))
        .unwrap_or_else(|| "unknown".into());
    let mut parts: Vec<Vec<u8>> = vec![lm.clone().into_bytes()];
    for g in groups {
        parts.push(g.question_id.clone().into_bytes());
        for c in &g.candidates {
            parts.push(c.passage_id.clone().into_bytes());
            parts.push(c.utility.to_le_bytes().to_vec());
        }
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    (lm, uae_label::digest(&refs))
}
