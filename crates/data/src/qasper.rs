//! QASPER v0.3 in its official JSON layout (see `../shared/data/qasper/README.md`).
//!
//! Passages are the paragraphs of `full_text`, numbered 0.. in document order across
//! sections; empty paragraphs keep their number but are never retrievable. Gold
//! evidence is the union, over a question's answerable annotations, of its text
//! evidence (not `FLOAT SELECTED` figure/table evidence), matched to paragraphs by
//! whitespace-normalised text.

use crate::{open_maybe_gz, Collection, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use uae_core::{normalize_ws, Passage, Query};

/// The three QASPER splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Dev,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Test => "test",
        }
    }
}

impl std::str::FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "dev" | "validation" => Ok(Split::Dev),
            "test" => Ok(Split::Test),
            _ => Err(Error::UnknownSplit {
                name: s.to_string(),
            }),
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where QASPER is looked for when no directory is given: `$UAE_DATA_DIR`, else
/// `../shared/data/qasper` relative to the current directory.
/// Where QASPER is looked for when neither `--data-dir` nor `UAE_DATA_DIR` says.
pub const DEFAULT_DATA_DIR: &str = "../shared/data/qasper";

pub fn default_data_dir() -> PathBuf {
    std::env::var_os("UAE_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

#[derive(Deserialize)]
struct RawPaper {
    title: String,
    #[serde(rename = "abstract")]
    abstract_text: String,
    full_text: Vec<RawSection>,
    qas: Vec<RawQa>,
}

#[derive(Deserialize)]
struct RawSection {
    #[serde(default)]
    section_name: Option<String>,
    paragraphs: Vec<Option<String>>,
}

#[derive(Deserialize)]
struct RawQa {
    question: String,
    question_id: String,
    answers: Vec<RawAnswerWrap>,
}

#[derive(Deserialize)]
struct RawAnswerWrap {
    answer: RawAnswer,
}

#[derive(Deserialize)]
struct RawAnswer {
    unanswerable: bool,
    #[serde(default)]
    extractive_spans: Vec<String>,
    #[serde(default)]
    yes_no: Option<bool>,
    #[serde(default)]
    free_form_answer: String,
    #[serde(default)]
    evidence: Vec<String>,
}

/// One paragraph of a paper's full text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Paragraph {
    /// 0-based position among all paragraphs of `full_text`, empty ones included.
    pub n: usize,
    pub section: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Paper {
    pub id: String,
    pub title: String,
    pub abstract_text: String,
    pub paragraphs: Vec<Paragraph>,
}

impl Paper {
    /// The passage id of paragraph `n`: `{paper_id}#{n}`.
    pub fn passage_id(&self, n: usize) -> String {
        format!("{}#{}", self.id, n)
    }
}

/// What an annotator answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AnswerKind {
    Extractive(Vec<String>),
    FreeForm(String),
    YesNo(bool),
    Unanswerable,
}

/// The field of an exported QASPER question (`uae data export-qasper`) that lists its
/// answer types, for `uae eval --by answer_type`.
pub const ANSWER_TYPES: &str = "answer_types";

impl AnswerKind {
    /// QASPER's name of the answer type: `extractive` (spans of the paper),
    /// `abstractive` (free form), `yes_no` or `unanswerable`.
    pub fn type_name(&self) -> &'static str {
        match self {
            AnswerKind::Extractive(_) => "extractive",
            AnswerKind::FreeForm(_) => "abstractive",
            AnswerKind::YesNo(_) => "yes_no",
            AnswerKind::Unanswerable => "unanswerable",
        }
    }
}

/// One annotator's answer and the evidence they marked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    pub kind: AnswerKind,
    pub evidence: Vec<String>,
}

impl Answer {
    /// The reference answer string, by QASPER's own convention: extractive spans
    /// joined with ", ", else the free-form answer, else "Yes"/"No". `None` for
    /// unanswerable annotations.
    pub fn reference(&self) -> Option<String> {
        match &self.kind {
            AnswerKind::Extractive(spans) => Some(spans.join(", ")),
            AnswerKind::FreeForm(s) => Some(s.clone()),
            AnswerKind::YesNo(true) => Some("Yes".into()),
            AnswerKind::YesNo(false) => Some("No".into()),
            AnswerKind::Unanswerable => None,
        }
    }

