//! `uae bench`: flags for the `uae-bench` library; each bench prints JSON (the QASPER
//! table prints markdown) on stdout.

use crate::common::{count, count_in, Bars, DataDir, LmArgs, ENCODER_BF16_HELP};
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
    /// Writes report.json, report.md, chart.svg, answers and TREC runs; resumable.
    Qasper(QasperArgs),
    /// Encoder throughput: N real QASPER paragraphs truncated to a fixed token
    /// length, embedded in batches; reports tokens/s (median of repeats).
    Embed(EmbedArgs),
    /// Corpus-wide mining at scale: word windows of every QASPER paragraph as an
    /// unscoped corpus, as many questions, each question's dense and BM25 candidates
    /// drawn from the whole corpus (what `uae label --corpus --candidates mined`
    /// runs); seconds and peak memory.
    Mine(MineBenchArgs),
    /// Query latency: real test questions embedded one at a time (tokenising
    /// included) through the single-query path that `uae serve` uses for a lone
    /// short request, next to a batch of one; p50/p95/p99 in ms.
    Query(QueryBenchArgs),
    /// Training-step throughput at the default shape: real train questions, each with
    /// 8 paragraphs of its paper cut to 128 tokens, `uae` loss, AdamW.
    Train(TrainBenchArgs),
    /// Serving under load: the server on a loopback port, a fixed number of requests
    /// at each concurrency; p50/p95/p99 and requests/s for /v1/embeddings (one query;
    /// batches of passages) and /search, next to the offline embedding throughput.
    Serve(ServeBenchArgs),
    /// LLM scoring throughput: sequences of real QASPER text cut to a fixed length,
    /// the last `answer` tokens scored (LM head on those only), at several batch sizes.
    Label(LabelBenchArgs),
}

#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    pub model: PathBuf,
    #[arg(long, help = ENCODER_BF16_HELP)]
    pub bf16: bool,
    /// Paragraphs embedded per pass (>= 1).
    #[arg(long, default_value_t = 512, value_parser = count())]
    pub passages: usize,
    /// Tokens per passage, [CLS] and [SEP] included (2-512).
    #[arg(long, default_value_t = 128, value_parser = count_in(2, 512))]
    pub tokens: usize,
    /// Passages per forward pass (>= 1).
    #[arg(long, default_value_t = 32, value_parser = count())]
    pub batch: usize,
    /// Timed repeats after one warm-up pass (1-1000).
    #[arg(long, default_value_t = 3, value_parser = count_in(1, 1000))]
    pub repeats: usize,
    #[command(flatten)]
    pub data: DataDir,
}

#[derive(clap::Args, Debug)]
pub struct MineBenchArgs {
    /// The base bi-encoder that ranks the dense candidates.
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    pub encoder: PathBuf,
    /// Passages in the corpus (>= 1).
    #[arg(long, default_value_t = 200_000, value_parser = count())]
    pub passages: usize,
    /// Questions mined (>= 1).
    #[arg(long, default_value_t = 10_000, value_parser = count())]
    pub questions: usize,
    /// Words per passage window (1-400).
    #[arg(long, default_value_t = 48, value_parser = count_in(1, 400))]
    pub words: usize,
    #[command(flatten)]
    pub data: DataDir,
}

#[derive(clap::Args, Debug)]
pub struct QueryBenchArgs {
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    pub model: PathBuf,
    #[arg(long, help = ENCODER_BF16_HELP)]
    pub bf16: bool,
    /// Test questions, each embedded alone (>= 1).
    #[arg(long, default_value_t = 200, value_parser = count())]
    pub queries: usize,
    /// Timed passes over the questions after one warm-up pass (1-100).
    #[arg(long, default_value_t = 1, value_parser = count_in(1, 100))]
    pub repeats: usize,
    #[command(flatten)]
    pub data: DataDir,
}

