//! A label folder: the utility labels, the mined candidates, the manifest that
//! fingerprints how they were made, and the run summary.

use serde::{Deserialize, Serialize};
use std::path::Path;
use uae_core::{Error, Result};

/// Which passages are scored for a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum CandidateMode {
    /// Gold evidence + hard negatives (questions with matched evidence only).
    Gold,
    /// No evidence labels: top dense + top BM25 + random, for every answerable question.
    Mined,
    /// A retriever's own top passages, read from a TREC run file (`uae eval`'s
    /// run.trec): what the LLM gains from what the retriever would hand it.
    Retrieved,
}

/// The prompt layout a label folder was made with, as its manifest records it and
/// as it enters every score key ([`Template::identity`]). `chatml` is SmolLM2-
/// Instruct's user turn without a system message, `plain` a layout for base models,
/// `chat` a Jinja chat template (the model's own, or a file) known by the sha256 of
/// its text; the label crate's `PromptFormat` renders all three.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Template {
    Chatml,
    Plain,
    Chat { sha256: String },
}

impl Template {
    /// The bytes score keys hash for this layout. `chatml` and `plain` keep the
    /// bytes keys have always held (the JSON strings `"chatml"` and `"plain"`), so
    /// stores made before chat templates stay valid; a chat template is
    /// `chat:<sha256 of its text>`. Written out, not derived from serde, so renaming
    /// a variant can never orphan stored scores.
    pub fn identity(&self) -> String {
        match self {
            Template::Chatml => "\"chatml\"".into(),
            Template::Plain => "\"plain\"".into(),
            Template::Chat { sha256 } => format!("chat:{sha256}"),
        }
    }

    /// The text a passage and question make in the user's turn (every layout).
    pub fn user_content(passage: Option<&str>, question: &str) -> String {
        let ctx = passage
            .map(|p| format!("Context: {p}\n\n"))
            .unwrap_or_default();
        format!("{ctx}Question: {question}")
    }

    /// The fixed layouts' prompt text; the answer is appended right after it (for
    /// `plain`, after a space). `None` for a chat template, which needs its text.
    pub fn fixed_prompt(&self, passage: Option<&str>, question: &str) -> Option<String> {
        let user = Self::user_content(passage, question);
        match self {
            Template::Chatml => Some(format!(
                "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
            )),
            Template::Plain => Some(format!("{user}\nAnswer:")),
            Template::Chat { .. } => None,
        }
    }

    /// The answer as it follows the prompt.
    pub fn answer(&self, answer: &str) -> String {
        match self {
            Template::Plain => format!(" {answer}"),
            Template::Chatml | Template::Chat { .. } => answer.to_string(),
        }
    }
}

/// Labeling configuration (recorded in `manifest.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelConfig {
    pub candidates: CandidateMode,
    /// Top-ranked non-gold paragraphs from the base encoder.
    pub dense_negatives: usize,
    /// Top-ranked non-gold paragraphs from BM25.
    pub bm25_negatives: usize,
    /// Uniformly random other paragraphs of the paper.
    pub random_negatives: usize,
    /// Passage truncation, in LLM tokens (the answer is never truncated).
    pub passage_tokens: usize,
    pub template: Template,
    pub seed: u64,
    /// Sequences per LLM forward pass.
    pub max_batch: usize,
    /// Tokens per LLM forward pass.
    pub max_batch_tokens: usize,
    /// Dense mining with the encoder's projections in bf16 (faster; a candidate can
    /// differ from f32 mining where two passages tie within bf16 rounding). Absent
    /// from the manifest when off, so f32 runs read as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mining_bf16: bool,
    /// `retrieved` candidates: how many of each question's top passages, and the
    /// sha256 of the run file they come from (so a resumed run reads the same one).
    /// Absent from other runs' manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieved: Option<Retrieved>,
}

/// Where `retrieved` candidates come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retrieved {
    pub top_k: usize,
    pub run_sha256: String,
}

impl Default for LabelConfig {
    fn default() -> Self {
        LabelConfig {
            candidates: CandidateMode::Gold,
            dense_negatives: 3,
            bm25_negatives: 2,
            random_negatives: 1,
            passage_tokens: 256,
            template: Template::Chatml,
            seed: 0,
            max_batch: 16,
            max_batch_tokens: 4096,
            mining_bf16: false,
            retrieved: None,
        }
    }
}

