//! A whole training run into one folder: checks on the labels, the resume guard
//! (`manifest.json` fingerprints the labels and the base model), dev evaluation
//! on an inference copy of the model in memory, and the curves drawn from
//! `metrics.jsonl` at the end.

use crate::trainer::{
    train, Error, Hooks, Positives, Result, StepLog, TargetCounts, TrainConfig, TrainState,
};
use crate::LossKind;
use std::path::{Path, PathBuf};
use uae_artifacts::labels::{fingerprint, CandidateMode, LabelManifest, LabeledGroup};
use uae_artifacts::train::{DevScores, MetricsLine, TrainManifest};
use uae_core::Progress;
use uae_data::Collection;
use uae_encoder::{BatchOptions, Encoder};

/// What a training run reads and where it writes.
pub struct TrainRun {
    /// The label folder (`labels.jsonl`, `manifest.json`).
    pub labels: PathBuf,
    /// The base bi-encoder folder to fine-tune.
    pub base: PathBuf,
    pub out: PathBuf,
    pub config: TrainConfig,
    /// What the best model is chosen on.
    pub dev: DevSet,
}

/// Which dev data chooses the best model (`uae train`'s dev flags with the `cli`
/// feature); [`DevChoice::resolve`] is the policy.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct DevChoice {
    /// Evaluate on the first N dev questions only (>= 1; default: all).
    #[cfg_attr(feature = "cli", arg(long, value_parser = uae_core::flags::count()))]
    pub dev_limit: Option<usize>,
    /// Your own dev questions (JSONL with `positives`) over --corpus: the best model
    /// is chosen by their MAP. Default: QASPER dev for labels of QASPER; for labels
    /// of your own corpus, no dev evaluation (the last model is kept) unless this or
    /// --dev-labels names one.
    #[cfg_attr(
        feature = "cli",
        arg(long, requires = "corpus", conflicts_with = "dev_labels")
    )]
    pub dev_questions: Option<PathBuf>,
    /// The corpus of --dev-questions (JSONL or a BEIR folder).
    #[cfg_attr(feature = "cli", arg(long))]
    pub corpus: Option<PathBuf>,
    /// A labelled dev set (a `uae label` folder of held-out questions), for data
    /// without evidence: the best model is chosen by nDCG@10 of each question's
    /// candidates ranked by the model, the LLM's utilities as graded relevance; the
    /// exported model is then calibrated on it (model/calibration.json, see `uae
    /// calibrate`).
    #[cfg_attr(feature = "cli", arg(long))]
    pub dev_labels: Option<PathBuf>,
}

impl DevChoice {
    /// The dev set: `--dev-labels`, else `--dev-questions` over `--corpus`, else none
    /// for labels of your own corpus (QASPER dev says nothing about it), else QASPER
    /// dev from `qasper_dir`.
    pub fn resolve(
        &self,
        labels: &Path,
        qasper_dir: &Path,
    ) -> std::result::Result<DevSet, RunError> {
        let source = match (&self.dev_labels, &self.dev_questions, &self.corpus) {
            (Some(dir), ..) => return DevSet::utility(dir, self.dev_limit),
            (None, Some(q), Some(c)) => uae_data::Source::Files {
                corpus: c.clone(),
                questions: q.clone(),
            },
            _ if uae_artifacts::labels::LabelManifest::names_own_corpus(labels)? => {
                tracing::warn!(
                    "no --dev-questions or --dev-labels: no dev evaluation, the model after the last epoch is kept"
                );
                return Ok(DevSet::None);
            }
            _ => uae_data::Source::Qasper {
                dir: qasper_dir.to_path_buf(),
                split: uae_data::Split::Dev,
            },
        };
        DevSet::retrieval(source.collection()?, self.dev_limit)
    }
}

