//! `uae bench`: flags for the `uae-bench` library; each bench prints JSON (the QASPER
//! table prints markdown) on stdout.

use crate::common::{count, Bars, DataDir, LmArgs};
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;
use uae_bench::qasper::QasperBench;
use uae_bench::speed::{EmbedBench, LabelBench, QueryBench, TrainBench};
use uae_data::Split;
use uae_rag::RagConfig;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// The QASPER benchmark: BM25, base MiniLM, fine-tuned MiniLMs and LLM re-rankers;
    /// retrieval metrics, Token F1 of the LLM's answers from each top-k, latency.
    /// Writes table.json, table.md, chart.svg, answers and TREC runs; resumable.
    Qasper(QasperArgs),
    /// Encoder throughput: N real QASPER paragraphs truncated to a fixed token
    /// length, embedded in batches; reports tokens/s (median of repeats).
    Embed(Bench<EmbedBench>),
    /// Corpus-wide mining at scale: word windows of every QASPER paragraph as an
    /// unscoped corpus, as many questions, each question's dense and BM25 candidates
    /// drawn from the whole corpus (what `uae label --corpus --candidates mined`
    /// runs); seconds and peak memory.
    Mine(Bench<uae_bench::mine::MineBench>),
    /// Query latency: real test questions embedded one at a time (tokenising
    /// included) through the single-query path that `uae serve` uses for a lone
    /// short request, next to a batch of one; p50/p95/p99 in ms.
    Query(Bench<QueryBench>),
    /// Training-step throughput at the default shape: real train questions, each with
    /// 8 paragraphs of its paper cut to 128 tokens, `uae` loss, AdamW.
    Train(Bench<TrainBench>),
    /// Serving under load: the server on a loopback port, a fixed number of requests
    /// at each concurrency; p50/p95/p99 and requests/s for /v1/embeddings (one query;
    /// batches of passages) and /search, next to the offline embedding throughput.
    Serve(Box<Bench<uae_bench::serve::ServeBench>>),
    /// LLM scoring throughput: sequences of real QASPER text cut to a fixed length,
    /// the last `answer` tokens scored (LM head on those only), at several batch sizes.
    Label(Bench<LabelBench>),
}

/// A bench's own settings (its library struct) and the QASPER folder it reads.
#[derive(clap::Args, Debug)]
pub struct Bench<B: clap::Args> {
    #[command(flatten)]
    pub bench: B,
    #[command(flatten)]
    pub data: DataDir,
}

#[derive(clap::Args, Debug)]
pub struct QasperArgs {
    /// Output folder: table.json, table.md, chart.svg, runs/<system>/run.trec and
    /// cache/. Rerunning the same command resumes from cache/.
    #[arg(long)]
    out: PathBuf,
    /// The subset: the first 50 evaluable questions for quality and 10 for latency
    /// (about 15 minutes on 2 cores with all rows).
    #[arg(long)]
    quick: bool,
    /// Evaluate the first N evaluable questions, in file order (>= 1; default: all;
    /// 50 with --quick).
    #[arg(long, value_parser = count())]
    questions: Option<usize>,
    /// Questions timed per system and thread setting (>= 1; default: 50; 10 with
    /// --quick).
    #[arg(long, value_parser = count())]
    latency_queries: Option<usize>,
    /// The base bi-encoder (the "MiniLM" row and the first stage of the re-rankers).
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    base: PathBuf,
    /// The base fine-tuned with `uae train --loss infonce` (row left out when absent).
    #[arg(long)]
    infonce: Option<PathBuf>,
    /// The base fine-tuned with `uae train --loss uae`.
    #[arg(long)]
    uae: Option<PathBuf>,
    /// The base fine-tuned with `--loss uae` on labels from `uae label --candidates mined`.
    #[arg(long)]
    uae_mined: Option<PathBuf>,
    /// More fine-tuned bi-encoders as NAME=DIR (e.g. `kl=runs/kl/model`); repeatable.
    #[arg(long = "model", value_parser = parse_named)]
    models: Vec<(String, PathBuf)>,
    /// Add a row for the `--uae` model with its projections in bf16 (AMX tiles or
    /// AVX512_BF16; an error on CPUs with neither). The other rows stay f32.
    #[arg(long, requires = "uae")]
    uae_bf16: bool,
    /// The LLM for answers and re-ranking (the labeler's).
    #[command(flatten)]
    lm: LmArgs,
    /// Base-encoder candidates re-ranked by the LLM per question (>= 1).
    #[arg(long, default_value_t = 10, value_parser = count())]
    rerank_depth: usize,
    /// Leave out the LLM re-ranking rows.
    #[arg(long)]
    no_rerank: bool,
    /// Leave out answer generation (no Token F1).
    #[arg(long)]
    no_answers: bool,
    /// Also answer under adaptive selection: for each dense row whose model folder
    /// holds calibration.json (`uae calibrate`), Token F1 and context tokens under
    /// fixed k = 1, 2, 3, 5 and the p(helps), expected-utility and token-budget rules
    /// over the top 5, each compared with fixed k by a paired bootstrap. Writes
    /// selection-f1.json, .md and .svg.
    #[arg(long)]
    selection: bool,
    #[command(flatten)]
    rag: RagConfig,
    #[arg(long, default_value = "test")]
    split: Split,
    #[command(flatten)]
    data: DataDir,
}

