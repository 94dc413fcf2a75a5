//! End-to-end tests of the `uae` binary: bad input exits non-zero with a one-line
//! error naming the file, and a labeling run killed with SIGKILL resumes to the same
//! store as an uninterrupted run.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

mod common;
use common::{fails_with, fails_with_cmd, root, uae};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn bad_inputs_exit_non_zero_with_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // bf16 where there is no bf16 unit (UAE_BF16_BACKEND=none hides AMX and
    // AVX512_BF16 on machines that have them).
    std::fs::write(p.join("texts.jsonl"), "{\"text\": \"hi\"}\n").unwrap();
    let mut embed = uae();
    embed
        .env("UAE_BF16_BACKEND", "none")
        .args(["embed", "--bf16", "--input"])
        .arg(p.join("texts.jsonl"))
        .arg("--out")
        .arg(p.join("v.jsonl"));
    fails_with_cmd(&mut embed, &["bf16", "AMX", "AVX512_BF16"]);
    let mut label = uae();
    label
        .env("UAE_BF16_BACKEND", "none")
        .args(["bench", "label", "--bf16", "--sequences", "1"]);
    fails_with_cmd(&mut label, &["bf16", "AMX", "AVX512_BF16"]);
    let mut mine = uae();
    mine.env("UAE_BF16_BACKEND", "none")
        .args([
            "label",
            "--encoder-bf16",
            "--split",
            "dev",
            "--limit",
            "1",
            "--out",
        ])
        .arg(p.join("labels"));
    fails_with_cmd(&mut mine, &["bf16", "AMX", "AVX512_BF16"]);
    let mut train = uae();
    train.env("UAE_BF16_BACKEND", "none").args([
        "bench",
        "train",
        "--mixed-precision",
        "--steps",
        "1",
    ]);
    fails_with_cmd(&mut train, &["bf16", "AMX", "AVX512_BF16"]);
    // Bad JSON in a QASPER file.
    std::fs::write(p.join("qasper-test-v0.3.json"), "{ not json").unwrap();
    fails_with(
        &[
            "data",
            "stats",
            "--split",
            "test",
            "--data-dir",
            p.to_str().unwrap(),
        ],
        &["qasper-test-v0.3.json", "JSON"],
    );
    // A missing field in a BEIR corpus.
    std::fs::create_dir_all(p.join("beir/qrels")).unwrap();
    std::fs::write(p.join("beir/corpus.jsonl"), "{\"_id\": \"d1\"}\n").unwrap();
    fails_with(
        &[
            "eval",
            "--retriever",
            "bm25",
            "--beir",
            p.join("beir").to_str().unwrap(),
            "--out",
            p.join("o").to_str().unwrap(),
        ],
        &["corpus.jsonl:1", "text"],
    );
    // An empty corpus.
    std::fs::write(p.join("beir/corpus.jsonl"), "").unwrap();
    fails_with(
        &[
            "eval",
            "--retriever",
            "bm25",
            "--beir",
            p.join("beir").to_str().unwrap(),
            "--out",
            p.join("o").to_str().unwrap(),
        ],
        &["corpus.jsonl", "empty"],
    );
    // Training: an unknown loss, a label folder without labels, labels with no
    // candidates.
    fails_with(
        &[
            "train",
            "--labels",
            p.to_str().unwrap(),
            "--loss",
            "nope",
            "--out",
            "x",
        ],
        &["invalid value", "nope"],
    );
    std::fs::create_dir_all(p.join("nolabels")).unwrap();
    fails_with(
        &[
            "train",
            "--labels",
            p.join("nolabels").to_str().unwrap(),
            "--out",
            p.join("t").to_str().unwrap(),
        ],
        &["labels.jsonl", "uae label"],
    );
    std::fs::create_dir_all(p.join("emptylabels")).unwrap();
    std::fs::write(p.join("emptylabels/labels.jsonl"), "").unwrap();
    std::fs::copy(
        root().join("crates/cli/tests/data/label-manifest.json"),
        p.join("emptylabels/manifest.json"),
    )
    .unwrap();
    fails_with(
        &[
            "train",
            "--labels",
            p.join("emptylabels").to_str().unwrap(),
            "--out",
            p.join("t2").to_str().unwrap(),
        ],
        &["emptylabels", "no labeled question"],
    );
    // A bar no question reaches leaves nothing to train on: said before any step.
    std::fs::create_dir_all(p.join("lowlabels")).unwrap();
    std::fs::write(
        p.join("lowlabels/labels.jsonl"),
        concat!(
            r#"{"question_id": "q1", "paper_id": "", "question": "Which?", "answers": ["x"], "#,
            r#""nll_without": [2.0], "candidates": [{"passage_id": "a", "text": "a", "#,
            r#""is_gold": false, "source": "mined", "utility": 0.4, "per_answer": [0.4]}]}"#,
            "\n"
        ),
    )
    .unwrap();
    std::fs::copy(
        root().join("crates/cli/tests/data/label-manifest.json"),
        p.join("lowlabels/manifest.json"),
    )
    .unwrap();
    fails_with(
        &[
            "train",
            "--labels",
            p.join("lowlabels").to_str().unwrap(),
            "--loss",
            "uae",
            "--min-utility",
            "3",
            "--out",
            p.join("t3").to_str().unwrap(),
        ],
        &["no question has a target", "--min-utility 3", "0.40"],
    );
    assert!(
        !p.join("t3").exists(),
        "nothing written for a run that cannot train"
    );
    // A model folder without tokenizer.json.
    std::fs::create_dir_all(p.join("model")).unwrap();
    std::fs::copy(
        root().join("models/all-MiniLM-L6-v2/config.json"),
        p.join("model/config.json"),
    )
    .unwrap();
    std::fs::write(p.join("in.jsonl"), "{\"text\": \"hello\"}\n").unwrap();
    fails_with(
        &[
            "embed",
            "--model",
            p.join("model").to_str().unwrap(),
            "--input",
            p.join("in.jsonl").to_str().unwrap(),
            "--out",
            p.join("e.jsonl").to_str().unwrap(),
        ],
        &["model", "no"],
    );
    // A GGUF that is not one.
    std::fs::write(p.join("bad.gguf"), "nope").unwrap();
    fails_with(
        &[
            "label",
            "--limit",
            "1",
            "--lm",
            p.join("bad.gguf").to_str().unwrap(),
            "--out",
            p.join("l").to_str().unwrap(),
        ],
        &["bad.gguf"],
    );
}