/// Dev data for choosing the best model.
pub enum DevSet {
    /// Questions with positives over a corpus: retrieval metrics, MAP picks.
    Retrieval(Collection),
    /// Labelled dev questions (a `uae label` folder), for data without evidence:
    /// each question's candidates ranked by the model, nDCG@10 with the LLM's
    /// utilities as graded relevance (negative utilities count 0) picks; the
    /// exported model is then calibrated on them (`model/calibration.json`).
    Utility {
        dir: PathBuf,
        groups: Vec<LabeledGroup>,
    },
    /// No dev evaluation: the model after the last epoch is the one exported.
    None,
}

impl DevSet {
    /// Questions with positives, the first `limit` of them and their scopes'
    /// passages (see [`uae_search::limit_queries`]).
    pub fn retrieval(
        mut coll: Collection,
        limit: Option<usize>,
    ) -> std::result::Result<DevSet, RunError> {
        if let Some(n) = limit {
            uae_search::limit_queries(&mut coll, n);
        }
        if coll.evaluable().count() == 0 {
            return Err(RunError::NoDevPositives { name: coll.name });
        }
        Ok(DevSet::Retrieval(coll))
    }

    /// The first `limit` labelled questions of a label folder.
    pub fn utility(dir: &Path, limit: Option<usize>) -> std::result::Result<DevSet, RunError> {
        let mut groups = LabeledGroup::read_all(dir).map_err(|source| RunError::Labels {
            path: dir.to_path_buf(),
            source,
        })?;
        groups.truncate(limit.unwrap_or(usize::MAX));
        if groups.is_empty() {
            return Err(RunError::NoCandidates {
                path: dir.to_path_buf(),
            });
        }
        Ok(DevSet::Utility {
            dir: dir.to_path_buf(),
            groups,
        })
    }

    pub fn questions(&self) -> usize {
        match self {
            DevSet::Retrieval(c) => c.queries.len(),
            DevSet::Utility { groups, .. } => groups.len(),
            DevSet::None => 0,
        }
    }
}

/// Why a run cannot start, before any work.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("reading labels from {path} (run `uae label` first): {source}")]
    Labels {
        path: PathBuf,
        #[source]
        source: uae_core::Error,
    },
    #[error("{path}: no labeled question has candidates")]
    NoCandidates { path: PathBuf },
    #[error("{name}: no dev question has positives; use --dev-labels for data without evidence")]
    NoDevPositives { name: String },
    #[error("{path}: infonce needs gold candidates; these labels have none (mined? try --positives answer-match)")]
    NoGold { path: PathBuf },
    #[error("{path}: no candidate contains a reference answer (answer-match) or enough of its words (answer-overlap, --min-answer-overlap), so infonce has no positive")]
    NoAnswerMatch { path: PathBuf },
    #[error("{path}: no question has a target, so training would change nothing: {why}")]
    NoTargets { path: PathBuf, why: String },
    #[error("{out}: this run was trained on other labels (LLM {old_lm}, from {old_labels}); these come from LLM {new_lm} in {new_labels}. Use another --out")]
    OtherLabels {
        out: PathBuf,
        old_lm: String,
        old_labels: String,
        new_lm: String,
        new_labels: PathBuf,
    },
    #[error("{out}: this run fine-tunes {old_base}, not {new_base}; use another --out")]
    OtherBase {
        out: PathBuf,
        old_base: String,
        new_base: PathBuf,
    },
    #[error("loading {path} for training: {source}")]
    Base {
        path: PathBuf,
        #[source]
        source: uae_encoder::Error,
    },
    #[error(transparent)]
    Files(#[from] uae_core::Error),
    #[error(transparent)]
    Train(#[from] Error),
    #[error("dev data: {0}")]
    DevData(#[from] uae_data::Error),
    #[error("calibrating the trained model: {0}")]
    Calibrate(uae_search::calibrate::CalibrateError),
}

/// Dev evaluation and progress, as the trainer's hooks.
struct RunHooks<'a> {
    dev: &'a DevSet,
    progress: &'a dyn Progress,
    /// Whether a step has been reported (the first one of a resumed run skips the
    /// steps before it, so the ETA counts only this run's pace).
    stepped: bool,
}

impl Hooks for RunHooks<'_> {
    fn on_step(&mut self, log: &StepLog, total: u64) {
        self.progress.set_total(total);
        if !self.stepped && log.step > 1 {
            self.progress.skip(log.step - 1);
        }
        self.stepped = true;
        self.progress.set(log.step);
        self.progress.message(&format!("loss {:.4}", log.loss));
    }

    fn evaluate(&mut self, enc: &Encoder, epoch: usize) -> Result<Option<(f64, DevScores)>> {
        match self.dev {
            DevSet::Retrieval(dev) => {
                let m = dev_metrics(enc, dev)?;
                tracing::info!(epoch, recall_1 = m.recall_1, map = m.map, "dev");
                Ok(Some((m.map, DevScores::Retrieval(m))))
            }
            DevSet::Utility { groups, .. } => {
                let v = utility_ndcg(enc, groups)?;
                tracing::info!(epoch, utility_ndcg_10 = v, "dev");
                Ok(Some((v, DevScores::Utility { utility_ndcg_10: v })))
            }
            DevSet::None => {
                tracing::info!(epoch, "no dev set: keeping the latest model");
                Ok(None)
            }
        }
    }
}

