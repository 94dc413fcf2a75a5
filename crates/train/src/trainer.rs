//! The training loop: batches of labeled questions, GradCache-style micro-batching,
//! AdamW, checkpoints that resume exactly, and sentence-transformers export.

pub use crate::step::{step, StepOutcome};
use crate::{linear_schedule, AdamW, AdamWConfig, LossKind, LossParams, UtilityNorm};
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use uae_artifacts::labels::LabeledGroup;
pub use uae_artifacts::train::StepLog;
use uae_artifacts::train::{DevLog, DevScores, MetricsLine};
#[cfg(feature = "cli")]
use uae_core::flags;
use uae_encoder::Encoder;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("no labeled question has candidates to train on")]
    NoData,
    #[error("invalid training configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Encoder(#[from] uae_encoder::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Files(#[from] uae_core::Error),
    #[error("{path}: {source}")]
    Safetensors {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },
    #[error("dev evaluation: {0}")]
    Dev(String),
    #[error("step {step}: the {what} is {value}; stopped before updating the weights (the last checkpoint and exported model are intact). Likely causes: a learning rate or temperature (--tau, --tau-u) too large or too small, or utilities out of range in the labels")]
    NonFinite {
        step: u64,
        what: &'static str,
        value: f32,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Training hyper-parameters (written to the checkpoint and `manifest.json`). With the
/// `cli` feature they are `uae train`'s flags: each field's doc is its `--help`, and
/// every default is [`TrainConfig::default`]'s.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct TrainConfig {
    /// `auto` (the default: `uae` on gold candidates; on mined or retrieved ones,
    /// `infonce --positives answer-overlap`, ahead of the utility recipe on QASPER's
    /// whole dev split with SmolLM2-135M labels (BENCHMARKS.md), or `uae --min-utility
    /// 2` where no candidate holds enough of any answer; with a --min-utility or
    /// --min-gap given, `uae` with that bar where it reaches at least as many questions as
    /// answer-match does, else `hybrid --positives answer-match --gold-weight 0`;
    /// `uae train` logs which and why),
    /// `uae` (utility-modulated InfoNCE: the utility softmax as soft targets,
    /// in-batch negatives), `uae-listwise` (each candidate a positive weighted by its
    /// utility share, against lower-utility ones), `kl` (KL of the utility and
    /// similarity distributions over the candidates), `infonce` (positives only,
    /// no LLM signal: the ablation), `hybrid` (`uae` whose target puts
    /// --gold-weight of the mass on the positives, the rest on the utility softmax)
    /// or `margin-mse` (each pair of a question's candidates: the similarity margin
    /// regressed on the utility margin over --tau-u; no in-batch negatives).
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value_t = d().loss))]
    pub loss: LossKind,
    /// Passes over the labels (1-1000).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().epochs, value_parser = flags::count_in(1, 1000)))]
    pub epochs: usize,
    /// Questions per optimizer step (>= 1); their candidates are each other's
    /// negatives.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().batch_questions, value_parser = flags::count()))]
    pub batch_questions: usize,
    /// Most candidates per question (>= 1; the highest-utility ones are kept).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().max_candidates, value_parser = flags::count()))]
    pub max_candidates: usize,
    /// Texts per forward/backward micro-batch (>= 1; the memory bound).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().micro_batch, value_parser = flags::count()))]
    pub micro_batch: usize,
    /// Passage truncation for training, in encoder tokens.
    #[cfg_attr(feature = "cli", arg(skip = d().max_passage_tokens))]
    pub max_passage_tokens: usize,
    /// Peak learning rate (> 0; linear warm-up over 10% of steps, then linear decay).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().lr, value_parser = flags::positive))]
    pub lr: f32,
    #[cfg_attr(feature = "cli", arg(skip = d().warmup_fraction))]
    pub warmup_fraction: f32,
    #[cfg_attr(feature = "cli", arg(skip = d().adamw))]
    pub adamw: AdamWConfig,
    #[cfg_attr(feature = "cli", arg(skip = d().clip))]
    pub clip: f32,
    /// Similarity temperature tau (> 0).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().tau, value_parser = flags::positive))]
    pub tau: f32,
    /// Utility temperature tau_u in nats (> 0): lower sharpens the target
    /// distribution (on dev, 0.1 beat 0.25, which beat 1).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().tau_u, value_parser = flags::positive))]
    pub tau_u: f32,
    /// Seed of the data order, dropout and initialisation.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().seed))]
    pub seed: u64,
    /// Checkpoint every N optimizer steps (>= 1) and at each epoch end.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().checkpoint_every, value_parser = flags::u64_in(1, u32::MAX as u64)))]
    pub checkpoint_every: u64,
    /// Also evaluate on dev (and keep the best model) every N optimizer steps; 0: at
    /// epoch ends only. Each evaluation embeds the dev papers (minutes on 2 cores).
    /// Does not change the weights, so a run may resume with another value.
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().eval_every, value_parser = flags::u64_in(0, u32::MAX as u64)))]
    pub eval_every: u64,
    /// Run GradCache's first pass (embeddings for the loss, no gradient) with the
    /// projections in bf16 (AMX tiles or AVX512_BF16) when the CPU has either: faster
    /// steps, gradient of a loss evaluated at embeddings within ~1e-5 of f32 (dev
    /// metrics equal to 4 decimals). Ignored without; `--bf16-first-pass false` for
    /// exact f32.
    #[serde(default = "default_true")]
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().bf16_first_pass, action = clap::ArgAction::Set))]
    pub bf16_first_pass: bool,
    /// Memory for autograd graphs kept from GradCache's first pass, MiB. Micro-batches
    /// whose graph fits are encoded once and back-propagated from it (no second forward
    /// pass; same gradient); the rest take GradCache's two passes. 0: plain GradCache,
    /// the least memory. The default keeps a default step under 4 GB.
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().graph_memory_mb, value_parser = flags::count_in(0, 1 << 30)))]
    pub graph_memory_mb: usize,
    /// Positives for `--loss infonce` and `hybrid`: `gold` (the evidence annotation),
    /// `answer-match` (candidates containing a reference answer, for data without
    /// evidence) or `answer-overlap` (each question's candidates holding the most of a
    /// reference answer's words, weighted by rarity, at least --min-answer-overlap:
    /// also finds lists of spans and paraphrases). The other losses use utilities
    /// only.
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value_t = d().positives))]
    pub positives: Positives,
    /// `--loss hybrid`: the share of the target on the positives (0-1); the rest
    /// follows utility.
    #[serde(default = "default_gold_weight")]
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().gold_weight, value_parser = flags::unit_interval))]
    pub gold_weight: f32,
    /// Utility losses (`uae`, `uae-listwise`, `kl`, `hybrid`): a question whose best
    /// candidate lowers the answer's NLL (mean per token) by less than this many nats
    /// gets no utility target: the LLM found no candidate that helps, so the utility
    /// softmax would rank noise. Its candidates stay in the batch as negatives for the
    /// others, and `hybrid` trains it on its positives alone. For mined candidates
    /// without evidence (QASPER: the best candidate is the evidence for 9-17% of
    /// questions below 1 nat, 77% above 2; 2 was best on dev). Under `--loss auto` on
    /// mined candidates, giving a bar asks for the utility recipe instead of
    /// answer-overlap positives. Default: every question trains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "cli", arg(long, value_parser = flags::finite, allow_negative_numbers = true))]
    pub min_utility: Option<f32>,
    /// Utility losses: a question whose best candidate lowers the answer's NLL by
    /// less than this many nats more than its second best does gets no utility target
    /// either: a bar on each question's own scale (the LLM must prefer one passage
    /// clearly), for labellers or answers whose utilities run on another scale than
    /// the fixed `--min-utility`. With both, a question must clear each; a question
    /// with one candidate has no second and passes; under `--loss auto` on mined
    /// candidates it asks for the utility recipe with this bar. Default: no such bar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "cli", arg(long, value_parser = flags::non_negative))]
    pub min_gap: Option<f32>,
    /// `--positives answer-match` (or `answer-overlap`): a candidate that contains a
    /// reference answer is a positive only when the LLM agrees it helps: its utility
    /// is at least this many nats. Below the utility bar answer-match is least reliable where the LLM
    /// gains little from the match (QASPER's mined labels: of the 58 questions under
    /// the 2-nat bar with a match, the evidence is among the matches for 4 of the 7
    /// under 0.5 nats, 26 of the 39 at 1-2). Default: every match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "cli", arg(long, value_parser = flags::finite, allow_negative_numbers = true))]
    pub min_match_utility: Option<f32>,
    /// `--positives answer-overlap`: the least share (0-1) of a reference answer's
    /// IDF-weighted words a question's best-overlapping candidate must hold to be its
    /// positive; a question whose best holds less has none.
    #[serde(default = "default_min_answer_overlap")]
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().min_answer_overlap, value_parser = flags::unit_interval))]
    pub min_answer_overlap: f32,
    /// `--loss infonce`: a question's own non-positive candidates whose utility is at
    /// least this many nats are spared: left out of that question's softmax instead
    /// of pushed away, since the LLM says they help answer it (evidence the annotation
    /// missed). They stay negatives for the other questions. Default: every
    /// non-positive is a negative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "cli", arg(long, value_parser = flags::finite, allow_negative_numbers = true))]
    pub spare_utility: Option<f32>,
    /// Utility losses: how each question's utilities are scaled before they become
    /// targets. `none` (nats as labelled), `zscore` ((u - mean) / std over the
    /// question's candidates; --tau-u is then in standard deviations) or `rank`
    /// (minus the rank, best 0; only the order counts, --tau-u in ranks).
    #[serde(default, skip_serializing_if = "UtilityNorm::is_none")]
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value_t = d().utility_norm))]
    pub utility_norm: UtilityNorm,
    /// Mixed precision: every projection's GEMM, forward and backward, rounds its
    /// inputs to bf16 and sums in f32 on AMX tiles or AVX512_BF16, as PyTorch's CPU
    /// autocast does; weights, gradients, AdamW, layer norms, attention and the loss
    /// stay f32. Faster steps (see `uae bench train --mixed-precision`); an error on a
    /// CPU with neither unit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[cfg_attr(feature = "cli", arg(long))]
    pub mixed_precision: bool,
}

