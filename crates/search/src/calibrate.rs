//! Fitting a model's calibration on labelled held-out questions: each candidate's
//! cosine to its question under the model, against its utility.

use crate::{load_encoder, Result};
use std::path::Path;
use uae_artifacts::calibration::CalibrationFile;
use uae_artifacts::labels::LabeledGroup;
use uae_core::Progress;
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

/// The (cosine, utility) pairs of every labelled candidate under the model in
/// `model_dir`.
pub fn score_pairs(
    model_dir: &Path,
    groups: &[LabeledGroup],
    progress: &dyn Progress,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let enc = load_encoder(model_dir, false)?;
    let (mut scores, mut utilities) = (Vec::new(), Vec::new());
    progress.start("scoring labelled candidates", groups.len() as u64);
    for (i, g) in groups
        .iter()
        .enumerate()
        .filter(|(_, g)| !g.candidates.is_empty())
    {
        let mut texts: Vec<&str> = vec![g.question.as_str()];
        texts.extend(g.candidates.iter().map(|c| c.text.as_str()));
        let mut v = enc.embed(&texts)?;
        for x in &mut v {
            let n = x.iter().map(|a| a * a).sum::<f32>().sqrt();
            if n > 0.0 {
                x.iter_mut().for_each(|a| *a /= n);
            }
        }
        for (p, c) in v[1..].iter().zip(&g.candidates) {
            scores.push(uae_index::dot(&v[0], p));
            utilities.push(c.utility);
        }
        progress.set(i as u64 + 1);
    }
    progress.finish();
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
    let (scores, utilities) = score_pairs(model_dir, groups, progress)?;
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
