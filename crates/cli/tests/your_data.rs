//! Your own data: a QASPER split exported through `uae data export-qasper` and read
//! back through the generic path gives the QASPER path's rankings, metrics,
//! candidates and utilities; bad question files are one-line errors.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

mod common;
use common::{fails_with as fails, ok, uae};

use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn export(split: &str, dir: &Path) -> (PathBuf, PathBuf) {
    ok(&["data", "export-qasper", "--split", split, "--out", s(dir)]);
    (dir.join("corpus.jsonl"), dir.join("questions.jsonl"))
}

/// BM25 and base MiniLM on the first test questions: the same run files and metrics
/// through the exported files as through the QASPER reader.
#[test]
fn generic_eval_equals_the_qasper_path() {
    let d = tempfile::tempdir().unwrap();
    let (corpus, questions) = export("test", &d.path().join("export"));
    for (retriever, limit) in [("bm25", "60"), ("dense", "12")] {
        let a = d.path().join(format!("qasper-{retriever}"));
        let b = d.path().join(format!("generic-{retriever}"));
        ok(&[
            "eval",
            "--split",
            "test",
            "--retriever",
            retriever,
            "--limit",
            limit,
            "--out",
            s(&a),
        ]);
        ok(&[
            "eval",
            "--corpus",
            s(&corpus),
            "--questions",
            s(&questions),
            "--retriever",
            retriever,
            "--limit",
            limit,
            "--out",
            s(&b),
        ]);
        let (ra, rb) = (json(&a.join("report.json")), json(&b.join("report.json")));
        assert_eq!(ra["metrics"], rb["metrics"], "{retriever}");
        assert!(ra["evaluable_queries"].as_u64().unwrap() > 0);
        assert_eq!(ra["evaluable_queries"], rb["evaluable_queries"]);
        let run = |p: &Path| std::fs::read_to_string(p.join("run.trec")).unwrap();
        assert_eq!(run(&a), run(&b), "{retriever}");
    }
}

/// Two dev questions labelled through QASPER, then through the exported files with
/// the first run's score store: the same candidates and utilities, and not one score
/// computed again (every prompt the LLM saw is the same).
#[test]
fn generic_labels_equal_the_qasper_path() {
    let d = tempfile::tempdir().unwrap();
    let (corpus, questions) = export("dev", &d.path().join("export"));
    let a = d.path().join("qasper");
    let b = d.path().join("generic");
    for mode in ["gold", "mined"] {
        let (a, b) = (a.join(mode), b.join(mode));
        ok(&[
            "label",
            "--split",
            "dev",
            "--limit",
            "2",
            "--candidates",
            mode,
            "--out",
            s(&a),
        ]);
        std::fs::create_dir_all(&b).unwrap();
        std::fs::copy(a.join("scores.jsonl"), b.join("scores.jsonl")).unwrap();
        let summary: serde_json::Value = serde_json::from_str(&ok(&[
            "label",
            "--corpus",
            s(&corpus),
            "--questions",
            s(&questions),
            "--limit",
            "2",
            "--candidates",
            mode,
            "--out",
            s(&b),
        ]))
        .unwrap();
        assert_eq!(summary["scores_computed"], 0, "{mode}: {summary}");
        assert!(summary["questions"].as_u64().unwrap() == 2);
        let labels = |p: &Path| std::fs::read_to_string(p.join("labels.jsonl")).unwrap();
        assert_eq!(labels(&a), labels(&b), "{mode}");
        let cands = |p: &Path| std::fs::read_to_string(p.join("candidates.jsonl")).unwrap();
        assert_eq!(cands(&a), cands(&b), "{mode}");
        // Mining cached its passage embeddings (what a killed run resumes from).
        let cached = std::fs::read_dir(b.join("cache")).unwrap().count();
        assert!(cached >= 1, "{mode}: no cached mining embeddings");
    }
}

