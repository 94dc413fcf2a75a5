use crate::common::count_in;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use uae_eval::compare::{self, CompareOptions, Qrels};
use uae_label::UTILITY_METRICS;

#[derive(clap::Args)]
pub struct CompareArgs {
    /// Run A, the reference: a `uae eval --out` folder (run.trec, qrels.trec), a
    /// TREC run file, or a `uae label --candidates retrieved` folder (labels.jsonl:
    /// the LLM's utility of the retriever's top passages; no evidence labels needed).
    a: PathBuf,
    /// Run B, compared against A over the same questions (the same kind as A).
    b: PathBuf,
    /// TREC qrels (`qid 0 docid grade`). Default: the folders' qrels.trec, which must
    /// then agree.
    #[arg(long)]
    qrels: Option<PathBuf>,
    /// Metrics to print, comma-separated; the JSON holds all. Runs: any of
    /// recall@1/3/5/10, hit@1/3/5/10, map, mrr, ndcg@10 (default recall@1, recall@5,
    /// map, mrr, ndcg@10). Utility folders: utility@1 (the top passage's utility,
    /// nats of the answer's mean NLL), best@k (the best of the labelled top k),
    /// helps@1 (share of questions whose top passage lowers the NLL by >= 1 nat);
    /// default all three.
    #[arg(long, value_delimiter = ',')]
    metrics: Vec<String>,
    /// Bootstrap resamples for the 95% intervals, and sign flips for the p-value
    /// (1-1000000; more is steadier and slower: 10,000 over 1,300 queries takes a
    /// second or two).
    #[arg(long, default_value_t = 10_000, value_parser = count_in(1, 1_000_000))]
    resamples: usize,
    /// Seed of the resampling (the same seed repeats every number).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the whole comparison (every metric) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The run file of `p` (a folder's run.trec, or `p` itself) and its folder's
/// qrels.trec when there is one.
fn locate(p: &Path) -> (PathBuf, Option<PathBuf>) {
    if p.is_dir() {
        let q = p.join("qrels.trec");
        (p.join("run.trec"), q.exists().then_some(q))
    } else {
        (p.to_path_buf(), None)
    }
}

/// What is compared: retrieval runs against qrels, or utility label folders.
const RUN_METRICS: [&str; 5] = ["recall@1", "recall@5", "map", "mrr", "ndcg@10"];

fn is_labels(p: &Path) -> bool {
    p.is_dir() && !p.join("run.trec").exists() && p.join("labels.jsonl").exists()
}

pub fn run(a: CompareArgs) -> Result<()> {
    let utility = match (is_labels(&a.a), is_labels(&a.b)) {
        (true, true) => true,
        (false, false) => false,
        _ => bail!(
            "{} and {}: compare two retrieval runs, or two utility label folders, not one of each",
            a.a.display(),
            a.b.display()
        ),
    };
    let all: Vec<&str> = if utility {
        UTILITY_METRICS.to_vec()
    } else {
        uae_eval::Metrics::default().rows().map(|(k, _)| k).to_vec()
    };
    for m in &a.metrics {
        if !all.contains(&m.as_str()) {
            bail!(
                "--metrics: unknown metric `{m}` (one of {})",
                all.join(", ")
            );
        }
    }
    let shown: Vec<String> = match (a.metrics.is_empty(), utility) {
        (false, _) => a.metrics.clone(),
        (true, true) => UTILITY_METRICS.map(String::from).to_vec(),
        (true, false) => RUN_METRICS.map(String::from).to_vec(),
    };
    let opts = CompareOptions {
        resamples: a.resamples,
        seed: a.seed,
    };
    let c = if utility {
        if a.qrels.is_some() {
            bail!("--qrels applies to retrieval runs; utility folders carry their own answers");
        }
        compare_utilities(&a.a, &a.b, opts)?
    } else {
        compare_runs(&a, opts)?
    };
    println!(
        "{} {}, B against A; 95% paired bootstrap intervals and two-sided sign-flip p-values over {} resamples (seed {})\n",
        c.queries,
        if utility { "questions" } else { "queries" },
        c.resamples,
        c.seed
    );
    print!(
        "{}",
        c.table(
            &a.a.display().to_string(),
            &a.b.display().to_string(),
            &shown
        )
    );
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&c)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn compare_runs(a: &CompareArgs, opts: CompareOptions) -> Result<compare::Comparison> {
    let (run_a, qrels_a) = locate(&a.a);
    let (run_b, qrels_b) = locate(&a.b);
    let qrels: Qrels = match (&a.qrels, &qrels_a, &qrels_b) {
        (Some(q), ..) => compare::read_qrels(q)?,
        (None, Some(qa), Some(qb)) => {
            let (x, y) = (compare::read_qrels(qa)?, compare::read_qrels(qb)?);
            if x != y {
                bail!(
                    "{} and {} judge different queries or passages: the runs are not over the same questions (pass --qrels to score both against one)",
                    qa.display(),
                    qb.display()
                );
            }
            x
        }
        (None, Some(q), None) | (None, None, Some(q)) => compare::read_qrels(q)?,
        (None, None, None) => bail!("no qrels: pass --qrels, or eval folders holding qrels.trec"),
    };
    let ra = compare::read_run(&run_a)?;
    let rb = compare::read_run(&run_b)?;
    let (pa, pb) = (
        compare::per_query(&ra, &qrels),
        compare::per_query(&rb, &qrels),
    );
    if pa.is_empty() {
        bail!("no judged query with a relevant passage in the qrels");
    }
    for (path, run, per, dir) in [(&run_a, &ra, &pa, &a.a), (&run_b, &rb, &pb, &a.b)] {
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
    Ok(compare::compare(&pa, &pb, opts))
}

fn compare_utilities(a: &Path, b: &Path, opts: CompareOptions) -> Result<compare::Comparison> {
    let ((ma, ua), (mb, ub)) = (
        uae_label::retrieved_utilities(a)?,
        uae_label::retrieved_utilities(b)?,
    );
    if !uae_label::comparable(&ma, &mb) {
        bail!(
            "{} and {} were labelled with another LLM, template, passage budget, question set or --top-k: their utilities are not comparable",
            a.display(),
            b.display()
        );
    }
    if !ua.keys().any(|q| ub.contains_key(q)) {
        bail!(
            "{} and {} share no labelled question",
            a.display(),
            b.display()
        );
    }
    Ok(compare::compare_values(&UTILITY_METRICS, &ua, &ub, opts))
}

/// Warns when a folder's report.json disagrees with the metrics recomputed from its
/// run (a truncated or edited run file).
fn check_report(dir: &Path, per: &BTreeMap<String, uae_eval::Metrics>) {
    let Ok(Some(r)) = uae_search::EvalReport::read(dir) else {
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
