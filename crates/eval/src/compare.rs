//! Paired comparison of two retrieval runs over the same judged queries: is B better
//! than A, by how much, and how sure can one be?
//!
//! Both runs are scored per query with [`Metrics::of_ranking`] (the metrics `uae eval`
//! reports), then each metric's per-query differences `B - A` give
//! - a 95% paired bootstrap interval of the mean difference and of the relative change
//!   (queries resampled with replacement, the same resample for both runs), and
//! - a two-sided paired randomization p-value (each query's two scores swapped with
//!   probability 1/2: Fisher's sign-flip test, Smucker et al. 2007).
//!
//! A few hundred queries leave an R@1 interval several points wide; a difference
//! inside it is not a result.

use crate::{Error, Metrics, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use uae_core::SplitMix64;

/// Ranked passage ids of each query, best first.
pub type Run = BTreeMap<String, Vec<String>>;
/// Graded judgments of each query: passage id -> grade.
pub type Qrels = BTreeMap<String, HashMap<String, u32>>;

/// The lines of a text file, `(1-based number, text)`: a byte-order mark dropped, a
/// line that is not UTF-8 or is over the size limit an error naming it.
fn read_lines(path: &Path) -> Result<Vec<(usize, String)>> {
    let f = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    uae_core::lines::lines(std::io::BufReader::new(f))
        .map(|r| r.map_err(|e| parse_err(path, e.line(), e.reason())))
        .collect()
}

fn parse_err(path: &Path, line: usize, message: impl Into<String>) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// Reads a TREC run (`qid Q0 docid rank score tag`); each query's passages are put in
/// rank order (ties by score, higher first). A passage listed twice for a query is an
/// error.
pub fn read_run(path: &Path) -> Result<Run> {
    let mut rows: BTreeMap<String, Vec<(u64, f64, String, usize)>> = BTreeMap::new();
    for (n, line) in read_lines(path)? {
        let i = n - 1;
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        if f.len() < 5 {
            return Err(parse_err(
                path,
                i + 1,
                format!(
                    "{} fields, expected `qid Q0 docid rank score [tag]`",
                    f.len()
                ),
            ));
        }
        let rank: u64 = f[3].parse().map_err(|_| {
            parse_err(
                path,
                i + 1,
                format!("rank `{}` is not a whole number", f[3]),
            )
        })?;
        let score: f64 = f[4]
            .parse()
            .ok()
            .filter(|s: &f64| !s.is_nan())
            .ok_or_else(|| parse_err(path, i + 1, format!("score `{}` is not a number", f[4])))?;
        rows.entry(f[0].to_string())
            .or_default()
            .push((rank, score, f[2].to_string(), i + 1));
    }
    let mut run = Run::new();
    for (qid, mut list) in rows {
        list.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
        let mut seen = HashMap::new();
        for (_, _, id, line) in &list {
            if let Some(first) = seen.insert(id.as_str(), *line) {
                return Err(parse_err(
                    path,
                    first.max(*line),
                    format!("query `{qid}` lists passage `{id}` twice"),
                ));
            }
        }
        run.insert(qid, list.into_iter().map(|(_, _, id, _)| id).collect());
    }
    Ok(run)
}

/// Reads TREC qrels (`qid 0 docid grade`), as `uae eval` writes them.
pub fn read_qrels(path: &Path) -> Result<Qrels> {
    let mut q = Qrels::new();
    for (n, line) in read_lines(path)? {
        let i = n - 1;
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        if f.len() != 4 {
            return Err(parse_err(
                path,
                i + 1,
                format!("{} fields, expected `qid 0 docid grade`", f.len()),
            ));
        }
        let grade: u32 = f[3].parse().map_err(|_| {
            parse_err(
                path,
                i + 1,
                format!("grade `{}` is not a whole number >= 0", f[3]),
            )
        })?;
        q.entry(f[0].to_string())
            .or_default()
            .insert(f[2].to_string(), grade);
    }
    Ok(q)
}

/// Per-query metrics of `run` on every evaluable query of `qrels` (a query the run
/// does not list scores 0 everywhere, as an empty ranking would).
pub fn per_query(run: &Run, qrels: &Qrels) -> BTreeMap<String, Metrics> {
    qrels
        .iter()
        .filter_map(|(qid, gold)| {
            let ranking: Vec<&str> = run
                .get(qid)
                .map(|r| r.iter().map(String::as_str).collect())
                .unwrap_or_default();
            let gold: HashMap<&str, u32> = gold.iter().map(|(k, &v)| (k.as_str(), v)).collect();
            Metrics::of_ranking(&ranking, &gold).map(|m| (qid.clone(), m))
        })
        .collect()
}

/// How the comparison resamples.
#[derive(Debug, Clone, Copy)]
pub struct CompareOptions {
    /// Bootstrap resamples, and sign-flip permutations, each (>= 1).
    pub resamples: usize,
    pub seed: u64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            resamples: 10_000,
            seed: 0,
        }
    }
}

