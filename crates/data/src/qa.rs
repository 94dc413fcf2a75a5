//! Your own data: a corpus and a file of questions with reference answers, and
//! optionally the passages that hold the evidence.
//!
//! Questions JSONL, one object per line:
//! `{"id"?, "question", "answers": [...] or "answer", "scope"?, "positives"?: [ids]}`.
//! `answers` are what the LLM scores (needed to label); `positives` are optional
//! evidence (needed for `--candidates gold`, for InfoNCE on evidence, and for
//! Recall/MAP). `scope` restricts candidates and retrieval to passages of the same
//! scope (QASPER: the paper); without it the whole corpus is searched.

use crate::{read_jsonl_lenient, Collection, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use uae_core::{Passage, Query};

/// One question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QaItem {
    pub id: String,
    pub question: String,
    /// Distinct non-blank reference answers (may be empty: then it is not labelled).
    pub answers: Vec<String>,
    pub scope: Option<String>,
    /// Passage ids of the evidence (may be empty).
    pub positives: Vec<String>,
    /// The row's other fields, kept as they are (written back by [`QaSet::write`],
    /// read by `uae eval --by FIELD`); QASPER's carry `answer_types`.
    #[serde(flatten)]
    pub fields: BTreeMap<String, serde_json::Value>,
    /// The row's line in your questions file (not written; `None` for QASPER), so a
    /// question left out later is named by file and line.
    #[serde(skip)]
    pub line: Option<usize>,
}

/// A corpus and its questions, checked against each other.
#[derive(Debug, Clone)]
pub struct QaSet {
    pub name: String,
    pub corpus: Vec<Passage>,
    pub questions: Vec<QaItem>,
    /// Where the questions came from (recorded in manifests).
    pub source: PathBuf,
}

#[derive(Deserialize)]
struct QaLine {
    #[serde(default)]
    id: Option<IdValue>,
    question: String,
    #[serde(default)]
    answers: Option<Vec<String>>,
    #[serde(default)]
    answer: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    positives: Vec<String>,
    #[serde(flatten)]
    fields: BTreeMap<String, serde_json::Value>,
}

/// Question ids may be strings or numbers.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue {
    Str(String),
    Num(serde_json::Number),
}

/// The longest question or reference answer, in bytes: no LLM context holds more
/// (128k tokens are about 512 KiB of English), and a longer one is refused before it
/// is tokenised, where it would take gigabytes.
pub const MAX_QA_TEXT_BYTES: usize = 1 << 20;

/// A row of a questions file that was left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedRow {
    /// 1-based line in the file.
    pub line: usize,
    /// The question's id, when the row got far enough to have one.
    pub id: Option<String>,
    pub reason: String,
}

impl QaSet {
    /// Reads a questions JSONL file against `corpus`. Errors name the file and
    /// line: malformed JSON or UTF-8, an empty question, a question or answer over
    /// [`MAX_QA_TEXT_BYTES`], a repeated id, a positive that is not a passage of the
    /// corpus, or one outside the question's scope, or a scope with no passages.
    pub fn read(name: &str, corpus: Vec<Passage>, questions: &Path) -> Result<QaSet> {
        let (set, mut skipped) = Self::read_rows(name, corpus, questions, false)?;
        match skipped.pop() {
            Some(row) => Err(Error::JsonLine {
                path: questions.to_path_buf(),
                line: row.line,
                message: row.reason,
            }),
            None => Ok(set),
        }
    }

    /// [`QaSet::read`] that leaves out each bad row (the reasons `read` refuses it
    /// for) instead of failing, and returns them: for long jobs, where one bad line
    /// of 100,000 must not stop the run. Still an error: a file that cannot be read,
    /// or one with no good row.
    pub fn read_skipping(
        name: &str,
        corpus: Vec<Passage>,
        questions: &Path,
    ) -> Result<(QaSet, Vec<SkippedRow>)> {
        Self::read_rows(name, corpus, questions, true)
    }

