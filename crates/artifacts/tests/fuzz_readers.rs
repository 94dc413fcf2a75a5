//! Arbitrary bytes in the files stages hand each other: an error, never a panic.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use uae_artifacts::embeddings::EmbeddingCache;
use uae_artifacts::labels::{LabelManifest, LabeledGroup, MinedRow};
use uae_artifacts::train::MetricsLine;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn label_and_metrics_readers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512), n in 0usize..4, dim in 0usize..8) {
        let d = tempfile::tempdir().unwrap();
        for f in ["labels.jsonl", "candidates.jsonl", "manifest.json", "metrics.jsonl"] {
            std::fs::write(d.path().join(f), &b).unwrap();
        }
        // An error names the file and the line (`labels.jsonl:N: ...`).
        for e in [
            LabeledGroup::read_all(d.path()).err(),
            MinedRow::read_all(d.path()).err(),
        ]
        .into_iter()
        .flatten()
        {
            let m = e.to_string();
            let named = ["labels.jsonl:", "candidates.jsonl:"]
                .iter()
                .filter_map(|f| m.find(f).map(|at| &m[at + f.len()..]))
                .any(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
            prop_assert!(named, "{}", m);
        }
        let _ = LabelManifest::read(d.path());
        let _ = MetricsLine::read_all(&d.path().join("metrics.jsonl"));
        let _ = MetricsLine::trim_after(&d.path().join("metrics.jsonl"), 3);
        let c = EmbeddingCache::new(d.path(), "fp", false, &["a"]);
        std::fs::write(&c.path, &b).unwrap();
        let _ = c.load(n, dim);
    }
}
