//! `uae compare`'s policy: what two paths hold (retrieval runs in `uae eval` folders
//! or TREC files, or utility label folders of `uae label --candidates retrieved`),
//! where their qrels come from, whether they are comparable, and the paired
//! comparison of their per-question metrics.

use crate::{Error, EvalReport, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use uae_artifacts::labels::{CandidateMode, LabelManifest, LabeledGroup};
use uae_eval::compare::{self, CompareOptions, Comparison, Qrels};
use uae_eval::groups::QueryGroups;

/// What a `retrieved` label folder says of its retriever, per question, in this
/// order: the top passage's utility (nats), the best utility of the labelled top k,
/// and whether the top passage helps by at least 1 nat (1 or 0).
pub const UTILITY_METRICS: [&str; 3] = ["utility@1", "best@k", "helps@1"];

/// The retrieval metrics printed when none are asked for.
pub const RUN_METRICS: [&str; 5] = ["recall@1", "recall@5", "map", "mrr", "ndcg@10"];

fn bad(message: String) -> Error {
    Error::Compare(message)
}

/// Two runs' comparison, and which kind they were.
pub struct Compared {
    pub comparison: Comparison,
    /// Utility label folders (else retrieval runs).
    pub utility: bool,
    /// With `by`: the field, and the comparison within each of its values' groups.
    pub by: Option<(String, Vec<(String, Comparison)>)>,
}

impl Compared {
    /// Every metric this kind of comparison knows.
    pub fn all_metrics(utility: bool) -> Vec<&'static str> {
        if utility {
            UTILITY_METRICS.to_vec()
        } else {
            uae_eval::Metrics::default().rows().map(|(k, _)| k).to_vec()
        }
    }

    /// The metrics to print: `asked` (each checked against the kind's metrics), or
    /// the kind's defaults.
    pub fn shown(&self, asked: &[String]) -> Result<Vec<String>> {
        let all = Self::all_metrics(self.utility);
        if let Some(m) = asked.iter().find(|m| !all.contains(&m.as_str())) {
            return Err(bad(format!(
                "--metrics: unknown metric `{m}` (one of {})",
                all.join(", ")
            )));
        }
        Ok(match (asked.is_empty(), self.utility) {
            (false, _) => asked.to_vec(),
            (true, true) => UTILITY_METRICS.map(String::from).to_vec(),
            (true, false) => RUN_METRICS.map(String::from).to_vec(),
        })
    }
}

impl Compared {
    /// What `uae compare` prints: the comparison of `shown` metrics over every
    /// question, then within each group of `by`.
    pub fn report(&self, a: &str, b: &str, shown: &[String]) -> String {
        let unit = if self.utility { "questions" } else { "queries" };
        let c = &self.comparison;
        let mut s = format!(
            "{} {unit}, B against A; 95% paired bootstrap intervals and two-sided sign-flip p-values over {} resamples (seed {})\n\n",
            c.queries, c.resamples, c.seed
        );
        s.push_str(&c.table(a, b, shown));
        if let Some((field, groups)) = &self.by {
            for (value, g) in groups {
                s.push_str(&format!("\n{field} = {value}: {} {unit}\n\n", g.queries));
                s.push_str(&g.table(a, b, shown));
            }
        }
        s
    }

    /// The whole comparison (every metric) as JSON, with `by`'s groups under "by".
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.comparison).unwrap_or_default();
        if let Some((field, groups)) = &self.by {
            v["by"] = groups
                .iter()
                .map(|(value, g)| serde_json::json!({"field": field, "value": value, "comparison": g}))
                .collect();
        }
        v
    }
}

/// Whether `p` is a label folder rather than an eval folder or run file.
fn is_labels(p: &Path) -> bool {
    p.is_dir() && !p.join(EvalReport::RUN).exists() && p.join(LabeledGroup::FILE).exists()
}

/// The run file of `p` (a folder's run.trec, or `p` itself) and its folder's
/// qrels.trec when there is one.
fn locate(p: &Path) -> (PathBuf, Option<PathBuf>) {
    if p.is_dir() {
        let q = p.join(EvalReport::QRELS);
        (p.join(EvalReport::RUN), q.exists().then_some(q))
    } else {
        (p.to_path_buf(), None)
    }
}

