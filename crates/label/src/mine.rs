//! Candidate mining: which passages of a question's paper the LLM scores. Gold
//! evidence (in `gold` mode), the base encoder's and BM25's top non-gold passages
//! (the near-misses the bi-encoder must learn to push down), and random ones (the low
//! end of the utility scale), seeded per question so that reruns mine the same set.

use crate::Result;
use std::collections::BTreeSet;
use std::path::Path;
use uae_artifacts::labels::{Candidate, CandidateMode, LabelConfig, MinedRow};
use uae_core::hash::sha;
use uae_core::{Hit, Lcg64, Progress};
use uae_data::Qasper;
use uae_encoder::BatchOptions;
use uae_index::{Bm25Params, ScopedBm25};
use uae_search::DenseSearcher;

/// Each question to label (index into the split's questions) with its candidates.
pub type Mined = Vec<(usize, Vec<Candidate>)>;

/// Candidates for question `q` (index into `qasper.questions`). `dense` and `bm25` are
/// that question's rankings (paragraph numbers, best first).
pub fn mine(
    qasper: &Qasper,
    q: usize,
    dense: &[usize],
    bm25: &[usize],
    cfg: &LabelConfig,
) -> Vec<Candidate> {
    let question = &qasper.questions[q];
    let paper = &qasper.papers[question.paper];
    let gold: BTreeSet<usize> = question.gold.iter().copied().collect();
    let mut out: Vec<Candidate> = Vec::new();
    let push = |n: usize, source: &str, out: &mut Vec<Candidate>| {
        if !out.iter().any(|c| c.n == n) {
            out.push(Candidate {
                n,
                is_gold: gold.contains(&n),
                source: source.into(),
            });
        }
    };
    let skip_gold = cfg.candidates == CandidateMode::Gold;
    if skip_gold {
        for &n in &gold {
            push(n, "gold", &mut out);
        }
    }
    for (list, k, name) in [
        (dense, cfg.dense_negatives, "dense"),
        (bm25, cfg.bm25_negatives, "bm25"),
    ] {
        let mut taken = 0;
        for &n in list {
            if taken == k {
                break;
            }
            if (skip_gold && gold.contains(&n)) || out.iter().any(|c| c.n == n) {
                continue;
            }
            push(n, name, &mut out);
            taken += 1;
        }
    }
    // Random paragraphs, from a generator seeded by (seed, question id): stable across runs.
    let pool: Vec<usize> = paper
        .paragraphs
        .iter()
        .filter(|p| {
            !p.text.trim().is_empty()
                && !out.iter().any(|c| c.n == p.n)
                && (!skip_gold || !gold.contains(&p.n))
        })
        .map(|p| p.n)
        .collect();
    let mut rng = Lcg64::new(u64::from_le_bytes(
        sha(&[&cfg.seed.to_le_bytes(), question.id.as_bytes()])[..8]
            .try_into()
            .expect("8 bytes; this is a bug"),
    ));
    let mut pool = pool;
    for _ in 0..cfg.random_negatives.min(pool.len()) {
        let n = pool.swap_remove(rng.below(pool.len()));
        push(n, "random", &mut out);
    }
    out
}

/// Turns rankings of corpus positions into paragraph numbers within each question's paper.
pub fn paragraph_numbers(hits: &[Hit], passage_ids: &[String]) -> Vec<usize> {
    hits.iter()
        .filter_map(|h| {
            passage_ids[h.passage]
                .rsplit_once('#')
                .and_then(|(_, n)| n.parse().ok())
        })
        .collect()
}

/// Ranks the paragraphs of the papers of `eligible` questions with the base encoder
/// in `encoder_dir` and with BM25, and mines each question's candidates.
pub fn mine_all(
    qasper: &Qasper,
    eligible: &[usize],
    encoder_dir: &Path,
    cfg: &LabelConfig,
    progress: &dyn Progress,
) -> Result<Mined> {
    let papers: BTreeSet<&str> = eligible
        .iter()
        .map(|&i| qasper.questions[i].paper_id.as_str())
        .collect();
    let coll = qasper.collection();
    let passages: Vec<uae_core::Passage> = coll
        .passages
        .iter()
        .filter(|p| p.scope.as_deref().is_some_and(|s| papers.contains(s)))
        .cloned()
        .collect();
    let ids: Vec<String> = passages.iter().map(|p| p.id.clone()).collect();
    let enc = uae_search::load_encoder(encoder_dir, false)?;
    let vecs =
        uae_search::embed_passages(&enc, &passages, BatchOptions::default(), "mining", progress)?;
    let dense = DenseSearcher::new(&passages, &vecs)?;
    let bm25 = ScopedBm25::new(&passages, Bm25Params::default());
    let qtexts: Vec<&str> = eligible
        .iter()
        .map(|&i| qasper.questions[i].text.as_str())
        .collect();
    let qvecs = enc.embed(&qtexts).map_err(uae_search::Error::from)?;
    let mut items = Vec::new();
    for (&qi, qv) in eligible.iter().zip(&qvecs) {
        let query = &coll.queries[qi];
        let by_dense = paragraph_numbers(
            &dense.top(qv, dense.scopes.candidates(query), Some(50))?,
            &ids,
        );
        let by_bm25 = paragraph_numbers(&bm25.search(query, Some(50)), &ids);
        items.push((qi, mine(qasper, qi, &by_dense, &by_bm25, cfg)));
    }
    Ok(items)
}