/// One metric of a paired comparison.
#[derive(Debug, Clone, Serialize)]
pub struct MetricDelta {
    pub metric: String,
    pub a: f64,
    pub b: f64,
    /// Mean of `B - A` over the queries (equal to `b - a`).
    pub diff: f64,
    /// 95% bootstrap interval of `diff`.
    pub diff_ci: [f64; 2],
    /// `100 (b - a) / a`; NaN when `a` is 0.
    pub rel_pct: f64,
    /// 95% bootstrap interval of `rel_pct`.
    pub rel_pct_ci: [f64; 2],
    /// Two-sided paired randomization p-value of `diff`.
    pub p_value: f64,
    /// Queries where B scores higher / lower / the same.
    pub b_wins: usize,
    pub b_losses: usize,
    pub ties: usize,
}

impl MetricDelta {
    /// `+x.x% [+lo, +hi]`: the relative change and its 95% interval.
    pub fn relative(&self) -> String {
        format!(
            "{:+.1}% [{:+.1}, {:+.1}]",
            self.rel_pct, self.rel_pct_ci[0], self.rel_pct_ci[1]
        )
    }
}

/// A paired comparison of two runs.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Evaluable queries compared.
    pub queries: usize,
    pub resamples: usize,
    pub seed: u64,
    pub metrics: Vec<MetricDelta>,
}

/// Compares `b` against `a` on the queries both score (the same judged queries: the
/// caller checks that the qrels agree). Metrics in [`Metrics::rows`] order.
pub fn compare(
    a: &BTreeMap<String, Metrics>,
    b: &BTreeMap<String, Metrics>,
    opts: CompareOptions,
) -> Comparison {
    let names = Metrics::default().rows().map(|(k, _)| k);
    let columns = |m: &BTreeMap<String, Metrics>| -> BTreeMap<String, Vec<f64>> {
        m.iter()
            .map(|(q, x)| (q.clone(), x.rows().iter().map(|r| r.1).collect()))
            .collect()
    };
    compare_values(&names, &columns(a), &columns(b), opts)
}

/// [`compare`] for any per-query values: `names[k]` is the metric in column `k` of
/// each query's row. Queries in only one of the two maps are left out.
pub fn compare_values(
    names: &[&str],
    a: &BTreeMap<String, Vec<f64>>,
    b: &BTreeMap<String, Vec<f64>>,
    opts: CompareOptions,
) -> Comparison {
    let qids: Vec<&String> = a.keys().filter(|q| b.contains_key(*q)).collect();
    let resamples = opts.resamples.max(1);
    let column = |m: &BTreeMap<String, Vec<f64>>, k: usize| -> Vec<f64> {
        qids.iter().map(|q| m[*q][k]).collect()
    };
    let metrics = names
        .iter()
        .enumerate()
        .map(|(k, name)| delta(name, &column(a, k), &column(b, k), resamples, opts.seed))
        .collect();
    Comparison {
        queries: qids.len(),
        resamples,
        seed: opts.seed,
        metrics,
    }
}

fn mean(v: impl Iterator<Item = f64>, n: usize) -> f64 {
    v.sum::<f64>() / n.max(1) as f64
}

fn rel(b: f64, a: f64) -> f64 {
    if a == 0.0 {
        f64::NAN
    } else {
        100.0 * (b - a) / a
    }
}

/// The 2.5th and 97.5th percentiles (nearest rank) of `v`.
fn interval(mut v: Vec<f64>) -> [f64; 2] {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return [f64::NAN, f64::NAN];
    }
    [crate::percentile(&v, 2.5), crate::percentile(&v, 97.5)]
}

