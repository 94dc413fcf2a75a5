//! Parity of every supported family with HF transformers, on tiny random checkpoints
//! (`tests/fixtures/tiny`, written by `scripts/make_lm_fixtures.py`): the same weights
//! as an HF folder and as a GGUF file under llama.cpp's conventions, scored in f32;
//! per-token log-probabilities within 1e-4 of transformers' (eager attention, f32).
//! The checkpoints turn each family's knobs: Llama 3 rotary scaling, Mistral's
//! sliding window, Qwen2's qkv bias, Qwen3's q/k norms, Gemma 3's (1 + w) norms,
//! post-norms, GeGLU, scaled embeddings, query_pre_attn_scalar, and five sliding
//! layers with their own rotary base before a global one. Sequences run to 25
//! tokens against a window of 5.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

mod common;

use common::{ids, load, root};
use std::path::PathBuf;
use uae_lm::{CausalLm, Family, LmSource, ScoreRequest};

fn fixtures() -> PathBuf {
    root().join("crates/lm/tests/fixtures/tiny")
}

fn reference() -> serde_json::Value {
    common::json(fixtures().join("reference.json"))
}

/// Scores every case of `family` with `lm` (one packed batch) and compares.
fn check(family: &str, lm: &CausalLm, what: &str) {
    let r = reference();
    let cases = r["families"][family]["cases"].as_array().unwrap();
    let pairs: Vec<(Vec<u32>, Vec<u32>)> = cases
        .iter()
        .map(|c| (ids(&c["context"]), ids(&c["targets"])))
        .collect();
    let reqs: Vec<ScoreRequest> = pairs
        .iter()
        .map(|(c, t)| ScoreRequest {
            context: c,
            targets: t,
        })
        .collect();
    let got = lm.score(&reqs).unwrap();
    for (case, lp) in cases.iter().zip(&got) {
        let want = case["logprobs"].as_array().unwrap();
        assert_eq!(lp.len(), want.len());
        for (i, (g, w)) in lp.iter().zip(want).enumerate() {
            let w = w.as_f64().unwrap();
            assert!(
                (*g as f64 - w).abs() < 1e-4,
                "{family} {what}: token {i}: {g} vs transformers {w}"
            );
        }
    }
}

const FAMILIES: [&str; 5] = ["llama", "mistral", "qwen2", "qwen3", "gemma3"];

#[test]
fn hf_folders_match_transformers() {
    for family in FAMILIES {
        let lm = load(fixtures().join(family));
        assert_eq!(Some(lm.config.family), Family::parse(family));
        check(family, &lm, "safetensors");
    }
}

#[test]
fn gguf_files_match_transformers() {
    let r = reference();
    let mut n = 0;
    for family in FAMILIES {
        let Some(file) = r["families"][family]["gguf"].as_str() else {
            continue; // llama.cpp writes Mistral as llama, without its window
        };
        let lm = load(fixtures().join(file));
        check(family, &lm, "GGUF");
        n += 1;
    }
    assert_eq!(n, 4);
}

/// The knobs each family turns are read from both formats alike.
#[test]
fn both_formats_read_the_same_config() {
    let gemma = load(fixtures().join("gemma3"));
    let c = &gemma.config;
    assert_eq!(c.family, Family::Gemma3);
    assert!(c.qk_norm && c.post_norms);
    assert_eq!(c.sliding_window, Some(5));
    assert_eq!(c.sliding_layers, vec![true, true, true, true, true, false]);
    assert_eq!(c.rope_local_base, Some(10_000.0));
    assert!((c.attn_scale - 1.0 / 8f32.sqrt()).abs() < 1e-7);
    let g = load(fixtures().join("gemma3.gguf"));
    assert_eq!(g.config.sliding_layers, c.sliding_layers);
    assert_eq!(g.config.sliding_window, c.sliding_window);
    let q = load(fixtures().join("qwen3.gguf"));
    assert!(q.config.qk_norm && !q.config.post_norms);
}

/// One packed pass equals token-by-token decoding with the KV cache, where the
/// sliding window moves with every new token.
#[test]
fn sliding_window_one_pass_equals_incremental() {
    for family in ["gemma3", "mistral"] {
        let lm = load(fixtures().join(family));
        let context: Vec<u32> = (3..15).collect();
        let targets: Vec<u32> = (20..30).collect();
        let one = lm
            .score(&[ScoreRequest {
                context: &context,
                targets: &targets,
            }])
            .unwrap()
            .remove(0);
        let inc = lm.score_incremental(&context, &targets).unwrap();
        for (a, b) in one.iter().zip(&inc) {
            assert!((a - b).abs() < 1e-4, "{family}: {a} vs {b}");
        }
    }
}

/// Anything else is refused with the architecture named.
#[test]
fn unknown_architectures_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixtures().join("llama/config.json"))
        .unwrap()
        .replace("\"llama\"", "\"phi3\"");
    std::fs::write(dir.path().join("config.json"), text).unwrap();
    let e = CausalLm::load(&LmSource {
        path: dir.path().to_path_buf(),
        quantized: false,
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("phi3") && e.contains("gemma3"), "{e}");
}
