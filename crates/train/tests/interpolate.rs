//! WiSE-FT interpolation on the real all-MiniLM-L6-v2 (`scripts/fetch-models.sh`).

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

use candle_core::Device;
use std::path::PathBuf;
use uae_encoder::Encoder;

fn model_dir() -> PathBuf {
    let d = std::env::var_os("UAE_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2")
        });
    assert!(
        d.join("model.safetensors").is_file(),
        "{} missing: run scripts/fetch-models.sh",
        d.display()
    );
    d
}

fn weights(dir: &std::path::Path) -> Vec<(String, Vec<f32>)> {
    let enc = Encoder::load(dir, &Device::Cpu, true).unwrap();
    enc.model
        .vars()
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            )
        })
        .collect()
}

/// A "fine-tuned" model = base + 1 on every weight; at model weight 0.25 each
/// interpolated weight is base + 0.25, and the folder loads like any model.
#[test]
fn interpolation_mixes_every_weight_and_checks_its_inputs() {
    let base = model_dir();
    let d = tempfile::tempdir().unwrap();
    let enc = Encoder::load(&base, &Device::Cpu, true).unwrap();
    for (_, v) in enc.model.vars() {
        v.set(&(v.as_tensor() + 1.0).unwrap()).unwrap();
    }
    let shifted = d.path().join("shifted");
    uae_train::export(&enc, &base, &shifted).unwrap();
    let out = d.path().join("mixed");
    uae_train::interpolate(&shifted, &base, 0.25, &out).unwrap();
    let (want, got) = (weights(&base), weights(&out));
    assert_eq!(want.len(), got.len());
    for ((n, w), (m, g)) in want.iter().zip(&got) {
        assert_eq!(n, m);
        for (a, b) in w.iter().zip(g) {
            assert!(
                (a + 0.25 - b).abs() <= 1e-5 * (1.0 + a.abs()),
                "{n}: {a} + 0.25 vs {b}"
            );
        }
    }
    assert!(out.join("tokenizer.json").is_file());
    // Out-of-range weights and a folder without a model are errors, not panics.
    let e = uae_train::interpolate(&shifted, &base, 1.5, &d.path().join("x")).unwrap_err();
    assert!(e.to_string().contains("between 0 and 1"), "{e}");
    assert!(uae_train::interpolate(d.path(), &base, 0.5, &d.path().join("y")).is_err());
    assert!(!d.path().join("x").exists());
}