/// One of `count` deterministic parts of a question set (`--shard index/count`,
/// 1-based): the eligible questions at positions `index-1`, `index-1+count`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Whether the question at `position` of the eligible list is in this shard.
    pub fn contains(&self, position: usize) -> bool {
        position % self.count == self.index - 1
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}`: expected i/n with 1 <= i <= n (for example 2/4)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// `manifest.json` of a label folder: what a resumed run must match, and what the
/// trainer fingerprints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelManifest {
    pub version: String,
    /// The QASPER split, or the questions file's name for your own data.
    pub split: String,
    pub limit: Option<usize>,
    /// The QASPER file or the questions file.
    pub data_file: String,
    /// The corpus file, for your own data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus: Option<String>,
    pub lm: String,
    pub lm_sha256: String,
    pub encoder: String,
    pub config: LabelConfig,
    /// The part of the questions this folder holds (`uae label --shard`); none for a
    /// whole run or a merged folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
}

impl LabelManifest {
    pub const FILE: &'static str = "manifest.json";

    /// The manifest of label folder `dir`, if it has one.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        read_json_if_present(&dir.join(Self::FILE))
    }

    /// Whether the label folder `dir` was made on a corpus of the user's (its
    /// manifest names one), not on QASPER.
    pub fn names_own_corpus(dir: &Path) -> Result<bool> {
        Ok(Self::read(dir)?.is_some_and(|m| m.corpus.is_some()))
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        uae_core::fs::write_json(&dir.join(Self::FILE), self)
    }
}

/// One mined candidate of a question: a passage of the corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub passage_id: String,
    pub is_gold: bool,
    /// Where it came from: gold, dense, bm25, random.
    pub source: String,
}

/// One line of `candidates.jsonl`: a question's mined candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinedRow {
    pub question_id: String,
    pub candidates: Vec<Candidate>,
}

impl MinedRow {
    pub const FILE: &'static str = "candidates.jsonl";

    pub fn write_all(dir: &Path, rows: &[MinedRow]) -> Result<()> {
        uae_core::fs::write_jsonl(&dir.join(Self::FILE), rows)
    }

    /// The rows of `dir/candidates.jsonl`, or `None` when there is no such file or
    /// it is in an older layout (candidates are mined again then: mining is
    /// deterministic, so the scores already stored are all reused).
    pub fn read_all(dir: &Path) -> Result<Option<Vec<MinedRow>>> {
        let path = dir.join(Self::FILE);
        if !path.is_file() {
            return Ok(None);
        }
        match read_jsonl(&path) {
            Ok(rows) => Ok(Some(rows)),
            Err(e) => {
                tracing::warn!("{e}; mining the candidates again");
                Ok(None)
            }
        }
    }
}

/// A labeled question, as the trainer reads it (one line of `labels.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabeledGroup {
    pub question_id: String,
    /// The question's scope (QASPER: the paper id; empty when unscoped).
    pub paper_id: String,
    pub question: String,
    pub answers: Vec<String>,
    /// NLL of each answer without a passage.
    pub nll_without: Vec<f32>,
    pub candidates: Vec<LabeledCandidate>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabeledCandidate {
    pub passage_id: String,
    pub text: String,
    pub is_gold: bool,
    pub source: String,
    /// Mean over answers of NLL(a | q) - NLL(a | p, q).
    pub utility: f32,
    pub per_answer: Vec<f32>,
}

impl LabeledGroup {
    pub const FILE: &'static str = "labels.jsonl";

    pub fn write_all(dir: &Path, groups: &[LabeledGroup]) -> Result<()> {
        uae_core::fs::write_jsonl(&dir.join(Self::FILE), groups)
    }

    /// Reads `labels.jsonl` from a label folder: one group per question. A utility
    /// that is not a finite number (1e39 reads as +inf in f32) is an error naming
    /// the line: it would turn the loss into NaN.
    pub fn read_all(dir: &Path) -> Result<Vec<LabeledGroup>> {
        let path = dir.join(Self::FILE);
        let groups: Vec<(usize, LabeledGroup)> = read_jsonl_lines(&path)?;
        for (line, g) in &groups {
            check_finite(&path, *line, g)?;
        }
        Ok(groups.into_iter().map(|(_, g)| g).collect())
    }
}

/// One question of a [`LabelIndex`]: where its line is and what a list of questions
/// shows of it.
#[derive(Debug, Clone, Serialize)]
pub struct LabelRow {
    /// 0-based position in labels.jsonl.
    pub n: usize,
    pub question_id: String,
    pub question: String,
    pub candidates: usize,
    /// The best candidate's utility (nats); `None` without candidates.
    pub best_utility: Option<f32>,
    /// Whether a candidate is marked as evidence, and whether the best one is.
    pub has_gold: bool,
    pub best_is_gold: bool,
    #[serde(skip)]
    offset: u64,
    #[serde(skip)]
    len: usize,
    #[serde(skip)]
    line: usize,
}

/// A `labels.jsonl` read once for its outline: each question's line offset and
/// summary, and every utility (for histograms). A question's candidates and passages
/// are read from the file when asked for, so a folder of 100,000 questions costs
/// its summaries, not its passages.
pub struct LabelIndex {
    path: std::path::PathBuf,
    pub rows: Vec<LabelRow>,
    /// Every candidate's utility, in file order.
    pub utilities: Vec<f32>,
}

impl LabelIndex {
    /// Scans `dir/labels.jsonl`; errors name the file and line.
    pub fn open(dir: &Path) -> Result<LabelIndex> {
        use std::io::BufRead;
        let path = dir.join(LabeledGroup::FILE);
        let file = std::fs::File::open(&path).map_err(Error::io(&path))?;
        let mut r = std::io::BufReader::new(file);
        let (mut rows, mut utilities) = (Vec::new(), Vec::new());
        let (mut offset, mut line, mut buf) = (0u64, 0usize, Vec::new());
        loop {
            buf.clear();
            let len = r.read_until(b'\n', &mut buf).map_err(Error::io(&path))?;
            if len == 0 {
                break;
            }
            line += 1;
            let at = offset;
            offset += len as u64;
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let g = parse_group(&path, line, &buf)?;
            let best = g
                .candidates
                .iter()
                .max_by(|a, b| a.utility.total_cmp(&b.utility));
            utilities.extend(g.candidates.iter().map(|c| c.utility));
            rows.push(LabelRow {
                n: rows.len(),
                question_id: g.question_id,
                question: g.question,
                candidates: g.candidates.len(),
                best_utility: best.map(|c| c.utility),
                has_gold: g.candidates.iter().any(|c| c.is_gold),
                best_is_gold: best.is_some_and(|c| c.is_gold),
                offset: at,
                len,
                line,
            });
        }
        Ok(LabelIndex {
            path,
            rows,
            utilities,
        })
    }

    /// Question `n` in full, read from the file.
    pub fn group(&self, n: usize) -> Result<Option<LabeledGroup>> {
        use std::io::{Read, Seek};
        let Some(row) = self.rows.get(n) else {
            return Ok(None);
        };
        let mut f = std::fs::File::open(&self.path).map_err(Error::io(&self.path))?;
        f.seek(std::io::SeekFrom::Start(row.offset))
            .map_err(Error::io(&self.path))?;
        let mut buf = vec![0u8; row.len];
        f.read_exact(&mut buf).map_err(Error::io(&self.path))?;
        // The file changed under us if the line no longer parses as that question.
        let g = parse_group(&self.path, row.line, &buf)?;
        if g.question_id != row.question_id {
            return Err(Error::Corrupt {
                path: self.path.clone(),
                line: row.line,
                message: "the file changed since it was opened".into(),
            });
        }
        Ok(Some(g))
    }
}

impl LabelIndex {
    /// The folder's distinct passages as the LLM saw them (after truncation), scoped
    /// by their question's scope, in file order: what `uae explore` searches.
    pub fn passages(&self) -> Result<Vec<uae_core::Passage>> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for r in &self.rows {
            let Some(g) = self.group(r.n)? else { continue };
            for c in g.candidates {
                if seen.insert(c.passage_id.clone()) {
                    out.push(uae_core::Passage {
                        id: c.passage_id,
                        text: c.text,
                        scope: (!g.paper_id.is_empty()).then(|| g.paper_id.clone()),
                        section: None,
                    });
                }
            }
        }
        Ok(out)
    }
}