#[derive(clap::Args, Debug)]
pub struct TrainBenchArgs {
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    pub model: PathBuf,
    /// Questions per step (>= 1).
    #[arg(long, default_value_t = 16, value_parser = count())]
    pub questions: usize,
    /// Paragraphs per question (>= 1).
    #[arg(long, default_value_t = 8, value_parser = count())]
    pub candidates: usize,
    /// Tokens per paragraph (2-512).
    #[arg(long, default_value_t = 128, value_parser = count_in(2, 512))]
    pub tokens: usize,
    /// Timed steps after one warm-up step (1-1000).
    #[arg(long, default_value_t = 3, value_parser = count_in(1, 1000))]
    pub steps: usize,
    /// Texts per micro-batch (>= 1).
    #[arg(long, default_value_t = 32, value_parser = count())]
    pub micro_batch: usize,
    /// GradCache's first pass in bf16 (see `uae train --bf16-first-pass`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub bf16_first_pass: bool,
    /// Memory for graphs kept from the first pass, MiB (see `uae train --graph-memory-mb`).
    #[arg(long, default_value_t = uae_train::trainer::DEFAULT_GRAPH_MEMORY_MB, value_parser = count_in(0, 1 << 30))]
    pub graph_memory_mb: usize,
    /// bf16 GEMMs with f32 weights and gradients (see `uae train --mixed-precision`).
    #[arg(long)]
    pub mixed_precision: bool,
    #[command(flatten)]
    pub data: DataDir,
}

#[derive(clap::Args, Debug)]
pub struct ServeBenchArgs {
    #[arg(long, default_value = uae_search::DEFAULT_ENCODER)]
    pub model: PathBuf,
    /// Test-split passages in the searched corpus (>= 1).
    #[arg(long, default_value_t = 2000, value_parser = count())]
    pub passages: usize,
    /// Requests per row (batch rows send a quarter as many) (1-100000).
    #[arg(long, default_value_t = 400, value_parser = count_in(1, 100_000))]
    pub requests: usize,
    /// Concurrency levels, comma separated (each 1-1024).
    #[arg(long, default_value = "1,8,32,64", value_delimiter = ',', value_parser = count_in(1, 1024))]
    pub concurrency: Vec<usize>,
    /// Tokens per passage in the batch rows (2-512).
    #[arg(long, default_value_t = 128, value_parser = count_in(2, 512))]
    pub tokens: usize,
    /// Passages per batch request (1-512).
    #[arg(long, default_value_t = 32, value_parser = count_in(1, 512))]
    pub batch: usize,
    /// The server's --max-batch-requests (most requests in one model pass; >= 1).
    #[arg(long, default_value_t = uae_serve::ServeConfig::default().batch.max_batch_requests, value_parser = count())]
    pub max_batch_requests: usize,
    #[command(flatten)]
    pub data: DataDir,
}

#[derive(clap::Args, Debug)]
pub struct LabelBenchArgs {
    #[command(flatten)]
    pub lm: LmArgs,
    /// Sequences scored per pass (>= 1).
    #[arg(long, default_value_t = 32, value_parser = count())]
    pub sequences: usize,
    /// Tokens per sequence (2-8192).
    #[arg(long, default_value_t = 256, value_parser = count_in(2, 8192))]
    pub tokens: usize,
    /// Scored tokens at the end of each sequence (1 to --tokens - 1).
    #[arg(long, default_value_t = 16, value_parser = count())]
    pub answer: usize,
    /// Batch sizes to measure, comma separated (each >= 1).
    #[arg(long, default_value = "1,8", value_delimiter = ',', value_parser = count())]
    pub batches: Vec<usize>,
    /// Timed repeats after one warm-up pass (1-1000).
    #[arg(long, default_value_t = 3, value_parser = count_in(1, 1000))]
    pub repeats: usize,
    #[command(flatten)]
    pub data: DataDir,
}