    fn read_rows(
        name: &str,
        corpus: Vec<Passage>,
        questions: &Path,
        keep_going: bool,
    ) -> Result<(QaSet, Vec<SkippedRow>)> {
        let by_id: HashMap<&str, &Passage> = corpus.iter().map(|p| (p.id.as_str(), p)).collect();
        let scopes: HashSet<&str> = corpus.iter().filter_map(|p| p.scope.as_deref()).collect();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let (rows, bad) = read_jsonl_lenient::<QaLine>(questions, keep_going)?;
        let mut skipped: Vec<SkippedRow> = bad
            .into_iter()
            .map(|(line, reason)| SkippedRow {
                line,
                id: None,
                reason,
            })
            .collect();
        if !keep_going && !skipped.is_empty() {
            return Ok((Self::empty(name, corpus, questions), skipped));
        }
        for (line, row) in rows {
            let id = match &row.id {
                Some(IdValue::Str(s)) => s.clone(),
                Some(IdValue::Num(n)) => n.to_string(),
                None => format!("q{line}"),
            };
            match check_row(&row, &id, &mut seen, &scopes, &by_id).map(|q| QaItem {
                line: Some(line),
                ..q
            }) {
                Ok(item) => out.push(item),
                Err(reason) => {
                    skipped.push(SkippedRow {
                        line,
                        id: Some(id),
                        reason,
                    });
                    if !keep_going {
                        break;
                    }
                }
            }
        }
        skipped.sort_by_key(|r| r.line);
        if out.is_empty() && (keep_going || skipped.is_empty()) {
            return Err(match skipped.first() {
                Some(first) => Error::JsonLine {
                    path: questions.to_path_buf(),
                    line: first.line,
                    message: format!(
                        "no usable question in the file ({} rows left out; this one: {})",
                        skipped.len(),
                        first.reason
                    ),
                },
                None => Error::Empty {
                    path: questions.to_path_buf(),
                    what: "the questions file",
                },
            });
        }
        let mut set = Self::empty(name, corpus, questions);
        set.questions = out;
        Ok((set, skipped))
    }

    fn empty(name: &str, corpus: Vec<Passage>, questions: &Path) -> QaSet {
        QaSet {
            name: name.to_string(),
            corpus,
            questions: Vec::new(),
            source: questions.to_path_buf(),
        }
    }

    /// Reads a corpus (a JSONL file, or a BEIR folder's `corpus.jsonl`) and a
    /// questions file.
    pub fn load(corpus: &Path, questions: &Path) -> Result<QaSet> {
        QaSet::read(&set_name(questions), crate::read_corpus(corpus)?, questions)
    }

    /// [`QaSet::load`] with [`QaSet::read_skipping`]'s leniency.
    pub fn load_skipping(corpus: &Path, questions: &Path) -> Result<(QaSet, Vec<SkippedRow>)> {
        QaSet::read_skipping(&set_name(questions), crate::read_corpus(corpus)?, questions)
    }

    /// The retrieval view: queries with their positives as relevant (grade 1).
    pub fn collection(&self) -> Collection {
        Collection {
            name: self.name.clone(),
            passages: self.corpus.clone(),
            queries: self
                .questions
                .iter()
                .map(|q| Query {
                    id: q.id.clone(),
                    text: q.question.clone(),
                    scope: q.scope.clone(),
                    gold: q.positives.iter().map(|p| (p.clone(), 1)).collect(),
                })
                .collect(),
        }
    }
}

/// A questions file's set name: its file name without the extension.
pub(crate) fn set_name(questions: &Path) -> String {
    questions
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "questions".into())
}