/// Waits until `file` has `lines` lines, then SIGKILLs the still-running child.
fn kill_after_lines(mut child: std::process::Child, file: &Path, lines: usize) {
    let t = Instant::now();
    while std::fs::read_to_string(file)
        .map(|s| s.lines().count())
        .unwrap_or(0)
        < lines
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "run finished before it could be killed"
        );
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "{} did not grow in 300 s",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

fn store(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join("scores.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["k"].as_str().unwrap().to_string(), l.to_string())
        })
        .collect()
}

/// Kills a labeling run with SIGKILL once some scores are on disk, restarts the same
/// command, and checks the store and labels equal an uninterrupted run's, bit for bit.
#[test]
fn killed_labeling_run_resumes_to_the_same_store() {
    let d = tempfile::tempdir().unwrap();
    let args = |out: &Path| -> Vec<String> {
        [
            "label",
            "--split",
            "train",
            "--limit",
            "3",
            "--max-batch",
            "2",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let full = d.path().join("full");
    assert!(uae().args(args(&full)).status().unwrap().success());

    let killed = d.path().join("killed");
    let child = uae()
        .args(args(&killed))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    kill_after_lines(child, &killed.join("scores.jsonl"), 4);
    let partial = store(&killed).len();
    assert!(
        partial < store(&full).len(),
        "the kill came too late to test anything"
    );
    assert!(uae().args(args(&killed)).status().unwrap().success());
    assert_eq!(store(&killed), store(&full));
    let labels = |dir: &Path| std::fs::read_to_string(dir.join("labels.jsonl")).unwrap();
    assert_eq!(labels(&killed), labels(&full));
}

fn weights(path: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap()
}

/// Kills a training run with SIGKILL after a few steps, restarts the same command,
/// and checks the exported model equals an uninterrupted run's within 1e-6.
#[test]
fn killed_training_run_resumes_to_the_same_weights() {
    let d = tempfile::tempdir().unwrap();
    let labels = d.path().join("labels");
    let label = [
        "label",
        "--split",
        "train",
        "--limit",
        "3",
        "--out",
        labels.to_str().unwrap(),
    ];
    assert!(uae()
        .args(label)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    let args = |out: &Path| -> Vec<String> {
        let l = labels.to_str().unwrap();
        [
            "train",
            "--labels",
            l,
            "--out",
            out.to_str().unwrap(),
            "--batch-questions",
            "1",
            "--epochs",
            "2",
            "--checkpoint-every",
            "1",
            "--micro-batch",
            "4",
            "--dev-limit",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let full = d.path().join("full");
    assert!(uae()
        .args(args(&full))
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());

    let killed = d.path().join("killed");
    let child = uae()
        .args(args(&killed))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    kill_after_lines(child, &killed.join("metrics.jsonl"), 2);
    assert!(
        !killed.join("model").exists(),
        "the kill came too late to test anything"
    );
    assert!(uae()
        .args(args(&killed))
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    let (a, b) = (
        weights(&full.join("model/model.safetensors")),
        weights(&killed.join("model/model.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    // The export says it holds PyTorch-layout weights: HF transformers (and so
    // sentence-transformers) refuses safetensors files without this metadata.
    let bytes = std::fs::read(full.join("model/model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(
        header["__metadata__"]["format"], "pt",
        "{}",
        header["__metadata__"]
    );
    for (name, ta) in &a {
        let diff = (ta - &b[name])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff <= 1e-6, "{name}: max |diff| {diff}");
    }
    // metrics.jsonl lines holding `key`: optimizer steps ("loss") or evaluations ("dev").
    let count = |dir: &Path, key: &str| {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| l.contains(&format!("\"{key}\"")))
            .count()
    };
    let steps = |dir: &Path| count(dir, "loss");
    let evals = |dir: &Path| count(dir, "dev");
    assert_eq!(
        evals(&killed),
        2,
        "one dev evaluation per epoch, logged once"
    );
    assert_eq!(evals(&full), 2);
    for f in ["loss.svg", "dev.svg"] {
        assert!(killed.join(f).is_file(), "{f} written");
    }
    assert_eq!(
        steps(&killed),
        steps(&full),
        "metrics.jsonl holds each step once"
    );

    // Resuming a finished run on other labels (another LLM's utilities) is refused.
    let other = d.path().join("other-labels");
    std::fs::create_dir_all(&other).unwrap();
    let text = std::fs::read_to_string(labels.join("labels.jsonl")).unwrap();
    std::fs::write(
        other.join("labels.jsonl"),
        text.replacen("\"utility\":", "\"utility\":1.5e0,\"_was\":", 1),
    )
    .unwrap();
    let manifest = std::fs::read_to_string(labels.join("manifest.json")).unwrap();
    std::fs::write(other.join("manifest.json"), manifest).unwrap();
    let mut bad = args(&full);
    bad[2] = other.to_str().unwrap().to_string();
    let out = uae().args(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("other labels"), "{err}");

    // A diverging run (a temperature so small that the loss overflows) stops at its
    // first step with a clear error and exports nothing.
    let nan = d.path().join("nan");
    let mut diverge = args(&nan);
    diverge.extend(["--tau".to_string(), "1e-38".to_string()]);
    let out = uae().args(&diverge).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("step 1") && err.contains("stopped before updating"),
        "{err}"
    );
    assert!(
        !nan.join("model").exists(),
        "no model exported from a diverged run"
    );
    // A utility that is not a finite number (1e39 reads as +inf) is refused on read.
    std::fs::write(
        other.join("labels.jsonl"),
        text.replacen("\"utility\":", "\"utility\":1e39,\"_was\":", 1),
    )
    .unwrap();
    let out = uae().args(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("labels.jsonl:1") && err.contains("inf"),
        "{err}"
    );
}

/// A model whose weights hold a NaN (what a diverged run would have written) is
/// refused on load, by every command that loads one, naming the tensor.
#[test]
fn non_finite_weights_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let base = root().join("models/all-MiniLM-L6-v2");
    let bad = d.path().join("nan-model");
    std::fs::create_dir_all(bad.join("1_Pooling")).unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        if base.join(f).is_file() {
            std::fs::copy(base.join(f), bad.join(f)).unwrap();
        }
    }
    let mut w = weights(&base.join("model.safetensors"));
    let name = w
        .keys()
        .find(|k| k.ends_with("attention.output.dense.bias"))
        .unwrap()
        .clone();
    let n = w[&name].dims()[0];
    let mut v = vec![0f32; n];
    v[3] = f32::NAN;
    w.insert(
        name.clone(),
        candle_core::Tensor::from_vec(v, n, &candle_core::Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&w, bad.join("model.safetensors")).unwrap();
    std::fs::write(
        d.path().join("t.jsonl"),
        "{\"id\": \"a\", \"text\": \"hi\"}\n",
    )
    .unwrap();
    let m = bad.to_str().unwrap();
    let out = d.path().join("o");
    let o = out.to_str().unwrap();
    let input = d.path().join("t.jsonl");
    let i = input.to_str().unwrap();
    for args in [
        vec!["embed", "--model", m, "--input", i, "--out", o],
        vec!["eval", "--model", m, "--limit", "2", "--out", o],
        vec![
            "serve",
            "--model",
            m,
            "--corpus",
            i,
            "--addr",
            "127.0.0.1:0",
        ],
    ] {
        fails_with(&args, &["non-finite", &name]);
    }
}

/// `bench qasper` keeps each bi-encoder's passage embeddings in OUT/cache: a second run
/// reads them back and reports the same retrieval metrics; a torn cache file is
/// ignored and rewritten, never trusted.
#[test]
fn bench_reuses_and_validates_its_embedding_cache() {
    let out = std::env::temp_dir().join(format!("uae-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = || {
        let o = uae()
            .args([
                "bench",
                "qasper",
                "--no-answers",
                "--no-rerank",
                "--split",
                "dev",
            ])
            .args(["--questions", "3", "--latency-queries", "2", "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("table.json")).unwrap())
                .unwrap();
        r["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| (row["system"].to_string(), row["metrics"].to_string()))
            .collect::<Vec<_>>()
    };
    let first = run();
    assert!(
        first
            .iter()
            .any(|(s, m)| s.contains("minilm") && m.contains("map")),
        "{first:?}"
    );
    let cached: Vec<PathBuf> = std::fs::read_dir(out.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert_eq!(run(), first);
    let len = std::fs::metadata(&cached[0]).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&cached[0])
        .unwrap();
    f.set_len(len / 2).unwrap();
    assert_eq!(run(), first);
    assert_eq!(std::fs::metadata(&cached[0]).unwrap().len(), len);
    let _ = std::fs::remove_dir_all(&out);
}

/// `bench qasper --selection` on a calibrated base model (a folder of links to its
/// files plus a calibration.json whose p(helps) rises steeply with the cosine):
/// every rule of the sweep is answered, fixed k sends k passages, each value rule
/// carries its paired comparisons with fixed k, and a second run reads every answer
/// back from the cache and writes the same report.
#[test]
fn bench_answers_under_each_selection_rule() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("model");
    std::fs::create_dir(&model).unwrap();
    let base = root().join("models/all-MiniLM-L6-v2");
    for e in std::fs::read_dir(&base).unwrap() {
        let e = e.unwrap();
        std::os::unix::fs::symlink(e.path(), model.join(e.file_name())).unwrap();
    }
    std::fs::write(
        model.join("calibration.json"),
        r#"{"version": 1, "score": "cosine", "labels": "synthetic", "questions": 1, "helps_nats": 1.0,
            "calibrator": {"expected_utility": {"x": [0.0, 1.0], "y": [0.0, 3.0]},
                           "p_helps": {"kind": "logistic", "a": 10.0, "b": -4.0},
                           "held_out_log_loss": [0.5, 0.5], "pairs": 2},
            "ece": 0.0, "brier": 0.0, "bins": []}"#,
    )
    .unwrap();
    let out = d.path().join("bench");
    let run = || {
        let o = uae()
            .args([
                "bench",
                "qasper",
                "--no-answers",
                "--no-rerank",
                "--selection",
            ])
            .args([
                "--split",
                "dev",
                "--questions",
                "3",
                "--latency-queries",
                "1",
            ])
            .args(["--max-new-tokens", "4", "--base"])
            .arg(&model)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(out.join("selection-f1.json")).unwrap()
    };
    let first = run();
    let r: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(r["questions"], 3);
    let systems = r["systems"].as_array().unwrap();
    assert_eq!(systems.len(), 1, "{first}");
    let rules = systems[0]["rules"].as_array().unwrap();
    assert!(rules.len() >= 10, "{first}");
    for rule in rules {
        let f1 = rule["token_f1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&f1), "{rule}");
        if rule["family"] == "k" {
            let k = rule["selection"]["k"].as_f64().unwrap();
            assert_eq!(rule["mean_passages"].as_f64().unwrap(), k, "{rule}");
            assert!(rule.get("against_best_k").is_none());
        } else {
            let against = &rule["against_best_k"]["comparison"]["metrics"];
            assert_eq!(against[0]["metric"], "token_f1", "{rule}");
            assert!(rule["against_nearest_k"]["k"].as_u64().is_some(), "{rule}");
        }
    }
    // The steep p(helps) keeps different numbers of passages at 0.9 and at 0.2.
    let passages = |p: f64| {
        rules
            .iter()
            .find(|x| x["selection"]["min_p_helps"].as_f64() == Some(p))
            .unwrap()["mean_passages"]
            .as_f64()
            .unwrap()
    };
    assert!(passages(0.9) < passages(0.2), "{first}");
    assert!(out.join("selection-f1.svg").is_file() && out.join("selection-f1.md").is_file());
    assert_eq!(run(), first);
}

#[test]
fn compare_scores_two_runs_query_by_query() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // 40 judged queries; B puts the relevant passage first in 30, A in 10.
    let (mut qrels, mut ra, mut rb) = (String::new(), String::new(), String::new());
    for q in 0..40 {
        qrels.push_str(&format!("q{q} 0 gold{q} 1\n"));
        for (run, first) in [(&mut ra, q < 10), (&mut rb, q < 30)] {
            let (x, y) = if first {
                ("gold", "other")
            } else {
                ("other", "gold")
            };
            run.push_str(&format!("q{q} Q0 {x}{q} 1 0.9 t\nq{q} Q0 {y}{q} 2 0.5 t\n"));
        }
    }
    for (dir, run) in [("a", &ra), ("b", &rb)] {
        std::fs::create_dir_all(p.join(dir)).unwrap();
        std::fs::write(p.join(dir).join("run.trec"), run).unwrap();
        std::fs::write(p.join(dir).join("qrels.trec"), &qrels).unwrap();
    }
    let out = uae()
        .arg("compare")
        .args([p.join("a"), p.join("b")])
        .args(["--resamples", "2000", "--json"])
        .arg(p.join("c.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("40 queries"), "{text}");
    // R@1 0.25 -> 0.75: +0.5, +200%, B wins 20 and loses none.
    assert!(
        text.contains("| recall@1 | 0.2500 | 0.7500 | +0.5000"),
        "{text}"
    );
    assert!(
        text.contains("+200.0%") && text.contains("20 / 0 / 20"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("c.json")).unwrap()).unwrap();
    assert_eq!(json["metrics"].as_array().unwrap().len(), 11);
    assert!(json["metrics"][0]["p_value"].as_f64().unwrap() < 0.01);
    // Different judgments, an unknown metric, a broken line: one-line errors.
    std::fs::write(p.join("b").join("qrels.trec"), "q0 0 gold0 1\n").unwrap();
    let (a, b) = (p.join("a"), p.join("b"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    fails_with(&["compare", a, b], &["qrels.trec", "different"]);
    fails_with(&["compare", a, a, "--metrics", "map,p@5"], &["p@5"]);
    std::fs::write(p.join("a").join("run.trec"), "q0 Q0 gold0 one 0.9 t\n").unwrap();
    fails_with(&["compare", a, a], &["run.trec", "line 1", "one"]);
}
