//! Arbitrary bytes as TREC run and qrels files: a parse, or an error naming the file
//! and the line; never a panic.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use uae_eval::compare::{read_qrels, read_run};

fn trecish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        proptest::collection::vec(
            prop_oneof![
                Just(b"q1 Q0 d1 1 0.5 uae\n".to_vec()),
                Just(b"q1 0 d1 1\n".to_vec()),
                Just(b"q1 Q0 d1 x nan\n".to_vec()),
                Just(b"\xef\xbb\xbfq2 Q0 d2 2 0.1\r\n".to_vec()),
                Just(b"\xff\xfe\n".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..16),
            ],
            0..8
        )
        .prop_map(|v| v.concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn run_and_qrels_readers_name_the_line(b in trecish()) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run.trec");
        std::fs::write(&p, &b).unwrap();
        for r in [read_run(&p).err(), read_qrels(&p).err()].into_iter().flatten() {
            let m = r.to_string();
            prop_assert!(m.contains("run.trec, line "), "{}", m);
        }
    }
}

#[test]
fn a_byte_order_mark_and_crlf_are_not_part_of_the_first_field() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("qrels.trec");
    std::fs::write(&p, b"\xef\xbb\xbfq1 0 d1 1\r\nq1 0 d2 0\r\n").unwrap();
    let q = read_qrels(&p).unwrap();
    assert_eq!(q["q1"]["d1"], 1);
    assert_eq!(q["q1"]["d2"], 0);
}
