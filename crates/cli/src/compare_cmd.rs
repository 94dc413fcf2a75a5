use crate::common::count_in;
use anyhow::{Context, Result};
use std::path::PathBuf;
use uae_eval::compare::CompareOptions;

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
    /// Also compare within each group of the questions by this field, as `uae eval
    /// --by FIELD` wrote them into A's (or B's) folder: e.g. `answer_type` on QASPER.
    #[arg(long, value_name = "FIELD")]
    by: Option<String>,
    /// Also write the whole comparison (every metric) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: CompareArgs) -> Result<()> {
    let opts = CompareOptions {
        resamples: a.resamples,
        seed: a.seed,
    };
    let r =
        uae_search::compare::compare_paths(&a.a, &a.b, a.qrels.as_deref(), a.by.as_deref(), opts)?;
    let shown = r.shown(&a.metrics)?;
    let (name_a, name_b) = (a.a.display().to_string(), a.b.display().to_string());
    print!("{}", r.report(&name_a, &name_b, &shown));
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&r.to_json())?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