/// Compares B against A: two retrieval runs (against `qrels`, or the qrels.trec both
/// folders hold, which must agree) or two utility label folders (never one of each).
/// With `by`, also within each group of the questions by that field, as `uae eval
/// --by` wrote them (groups.json of A's folder, else B's).
pub fn compare_paths(
    a: &Path,
    b: &Path,
    qrels: Option<&Path>,
    by: Option<&str>,
    opts: CompareOptions,
) -> Result<Compared> {
    let groups = match by {
        Some(field) => Some(groups_of(a, b, field)?),
        None => None,
    };
    let Paired {
        names,
        a: va,
        b: vb,
        ..
    } = paired(a, b, qrels)?;
    let by = groups.map(|g| {
        let (sa, sb) = (g.split(&va), g.split(&vb));
        let per = sa
            .iter()
            .filter_map(|(value, ga)| {
                let gb = sb.get(value)?;
                Some((value.clone(), compare::compare_values(&names, ga, gb, opts)))
            })
            .collect();
        (g.field, per)
    });
    Ok(Compared {
        comparison: compare::compare_values(&names, &va, &vb, opts),
        utility: is_labels(a),
        by,
    })
}

/// Two runs' per-question values, paired by question id: the rows behind a
/// comparison (`uae compare`, the explorer's question list).
pub struct Paired {
    /// The metric of each column.
    pub names: Vec<&'static str>,
    pub a: BTreeMap<String, Vec<f64>>,
    pub b: BTreeMap<String, Vec<f64>>,
    /// Utility label folders (else retrieval runs).
    pub utility: bool,
    /// Retrieval runs: both rankings and the qrels they were scored against.
    pub runs: Option<RunPair>,
}

/// Two retrieval runs and their qrels, as read for a comparison.
pub struct RunPair {
    pub a: compare::Run,
    pub b: compare::Run,
    pub qrels: Qrels,
}

/// The per-question values of A and B ([`compare_paths`]' checks: two runs with
/// agreeing qrels, or two comparable utility folders).
pub fn paired(a: &Path, b: &Path, qrels: Option<&Path>) -> Result<Paired> {
    let utility = match (is_labels(a), is_labels(b)) {
        (true, true) => true,
        (false, false) => false,
        _ => {
            return Err(bad(format!(
            "{} and {}: compare two retrieval runs, or two utility label folders, not one of each",
            a.display(),
            b.display()
        )))
        }
    };
    let ((names, va, vb), runs) = if utility {
        if qrels.is_some() {
            return Err(bad(
                "--qrels applies to retrieval runs; utility folders carry their own answers".into(),
            ));
        }
        (compare_utilities(a, b)?, None)
    } else {
        let (columns, runs) = compare_runs(a, b, qrels)?;
        (columns, Some(runs))
    };
    Ok(Paired {
        names,
        a: va,
        b: vb,
        utility,
        runs,
    })
}

/// The question groups `uae eval --by` wrote into `a` (else `b`), for `field` (its
/// singular or plural).
fn groups_of(a: &Path, b: &Path, field: &str) -> Result<QueryGroups> {
    let same = |g: &str| g == field || format!("{g}s") == field || format!("{field}s") == g;
    for dir in [a, b].into_iter().filter(|d| d.is_dir()) {
        if let Some(g) = QueryGroups::read(dir)? {
            if same(&g.field) {
                return Ok(g);
            }
            return Err(bad(format!(
                "{}: grouped by `{}`, not `{field}` (rerun `uae eval --by {field}`)",
                dir.join(QueryGroups::FILE).display(),
                g.field
            )));
        }
    }
    Err(bad(format!(
        "--by {field}: neither {} nor {} holds {} (write it with `uae eval --by {field}`)",
        a.display(),
        b.display(),
        QueryGroups::FILE
    )))
}

/// Per-question rows of values, named.
type Columns = (
    Vec<&'static str>,
    BTreeMap<String, Vec<f64>>,
    BTreeMap<String, Vec<f64>>,
);

