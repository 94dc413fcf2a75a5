//! The real Gemma 3 270M (Q4_K_M GGUF, fetched by `scripts/fetch-models.sh`) against
//! `tests/fixtures/gemma3-270m-reference.json` (`scripts/make_gemma_reference.py`):
//! the SentencePiece tokenizer rebuilt from GGUF metadata token for token against
//! llama-cpp-python, and answer log-probabilities against HF transformers reading the
//! same GGUF (dequantised to f32). llama.cpp's own numbers are in the fixture too:
//! they differ from both f32 implementations by a few hundredths of a nat, because
//! llama.cpp rounds activations to 8 bits for its quantised matmuls.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

mod common;

use common::{floats, ids, root};
use std::sync::OnceLock;
use uae_lm::{CausalLm, Family, ScoreRequest};

fn load() -> CausalLm {
    common::load(root().join("models/gemma-3-270m/gemma-3-270m-q4_k_m.gguf"))
}

fn lm() -> &'static CausalLm {
    static LM: OnceLock<CausalLm> = OnceLock::new();
    LM.get_or_init(load)
}

fn fixture() -> serde_json::Value {
    common::json(root().join("crates/lm/tests/fixtures/gemma3-270m-reference.json"))
}

fn mean_nll(lp: &[f64]) -> f64 {
    -lp.iter().sum::<f64>() / lp.len() as f64
}

#[test]
fn reads_gemma3_from_gguf() {
    let c = &lm().config;
    assert_eq!(c.family, Family::Gemma3);
    assert_eq!(
        (c.layers, c.hidden, c.heads, c.kv_heads, c.head_dim),
        (18, 640, 4, 1, 256)
    );
    assert_eq!(c.vocab, 262_144);
    assert_eq!(c.sliding_window, Some(512));
    assert_eq!(c.sliding_layers.iter().filter(|s| !**s).count(), 3);
    assert_eq!(lm().bos, Some(2));
    // A base model: no chat template in the file, so `--template auto` is `plain`.
    assert!(lm().chat_template.is_none());
}

#[test]
fn tokenizer_matches_llama_cpp() {
    let fx = fixture();
    for case in fx["tokenize"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(lm().encode(text).unwrap(), ids(&case["ids"]), "{text:?}");
    }
    for case in fx["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        assert_eq!(
            lm().encode_prompt(prompt).unwrap(),
            ids(&case["prompt_ids"])
        );
        let answer = format!(" {}", case["answer"].as_str().unwrap());
        assert_eq!(lm().encode(&answer).unwrap(), ids(&case["answer_ids"]));
    }
}

/// Scores every fixture case in one packed batch; per case (ours, transformers,
/// llama.cpp) mean answer NLLs.
fn nlls(model: &CausalLm) -> Vec<(f64, f64, f64)> {
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    let toks: Vec<(Vec<u32>, Vec<u32>)> = cases
        .iter()
        .map(|c| (ids(&c["prompt_ids"]), ids(&c["answer_ids"])))
        .collect();
    let reqs: Vec<ScoreRequest> = toks
        .iter()
        .map(|(p, a)| ScoreRequest {
            context: p,
            targets: a,
        })
        .collect();
    let got = model.score(&reqs).unwrap();
    cases
        .iter()
        .zip(got)
        .map(|(c, lp)| {
            let ours: Vec<f64> = lp.iter().map(|&v| v as f64).collect();
            (
                mean_nll(&ours),
                mean_nll(&floats(&c["transformers_logprobs"])),
                mean_nll(&floats(&c["llama_cpp_logprobs"])),
            )
        })
        .collect()
}

#[test]
fn answer_nlls_match_transformers_in_f32() {
    let mut worst = (0f64, 0f64);
    for (i, (ours, hf, cpp)) in nlls(lm()).into_iter().enumerate() {
        eprintln!("case {i}: uae {ours:.4} transformers {hf:.4} llama.cpp {cpp:.4}");
        worst = (
            worst.0.max((ours - hf).abs()),
            worst.1.max((ours - cpp).abs()),
        );
    }
    eprintln!(
        "largest |uae - transformers| {:.5}, |uae - llama.cpp| {:.4} nats",
        worst.0, worst.1
    );
    assert!(
        worst.0 < 1e-3,
        "f32 drifts {} nats from transformers",
        worst.0
    );
    assert!(worst.1 < 0.08, "{} nats from llama.cpp", worst.1);
}

/// The utility signal: the passage that holds the answer lowers its NLL, a
/// distractor does not (cases 0-2: no passage, the evidence, an unrelated passage).
#[test]
fn evidence_lowers_the_answer_nll() {
    let n = nlls(lm());
    assert!(n[1].0 < n[0].0 - 1.0 && n[2].0 > n[1].0 + 1.0, "{n:?}");
}

/// bf16 weights (AMX or AVX512_BF16) stay within 0.02 nats of transformers' f32.
/// Ignored where the CPU has neither (`scripts/test.sh` runs the `hw_` tests where it can).
#[test]
#[ignore = "hardware: needs AMX or AVX512_BF16; scripts/test.sh runs it where the CPU has it"]
fn hw_bf16_weights_stay_close() {
    let mut bf = load();
    bf.to_bf16()
        .expect("needs a bf16 unit: run where the CPU has one");
    let mut worst = 0f64;
    for (i, (ours, hf, _)) in nlls(&bf).into_iter().enumerate() {
        eprintln!("case {i}: bf16 {ours:.4} transformers f32 {hf:.4}");
        worst = worst.max((ours - hf).abs());
    }
    assert!(worst < 0.02, "bf16 drifts {worst} nats");
}