/// A user's own files, by hand: answers and answer-match positives, then the errors
/// a user makes, each one line naming the file and line.
#[test]
fn own_files_label_train_and_fail_clearly() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(
        p.join("corpus.jsonl"),
        concat!(
            "{\"id\": \"c1\", \"text\": \"The cat sat on the mat in the kitchen.\"}\n",
            "{\"id\": \"c2\", \"text\": \"Dogs bark at the mail carrier every morning.\"}\n",
            "{\"id\": \"c3\", \"text\": \"The capital of France is Paris.\"}\n",
            "{\"id\": \"c4\", \"text\": \"Rust has no garbage collector.\"}\n",
        ),
    )
    .unwrap();
    // The last question is longer than SmolLM2's 8,192-token context: left out and
    // counted, not a reason to stop the run.
    let long = format!(
        "{{\"question\": \"{}?\", \"answer\": \"yes\"}}\n",
        "word ".repeat(9000)
    );
    std::fs::write(
        p.join("questions.jsonl"),
        concat!(
            "{\"question\": \"Where did the cat sit?\", \"answer\": \"on the mat\"}\n",
            "{\"question\": \"What is the capital of France?\", \"answers\": [\"Paris\"]}\n",
            "{\"question\": \"Which question has no answer?\"}\n",
        )
        .to_string()
            + &long,
    )
    .unwrap();
    let labels = p.join("labels");
    let summary: serde_json::Value = serde_json::from_str(&ok(&[
        "label",
        "--corpus",
        s(&p.join("corpus.jsonl")),
        "--questions",
        s(&p.join("questions.jsonl")),
        "--dense-negatives",
        "1",
        "--bm25-negatives",
        "1",
        // The bare ChatML turn: SmolLM2's own template adds a system message under
        // which no passage lowers this toy answer's NLL (utilities all < 0).
        "--template",
        "chatml",
        "--out",
        s(&labels),
    ]))
    .unwrap();
    assert_eq!(summary["questions"], 2);
    assert_eq!(summary["skipped_no_answer"], 1);
    assert_eq!(summary["skipped_too_long"], 1, "{summary}");
    // Named by its line in the questions file.
    assert_eq!(
        summary["skipped_too_long_lines"],
        serde_json::json!([4]),
        "{summary}"
    );
    let groups: Vec<serde_json::Value> = std::fs::read_to_string(labels.join("labels.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Unscoped questions draw candidates from the whole corpus; the passage holding
    // the answer is the most useful one.
    let best = |g: &serde_json::Value| {
        g["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .max_by(|a, b| {
                a["utility"]
                    .as_f64()
                    .unwrap()
                    .total_cmp(&b["utility"].as_f64().unwrap())
            })
            .unwrap()["passage_id"]
            .clone()
    };
    assert_eq!(best(&groups[1]), "c3", "{}", groups[1]);

    // Bad inputs: one error line naming file and line; nothing labelled is lost.
    // (Files with some good rows label those: see remote.rs's poisoned rows.)
    let bad = p.join("bad.jsonl");
    for (text, needles) in [
        (
            "{\"question\": \"q\", \"answer\": \"a\", \"positives\": [\"nope\"]}\n",
            vec!["bad.jsonl:1", "`nope`"],
        ),
        // A bad row is left out (and named) while the others are labelled; a file of
        // nothing but bad rows is an error naming the first.
        (
            "{\"question\": 3}\n{\"question\": \" \", \"answer\": \"a\"}\n",
            vec!["bad.jsonl:1", "no usable question", "2 rows left out"],
        ),
        (
            "{\"question\": \"q\", \"answer\": \"a\", \"scope\": \"x\"}\n",
            vec!["bad.jsonl:1", "scope `x`"],
        ),
        ("{\"question\": \"q\"}\n", vec!["no question", "answer"]),
    ] {
        std::fs::write(&bad, text).unwrap();
        fails(
            &[
                "label",
                "--corpus",
                s(&p.join("corpus.jsonl")),
                "--questions",
                s(&bad),
                "--out",
                s(&labels),
            ],
            &needles,
        );
    }
    assert!(
        labels.join("labels.jsonl").is_file(),
        "earlier labels are kept"
    );
    // A duplicate passage id and an empty corpus.
    std::fs::write(
        p.join("dup.jsonl"),
        "{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"a\", \"text\": \"y\"}\n",
    )
    .unwrap();
    std::fs::write(p.join("empty.jsonl"), "").unwrap();
    for (corpus, needle) in [("dup.jsonl", "appears twice"), ("empty.jsonl", "empty")] {
        let out = uae()
            .args([
                "eval",
                "--corpus",
                s(&p.join(corpus)),
                "--questions",
                s(&p.join("questions.jsonl")),
                "--out",
                s(&p.join("e")),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(needle), "{err}");
    }
}

/// Two retrievers' top passages scored by the LLM (`--candidates retrieved`), then
/// compared question by question: the candidates are each run's top k in rank order,
/// the second run reuses every score the first computed for the same passage, and
/// the misuses are one-line errors.
#[test]
fn retrieved_passages_are_labelled_and_compared() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    for r in ["bm25", "dense"] {
        let out = p.join(r);
        ok(&[
            "eval",
            "--split",
            "dev",
            "--retriever",
            r,
            "--limit",
            "4",
            "--out",
            s(&out),
        ]);
    }
    let label = |r: &str| -> serde_json::Value {
        let out = p.join(format!("u-{r}"));
        let ranking = p.join(r.split('-').next().unwrap()).join("run.trec");
        serde_json::from_str(&ok(&[
            "label",
            "--split",
            "dev",
            "--candidates",
            "retrieved",
            "--ranking",
            s(&ranking),
            "--top-k",
            "2",
            "--limit",
            "3",
            "--out",
            s(&out),
        ]))
        .unwrap()
    };
    let first = label("bm25");
    assert_eq!(first["questions"], 3, "{first}");
    assert!(first["scores_computed"].as_u64().unwrap() > 0);
    // The dense run's store starts from BM25's: the no-passage scores and any shared
    // passage are reused.
    std::fs::create_dir_all(p.join("u-dense")).unwrap();
    std::fs::copy(
        p.join("u-bm25/scores.jsonl"),
        p.join("u-dense/scores.jsonl"),
    )
    .unwrap();
    let second = label("dense");
    assert!(second["scores_reused"].as_u64().unwrap() >= 3, "{second}");
    // Reused scores cost nothing: only the missing ones are batched and run, so the
    // LLM reads fewer tokens than a run from an empty store (which scores them all).
    let fresh = label("dense-fresh-run");
    let tokens = |v: &serde_json::Value| v["tokens_scored"].as_u64().unwrap();
    assert!(tokens(&second) < tokens(&fresh), "{second} vs {fresh}");
    assert_eq!(
        second["scores_computed"].as_u64().unwrap() + second["scores_reused"].as_u64().unwrap(),
        fresh["scores_computed"].as_u64().unwrap()
    );
    // Each question's candidates are the run's top 2, in its order.
    let run = std::fs::read_to_string(p.join("dense/run.trec")).unwrap();
    let labels = std::fs::read_to_string(p.join("u-dense/labels.jsonl")).unwrap();
    for line in labels.lines() {
        let g: serde_json::Value = serde_json::from_str(line).unwrap();
        let q = g["question_id"].as_str().unwrap();
        let top: Vec<&str> = run
            .lines()
            .filter(|l| l.starts_with(q))
            .take(2)
            .map(|l| l.split(' ').nth(2).unwrap())
            .collect();
        let got: Vec<&str> = g["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["passage_id"].as_str().unwrap())
            .collect();
        assert_eq!(got, top, "{q}");
    }
    let (a, b) = (p.join("u-bm25"), p.join("u-dense"));
    let out = ok(&["compare", s(&a), s(&b), "--resamples", "500"]);
    assert!(
        out.contains("3 questions") && out.contains("| utility@1 |"),
        "{out}"
    );
    assert!(
        out.contains("| best@k |") && out.contains("| helps@1 |"),
        "{out}"
    );
    // Misuses.
    let ranking = p.join("dense/run.trec");
    fails(
        &[
            "label",
            "--split",
            "dev",
            "--candidates",
            "retrieved",
            "--out",
            s(&p.join("x")),
        ],
        &["--ranking"],
    );
    fails(
        &[
            "label",
            "--split",
            "dev",
            "--ranking",
            s(&ranking),
            "--out",
            s(&p.join("x")),
        ],
        &["--candidates retrieved"],
    );
    let bad = p.join("bad.trec");
    let first_q = run.lines().next().unwrap().split(' ').next().unwrap();
    std::fs::write(&bad, format!("{first_q} Q0 no-such-passage 1 0.5 t\n")).unwrap();
    fails(
        &[
            "label",
            "--split",
            "dev",
            "--candidates",
            "retrieved",
            "--ranking",
            s(&bad),
            "--limit",
            "1",
            "--out",
            s(&p.join("y")),
        ],
        &["no-such-passage", "not in the corpus"],
    );
    fails(
        &["compare", s(&a), s(&p.join("dense"))],
        &["not one of each"],
    );
}

/// `--retriever hybrid` ranks each question's passages by reciprocal rank fusion of
/// the dense and the BM25 run (recomputed here from their run files), and
/// `--fusion convex --dense-weight 1` is the dense ranking itself.
#[test]
fn hybrid_eval_fuses_the_dense_and_bm25_runs() {
    let d = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| -> std::collections::BTreeMap<String, Vec<String>> {
        let out = d.path().join(name);
        let mut a = vec!["eval", "--split", "test", "--limit", "6", "--out", s(&out)];
        a.extend_from_slice(extra);
        ok(&a);
        let mut by_q: std::collections::BTreeMap<String, Vec<(u32, String)>> = Default::default();
        for line in std::fs::read_to_string(out.join("run.trec"))
            .unwrap()
            .lines()
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            by_q.entry(f[0].into())
                .or_default()
                .push((f[3].parse().unwrap(), f[2].into()));
        }
        by_q.into_iter()
            .map(|(q, mut v)| {
                v.sort();
                (q, v.into_iter().map(|(_, id)| id).collect())
            })
            .collect()
    };
    let dense = run("dense", &["--retriever", "dense"]);
    let bm25 = run("bm25", &["--retriever", "bm25"]);
    let hybrid = run("hybrid", &["--retriever", "hybrid", "--fusion", "rrf"]);
    let convex = run(
        "convex",
        &[
            "--retriever",
            "hybrid",
            "--fusion",
            "convex",
            "--dense-weight",
            "1",
        ],
    );
    assert_eq!(convex, dense);
    assert!(!hybrid.is_empty());
    for (q, fused) in &hybrid {
        let mut score: std::collections::HashMap<&str, f64> = Default::default();
        for list in [&dense[q], &bm25[q]] {
            for (r, id) in list.iter().enumerate() {
                *score.entry(id.as_str()).or_default() += 1.0 / (60.0 + r as f64 + 1.0);
            }
        }
        // Fused scores never rise down the list.
        let s: Vec<f64> = fused.iter().map(|id| score[id.as_str()]).collect();
        assert!(s.windows(2).all(|w| w[0] >= w[1] - 1e-6), "{q}: {s:?}");
        assert_eq!(fused.len(), score.len(), "{q}");
    }
}