fn parse_group(path: &Path, line: usize, bytes: &[u8]) -> Result<LabeledGroup> {
    let corrupt = |message: String| Error::Corrupt {
        path: path.to_path_buf(),
        line,
        message,
    };
    let g: LabeledGroup = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    check_finite(path, line, &g)?;
    Ok(g)
}

/// A utility that is not a finite number (1e39 reads as +inf in f32) is an error
/// naming the line: it would turn the loss into NaN.
fn check_finite(path: &Path, line: usize, g: &LabeledGroup) -> Result<()> {
    match g.candidates.iter().find(|c| !c.utility.is_finite()) {
        Some(c) => Err(Error::Corrupt {
            path: path.to_path_buf(),
            line,
            message: format!(
                "utility of `{}` is {} (must be a finite number of nats)",
                c.passage_id, c.utility
            ),
        }),
        None => Ok(()),
    }
}

/// What a trainer must train on, as one digest: the labeling LLM's sha256 (from the
/// folder's manifest; "unknown" without one) and every question, candidate and
/// utility. Returns (LLM sha256, digest).
pub fn fingerprint(dir: &Path, groups: &[LabeledGroup]) -> (String, String) {
    let lm = LabelManifest::read(dir)
        .ok()
        .flatten()
        .map(|m| m.lm_sha256)
        .unwrap_or_else(|| "unknown".into());
    let mut parts: Vec<Vec<u8>> = vec![lm.clone().into_bytes()];
    for g in groups {
        parts.push(g.question_id.clone().into_bytes());
        for c in &g.candidates {
            parts.push(c.passage_id.clone().into_bytes());
            parts.push(c.utility.to_le_bytes().to_vec());
        }
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    (lm, uae_core::hash::digest(&refs))
}

/// What one labeling run did, and what the labels say (`summary.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LabelSummary {
    pub questions: usize,
    /// Questions left out: no reference answer to score.
    #[serde(default)]
    pub skipped_no_answer: usize,
    /// Questions left out in `gold` mode: no positive passage.
    #[serde(default)]
    pub skipped_no_positive: usize,
    /// Questions left out: a prompt with its answer is longer than the LLM's context
    /// even with the passage cut (local scoring; the log names the first 20 by file
    /// and line).
    #[serde(default)]
    pub skipped_too_long: usize,
    /// Their lines in your questions file (the first 1,000; none for QASPER).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_too_long_lines: Vec<usize>,
    /// Rows of the questions file left out as unreadable or invalid (bad JSON or
    /// UTF-8, an empty or over-long question or answer, a repeated id, an unknown
    /// positive); the log names each with its reason.
    #[serde(default)]
    pub skipped_bad_rows: usize,
    /// Their lines in the questions file (the first 1,000).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_bad_lines: Vec<usize>,
    pub candidates: usize,
    pub scores_total: usize,
    pub scores_computed: usize,
    pub scores_reused: usize,
    pub tokens_scored: usize,
    /// Of `tokens_scored`, those not computed again: a prefix shared by several
    /// prompts (one passage scored with several questions, one prompt with several
    /// answers) runs once (local scoring).
    #[serde(default)]
    pub tokens_shared: usize,
    pub seconds: f64,
    pub mean_utility_gold: f64,
    pub mean_utility_non_gold: f64,
    pub gold_candidates: usize,
    pub non_gold_candidates: usize,
    /// Among questions with at least one gold and one non-gold candidate.
    pub best_is_gold_fraction: f64,
    /// How many questions have a best candidate of at least 0.5, 1, 2 and 3 nats
    /// (keys as written): what `uae train --min-utility` would keep.
    #[serde(default)]
    pub questions_best_utility_at_least: std::collections::BTreeMap<String, usize>,
    /// How many questions have a best candidate at least 0.5, 1 and 2 nats ahead of
    /// their second best (keys as written; a lone candidate counts under each): what
    /// `uae train --min-gap` would keep.
    #[serde(default)]
    pub questions_best_gap_at_least: std::collections::BTreeMap<String, usize>,
}