/// One row checked against the corpus: the question, or why it cannot be used.
fn check_row(
    row: &QaLine,
    id: &str,
    seen: &mut HashSet<String>,
    scopes: &HashSet<&str>,
    by_id: &HashMap<&str, &Passage>,
) -> std::result::Result<QaItem, String> {
    if row.question.trim().is_empty() {
        return Err("`question` is empty".into());
    }
    let texts = std::iter::once(&row.question)
        .chain(row.answers.iter().flatten())
        .chain(&row.answer);
    if let Some(t) = texts.clone().find(|t| t.len() > MAX_QA_TEXT_BYTES) {
        return Err(format!(
            "a question or answer of {} bytes, over the {MAX_QA_TEXT_BYTES}-byte limit",
            t.len()
        ));
    }
    if !seen.insert(id.to_string()) {
        return Err(format!("question id `{id}` appears twice"));
    }
    if let Some(s) = &row.scope {
        if !scopes.contains(s.as_str()) {
            return Err(format!("scope `{s}` has no passages in the corpus"));
        }
    }
    for p in &row.positives {
        let Some(passage) = by_id.get(p.as_str()) else {
            return Err(format!("positive `{p}` is not a passage id of the corpus"));
        };
        if row.scope.is_some() && passage.scope != row.scope {
            return Err(format!(
                "positive `{p}` is outside the question's scope `{}`",
                row.scope.as_deref().unwrap_or_default()
            ));
        }
    }
    let mut answers: Vec<String> = Vec::new();
    for a in texts.skip(1) {
        if !a.trim().is_empty() && !answers.contains(a) {
            answers.push(a.clone());
        }
    }
    let mut positives: Vec<String> = Vec::new();
    for p in &row.positives {
        if !positives.contains(p) {
            positives.push(p.clone());
        }
    }
    Ok(QaItem {
        id: id.to_string(),
        question: row.question.clone(),
        answers,
        scope: row.scope.clone(),
        positives,
        fields: row.fields.clone(),
        line: None,
    })
}

impl crate::Qasper {
    /// The split in the generic form: passages as [`Qasper::passages`] (ids
    /// `{paper_id}#{n}`, scope = paper), every question with its distinct answerable
    /// references as answers and its matched gold evidence as positives.
    pub fn qa_set(&self) -> QaSet {
        QaSet {
            name: format!("qasper-{}", self.split),
            corpus: self.passages(),
            questions: self
                .questions
                .iter()
                .map(|q| {
                    let paper = &self.papers[q.paper];
                    QaItem {
                        id: q.id.clone(),
                        question: q.text.clone(),
                        answers: q.references(),
                        scope: Some(q.paper_id.clone()),
                        positives: q.gold.iter().map(|&n| paper.passage_id(n)).collect(),
                        fields: BTreeMap::from([(
                            crate::qasper::ANSWER_TYPES.to_string(),
                            serde_json::json!(q.answer_types()),
                        )]),
                        line: None,
                    }
                })
                .collect(),
            source: self.path.clone(),
        }
    }
}

/// One line of an exported corpus.
#[derive(Serialize)]
struct CorpusOut<'a> {
    id: &'a str,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

