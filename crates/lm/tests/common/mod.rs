//! What the LLM tests share: the repository root, loading a model, fixture values.

#![allow(dead_code, clippy::unwrap_used)] // each test file uses some of it

use std::path::PathBuf;
use uae_lm::{CausalLm, LmSource};

/// The repository root (models/ and fixtures are found from it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Loads a model in f32; a fetched model that is missing says how to fetch it.
pub fn load(path: PathBuf) -> CausalLm {
    assert!(
        path.exists(),
        "{} missing: run scripts/fetch-models.sh",
        path.display()
    );
    CausalLm::load(&LmSource {
        path,
        quantized: false,
    })
    .unwrap()
}

/// A JSON array of token ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// A JSON array of numbers.
pub fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// A JSON file read whole.
pub fn json(path: PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
