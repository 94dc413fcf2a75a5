//! The files that pass between stages. Each has one owning type here with one
//! writer and one reader, so no stage reads another's file back by string keys:
//!
//! | file | owner | written by | read by |
//! |---|---|---|---|
//! | `LABELS/labels.jsonl` | [`labels::LabeledGroup`] | label | train, bench, calibrate |
//! | `LABELS/candidates.jsonl` | [`labels::MinedRow`] | label | label (resume) |
//! | `LABELS/manifest.json` | [`labels::LabelManifest`] | label | label (resume), train (fingerprint), compare |
//! | `LABELS/summary.json` | [`labels::LabelSummary`] | label, merge | merge, people |
//! | `LABELS/scores.jsonl` | [`scores::ScoreRecord`] | label | label (resume, reuse), merge |
//! | `LABELS/truncations.jsonl` | [`scores::Truncation`] | label (remote) | label (resume), merge |
//! | `LABELS/score-plan.json` | [`scores::ScorePlan`] | label | label (resume) |
//! | `RUN/manifest.json` | [`train::TrainManifest`] | train | train (resume guard) |
//! | `RUN/metrics.jsonl` | [`train::MetricsLine`] | train | train (resume, curves) |
//! | `RUN/ckpt.json` | [`train::CheckpointPointer`] | train | train (resume) |
//! | `RUN/ckpt-*/state.json` (+ weights, moments) | [`train::CheckpointState`] | train | train (resume) |
//! | `MODEL/calibration.json` | [`calibration::CalibrationFile`] | calibrate, train | serve |
//! | `cache/emb-KEY.bin` | [`embeddings::EmbeddingCache`] | search | search |
//!
//! Owned above this crate, because their types live there: an eval folder's
//! `report.json`, `run.trec` and `qrels.trec` (`uae_search::EvalReport`, with the
//! TREC readers in `uae_eval`), the benchmark's `table.json` (`uae_bench`). The test
//! `every_file_of_a_run_has_an_owner` (crates/cli/tests/your_data.rs) reads every
//! file of a label, train and eval folder through its owner. JSONL stores are
//! versioned by their folder's manifest; single JSON files carry a `version`.
//!
//! No ML dependencies: reading a label folder does not pull in candle.

pub mod calibration;
pub mod embeddings;
pub mod labels;
pub mod scores;
pub mod train;

pub use uae_core::{Error, Result};
