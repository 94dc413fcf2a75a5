//! `uae bench mine`: corpus-wide candidate mining at scale. A corpus of word windows
//! cut from every QASPER paragraph (all three splits, cycled with a shifted window
//! when more passages are asked for than that yields) and as many questions (QASPER's
//! own, then pseudo-questions from passage openings), none scoped: each question's
//! dense and BM25 candidates come from the whole corpus, through the same
//! [`uae_label::mine_all`] that `uae label --corpus ... --candidates mined` runs.

use crate::{Error, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;
use uae_core::{Passage, Progress};
use uae_data::{QaItem, QaSet, Qasper};
use uae_label::{CandidateMode, LabelConfig};

#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct MineBench {
    /// The base bi-encoder that ranks the dense candidates.
    #[cfg_attr(feature = "cli", arg(long, default_value = uae_search::DEFAULT_ENCODER))]
    pub encoder: PathBuf,
    /// Passages in the corpus (>= 1).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <MineBench as Default>::default().passages, value_parser = uae_core::flags::count()))]
    pub passages: usize,
    /// Questions mined (>= 1).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <MineBench as Default>::default().questions, value_parser = uae_core::flags::count()))]
    pub questions: usize,
    /// Words per passage window (1-400).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <MineBench as Default>::default().words, value_parser = uae_core::flags::count_in(1, 400)))]
    pub words: usize,
}

impl Default for MineBench {
    fn default() -> Self {
        MineBench {
            encoder: PathBuf::from(uae_search::DEFAULT_ENCODER),
            passages: 200_000,
            questions: 10_000,
            words: 48,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct MineReport {
    pub bench: &'static str,
    pub encoder: String,
    pub threads: usize,
    pub passages: usize,
    pub questions: usize,
    pub words_per_passage: usize,
    pub candidates: usize,
    pub seconds: f64,
    pub questions_per_s: f64,
    /// Peak resident memory of the process (Linux `VmHWM`), MiB; `None` elsewhere.
    pub peak_rss_mib: Option<f64>,
}

/// The synthetic corpus and questions (deterministic for given sizes).
pub fn synthetic_set(splits: &[Qasper], passages: usize, questions: usize, words: usize) -> QaSet {
    let paragraphs: Vec<(&str, usize, &str)> = splits
        .iter()
        .flat_map(|q| &q.papers)
        .flat_map(|p| {
            p.paragraphs
                .iter()
                .enumerate()
                .map(move |(n, para)| (p.id.as_str(), n, para.text.as_str()))
        })
        .collect();
    let mut corpus = Vec::with_capacity(passages);
    let mut round = 0;
    while corpus.len() < passages && !paragraphs.is_empty() {
        // Round r starts its windows r * words / 2 words in (mod the window), so a
        // second pass over the same text gives other passages.
        let shift = (round * words / 2) % words.max(1);
        for &(paper, n, text) in &paragraphs {
            let w: Vec<&str> = text.split_whitespace().collect();
            let mut start = if shift < w.len() { shift } else { 0 };
            let mut piece = 0;
            while start < w.len() && corpus.len() < passages {
                let end = (start + words).min(w.len());
                corpus.push(Passage {
                    id: format!("{paper}#{n}.{round}.{piece}"),
                    scope: None,
                    section: None,
                    text: w[start..end].join(" "),
                });
                start = end;
                piece += 1;
            }
            if corpus.len() == passages {
                break;
            }
        }
        round += 1;
    }
    let mut items: Vec<QaItem> = splits
        .iter()
        .flat_map(|q| &q.questions)
        .take(questions)
        .map(|q| QaItem {
            id: q.id.clone(),
            question: q.text.clone(),
            answers: Vec::new(),
            scope: None,
            positives: Vec::new(),
            fields: Default::default(),
            line: None,
        })
        .collect();
    let mut i = 0;
    while items.len() < questions && !corpus.is_empty() {
        let p = &corpus[(i * 7919) % corpus.len()];
        let opening: Vec<&str> = p.text.split_whitespace().take(12).collect();
        items.push(QaItem {
            id: format!("pseudo-{i}"),
            question: opening.join(" "),
            answers: Vec::new(),
            scope: None,
            positives: Vec::new(),
            fields: Default::default(),
            line: None,
        });
        i += 1;
    }
    QaSet {
        name: "bench-mine".into(),
        corpus,
        questions: items,
        source: PathBuf::from("synthetic"),
    }
}

/// Peak resident set size of this process in MiB (Linux), from `/proc/self/status`.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn mine(b: &MineBench, splits: &[Qasper], progress: &dyn Progress) -> Result<MineReport> {
    if b.passages == 0 || b.questions == 0 || b.words == 0 {
        return Err(Error::Invalid {
            what: "bench mine",
            message: "--passages, --questions and --words must be >= 1".into(),
        });
    }
    let set = synthetic_set(splits, b.passages, b.questions, b.words);
    if set.corpus.len() < b.passages || set.questions.len() < b.questions {
        return Err(Error::Invalid {
            what: "bench mine",
            message: format!(
                "could build only {} passages and {} questions",
                set.corpus.len(),
                set.questions.len()
            ),
        });
    }
    let cfg = LabelConfig {
        candidates: CandidateMode::Mined,
        ..LabelConfig::default()
    };
    let eligible: Vec<usize> = (0..set.questions.len()).collect();
    let t = Instant::now();
    let mined =
        uae_label::mine_all(&set, &eligible, &b.encoder, &cfg, None, progress).map_err(|e| {
            Error::Invalid {
                what: "bench mine",
                message: e.to_string(),
            }
        })?;
    let seconds = t.elapsed().as_secs_f64();
    Ok(MineReport {
        bench: "mine",
        encoder: b.encoder.display().to_string(),
        threads: rayon::current_num_threads(),
        passages: set.corpus.len(),
        questions: set.questions.len(),
        words_per_passage: b.words,
        candidates: mined.iter().map(|(_, c)| c.len()).sum(),
        seconds,
        questions_per_s: set.questions.len() as f64 / seconds,
        peak_rss_mib: peak_rss_mib(),
    })
}