impl QaSet {
    /// Writes `dir/corpus.jsonl` and `dir/questions.jsonl` in the formats
    /// [`QaSet::load`] reads.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |e: uae_core::Error| match e {
                uae_core::Error::Io { source, .. } => Error::Io {
                    path: path.clone(),
                    source,
                },
                other => Error::Io {
                    path: path.clone(),
                    source: std::io::Error::other(other.to_string()),
                },
            }
        };
        let corpus: Vec<CorpusOut> = self
            .corpus
            .iter()
            .map(|p| CorpusOut {
                id: &p.id,
                text: &p.text,
                scope: p.scope.as_deref(),
            })
            .collect();
        let c = dir.join("corpus.jsonl");
        uae_core::fs::write_jsonl(&c, &corpus).map_err(io(&c))?;
        let q = dir.join("questions.jsonl");
        uae_core::fs::write_jsonl(&q, &self.questions).map_err(io(&q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<Passage> {
        ["a#0", "a#1", "b#0"]
            .iter()
            .map(|id| Passage {
                id: id.to_string(),
                scope: Some(id[..1].to_string()),
                section: None,
                text: format!("text of {id}"),
            })
            .collect()
    }

    fn read(lines: &str) -> Result<QaSet> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("q.jsonl");
        std::fs::write(&p, lines).unwrap();
        QaSet::read("t", corpus(), &p)
    }

    #[test]
    fn reads_answers_ids_and_positives() {
        let s = read(concat!(
            r#"{"question": "q1?", "answers": ["x", "x", " "], "answer": "y", "scope": "a", "positives": ["a#1"]}"#,
            "\n",
            r#"{"id": 7, "question": "q2?"}"#,
            "\n"
        ))
        .unwrap();
        assert_eq!(s.questions[0].id, "q1");
        assert_eq!(s.questions[0].answers, vec!["x", "y"]);
        assert_eq!(s.questions[1].id, "7");
        assert!(s.questions[1].answers.is_empty());
        let c = s.collection();
        assert_eq!(c.queries[0].gold, vec![("a#1".to_string(), 1)]);
        assert_eq!(c.evaluable().count(), 1);
    }

    #[test]
    fn bad_lines_name_the_file_the_line_and_the_problem() {
        let cases = [
            (
                "{\"question\": \"q\", \"positives\": [\"zz\"]}\n",
                "`zz` is not a passage id",
            ),
            (
                "{\"question\": \"q\", \"scope\": \"a\", \"positives\": [\"b#0\"]}\n",
                "outside the question's scope",
            ),
            (
                "{\"question\": \"q\", \"scope\": \"c\"}\n",
                "scope `c` has no passages",
            ),
            ("{\"question\": \" \"}\n", "`question` is empty"),
            (
                "{\"id\": \"x\", \"question\": \"q\"}\n{\"id\": \"x\", \"question\": \"r\"}\n",
                "appears twice",
            ),
            ("not json\n", "q.jsonl:1"),
            ("\n", "empty"),
        ];
        for (text, needle) in cases {
            let e = read(text).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("q.jsonl"), "{text:?}: {e}");
        }
        let e = read("{\"question\": \"q\"}\n{\"question\": \"q\", \"positives\": [\"zz\"]}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("q.jsonl:2"), "{e}");
        let long = format!(
            "{{\"question\": \"{}\"}}\n",
            "x".repeat(MAX_QA_TEXT_BYTES + 1)
        );
        let e = read(&long).unwrap_err().to_string();
        assert!(e.contains("q.jsonl:1") && e.contains("-byte limit"), "{e}");
    }

    #[test]
    fn skipping_reads_leave_out_bad_rows_by_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("q.jsonl");
        let mut bytes = b"{\"question\": \"q1\", \"answer\": \"a\"}\n".to_vec();
        bytes.extend_from_slice(b"{\"question\": \"\xff\"}\n");
        bytes.extend_from_slice(b"not json\n{\"question\": \" \"}\n");
        bytes.extend_from_slice(
            b"{\"id\": \"q5\", \"question\": \"q5\", \"positives\": [\"zz\"]}\n",
        );
        bytes.extend_from_slice(b"{\"question\": \"q6\", \"answer\": \"b\"}\n");
        std::fs::write(&p, &bytes).unwrap();
        let (set, skipped) = QaSet::read_skipping("t", corpus(), &p).unwrap();
        assert_eq!(set.questions.len(), 2);
        let lines: Vec<usize> = skipped.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5]);
        assert!(skipped[0].reason.contains("UTF-8"), "{:?}", skipped[0]);
        assert_eq!(skipped[3].id.as_deref(), Some("q5"));
        // Nothing usable is still an error.
        std::fs::write(&p, "not json\n").unwrap();
        let e = QaSet::read_skipping("t", corpus(), &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no usable question"), "{e}");
    }

    #[test]
    fn written_sets_read_back_equal() {
        let s = read("{\"id\": \"1\", \"question\": \"q?\", \"answers\": [\"x\"], \"scope\": \"a\", \"positives\": [\"a#0\"]}\n").unwrap();
        let d = tempfile::tempdir().unwrap();
        s.write(d.path()).unwrap();
        let back = QaSet::load(
            &d.path().join("corpus.jsonl"),
            &d.path().join("questions.jsonl"),
        )
        .unwrap();
        assert_eq!(
            back.corpus,
            s.corpus
                .iter()
                .map(|p| Passage {
                    section: None,
                    ..p.clone()
                })
                .collect::<Vec<_>>()
        );
        assert_eq!(back.questions, s.questions);
    }
}
