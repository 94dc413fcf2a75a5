//! Tests with the real all-MiniLM-L6-v2 fetched by `scripts/fetch-models.sh`.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

use candle_core::{Device, Tensor};
use std::path::PathBuf;
use uae_encoder::{ops, BatchOptions, Encoder};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model_dir() -> PathBuf {
    let d = std::env::var_os("UAE_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models/all-MiniLM-L6-v2"));
    assert!(
        d.join("model.safetensors").is_file(),
        "{} missing: run scripts/fetch-models.sh",
        d.display()
    );
    d
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// The cases of the sentence-transformers fixture file.
fn fixture_cases() -> Vec<serde_json::Value> {
    let path = root().join("crates/encoder/tests/fixtures/minilm-reference.json");
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    fx["cases"].as_array().unwrap().clone()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Token ids and embeddings match sentence-transformers on the shared fixtures
/// (computed by `SentenceTransformer(dir).encode(texts)`, max_seq_length 256).
#[test]
fn matches_sentence_transformers_reference() {
    let enc = Encoder::load(&model_dir(), &Device::Cpu, false).unwrap();
    assert_eq!(enc.max_seq_length, 256);
    let cases = fixture_cases();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let ids = enc.tokenize(&texts).unwrap();
    let vecs = enc.embed(&texts).unwrap();
    for (i, c) in cases.iter().enumerate() {
        let want_ids: Vec<u32> = c["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(ids[i], want_ids, "token ids of case {i}");
        let want = floats(&c["embedding"]);
        let cos = cosine(&vecs[i], &want);
        assert!(cos >= 0.9999, "case {i}: cosine {cos}");
    }
}

/// The bf16 projections (`Bert::to_bf16`, on AMX or AVX512_BF16) keep every fixture
/// embedding within cosine 0.9999 (the f32 parity bar) of sentence-transformers' f32
/// vector. Ignored where the CPU has neither (`scripts/test.sh` runs the `hw_` tests where it can).
#[test]
#[ignore = "hardware: needs AMX or AVX512_BF16; scripts/test.sh runs it where the CPU has it"]
fn hw_bf16_projections_stay_close_to_reference() {
    let mut enc = Encoder::load(&model_dir(), &Device::Cpu, false).unwrap();
    enc.model
        .to_bf16()
        .expect("needs a bf16 unit: run where the CPU has one");
    assert!(enc.model.is_bf16());
    let cases = fixture_cases();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let vecs = enc.embed(&texts).unwrap();
    let mut worst = 1f64;
    for (i, c) in cases.iter().enumerate() {
        let want = floats(&c["embedding"]);
        worst = worst.min(cosine(&vecs[i], &want));
    }
    eprintln!("lowest cosine, bf16 vs sentence-transformers f32: {worst:.6}");
    assert!(worst >= 0.9999, "bf16 embeddings drift: cosine {worst}");
    // The single-query path of a bf16 model (bf16 weights, f32 activations).
    for (i, c) in cases.iter().enumerate() {
        let v = enc.embed_query(c["text"].as_str().unwrap(), 2).unwrap();
        let cos = cosine(&v, &floats(&c["embedding"]));
        assert!(cos >= 0.9999, "case {i}: bf16 single-query cosine {cos}");
    }
    let trainable = Encoder::load(&model_dir(), &Device::Cpu, true).unwrap();
    // A bf16 snapshot of a trainable model draws the same dropout masks: in training
    // mode its embeddings stay within cosine 0.9999 of the f32 model's.
    let snap = trainable.model.bf16_snapshot().unwrap();
    let ids = trainable.tokenize(&texts).unwrap();
    let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let batch = trainable.batch(&seqs).unwrap();
    let f = trainable
        .forward_t(&batch, Some(7))
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let b = trainable
        .forward_with(&snap, &batch, Some(7))
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let no_dropout = trainable
        .forward_t(&batch, None)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for i in 0..f.len() {
        assert!(
            cosine(&f[i], &b[i]) >= 0.9999,
            "case {i}: {}",
            cosine(&f[i], &b[i])
        );
        assert!(
            cosine(&f[i], &no_dropout[i]) < 0.9999,
            "dropout had no effect"
        );
    }
    let mut model = trainable.model;
    assert!(model.to_bf16().is_err(), "a trainable model must stay f32");
}

/// A batch of mixed lengths (padding, masks, bucketing) equals one text at a time.
#[test]
fn batch_equals_single_texts() {
    let enc = Encoder::load(&model_dir(), &Device::Cpu, false).unwrap();
    let texts = [
        "short",
        "A somewhat longer sentence about dense retrieval with utility labels.",
        "Mid length text here.",
        &"very long input ".repeat(100),
        "x",
    ];
    let tiny = BatchOptions {
        max_tokens: 100_000,
        max_batch: 64,
    };
    let batched = enc.embed_with(&texts, tiny, &mut |_| {}).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let single = enc.embed(&[*t]).unwrap();
        let diff: f32 = single[0]
            .iter()
            .zip(&batched[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5, "text {i}: max |diff| {diff}");
    }
}

/// Token counts for context budgets are whole texts: past `max_seq_length`, and
/// without [CLS]/[SEP], as the tokenizer with no truncation counts them.
#[test]
fn token_counts_count_whole_texts() {
    let enc = Encoder::load(&model_dir(), &Device::Cpu, false).unwrap();
    let long = "utility aligned retrieval of passages ".repeat(200);
    let texts = ["", "x", "A sentence about dense retrieval.", long.as_str()];
    let mut whole = enc.tokenizer().clone();
    whole.with_truncation(None).unwrap();
    let want: Vec<usize> = texts
        .iter()
        .map(|t| whole.encode(*t, false).unwrap().len())
        .collect();
    assert!(want[3] > enc.max_seq_length, "{want:?}");
    assert_eq!(enc.token_counts(&texts).unwrap(), want);
}

/// The single-query path (`Encoder::embed_query`, no candle) gives the batch path's
/// vectors to f32 rounding, on 1 and 2 threads and for several texts in one pass,
/// and meets the sentence-transformers fixtures; an empty text and an over-long one
/// are handled like the batch path.
#[test]
fn single_query_path_equals_batch_path() {
    let enc = Encoder::load(&model_dir(), &Device::Cpu, false).unwrap();
    let long = "very long input ".repeat(100);
    let mut texts: Vec<String> = fixture_cases()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    texts.extend(["".to_string(), "x".to_string(), long]);
    for t in &texts {
        let want = enc.embed(&[t.as_str()]).unwrap().remove(0);
        for threads in [1, 2] {
            let got = enc.embed_query(t, threads).unwrap();
            let diff = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(diff < 1e-5, "{t:?} on {threads} threads: max |diff| {diff}");
        }
    }
    // Several texts in one pass (rows concatenated, attention per text).
    let ids = enc
        .tokenize(&texts.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap();
    let many = enc.embed_queries_ids(&ids, 2).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let want = enc.embed(&[t.as_str()]).unwrap().remove(0);
        let diff = many[i]
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5, "{t:?} among others: max |diff| {diff}");
    }
    for c in fixture_cases() {
        let got = enc.embed_query(c["text"].as_str().unwrap(), 1).unwrap();
        let cos = cosine(&got, &floats(&c["embedding"]));
        assert!(cos >= 0.9999, "cosine {cos}");
    }
    let err = enc.embed_query_ids(&[101, u32::MAX, 102], 1).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
}

fn rand_tensor(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The fused CPU operators give the same values and gradients as the composed candle
/// reference (the path other devices take). The reference runs through a `Var` on a
/// non-fused path by moving the data through `ops::*_reference`.
#[test]
fn fused_ops_match_composed_reference_with_gradients() {
    let (b, s, h, heads) = (3, 7, 24, 4);
    let lens = [7, 4, 1];
    let qkv = candle_core::Var::from_tensor(&rand_tensor(&[b, s, 3 * h], 1)).unwrap();
    let g = rand_tensor(&[b, s, h], 2);
    let fused = ops::attention(&qkv, heads, &lens).unwrap();
    let reference = ops::attention_reference(&qkv, heads, &lens).unwrap();
    assert!(max_diff(&fused, &reference) < 1e-5);
    let gf = (&fused * &g)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gr = (&reference * &g)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(max_diff(gf.get(&qkv).unwrap(), gr.get(&qkv).unwrap()) < 1e-5);

    let x = candle_core::Var::from_tensor(&rand_tensor(&[5, h], 3)).unwrap();
    let gamma = candle_core::Var::from_tensor(&(rand_tensor(&[h], 4) + 1.0).unwrap()).unwrap();
    let beta = candle_core::Var::from_tensor(&rand_tensor(&[h], 5)).unwrap();
    let w = candle_core::Var::from_tensor(&rand_tensor(&[h, h], 6)).unwrap();
    let gy = rand_tensor(&[5, h], 7);
    let run = |fused_path: bool| {
        if fused_path {
            let l = ops::linear(&x, &w, &beta, true).unwrap();
            ops::layer_norm(&l, &gamma, &beta, 1e-12).unwrap()
        } else {
            let l = ops::linear_reference(&x, &w, &beta, true).unwrap();
            ops::layer_norm_reference(&l, &gamma, &beta, 1e-12).unwrap()
        }
    };
    assert_same_values_and_gradients(run, &gy, &[&x, &gamma, &beta, &w], 1e-4, 1e-3);
}

/// `run(true)` (the fused path) and `run(false)` (the reference) give values within
/// `tol_y` and gradients of `sum(y * gy)` with respect to `vars` within `tol_g`.
fn assert_same_values_and_gradients(
    run: impl Fn(bool) -> Tensor,
    gy: &Tensor,
    vars: &[&candle_core::Var],
    tol_y: f32,
    tol_g: f32,
) {
    let grads_of = |y: &Tensor| {
        let grads = (y * gy).unwrap().sum_all().unwrap().backward().unwrap();
        vars.iter()
            .map(|v| grads.get(v).unwrap().clone())
            .collect::<Vec<Tensor>>()
    };
    let (yf, yr) = (run(true), run(false));
    assert!(max_diff(&yf, &yr) < tol_y, "{}", max_diff(&yf, &yr));
    for (a, b) in grads_of(&yf).iter().zip(&grads_of(&yr)) {
        assert!(max_diff(a, b) < tol_g, "{}", max_diff(a, b));
    }
}

/// The training-only fused ops (GELU recomputed in the backward pass; dropout mask
/// redrawn there) give the values and gradients of their compositions.
#[test]
fn gelu_linear_and_dropout_add_match_their_compositions() {
    let (n, i, h) = (6, 40, 24);
    let x = candle_core::Var::from_tensor(&rand_tensor(&[n, i], 11)).unwrap();
    let w = candle_core::Var::from_tensor(&rand_tensor(&[h, i], 12)).unwrap();
    let b = candle_core::Var::from_tensor(&rand_tensor(&[h], 13)).unwrap();
    let r = candle_core::Var::from_tensor(&rand_tensor(&[n, h], 14)).unwrap();
    let gy = rand_tensor(&[n, h], 15);
    let run = |fused_path: bool| {
        if fused_path {
            let y = ops::gelu_linear(&x, &w, &b).unwrap();
            ops::dropout_add(&y, &r, 0.25, 3, 2).unwrap()
        } else {
            let y = ops::linear_reference(&ops::gelu_t(&x).unwrap(), &w, &b, false).unwrap();
            let mask = ops::dropout_mask(n * h, 0.25, 3, 2);
            let mask = Tensor::from_vec(mask, (n, h), &Device::Cpu).unwrap();
            ((y * mask).unwrap() + r.as_tensor()).unwrap()
        }
    };
    assert_same_values_and_gradients(run, &gy, &[&x, &w, &b, &r], 1e-5, 1e-4);
    let big = rand_tensor(&[1000, 7], 16);
    let want = big.sum(0).unwrap();
    assert!(max_diff(&ops::col_sum(&big).unwrap(), &want) < 1e-4);
    // About a quarter of the mask is dropped, the rest scaled by 1 / 0.75.
    let mask = ops::dropout_mask(4000, 0.25, 3, 2);
    let dropped = mask.iter().filter(|&&m| m == 0.0).count();
    assert!((800..1200).contains(&dropped), "{dropped}");
    assert!(mask
        .iter()
        .all(|&m| m == 0.0 || (m - 1.0 / 0.75).abs() < 1e-6));
}

/// Every parameter of a trainable model receives a non-zero gradient (no op in the
/// graph silently stops backprop, as candle's fast LayerNorm would).
#[test]
fn every_parameter_receives_a_gradient() {
    let enc = Encoder::load(&model_dir(), &Device::Cpu, true).unwrap();
    let ids = enc
        .tokenize(&["a question about retrieval", "a passage"])
        .unwrap();
    let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let batch = enc.batch(&seqs).unwrap();
    let v = enc.forward_t(&batch, Some(7)).unwrap();
    let w = rand_tensor(&[2, enc.dim()], 9);
    let grads = (&v * &w).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(enc.model.vars().len(), 5 + 16 * 6);
    for (name, var) in enc.model.vars() {
        let g = grads
            .get(var)
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        let n = g
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // Only used rows of the embedding tables get gradient; the sum is still > 0.
        assert!(n > 0.0, "{name} has a zero gradient");
    }
}

#[test]
fn model_folder_without_tokenizer_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(model_dir().join(f), d.path().join(f)).unwrap();
    }
    let e = Encoder::load(d.path(), &Device::Cpu, false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains(&d.path().display().to_string()),
        "{e}"
    );
}