/// Retrieval metrics of the model being trained on `dev`, from an inference copy
/// that shares its weights (equal to the exported model's, bit for bit).
pub fn dev_metrics(enc: &Encoder, dev: &Collection) -> Result<uae_eval::Metrics> {
    let inf = enc.inference_copy()?;
    let mut t = uae_search::Timings::default();
    let rankings = uae_search::dense_rankings(
        &inf,
        dev,
        BatchOptions::default(),
        &mut t,
        &uae_core::NoProgress,
    )
    .map_err(|e| Error::Dev(e.to_string()))?;
    Ok(uae_eval::score(&dev.passages, &dev.queries, &rankings).1)
}

/// Mean nDCG@10 over labelled questions of the model's ranking of each question's
/// candidates, with utilities as gains (questions with no positive utility are
/// left out; 0 when none is left).
pub fn utility_ndcg(enc: &Encoder, groups: &[LabeledGroup]) -> Result<f64> {
    let inf = enc.inference_copy()?;
    let (mut sum, mut n) = (0.0, 0usize);
    for g in groups.iter().filter(|g| !g.candidates.is_empty()) {
        let mut texts: Vec<&str> = vec![g.question.as_str()];
        texts.extend(g.candidates.iter().map(|c| c.text.as_str()));
        let v = inf.embed(&texts)?;
        let mut order: Vec<(f32, f64)> = v[1..]
            .iter()
            .zip(&g.candidates)
            .map(|(p, c)| (uae_index::dot(&v[0], p), c.utility as f64))
            .collect();
        // Best first; ties keep candidate order.
        order.sort_by(|a, b| b.0.total_cmp(&a.0));
        let gains: Vec<f64> = order.iter().map(|x| x.1).collect();
        if let Some(x) = uae_eval::ndcg_of_gains(&gains, 10) {
            sum += x;
            n += 1;
        }
    }
    Ok(if n == 0 { 0.0 } else { sum / n as f64 })
}

/// Whether a label folder's candidates were chosen without the evidence (mined or
/// retrieved; `--loss auto` then takes the evidence-free target). Labels without a
/// manifest: whether no candidate is marked as evidence.
fn evidence_free(dir: &Path, groups: &[LabeledGroup]) -> bool {
    match LabelManifest::read(dir) {
        Ok(Some(m)) => m.config.candidates != CandidateMode::Gold,
        _ => !any_positive(groups),
    }
}

/// Whether any candidate of `groups` is marked as a positive (`is_gold`).
fn any_positive(groups: &[LabeledGroup]) -> bool {
    groups
        .iter()
        .any(|g| g.candidates.iter().any(|c| c.is_gold))
}

