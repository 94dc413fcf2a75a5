//! Metrics split by a field of the questions (`uae eval --by answer_type`): which
//! questions belong to which value, written beside the run so `uae compare --by` can
//! split a paired comparison the same way.

use crate::{Error, Metrics, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The group of questions without a value of the field.
pub const NO_VALUE: &str = "(none)";

/// Each question's values of one field (a question with two values is in two
/// groups; one with none is in [`NO_VALUE`]'s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryGroups {
    pub field: String,
    /// Question id -> its values.
    pub of: BTreeMap<String, Vec<String>>,
}

/// One group's mean metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMetrics {
    pub value: String,
    /// Evaluable questions in the group.
    pub queries: usize,
    pub metrics: Metrics,
}

impl QueryGroups {
    /// The file of an evaluation folder that holds them.
    pub const FILE: &'static str = "groups.json";

    /// The values a question is grouped under.
    fn values_of<'a>(&'a self, qid: &str) -> Vec<&'a str> {
        match self.of.get(qid) {
            Some(v) if !v.is_empty() => v.iter().map(String::as_str).collect(),
            _ => vec![NO_VALUE],
        }
    }

    /// Splits per-question values into one map per group value (values in sorted
    /// order; questions not in `of` go to [`NO_VALUE`]).
    pub fn split<T: Clone>(
        &self,
        per_query: &BTreeMap<String, T>,
    ) -> BTreeMap<String, BTreeMap<String, T>> {
        let mut out: BTreeMap<String, BTreeMap<String, T>> = BTreeMap::new();
        for (q, x) in per_query {
            for v in self.values_of(q) {
                out.entry(v.to_string())
                    .or_default()
                    .insert(q.clone(), x.clone());
            }
        }
        out
    }

    /// The mean metrics of each group's evaluable questions.
    pub fn metrics(&self, per_query: &BTreeMap<String, Metrics>) -> Vec<GroupMetrics> {
        self.split(per_query)
            .into_iter()
            .map(|(value, m)| GroupMetrics {
                value,
                queries: m.len(),
                metrics: Metrics::mean(&m.into_values().collect::<Vec<_>>()),
            })
            .collect()
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(Self::FILE);
        uae_core::fs::write_json(&path, self).map_err(|e| Error::Io {
            path,
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// The groups of an evaluation folder, `None` when it has none.
    pub fn read(dir: &Path) -> Result<Option<QueryGroups>> {
        let path = dir.join(Self::FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Parse {
                path,
                line: e.line(),
                message: e.to_string(),
            })
    }
}

/// A Markdown table of each group's metrics (`names` of [`Metrics::rows`]).
pub fn table(field: &str, groups: &[GroupMetrics], names: &[&str]) -> String {
    let mut s = format!("| {field} | questions | {} |\n|---|---|", names.join(" | "));
    s.push_str(&"---|".repeat(names.len()));
    s.push('\n');
    for g in groups {
        let rows = g.metrics.rows();
        let vals: Vec<String> = names
            .iter()
            .map(|n| {
                rows.iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| format!("{v:.4}"))
                    .unwrap_or_default()
            })
            .collect();
        s.push_str(&format!(
            "| {} | {} | {} |\n",
            g.value,
            g.queries,
            vals.join(" | ")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(r1: f64) -> Metrics {
        Metrics {
            recall_1: r1,
            ..Default::default()
        }
    }

    #[test]
    fn a_question_counts_in_each_of_its_groups_and_none_in_its_own() {
        let g = QueryGroups {
            field: "answer_types".into(),
            of: BTreeMap::from([
                ("a".into(), vec!["extractive".into(), "abstractive".into()]),
                ("b".into(), vec!["extractive".into()]),
                ("c".into(), vec![]),
            ]),
        };
        let per = BTreeMap::from([
            ("a".to_string(), m(1.0)),
            ("b".to_string(), m(0.0)),
            ("c".to_string(), m(1.0)),
            ("d".to_string(), m(0.0)),
        ]);
        let out = g.metrics(&per);
        let by: BTreeMap<&str, (usize, f64)> = out
            .iter()
            .map(|x| (x.value.as_str(), (x.queries, x.metrics.recall_1)))
            .collect();
        assert_eq!(by["extractive"], (2, 0.5));
        assert_eq!(by["abstractive"], (1, 1.0));
        assert_eq!(by[NO_VALUE], (2, 0.5));
        assert_eq!(by.len(), 3);
        let t = table("answer_types", &out, &["recall@1", "map"]);
        assert!(t.contains("| extractive | 2 | 0.5000 | 0.0000 |"), "{t}");
        let d = tempfile::tempdir().unwrap();
        assert_eq!(QueryGroups::read(d.path()).unwrap(), None);
        g.write(d.path()).unwrap();
        assert_eq!(QueryGroups::read(d.path()).unwrap(), Some(g));
        std::fs::write(d.path().join(QueryGroups::FILE), "{").unwrap();
        let e = QueryGroups::read(d.path()).unwrap_err().to_string();
        assert!(e.contains("groups.json"), "{e}");
    }
}
