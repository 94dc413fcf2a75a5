//! Every numeric flag of every command, walked with values that must be refused at
//! parse time (clap's one-line error, before any work): negative, NaN, infinite,
//! past u32, and 0 where 0 would divide by zero, loop or mean something else.

use clap::{CommandFactory, Parser};
use uae_cli::Cli;

/// Flags where 0 is a meaningful value.
const ZERO_OK: &[&str] = &[
    "seed",
    "dense_negatives",
    "bm25_negatives",
    "random_negatives",
    "eval_every",
    "k1",
    "b",
    "lm_retries",
    "gold_weight",
    "min_answer_overlap",
    "model_weight",
    "graph_memory_mb",
    "shutdown_timeout",
    "dense_weight",
];
/// Real-valued flags (a huge finite value is a legal, if odd, setting).
const FLOATS: &[&str] = &[
    "k1",
    "b",
    "lr",
    "tau",
    "tau_u",
    "rrf_k",
    "dense_weight",
    "min_answer_overlap",
];
/// Numeric flags without a default (so not found by their default's shape).
const OPTIONAL: &[(&str, &str)] = &[
    ("uae", "threads"),
    ("label", "limit"),
    ("export", "candidates"),
    ("eval", "limit"),
    ("train", "dev_limit"),
    ("qasper", "questions"),
    ("qasper", "latency_queries"),
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
            let here = path.last().map(String::as_str).unwrap_or("uae");
            let optional = OPTIONAL.contains(&(here, a.get_id().as_str()))
                || (a.get_id() == "threads" && OPTIONAL.contains(&("uae", "threads")));
            if numeric_default || optional {
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

#[test]
fn error_line_names_each_cause_once() {
    let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
    let e = anyhow::Error::new(io)
        .context("x.json: no such file")
        .context("loading x");
    assert_eq!(uae_cli::error_line(&e), "loading x: x.json: no such file");
    let e = anyhow::anyhow!("root cause").context("outer");
    assert_eq!(uae_cli::error_line(&e), "outer: root cause");
}

#[test]
fn named_models_parse() {
    let parse =
        |s: &str| Cli::try_parse_from(["uae", "bench", "qasper", "--out", "o", "--model", s]);
    assert!(parse("kl=runs/kl/model").is_ok());
    assert!(parse("kl").is_err());
    assert!(parse("=x").is_err());
}

/// `--min-utility` and `--spare-utility` are in nats and may be negative, but must be
/// finite numbers.
#[test]
fn utility_bars_take_any_finite_number() {
    for flag in ["--min-utility", "--spare-utility"] {
        let parse =
            |v: &str| Cli::try_parse_from(["uae", "train", "--labels", "l", "--out", "o", flag, v]);
        for ok in ["-0.5", "0", "1.5"] {
            assert!(parse(ok).is_ok(), "{flag} {ok} was refused");
        }
        for bad in ["nan", "inf", "-inf", "1e400", "x"] {
            assert!(parse(bad).is_err(), "{flag} {bad} was accepted");
        }
    }
}

/// `--min-gap` is a difference of nats between a question's two best candidates: a
/// finite number, never negative.
#[test]
fn min_gap_takes_a_non_negative_number() {
    let argv = "uae train --labels l --out o --min-gap".split(' ');
    let parse = |v: &'static str| Cli::try_parse_from(argv.clone().chain([v]));
    for ok in ["0", "0.5", "2"] {
        assert!(parse(ok).is_ok(), "--min-gap {ok} was refused");
    }
    for bad in ["-0.5", "nan", "inf", "x"] {
        assert!(parse(bad).is_err(), "--min-gap {bad} was accepted");
    }
}

/// `--min-answer-overlap` is a share of an answer's weighted words: 0 to 1.
#[test]
fn min_answer_overlap_is_a_share() {
    let argv =
        "uae train --labels l --out o --positives answer-overlap --min-answer-overlap".split(' ');
    let parse = |v: &'static str| Cli::try_parse_from(argv.clone().chain([v]));
    for ok in ["0", "0.5", "1"] {
        assert!(parse(ok).is_ok(), "--min-answer-overlap {ok} was refused");
    }
    for bad in ["-0.1", "1.5", "nan", "x"] {
        assert!(
            parse(bad).is_err(),
            "--min-answer-overlap {bad} was accepted"
        );
    }
}
