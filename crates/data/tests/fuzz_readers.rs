//! Arbitrary bytes fed to every reader of user files: an error (naming the file), never
//! a panic. Bounded case counts keep this in the default suite.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use std::path::Path;
use uae_core::Passage;
use uae_data::{load_beir, read_corpus_jsonl, QaSet, Qasper, Split};

/// Bytes that are sometimes JSON-lines-shaped, so parsing gets past the first byte.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        proptest::collection::vec(
            prop_oneof![
                Just(b"{\"id\": \"a\", \"text\": \"x\"}\n".to_vec()),
                Just(b"{\"_id\": 1, \"title\": null}\n".to_vec()),
                Just(
                    b"{\"question\": \"q\", \"answers\": [\"a\"], \"positives\": [\"a\"]}\n"
                        .to_vec()
                ),
                Just(b"{\"question\": \"q\", \"answer\": 3}\n".to_vec()),
                Just(b"q1\ta\t1\n".to_vec()),
                Just(b"\xff\xfe\n".to_vec()),
                Just(b"{\"papers\": [".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..16),
            ],
            0..8
        )
        .prop_map(|v| v.concat()),
    ]
}

fn corpus() -> Vec<Passage> {
    vec![Passage {
        id: "a".into(),
        scope: None,
        section: None,
        text: "x".into(),
    }]
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bytes).unwrap();
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn corpus_and_questions_readers_never_panic(c in jsonish(), q in jsonish()) {
        let d = tempfile::tempdir().unwrap();
        let cp = write(d.path(), "corpus.jsonl", &c);
        let qp = write(d.path(), "questions.jsonl", &q);
        if let Err(e) = read_corpus_jsonl(&cp) {
            prop_assert!(e.to_string().contains("corpus.jsonl"));
        }
        if let Err(e) = QaSet::read("t", corpus(), &qp) {
            prop_assert!(e.to_string().contains("questions.jsonl"));
        }
        let _ = QaSet::load(&cp, &qp);
    }

    #[test]
    fn beir_reader_never_panics(c in jsonish(), q in jsonish(), r in jsonish()) {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "corpus.jsonl", &c);
        write(d.path(), "queries.jsonl", &q);
        write(d.path(), "qrels/test.tsv", &r);
        let _ = load_beir(d.path(), "test");
    }

    #[test]
    fn qasper_reader_never_panics(b in jsonish()) {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "qasper-test-v0.3.json", &b);
        if let Err(e) = Qasper::load(&p, Split::Test) {
            prop_assert!(e.to_string().contains("qasper-test-v0.3.json"));
        }
    }
}

/// Whether an error message names `file` with a line (`file:N`), or is one of the
/// whole-file errors (missing, empty) that have no line.
fn names_file_and_line(msg: &str, file: &str) -> bool {
    let Some(at) = msg.find(file) else {
        return false;
    };
    let rest = &msg[at + file.len()..];
    let has_line = rest
        .strip_prefix(':')
        .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
    has_line || msg.contains("is empty") || msg.contains("No such file")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_error_names_file_and_line(c in jsonish(), q in jsonish(), r in jsonish()) {
        let d = tempfile::tempdir().unwrap();
        let cp = write(d.path(), "corpus.jsonl", &c);
        let qp = write(d.path(), "questions.jsonl", &q);
        write(d.path(), "queries.jsonl", &q);
        write(d.path(), "qrels/test.tsv", &r);
        if let Err(e) = read_corpus_jsonl(&cp) {
            let m = e.to_string();
            prop_assert!(names_file_and_line(&m, "corpus.jsonl"), "{}", m);
        }
        if let Err(e) = QaSet::read("t", corpus(), &qp) {
            let m = e.to_string();
            prop_assert!(names_file_and_line(&m, "questions.jsonl"), "{}", m);
        }
        if let Err(e) = load_beir(d.path(), "test") {
            let m = e.to_string();
            prop_assert!(
                ["corpus.jsonl", "queries.jsonl", "test.tsv"].iter().any(|f| names_file_and_line(&m, f)),
                "{}", m
            );
        }
    }
}
