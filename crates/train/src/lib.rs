//! Training objectives for utility-aligned bi-encoders.

pub mod loss;
pub mod optim;

pub use loss::{batch_loss, Batch, LossKind};
pub use optim::{linear_schedule, AdamW, AdamWConfig};
