//! `MODEL/calibration.json`: what a model's scores are worth to the LLM, fitted on
//! held-out labelled questions (`uae calibrate`, or `uae train --dev-labels` at the
//! end of training); read by `uae serve` to give each hit its expected utility.

use serde::{Deserialize, Serialize};
use std::path::Path;
use uae_core::{Error, Result};
use uae_eval::calibrate::{Bin, Calibrator};

/// The calibration of one model folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationFile {
    /// Format version (1).
    pub version: u32,
    /// What the maps take: the model's cosine of a question and a passage.
    pub score: String,
    /// The label folder fitted on, and its questions and candidates.
    pub labels: String,
    pub questions: usize,
    /// A passage "helps" when its utility is at least this many nats.
    pub helps_nats: f32,
    pub calibrator: Calibrator,
    /// In-sample calibration of p(helps): expected calibration error (10 bins),
    /// Brier score, and the reliability diagram's bins.
    pub ece: f64,
    pub brier: f64,
    pub bins: Vec<Bin>,
}

impl CalibrationFile {
    pub const FILE: &'static str = "calibration.json";
    pub const VERSION: u32 = 1;

    /// The calibration in a model folder, if there is one.
    pub fn read(model_dir: &Path) -> Result<Option<CalibrationFile>> {
        let path = model_dir.join(Self::FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
        let file: CalibrationFile = serde_json::from_str(&text).map_err(|e| Error::Corrupt {
            path: path.clone(),
            line: e.line(),
            message: e.to_string(),
        })?;
        if file.version != Self::VERSION {
            return Err(Error::Corrupt {
                path,
                line: 1,
                message: format!(
                    "calibration version {} (this uae reads {})",
                    file.version,
                    Self::VERSION
                ),
            });
        }
        Ok(Some(file))
    }

    pub fn write(&self, model_dir: &Path) -> Result<()> {
        uae_core::fs::write_json(&model_dir.join(Self::FILE), self)
    }
}
