//! A corpus as JSON lines: one `{"id", "text", "title"?, "scope"?}` per line; a
//! BEIR `corpus.jsonl` (`_id`, `title`, `text`) reads as it is.

use crate::{read_jsonl_lines, Error, Result};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::Path;
use uae_core::Passage;

#[derive(Deserialize)]
struct CorpusLine {
    #[serde(alias = "_id")]
    id: String,
    text: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// Reads a corpus JSONL file. The passage text is `title + " " + text` when a
/// non-blank title is given (BEIR's convention, as in `uae eval --beir`). An empty
/// corpus or a repeated id is an error naming the file.
pub fn read_corpus_jsonl(path: &Path) -> Result<Vec<Passage>> {
    let lines: Vec<(usize, CorpusLine)> = read_jsonl_lines(path)?;
    if lines.is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
            what: "the corpus",
        });
    }
    let mut seen = HashSet::new();
    if let Some((line, dup)) = lines.iter().find(|(_, l)| !seen.insert(l.id.as_str())) {
        return Err(Error::DuplicateId {
            path: path.to_path_buf(),
            line: *line,
            id: dup.id.clone(),
        });
    }
    Ok(lines
        .into_iter()
        .map(|(_, l)| Passage {
            id: l.id,
            scope: l.scope,
            section: None,
            text: match l.title.filter(|t| !t.trim().is_empty()) {
                Some(t) => format!("{t} {}", l.text),
                None => l.text,
            },
        })
        .collect())
}

/// [`read_corpus_jsonl`] of a file, or of a BEIR folder's `corpus.jsonl`.
pub fn read_corpus(path: &Path) -> Result<Vec<Passage>> {
    if path.is_dir() {
        read_corpus_jsonl(&path.join("corpus.jsonl"))
    } else {
        read_corpus_jsonl(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_titles_scopes_and_rejects_duplicates() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.jsonl");
        std::fs::write(
            &p,
            "{\"_id\": \"a\", \"title\": \"T\", \"text\": \"x\"}\n{\"id\": \"b\", \"text\": \"y\", \"scope\": \"s\"}\n",
        )
        .unwrap();
        let c = read_corpus_jsonl(&p).unwrap();
        assert_eq!(
            (c[0].text.as_str(), c[1].scope.as_deref()),
            ("T x", Some("s"))
        );
        std::fs::write(
            &p,
            "{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"a\", \"text\": \"y\"}\n",
        )
        .unwrap();
        let e = read_corpus_jsonl(&p).unwrap_err().to_string();
        assert!(e.contains("c.jsonl") && e.contains("`a`"), "{e}");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_corpus_jsonl(&p)
            .unwrap_err()
            .to_string()
            .contains("empty"));
    }
}
