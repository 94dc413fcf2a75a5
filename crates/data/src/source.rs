//! Where a command's questions and passages come from: a QASPER split, a BEIR folder
//! or your own files. The one place that turns flags into data, so `uae eval`,
//! `uae label` and `uae train` read the same three sources the same way.

use crate::{load_beir, Collection, Error, QaSet, Qasper, Result, SkippedRow, Split};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A data source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A QASPER split: its paragraphs (scoped by paper) and questions.
    Qasper { dir: PathBuf, split: Split },
    /// A BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv): corpus-wide
    /// retrieval; its queries carry no answers.
    Beir { dir: PathBuf, split: String },
    /// Your own corpus (JSONL or a BEIR folder) and questions JSONL.
    Files { corpus: PathBuf, questions: PathBuf },
}

impl Source {
    /// The retrieval collection: passages and queries with their relevant passages.
    pub fn collection(&self) -> Result<Collection> {
        match self {
            Source::Qasper { dir, split } => Ok(Qasper::load_split(dir, *split)?.collection()),
            Source::Beir { dir, split } => load_beir(dir, split),
            Source::Files { corpus, questions } => Ok(QaSet::load(corpus, questions)?.collection()),
        }
    }

    /// Questions with reference answers over a corpus, for labelling. Rows of your own
    /// questions file that cannot be read are left out and returned, so one bad row
    /// does not end a long run; a BEIR folder has no answers and is refused.
    pub fn qa_set(&self) -> Result<(QaSet, Vec<SkippedRow>)> {
        match self {
            Source::Qasper { dir, split } => {
                Ok((Qasper::load_split(dir, *split)?.qa_set(), vec![]))
            }
            Source::Beir { dir, .. } => Err(Error::NoAnswers { path: dir.clone() }),
            Source::Files { corpus, questions } => QaSet::load_skipping(corpus, questions),
        }
    }

    /// Each question's values of `field`, for splitting metrics by it (`uae eval --by`):
    /// a string, number or boolean is one value, a list one value per element, a
    /// missing or null field none. QASPER questions carry `answer_types`; your
    /// questions file any field of its rows; BEIR queries a field of the row or of its
    /// `metadata`. `field` may name a list by its singular (`answer_type` finds
    /// `answer_types`). An error when no question has the field.
    pub fn field_values(&self, field: &str) -> Result<BTreeMap<String, Vec<String>>> {
        let rows: Vec<(String, BTreeMap<String, Value>)> = match self {
            Source::Beir { dir, .. } => {
                let path = dir.join("queries.jsonl");
                let (rows, _) = crate::read_jsonl_lenient::<BTreeMap<String, Value>>(&path, false)?;
                rows.into_iter()
                    .filter_map(|(_, mut row)| {
                        let id = value_text(row.get("_id")?)?;
                        if let Some(Value::Object(meta)) = row.remove("metadata") {
                            for (k, v) in meta {
                                row.entry(k).or_insert(v);
                            }
                        }
                        Some((id, row))
                    })
                    .collect()
            }
            _ => self
                .qa_set()?
                .0
                .questions
                .into_iter()
                .map(|q| (q.id, q.fields))
                .collect(),
        };
        let plural = format!("{field}s");
        let name = if rows.iter().any(|(_, r)| r.contains_key(field)) {
            field
        } else if rows.iter().any(|(_, r)| r.contains_key(&plural)) {
            plural.as_str()
        } else {
            return Err(Error::NoField {
                source_name: self.name(),
                field: field.to_string(),
            });
        };
        Ok(rows
            .into_iter()
            .map(|(id, r)| {
                let values = match r.get(name) {
                    Some(Value::Array(a)) => a.iter().filter_map(value_text).collect(),
                    Some(v) => value_text(v).into_iter().collect(),
                    None => Vec::new(),
                };
                (id, values)
            })
            .collect())
    }

    /// The name recorded in manifests: the QASPER split, the BEIR folder, or the
    /// questions file's set name.
    pub fn name(&self) -> String {
        match self {
            Source::Qasper { split, .. } => split.to_string(),
            Source::Beir { dir, .. } => dir.display().to_string(),
            Source::Files { questions, .. } => crate::qa::set_name(questions),
        }
    }

    /// Your own corpus file, when the source is one.
    pub fn corpus_path(&self) -> Option<&Path> {
        match self {
            Source::Files { corpus, .. } => Some(corpus),
            _ => None,
        }
    }

    /// Whether the source is QASPER (labels of it default to gold candidates and to
    /// QASPER dev for model selection).
    pub fn is_qasper(&self) -> bool {
        matches!(self, Source::Qasper { .. })
    }
}

