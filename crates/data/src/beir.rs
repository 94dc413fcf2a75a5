//! BEIR layout: `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`,
//! `text`) and `qrels/{split}.tsv` (`query-id  corpus-id  score`, header row).
//! Retrieval is corpus-wide (no scope).

use crate::{open_maybe_gz, read_jsonl_lines, Collection, Error, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use uae_core::{Passage, Query};

#[derive(Deserialize)]
struct Doc {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    title: String,
    text: String,
}

#[derive(Deserialize)]
struct Q {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

/// Loads a BEIR-layout folder; passage text is `title + " " + text` when a title exists.
/// Only queries with at least one qrel of score > 0 in `split` are returned.
pub fn load_beir(dir: &Path, split: &str) -> Result<Collection> {
    let docs = read_docs(&dir.join("corpus.jsonl"))?;
    let ids: HashSet<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));
    let qrels = read_qrels(&qrels_path, &ids)?;
    let queries = judged_queries(&dir.join("queries.jsonl"), qrels)?;
    if queries.is_empty() {
        return Err(Error::Empty {
            path: qrels_path,
            what: "the set of judged queries",
        });
    }
    let passages = docs
        .into_iter()
        .map(|d| Passage {
            text: if d.title.trim().is_empty() {
                d.text
            } else {
                format!("{} {}", d.title, d.text)
            },
            id: d.id,
            scope: None,
            section: None,
        })
        .collect();
    Ok(Collection {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "beir".into()),
        passages,
        queries,
    })
}

/// corpus.jsonl: not empty, no id twice (the error names the second's line).
fn read_docs(path: &Path) -> Result<Vec<Doc>> {
    let docs: Vec<(usize, Doc)> = read_jsonl_lines(path)?;
    if docs.is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
            what: "the corpus",
        });
    }
    let mut ids: HashSet<&str> = HashSet::new();
    if let Some((line, dup)) = docs.iter().find(|(_, d)| !ids.insert(d.id.as_str())) {
        return Err(Error::DuplicateId {
            path: path.to_path_buf(),
            line: *line,
            id: dup.id.clone(),
        });
    }
    Ok(docs.into_iter().map(|(_, d)| d).collect())
}

/// qrels/SPLIT.tsv (header optional): each query's passages of grade > 0. A row
/// that is not three columns, a grade that is not a small integer, or a passage not
/// in the corpus is an error naming its line.
fn read_qrels(path: &Path, ids: &HashSet<&str>) -> Result<BTreeMap<String, Vec<(String, u32)>>> {
    let mut qrels: BTreeMap<String, Vec<(String, u32)>> = BTreeMap::new();
    for item in uae_core::lines::lines(open_maybe_gz(path)?) {
        let (n, line) = item.map_err(|e| Error::Qrels {
            path: path.to_path_buf(),
            line: e.line(),
            message: e.reason(),
        })?;
        let cols: Vec<&str> = line.split('\t').map(str::trim).collect();
        if line.trim().is_empty() || (n == 1 && cols.first() == Some(&"query-id")) {
            continue;
        }
        let bad = |message: String| Error::Qrels {
            path: path.to_path_buf(),
            line: n,
            message,
        };
        let [qid, did, score] = cols[..] else {
            return Err(bad(format!(
                "expected 3 tab-separated columns, got {}",
                cols.len()
            )));
        };
        // Relevance grades are small integers; anything past u32 is a broken file,
        // not a grade (it once wrapped silently).
        let score: i64 = score
            .parse()
            .ok()
            .filter(|s: &i64| *s <= u32::MAX as i64)
            .ok_or_else(|| {
                bad(format!(
                    "score `{score}` is not an integer grade (at most {})",
                    u32::MAX
                ))
            })?;
        if !ids.contains(did) {
            return Err(bad(format!("corpus-id `{did}` is not in corpus.jsonl")));
        }
        if score > 0 {
            qrels
                .entry(qid.to_string())
                .or_default()
                .push((did.to_string(), score as u32));
        }
    }
    Ok(qrels)
}

