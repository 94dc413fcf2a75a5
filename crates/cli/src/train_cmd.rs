use crate::common::{count, count_in, finite, named, positive, unit_interval, Bars, DataDir};
use anyhow::Result;
use std::path::PathBuf;
use uae_data::Split;
use uae_train::{DevSet, LossKind, Positives, TrainConfig, TrainRun, UtilityNorm};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Label folder written by `uae label` (labels.jsonl).
    #[arg(long)]
    labels: PathBuf,
    /// `uae` (utility-modulated InfoNCE: the utility softmax as soft targets,
    /// in-batch negatives), `uae-listwise` (each candidate a positive weighted by its
    /// utility share, against lower-utility ones), `kl` (KL of the utility and
    /// similarity distributions over the candidates), `infonce` (positives only,
    /// no LLM signal: the ablation), `hybrid` (`uae` whose target puts
    /// --gold-weight of the mass on the positives, the rest on the utility softmax)
    /// or `margin-mse` (each pair of a question's candidates: the similarity margin
    /// regressed on the utility margin over --tau-u; no in-batch negatives).
    #[arg(long, default_value = "uae", value_parser = named::<LossKind>(&["uae", "uae-listwise", "kl", "infonce", "hybrid", "margin-mse"]))]
    loss: LossKind,
    /// Utility losses: how each question's utilities are scaled before they become
    /// targets. `none` (nats as labelled), `zscore` ((u - mean) / std over the
    /// question's candidates; --tau-u is then in standard deviations) or `rank`
    /// (minus the rank, best 0; only the order counts, --tau-u in ranks).
    #[arg(long, default_value = "none", value_parser = named::<UtilityNorm>(&["none", "zscore", "rank"]))]
    utility_norm: UtilityNorm,
    /// `--loss hybrid`: the share of the target on the positives (0-1).
    #[arg(long, default_value_t = 0.5, value_parser = unit_interval)]
    gold_weight: f32,
    /// Positives for `--loss infonce` and `hybrid`: `gold` (the evidence annotation) or
    /// `answer-match` (candidates containing a reference answer, for data without
    /// evidence).
    #[arg(long, default_value = "gold", value_parser = named::<Positives>(&["gold", "answer-match"]))]
    positives: Positives,
    /// Utility losses (`uae`, `uae-listwise`, `kl`, `hybrid`): a question whose best
    /// candidate lowers the answer's NLL (mean per token) by less than this many nats
    /// gets no utility target: the LLM found no candidate that helps, so the utility
    /// softmax would rank noise. Its candidates stay in the batch as negatives for the
    /// others, and `hybrid` trains it on its positives alone. For mined candidates
    /// without evidence (QASPER: the best candidate is the evidence for 9-17% of
    /// questions below 1 nat, 77% above 2; 2 was best on dev). Default: every
    /// question trains.
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    min_utility: Option<f32>,
    /// `--loss infonce`: a question's own non-positive candidates whose utility is at
    /// least this many nats are spared: left out of that question's softmax instead
    /// of pushed away, since the LLM says they help answer it (evidence the annotation
    /// missed). They stay negatives for the other questions. Default: every
    /// non-positive is a negative.
    #[arg(long, value_parser = finite, allow_negative_numbers = true)]
    spare_utility: Option<f32>,
    /// Output: model/ (best by dev MAP, sentence-transformers layout), ckpt/,
    /// metrics.jsonl, manifest.json, loss.svg, dev.svg. Rerunning the same command
    /// resumes.
    #[arg(long)]
    out: PathBuf,
    /// Base bi-encoder to fine-tune.
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    base: PathBuf,
    /// Passes over the labels (1-1000).
    #[arg(long, default_value_t = 1, value_parser = count_in(1, 1000))]
    epochs: usize,
    /// Questions per optimizer step (>= 1).
    #[arg(long, default_value_t = 16, value_parser = count())]
    batch_questions: usize,
    /// Most candidates per question (>= 1).
    #[arg(long, default_value_t = 8, value_parser = count())]
    max_candidates: usize,
    /// Texts per forward/backward micro-batch (>= 1; the memory bound).
    #[arg(long, default_value_t = 32, value_parser = count())]
    micro_batch: usize,
    /// Peak learning rate (> 0; linear warm-up over 10% of steps, then linear decay).
    #[arg(long, default_value_t = 2e-5, value_parser = positive)]
    lr: f32,
    /// Similarity temperature tau (> 0).
    #[arg(long, default_value_t = 0.05, value_parser = positive)]
    tau: f32,
    /// Utility temperature tau_u in nats (> 0): lower sharpens the target
    /// distribution (on dev, 0.1 beat 0.25, which beat 1).
    #[arg(long, default_value_t = 0.1, value_parser = positive)]
    tau_u: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checkpoint every N optimizer steps (>= 1).
    #[arg(long, default_value_t = 50, value_parser = count())]
    checkpoint_every: usize,
    /// Also evaluate on dev (and keep the best model) every N optimizer steps; 0: at
    /// epoch ends only. Each evaluation embeds the dev papers (minutes on 2 cores).
    #[arg(long, default_value_t = 0, value_parser = count_in(0, u32::MAX as u64))]
    eval_every: usize,
    /// Run GradCache's first pass (embeddings for the loss, no gradient) with the
    /// projections in bf16 (AMX tiles or AVX512_BF16) when the CPU has either: faster
    /// steps, gradient of a loss evaluated at embeddings within ~1e-5 of f32 (dev
    /// metrics equal to 4 decimals). Ignored without; `--bf16-first-pass false` for
    /// exact f32.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    bf16_first_pass: bool,
    /// Mixed precision: every projection's GEMM, forward and backward, rounds its
    /// inputs to bf16 and sums in f32 on AMX tiles or AVX512_BF16, as PyTorch's CPU
    /// autocast does; weights, gradients, AdamW, layer norms, attention and the loss
    /// stay f32. Faster steps (see `uae bench train --mixed-precision`); an error on a
    /// CPU with neither unit.
    #[arg(long)]
    mixed_precision: bool,
    /// Memory for autograd graphs kept from GradCache's first pass, MiB. Micro-batches
    /// whose graph fits are encoded once and back-propagated from it (no second forward
    /// pass; same gradient); the rest take GradCache's two passes. 0: plain GradCache,
    /// the least memory. The default keeps a default step under 4 GB.
    #[arg(long, default_value_t = uae_train::trainer::DEFAULT_GRAPH_MEMORY_MB, value_parser = count_in(0, 1 << 30))]
    graph_memory_mb: usize,
    /// Evaluate on the first N dev questions only (>= 1; default: all).
    #[arg(long, value_parser = count())]
    dev_limit: Option<usize>,
    /// Your own dev questions (JSONL with `positives`) over --corpus: the best model
    /// is chosen by their MAP. Default: QASPER dev for labels of QASPER; for labels
    /// of your own corpus, no dev evaluation (the last model is kept) unless this or
    /// --dev-labels names one.
    #[arg(long, requires = "corpus", conflicts_with = "dev_labels")]
    dev_questions: Option<PathBuf>,
    /// The corpus of --dev-questions (JSONL or a BEIR folder).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// A labelled dev set (a `uae label` folder of held-out questions), for data
    /// without evidence: the best model is chosen by nDCG@10 of each question's
    /// candidates ranked by the model, the LLM's utilities as graded relevance; the
    /// exported model is then calibrated on it (model/calibration.json, see `uae
    /// calibrate`).
    #[arg(long)]
    dev_labels: Option<PathBuf>,
    #[command(flatten)]
    data: DataDir,
}