/// The defaults, for the flags' `default_value_t`.
#[cfg(feature = "cli")]
fn d() -> TrainConfig {
    TrainConfig::default()
}

impl TrainConfig {
    /// The loss and its knobs.
    pub fn loss_params(&self) -> LossParams {
        LossParams {
            kind: self.loss,
            tau: self.tau,
            tau_u: self.tau_u,
            gold_weight: self.gold_weight,
            min_utility: self.min_utility,
            min_gap: self.min_gap,
            spare_utility: self.spare_utility,
            utility_norm: self.utility_norm,
        }
    }
}

/// The default [`TrainConfig::graph_memory_mb`]: enough for every graph of a default
/// step (16 questions x 8 passages x 128 tokens: 2.4 GB), whose peak resident memory
/// is then 3.9 GB on MiniLM (`uae bench train`).
pub const DEFAULT_GRAPH_MEMORY_MB: usize = 2560;

/// Estimated bytes of the autograd graph one padded token leaves in a BERT layer
/// stack: per layer the saved f32 activations (input, QKV, attention context, output
/// projection, the two dropout-residual sums and layer norms, the FFN output: about
/// 12 hidden widths) and the FFN's pre-activation (one intermediate width; the GELU
/// output is recomputed). Measured on MiniLM: 146 KB a token, this gives 147 KB.
pub fn graph_bytes_per_token(c: &uae_encoder::BertConfig) -> usize {
    4 * c.num_hidden_layers * (12 * c.hidden_size + c.intermediate_size)
}

