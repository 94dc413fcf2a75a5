//! Fitting a model's calibration on labelled held-out questions: each candidate's
//! cosine to its question under the model, against its utility.

use crate::{load_encoder, Result};
use std::path::Path;
use uae_artifacts::calibration::CalibrationFile;
use uae_artifacts::labels::LabeledGroup;
use uae_core::Progress;
use uae_encoder::Encoder;
use uae_eval::calibrate::{brier, ece, Calibrator, HELPS_NATS};

/// Why a calibration cannot be fitted.
#[derive(Debug, thiserror::Error)]
#[error(
    "{labels}: {pairs} scored candidates with finite utilities; a calibration needs at least 10"
)]
pub struct TooFewPairs {
    pub labels: String,
    pub pairs: usize,
}

/// The (cosine, utility) pairs of every labelled candidate under `enc`. Questions
/// and candidates are embedded together, in length-sorted batches.
pub fn score_pairs(
    enc: &Encoder,
    groups: &[LabeledGroup],
    progress: &dyn Progress,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let groups: Vec<&LabeledGroup> = groups.iter().filter(|g| !g.candidates.is_empty()).collect();
    let mut texts: Vec<&str> = Vec::new();
    for g in &groups {
        texts.push(g.question.as_str());
        texts.extend(g.candidates.iter().map(|c| c.text.as_str()));
    }
    let mut v = crate::embed_texts(
        enc,
        &texts,
        uae_encoder::BatchOptions::default(),
        "scoring labelled candidates",
        progress,
    )?;
    for x in &mut v {
        let n = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        if n > 0.0 {
            x.iter_mut().for_each(|a| *a /= n);
        }
    }
    let (mut scores, mut utilities) = (Vec::new(), Vec::new());
    let mut at = 0;
    for g in groups {
        let q = &v[at];
        for (p, c) in v[at + 1..].iter().zip(&g.candidates) {
            scores.push(uae_index::dot(q, p));
            utilities.push(c.utility);
        }
        at += 1 + g.candidates.len();
    }
    Ok((scores, utilities))
}

/// Fits the calibration of `model_dir` on the label folder `labels` (its groups
/// `groups`) and writes it to `out/calibration.json` (`out` is usually the model
/// folder itself).
pub fn calibrate(
    model_dir: &Path,
    labels: &Path,
    groups: &[LabeledGroup],
    out: &Path,
    progress: &dyn Progress,
) -> std::result::Result<CalibrationFile, CalibrateError> {
    let enc = load_encoder(model_dir, false)?;
    let (scores, utilities) = score_pairs(&enc, groups, progress)?;
    let fitted = Calibrator::fit(&scores, &utilities).ok_or_else(|| TooFewPairs {
        labels: labels.display().to_string(),
        pairs: scores.len(),
    })?;
    let probs: Vec<f64> = scores.iter().map(|&s| fitted.p_helps.predict(s)).collect();
    let helps: Vec<bool> = utilities.iter().map(|&u| u >= HELPS_NATS).collect();
    let (e, bins) = ece(&probs, &helps, 10);
    let file = CalibrationFile {
        version: CalibrationFile::VERSION,
        score: "cosine".into(),
        labels: labels.display().to_string(),
        questions: groups.len(),
        helps_nats: HELPS_NATS,
        calibrator: fitted,
        ece: e,
        brier: brier(&probs, &helps),
        bins,
    };
    file.write(out).map_err(crate::Error::from)?;
    Ok(file)
}

/// What `uae calibrate` prints: where the file went and how the fit went.
#[derive(Debug, serde::Serialize)]
pub struct CalibrationSummary {
    pub calibration: std::path::PathBuf,
    pub pairs: usize,
    pub questions: usize,
    /// `isotonic` or `logistic`: the p(helps) map kept.
    pub p_helps_map: &'static str,
    /// Held-out log loss of the isotonic and the logistic p(helps) map.
    pub held_out_log_loss_isotonic: f64,
    pub held_out_log_loss_logistic: f64,
    pub ece: f64,
    pub brier: f64,
}

