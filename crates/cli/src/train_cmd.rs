use crate::common::{progress, write_json, DataDir, DEFAULT_ENCODER};
use crate::eval_cmd::{dense_rankings, score, Timings};
use anyhow::{Context, Result};
use candle_core::Device;
use indicatif::ProgressBar;
use std::path::PathBuf;
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
    /// Utility temperature tau_u (nats): lower sharpens the target distribution.
    #[arg(long, default_value_t = 1.0)]
    tau_u: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checkpoint every N optimizer steps.
    #[arg(long, default_value_t = 50)]
    checkpoint_every: u64,
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
        dev.queries.truncate(n);
        let scopes: std::collections::HashSet<Option<String>> =
            dev.queries.iter().map(|q| q.scope.clone()).collect();
        dev.passages.retain(|p| scopes.contains(&p.scope));
    }
    let enc = Encoder::load(&a.base, &Device::Cpu, true)
        .with_context(|| format!("loading {} for training", a.base.display()))?;
    std::fs::create_dir_all(&a.out)?;
    write_json(
        &a.out.join("manifest.json"),
        &serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "labels": a.labels.display().to_string(),
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
    println!("{}", serde_json::to_string_pretty(&state)?);
    Ok(())
}