/// Every file a label, train or eval run leaves is read back through its owning
/// type (a file with no owner fails the test): the formats one stage writes and
/// another reads have one reader each.
#[test]
fn every_file_of_a_run_has_an_owner() {
    use uae_artifacts::labels::{LabelManifest, LabelSummary, LabeledGroup, MinedRow};
    use uae_artifacts::scores::{ScorePlan, ScoreRecord, Truncation};
    use uae_artifacts::train::{CheckpointPointer, CheckpointState, MetricsLine, TrainManifest};
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(
        p.join("corpus.jsonl"),
        concat!(
            "{\"id\": \"c1\", \"text\": \"The cat sat on the mat in the kitchen.\"}\n",
            "{\"id\": \"c2\", \"text\": \"The capital of France is Paris.\"}\n",
            "{\"id\": \"c3\", \"text\": \"Rust has no garbage collector.\"}\n",
        ),
    )
    .unwrap();
    std::fs::write(
        p.join("questions.jsonl"),
        concat!(
            "{\"question\": \"Where did the cat sit?\", \"answer\": \"on the mat\", \"positives\": [\"c1\"]}\n",
            "{\"question\": \"What is the capital of France?\", \"answer\": \"Paris\", \"positives\": [\"c2\"]}\n",
        ),
    )
    .unwrap();
    let (corpus, questions) = (p.join("corpus.jsonl"), p.join("questions.jsonl"));
    let (labels, run, eval) = (p.join("labels"), p.join("run"), p.join("eval"));
    let files = ["--corpus", s(&corpus), "--questions", s(&questions)];
    ok(&[
        &["label"][..],
        &files,
        &[
            "--dense-negatives",
            "1",
            "--bm25-negatives",
            "1",
            "--out",
            s(&labels),
        ],
    ]
    .concat());
    let summary = ok(&[
        "train",
        "--labels",
        s(&labels),
        "--checkpoint-every",
        "1",
        "--out",
        s(&run),
    ]);
    // The summary says what each of the two questions trained on.
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let targets = &summary["targets"];
    let kinds = ["utility", "positives", "none"].map(|k| targets[k].as_u64().unwrap());
    assert_eq!(targets["questions"], 2, "{summary}");
    assert_eq!(kinds.iter().sum::<u64>(), 2, "{summary}");
    ok(&[&["eval"][..], &files, &["--out", s(&eval)]].concat());

    let mut read = 0;
    let mut walk = |dir: &Path, owner: &dyn Fn(&Path, &str) -> bool| {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                owner(&path, &name),
                "{}: no owner reads this file",
                path.display()
            );
            read += 1;
        }
    };
    let people = |name: &str| name.ends_with(".svg");
    let lock = |name: &str| name == uae_core::fs::FolderLock::FILE;
    walk(&labels, &|path, name| match name {
        _ if name == LabelManifest::FILE => LabelManifest::read(&labels).unwrap().is_some(),
        _ if name == LabeledGroup::FILE => !LabeledGroup::read_all(&labels).unwrap().is_empty(),
        _ if name == MinedRow::FILE => MinedRow::read_all(&labels).unwrap().is_some(),
        _ if name == LabelSummary::FILE => LabelSummary::read(&labels).unwrap().is_some(),
        _ if name == ScoreRecord::FILE => !uae_core::Store::<ScoreRecord>::open(path)
            .unwrap()
            .is_empty(),
        _ if name == Truncation::FILE => uae_core::Store::<Truncation>::open(path).is_ok(),
        _ if name == ScorePlan::FILE => ScorePlan::read(&labels)
            .unwrap()
            .is_some_and(|p| !p.keys.is_empty()),
        // The mining encoder's embeddings, in pieces (uae_artifacts::embeddings).
        "cache" => std::fs::read_dir(path).unwrap().all(|f| {
            let f = f.unwrap().path();
            uae_artifacts::embeddings::read_npy(&f).unwrap().is_some()
                || f.extension().is_some_and(|x| x == "bin")
        }),
        _ => people(name) || lock(name),
    });
    walk(&run, &|path, name| match name {
        _ if name == TrainManifest::<serde_json::Value>::FILE => {
            TrainManifest::<serde_json::Value>::read(&run)
                .unwrap()
                .is_some()
        }
        _ if name == MetricsLine::FILE => !MetricsLine::read_all(path).unwrap().is_empty(),
        _ if name == CheckpointPointer::FILE => {
            CheckpointPointer::read(&run).is_some_and(|c| run.join(c.dir).is_dir())
        }
        _ if name.starts_with("ckpt-") => {
            type State = CheckpointState<serde_json::Value>;
            State::read(path).is_ok()
                && path.join(State::MODEL).is_file()
                && path.join(State::OPTIMIZER).is_file()
        }
        // The export: a sentence-transformers folder the encoder loads.
        "model" => uae_search::load_encoder(path, false).is_ok(),
        _ => people(name) || lock(name),
    });
    walk(&eval, &|path, name| match name {
        _ if name == uae_search::EvalReport::FILE => {
            uae_search::EvalReport::read(&eval).unwrap().is_some()
        }
        _ if name == uae_search::EvalReport::RUN => {
            !uae_eval::compare::read_run(path).unwrap().is_empty()
        }
        _ if name == uae_search::EvalReport::QRELS => {
            !uae_eval::compare::read_qrels(path).unwrap().is_empty()
        }
        _ => false,
    });
    assert!(read >= 12, "read only {read} files");
}