/// The bars [`LabelSummary::questions_best_utility_at_least`] counts, in nats.
pub const BEST_UTILITY_BARS: [f32; 4] = [0.5, 1.0, 2.0, 3.0];

/// The gaps [`LabelSummary::questions_best_gap_at_least`] counts, in nats.
pub const BEST_GAP_BARS: [f32; 3] = [0.5, 1.0, 2.0];

/// A question's best utility and its lead over its second best (infinite for a lone
/// candidate; 0 when two tie); `None` without candidates. What `uae train`'s
/// `--min-utility` and `--min-gap` read, and what the summary counts for them.
pub fn best_and_gap(utility: impl IntoIterator<Item = f32>) -> Option<(f32, f32)> {
    let mut top: Option<(f32, f32)> = None;
    for u in utility {
        top = Some(match top {
            None => (u, f32::NEG_INFINITY),
            Some((best, _)) if u > best => (u, best),
            Some((best, second)) => (best, second.max(u)),
        });
    }
    top.map(|(best, second)| (best, best - second))
}

impl LabelSummary {
    pub const FILE: &'static str = "summary.json";

    pub fn write(&self, dir: &Path) -> Result<()> {
        uae_core::fs::write_json(&dir.join(Self::FILE), self)
    }

    /// The summary of label folder `dir`, if it has one.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        read_json_if_present(&dir.join(Self::FILE))
    }
}