/// Marks as positives (`is_gold`) the candidates that contain a reference answer
/// and, with `min_utility`, lower the answer's NLL by at least that many nats.
pub fn answer_match(groups: &mut [LabeledGroup], min_utility: Option<f32>) {
    for g in groups {
        for c in &mut g.candidates {
            c.is_gold = uae_eval::f1::contains_answer(&c.text, &g.answers)
                && min_utility.is_none_or(|m| c.utility >= m);
        }
    }
}

/// Marks as positives each question's candidates with the highest
/// [`uae_eval::f1::answer_overlap`] (IDF over every distinct candidate passage), where
/// it is at least `min_overlap` and, with `min_utility`, the candidate lowers the
/// answer's NLL by at least that many nats.
pub fn answer_overlap(groups: &mut [LabeledGroup], min_overlap: f32, min_utility: Option<f32>) {
    let mut texts: Vec<&str> = groups
        .iter()
        .flat_map(|g| g.candidates.iter().map(|c| c.text.as_str()))
        .collect();
    texts.sort_unstable();
    texts.dedup();
    let idf = uae_eval::f1::TokenIdf::new(texts);
    for g in groups {
        let overlap: Vec<f64> = g
            .candidates
            .iter()
            .map(|c| uae_eval::f1::answer_overlap(&c.text, &g.answers, &idf).unwrap_or(0.0))
            .collect();
        let best = overlap.iter().copied().fold(0.0, f64::max);
        for (c, o) in g.candidates.iter_mut().zip(overlap) {
            c.is_gold = best > 0.0
                && o >= best
                && o >= min_overlap as f64
                && min_utility.is_none_or(|m| c.utility >= m);
        }
    }
}

/// The labels to train on and the config made concrete for them (`--loss auto`),
/// positives marked where the loss wants answer-match; an error when they hold
/// nothing to train on.
fn training_labels(
    r: &TrainRun,
) -> std::result::Result<(TrainConfig, Vec<LabeledGroup>), RunError> {
    let mut groups = LabeledGroup::read_all(&r.labels).map_err(|source| RunError::Labels {
        path: r.labels.clone(),
        source,
    })?;
    let config = r.config.resolve(evidence_free(&r.labels, &groups));
    let uses_positives = matches!(config.loss, LossKind::Infonce | LossKind::Hybrid);
    let from_answers = uses_positives && config.positives.from_answers();
    match config.positives {
        _ if !uses_positives => {}
        Positives::Gold => {}
        Positives::AnswerMatch => answer_match(&mut groups, config.min_match_utility),
        Positives::AnswerOverlap => answer_overlap(
            &mut groups,
            config.min_answer_overlap,
            config.min_match_utility,
        ),
    }
    if !groups.iter().any(|g| !g.candidates.is_empty()) {
        return Err(RunError::NoCandidates {
            path: r.labels.clone(),
        });
    }
    // `auto` without a single positive falls back to the utility bar (`fit_auto`):
    // only a loss asked for by name needs positives somewhere.
    if uses_positives && r.config.loss != LossKind::Auto && !any_positive(&groups) {
        let path = r.labels.clone();
        return Err(if from_answers {
            RunError::NoAnswerMatch { path }
        } else {
            RunError::NoGold { path }
        });
    }
    Ok((fit_auto(&r.config, config, &groups), groups))
}