fn default_gold_weight() -> f32 {
    0.5
}

fn default_min_answer_overlap() -> f32 {
    0.5
}

/// Where `infonce`'s positives come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Positives {
    /// The evidence annotation (`is_gold` in the labels).
    #[default]
    Gold,
    /// Candidates that contain a reference answer (Token F1's normalisation): DPR's
    /// distant supervision, for data without evidence labels.
    AnswerMatch,
    /// Each question's candidate(s) holding the most of a reference answer's words,
    /// weighted by their rarity among the candidates, where that share is at least
    /// `--min-answer-overlap`: answer-match that also finds answers whose words the
    /// passage holds apart or reordered (lists of spans, paraphrases).
    AnswerOverlap,
}

impl Positives {
    /// Whether the positives are found from the reference answers.
    pub fn from_answers(self) -> bool {
        self != Positives::Gold
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            loss: LossKind::Auto,
            epochs: 1,
            batch_questions: 16,
            max_candidates: 8,
            micro_batch: 32,
            max_passage_tokens: 128,
            lr: 2e-5,
            warmup_fraction: 0.1,
            adamw: AdamWConfig::default(),
            clip: 1.0,
            tau: 0.05,
            // Chosen on dev (first 300 questions): 0.1 gave R@1 0.296 / MAP 0.511,
            // 0.25 gave 0.291 / 0.507, 1.0 gave 0.268 / 0.486 (BENCHMARKS.md, Training).
            tau_u: 0.1,
            seed: 0,
            checkpoint_every: 50,
            eval_every: 0,
            bf16_first_pass: true,
            graph_memory_mb: DEFAULT_GRAPH_MEMORY_MB,
            positives: Positives::Gold,
            gold_weight: default_gold_weight(),
            min_utility: None,
            min_gap: None,
            min_match_utility: None,
            min_answer_overlap: default_min_answer_overlap(),
            spare_utility: None,
            utility_norm: UtilityNorm::None,
            mixed_precision: false,
        }
    }
}

/// What `--loss auto` trains on mined or retrieved candidates (no evidence used):
/// InfoNCE on `positives` (answer-overlap). With a utility bar given (`--min-utility`
/// or `--min-gap`), the utility recipe instead: `uae` with the bar, or, where the bar
/// reaches fewer questions than answer-match does, `hybrid` with answer-match
/// positives and `gold_weight` of the target on them ([`TrainConfig::fit_to_reach`]).
/// Where no candidate holds enough of any answer (yes/no answers only), `uae` with
/// `min_utility`.
pub struct EvidenceFree {
    pub positives: Positives,
    pub min_utility: f32,
    pub gold_weight: f32,
}

/// Chosen on QASPER dev, every question (BENCHMARKS.md, Evidence-free training).
pub const EVIDENCE_FREE: EvidenceFree = EvidenceFree {
    positives: Positives::AnswerOverlap,
    min_utility: 2.0,
    gold_weight: 0.0,
};

impl TrainConfig {
    /// The config with `--loss auto` made concrete for labels whose candidates were
    /// (`evidence_free == false`) or were not chosen around the evidence: `uae`, or
    /// [`EVIDENCE_FREE`]: `infonce` on answer-overlap positives (with
    /// `--min-match-utility`, those the LLM confirms), or, where a `--min-utility` or
    /// `--min-gap` is given, the utility recipe with that bar (`hybrid` with
    /// answer-match positives until [`Self::fit_to_reach`] has counted). Any other
    /// loss is returned as it is.
    pub fn resolve(&self, evidence_free: bool) -> TrainConfig {
        let mut c = self.clone();
        if c.loss != LossKind::Auto {
            return c;
        }
        if !evidence_free {
            c.loss = LossKind::Uae;
        } else if c.min_utility.is_none() && c.min_gap.is_none() {
            c.loss = LossKind::Infonce;
            c.positives = EVIDENCE_FREE.positives;
        } else {
            c.loss = LossKind::Hybrid;
            c.positives = Positives::AnswerMatch;
            c.gold_weight = EVIDENCE_FREE.gold_weight;
        }
        c
    }

