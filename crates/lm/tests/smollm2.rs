//! Tests with the real SmolLM2-135M-Instruct GGUF fetched by `scripts/fetch-models.sh`.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

mod common;

use common::{ids, root};
use std::sync::OnceLock;
use uae_lm::{CausalLm, LmSource, ScoreGroup, ScoreRequest};

fn load() -> CausalLm {
    common::load(root().join("models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"))
}

fn lm() -> &'static CausalLm {
    static LM: OnceLock<CausalLm> = OnceLock::new();
    LM.get_or_init(load)
}

fn fixture() -> serde_json::Value {
    let path = root().join("crates/lm/tests/fixtures/smollm2-reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// (prompt ids, answer ids) of each fixture case, by our tokenizer.
fn fixture_ids(cases: &[serde_json::Value]) -> Vec<(Vec<u32>, Vec<u32>)> {
    cases
        .iter()
        .map(|c| {
            (
                lm().encode(c["prompt"].as_str().unwrap()).unwrap(),
                lm().encode(c["answer"].as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

/// One request per (prompt ids, answer ids) pair.
fn requests(pairs: &[(Vec<u32>, Vec<u32>)]) -> Vec<ScoreRequest<'_>> {
    pairs
        .iter()
        .map(|(p, a)| ScoreRequest {
            context: p,
            targets: a,
        })
        .collect()
}

fn nll(lp: &[f32]) -> f64 {
    -lp.iter().map(|&x| x as f64).sum::<f64>() / lp.len() as f64
}

/// Token ids equal HF's exactly and the answer NLL is within 0.02 of HF transformers
/// on the same GGUF (dequantised to f32), per fixture case.
#[test]
fn matches_transformers_reference() {
    let fx = fixture();
    assert_eq!(lm().model_hash, fx["sha256"].as_str().unwrap());
    let cases = fx["cases"].as_array().unwrap();
    let pairs = fixture_ids(cases);
    for (i, (c, (p, a))) in cases.iter().zip(&pairs).enumerate() {
        assert_eq!(p, &ids(&c["prompt_ids"]), "prompt ids of case {i}");
        assert_eq!(a, &ids(&c["answer_ids"]), "answer ids of case {i}");
    }
    let reqs = requests(&pairs);
    let got = lm().score(&reqs).unwrap();
    for (i, c) in cases.iter().enumerate() {
        let want = c["answer_nll_mean"].as_f64().unwrap();
        let d = (nll(&got[i]) - want).abs();
        assert!(
            d < 0.02,
            "case {i}: NLL {} vs reference {want}",
            nll(&got[i])
        );
    }
}

/// One packed pass equals feeding the answer token by token through the KV cache.
#[test]
fn one_pass_equals_incremental_decoding() {
    let p = lm()
        .encode("<|im_start|>user\nQuestion: What is BM25?<|im_end|>\n<|im_start|>assistant\n")
        .unwrap();
    let a = lm().encode("A bag-of-words ranking function.").unwrap();
    let one = lm()
        .score(&[ScoreRequest {
            context: &p,
            targets: &a,
        }])
        .unwrap()
        .remove(0);
    let inc = lm().score_incremental(&p, &a).unwrap();
    assert!(
        (nll(&one) - nll(&inc)).abs() < 1e-3,
        "{} vs {}",
        nll(&one),
        nll(&inc)
    );
}

/// A packed batch of different lengths equals each sequence scored alone.
#[test]
fn batch_equals_single_sequences() {
    let texts = [
        ("Context: short.\n\nQuestion: a?", "yes"),
        (
            "Question: why is the sky blue on a clear day?",
            "Rayleigh scattering of sunlight",
        ),
        ("x", "y z"),
    ];
    let enc: Vec<(Vec<u32>, Vec<u32>)> = texts
        .iter()
        .map(|(p, a)| (lm().encode(p).unwrap(), lm().encode(a).unwrap()))
        .collect();
    let reqs = requests(&enc);
    let batch = lm().score(&reqs).unwrap();
    for (i, r) in reqs.iter().enumerate() {
        let single = lm()
            .score(&[ScoreRequest {
                context: r.context,
                targets: r.targets,
            }])
            .unwrap()
            .remove(0);
        for (a, b) in batch[i].iter().zip(&single) {
            assert!((a - b).abs() < 1e-4, "sequence {i}: {a} vs {b}");
        }
    }
}

/// Batched greedy decoding (packed prefill, one step for all running sequences)
/// gives each prompt the tokens that decoding it alone gives. Prompts of different
/// lengths, so sequences stop at different steps.
/// A passage read once for three questions (and one prompt for two answers) gives
/// the log-probabilities of scoring every request on its own, within float noise;
/// a group whose prefix is not shared, or is a whole context, is an error.
#[test]
fn shared_prefixes_equal_unshared_scoring() {
    let prompt = |q: &str| {
        lm().encode(&format!(
            "<|im_start|>user\nContext: BM25 ranks documents by term frequency, \
             inverse document frequency and document length, with saturation k1 and \
             length normalisation b.\n\nQuestion: {q}<|im_end|>\n<|im_start|>assistant\n"
        ))
        .unwrap()
    };
    let prompts = [
        prompt("What does BM25 rank?"),
        prompt("Which parameters does BM25 have?"),
        prompt("What is k1?"),
    ];
    let answers = [
        lm().encode("Documents.").unwrap(),
        lm().encode("k1 and b.").unwrap(),
        lm().encode("The term frequency saturation.").unwrap(),
        lm().encode("It saturates term frequency.").unwrap(),
    ];
    let lcp = prompts[0]
        .iter()
        .zip(&prompts[1])
        .take_while(|(a, b)| a == b)
        .count();
    assert!(lcp > 30, "the passage is a long shared prefix ({lcp})");
    let req = |p: usize, a: usize| ScoreRequest {
        context: &prompts[p],
        targets: &answers[a],
    };
    let passage = vec![req(0, 0), req(1, 1), req(2, 2)];
    let answers_of_one = vec![req(2, 2), req(2, 3)];
    let groups = [
        ScoreGroup {
            shared: lcp,
            reqs: passage.clone(),
        },
        ScoreGroup {
            shared: prompts[2].len() - 1,
            reqs: answers_of_one.clone(),
        },
        ScoreGroup {
            shared: 3, // a group of one runs as a plain request
            reqs: vec![req(1, 0)],
        },
    ];
    let got = lm().score_groups(&groups).unwrap();
    for (g, out) in groups.iter().zip(&got) {
        let want = lm().score(&g.reqs).unwrap();
        assert_eq!(out.len(), want.len());
        for (o, w) in out.iter().zip(&want) {
            assert_eq!(o.len(), w.len());
            for (x, y) in o.iter().zip(w) {
                assert!((x - y).abs() < 1e-4, "{x} vs {y}");
            }
        }
    }
    let bad = |shared: usize, reqs: Vec<ScoreRequest>| {
        lm().score_groups(&[ScoreGroup { shared, reqs }])
            .unwrap_err()
            .to_string()
    };
    assert!(bad(lcp + 1, passage).contains("shared tokens"));
    assert!(bad(prompts[2].len(), answers_of_one).contains("leave one"));
}

#[test]
fn batched_generation_equals_single() {
    let prompts = [
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\nContext: BERT is a language model trained by Google.\n\nQuestion: Who trained BERT? Answer in a few words.<|im_end|>\n<|im_start|>assistant\n",
        "Once upon a time",
    ];
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| lm().encode(p).unwrap()).collect();
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let batch = lm().generate_batch(&refs, 12).unwrap();
    for (i, p) in refs.iter().enumerate() {
        let single = lm().generate(p, 12).unwrap();
        assert_eq!(batch[i], single, "prompt {i}");
        assert!(!single.is_empty() && single.len() <= 12);
    }
    assert!(lm().generate_batch(&[&[]], 4).is_err());
}

/// Prompts that share their passages but not how many (RAG at k = 1, 2, 3 of one
/// ranking), a duplicate, a prompt that is a prefix of another, and one that shares
/// nothing: prefilling each group's longest once and the rest from a cut copy of
/// its cache decodes what each prompt alone decodes.
#[test]
fn shared_prefix_generation_equals_single() {
    let head = "<|im_start|>user\nContext: BERT is a language model trained by Google on books and Wikipedia. It reads its input in both directions at once.";
    let more = "\n\nIt has twelve layers in its base size and twenty-four in its large size.";
    let tail =
        "\n\nQuestion: Who trained BERT? Answer in a few words.<|im_end|>\n<|im_start|>assistant\n";
    let prompts = [
        format!("{head}{tail}"),
        format!("{head}{more}{tail}"),
        format!("{head}{more}{more}{tail}"),
        format!("{head}{tail}"),
        head.to_string(),
        "Once upon a time".to_string(),
    ];
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| lm().encode(p).unwrap()).collect();
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let shared = lm().generate_shared(&refs, 10).unwrap();
    for (i, p) in refs.iter().enumerate() {
        assert_eq!(shared[i], lm().generate(p, 10).unwrap(), "prompt {i}");
    }
    assert!(lm().generate_shared(&[&[]], 4).is_err());
}

#[test]
fn bad_inputs_are_errors() {
    assert!(lm()
        .score(&[ScoreRequest {
            context: &[1, 2],
            targets: &[]
        }])
        .is_err());
    assert!(lm()
        .score(&[ScoreRequest {
            context: &[u32::MAX],
            targets: &[5]
        }])
        .is_err());
    let missing = CausalLm::load(&LmSource {
        path: root().join("models/nope.gguf"),
        quantized: false,
    });
    assert!(missing.err().unwrap().to_string().contains("nope.gguf"));
    let d = tempfile::tempdir().unwrap();
    let junk = d.path().join("junk.gguf");
    std::fs::write(&junk, b"not a gguf").unwrap();
    let e = CausalLm::load(&LmSource {
        path: junk,
        quantized: false,
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("junk.gguf") && e.contains("GGUF"), "{e}");
}

/// The bf16 weights (`CausalLm::to_bf16`, on AMX or AVX512_BF16) keep the fixture
/// answers' NLL within 0.02 nats of f32 and of HF transformers, and generation still
/// runs. The drift is the rounding of activations to bf16 (8-bit mantissa) before each
/// matmul, so it depends on the unit's accumulation order: on one AMX Xeon the worst of
/// the five cases is 0.0103 nats through AMX and 0.0090 through AVX512_BF16
/// (`UAE_BF16_BACKEND=avx512bf16` picks the latter); Gemma 3's test
/// holds the same 0.02. A broken bf16 path (packing, rounding) drifts by whole nats;
/// 0.02 is 1% of the 2-nat utility bar labels are trained with. Ignored where the CPU has
/// neither (`scripts/test.sh` runs the `hw_` tests where it can).
#[test]
#[ignore = "hardware: needs AMX or AVX512_BF16; scripts/test.sh runs it where the CPU has it"]
fn hw_bf16_weights_stay_close_to_f32() {
    let mut bf = load();
    bf.to_bf16()
        .expect("needs a bf16 unit: run where the CPU has one");
    assert!(bf.model_hash.ends_with("+bf16"), "{}", bf.model_hash);
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    let toks = fixture_ids(cases);
    let reqs = requests(&toks);
    let (f, b) = (lm().score(&reqs).unwrap(), bf.score(&reqs).unwrap());
    let mut worst = 0f64;
    for (i, c) in cases.iter().enumerate() {
        let want = c["answer_nll_mean"].as_f64().unwrap();
        let (nf, nb) = (nll(&f[i]), nll(&b[i]));
        eprintln!("case {i}: f32 {nf:.4} bf16 {nb:.4} reference {want:.4}");
        worst = worst.max((nb - nf).abs()).max((nb - want).abs());
    }
    eprintln!("largest |bf16 - f32 or reference| NLL: {worst:.4}");
    assert!(worst < 0.02, "bf16 drifts {worst} nats");
    let prompt = lm().encode("The capital of France is").unwrap();
    let out = bf.generate(&prompt, 4).unwrap();
    assert!(!out.is_empty() && out.len() <= 4, "{out:?}");
}