/// `--loss auto` on evidence-free labels: answer-overlap positives, or the utility bar
/// alone where no question has one ([`TrainConfig::utility_only`]); with a bar given,
/// the answer-match positives stay only where the bar reaches fewer questions than
/// they do ([`TrainConfig::fit_to_reach`]).
fn fit_auto(asked: &TrainConfig, config: TrainConfig, groups: &[LabeledGroup]) -> TrainConfig {
    if asked.loss != LossKind::Auto {
        return config;
    }
    if config.loss == LossKind::Infonce {
        if any_positive(groups) {
            tracing::info!("--loss auto: answer-overlap positives (infonce)");
            return config;
        }
        tracing::info!(
            "--loss auto: no candidate holds enough of a reference answer to be a \
             positive: the utility bar alone"
        );
        return TrainConfig {
            positives: asked.positives,
            ..config.utility_only()
        };
    }
    if config.loss != LossKind::Hybrid {
        return config;
    }
    // Each signal's reach, by the rule the loss applies (the candidates a batch holds).
    let reach = |loss| {
        TargetCounts::of(
            groups,
            &TrainConfig {
                loss,
                ..config.clone()
            },
        )
    };
    let sure = reach(LossKind::Uae).utility;
    let matched = reach(LossKind::Infonce).positives;
    let fitted = config.fit_to_reach(asked, sure, matched);
    tracing::info!(
        bar_reaches = sure,
        answer_match_reaches = matched,
        "--loss auto: {}",
        if fitted.loss == LossKind::Uae {
            "the utility bar reaches at least as many questions as answer-match: the bar alone"
        } else {
            "the utility bar reaches fewer questions than answer-match: answer-match positives where it drops them"
        }
    );
    fitted
}

/// Why no question of `groups` has a target under `config` (see [`TargetCounts`]).
fn no_target_why(groups: &[LabeledGroup], config: &TrainConfig) -> String {
    let best = groups
        .iter()
        .flat_map(|g| g.candidates.iter().map(|c| c.utility))
        .fold(f32::NEG_INFINITY, f32::max);
    let positives = if config.loss == LossKind::Hybrid {
        " and none has a positive"
    } else {
        ""
    };
    if config.loss != LossKind::Infonce {
        match (config.min_utility, config.min_gap) {
            (Some(bar), None) => {
                return format!(
                    "no question's best candidate reaches --min-utility {bar} nats (the \
                     highest is {best:.2}){positives}; lower the bar (`summary.json`'s \
                     questions_best_utility_at_least says how many questions each bar keeps)"
                )
            }
            (bar, Some(gap)) => {
                let both = bar
                    .map(|b| format!(" and reaches --min-utility {b}"))
                    .unwrap_or_default();
                return format!(
                    "no question's best candidate is --min-gap {gap} nats ahead of its \
                     second{both}{positives}; lower the bars (`summary.json`'s \
                     questions_best_gap_at_least says how many questions each gap keeps)"
                );
            }
            (None, None) => {}
        }
    }
    // Without a bar every question with a candidate has a utility target, and a loss
    // that needs positives was refused before; what is left is margin-mse, whose
    // margins need two candidates.
    "--loss margin-mse needs two candidates for a question".to_string()
}