    /// `--loss auto` on evidence-free labels where no candidate holds enough of any
    /// reference answer to be a positive (every answer yes or no, say): the LLM's
    /// signal alone, `uae --min-utility` with the default bar.
    pub fn utility_only(&self) -> TrainConfig {
        TrainConfig {
            loss: LossKind::Uae,
            min_utility: Some(EVIDENCE_FREE.min_utility),
            ..self.clone()
        }
    }

    /// `--loss auto` on evidence-free labels with a utility bar given, once the reach
    /// of each signal is counted: `sure` questions whose best candidate clears the utility bar,
    /// `matched` with an answer-match positive. Where the bar reaches at least as
    /// many (`sure >= matched`) it fits the data, and the answer-match positives
    /// under it add little but noise (QASPER's mined labels: 780 against 474, and the
    /// 58 questions the positives would add miss the evidence for a third; the bar
    /// alone was ahead on dev for each of three seeds): `uae` with the bar. Where it
    /// reaches fewer (answers copied from the passage, or a labeller whose utilities
    /// run on a smaller scale), the positives train the questions it drops: `hybrid`,
    /// as [`Self::resolve`] made it. `self` is the resolved config, `asked` the one
    /// asked for; anything but a resolved `auto` is returned as it is.
    pub fn fit_to_reach(&self, asked: &TrainConfig, sure: usize, matched: usize) -> TrainConfig {
        if asked.loss != LossKind::Auto || self.loss != LossKind::Hybrid || sure < matched {
            return self.clone();
        }
        TrainConfig {
            loss: LossKind::Uae,
            positives: asked.positives,
            gold_weight: asked.gold_weight,
            ..self.clone()
        }
    }

    /// Why this config cannot train, if it cannot: every count >= 1, temperatures,
    /// learning rate and clip finite and > 0, warm-up in [0, 1].
    pub fn check(&self) -> std::result::Result<(), String> {
        let counts = [
            ("epochs", self.epochs),
            ("batch_questions", self.batch_questions),
            ("max_candidates", self.max_candidates),
            ("micro_batch", self.micro_batch),
            ("max_passage_tokens", self.max_passage_tokens),
            ("checkpoint_every", self.checkpoint_every as usize),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        for (name, v) in [
            ("lr", self.lr),
            ("tau", self.tau),
            ("tau_u", self.tau_u),
            ("clip", self.clip),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be a finite number > 0, not {v}"));
            }
        }
        if !(0.0..=1.0).contains(&self.warmup_fraction) {
            return Err("warmup_fraction must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.gold_weight) {
            return Err("gold_weight must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.min_answer_overlap) {
            return Err("min_answer_overlap must be between 0 and 1".into());
        }
        if let Some(m) = self.min_match_utility.filter(|m| !m.is_finite()) {
            return Err(format!(
                "min_match_utility must be a finite number, not {m}"
            ));
        }
        if let Some(m) = self.min_utility.filter(|m| !m.is_finite()) {
            return Err(format!("min_utility must be a finite number, not {m}"));
        }
        if let Some(g) = self.min_gap.filter(|g| !(g.is_finite() && *g >= 0.0)) {
            return Err(format!("min_gap must be a finite number >= 0, not {g}"));
        }
        if let Some(m) = self.spare_utility {
            if !m.is_finite() {
                return Err(format!("spare_utility must be a finite number, not {m}"));
            }
            if self.loss != LossKind::Infonce {
                return Err("spare_utility applies to the infonce loss only".into());
            }
        }
        if !self.utility_norm.is_none() && self.loss == LossKind::Infonce {
            return Err("utility_norm applies to the utility losses, not infonce".into());
        }
        Ok(())
    }
}

fn default_true() -> bool {
    true
}

/// Where a run is: written with each checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: u64,
    pub epoch: usize,
    /// Batches of the current epoch already done.
    pub batch_in_epoch: usize,
    pub best_metric: Option<f64>,
    pub config: Option<TrainConfig>,
    /// What the training questions train on (the summary `uae train` prints; not
    /// kept in checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<TargetCounts>,
}

/// How many training questions (with candidates) train on each kind of target under
/// a config: what `--min-utility` and the positives leave to learn from.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TargetCounts {
    pub questions: usize,
    /// On the utility target (the best candidate clears the bar, or no bar).
    pub utility: usize,
    /// On their positives alone (`infonce`; `hybrid` under the bar).
    pub positives: usize,
    /// On nothing: their candidates are only negatives for the others.
    pub none: usize,
}

impl TargetCounts {
    /// The counts for `groups` (positives already marked) under `cfg`, over the
    /// candidates a batch holds ([`crate::step::trained_candidates`]).
    pub fn of(groups: &[LabeledGroup], cfg: &TrainConfig) -> Self {
        let lp = cfg.loss_params();
        let mut n = TargetCounts::default();
        for g in groups.iter().filter(|g| !g.candidates.is_empty()) {
            let kept = crate::step::trained_candidates(g, cfg.max_candidates);
            let utility: Vec<f32> = kept.iter().map(|c| c.utility).collect();
            let gold: Vec<bool> = kept.iter().map(|c| c.is_gold).collect();
            n.questions += 1;
            match lp.target(&utility, &gold) {
                crate::Target::Utility => n.utility += 1,
                crate::Target::Positives => n.positives += 1,
                crate::Target::None => n.none += 1,
            }
        }
        n
    }
}

/// Seeded permutation of `0..n` for an epoch (Fisher-Yates on SplitMix64).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng =
        uae_core::SplitMix64::new(seed ^ (epoch as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F));
    let mut next = || rng.next_u64();
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

