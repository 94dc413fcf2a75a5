//! The files that pass between stages. Each has one owning type here with one
//! writer and one reader, so no stage reads another's file back by string keys:
//!
//! | file | owner | written by | read by |
//! |---|---|---|---|
//! | `LABELS/labels.jsonl` | [`labels::LabeledGroup`] | label | train, bench |
//! | `LABELS/candidates.jsonl` | [`labels::MinedRow`] | label | label (resume) |
//! | `LABELS/manifest.json` | [`labels::LabelManifest`] | label | label (resume), train (fingerprint) |
//! | `LABELS/summary.json` | [`labels::LabelSummary`] | label | people |
//! | `RUN/manifest.json` | [`train::TrainManifest`] | train | train (resume guard) |
//! | `RUN/metrics.jsonl` | [`train::MetricsLine`] | train | train (resume, curves) |
//! | `MODEL/calibration.json` | [`calibration::CalibrationFile`] | calibrate, train | serve |
//! | `cache/emb-KEY.bin` | [`embeddings::EmbeddingCache`] | search | search |
//!
//! No ML dependencies: reading a label folder does not pull in candle.

pub mod calibration;
pub mod embeddings;
pub mod labels;
pub mod train;

pub use uae_core::{Error, Result};