/// Runs (or resumes) a training run; returns where it ended.
pub fn run(r: &TrainRun, progress: &dyn Progress) -> std::result::Result<TrainState, RunError> {
    let (config, groups) = training_labels(r)?;
    // What the bar and the positives leave to learn from, before the first step.
    let targets = TargetCounts::of(&groups, &config);
    tracing::info!(
        questions = targets.questions,
        utility = targets.utility,
        positives = targets.positives,
        none = targets.none,
        "targets (none: only negatives for the others)"
    );
    if targets.utility + targets.positives == 0 {
        return Err(RunError::NoTargets {
            path: r.labels.clone(),
            why: no_target_why(&groups, &config),
        });
    }
    let (labels_lm, labels_fp) = fingerprint(&r.labels, &groups);
    let base_error = |source| RunError::Base {
        path: r.base.clone(),
        source,
    };
    let mut enc = Encoder::load(&r.base, &uae_encoder::Device::Cpu, true).map_err(base_error)?;
    enc.model
        .set_bf16_gemms(config.mixed_precision)
        .map_err(base_error)?;
    // One writer per folder: two trainings would overwrite each other's checkpoints.
    let _lock = uae_core::fs::FolderLock::acquire(&r.out)?;
    // Resuming on other labels would silently train a mixture.
    if let Some(old) = TrainManifest::<serde_json::Value>::read(&r.out)? {
        if old.labels_fingerprint != labels_fp {
            return Err(RunError::OtherLabels {
                out: r.out.clone(),
                old_lm: old.labels_lm_sha256,
                old_labels: old.labels,
                new_lm: labels_lm,
                new_labels: r.labels.clone(),
            });
        }
        if Path::new(&old.base) != r.base {
            return Err(RunError::OtherBase {
                out: r.out.clone(),
                old_base: old.base,
                new_base: r.base.clone(),
            });
        }
    }
    TrainManifest {
        version: env!("CARGO_PKG_VERSION").into(),
        labels: r.labels.display().to_string(),
        labels_lm_sha256: labels_lm,
        labels_fingerprint: labels_fp,
        base: r.base.display().to_string(),
        config: config.clone(),
        dev_questions: r.dev.questions(),
    }
    .write(&r.out)?;
    progress.start("training", 0);
    let mut hooks = RunHooks {
        dev: &r.dev,
        progress,
        stepped: false,
    };
    if config != r.config {
        tracing::info!(
            loss = ?config.loss,
            positives = ?config.positives,
            min_utility = ?config.min_utility,
            gold_weight = config.gold_weight,
            "--loss auto"
        );
    }
    let mut state = train(&enc, &r.base, &groups, &config, &r.out, &mut hooks)?;
    state.targets = Some(targets);
    progress.finish();
    write_curves(&r.out)?;
    // Held-out labels say what the trained model's scores are worth: calibrate it.
    if let DevSet::Utility {
        dir,
        groups: dev_groups,
    } = &r.dev
    {
        let model = r.out.join("model");
        // The training questions' no-context NLLs also fit p(helps)'s question term
        // when the two folders share an LLM and template.
        let difficulty: &[LabeledGroup] = match uae_search::calibrate::same_llm(dir, &r.labels) {
            Ok(true) => &groups,
            _ => &[],
        };
        let c = uae_search::calibrate::Calibration {
            model: &model,
            labels: dir,
            groups: dev_groups,
            difficulty,
            out: &model,
            question_term: true,
        };
        match uae_search::calibrate::calibrate(&c, progress) {
            Ok(c) => tracing::info!(ece = c.ece, brier = c.brier, "calibrated on the dev labels"),
            Err(uae_search::calibrate::CalibrateError::TooFew(e)) => {
                tracing::warn!("not calibrated: {e}")
            }
            Err(e) => return Err(RunError::Calibrate(e)),
        }
    }
    Ok(state)
}