pub(crate) fn mix(seed: u64, a: u64, b: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ a.wrapping_mul(0xBF58_476D_1CE4_E5B9)
        ^ b.wrapping_mul(0x94D0_49BB_1331_11EB)
}

/// Callbacks into the binary: progress, logs, and dev evaluation.
pub trait Hooks {
    fn on_step(&mut self, _log: &StepLog, _total_steps: u64) {}
    /// Scores the model on dev after an epoch: the metric that picks the best
    /// checkpoint (higher is better) and any other metrics to log beside it.
    /// `None`: there is no dev set, and the latest model is the one kept.
    fn evaluate(&mut self, enc: &Encoder, epoch: usize) -> Result<Option<(f64, DevScores)>>;
}

/// Runs (or resumes) training into `out`: `out/ckpt-*/` (model, optimizer, state;
/// `out/ckpt.json` names the current one),
/// `out/metrics.jsonl`, and the best model exported to `out/model/`.
pub fn train(
    enc: &Encoder,
    base_dir: &Path,
    groups: &[LabeledGroup],
    cfg: &TrainConfig,
    out: &Path,
    hooks: &mut dyn Hooks,
) -> Result<TrainState> {
    cfg.check().map_err(Error::Config)?;
    let groups: Vec<&LabeledGroup> = groups.iter().filter(|g| !g.candidates.is_empty()).collect();
    if groups.is_empty() {
        return Err(Error::NoData);
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            path: path.clone(),
            source,
        }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let vars = enc.model.vars().to_vec();
    let mut opt = AdamW::new(cfg.adamw);
    let model_dir = out.join("model");
    uae_core::fs::recover_dir(
        &uae_core::fs::partial_path(&model_dir),
        &model_dir,
        EXPORT_MARKER,
    )?;
    let mut state = if let Some(ckpt) = current_checkpoint(out) {
        load_checkpoint(&ckpt, &vars, &mut opt, cfg)?
    } else {
        TrainState {
            config: Some(cfg.clone()),
            ..Default::default()
        }
    };
    let per_epoch = groups.len().div_ceil(cfg.batch_questions);
    let total = (per_epoch * cfg.epochs) as u64;
    let warmup = ((total as f32) * cfg.warmup_fraction).round() as u64;
    let metrics_path = out.join(MetricsLine::FILE);
    MetricsLine::trim_after(&metrics_path, state.step)?;
    while state.epoch < cfg.epochs {
        let order = epoch_order(groups.len(), cfg.seed, state.epoch);
        while state.batch_in_epoch < per_epoch {
            let t = std::time::Instant::now();
            let b = state.batch_in_epoch;
            let idx =
                &order[b * cfg.batch_questions..((b + 1) * cfg.batch_questions).min(groups.len())];
            let batch: Vec<&LabeledGroup> = idx.iter().map(|&i| groups[i]).collect();
            let lr = linear_schedule(state.step, warmup, total, cfg.lr);
            let done = step(
                enc,
                &vars,
                &mut opt,
                &batch,
                cfg,
                lr,
                mix(cfg.seed, state.step, 0),
            )
            .map_err(|e| match e {
                // Stop before the update: the weights, the checkpoint and the exported
                // model all stay those of the last finite step.
                Error::NonFinite { what, value, .. } => Error::NonFinite {
                    step: state.step + 1,
                    what,
                    value,
                },
                other => other,
            })?;
            state.step += 1;
            state.batch_in_epoch += 1;
            let log = StepLog {
                step: state.step,
                epoch: state.epoch,
                loss: done.loss,
                grad_norm: done.grad_norm,
                lr,
                tokens: done.tokens,
                seconds: t.elapsed().as_secs_f64(),
            };
            MetricsLine::Step(log.clone()).append(&metrics_path)?;
            hooks.on_step(&log, total);
            let mid_epoch = state.batch_in_epoch < per_epoch;
            let eval_now = cfg.eval_every > 0 && state.step % cfg.eval_every == 0;
            if mid_epoch && eval_now {
                evaluate(enc, base_dir, out, &metrics_path, &mut state, hooks)?;
            }
            if mid_epoch && (eval_now || state.step % cfg.checkpoint_every == 0) {
                save_checkpoint(out, &vars, &opt, &state)?;
            }
        }
        evaluate(enc, base_dir, out, &metrics_path, &mut state, hooks)?;
        state.epoch += 1;
        state.batch_in_epoch = 0;
        save_checkpoint(out, &vars, &opt, &state)?;
    }
    Ok(state)
}

/// Scores the model on dev, logs it, and exports it to `out/model/` when it is the
/// best so far (without a dev set: every time, so the last model is kept). The caller checkpoints right after, so a resumed run never logs an
/// evaluation twice (see [`MetricsLine::trim_after`]).
fn evaluate(
    enc: &Encoder,
    base_dir: &Path,
    out: &Path,
    metrics_path: &Path,
    state: &mut TrainState,
    hooks: &mut dyn Hooks,
) -> Result<()> {
    let Some((metric, detail)) = hooks.evaluate(enc, state.epoch)? else {
        return export(enc, base_dir, &out.join("model"));
    };
    MetricsLine::Dev(DevLog {
        epoch: state.epoch,
        step: state.step,
        dev_metric: metric,
        dev: detail,
    })
    .append(metrics_path)?;
    if state.best_metric.is_none_or(|b| metric > b) {
        state.best_metric = Some(metric);
        export(enc, base_dir, &out.join("model"))?;
    }
    Ok(())
}

