use crate::common::{
    count, named, non_negative, positive, unit_interval, Bars, DataDir, ENCODER_BF16_HELP,
};
use anyhow::Result;
use std::path::PathBuf;
use uae_data::Split;
use uae_encoder::BatchOptions;
use uae_index::{Bm25Params, Fusion};
use uae_search::{Retriever, RetrieverKind};

#[derive(clap::Args)]
pub struct EvalArgs {
    /// QASPER split (ignored with --beir).
    #[arg(long, default_value = "test")]
    split: Split,
    /// `bm25`, `dense` (a bi-encoder, --model) or `hybrid` (the dense and the BM25
    /// rankings fused, --fusion).
    #[arg(long, default_value = "dense", value_parser = named::<RetrieverKind>(&["bm25", "dense", "hybrid"]))]
    retriever: RetrieverKind,
    /// --retriever hybrid: `rrf` (reciprocal rank fusion, --rrf-k; needs no tuning)
    /// or `convex` (--dense-weight x dense + the rest x BM25, both scores min-max
    /// normalised per query; choose the weight on dev).
    #[arg(long, default_value = "rrf", value_parser = ["rrf", "convex"])]
    fusion: String,
    /// Reciprocal rank fusion's constant (> 0): each ranking adds 1 / (k + rank).
    #[arg(long, default_value_t = 60.0, value_parser = positive)]
    rrf_k: f32,
    /// Convex fusion: the dense score's weight (0-1; 1 is dense alone).
    #[arg(long, default_value_t = 0.5, value_parser = unit_interval)]
    dense_weight: f32,
    /// Bi-encoder folder for --retriever dense or hybrid.
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
    let bm25 = Bm25Params { k1: a.k1, b: a.b };
    let opts = BatchOptions {
        max_tokens: a.max_tokens,
        ..Default::default()
    };
    let retriever = match a.retriever {
        RetrieverKind::Bm25 => Retriever::Bm25(bm25),
        RetrieverKind::Dense => Retriever::Dense {
            model: a.model.clone(),
            bf16: a.bf16,
            opts,
        },
        RetrieverKind::Hybrid => Retriever::Hybrid {
            model: a.model.clone(),
            bf16: a.bf16,
            opts,
            bm25,
            fusion: match a.fusion.as_str() {
                "convex" => Fusion::Convex {
                    dense_weight: a.dense_weight,
                },
                _ => Fusion::Rrf { k: a.rrf_k },
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

#[derive(clap::Args)]
pub struct CalibrateArgs {
    /// The model folder (a sentence-transformers bi-encoder, e.g. `uae train`'s
    /// `out/model`).
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    model: PathBuf,
    /// A label folder of held-out questions (`uae label` on dev questions): each
    /// candidate's utility is what the model's score is calibrated against.
    #[arg(long)]
    labels: PathBuf,
    /// Where calibration.json goes (default: the model folder).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn calibrate(a: CalibrateArgs) -> Result<()> {
    let groups = uae_artifacts::labels::LabeledGroup::read_all(&a.labels)?;
    let out = a.out.clone().unwrap_or_else(|| a.model.clone());
    let f = uae_search::calibrate::calibrate(&a.model, &a.labels, &groups, &out, &Bars::default())?;
    let summary = uae_search::calibrate::CalibrationSummary::of(&f, &out);
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
