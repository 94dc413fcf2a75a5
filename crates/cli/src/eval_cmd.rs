use crate::common::{count, named, non_negative, unit_interval, Bars, DataDir, ENCODER_BF16_HELP};
use anyhow::Result;
use std::path::PathBuf;
use uae_data::Split;
use uae_encoder::BatchOptions;
use uae_index::Bm25Params;
use uae_search::{Retriever, RetrieverKind};

#[derive(clap::Args)]
pub struct EvalArgs {
    /// QASPER split (ignored with --beir).
    #[arg(long, default_value = "test")]
    split: Split,
    /// `bm25` or `dense` (a bi-encoder, --model).
    #[arg(long, default_value = "dense", value_parser = named::<RetrieverKind>(&["bm25", "dense"]))]
    retriever: RetrieverKind,
    /// Bi-encoder folder for --retriever dense.
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    model: PathBuf,
    #[arg(long, help = ENCODER_BF16_HELP)]
    bf16: bool,
    /// Output folder: run.trec, qrels.trec, report.json.
    #[arg(long)]
    out: PathBuf,
    /// Evaluate on a BEIR-layout folder instead of QASPER (corpus-wide search).
    #[arg(long, conflicts_with_all = ["corpus", "questions"])]
    beir: Option<PathBuf>,
    /// Your own corpus (JSONL or a BEIR folder); needs --questions with positives.
    #[arg(long, requires = "questions")]
    corpus: Option<PathBuf>,
    /// Your own questions (JSONL); those with `positives` are scored.
    #[arg(long, requires = "corpus")]
    questions: Option<PathBuf>,
    /// qrels split name for --beir (qrels/{name}.tsv).
    #[arg(long, default_value = "test")]
    beir_split: String,
    /// BM25 term-frequency saturation (>= 0).
    #[arg(long, default_value_t = 1.2, value_parser = non_negative)]
    k1: f32,
    /// BM25 length normalisation (0: none, 1: full).
    #[arg(long, default_value_t = 0.75, value_parser = unit_interval)]
    b: f32,
    /// Evaluate the first N questions only (and their papers), as `uae train
    /// --dev-limit` does (>= 1).
    #[arg(long, value_parser = count())]
    limit: Option<usize>,
    /// Most padded tokens per encoder forward pass (>= 1).
    #[arg(long, default_value_t = 8192, value_parser = count())]
    max_tokens: usize,
    #[command(flatten)]
    data: DataDir,
}

pub fn run(a: EvalArgs) -> Result<()> {
    let mut coll = match (&a.beir, &a.corpus, &a.questions) {
        (Some(dir), ..) => uae_data::load_beir(dir, &a.beir_split)?,
        (_, Some(c), Some(q)) => uae_data::QaSet::load(c, q)?.collection(),
        _ => a.data.load(a.split)?.collection(),
    };
    if let Some(n) = a.limit {
        uae_search::limit_queries(&mut coll, n);
    }
    let retriever = match a.retriever {
        RetrieverKind::Bm25 => Retriever::Bm25(Bm25Params { k1: a.k1, b: a.b }),
        RetrieverKind::Dense => Retriever::Dense {
            model: a.model.clone(),
            bf16: a.bf16,
            opts: BatchOptions {
                max_tokens: a.max_tokens,
                ..Default::default()
            },
        },
    };
    let report = uae_search::evaluate(&coll, &retriever, &a.out, &Bars::default())?;
    let tag = retriever.tag();
    println!(
        "{} on {}: {} evaluable of {} queries ({} without matched text evidence skipped), {} passages\n",
        tag, report.collection, report.evaluable_queries, report.queries, report.skipped_queries, report.passages
    );
    print!("{}", uae_eval::table(&tag, &report.metrics));
    Ok(())
}
