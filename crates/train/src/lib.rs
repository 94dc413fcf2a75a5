//! Training utility-aligned bi-encoders: losses, optimizer, and the loop.

pub mod loss;
pub mod optim;
pub mod trainer;

pub use loss::{batch_loss, Batch, LossKind};
pub use optim::{linear_schedule, AdamW, AdamWConfig};
pub use trainer::{epoch_order, export, train, Hooks, StepLog, TrainConfig, TrainState};