fn compare_runs(a: &Path, b: &Path, qrels: Option<&Path>) -> Result<(Columns, RunPair)> {
    let (run_a, qrels_a) = locate(a);
    let (run_b, qrels_b) = locate(b);
    let qrels: Qrels = match (qrels, &qrels_a, &qrels_b) {
        (Some(q), ..) => compare::read_qrels(q)?,
        (None, Some(qa), Some(qb)) => {
            let (x, y) = (compare::read_qrels(qa)?, compare::read_qrels(qb)?);
            if x != y {
                return Err(bad(format!(
                    "{} and {} judge different queries or passages: the runs are not over the same questions (pass --qrels to score both against one)",
                    qa.display(),
                    qb.display()
                )));
            }
            x
        }
        (None, Some(q), None) | (None, None, Some(q)) => compare::read_qrels(q)?,
        (None, None, None) => {
            return Err(bad(
                "no qrels: pass --qrels, or eval folders holding qrels.trec".into(),
            ))
        }
    };
    let ra = compare::read_run(&run_a)?;
    let rb = compare::read_run(&run_b)?;
    let (pa, pb) = (
        compare::per_query(&ra, &qrels),
        compare::per_query(&rb, &qrels),
    );
    if pa.is_empty() {
        return Err(bad(
            "no judged query with a relevant passage in the qrels".into()
        ));
    }
    for (path, run, per, dir) in [(&run_a, &ra, &pa, a), (&run_b, &rb, &pb, b)] {
        let missing = per.keys().filter(|q| !run.contains_key(*q)).count();
        if missing > 0 {
            tracing::warn!(
                "{}: {missing} of {} judged queries are not in the run (scored 0)",
                path.display(),
                per.len()
            );
        }
        check_report(dir, per);
    }
    let columns = |m: &BTreeMap<String, uae_eval::Metrics>| -> BTreeMap<String, Vec<f64>> {
        m.iter()
            .map(|(q, x)| (q.clone(), x.rows().iter().map(|r| r.1).collect()))
            .collect()
    };
    let names = uae_eval::Metrics::default().rows().map(|(k, _)| k).to_vec();
    let columns = (names, columns(&pa), columns(&pb));
    Ok((
        columns,
        RunPair {
            a: ra,
            b: rb,
            qrels,
        },
    ))
}

/// The per-question [`UTILITY_METRICS`] of a `uae label --candidates retrieved`
/// folder, and its manifest. Questions whose top passage could not be scored are
/// left out.
pub fn retrieved_utilities(dir: &Path) -> Result<(LabelManifest, BTreeMap<String, Vec<f64>>)> {
    let manifest = LabelManifest::read(dir)?.ok_or_else(|| {
        bad(format!(
            "{}: no manifest.json (not a `uae label` folder)",
            dir.display()
        ))
    })?;
    if manifest.config.candidates != CandidateMode::Retrieved {
        return Err(bad(format!(
            "{}: labelled with {:?} candidates; a retriever's utilities come from `uae label --candidates retrieved --ranking RUN`",
            dir.display(),
            manifest.config.candidates
        )));
    }
    let rows = LabeledGroup::read_all(dir)?
        .into_iter()
        .filter_map(|g| {
            let u: Vec<f64> = g.candidates.iter().map(|c| c.utility as f64).collect();
            let first = *u.first()?;
            let best = u.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let helps = if first >= uae_eval::calibrate::HELPS_NATS as f64 {
                1.0
            } else {
                0.0
            };
            Some((g.question_id, vec![first, best, helps]))
        })
        .collect();
    Ok((manifest, rows))
}

/// Whether two `retrieved` folders' utilities can be compared: the same LLM,
/// template, passage budget, question set and top k.
pub fn comparable(a: &LabelManifest, b: &LabelManifest) -> bool {
    let k = |m: &LabelManifest| m.config.retrieved.as_ref().map(|r| r.top_k);
    a.lm_sha256 == b.lm_sha256
        && a.config.template == b.config.template
        && a.config.passage_tokens == b.config.passage_tokens
        && a.split == b.split
        && k(a) == k(b)
}

fn compare_utilities(a: &Path, b: &Path) -> Result<Columns> {
    let ((ma, ua), (mb, ub)) = (retrieved_utilities(a)?, retrieved_utilities(b)?);
    if !comparable(&ma, &mb) {
        return Err(bad(format!(
            "{} and {} were labelled with another LLM, template, passage budget, question set or --top-k: their utilities are not comparable",
            a.display(),
            b.display()
        )));
    }
    if !ua.keys().any(|q| ub.contains_key(q)) {
        return Err(bad(format!(
            "{} and {} share no labelled question",
            a.display(),
            b.display()
        )));
    }
    Ok((UTILITY_METRICS.to_vec(), ua, ub))
}