fn delta(name: &str, xa: &[f64], xb: &[f64], resamples: usize, seed: u64) -> MetricDelta {
    let n = xa.len();
    let d: Vec<f64> = xa.iter().zip(xb).map(|(a, b)| b - a).collect();
    let (ma, mb) = (mean(xa.iter().copied(), n), mean(xb.iter().copied(), n));
    let md = mean(d.iter().copied(), n);
    // The same seed for every metric: metrics share their resamples.
    let mut rng = SplitMix64::new(seed);
    let mut diffs = Vec::with_capacity(resamples);
    let mut rels = Vec::with_capacity(resamples);
    if n > 0 {
        for _ in 0..resamples {
            let (mut sa, mut sb) = (0.0, 0.0);
            for _ in 0..n {
                let i = (rng.next_u64() % n as u64) as usize;
                sa += xa[i];
                sb += xb[i];
            }
            diffs.push((sb - sa) / n as f64);
            rels.push(rel(sb, sa));
        }
    }
    // Sign flips: under "A and B are exchangeable", each query's difference is as
    // likely negated. Counted with the observed statistic included (never p = 0).
    let mut rng = SplitMix64::new(seed ^ 0x5151_5151_5151_5151);
    let observed = md.abs() - 1e-12;
    let mut extreme = 0usize;
    for _ in 0..resamples {
        let mut s = 0.0;
        let mut bits = 0u64;
        for (i, &x) in d.iter().enumerate() {
            if i % 64 == 0 {
                bits = rng.next_u64();
            }
            s += if bits >> (i % 64) & 1 == 1 { x } else { -x };
        }
        if (s / n.max(1) as f64).abs() >= observed {
            extreme += 1;
        }
    }
    let p_value = if n == 0 {
        1.0
    } else {
        (extreme + 1) as f64 / (resamples + 1) as f64
    };
    MetricDelta {
        metric: name.to_string(),
        a: ma,
        b: mb,
        diff: md,
        diff_ci: interval(diffs),
        rel_pct: rel(mb, ma),
        rel_pct_ci: interval(rels),
        p_value,
        b_wins: d.iter().filter(|&&x| x > 0.0).count(),
        b_losses: d.iter().filter(|&&x| x < 0.0).count(),
        ties: d.iter().filter(|&&x| x == 0.0).count(),
    }
}

impl Comparison {
    /// The delta of `metric`, if compared.
    pub fn metric(&self, metric: &str) -> Option<&MetricDelta> {
        self.metrics.iter().find(|m| m.metric == metric)
    }

