//! Benchmarks as libraries: [`qasper`] (the table: retrieval metrics, Token F1 of
//! the LLM's answers, latency, LLM re-rankers) and [`speed`] (encoder, LLM scoring
//! and training throughput). The binary only parses flags and prints.

pub mod mine;
pub mod qasper;
pub mod selection;
pub mod serve;
pub mod speed;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {message}")]
    Invalid { what: &'static str, message: String },
    #[error("no {split} question has gold evidence")]
    NoEvaluableQuestions { split: String },
    #[error("building a one-thread pool: {0}")]
    ThreadPool(String),
    #[error(transparent)]
    Files(#[from] uae_core::Error),
    #[error(transparent)]
    Search(#[from] uae_search::Error),
    #[error(transparent)]
    Encoder(#[from] uae_encoder::Error),
    #[error(transparent)]
    Lm(#[from] uae_lm::Error),
    #[error(transparent)]
    Rag(#[from] uae_rag::Error),
    #[error(transparent)]
    Eval(#[from] uae_eval::Error),
    #[error(transparent)]
    Train(#[from] uae_train::trainer::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