/// Mixed precision: the linear ops with their GEMMs (forward and both backward ones)
/// on the bf16 unit give the f32 values and gradients up to bf16 rounding of the
/// inputs (8 significant bits); a whole MiniLM forward pass keeps cosine >= 0.999 to
/// f32. Shapes are off the 32-multiples and above the threaded kernels' thresholds.
#[test]
#[ignore = "hardware: needs AMX or AVX512_BF16; scripts/test.sh runs it where the CPU has it"]
fn hw_bf16_mixed_precision_linears_stay_within_bf16_rounding() {
    assert!(
        uae_kernels::bf16::backend().is_some(),
        "needs a bf16 unit: run where the CPU has one"
    );
    let (n, i, h) = (70, 40, 50);
    let x = candle_core::Var::from_tensor(&rand_tensor(&[n, i], 21)).unwrap();
    let w = candle_core::Var::from_tensor(&rand_tensor(&[h, i], 22)).unwrap();
    let b = candle_core::Var::from_tensor(&rand_tensor(&[h], 23)).unwrap();
    let gy = rand_tensor(&[n, h], 24);
    for gelu in [false, true] {
        let run = |bf16: bool| {
            if gelu {
                ops::gelu_linear_in(&x, &w, &b, bf16).unwrap()
            } else {
                ops::linear_in(&x, &w, &b, false, bf16).unwrap()
            }
        };
        // |y| and the gradients are O(1) here; bf16 inputs err by ~2^-9 relative each.
        assert_same_values_and_gradients(run, &gy, &[&x, &w, &b], 2e-2, 5e-2);
        let (yf, yb) = (run(false), run(true));
        assert!(max_diff(&yf, &yb) > 0.0, "the bf16 path was not taken");
    }
    let mut enc = Encoder::load(&model_dir(), &Device::Cpu, true).unwrap();
    let ids = enc
        .tokenize(&[
            "a question about retrieval",
            "a passage about dense vectors",
        ])
        .unwrap();
    let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let batch = enc.batch(&seqs).unwrap();
    let f32_out = enc.forward_t(&batch, None).unwrap();
    enc.model.set_bf16_gemms(true).unwrap();
    let mixed = enc.forward_t(&batch, None).unwrap();
    for r in 0..2 {
        let row = |t: &Tensor| {
            t.get(r)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let cos = cosine(&row(&f32_out), &row(&mixed));
        assert!(cos >= 0.999, "row {r}: cosine {cos}");
    }
}

/// Client token ids without `[CLS]`/`[SEP]` get them (the model was trained with
/// them: bare ids gave a cosine of 0.53 to the same text); ids that carry them are
/// kept; over-long ids are cut between them.
#[test]
fn client_token_ids_get_the_special_tokens() {
    let enc = Encoder::load(&model_dir(), &Device::Cpu, false).unwrap();
    let specials = enc.special_tokens().unwrap();
    assert_eq!(specials, (vec![101], vec![102]), "MiniLM's [CLS] and [SEP]");
    let text = "Interest rates rose in March.";
    let full = enc.tokenize(&[text]).unwrap().pop().unwrap();
    let bare: Vec<u32> = full[1..full.len() - 1].to_vec();
    assert_eq!(enc.with_special_tokens(&bare, &specials), full);
    assert_eq!(enc.with_special_tokens(&full, &specials), full);
    let long = vec![2000u32; 1000];
    let cut = enc.with_special_tokens(&long, &specials);
    assert_eq!(cut.len(), enc.max_seq_length);
    assert_eq!((cut[0], *cut.last().unwrap()), (101, 102));
}