/// A scalar JSON value as text (strings without quotes); `None` for null, lists and
/// objects.
fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The flags that choose a [`Source`] (the `cli` feature): `--data-dir` and `--split`
/// for QASPER, `--beir` for a BEIR folder, `--corpus` with `--questions` for your own.
#[cfg(feature = "cli")]
#[derive(clap::Args, Debug, Clone)]
pub struct SourceArgs {
    /// Folder with qasper-{train,dev,test}-v0.3.json[.gz].
    #[arg(long, env = "UAE_DATA_DIR", default_value = crate::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// QASPER split (default: the command's; ignored with --beir or --corpus).
    #[arg(long)]
    pub split: Option<Split>,
    /// A BEIR-layout folder instead of QASPER (corpus-wide search).
    #[arg(long, conflicts_with_all = ["corpus", "questions"])]
    pub beir: Option<PathBuf>,
    /// qrels split name for --beir (qrels/{name}.tsv).
    #[arg(long, default_value = "test")]
    pub beir_split: String,
    /// Your own corpus: JSONL, one `{"id", "text", "title"?, "scope"?}` per line, or a
    /// BEIR folder (its corpus.jsonl with `_id`). Needs --questions.
    #[arg(long, requires = "questions")]
    pub corpus: Option<PathBuf>,
    /// Your own questions: JSONL, one `{"id"?, "question", "answers": [...] or
    /// "answer", "scope"?, "positives"?: [passage ids]}` per line. Needs --corpus.
    #[arg(long, requires = "corpus")]
    pub questions: Option<PathBuf>,
}

#[cfg(feature = "cli")]
impl SourceArgs {
    /// The source the flags name; `default_split` is the command's QASPER split.
    pub fn source(&self, default_split: Split) -> Source {
        match (&self.beir, &self.corpus, &self.questions) {
            (Some(dir), ..) => Source::Beir {
                dir: dir.clone(),
                split: self.beir_split.clone(),
            },
            (None, Some(c), Some(q)) => Source::Files {
                corpus: c.clone(),
                questions: q.clone(),
            },
            _ => Source::Qasper {
                dir: self.data_dir.clone(),
                split: self.split.unwrap_or(default_split),
            },
        }
    }

    /// A QASPER split of `--data-dir` (for the commands that read QASPER only).
    pub fn qasper(&self, split: Split) -> Result<Qasper> {
        Qasper::load_split(&self.data_dir, split)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Source {
        let c = dir.join("corpus.jsonl");
        let q = dir.join("questions.jsonl");
        std::fs::write(&c, "{\"id\": \"p1\", \"text\": \"the sky is blue\"}\n{\"id\": \"p2\", \"text\": \"grass is green\"}\n").unwrap();
        std::fs::write(&q, "{\"id\": \"q1\", \"question\": \"what colour is the sky?\", \"answer\": \"blue\", \"positives\": [\"p1\"]}\nnot json\n").unwrap();
        Source::Files {
            corpus: c,
            questions: q,
        }
    }

    #[test]
    fn files_give_a_collection_and_a_qa_set_that_skips_bad_rows() {
        let d = tempfile::tempdir().unwrap();
        let s = files(d.path());
        assert_eq!(s.name(), "questions");
        assert!(s.corpus_path().is_some() && !s.is_qasper());
        // The collection reads strictly: the bad row is an error naming its line.
        let e = s.collection().unwrap_err().to_string();
        assert!(e.contains("questions.jsonl") && e.contains(":2:"), "{e}");
        let (set, skipped) = s.qa_set().unwrap();
        assert_eq!(set.questions.len(), 1);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].line, 2);
    }

    #[test]
    fn field_values_read_scalars_lists_and_the_singular_of_a_list() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("corpus.jsonl");
        let q = d.path().join("questions.jsonl");
        std::fs::write(&c, "{\"id\": \"p1\", \"text\": \"x\"}\n").unwrap();
        std::fs::write(
            &q,
            concat!(
                "{\"id\": \"a\", \"question\": \"x?\", \"answer\": \"y\", \"kinds\": [\"e\", \"f\"], \"n\": 3}\n",
                "{\"id\": \"b\", \"question\": \"x?\", \"answer\": \"y\", \"kinds\": \"e\"}\n",
                "{\"id\": \"c\", \"question\": \"x?\", \"answer\": \"y\"}\n"
            ),
        )
        .unwrap();
        let s = Source::Files {
            corpus: c,
            questions: q,
        };
        let v = s.field_values("kind").unwrap();
        assert_eq!(v["a"], vec!["e", "f"]);
        assert_eq!(v["b"], vec!["e"]);
        assert!(v["c"].is_empty());
        assert_eq!(s.field_values("n").unwrap()["a"], vec!["3"]);
        let e = s.field_values("colour").unwrap_err().to_string();
        assert!(e.contains("`colour`") && e.contains("questions"), "{e}");
        // BEIR: the row's own field or its metadata's.
        let b = d.path().join("beir");
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(
            b.join("queries.jsonl"),
            "{\"_id\": \"1\", \"text\": \"x\", \"metadata\": {\"topic\": \"bio\"}}\n",
        )
        .unwrap();
        let s = Source::Beir {
            dir: b,
            split: "test".into(),
        };
        assert_eq!(s.field_values("topic").unwrap()["1"], vec!["bio"]);
    }

    #[test]
    fn beir_has_no_answers_to_label() {
        let s = Source::Beir {
            dir: PathBuf::from("/nowhere"),
            split: "test".into(),
        };
        let e = s.qa_set().unwrap_err().to_string();
        assert!(e.contains("no answers"), "{e}");
    }
}