type Checkpoint = uae_artifacts::train::CheckpointState<TrainState>;
use uae_artifacts::train::CheckpointPointer;
/// The file a checkpoint folder's writer writes last.
const CKPT_MARKER: &str = Checkpoint::FILE;
/// The file an export folder's writer writes last.
const EXPORT_MARKER: &str = "model.safetensors";

/// The checkpoint a run resumes from: the folder `ckpt.json` names, or the
/// `ckpt/` folder of runs made before the pointer existed.
fn current_checkpoint(out: &Path) -> Option<PathBuf> {
    let named = CheckpointPointer::read(out).map(|p| out.join(p.dir));
    named
        .into_iter()
        .chain([out.join("ckpt")])
        .find(|d| d.join(CKPT_MARKER).is_file())
}

fn save_checkpoint(
    out: &Path,
    vars: &[(String, Var)],
    opt: &AdamW,
    state: &TrainState,
) -> Result<()> {
    // A fresh name each time: the folder the pointer names is never written to.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let name = format!("ckpt-{:08}-{nanos}", state.step);
    let dir = out.join(&name);
    let tmp = uae_core::fs::partial_path(&dir);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(uae_core::Error::io(&tmp))?;
    let model: HashMap<String, Tensor> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&model, tmp.join(Checkpoint::MODEL))?;
    let mut moments: HashMap<String, Tensor> = HashMap::new();
    for (n, v) in vars {
        if let (Some(m), Some(s)) = (opt.m.get(n), opt.v.get(n)) {
            moments.insert(
                format!("m.{n}"),
                Tensor::from_slice(m, m.len(), v.device())?,
            );
            moments.insert(
                format!("v.{n}"),
                Tensor::from_slice(s, s.len(), v.device())?,
            );
        }
    }
    candle_core::safetensors::save(&moments, tmp.join(Checkpoint::OPTIMIZER))?;
    let st = Checkpoint {
        version: Checkpoint::VERSION,
        state: state.clone(),
        optimizer_step: opt.step,
    };
    st.write(&tmp)?;
    std::fs::rename(&tmp, &dir).map_err(uae_core::Error::io(&dir))?;
    // The commit point: one rename of the pointer file.
    CheckpointPointer::write(out, &name)?;
    // Only now are older checkpoints (and leftovers of killed writes) removed.
    if let Ok(entries) = std::fs::read_dir(out) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let stale = (n.starts_with("ckpt-") && n != name) || n == "ckpt" || n == "ckpt.partial";
            if stale && e.path().is_dir() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

fn load_checkpoint(
    dir: &Path,
    vars: &[(String, Var)],
    opt: &mut AdamW,
    cfg: &TrainConfig,
) -> Result<TrainState> {
    let bad = |message: String| Error::Checkpoint {
        path: dir.to_path_buf(),
        message,
    };
    let Checkpoint {
        state,
        optimizer_step,
        ..
    } = Checkpoint::read(dir).map_err(bad)?;
    let same = |a: &TrainConfig| {
        TrainConfig {
            eval_every: cfg.eval_every,
            ..a.clone()
        } == *cfg
    };
    if !state.config.as_ref().is_some_and(same) {
        return Err(bad(
            "checkpoint was made with another configuration; use another --out".into(),
        ));
    }
    let model =
        candle_core::safetensors::load(dir.join(Checkpoint::MODEL), &candle_core::Device::Cpu)?;
    let moments =
        candle_core::safetensors::load(dir.join(Checkpoint::OPTIMIZER), &candle_core::Device::Cpu)?;
    for (n, var) in vars {
        let t = model
            .get(n)
            .ok_or_else(|| bad(format!("missing tensor {n}")))?;
        var.set(t)?;
        if let (Some(m), Some(s)) = (
            moments.get(&format!("m.{n}")),
            moments.get(&format!("v.{n}")),
        ) {
            opt.m.insert(n.clone(), m.to_vec1::<f32>()?);
            opt.v.insert(n.clone(), s.to_vec1::<f32>()?);
        }
    }
    opt.step = optimizer_step;
    tracing::info!(
        step = state.step,
        epoch = state.epoch,
        "resuming from checkpoint"
    );
    Ok(state)
}

