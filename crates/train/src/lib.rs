//! Training utility-aligned bi-encoders: losses, optimizer, the loop, and a whole
//! run (resume guard, dev evaluation, curves).

pub mod loss;
pub mod optim;
pub mod run;
pub mod trainer;

pub use loss::{batch_loss, Batch, LossKind};
pub use optim::{linear_schedule, AdamW, AdamWConfig};
pub use run::{dev_metrics, run, write_curves, RunError, TrainRun};
pub use trainer::{epoch_order, export, train, Hooks, StepLog, TrainConfig, TrainState};
