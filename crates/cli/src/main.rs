//! `uae`: utility-aligned dense retrieval. One binary over the workspace libraries.

mod bench;
mod common;
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
struct Cli {
    /// Worker threads for matmuls and kernels (1-1024; default: all cores; env
    /// RAYON_NUM_THREADS).
    #[arg(long, global = true, env = "UAE_THREADS", value_parser = common::count_in(1, 1024))]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Inspect datasets.
    #[command(subcommand)]
    Data(data_cmd::DataCmd),
    /// Embed texts from a JSONL file with a bi-encoder.
    Embed(embed::EmbedArgs),
    /// Evaluate a retriever (BM25 or a dense model) on QASPER or a BEIR folder.
    Eval(eval_cmd::EvalArgs),
    /// Score candidate passages by how much they lower the LLM's NLL of the answer.
    Label(label_cmd::LabelArgs),
    /// Fine-tune a bi-encoder on utility labels (or gold evidence, for the ablation).
    Train(train_cmd::TrainArgs),
    /// Serve searches over a corpus through HTTP (POST /search): encoder + exact
    /// vector search, no LLM at query time.
    Serve(serve::ServeArgs),
    /// Export a corpus's vectors and ids for a vector database.
    #[command(subcommand)]
    Index(index_cmd::IndexCmd),
    /// Speed benchmarks; each prints one JSON object on stdout.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Cmd::Serve(a) => serve::run(a),
        Cmd::Label(a) => label_cmd::run(a),
        Cmd::Train(a) => train_cmd::run(a),
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
fn error_line(e: &anyhow::Error) -> String {
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

#[cfg(test)]
mod tests {
    #[test]
    fn error_line_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(io)
            .context("x.json: no such file")
            .context("loading x");
        assert_eq!(super::error_line(&e), "loading x: x.json: no such file");
        let e = anyhow::anyhow!("root cause").context("outer");
        assert_eq!(super::error_line(&e), "outer: root cause");
    }
}

/// Every numeric flag of every command, walked with values that must be refused at
/// parse time (clap's one-line error, before any work): negative, NaN, infinite,
/// past u32, and 0 where 0 would divide by zero, loop or mean something else.
#[cfg(test)]
mod flag_ranges {
    use super::Cli;
    use clap::{CommandFactory, Parser};

    /// Flags where 0 is a meaningful value.
    const ZERO_OK: &[&str] = &[
        "seed",
        "dense_negatives",
        "bm25_negatives",
        "random_negatives",
        "eval_every",
        "k1",
        "b",
    ];
    /// Real-valued flags (a huge finite value is a legal, if odd, setting).
    const FLOATS: &[&str] = &["k1", "b", "lr", "tau", "tau_u", "peak_gflops"];
    /// Numeric flags without a default (so not found by their default's shape).
    const OPTIONAL: &[&str] = &[
        "limit",
        "questions",
        "latency_queries",
        "dev_limit",
        "threads",
    ];

    /// (path of subcommand names, flag long name, arg id) for every numeric flag.
    fn numeric_flags() -> Vec<(Vec<String>, String, String)> {
        fn walk(
            cmd: &clap::Command,
            path: &mut Vec<String>,
            out: &mut Vec<(Vec<String>, String, String)>,
        ) {
            for a in cmd.get_arguments() {
                let (Some(long), true) = (a.get_long(), a.get_action().takes_values()) else {
                    continue;
                };
                let numeric_default = a
                    .get_default_values()
                    .first()
                    .and_then(|v| v.to_str())
                    .is_some_and(|v| v.split(',').all(|x| x.parse::<f64>().is_ok()));
                if numeric_default || OPTIONAL.contains(&a.get_id().as_str()) {
                    out.push((path.clone(), long.to_string(), a.get_id().to_string()));
                }
            }
            for sub in cmd.get_subcommands() {
                path.push(sub.get_name().to_string());
                walk(sub, path, out);
                path.pop();
            }
        }
        let mut out = Vec::new();
        walk(&Cli::command(), &mut Vec::new(), &mut out);
        out
    }

    #[test]
    fn every_numeric_flag_refuses_out_of_range_values() {
        let flags = numeric_flags();
        assert!(flags.len() > 40, "found only {} numeric flags", flags.len());
        let mut checked = 0;
        for (path, long, id) in &flags {
            let mut bad = vec!["-1", "nan", "inf", "1e400"];
            if !FLOATS.contains(&id.as_str()) {
                // Past u32: larger than any count the machine could act on.
                bad.push("99999999999999999999");
            }
            if !ZERO_OK.contains(&id.as_str()) {
                bad.push("0");
            }
            for v in bad {
                let mut argv = vec!["uae".to_string()];
                argv.extend(path.iter().cloned());
                argv.push(format!("--{long}={v}"));
                let r = Cli::try_parse_from(&argv);
                assert!(r.is_err(), "`{}` was accepted", argv.join(" "));
                let e = r.err().map(|e| e.kind());
                assert!(
                    matches!(
                        e,
                        Some(
                            clap::error::ErrorKind::ValueValidation
                                | clap::error::ErrorKind::InvalidValue
                        )
                    ),
                    "`{}`: {e:?}, not a value error",
                    argv.join(" ")
                );
                checked += 1;
            }
        }
        // The flags the issue named, by name, so a rename cannot drop them silently.
        for (cmd, flag) in [
            ("embed", "batch"),
            ("embed", "tokens"),
            ("train", "micro_batch"),
            ("train", "tokens"),
            ("train", "candidates"),
            ("label", "batches"),
        ] {
            assert!(
                flags
                    .iter()
                    .any(|(p, _, id)| p.last().is_some_and(|c| c == cmd) && id == flag),
                "bench {cmd} --{flag} is not walked"
            );
        }
        assert!(checked > 200);
    }
}
