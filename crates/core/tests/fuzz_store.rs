//! Arbitrary bytes in a durable store: it opens (truncating a torn tail) or reports the
//! corrupt line; it never panics.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use uae_core::{Keyed, Store};

#[derive(Serialize, Deserialize)]
struct R {
    k: String,
    v: f32,
}

impl Keyed for R {
    fn key(&self) -> &str {
        &self.k
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn store_open_never_panics(b in proptest::collection::vec(any::<u8>(), 0..512)) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.jsonl");
        std::fs::write(&p, &b).unwrap();
        match Store::<R>::open(&p) {
            Ok(mut s) => s.append(vec![R { k: "new".into(), v: 1.0 }]).unwrap(),
            Err(e) => prop_assert!(e.to_string().contains("s.jsonl")),
        }
    }
}