#[derive(clap::Args, Debug)]
pub struct QasperArgs {
    /// Output folder: report.json, report.md, chart.svg, runs/<system>/run.trec and
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
    /// Answer prompt with {context} and {question} placeholders; a typed `\n` is a
    /// newline.
    #[arg(long, default_value = uae_rag::DEFAULT_ANSWER_TEMPLATE)]
    answer_template: String,
    /// Each passage is cut to this many LLM tokens in prompts (>= 1).
    #[arg(long, default_value_t = 256, value_parser = count())]
    passage_tokens: usize,
    /// Longest generated answer, in tokens (1-4096).
    #[arg(long, default_value_t = 32, value_parser = count_in(1, 4096))]
    max_new_tokens: usize,
    /// Prompts decoded together (>= 1). Decoding reads every weight once per step for
    /// the whole batch, so larger batches are nearly free per step (bf16, batch 32:
    /// 52 ms a step vs 35 ms at 8). Answers do not depend on it (rows are independent).
    #[arg(long, default_value_t = 32, value_parser = count())]
    answer_batch: usize,
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
                lm_bf16: a.lm.bf16,
                rerank_depth: a.rerank_depth,
                rerank: !a.no_rerank,
                answers: !a.no_answers,
                rag: RagConfig {
                    answer_template: a.answer_template.replace("\\n", "\n"),
                    passage_tokens: a.passage_tokens,
                    max_new_tokens: a.max_new_tokens,
                    max_batch: a.answer_batch,
                },
            };
            let report = uae_bench::qasper::run(&b, &qasper, &Bars::default())?;
            println!("{}", report.markdown);
            Ok(())
        }
        BenchCmd::Embed(a) => {
            let b = EmbedBench {
                model: a.model,
                bf16: a.bf16,
                passages: a.passages,
                tokens: a.tokens,
                batch: a.batch,
                repeats: a.repeats,
            };
            print_json(&uae_bench::speed::embed(&b, &a.data.load(Split::Test)?)?)
        }
        BenchCmd::Mine(a) => {
            let b = uae_bench::mine::MineBench {
                encoder: a.encoder,
                passages: a.passages,
                questions: a.questions,
                words: a.words,
            };
            let splits = [
                a.data.load(Split::Train)?,
                a.data.load(Split::Dev)?,
                a.data.load(Split::Test)?,
            ];
            print_json(&uae_bench::mine::mine(&b, &splits, &Bars::default())?)
        }
        BenchCmd::Query(a) => {
            let b = QueryBench {
                model: a.model,
                bf16: a.bf16,
                queries: a.queries,
                repeats: a.repeats,
            };
            print_json(&uae_bench::speed::query(&b, &a.data.load(Split::Test)?)?)
        }
        BenchCmd::Train(a) => {
            let b = TrainBench {
                model: a.model,
                questions: a.questions,
                candidates: a.candidates,
                tokens: a.tokens,
                steps: a.steps,
                micro_batch: a.micro_batch,
                bf16_first_pass: a.bf16_first_pass,
                graph_memory_mb: a.graph_memory_mb,
                mixed_precision: a.mixed_precision,
            };
            print_json(&uae_bench::speed::train(&b, &a.data.load(Split::Train)?)?)
        }
        BenchCmd::Serve(a) => {
            let mut config = uae_serve::ServeConfig {
                model_name: uae_serve::model_name(&a.model),
                ..Default::default()
            };
            config.batch.max_batch_requests = a.max_batch_requests;
            let b = uae_bench::serve::ServeBench {
                model: a.model,
                passages: a.passages,
                requests: a.requests,
                concurrency: a.concurrency,
                tokens: a.tokens,
                batch: a.batch,
                config,
            };
            print_json(&uae_bench::serve::serve(&b, &a.data.load(Split::Test)?)?)
        }
        BenchCmd::Label(a) => {
            let b = LabelBench {
                lm: a.lm.source(),
                bf16: a.lm.bf16,
                sequences: a.sequences,
                tokens: a.tokens,
                answer: a.answer,
                batches: a.batches,
                repeats: a.repeats,
            };
            print_json(&uae_bench::speed::label(&b, &a.data.load(Split::Test)?)?)
        }
    }
}