/// Writes f32 weights as safetensors with `{"format": "pt"}` metadata: HF
/// transformers refuses safetensors weights without it (`metadata.get` on None),
/// so sentence-transformers could not load an export otherwise.
fn save_pytorch_safetensors(vars: &[(String, Var)], path: &Path) -> Result<()> {
    let mut data: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::with_capacity(vars.len());
    for (n, v) in vars {
        let t = v.as_tensor();
        let bytes: Vec<u8> = t
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        data.push((n.clone(), bytes, t.dims().to_vec()));
    }
    let views = data
        .iter()
        .map(|(n, b, shape)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .map(|v| (n.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|source| Error::Safetensors {
            path: path.to_path_buf(),
            source,
        })?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|source| {
        Error::Safetensors {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Writes a sentence-transformers folder: the model's weights plus the base model's
/// config, tokenizer and pooling files.
pub fn export(enc: &Encoder, base_dir: &Path, out: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            path: path.clone(),
            source,
        }
    };
    let tmp = uae_core::fs::partial_path(out);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("1_Pooling")).map_err(io(&tmp))?;
    for f in uae_encoder::FOLDER_FILES {
        let src = base_dir.join(f);
        if src.is_file() {
            std::fs::copy(&src, tmp.join(f)).map_err(io(&src))?;
        }
    }
    // The weights last, renamed into place: their presence marks the folder complete.
    let weights = tmp.join(EXPORT_MARKER);
    let partial = uae_core::fs::partial_path(&weights);
    save_pytorch_safetensors(enc.model.vars(), &partial)?;
    std::fs::rename(&partial, &weights).map_err(io(&weights))?;
    Ok(uae_core::fs::replace_dir(&tmp, out)?)
}

/// Weight-space ensembling (WiSE-FT, Wortsman et al. 2022): writes to `out` the
/// model whose every weight is `weight * fine_tuned + (1 - weight) * base`, with
/// the fine-tuned folder's config, tokenizer and pooling files. Fine-tuning on one
/// domain costs accuracy on others; interpolating towards the base buys most of
/// that back for a small in-domain cost, without training again. Both folders must
/// hold the same architecture (same weight names and shapes).
pub fn interpolate(fine_tuned: &Path, base: &Path, weight: f32, out: &Path) -> Result<()> {
    if !(0.0..=1.0).contains(&weight) {
        return Err(Error::Config(format!(
            "the fine-tuned model's weight must be between 0 and 1, not {weight}"
        )));
    }
    let device = candle_core::Device::Cpu;
    let ft = Encoder::load(fine_tuned, &device, true)?;
    let b = Encoder::load(base, &device, true)?;
    let base_vars: HashMap<&str, &Var> = b
        .model
        .vars()
        .iter()
        .map(|(n, v)| (n.as_str(), v))
        .collect();
    for (name, v) in ft.model.vars() {
        let Some(w0) = base_vars.get(name.as_str()) else {
            return Err(Error::Config(format!(
                "{}: no weight `{name}`, which {} has: not the same architecture",
                base.display(),
                fine_tuned.display()
            )));
        };
        if w0.dims() != v.dims() {
            return Err(Error::Config(format!(
                "`{name}` is {:?} in {} but {:?} in {}: not the same architecture",
                v.dims(),
                fine_tuned.display(),
                w0.dims(),
                base.display()
            )));
        }
        let mixed = ((v.as_tensor() * weight as f64)? + (w0.as_tensor() * (1.0 - weight as f64))?)?;
        v.set(&mixed)?;
    }
    if base_vars.len() != ft.model.vars().len() {
        return Err(Error::Config(format!(
            "{} has {} weights, {} has {}: not the same architecture",
            base.display(),
            base_vars.len(),
            fine_tuned.display(),
            ft.model.vars().len()
        )));
    }
    export(&ft, fine_tuned, out)
}

#[cfg(test)]
mod config_tests {
    use super::*;

    /// The defaults train; bad numbers and a spare bar on a loss without positives
    /// are refused with the field's name.
    #[test]
    fn auto_is_uae_on_gold_candidates_and_answer_overlap_elsewhere() {
        let d = TrainConfig::default();
        assert_eq!(d.loss, LossKind::Auto);
        let gold = d.resolve(false);
        assert_eq!(gold.loss, LossKind::Uae);
        assert_eq!(gold.min_utility, None);
        let free = d.resolve(true);
        assert_eq!(free.loss, LossKind::Infonce);
        assert_eq!(free.positives, EVIDENCE_FREE.positives);
        assert_eq!(free.positives, Positives::AnswerOverlap);
        assert_eq!(free.min_utility, None);
        assert_eq!(free.check(), Ok(()));
        let alone = free.utility_only();
        assert_eq!(alone.loss, LossKind::Uae);
        assert_eq!(alone.min_utility, Some(EVIDENCE_FREE.min_utility));
        assert_eq!(alone.check(), Ok(()));
        // A bar given asks for the utility recipe with it; an explicit loss is never
        // changed.
        let bar = TrainConfig {
            min_utility: Some(1.0),
            ..d.clone()
        };
        let recipe = bar.resolve(true);
        assert_eq!(recipe.loss, LossKind::Hybrid);
        assert_eq!(recipe.positives, Positives::AnswerMatch);
        assert_eq!(recipe.min_utility, Some(1.0));
        assert_eq!(recipe.gold_weight, EVIDENCE_FREE.gold_weight);
        assert_eq!(recipe.check(), Ok(()));
        let gap = TrainConfig {
            min_gap: Some(1.0),
            ..d.clone()
        };
        assert_eq!(gap.resolve(true).loss, LossKind::Hybrid);
        assert_eq!(gap.resolve(true).min_utility, None);
        assert_eq!(gap.resolve(true).min_gap, Some(1.0));
        let infonce = TrainConfig {
            loss: LossKind::Infonce,
            ..d
        };
        assert_eq!(infonce.resolve(true), infonce);
    }

    /// Evidence-free `auto` with a bar keeps the answer-match positives only where the
    /// bar reaches fewer questions than they do; then it is `uae --min-utility` exactly.
    #[test]
    fn auto_drops_answer_match_where_the_bar_reaches_as_far() {
        let d = TrainConfig {
            min_utility: Some(2.0),
            ..TrainConfig::default()
        };
        let free = d.resolve(true);
        let fitted = free.fit_to_reach(&d, 780, 474);
        let uae = TrainConfig {
            loss: LossKind::Uae,
            ..d.clone()
        };
        assert_eq!(
            fitted, uae,
            "the bar reaches further: `uae --min-utility 2`"
        );
        assert_eq!(fitted.check(), Ok(()));
        assert_eq!(
            free.fit_to_reach(&d, 474, 474),
            uae,
            "a tie keeps the bar alone"
        );
        assert_eq!(
            free.fit_to_reach(&d, 335, 675),
            free,
            "the issue's extractive set"
        );
        // A loss asked for by name, and `auto` on gold candidates, stay as they are.
        let hybrid = TrainConfig {
            loss: LossKind::Hybrid,
            ..d.clone()
        };
        assert_eq!(hybrid.fit_to_reach(&hybrid, 780, 474), hybrid);
        let gold = d.resolve(false);
        assert_eq!(gold.fit_to_reach(&d, 0, 474), gold);
    }

    #[test]
    fn check_names_what_is_wrong() {
        assert_eq!(TrainConfig::default().check(), Ok(()));
        let bad = |c: TrainConfig| c.check().unwrap_err();
        let base = TrainConfig::default;
        assert!(bad(TrainConfig { tau: 0.0, ..base() }).contains("tau"));
        assert!(bad(TrainConfig {
            gold_weight: 1.5,
            ..base()
        })
        .contains("gold_weight"));
        let spare = |loss, bar| TrainConfig {
            loss,
            spare_utility: Some(bar),
            ..base()
        };
        assert!(bad(spare(LossKind::Uae, 1.0)).contains("infonce"));
        assert!(bad(spare(LossKind::Infonce, f32::NAN)).contains("finite"));
        let norm = |loss| TrainConfig {
            loss,
            utility_norm: UtilityNorm::Rank,
            ..base()
        };
        assert!(bad(norm(LossKind::Infonce)).contains("utility_norm"));
        assert_eq!(norm(LossKind::MarginMse).check(), Ok(()));
        assert_eq!(spare(LossKind::Infonce, 1.0).check(), Ok(()));
    }
}

#[cfg(test)]
mod checkpoint_tests {
    use super::*;
    use candle_core::Device;

    fn vars(x: f32) -> Vec<(String, Var)> {
        vec![("w".into(), Var::new(&[x, 2.0 * x], &Device::Cpu).unwrap())]
    }

    fn state(step: u64) -> TrainState {
        TrainState {
            step,
            config: Some(TrainConfig::default()),
            ..Default::default()
        }
    }

    fn resumed(out: &Path) -> (u64, Vec<f32>) {
        let v = vars(0.0);
        let mut opt = AdamW::new(AdamWConfig::default());
        let dir = current_checkpoint(out).expect("a checkpoint");
        let s = load_checkpoint(&dir, &v, &mut opt, &TrainConfig::default()).unwrap();
        (s.step, v[0].1.as_tensor().to_vec1::<f32>().unwrap())
    }

    /// A kill at each step of a checkpoint swap: while the new folder is written,
    /// after it is renamed into place, and after the pointer moves. The run always
    /// resumes from a complete checkpoint: the old one until the pointer moves, the
    /// new one after.
    #[test]
    fn a_kill_between_the_steps_of_a_swap_resumes_from_a_complete_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path();
        let opt = AdamW::new(AdamWConfig::default());
        save_checkpoint(out, &vars(1.0), &opt, &state(1)).unwrap();
        assert_eq!(resumed(out), (1, vec![1.0, 2.0]));
        // Killed while writing the next one: a half-written folder.
        std::fs::create_dir_all(out.join("ckpt-00000002-1.partial")).unwrap();
        std::fs::write(
            out.join("ckpt-00000002-1.partial/model.safetensors"),
            b"torn",
        )
        .unwrap();
        assert_eq!(resumed(out).0, 1);
        // Killed after the new folder's rename, before the pointer's: a complete
        // folder the pointer does not name yet.
        let current = current_checkpoint(out).unwrap();
        let renamed = out.join("ckpt-00000002-9");
        std::fs::create_dir_all(&renamed).unwrap();
        for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
            std::fs::copy(current.join(f), renamed.join(f)).unwrap();
        }
        let st = std::fs::read_to_string(renamed.join("state.json")).unwrap();
        std::fs::write(
            renamed.join("state.json"),
            st.replacen("\"step\":1", "\"step\":2", 1),
        )
        .unwrap();
        assert_eq!(resumed(out), (1, vec![1.0, 2.0]));
        // After the pointer's rename: the new checkpoint, and stale folders go at the
        // next save.
        save_checkpoint(out, &vars(3.0), &opt, &state(2)).unwrap();
        assert_eq!(resumed(out), (2, vec![3.0, 6.0]));
        let left: Vec<String> = std::fs::read_dir(out)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("ckpt-"))
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    /// Runs made before the pointer existed resume from their `ckpt/` folder.
    #[test]
    fn legacy_ckpt_folders_still_resume() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path();
        let opt = AdamW::new(AdamWConfig::default());
        save_checkpoint(out, &vars(5.0), &opt, &state(7)).unwrap();
        let name = std::fs::read_dir(out)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("ckpt-"))
            .unwrap()
            .path();
        std::fs::rename(name, out.join("ckpt")).unwrap();
        std::fs::remove_file(out.join(CheckpointPointer::FILE)).unwrap();
        assert_eq!(resumed(out), (7, vec![5.0, 10.0]));
    }
}