/// Reads a JSON file if it exists; errors name the file.
pub(crate) fn read_json_if_present<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Corrupt {
            path: path.to_path_buf(),
            line: e.line(),
            message: e.to_string(),
        })
}

/// Reads a JSON-lines file (blank lines skipped); errors name the line.
pub(crate) fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    Ok(read_jsonl_lines(path)?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

/// [`read_jsonl`], each row with its 1-based line.
pub(crate) fn read_jsonl_lines<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Vec<(usize, T)>> {
    let f = std::fs::File::open(path).map_err(Error::io(path))?;
    let corrupt = |line: usize, message: String| Error::Corrupt {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut out = Vec::new();
    for item in uae_core::lines::lines(std::io::BufReader::new(f)) {
        let (line, text) = item.map_err(|e| corrupt(e.line(), e.reason()))?;
        if text.trim().is_empty() {
            continue;
        }
        out.push((
            line,
            serde_json::from_str(&text).map_err(|e| corrupt(line, e.to_string()))?,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The best utility and its lead: over the second best in any order, 0 on a tie,
    /// infinite alone, nothing without candidates.
    #[test]
    fn best_and_gap_reads_the_two_best() {
        assert_eq!(best_and_gap([0.1, 2.5, 1.0]), Some((2.5, 1.5)));
        assert_eq!(best_and_gap([2.5, 0.1, 1.0]), Some((2.5, 1.5)));
        assert_eq!(best_and_gap([1.0, 1.0, -3.0]), Some((1.0, 0.0)));
        assert_eq!(best_and_gap([-0.4]), Some((-0.4, f32::INFINITY)));
        assert_eq!(best_and_gap([]), None);
    }

    fn group(id: &str, utilities: &[f32]) -> LabeledGroup {
        LabeledGroup {
            question_id: id.into(),
            paper_id: "p".into(),
            question: "q?".into(),
            answers: vec!["a".into()],
            nll_without: vec![1.0],
            candidates: utilities
                .iter()
                .enumerate()
                .map(|(i, &u)| LabeledCandidate {
                    passage_id: format!("p#{i}"),
                    text: "t".into(),
                    is_gold: i == 0,
                    source: "dense".into(),
                    utility: u,
                    per_answer: vec![u],
                })
                .collect(),
        }
    }

    fn manifest(lm: &str) -> LabelManifest {
        LabelManifest {
            version: "0".into(),
            split: "train".into(),
            limit: None,
            data_file: "d".into(),
            corpus: None,
            lm: "m.gguf".into(),
            lm_sha256: lm.into(),
            encoder: "e".into(),
            config: LabelConfig::default(),
            shard: None,
        }
    }

    #[test]
    fn an_index_outlines_the_file_and_reads_one_question_on_demand() {
        let d = tempfile::tempdir().unwrap();
        let groups = vec![
            group("a", &[0.5, 2.5]),
            group("b", &[]),
            group("c", &[3.0, 1.0]),
        ];
        LabeledGroup::write_all(d.path(), &groups).unwrap();
        let ix = LabelIndex::open(d.path()).unwrap();
        assert_eq!(ix.rows.len(), 3);
        assert_eq!(ix.utilities, vec![0.5, 2.5, 3.0, 1.0]);
        let a = &ix.rows[0];
        assert_eq!((a.candidates, a.best_utility), (2, Some(2.5)));
        assert!(a.has_gold && !a.best_is_gold);
        assert_eq!(ix.rows[1].best_utility, None);
        assert!(ix.rows[2].best_is_gold);
        assert_eq!(ix.group(2).unwrap().unwrap().question_id, "c");
        assert!(ix.group(3).unwrap().is_none());
        let ids: Vec<String> = ix.passages().unwrap().into_iter().map(|p| p.id).collect();
        assert_eq!(ids, ["p#0", "p#1"], "distinct passages, first seen first");
        // A bad line is named by its number.
        let mut text = std::fs::read_to_string(d.path().join(LabeledGroup::FILE)).unwrap();
        text.push_str("\n{\"question_id\": 1}\n");
        std::fs::write(d.path().join(LabeledGroup::FILE), text).unwrap();
        let e = LabelIndex::open(d.path()).err().unwrap().to_string();
        assert!(e.contains("labels.jsonl") && e.contains('5'), "{e}");
    }

    /// The fingerprint changes with any utility, candidate or the labeling LLM, and
    /// with nothing else (texts, answers and per-answer values do not enter it).
    #[test]
    fn fingerprint_follows_utilities_candidates_and_llm() {
        let d = tempfile::tempdir().unwrap();
        let groups = vec![group("q1", &[1.0, 0.5]), group("q2", &[0.0])];
        let (lm, base) = fingerprint(d.path(), &groups);
        assert_eq!(lm, "unknown");
        let mut other = groups.clone();
        other[1].candidates[0].utility = 0.25;
        assert_ne!(fingerprint(d.path(), &other).1, base);
        let mut other = groups.clone();
        other[0].candidates[1].passage_id = "p#9".into();
        assert_ne!(fingerprint(d.path(), &other).1, base);
        let mut same = groups.clone();
        same[0].candidates[0].text = "another text".into();
        same[0].answers = vec!["b".into()];
        assert_eq!(fingerprint(d.path(), &same).1, base);
        manifest("abc").write(d.path()).unwrap();
        let (lm, with_llm) = fingerprint(d.path(), &groups);
        assert_eq!(lm, "abc");
        assert_ne!(with_llm, base);
    }

    #[test]
    fn labels_and_candidates_round_trip_and_bad_lines_name_the_line() {
        let d = tempfile::tempdir().unwrap();
        let groups = vec![group("q1", &[1.0, 0.5])];
        LabeledGroup::write_all(d.path(), &groups).unwrap();
        let back = LabeledGroup::read_all(d.path()).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].candidates[1].utility, 0.5);
        assert!(MinedRow::read_all(d.path()).unwrap().is_none());
        let rows = vec![MinedRow {
            question_id: "q1".into(),
            candidates: vec![Candidate {
                passage_id: "p#3".into(),
                is_gold: false,
                source: "bm25".into(),
            }],
        }];
        MinedRow::write_all(d.path(), &rows).unwrap();
        assert_eq!(MinedRow::read_all(d.path()).unwrap().unwrap(), rows);
        let mut huge = serde_json::to_string(&group("q2", &[1.0])).unwrap();
        huge = huge.replace("\"utility\":1.0", "\"utility\":1e39");
        std::fs::write(d.path().join(LabeledGroup::FILE), format!("\n{huge}\n")).unwrap();
        let e = LabeledGroup::read_all(d.path()).unwrap_err().to_string();
        assert!(e.contains("labels.jsonl:2") && e.contains("inf"), "{e}");
        std::fs::write(d.path().join(LabeledGroup::FILE), "{}\n\nnot json\n").unwrap();
        let e = LabeledGroup::read_all(d.path()).unwrap_err().to_string();
        assert!(e.contains("labels.jsonl:1"), "{e}");
        let m = manifest("x");
        m.write(d.path()).unwrap();
        assert_eq!(
            LabelManifest::read(d.path()).unwrap().unwrap().lm_sha256,
            "x"
        );
    }

    /// Score keys of the fixed layouts keep the bytes they held before chat templates
    /// (the serde JSON of the old enum), and manifests written then still read.
    #[test]
    fn template_identity_is_stable() {
        assert_eq!(Template::Chatml.identity(), "\"chatml\"");
        assert_eq!(Template::Plain.identity(), "\"plain\"");
        let chat = Template::Chat {
            sha256: "ab".into(),
        };
        assert_eq!(chat.identity(), "chat:ab");
        let old: Template = serde_json::from_str("\"chatml\"").unwrap();
        assert_eq!(old, Template::Chatml);
        let back: Template = serde_json::from_str(&serde_json::to_string(&chat).unwrap()).unwrap();
        assert_eq!(back, chat);
    }
}