/// queries.jsonl's queries that the qrels judge, with their relevant passages. A
/// blank query would be embedded and ranked like any other (the questions file and
/// `/search` refuse one): a judged query must have text.
fn judged_queries(
    path: &Path,
    mut qrels: BTreeMap<String, Vec<(String, u32)>>,
) -> Result<Vec<Query>> {
    let queries: Vec<(usize, Q)> = read_jsonl_lines(path)?;
    if let Some((line, q)) = queries
        .iter()
        .find(|(_, q)| q.text.trim().is_empty() && qrels.contains_key(&q.id))
    {
        return Err(Error::JsonLine {
            path: path.to_path_buf(),
            line: *line,
            message: format!(
                "query `{}` is judged in the qrels but its text is empty",
                q.id
            ),
        });
    }
    Ok(queries
        .into_iter()
        .filter_map(|(_, q)| {
            qrels.remove(&q.id).map(|gold| Query {
                id: q.id,
                text: q.text,
                scope: None,
                gold,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, corpus: &str, queries: &str, qrels: &str) {
        std::fs::create_dir_all(dir.join("qrels")).unwrap();
        std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
        std::fs::write(dir.join("queries.jsonl"), queries).unwrap();
        std::fs::write(dir.join("qrels/test.tsv"), qrels).unwrap();
    }

    #[test]
    fn loads_a_small_beir_folder() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "{\"_id\":\"d1\",\"title\":\"T\",\"text\":\"one\"}\n{\"_id\":\"d2\",\"text\":\"two\"}\n",
            "{\"_id\":\"q1\",\"text\":\"which?\"}\n{\"_id\":\"q2\",\"text\":\"unjudged\"}\n",
            "query-id\tcorpus-id\tscore\nq1\td2\t1\nq1\td1\t0\n",
        );
        let c = load_beir(d.path(), "test").unwrap();
        assert_eq!(c.passages[0].text, "T one");
        assert_eq!(c.queries.len(), 1);
        assert_eq!(c.queries[0].gold, vec![("d2".to_string(), 1)]);
    }

    #[test]
    fn malformed_inputs_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "{\"_id\":\"d1\"}\n", "", "");
        let e = load_beir(d.path(), "test").unwrap_err().to_string();
        assert!(
            e.contains("corpus.jsonl:1") && e.contains("missing field `text`"),
            "{e}"
        );
        write(d.path(), "", "", "");
        let e = load_beir(d.path(), "test").unwrap_err().to_string();
        assert!(e.contains("corpus is empty"), "{e}");
        write(
            d.path(),
            "{\"_id\":\"d1\",\"text\":\"x\"}\n",
            "",
            "q1\td9\t1\n",
        );
        let e = load_beir(d.path(), "test").unwrap_err().to_string();
        assert!(e.contains("test.tsv:1") && e.contains("d9"), "{e}");
        write(d.path(), "not json\n", "", "");
        let e = load_beir(d.path(), "test").unwrap_err().to_string();
        assert!(e.contains("corpus.jsonl:1"), "{e}");
        // A repeated corpus id once counted its document twice (recall 1.2).
        write(
            d.path(),
            "{\"_id\":\"d1\",\"text\":\"x\"}\n{\"_id\":\"d1\",\"text\":\"y\"}\n",
            "",
            "",
        );
        let e = load_beir(d.path(), "test").unwrap_err().to_string();
        assert!(e.contains("`d1` appears twice"), "{e}");
        // A grade past u32 once wrapped to another grade.
        write(
            d.path(),
            "{\"_id\":\"d1\",\"text\":\"x\"}\n",
            "",
            "q1\td1\t5000000000\n",
        );
        let e = load_beir(d.path(), "test").unwrap_err().to_string();
        assert!(e.contains("test.tsv:1") && e.contains("5000000000"), "{e}");
        // A judged query without text was once ranked (and moved R@1).
        write(
            d.path(),
            "{\"_id\":\"d1\",\"text\":\"x\"}\n",
            "{\"_id\":\"q0\",\"text\":\"\"}\n{\"_id\":\"q1\",\"text\":\" \"}\n",
            "q1\td1\t1\n",
        );
        let e = load_beir(d.path(), "test").unwrap_err().to_string();
        assert!(e.contains("queries.jsonl:2") && e.contains("`q1`"), "{e}");
        // Invalid UTF-8 names its line.
        write(d.path(), "{\"_id\":\"d1\",\"text\":\"x\"}\n", "", "");
        std::fs::write(
            d.path().join("corpus.jsonl"),
            b"{\"_id\":\"d1\",\"text\":\"x\"}\n{\"_id\":\"d2\",\"text\":\"\xff\"}\n",
        )
        .unwrap();
        let e = load_beir(d.path(), "test").unwrap_err().to_string();
        assert!(e.contains("corpus.jsonl:2") && e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn byte_order_marks_are_dropped() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "\u{feff}{\"_id\":\"d1\",\"text\":\"one\"}\n",
            "\u{feff}{\"_id\":\"q1\",\"text\":\"which?\"}\n",
            "\u{feff}query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\n",
        );
        let c = load_beir(d.path(), "test").unwrap();
        assert_eq!(c.passages[0].text, "one");
        assert_eq!(c.queries[0].gold, vec![("d1".to_string(), 1)]);
    }
}