impl CalibrationSummary {
    /// The summary of `file`, written into `out`.
    pub fn of(file: &CalibrationFile, out: &Path) -> CalibrationSummary {
        let (iso, logistic) = file.calibrator.held_out_log_loss;
        CalibrationSummary {
            calibration: out.join(CalibrationFile::FILE),
            pairs: file.calibrator.pairs,
            questions: file.questions,
            p_helps_map: match file.calibrator.p_helps {
                uae_eval::calibrate::HelpsMap::Isotonic(_) => "isotonic",
                uae_eval::calibrate::HelpsMap::Logistic(_) => "logistic",
            },
            held_out_log_loss_isotonic: iso,
            held_out_log_loss_logistic: logistic,
            ece: file.ece,
            brier: file.brier,
        }
    }
}

/// Why [`calibrate`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error(transparent)]
    Search(#[from] crate::Error),
    #[error(transparent)]
    TooFew(#[from] TooFewPairs),
}

/// How well a model's calibration predicts on labelled questions it was not fitted
/// on (`uae eval --labels`): p(helps) against whether each candidate helped.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CalibrationCheck {
    /// The held-out label folder, and what the calibration was fitted on.
    pub labels: String,
    pub calibrated_on: String,
    pub questions: usize,
    pub pairs: usize,
    /// Share of the pairs that help (utility >= `helps_nats`).
    pub helped: f64,
    /// p(helps): expected calibration error (10 equal bins), Brier score, log loss.
    pub ece: f64,
    pub brier: f64,
    pub log_loss: f64,
    /// Mean |expected utility - utility| in nats.
    pub utility_mae: f64,
    pub bins: Vec<uae_eval::calibrate::Bin>,
}

impl std::fmt::Display for CalibrationCheck {
    /// One line: where it was fitted and checked, and how well it predicts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "calibration (fitted on {}) on {}: {} pairs, ECE {:.4}, Brier {:.4}, log loss {:.4}, expected utility off by {:.3} nats on average",
            self.calibrated_on, self.labels, self.pairs, self.ece, self.brier, self.log_loss, self.utility_mae
        )
    }
}

impl CalibrationCheck {
    /// The reliability diagram, beside the report.
    pub const SVG: &'static str = "reliability.svg";
}

/// Checks `file` (the calibration of the model `enc` holds) on the held-out label
/// folder `labels` (its groups `groups`) and writes the reliability diagram into
/// `out`.
pub fn check(
    enc: &Encoder,
    file: &CalibrationFile,
    labels: &Path,
    groups: &[LabeledGroup],
    out: &Path,
    progress: &dyn Progress,
) -> Result<CalibrationCheck> {
    let (scores, utilities) = score_pairs(enc, groups, progress)?;
    let (mut probs, mut helps, mut abs_err) = (Vec::new(), Vec::new(), 0.0);
    for (&s, &u) in scores.iter().zip(&utilities) {
        if !(s.is_finite() && u.is_finite()) {
            continue;
        }
        let (expected, p) = file.calibrator.predict(s);
        probs.push(p);
        helps.push(u >= file.helps_nats);
        abs_err += (expected - u as f64).abs();
    }
    let n = probs.len();
    let (e, bins) = ece(&probs, &helps, 10);
    let svg = reliability_svg(&bins);
    let path = out.join(CalibrationCheck::SVG);
    std::fs::write(&path, svg).map_err(uae_core::Error::io(&path))?;
    Ok(CalibrationCheck {
        labels: labels.display().to_string(),
        calibrated_on: file.labels.clone(),
        questions: groups.iter().filter(|g| !g.candidates.is_empty()).count(),
        pairs: n,
        helped: helps.iter().filter(|&&h| h).count() as f64 / n.max(1) as f64,
        ece: e,
        brier: brier(&probs, &helps),
        log_loss: uae_eval::calibrate::log_loss(&probs, &helps),
        utility_mae: abs_err / n.max(1) as f64,
        bins,
    })
}

/// Observed share helping against mean predicted p(helps), per bin, beside the
/// diagonal of a perfect calibration.
pub fn reliability_svg(bins: &[uae_eval::calibrate::Bin]) -> String {
    let observed: Vec<(f64, f64)> = bins
        .iter()
        .map(|b| (b.mean_predicted, b.observed))
        .collect();
    uae_plot::lines_svg(
        "predicted p(helps) (y: share that helped)",
        &[
            uae_plot::Series {
                name: "perfect",
                color: "#999999",
                values: vec![(0.0, 0.0), (1.0, 1.0)],
            },
            uae_plot::Series {
                name: "observed",
                color: "#4c78a8",
                values: observed,
            },
        ],
    )
}