    /// A Markdown table of the chosen metrics (all when `only` is empty).
    pub fn table(&self, a: &str, b: &str, only: &[String]) -> String {
        let mut s = format!(
            "| metric | A: {a} | B: {b} | B - A [95% CI] | B vs A, % [95% CI] | p | B wins / losses / ties |\n|---|---|---|---|---|---|---|\n"
        );
        for m in &self.metrics {
            if !only.is_empty() && !only.iter().any(|o| o == &m.metric) {
                continue;
            }
            s.push_str(&format!(
                "| {} | {:.4} | {:.4} | {:+.4} [{:+.4}, {:+.4}] | {} | {} | {} / {} / {} |\n",
                m.metric,
                m.a,
                m.b,
                m.diff,
                m.diff_ci[0],
                m.diff_ci[1],
                m.relative(),
                if m.p_value < 0.001 {
                    "<0.001".to_string()
                } else {
                    format!("{:.3}", m.p_value)
                },
                m.b_wins,
                m.b_losses,
                m.ties
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tmp() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "uae-compare-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn runs_and_qrels_read_back_as_eval_scores_them() {
        let d = tmp();
        // Ranks out of file order; q2 has two relevant passages.
        let run = write(
            &d,
            "run.trec",
            "q1 Q0 b 2 0.5 t\nq1 Q0 a 1 0.9 t\nq2 Q0 x 1 0.9 t\nq2 Q0 y 2 0.8 t\nq2 Q0 z 3 0.1 t\n",
        );
        let qrels = write(&d, "qrels.trec", "q1 0 b 1\nq2 0 x 1\nq2 0 z 1\nq3 0 w 1\n");
        let r = read_run(&run).unwrap();
        assert_eq!(r["q1"], ["a", "b"]);
        let per = per_query(&r, &read_qrels(&qrels).unwrap());
        // q3 is judged but not in the run: it scores 0, as an empty ranking does.
        assert_eq!(per.len(), 3);
        assert_eq!(per["q1"].recall_1, 0.0);
        assert_eq!(per["q1"].mrr, 0.5);
        assert_eq!(per["q2"].recall_1, 0.5);
        assert!((per["q2"].map - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert_eq!(per["q3"].map, 0.0);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let d = tmp();
        let p = write(&d, "bad.trec", "q1 Q0 a 1 0.9 t\nq1 Q0 b two 0.5 t\n");
        let e = read_run(&p).unwrap_err().to_string();
        assert!(
            e.contains("bad.trec") && e.contains("line 2") && e.contains("two"),
            "{e}"
        );
        let p = write(&d, "q.trec", "q1 0 a\n");
        let e = read_qrels(&p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("3 fields"), "{e}");
        let p = write(&d, "dup.trec", "q1 Q0 a 1 0.9 t\nq1 Q0 a 2 0.5 t\n");
        assert!(read_run(&p).unwrap_err().to_string().contains("twice"));
    }

    fn metrics(r1: &[f64]) -> BTreeMap<String, Metrics> {
        r1.iter()
            .enumerate()
            .map(|(i, &v)| {
                (
                    format!("q{i:04}"),
                    Metrics {
                        recall_1: v,
                        map: v,
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn identical_runs_differ_by_nothing() {
        let a = metrics(&[1.0, 0.0, 0.5, 1.0, 0.0]);
        let c = compare(&a, &a, CompareOptions::default());
        let r1 = &c.metrics[0];
        assert_eq!(r1.metric, "recall@1");
        assert_eq!((r1.diff, r1.diff_ci), (0.0, [0.0, 0.0]));
        assert_eq!(r1.p_value, 1.0);
        assert_eq!(r1.ties, 5);
    }

    #[test]
    fn a_consistent_gain_is_significant_and_a_coin_flip_is_not() {
        // B wins 60 of 200 queries and loses none: p at the floor, CI above 0.
        let a = metrics(&vec![0.0; 200]);
        let b = metrics(
            &(0..200)
                .map(|i| (i % 10 < 3) as u8 as f64)
                .collect::<Vec<_>>(),
        );
        let c = compare(&a, &b, CompareOptions::default());
        let r1 = &c.metrics[0];
        assert!((r1.diff - 0.3).abs() < 1e-12);
        assert!(r1.p_value < 0.001, "{}", r1.p_value);
        assert!(
            r1.diff_ci[0] > 0.2 && r1.diff_ci[1] < 0.4,
            "{:?}",
            r1.diff_ci
        );
        assert!(r1.rel_pct.is_nan(), "A is 0: no relative change");
        assert_eq!((r1.b_wins, r1.b_losses), (60, 0));
        // B wins 10 and loses 10 of 200: no difference to speak of.
        let a = metrics(
            &(0..200)
                .map(|i| (i % 20 == 0) as u8 as f64)
                .collect::<Vec<_>>(),
        );
        let b = metrics(
            &(0..200)
                .map(|i| (i % 20 == 1) as u8 as f64)
                .collect::<Vec<_>>(),
        );
        let c = compare(&a, &b, CompareOptions::default());
        let r1 = &c.metrics[0];
        assert_eq!(r1.diff, 0.0);
        assert!(r1.p_value > 0.9, "{}", r1.p_value);
        assert!(r1.diff_ci[0] < 0.0 && r1.diff_ci[1] > 0.0);
        assert!(r1.rel_pct_ci[0] < 0.0 && r1.rel_pct_ci[1] > 0.0);
    }

    #[test]
    fn only_shared_queries_are_compared_and_seeds_repeat() {
        let a = metrics(&[1.0, 0.0, 1.0]);
        let mut b = metrics(&[1.0, 1.0]);
        b.insert("extra".into(), Metrics::default());
        let o = CompareOptions {
            resamples: 500,
            seed: 3,
        };
        let (c1, c2) = (compare(&a, &b, o), compare(&a, &b, o));
        assert_eq!(c1.queries, 2);
        assert_eq!(c1.metrics[0].diff_ci, c2.metrics[0].diff_ci);
        assert_eq!(c1.metrics[0].p_value, c2.metrics[0].p_value);
        assert!(c1.table("a", "b", &["map".into()]).contains("| map |"));
        assert!(!c1.table("a", "b", &["map".into()]).contains("recall@1"));
    }
}