/// Warns when a folder's report.json disagrees with the metrics recomputed from its
/// run (a truncated or edited run file).
fn check_report(dir: &Path, per: &BTreeMap<String, uae_eval::Metrics>) {
    let Ok(Some(r)) = EvalReport::read(dir) else {
        return;
    };
    let ours: Vec<_> = per.values().copied().collect();
    let mean = uae_eval::Metrics::mean(&ours);
    for ((k, x), (_, y)) in mean.rows().iter().zip(r.metrics.rows()) {
        if (x - y).abs() > 1e-6 {
            tracing::warn!(
                "{}: {k} from run.trec is {x:.4}, report.json says {y:.4}",
                dir.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval_folder(dir: &Path, run: &str, qrels: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(EvalReport::RUN), run).unwrap();
        std::fs::write(dir.join(EvalReport::QRELS), qrels).unwrap();
    }

    #[test]
    fn folders_are_located_and_their_qrels_must_agree() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
        let qrels = "q1 0 p1 1\nq2 0 p2 1\n";
        eval_folder(
            &a,
            "q1 Q0 p1 1 2.0 x\nq2 Q0 p3 1 2.0 x\nq2 Q0 p2 2 1.0 x\n",
            qrels,
        );
        eval_folder(&b, "q1 Q0 p1 1 2.0 x\nq2 Q0 p2 1 2.0 x\n", qrels);
        eval_folder(&c, "q1 Q0 p1 1 2.0 x\n", "q1 0 p9 1\n");
        let opts = CompareOptions {
            resamples: 100,
            seed: 0,
        };
        let r = compare_paths(&a, &b, None, None, opts).unwrap();
        assert!(!r.utility);
        assert_eq!(r.comparison.queries, 2);
        assert_eq!(
            r.shown(&[]).unwrap(),
            RUN_METRICS.map(String::from).to_vec()
        );
        let e = r.shown(&["recall@2".into()]).unwrap_err().to_string();
        assert!(e.contains("unknown metric `recall@2`"), "{e}");
        let e = compare_paths(&a, &c, None, None, opts)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("judge different queries"), "{e}");
        // One qrels file for both is allowed.
        assert!(compare_paths(&a, &c, Some(&a.join(EvalReport::QRELS)), None, opts).is_ok());
    }

    #[test]
    fn by_splits_the_comparison_by_the_groups_eval_wrote() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let qrels = "q1 0 p1 1\nq2 0 p2 1\nq3 0 p3 1\n";
        // B finds q2's passage first where A did not; q1 and q3 are the same.
        eval_folder(
            &a,
            "q1 Q0 p1 1 2.0 x\nq2 Q0 p9 1 2.0 x\nq3 Q0 p3 1 2.0 x\n",
            qrels,
        );
        eval_folder(
            &b,
            "q1 Q0 p1 1 2.0 x\nq2 Q0 p2 1 2.0 x\nq3 Q0 p3 1 2.0 x\n",
            qrels,
        );
        let opts = CompareOptions {
            resamples: 100,
            seed: 0,
        };
        let e = compare_paths(&a, &b, None, Some("answer_type"), opts)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("uae eval --by answer_type"), "{e}");
        QueryGroups {
            field: "answer_types".into(),
            of: [
                ("q1".to_string(), vec!["extractive".to_string()]),
                ("q2".to_string(), vec!["abstractive".to_string()]),
                ("q3".to_string(), vec!["abstractive".to_string()]),
            ]
            .into(),
        }
        .write(&a)
        .unwrap();
        let r = compare_paths(&a, &b, None, Some("answer_type"), opts).unwrap();
        let (field, groups) = r.by.unwrap();
        assert_eq!(field, "answer_types");
        let r1 = |c: &Comparison| c.metric("recall@1").unwrap().diff;
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0, "abstractive");
        assert_eq!((groups[0].1.queries, r1(&groups[0].1)), (2, 0.5));
        assert_eq!((groups[1].1.queries, r1(&groups[1].1)), (1, 0.0));
        assert!((r1(&r.comparison) - 1.0 / 3.0).abs() < 1e-12);
        let e = compare_paths(&a, &b, None, Some("topic"), opts)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("grouped by `answer_types`"), "{e}");
    }

    #[test]
    fn a_label_folder_and_a_run_do_not_mix() {
        let d = tempfile::tempdir().unwrap();
        let (a, l) = (d.path().join("a"), d.path().join("l"));
        eval_folder(&a, "q1 Q0 p1 1 2.0 x\n", "q1 0 p1 1\n");
        std::fs::create_dir_all(&l).unwrap();
        std::fs::write(l.join(LabeledGroup::FILE), "").unwrap();
        let opts = CompareOptions::default();
        let e = compare_paths(&a, &l, None, None, opts)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not one of each"), "{e}");
        let e = compare_paths(&l, &l, None, None, opts)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no manifest.json"), "{e}");
    }
}
