//! Training utility-aligned bi-encoders: losses, optimizer, the loop, and a whole
//! run (resume guard, dev evaluation, curves).

pub mod loss;
pub mod optim;
pub mod run;
pub mod step;
pub mod trainer;

pub use loss::{batch_loss, Batch, LossKind, LossParams, Target, UtilityNorm};
pub use optim::{linear_schedule, AdamW, AdamWConfig};
pub use run::{
    answer_match, dev_metrics, run, utility_ndcg, write_curves, DevChoice, DevSet, RunError,
    TrainRun,
};
pub use trainer::{
    epoch_order, export, interpolate, train, EvidenceFree, Hooks, Positives, StepLog, TargetCounts,
    TrainConfig, TrainState, EVIDENCE_FREE,
};