    /// The reference string used for Token F1, where unanswerable is "Unanswerable".
    pub fn f1_reference(&self) -> String {
        self.reference().unwrap_or_else(|| "Unanswerable".into())
    }
}

fn to_answer(raw: RawAnswer) -> Answer {
    let kind = if raw.unanswerable {
        AnswerKind::Unanswerable
    } else if !raw.extractive_spans.is_empty() {
        AnswerKind::Extractive(raw.extractive_spans)
    } else if !raw.free_form_answer.trim().is_empty() {
        AnswerKind::FreeForm(raw.free_form_answer)
    } else {
        // QASPER's evaluator: `"Yes" if yes_no else "No"` once nothing else is set.
        AnswerKind::YesNo(raw.yes_no.unwrap_or(false))
    };
    Answer {
        kind,
        evidence: raw.evidence,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Question {
    pub id: String,
    pub paper_id: String,
    /// Index of the paper in [`Qasper::papers`].
    pub paper: usize,
    pub text: String,
    pub answers: Vec<Answer>,
    /// Gold evidence paragraphs (numbers `n` within the paper), sorted, unique.
    pub gold: Vec<usize>,
}

impl Question {
    /// Distinct reference answers of the answerable annotations, in annotation order.
    pub fn references(&self) -> Vec<String> {
        distinct(self.answers.iter().filter_map(Answer::reference))
    }

    /// The distinct types of its annotations ([`AnswerKind::type_name`]), in
    /// annotation order: a question that two annotators answered differently has two.
    pub fn answer_types(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for a in &self.answers {
            let t = a.kind.type_name();
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    /// Distinct Token F1 references of every annotation ("Unanswerable" included).
    pub fn f1_references(&self) -> Vec<String> {
        distinct(self.answers.iter().map(Answer::f1_reference))
    }
}

/// Non-blank strings, first occurrence of each, in order.
fn distinct(all: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in all {
        if !r.trim().is_empty() && !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// One split of QASPER, parsed.
#[derive(Debug, Clone)]
pub struct Qasper {
    pub split: Split,
    pub path: PathBuf,
    pub papers: Vec<Paper>,
    pub questions: Vec<Question>,
}

/// Counts printed by `uae data stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QasperStats {
    pub split: Split,
    pub papers: usize,
    pub questions: usize,
    pub evaluable_questions: usize,
    pub answerable_questions: usize,
    pub paragraphs: usize,
    pub evidence_strings: usize,
    pub evidence_matched: usize,
    pub evidence_float: usize,
}

impl QasperStats {
    /// The markdown table `uae data stats` prints, one row per split.
    pub fn table(all: &[QasperStats]) -> String {
        let mut t = String::from("| split | papers | questions | evaluable | answerable | paragraphs | evidence (text matched / figure-table / all) |\n|---|---|---|---|---|---|---|\n");
        for s in all {
            t += &format!(
                "| {} | {} | {} | {} | {} | {} | {} / {} / {} |\n",
                s.split,
                s.papers,
                s.questions,
                s.evaluable_questions,
                s.answerable_questions,
                s.paragraphs,
                s.evidence_matched,
                s.evidence_float,
                s.evidence_strings
            );
        }
        t
    }
}

impl Qasper {
    /// Loads `qasper-{split}-v0.3.json.gz` (or `.json`) from `dir`.
    pub fn load_split(dir: &Path, split: Split) -> Result<Self> {
        let base = format!("qasper-{}-v0.3.json", split.name());
        for name in [format!("{base}.gz"), base.clone()] {
            let p = dir.join(&name);
            if p.is_file() {
                return Self::load(&p, split);
            }
        }
        Err(Error::MissingSplit {
            path: dir.join(format!("{base}.gz")),
        })
    }

    /// Loads one QASPER file (plain or gzip JSON).
    pub fn load(path: &Path, split: Split) -> Result<Self> {
        let reader = open_maybe_gz(path)?;
        let raw: BTreeMap<String, RawPaper> =
            serde_json::from_reader(reader).map_err(|source| Error::Json {
                path: path.to_path_buf(),
                source,
            })?;
        if raw.is_empty() {
            return Err(Error::Empty {
                path: path.to_path_buf(),
                what: "the paper list",
            });
        }
        let mut papers = Vec::with_capacity(raw.len());
        let mut questions = Vec::new();
        for (paper_id, rp) in raw {
            let mut paragraphs = Vec::new();
            let mut n = 0;
            for sec in rp.full_text {
                for p in sec.paragraphs {
                    paragraphs.push(Paragraph {
                        n,
                        section: sec.section_name.clone(),
                        text: p.unwrap_or_default(),
                    });
                    n += 1;
                }
            }
            let mut by_text: HashMap<String, Vec<usize>> = HashMap::new();
            for p in &paragraphs {
                let key = normalize_ws(&p.text);
                if !key.is_empty() {
                    by_text.entry(key).or_default().push(p.n);
                }
            }
            let paper_idx = papers.len();
            for qa in rp.qas {
                let answers: Vec<Answer> = qa
                    .answers
                    .into_iter()
                    .map(|w| to_answer(w.answer))
                    .collect();
                let mut gold: Vec<usize> = answers
                    .iter()
                    .filter(|a| a.kind != AnswerKind::Unanswerable)
                    .flat_map(|a| a.evidence.iter())
                    .filter(|e| !e.starts_with("FLOAT SELECTED"))
                    .filter_map(|e| by_text.get(&normalize_ws(e)))
                    .flatten()
                    .copied()
                    .collect();
                gold.sort_unstable();
                gold.dedup();
                questions.push(Question {
                    id: qa.question_id,
                    paper_id: paper_id.clone(),
                    paper: paper_idx,
                    text: qa.question,
                    answers,
                    gold,
                });
            }
            papers.push(Paper {
                id: paper_id,
                title: rp.title,
                abstract_text: rp.abstract_text,
                paragraphs,
            });
        }
        Ok(Qasper {
            split,
            path: path.to_path_buf(),
            papers,
            questions,
        })
    }

    pub fn stats(&self) -> QasperStats {
        let mut s = QasperStats {
            split: self.split,
            papers: self.papers.len(),
            questions: self.questions.len(),
            evaluable_questions: self.questions.iter().filter(|q| !q.gold.is_empty()).count(),
            answerable_questions: self
                .questions
                .iter()
                .filter(|q| !q.references().is_empty())
                .count(),
            paragraphs: self
                .papers
                .iter()
                .flat_map(|p| &p.paragraphs)
                .filter(|p| !p.text.trim().is_empty())
                .count(),
            evidence_strings: 0,
            evidence_matched: 0,
            evidence_float: 0,
        };
        for q in &self.questions {
            let paper = &self.papers[q.paper];
            let texts: std::collections::HashSet<String> = paper
                .paragraphs
                .iter()
                .map(|p| normalize_ws(&p.text))
                .collect();
            for a in q
                .answers
                .iter()
                .filter(|a| a.kind != AnswerKind::Unanswerable)
            {
                for e in &a.evidence {
                    s.evidence_strings += 1;
                    if e.starts_with("FLOAT SELECTED") {
                        s.evidence_float += 1;
                    } else if texts.contains(&normalize_ws(e)) {
                        s.evidence_matched += 1;
                    }
                }
            }
        }
        s
    }

    /// Retrievable passages: every non-empty paragraph, scoped to its paper.
    pub fn passages(&self) -> Vec<Passage> {
        self.papers
            .iter()
            .flat_map(|paper| {
                paper
                    .paragraphs
                    .iter()
                    .filter(|p| !p.text.trim().is_empty())
                    .map(|p| Passage {
                        id: paper.passage_id(p.n),
                        scope: Some(paper.id.clone()),
                        section: p.section.clone(),
                        text: p.text.clone(),
                    })
            })
            .collect()
    }

    /// Every question as a query scoped to its paper; gold is empty for questions
    /// without matched text evidence (they are left out of retrieval metrics).
    pub fn queries(&self) -> Vec<Query> {
        self.questions
            .iter()
            .map(|q| {
                let paper = &self.papers[q.paper];
                Query {
                    id: q.id.clone(),
                    text: q.text.clone(),
                    scope: Some(q.paper_id.clone()),
                    gold: q.gold.iter().map(|&n| (paper.passage_id(n), 1)).collect(),
                }
            })
            .collect()
    }

    pub fn collection(&self) -> Collection {
        Collection {
            name: format!("qasper-{}", self.split),
            passages: self.passages(),
            queries: self.queries(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TINY: &str = r#"{
      "p1": {"title": "T", "abstract": "A", "figures_and_tables": [],
        "full_text": [
          {"section_name": "Intro", "paragraphs": ["First  para.", "", "Second para\nhere."]},
          {"section_name": "Method", "paragraphs": ["Third."]}],
        "qas": [
          {"question": "q1?", "question_id": "q1", "answers": [
            {"answer": {"unanswerable": false, "extractive_spans": ["a", "b"], "yes_no": null,
              "free_form_answer": "", "evidence": ["Second para here.", "FLOAT SELECTED: Table 1"],
              "highlighted_evidence": []}},
            {"answer": {"unanswerable": true, "extractive_spans": [], "yes_no": null,
              "free_form_answer": "", "evidence": ["Third."], "highlighted_evidence": []}}]},
          {"question": "q2?", "question_id": "q2", "answers": [
            {"answer": {"unanswerable": false, "extractive_spans": [], "yes_no": false,
              "free_form_answer": "", "evidence": ["FLOAT SELECTED: Fig"], "highlighted_evidence": []}}]}
        ]}}"#;

    fn tiny() -> Qasper {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("q.json");
        std::fs::File::create(&p)
            .unwrap()
            .write_all(TINY.as_bytes())
            .unwrap();
        Qasper::load(&p, Split::Test).unwrap()
    }

    #[test]
    fn paragraphs_are_numbered_with_empty_ones_counted() {
        let q = tiny();
        let ids: Vec<String> = q.passages().into_iter().map(|p| p.id).collect();
        assert_eq!(ids, vec!["p1#0", "p1#2", "p1#3"]);
    }

    #[test]
    fn gold_matches_text_evidence_of_answerable_annotations_only() {
        let q = tiny();
        // "Second para here." matches paragraph 2 after whitespace normalisation;
        // FLOAT SELECTED and the unanswerable annotation's evidence are ignored.
        assert_eq!(q.questions[0].gold, vec![2]);
        assert!(q.questions[1].gold.is_empty());
        assert_eq!(q.stats().evaluable_questions, 1);
        assert_eq!(q.questions[0].references(), vec!["a, b".to_string()]);
        assert_eq!(q.questions[1].references(), vec!["No".to_string()]);
    }

    #[test]
    fn answer_types_are_each_annotation_s_distinct_kind() {
        let q = tiny();
        assert_eq!(
            q.questions[0].answer_types(),
            vec!["extractive", "unanswerable"]
        );
        assert_eq!(q.questions[1].answer_types(), vec!["yes_no"]);
        // The generic form carries them as a field, written back by export.
        let set = q.qa_set();
        assert_eq!(
            set.questions[1].fields[ANSWER_TYPES],
            serde_json::json!(["yes_no"])
        );
    }

    #[test]
    fn gzip_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.json");
        std::fs::write(&p, "{\"p1\": {\"title\": 3}}").unwrap();
        let msg = Qasper::load(&p, Split::Dev).unwrap_err().to_string();
        assert!(
            msg.contains("bad.json") && msg.contains("invalid type"),
            "{msg}"
        );
        std::fs::write(&p, "{}").unwrap();
        let msg = Qasper::load(&p, Split::Dev).unwrap_err().to_string();
        assert!(msg.contains("empty"), "{msg}");
        let gz = dir.path().join("ok.json.gz");
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::fast(),
        );
        enc.write_all(TINY.as_bytes()).unwrap();
        enc.finish().unwrap();
        assert_eq!(Qasper::load(&gz, Split::Dev).unwrap().questions.len(), 2);
        let missing = Qasper::load_split(dir.path(), Split::Train)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("qasper-train-v0.3.json.gz"), "{missing}");
    }
}