pub fn run(a: TrainArgs) -> Result<()> {
    let config = TrainConfig {
        loss: a.loss,
        epochs: a.epochs,
        batch_questions: a.batch_questions,
        max_candidates: a.max_candidates,
        micro_batch: a.micro_batch,
        lr: a.lr,
        tau: a.tau,
        tau_u: a.tau_u,
        seed: a.seed,
        checkpoint_every: a.checkpoint_every as u64,
        eval_every: a.eval_every as u64,
        bf16_first_pass: a.bf16_first_pass,
        graph_memory_mb: a.graph_memory_mb,
        positives: a.positives,
        gold_weight: a.gold_weight,
        min_utility: a.min_utility,
        spare_utility: a.spare_utility,
        utility_norm: a.utility_norm,
        mixed_precision: a.mixed_precision,
        ..Default::default()
    };
    let dev = match (&a.dev_labels, &a.dev_questions, &a.corpus) {
        (Some(dir), ..) => DevSet::utility(dir, a.dev_limit)?,
        (None, Some(q), Some(c)) => {
            DevSet::retrieval(uae_data::QaSet::load(c, q)?.collection(), a.dev_limit)?
        }
        // QASPER dev says nothing about a model of your own corpus.
        _ if uae_artifacts::labels::LabelManifest::names_own_corpus(&a.labels)? => {
            tracing::warn!(
                "no --dev-questions or --dev-labels: no dev evaluation, the model after the last epoch is kept"
            );
            DevSet::None
        }
        _ => DevSet::retrieval(a.data.load(Split::Dev)?.collection(), a.dev_limit)?,
    };
    let run = TrainRun {
        labels: a.labels,
        base: a.base,
        out: a.out,
        config,
        dev,
    };
    let state = uae_train::run(&run, &Bars::default())?;
    println!("{}", serde_json::to_string_pretty(&state)?);
    Ok(())
}

#[derive(clap::Args)]
pub struct InterpolateArgs {
    /// The fine-tuned model folder (`uae train`'s `out/model`).
    #[arg(long)]
    model: PathBuf,
    /// The model it was fine-tuned from.
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    base: PathBuf,
    /// The fine-tuned model's share of every weight (0-1): 1 is the fine-tuned
    /// model, 0 the base. Lower keeps more of the base's accuracy on other domains.
    #[arg(long, default_value_t = 0.5, value_parser = unit_interval)]
    model_weight: f32,
    /// Output folder (sentence-transformers layout, as `uae train` writes).
    #[arg(long)]
    out: PathBuf,
}

pub fn interpolate(a: InterpolateArgs) -> Result<()> {
    uae_train::interpolate(&a.model, &a.base, a.model_weight, &a.out)?;
    println!("{}", a.out.display());
    Ok(())
}
