//! Candidate mining: which passages the LLM scores for a question. Its positives
//! (in `gold` mode), the base encoder's and BM25's top other passages (the
//! near-misses the bi-encoder must learn to push down), and random ones (the low
//! end of the utility scale), seeded per question so that reruns mine the same set.
//! Candidates come from the question's scope (QASPER: its paper), or from the
//! whole corpus for unscoped questions.

use crate::Result;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use uae_artifacts::labels::{Candidate, CandidateMode, LabelConfig, MinedRow};
use uae_core::hash::sha;
use uae_core::{Hit, Lcg64, Passage, Progress, Query};
use uae_data::QaSet;
use uae_encoder::BatchOptions;
use uae_index::{Bm25Params, ScopedBm25, Scopes};
use uae_search::DenseSearcher;

/// Each question to label (index into the set's questions) with its candidates.
pub type Mined = Vec<(usize, Vec<Candidate>)>;

/// How deep the dense and BM25 rankings are read for candidates.
const RANK_DEPTH: usize = 50;

/// A question's candidates. `members` are the passages it may draw from (its
/// scope's, in corpus order), `gold` its positives, `dense` and `bm25` its rankings
/// (all corpus positions into `corpus`, best first).
pub fn mine(
    corpus: &[Passage],
    question_id: &str,
    members: &[usize],
    gold: &BTreeSet<usize>,
    dense: &[usize],
    bm25: &[usize],
    cfg: &LabelConfig,
) -> Vec<Candidate> {
    let mut chosen: Vec<(usize, &str)> = Vec::new();
    let taken = |i: usize, chosen: &[(usize, &str)]| chosen.iter().any(|c| c.0 == i);
    let skip_gold = cfg.candidates == CandidateMode::Gold;
    if skip_gold {
        chosen.extend(gold.iter().map(|&i| (i, "gold")));
    }
    for (list, k, name) in [
        (dense, cfg.dense_negatives, "dense"),
        (bm25, cfg.bm25_negatives, "bm25"),
    ] {
        let mut n = 0;
        for &i in list {
            if n == k {
                break;
            }
            if (skip_gold && gold.contains(&i)) || taken(i, &chosen) {
                continue;
            }
            chosen.push((i, name));
            n += 1;
        }
    }
    // Random passages, from a generator seeded by (seed, question id): stable across runs.
    let mut pool: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&i| {
            !corpus[i].text.trim().is_empty()
                && !taken(i, &chosen)
                && (!skip_gold || !gold.contains(&i))
        })
        .collect();
    let mut rng = Lcg64::new(u64::from_le_bytes(
        sha(&[&cfg.seed.to_le_bytes(), question_id.as_bytes()])[..8]
            .try_into()
            .expect("8 bytes; this is a bug"),
    ));
    for _ in 0..cfg.random_negatives.min(pool.len()) {
        let i = pool.swap_remove(rng.below(pool.len()));
        chosen.push((i, "random"));
    }
    chosen
        .into_iter()
        .map(|(i, source)| Candidate {
            passage_id: corpus[i].id.clone(),
            is_gold: gold.contains(&i),
            source: source.into(),
        })
        .collect()
}

/// Passages embedded (and cached) per piece when mining with a cache folder.
pub const EMBED_CHUNK: usize = 8192;

