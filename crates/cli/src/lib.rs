//! The `uae` command line: flags turned into library configs, progress bars, and
//! printing. The binary (`main.rs`) only parses and reports errors; this library
//! form lets tests walk every flag.

mod bench;
mod common;
mod compare_cmd;
mod data_cmd;
mod embed;
mod eval_cmd;
mod index_cmd;
mod label_cmd;
mod serve;
mod train_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "uae", version, about = "Utility-aligned dense retrieval: label passages with an LLM's answer perplexity, train a bi-encoder on it, search without the LLM.", long_about = None)]
pub struct Cli {
    /// Worker threads for matmuls and kernels (1-1024; default: all cores; env
    /// RAYON_NUM_THREADS).
    #[arg(long, global = true, env = "UAE_THREADS", value_parser = common::count_in(1, 1024))]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Inspect QASPER, or export it as your-own-data files.
    #[command(subcommand)]
    Data(data_cmd::DataCmd),
    /// Embed texts from a JSONL file with a bi-encoder.
    Embed(embed::EmbedArgs),
    /// Evaluate a retriever (BM25 or a dense model) on QASPER, a BEIR folder or your files.
    Eval(eval_cmd::EvalArgs),
    /// Fit what a model's scores are worth to the LLM (expected utility in nats,
    /// probability that a passage helps) on labelled held-out questions; writes
    /// calibration.json into the model folder, which `uae serve` then uses.
    Calibrate(uae_search::calibrate::CalibrateArgs),
    /// Compare two evaluation runs (or two retrievers' utility labels) question by
    /// question: the difference of each metric, its 95% bootstrap interval and a
    /// paired significance test.
    Compare(compare_cmd::CompareArgs),
    /// Score candidate passages by how much they lower the LLM's NLL of the answer.
    Label(label_cmd::LabelArgs),
    /// Fine-tune a bi-encoder on utility labels (or gold evidence, for the ablation).
    Train(train_cmd::TrainArgs),
    /// Average a fine-tuned model with its base, weight by weight (WiSE-FT): keeps
    /// more of the base's accuracy on other domains, without training again.
    Interpolate(train_cmd::InterpolateArgs),
    /// Serve searches and OpenAI/TEI-compatible embeddings over HTTP: encoder + exact
    /// vector search, no LLM at query time.
    Serve(serve::ServeArgs),
    /// Look at what the LLM found useful: a web page over a label folder (every
    /// question's candidates by utility, the passage as the LLM saw it, filters,
    /// histograms), searches of its passages, and two evaluations compared.
    Explore(uae_serve::explore::ExploreConfig),
    /// Export a corpus's vectors and ids for a vector database.
    #[command(subcommand)]
    Index(index_cmd::IndexCmd),
    /// Speed benchmarks; each prints one JSON object on stdout.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

/// Runs a parsed command line: logging, the thread pool, the command; errors
/// print on one line.
pub fn run(cli: Cli) -> ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Some(n) = cli.threads {
        // Ignored if a pool already exists; nothing has started one yet.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    let result = match cli.cmd {
        Cmd::Data(c) => data_cmd::run(c),
        Cmd::Embed(a) => embed::run(a),
        Cmd::Eval(a) => eval_cmd::run(a),
        Cmd::Compare(a) => compare_cmd::run(a),
        Cmd::Serve(a) => serve::run(a),
        Cmd::Explore(a) => serve::explore(a),
        Cmd::Label(a) => label_cmd::run(a),
        Cmd::Train(a) => train_cmd::run(a),
        Cmd::Interpolate(a) => train_cmd::interpolate(a),
        Cmd::Calibrate(a) => eval_cmd::calibrate(a),
        Cmd::Bench(c) => bench::run(c),
        Cmd::Index(c) => index_cmd::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line. Errors that print their source themselves
/// (`"{path}: {source}"`) would repeat it; a cause already at the end is skipped.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if line.is_empty() {
            line = cause;
        } else if !line.ends_with(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

/// A command line parsed, for the subcommands' tests.
#[cfg(test)]
fn parse(args: &[&str]) -> Cmd {
    use clap::Parser;
    let full: Vec<&str> = std::iter::once("uae").chain(args.iter().copied()).collect();
    Cli::try_parse_from(full)
        .expect("the test's command line parses")
        .cmd
}