/// `loss.svg` (per-step loss and its 10-step moving average) and `dev.svg` (dev R@1
/// and MAP at each evaluation), drawn from `metrics.jsonl`.
pub fn write_curves(out: &Path) -> uae_core::Result<()> {
    use uae_plot::{lines_svg, Series};
    let (mut loss, mut r1, mut map) = (Vec::new(), Vec::new(), Vec::new());
    let mut picked_by = "dev MAP";
    for line in MetricsLine::read_all(&out.join(MetricsLine::FILE))? {
        match line {
            MetricsLine::Step(s) => loss.push((s.step as f64, s.loss as f64)),
            MetricsLine::Dev(d) => {
                let step = d.step as f64;
                match d.dev {
                    DevScores::Retrieval(m) => {
                        map.push((step, m.map));
                        r1.push((step, m.recall_1));
                    }
                    DevScores::Utility { utility_ndcg_10 } => {
                        picked_by = "dev utility-nDCG@10";
                        map.push((step, utility_ndcg_10));
                    }
                }
            }
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
            name: picked_by,
            color: "#ff7f0e",
            values: map,
        },
    ];
    for (name, series) in [("loss", &loss), ("dev", &dev)] {
        uae_core::fs::atomic_write(
            &out.join(format!("{name}.svg")),
            lines_svg("optimizer step", series).as_bytes(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use uae_artifacts::labels::LabeledCandidate;

    fn candidate(text: &str, utility: f32) -> LabeledCandidate {
        LabeledCandidate {
            passage_id: text.into(),
            text: text.into(),
            is_gold: false,
            source: "mined".into(),
            utility,
            per_answer: vec![utility],
        }
    }

    /// A question `id` ("id?") with one reference answer and these candidates.
    fn group(id: &str, answer: &str, candidates: Vec<LabeledCandidate>) -> LabeledGroup {
        LabeledGroup {
            question_id: id.into(),
            paper_id: String::new(),
            question: format!("{id}?"),
            answers: vec![answer.into()],
            nll_without: vec![3.0],
            candidates,
        }
    }

    /// Which of `group`'s candidates `mark` makes positives.
    fn marked(group: &LabeledGroup, mark: impl FnOnce(&mut [LabeledGroup])) -> Vec<bool> {
        let mut g = vec![group.clone()];
        mark(&mut g);
        g[0].candidates.iter().map(|c| c.is_gold).collect()
    }

    /// A candidate holding the answer is a positive; with a bar, only where the LLM
    /// gains at least that much from it.
    #[test]
    fn answer_match_can_ask_the_llm_to_agree() {
        let group = group(
            "Which dataset",
            "SQuAD",
            vec![
                candidate("We train on SQuAD.", 1.5),
                candidate("SQuAD is mentioned in passing.", -0.3),
                candidate("Nothing here.", 2.0),
            ],
        );
        let marks = |min: Option<f32>| marked(&group, |g| answer_match(g, min));
        assert_eq!(marks(None), [true, true, false]);
        assert_eq!(marks(Some(0.5)), [true, false, false]);
        assert_eq!(marks(Some(-1.0)), [true, true, false]);
    }

    /// Answer-overlap: the candidate(s) holding the most of the answer's weighted
    /// words, where that reaches the bar; a list answer found apart counts, where
    /// answer-match finds nothing. With `min_utility`, the LLM must agree.
    #[test]
    fn answer_overlap_marks_the_best_overlap() {
        let group = group(
            "Which datasets",
            "SQuAD, TriviaQA",
            vec![
                candidate("We use TriviaQA and, later, SQuAD.", 1.5),
                candidate("SQuAD is mentioned in passing.", -0.3),
                candidate("Nothing here.", 2.0),
                candidate("TriviaQA then SQuAD, again.", 0.2),
            ],
        );
        let marks = |min_overlap: f32, min_utility: Option<f32>| {
            marked(&group, |g| answer_overlap(g, min_overlap, min_utility))
        };
        assert_eq!(marks(0.5, None), [true, false, false, true]);
        assert_eq!(marks(1.0, None), [true, false, false, true]);
        assert_eq!(marks(0.5, Some(1.0)), [true, false, false, false]);
        assert_eq!(
            marked(&group, |g| answer_match(g, None)),
            [false; 4],
            "the joined list is in no passage"
        );
        // Where no candidate holds all of it, the best share must clear the bar.
        let half = LabeledGroup {
            candidates: vec![group.candidates[1].clone(), group.candidates[2].clone()],
            ..group.clone()
        };
        assert_eq!(marked(&half, |g| answer_overlap(g, 0.9, None)), [false; 2]);
        assert_eq!(
            marked(&half, |g| answer_overlap(g, 0.1, None)),
            [true, false]
        );
    }

    /// What each evidence-free recipe trains on mined labels: the LLM is sure of one
    /// question (best 2.5 nats), a second has a candidate holding its answer but
    /// gains under the bar, a third has neither; a fourth has no candidates.
    #[test]
    fn target_counts_say_what_the_bar_leaves() {
        let mut groups = vec![
            group(
                "sure",
                "BLEU",
                vec![candidate("We report BLEU.", 2.5), candidate("x", 0.1)],
            ),
            group(
                "match",
                "SQuAD",
                vec![candidate("On SQuAD.", 0.7), candidate("y", 0.9)],
            ),
            group(
                "none",
                "42",
                vec![candidate("z", 1.2), candidate("w", -0.4)],
            ),
            group("empty", "a", vec![]),
        ];
        answer_match(&mut groups, None);
        let counts = |c: TrainConfig| TargetCounts::of(&groups, &c.resolve(true));
        let n = |questions, utility, positives, none| TargetCounts {
            questions,
            utility,
            positives,
            none,
        };
        // `auto` trains on the positives marked (here answer-match's: "sure" holds
        // BLEU, "match" SQuAD); with a bar given, the utility recipe.
        assert_eq!(counts(TrainConfig::default()), n(3, 0, 2, 1), "auto");
        let bar2 = TrainConfig {
            min_utility: Some(2.0),
            ..TrainConfig::default()
        };
        assert_eq!(counts(bar2.clone()), n(3, 1, 1, 1), "auto --min-utility 2");
        let uae = TrainConfig {
            loss: LossKind::Uae,
            min_utility: Some(2.0),
            ..TrainConfig::default()
        };
        assert_eq!(counts(uae.clone()), n(3, 1, 0, 2), "uae --min-utility 2");
        let all = TrainConfig {
            min_utility: Some(0.5),
            ..uae
        };
        assert_eq!(counts(all), n(3, 3, 0, 0), "uae --min-utility 0.5");
        let am = TrainConfig {
            loss: LossKind::Infonce,
            positives: Positives::AnswerMatch,
            ..TrainConfig::default()
        };
        assert_eq!(
            counts(am),
            n(3, 0, 2, 1),
            "infonce --positives answer-match"
        );
        // `auto` with a bar counts each signal's reach: the bar reaches 1 question,
        // answer-match 2, so the positives stay; a bar of 0.5 reaches all 3: the bar
        // alone.
        let fitted = |asked: TrainConfig| fit_auto(&asked, asked.resolve(true), &groups).loss;
        assert_eq!(fitted(TrainConfig::default()), LossKind::Infonce);
        assert_eq!(fitted(bar2), LossKind::Hybrid);
        let low = TrainConfig {
            min_utility: Some(0.5),
            ..TrainConfig::default()
        };
        assert_eq!(fitted(low), LossKind::Uae);
        // Without a single positive (every answer yes or no), `auto` falls back to
        // the utility bar alone.
        let mut yes_no = groups.clone();
        for g in &mut yes_no {
            g.answers = vec!["Yes".into()];
        }
        answer_overlap(&mut yes_no, 0.5, None);
        let alone = fit_auto(
            &TrainConfig::default(),
            TrainConfig::default().resolve(true),
            &yes_no,
        );
        assert_eq!(alone, TrainConfig::default().utility_only());
        assert_eq!(TargetCounts::of(&yes_no, &alone), n(3, 1, 0, 2));
        // A bar on each question's scale: best ahead of second by 2.4, 0.2 and 1.6.
        let gap = |g| TrainConfig {
            loss: LossKind::Uae,
            min_gap: Some(g),
            ..TrainConfig::default()
        };
        assert_eq!(counts(gap(1.0)), n(3, 2, 0, 1), "uae --min-gap 1");
        assert_eq!(counts(gap(3.0)), n(3, 0, 0, 3), "uae --min-gap 3");
        assert!(no_target_why(&groups, &gap(3.0)).contains("--min-gap 3 nats ahead"));
        assert!(no_target_why(&groups, &gap(3.0)).contains("questions_best_gap_at_least"));
        // `auto --min-gap 1`: the gap alone reaches 2, as answer-match does.
        let auto_gap = TrainConfig {
            min_gap: Some(1.0),
            ..TrainConfig::default()
        };
        assert_eq!(fitted(auto_gap), LossKind::Uae);
    }
}