fn parse_named(s: &str) -> std::result::Result<(String, PathBuf), String> {
    let (name, dir) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected NAME=DIR"))?;
    if name.is_empty() || dir.is_empty() {
        return Err(format!("`{s}`: expected NAME=DIR"));
    }
    Ok((name.to_string(), PathBuf::from(dir)))
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Qasper(a) => {
            let qasper = a.data.load(a.split)?;
            let b = QasperBench {
                out: a.out,
                questions: a.questions.or(a.quick.then_some(50)),
                latency_queries: a.latency_queries.unwrap_or(if a.quick { 10 } else { 50 }),
                base: a.base,
                infonce: a.infonce,
                uae: a.uae,
                uae_mined: a.uae_mined,
                models: a.models,
                uae_bf16: a.uae_bf16,
                lm: a.lm.source(),
                lm_bf16: a.lm.precision.bf16,
                rerank_depth: a.rerank_depth,
                rerank: !a.no_rerank,
                answers: !a.no_answers,
                selection: a.selection,
                rag: a.rag,
            };
            let report = uae_bench::qasper::run(&b, &qasper, &Bars::default())?;
            println!("{}", report.markdown);
            Ok(())
        }
        BenchCmd::Embed(a) => print_json(&uae_bench::speed::embed(
            &a.bench,
            &a.data.load(Split::Test)?,
        )?),
        BenchCmd::Mine(a) => {
            let splits = [Split::Train, Split::Dev, Split::Test].map(|s| a.data.load(s));
            let [train, dev, test] = splits;
            print_json(&uae_bench::mine::mine(
                &a.bench,
                &[train?, dev?, test?],
                &Bars::default(),
            )?)
        }
        BenchCmd::Query(a) => print_json(&uae_bench::speed::query(
            &a.bench,
            &a.data.load(Split::Test)?,
        )?),
        BenchCmd::Train(a) => print_json(&uae_bench::speed::train(
            &a.bench,
            &a.data.load(Split::Train)?,
        )?),
        BenchCmd::Serve(a) => print_json(&uae_bench::serve::serve(
            &a.bench,
            &a.data.load(Split::Test)?,
        )?),
        BenchCmd::Label(a) => print_json(&uae_bench::speed::label(
            &a.bench,
            &a.data.load(Split::Test)?,
        )?),
    }
}

#[cfg(test)]
mod tests {
    use super::BenchCmd;

    fn bench(args: &[&str]) -> BenchCmd {
        let args: Vec<&str> = std::iter::once("bench")
            .chain(args.iter().copied())
            .collect();
        let crate::Cmd::Bench(b) = crate::parse(&args) else {
            panic!("not bench")
        };
        b
    }

    #[test]
    fn flag_defaults_are_the_benches_defaults() {
        let d = |x: &dyn std::fmt::Debug| format!("{x:?}");
        let same = |cmd: BenchCmd, want: String| {
            let got = match cmd {
                BenchCmd::Embed(a) => d(&a.bench),
                BenchCmd::Query(a) => d(&a.bench),
                BenchCmd::Train(a) => d(&a.bench),
                BenchCmd::Label(a) => d(&a.bench),
                BenchCmd::Serve(a) => d(&a.bench),
                BenchCmd::Mine(a) => d(&a.bench),
                BenchCmd::Qasper(a) => d(&a.rag),
            };
            assert_eq!(got, want);
        };
        same(
            bench(&["embed"]),
            d(&uae_bench::speed::EmbedBench::default()),
        );
        same(
            bench(&["query"]),
            d(&uae_bench::speed::QueryBench::default()),
        );
        same(
            bench(&["train"]),
            d(&uae_bench::speed::TrainBench::default()),
        );
        same(
            bench(&["label"]),
            d(&uae_bench::speed::LabelBench::default()),
        );
        same(
            bench(&["serve"]),
            d(&uae_bench::serve::ServeBench::default()),
        );
        same(bench(&["mine"]), d(&uae_bench::mine::MineBench::default()));
        same(
            bench(&["qasper", "--out", "o"]),
            d(&uae_rag::RagConfig::default()),
        );
    }
}