/// Ranks the passages that the `eligible` questions may draw from with the base
/// encoder in `encoder_dir` and with BM25, and mines each question's candidates.
/// With `cache_dir`, the passage embeddings are cached there in pieces of
/// [`EMBED_CHUNK`], so a run killed while embedding a large corpus resumes from the
/// last finished piece.
pub fn mine_all(
    set: &QaSet,
    eligible: &[usize],
    encoder_dir: &Path,
    cfg: &LabelConfig,
    cache_dir: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Mined> {
    // Only the scopes involved (all of the corpus if a question is unscoped).
    let scopes: HashSet<&str> = eligible
        .iter()
        .filter_map(|&i| set.questions[i].scope.as_deref())
        .collect();
    let everything = eligible.iter().any(|&i| set.questions[i].scope.is_none());
    let passages: Vec<Passage> = set
        .corpus
        .iter()
        .filter(|p| everything || p.scope.as_deref().is_some_and(|s| scopes.contains(s)))
        .cloned()
        .collect();
    let position: HashMap<&str, usize> = passages
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    let enc = uae_search::load_encoder(encoder_dir, cfg.mining_bf16)?;
    let vecs = match cache_dir {
        None => uae_search::embed_passages(
            &enc,
            &passages,
            BatchOptions::default(),
            "mining",
            progress,
        )?,
        Some(dir) => {
            let pieces = passages.len().div_ceil(EMBED_CHUNK);
            let mut vecs = Vec::with_capacity(passages.len());
            for (i, chunk) in passages.chunks(EMBED_CHUNK).enumerate() {
                vecs.extend(uae_search::cached_passage_embeddings(
                    &format!("mining {}/{pieces}", i + 1),
                    &enc,
                    encoder_dir,
                    chunk,
                    dir,
                    progress,
                )?);
            }
            vecs
        }
    };
    let dense = DenseSearcher::new(&passages, &vecs)?;
    let bm25 = if everything {
        ScopedBm25::with_global(&passages, Bm25Params::default())
    } else {
        ScopedBm25::new(&passages, Bm25Params::default())
    };
    let members = Scopes::new(&passages);
    let qtexts: Vec<&str> = eligible
        .iter()
        .map(|&i| set.questions[i].question.as_str())
        .collect();
    let qvecs = enc.embed(&qtexts).map_err(uae_search::Error::from)?;
    // Corpus-wide questions: one blocked exact search for all of them.
    let wide: Vec<Vec<f32>> = eligible
        .iter()
        .zip(&qvecs)
        .filter(|(&i, _)| set.questions[i].scope.is_none())
        .map(|(_, v)| v.clone())
        .collect();
    let mut wide_hits = dense.index.search_all(&wide, RANK_DEPTH)?.into_iter();
    let positions = |hits: Vec<Hit>| -> Vec<usize> { hits.iter().map(|h| h.passage).collect() };
    let mut items = Vec::new();
    for (&qi, qv) in eligible.iter().zip(&qvecs) {
        let q = &set.questions[qi];
        let query = Query {
            id: q.id.clone(),
            text: q.question.clone(),
            scope: q.scope.clone(),
            gold: Vec::new(),
        };
        let cands = members.candidates(&query);
        let by_dense = positions(match q.scope {
            None => wide_hits.next().unwrap_or_default(),
            Some(_) => dense.top(qv, cands, Some(RANK_DEPTH))?,
        });
        let by_bm25 = positions(bm25.search(&query, Some(RANK_DEPTH)));
        let gold: BTreeSet<usize> = q
            .positives
            .iter()
            .filter_map(|p| position.get(p.as_str()).copied())
            .collect();
        items.push((
            qi,
            mine(&passages, &q.id, cands, &gold, &by_dense, &by_bm25, cfg),
        ));
    }
    Ok(items)
}

/// `candidates.jsonl` rows for mined items.
pub fn rows(set: &QaSet, items: &Mined) -> Vec<MinedRow> {
    items
        .iter()
        .map(|(qi, c)| MinedRow {
            question_id: set.questions[*qi].id.clone(),
            candidates: c.clone(),
        })
        .collect()
}

/// Candidates mined by an earlier run into `dir` (the manifest check has already
/// established that the config matches); `None` if absent or for other questions.
pub fn read_mined(dir: &Path, set: &QaSet, eligible: &[usize]) -> Result<Option<Mined>> {
    let Some(rows) = MinedRow::read_all(dir)? else {
        return Ok(None);
    };
    if rows.len() != eligible.len()
        || rows
            .iter()
            .zip(eligible)
            .any(|(r, &qi)| r.question_id != set.questions[qi].id)
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

    /// One scope of 12 passages (number 5 empty); positives 1 and 2.
    fn corpus() -> Vec<Passage> {
        (0..12)
            .map(|n| Passage {
                id: format!("p#{n}"),
                scope: Some("p".into()),
                section: None,
                text: if n == 5 {
                    " ".into()
                } else {
                    format!("paragraph {n}")
                },
            })
            .collect()
    }

    fn run(cfg: &LabelConfig, dense: &[usize], bm25: &[usize]) -> Vec<Candidate> {
        let c = corpus();
        let members: Vec<usize> = (0..12).collect();
        mine(&c, "q", &members, &BTreeSet::from([1, 2]), dense, bm25, cfg)
    }

    fn sources(c: &[Candidate]) -> Vec<(&str, &str, bool)> {
        c.iter()
            .map(|c| (c.passage_id.as_str(), c.source.as_str(), c.is_gold))
            .collect()
    }

    /// Gold mode: every positive, then the top 3 dense and top 2 BM25 that are
    /// neither positive nor taken, then one random passage that is none of those and
    /// not empty.
    #[test]
    fn gold_mode_takes_gold_then_non_gold_near_misses_then_random() {
        let c = run(
            &LabelConfig::default(),
            &[2, 7, 1, 8, 9, 10],
            &[8, 1, 3, 7, 4],
        );
        assert_eq!(
            sources(&c[..7]),
            vec![
                ("p#1", "gold", true),
                ("p#2", "gold", true),
                ("p#7", "dense", false),
                ("p#8", "dense", false),
                ("p#9", "dense", false),
                ("p#3", "bm25", false),
                ("p#4", "bm25", false),
            ]
        );
        assert_eq!(c.len(), 8);
        let r = &c[7];
        assert_eq!((r.source.as_str(), r.is_gold), ("random", false));
        let taken = ["p#1", "p#2", "p#3", "p#4", "p#5", "p#7", "p#8", "p#9"];
        assert!(
            !taken.contains(&r.passage_id.as_str()),
            "random {}",
            r.passage_id
        );
    }

    /// Mined mode never looks at the positives to choose: those the rankings bring
    /// are kept (and marked, for reporting only).
    #[test]
    fn mined_mode_ignores_gold_when_choosing() {
        let cfg = LabelConfig {
            candidates: CandidateMode::Mined,
            ..Default::default()
        };
        let c = run(&cfg, &[2, 7, 1, 8], &[8, 1, 3]);
        assert_eq!(
            sources(&c[..5]),
            vec![
                ("p#2", "dense", true),
                ("p#7", "dense", false),
                ("p#1", "dense", true),
                ("p#8", "bm25", false),
                ("p#3", "bm25", false),
            ]
        );
        assert_eq!(c.len(), 6);
    }

    /// The random negatives are a function of (seed, question id): the same run
    /// mines the same set, another seed (almost always) another one.
    #[test]
    fn random_negatives_follow_the_seed() {
        let cfg = |seed| LabelConfig {
            random_negatives: 4,
            dense_negatives: 0,
            bm25_negatives: 0,
            seed,
            ..Default::default()
        };
        let pick = |seed| -> Vec<String> {
            run(&cfg(seed), &[], &[])
                .into_iter()
                .filter(|c| c.source == "random")
                .map(|c| c.passage_id)
                .collect()
        };
        assert_eq!(pick(0), pick(0));
        assert_eq!(pick(0).len(), 4);
        assert!((1..20).any(|s| pick(s) != pick(0)));
        // More random negatives than passages left: all of them, no repeats.
        let all = run(
            &LabelConfig {
                random_negatives: 50,
                ..cfg(0)
            },
            &[],
            &[],
        );
        assert_eq!(all.len(), 11, "12 passages less the empty one");
    }
}