/// `candidates.jsonl` rows for mined items.
pub fn rows(qasper: &Qasper, items: &Mined) -> Vec<MinedRow> {
    items
        .iter()
        .map(|(qi, c)| MinedRow {
            question_id: qasper.questions[*qi].id.clone(),
            candidates: c.clone(),
        })
        .collect()
}

/// Candidates mined by an earlier run into `dir` (the manifest check has already
/// established that the config matches); `None` if absent or for other questions.
pub fn read_mined(dir: &Path, qasper: &Qasper, eligible: &[usize]) -> Result<Option<Mined>> {
    let Some(rows) = MinedRow::read_all(dir)? else {
        return Ok(None);
    };
    if rows.len() != eligible.len()
        || rows
            .iter()
            .zip(eligible)
            .any(|(r, &qi)| r.question_id != qasper.questions[qi].id)
    {
        return Ok(None);
    }
    Ok(Some(
        eligible
            .iter()
            .copied()
            .zip(rows.into_iter().map(|r| r.candidates))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uae_data::{Answer, AnswerKind, Paper, Paragraph, Question, Split};

    /// One paper of 12 paragraphs (number 5 empty), one question with gold 1 and 2.
    fn qasper() -> Qasper {
        let paragraphs = (0..12)
            .map(|n| Paragraph {
                n,
                section: None,
                text: if n == 5 {
                    " ".into()
                } else {
                    format!("paragraph {n}")
                },
            })
            .collect();
        Qasper {
            split: Split::Train,
            path: "mem".into(),
            papers: vec![Paper {
                id: "p".into(),
                title: "t".into(),
                abstract_text: String::new(),
                paragraphs,
            }],
            questions: vec![Question {
                id: "q".into(),
                paper_id: "p".into(),
                paper: 0,
                text: "what?".into(),
                answers: vec![Answer {
                    kind: AnswerKind::FreeForm("an answer".into()),
                    evidence: vec![],
                }],
                gold: vec![1, 2],
            }],
        }
    }

    fn sources(c: &[Candidate]) -> Vec<(usize, &str, bool)> {
        c.iter()
            .map(|c| (c.n, c.source.as_str(), c.is_gold))
            .collect()
    }

    /// Gold mode: every gold paragraph, then the top 3 dense and top 2 BM25 that are
    /// neither gold nor taken, then one random paragraph that is none of those and
    /// not empty.
    #[test]
    fn gold_mode_takes_gold_then_non_gold_near_misses_then_random() {
        let q = qasper();
        let cfg = LabelConfig::default();
        let dense = [2, 7, 1, 8, 9, 10];
        let bm25 = [8, 1, 3, 7, 4];
        let c = mine(&q, 0, &dense, &bm25, &cfg);
        assert_eq!(
            sources(&c[..7]),
            vec![
                (1, "gold", true),
                (2, "gold", true),
                (7, "dense", false),
                (8, "dense", false),
                (9, "dense", false),
                (3, "bm25", false),
                (4, "bm25", false),
            ]
        );
        assert_eq!(c.len(), 8);
        let r = &c[7];
        assert_eq!((r.source.as_str(), r.is_gold), ("random", false));
        assert!(![1, 2, 3, 4, 5, 7, 8, 9].contains(&r.n), "random {}", r.n);
    }

    /// Mined mode never looks at gold to choose: gold paragraphs the rankings bring
    /// are kept (and marked, for reporting only).
    #[test]
    fn mined_mode_ignores_gold_when_choosing() {
        let q = qasper();
        let cfg = LabelConfig {
            candidates: CandidateMode::Mined,
            ..Default::default()
        };
        let c = mine(&q, 0, &[2, 7, 1, 8], &[8, 1, 3], &cfg);
        assert_eq!(
            sources(&c[..5]),
            vec![
                (2, "dense", true),
                (7, "dense", false),
                (1, "dense", true),
                (8, "bm25", false),
                (3, "bm25", false),
            ]
        );
        assert_eq!(c.len(), 6);
    }

    /// The random negatives are a function of (seed, question id): the same run
    /// mines the same set, another seed (almost always) another one.
    #[test]
    fn random_negatives_follow_the_seed() {
        let q = qasper();
        let cfg = |seed| LabelConfig {
            random_negatives: 4,
            dense_negatives: 0,
            bm25_negatives: 0,
            seed,
            ..Default::default()
        };
        let pick = |seed| -> Vec<usize> {
            mine(&q, 0, &[], &[], &cfg(seed))
                .iter()
                .filter(|c| c.source == "random")
                .map(|c| c.n)
                .collect()
        };
        assert_eq!(pick(0), pick(0));
        assert_eq!(pick(0).len(), 4);
        assert!((1..20).any(|s| pick(s) != pick(0)));
        // More random negatives than paragraphs left: all of them, no repeats.
        let all = mine(
            &q,
            0,
            &[],
            &[],
            &LabelConfig {
                random_negatives: 50,
                ..cfg(0)
            },
        );
        assert_eq!(all.len(), 11, "12 paragraphs less the empty one");
    }

    #[test]
    fn paragraph_numbers_come_from_passage_ids() {
        let ids = vec!["p#3".to_string(), "p#10".into(), "odd".into()];
        let hits = [1, 0, 2].map(|passage| Hit {
            passage,
            score: 0.0,
        });
        assert_eq!(paragraph_numbers(&hits, &ids), vec![10, 3]);
    }
}
