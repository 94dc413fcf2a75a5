//! Training objectives for utility-aligned bi-encoders.

pub mod loss;

pub use loss::{batch_loss, Batch, LossKind};
