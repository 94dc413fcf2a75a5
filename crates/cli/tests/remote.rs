//! Labeling on LLM servers (`uae label --lm http://...`): a scripted OpenAI-style
//! server that fails in the ways real ones do (500s, dropped connections, stalls,
//! another model), llama-cpp-python's real server against the local path, sharding
//! and merging, and the sentence-transformers export read back by `datasets`.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

mod common;
use common::{root, uae};

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the scripted server misbehaves: request n (from 1) gets a 500 when
/// `n % fail == 0`, a closed connection when `n % drop == 0`, and an answer only
/// after 3 s when `n % stall == 0` (0: never).
#[derive(Clone, Copy, Default)]
struct Faults {
    fail: usize,
    drop: usize,
    stall: usize,
    always_500: bool,
    /// The first scoring request gets a 500 once three more have arrived; every
    /// other waits this long first.
    fail_first_then_delay_ms: Option<u64>,
    /// Log-probabilities above 0 (impossible: a broken server).
    positive: bool,
}

struct Mock {
    url: String,
    requests: Arc<AtomicUsize>,
}

/// Deterministic per-character "log-probabilities": each character is a token whose
/// log-probability depends on everything before it, so a passage changes the
/// answer's NLL the way context does.
fn echo(prompt: &str, model: &str) -> Value {
    let mut h: u64 = 0xcbf29ce484222325;
    let (mut tokens, mut lps, mut offs) = (Vec::new(), Vec::new(), Vec::new());
    for (i, c) in prompt.chars().enumerate() {
        let lp = (h ^ c as u64).wrapping_mul(0x100000001b3) % 1000;
        tokens.push(c.to_string());
        lps.push(if i == 0 {
            Value::Null
        } else {
            json!(-(lp as f64) / 250.0)
        });
        offs.push(i);
        h = (h ^ c as u64).wrapping_mul(0x100000001b3);
    }
    let n = tokens.len();
    tokens.push(".".into());
    lps.push(json!(-1.0));
    offs.push(n);
    json!({
        "id": "cmpl-1", "object": "text_completion", "model": model,
        "choices": [{"text": format!("{prompt}."), "index": 0,
            "logprobs": {"tokens": tokens, "token_logprobs": lps, "text_offset": offs}}],
        "usage": {"prompt_tokens": n, "completion_tokens": 1, "total_tokens": n + 1},
    })
}

fn read_request(s: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        let n = s.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let path = head.split_whitespace().nth(1)?.to_string();
    Some((path, String::from_utf8_lossy(&buf[head_end..]).to_string()))
}

fn respond(s: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn mock(model: &'static str, faults: Faults) -> Mock {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", l.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let count = count.clone();
            std::thread::spawn(move || {
                let Some((path, body)) = read_request(&mut s) else {
                    return;
                };
                if path.ends_with("/models") {
                    let b = json!({"object": "list", "data": [{"id": model, "object": "model"}]});
                    return respond(&mut s, "200 OK", &b.to_string());
                }
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let hit = |k: usize| k > 0 && n.is_multiple_of(k);
                if let Some(ms) = faults.fail_first_then_delay_ms {
                    if n == 1 {
                        // Fail once others are in flight (up to 5 s), however
                        // slowly a busy machine sends them.
                        let t = std::time::Instant::now();
                        while count.load(Ordering::SeqCst) < 4 && t.elapsed().as_secs() < 5 {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        return respond(
                            &mut s,
                            "500 Internal Server Error",
                            "{\"error\":\"boom\"}",
                        );
                    }
                    std::thread::sleep(Duration::from_millis(ms));
                }
                if faults.always_500 || hit(faults.fail) {
                    return respond(&mut s, "500 Internal Server Error", "{\"error\":\"boom\"}");
                }
                if hit(faults.drop) {
                    return; // closed without an answer
                }
                if hit(faults.stall) {
                    std::thread::sleep(Duration::from_secs(3));
                }
                let req: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(req["echo"], true);
                assert_eq!(req["max_tokens"], 1);
                let prompt = req["prompt"].as_str().unwrap();
                let mut answer = echo(prompt, model);
                if faults.positive {
                    for lp in answer["choices"][0]["logprobs"]["token_logprobs"]
                        .as_array_mut()
                        .unwrap()
                    {
                        if let Some(x) = lp.as_f64() {
                            *lp = json!(0.5 - x);
                        }
                    }
                }
                respond(&mut s, "200 OK", &answer.to_string());
            });
        }
    });
    Mock { url, requests }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A server's chat template is not known to `uae`: remote runs name their layout.
fn label_args<'a>(out: &'a Path, urls: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "label",
        "--split",
        "dev",
        "--limit",
        "3",
        "--template",
        "chatml",
        "--out",
        s(out),
    ];
    for u in urls {
        a.extend(["--lm", u]);
    }
    a.extend_from_slice(extra);
    a
}

fn run_ok(args: &[&str]) -> Value {
    serde_json::from_str(&common::ok(args)).unwrap()
}

fn run_err(args: &[&str]) -> String {
    let out = uae().args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn labels(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("labels.jsonl")).unwrap()
}

/// 500s, dropped connections and stalls past the timeout are retried to the same
/// labels a healthy server gives; two servers share the work to the same labels;
/// a rerun asks nothing again.
#[test]
fn flaky_servers_give_the_same_labels() {
    let d = tempfile::tempdir().unwrap();
    let good = mock("mock-lm", Faults::default());
    let healthy = d.path().join("healthy");
    let s1 = run_ok(&label_args(&healthy, &[&good.url], &[]));
    assert_eq!(s1["questions"], 3, "{s1}");
    assert!(s1["scores_computed"].as_u64().unwrap() > 10, "{s1}");

    // About 40% of requests fail, each in one of the three ways. A prompt fails the run
    // only if all 13 of its attempts do: about 5e-6 (with 6 retries and the old
    // 1-in-3 / 5 / 7 faults, 54% failing, that was 1.3% a prompt, so a run of some
    // 50 prompts failed now and then).
    let bad = mock(
        "mock-lm",
        Faults {
            fail: 5,
            drop: 7,
            stall: 11,
            ..Default::default()
        },
    );
    let flaky = d.path().join("flaky");
    let timeout = [
        "--lm-timeout",
        "1",
        "--lm-concurrency",
        "3",
        "--lm-retries",
        "12",
    ];
    run_ok(&label_args(&flaky, &[&bad.url], &timeout));
    assert_eq!(labels(&flaky), labels(&healthy));

    let both = d.path().join("both");
    let before = (
        good.requests.load(Ordering::SeqCst),
        bad.requests.load(Ordering::SeqCst),
    );
    run_ok(&label_args(&both, &[&good.url, &bad.url], &timeout));
    assert_eq!(labels(&both), labels(&healthy));
    let after = (
        good.requests.load(Ordering::SeqCst),
        bad.requests.load(Ordering::SeqCst),
    );
    assert!(
        after.0 > before.0 && after.1 > before.1,
        "one server did all the work"
    );

    // Resume: nothing is asked again.
    let n = good.requests.load(Ordering::SeqCst);
    let again = run_ok(&label_args(&healthy, &[&good.url], &[]));
    assert_eq!(again["scores_computed"], 0, "{again}");
    assert_eq!(good.requests.load(Ordering::SeqCst), n);
}

/// What cannot be retried away is one clear error, and nothing false is stored.
#[test]
fn server_failures_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    // A server that always fails: the run stops, no score is recorded as a value.
    let broken = mock(
        "mock-lm",
        Faults {
            always_500: true,
            ..Default::default()
        },
    );
    let out = d.path().join("broken");
    let e = run_err(&label_args(&out, &[&broken.url], &["--lm-retries", "1"]));
    assert!(e.contains("HTTP 500") && e.contains("gave up"), "{e}");
    let stored = std::fs::read_to_string(out.join("scores.jsonl")).unwrap_or_default();
    assert!(stored.is_empty(), "a failed score was stored: {stored}");

    // Nothing listening: one line, quickly, naming the URL.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let t = Instant::now();
    let e = run_err(&label_args(&d.path().join("nothing"), &[&url], &[]));
    assert!(e.contains(&url) && e.contains("connection failed"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(60));

    // Two servers, two models.
    let other = mock("other-lm", Faults::default());
    let good = mock("mock-lm", Faults::default());
    let e = run_err(&label_args(
        &d.path().join("two"),
        &[&good.url, &other.url],
        &[],
    ));
    assert!(e.contains("same model"), "{e}");

    // `--template auto` (the default) cannot know a server's chat template.
    let auto = d.path().join("auto");
    let e = run_err(&[
        "label",
        "--split",
        "dev",
        "--limit",
        "3",
        "--lm",
        &good.url,
        "--out",
        s(&auto),
    ]);
    assert!(e.contains("mock-lm") && e.contains("--template"), "{e}");

    // Not an http URL; a local model beside a URL; local precision flags.
    for (urls, extra, needle) in [
        (vec!["https://example.org/v1"], vec![], "https"),
        (vec![good.url.as_str(), "models/x.gguf"], vec![], "not both"),
        (vec![good.url.as_str()], vec!["--bf16"], "local LLM"),
    ] {
        let e = run_err(&label_args(&d.path().join("x"), &urls, &extra));
        assert!(e.contains(needle), "{e}");
    }

    // Remote scores never mix with another model's: a folder labelled by one model
    // refuses another.
    let first = d.path().join("first");
    run_ok(&label_args(&first, &[&good.url], &[]));
    let e = run_err(&label_args(&first, &[&other.url], &[]));
    assert!(
        e.contains("openai:mock-lm") && e.contains("openai:other-lm"),
        "{e}"
    );
}

/// A request that fails for good stops the run, but the answers of the requests
/// still in flight are stored (they were dropped: 8 answered, 6 stored); a server
/// that returns log-probabilities above 0 is not believed.
#[test]
fn in_flight_answers_are_kept_and_positive_logprobs_refused() {
    let d = tempfile::tempdir().unwrap();
    let m = mock(
        "mock-lm",
        Faults {
            fail_first_then_delay_ms: Some(1500),
            ..Default::default()
        },
    );
    let out = d.path().join("in-flight");
    // Passages far under the token budget: no truncation requests, only scoring.
    let extra = [
        "--lm-retries",
        "0",
        "--lm-concurrency",
        "8",
        "--passage-tokens",
        "1000000",
    ];
    let e = run_err(&label_args(&out, &[&m.url], &extra));
    assert!(e.contains("HTTP 500"), "{e}");
    let stored = std::fs::read_to_string(out.join("scores.jsonl")).unwrap();
    // Every request the server answered is stored: all it received but the failed
    // one. How many were in flight when the failure came back depends on the load
    // (up to --lm-concurrency 8; on a busy machine fewer had been sent).
    let sent = m.requests.load(Ordering::SeqCst);
    assert!(sent >= 4, "only {sent} requests were sent");
    assert_eq!(
        stored.lines().filter(|l| !l.trim().is_empty()).count(),
        sent - 1,
        "the {} requests in flight when one failed were answered: {stored}",
        sent - 1
    );

    let bad = mock(
        "mock-lm",
        Faults {
            positive: true,
            ..Default::default()
        },
    );
    let out = d.path().join("positive");
    let e = run_err(&label_args(&out, &[&bad.url], &extra[4..]));
    assert!(
        e.contains("log-probability") && e.contains("above 0"),
        "{e}"
    );
    let stored = std::fs::read_to_string(out.join("scores.jsonl")).unwrap_or_default();
    assert!(
        stored.trim().is_empty(),
        "an impossible score was stored: {stored}"
    );
}

/// A questions file with poisoned rows (empty, bad UTF-8, over-long, not JSON)
/// labels the other rows and names the bad ones by line; a second run on a locked
/// folder fails at once; labels of one's own corpus train without QASPER dev.
#[test]
fn poisoned_rows_locked_folders_and_training_without_qasper_dev() {
    let d = tempfile::tempdir().unwrap();
    let corpus = d.path().join("corpus.jsonl");
    let topics = ["cats", "rates", "leaves", "rivers", "stars", "trains"];
    let mut c = String::new();
    for i in 0..30 {
        let t = topics[i % topics.len()];
        c += &format!(
            "{{\"id\": \"p{i}\", \"text\": \"Passage {i} about {t}: the {t} answer is word{i}.\"}}\n"
        );
    }
    std::fs::write(&corpus, c).unwrap();
    let mut q: Vec<u8> = Vec::new();
    for line in 1..=100 {
        let row = match line {
            10 => "{\"question\": \"  \", \"answer\": \"word1\"}".to_string(),
            20 => String::new(), // written as bytes below
            30 => format!(
                "{{\"question\": \"{}\", \"answer\": \"word3\"}}",
                "long ".repeat(220_000)
            ),
            40 => "not json at all".to_string(),
            n => format!(
                "{{\"id\": \"q{n}\", \"question\": \"What is the answer about {}?\", \"answer\": \"word{}\"}}",
                topics[n % topics.len()],
                n % 30
            ),
        };
        if line == 20 {
            q.extend_from_slice(b"{\"question\": \"bad \xff\xfe\", \"answer\": \"word2\"}");
        } else {
            q.extend_from_slice(row.as_bytes());
        }
        q.push(b'\n');
    }
    let questions = d.path().join("questions.jsonl");
    std::fs::write(&questions, q).unwrap();
    let m = mock("mock-lm", Faults::default());
    let out = d.path().join("labels");
    let args = [
        "label",
        "--corpus",
        s(&corpus),
        "--questions",
        s(&questions),
        "--lm",
        &m.url,
        "--template",
        "chatml",
        "--out",
        s(&out),
    ];
    let summary = run_ok(&args);
    assert_eq!(summary["skipped_bad_rows"], 4, "{summary}");
    assert_eq!(summary["skipped_bad_lines"], json!([10, 20, 30, 40]));
    assert_eq!(labels(&out).lines().count(), 96);

    // One writer per folder: a second run fails at once, naming the holder.
    let lock = uae_core::fs::FolderLock::acquire(&out).unwrap();
    let t = Instant::now();
    let e = run_err(&args);
    assert!(e.contains("in use by another uae run"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(30));
    drop(lock);

    // Labels of one's own corpus: no QASPER dev (the data folder does not even
    // exist), the last model kept.
    let run = d.path().join("run");
    let train = |extra: &[&str]| {
        let mut a = vec![
            "train",
            "--labels",
            s(&out),
            "--out",
            s(&run),
            "--epochs",
            "1",
            "--data-dir",
            "/nonexistent",
        ];
        a.extend_from_slice(extra);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    let lock = uae_core::fs::FolderLock::acquire(&run).unwrap();
    let a = train(&[]);
    let e = run_err(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("in use by another uae run"), "{e}");
    drop(lock);
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(run.join("model/model.safetensors").is_file());
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(!metrics.contains("dev_metric"), "{metrics}");
    assert!(!run.join("model/calibration.json").exists());
    // With held-out labels (here the same folder, for the mechanics), the best model
    // is picked by them and calibrated on them.
    let run = d.path().join("run-dev");
    let mut a = train(&["--dev-labels", s(&out)]);
    a[4] = s(&run).to_string();
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let c: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("model/calibration.json")).unwrap())
            .unwrap();
    assert_eq!(c["version"], 1, "{c}");
    assert!(c["ece"].as_f64().is_some_and(f64::is_finite), "{c}");
}

/// `--shard i/n` then `label merge` gives the unsharded run's folder; merging
/// refuses missing, repeated or foreign shards.
#[test]
fn shards_merge_into_the_unsharded_labels() {
    let d = tempfile::tempdir().unwrap();
    let m = mock("mock-lm", Faults::default());
    let whole = d.path().join("whole");
    let args = |out: &Path, extra: &[&str]| {
        let mut a: Vec<String> = [
            "label",
            "--split",
            "dev",
            "--limit",
            "5",
            "--template",
            "chatml",
            "--lm",
            &m.url,
            "--out",
            s(out),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let run = |a: Vec<String>| {
        let out = uae().args(&a).output().unwrap();
        assert!(
            out.status.success(),
            "{a:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(args(&whole, &[]));
    let parts: Vec<PathBuf> = (1..=3).map(|i| d.path().join(format!("part{i}"))).collect();
    for (i, p) in parts.iter().enumerate() {
        run(args(p, &["--shard", &format!("{}/3", i + 1)]));
    }
    let sizes: Vec<usize> = parts.iter().map(|p| labels(p).lines().count()).collect();
    assert_eq!(sizes, vec![2, 2, 1]);
    let merged = d.path().join("merged");
    let summary = run_ok(&[
        "label",
        "merge",
        s(&parts[2]),
        s(&parts[0]),
        s(&parts[1]),
        "--out",
        s(&merged),
    ]);
    assert_eq!(summary["questions"], 5, "{summary}");
    assert_eq!(labels(&merged), labels(&whole));
    let cands = |p: &Path| std::fs::read_to_string(p.join("candidates.jsonl")).unwrap();
    assert_eq!(cands(&merged), cands(&whole));
    // The merged folder resumes like any label folder: nothing to compute.
    let again = run_ok(
        &args(&merged, &[])
            .iter()
            .map(|x| x.as_str())
            .collect::<Vec<_>>(),
    );
    assert_eq!(again["scores_computed"], 0, "{again}");

    let other = d.path().join("other-seed");
    run(args(&other, &["--shard", "2/3", "--seed", "7"]));
    let out = d.path().join("refused");
    for (dirs, needle) in [
        (vec![&parts[0], &parts[1]], "shard 3/3 missing"),
        (vec![&parts[0], &parts[0], &parts[1]], "both shard 1/3"),
        (vec![&parts[0], &whole], "not a shard"),
        (vec![&parts[0], &other, &parts[2]], "label configuration"),
    ] {
        let mut a = vec!["label", "merge"];
        a.extend(dirs.iter().map(|p| s(p)));
        a.extend(["--out", s(&out)]);
        let e = run_err(&a);
        assert!(e.contains(needle), "{needle}: {e}");
    }
    for bad in ["0/3", "4/3", "1/0", "x", "1/2/3"] {
        let e = run_err(
            &args(&d.path().join("bad"), &["--shard", bad])
                .iter()
                .map(|x| x.as_str())
                .collect::<Vec<_>>(),
        );
        assert!(e.contains("--shard"), "{bad}: {e}");
    }
}

fn python_has(module: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install {module} (scripts/python-deps.sh does)"
        );
        eprintln!("skipped: python3 cannot import {module} (scripts/python-deps.sh installs it)");
    }
    ok
}

/// The export loads with `datasets`' JSON and Parquet readers, in the column order
/// sentence-transformers takes as inputs, with the utilities as the label.
#[test]
fn sentence_transformers_export_loads_with_datasets() {
    let d = tempfile::tempdir().unwrap();
    let m = mock("mock-lm", Faults::default());
    let lab = d.path().join("labels");
    run_ok(&label_args(&lab, &[&m.url], &[]));
    let out = d.path().join("st");
    let summary = run_ok(&[
        "label",
        "export",
        "--format",
        "sentence-transformers",
        s(&lab),
        s(&out),
    ]);
    let k = summary["candidates"].as_u64().unwrap() as usize;
    assert!(k >= 2, "{summary}");
    let rows = std::fs::read_to_string(out.join("train.jsonl")).unwrap();
    assert_eq!(
        rows.lines().count(),
        summary["rows"].as_u64().unwrap() as usize
    );
    // The JSONL side, checked here against labels.jsonl: best first, utilities as label.
    let groups: Vec<Value> = labels(&lab)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first: Value = serde_json::from_str(rows.lines().next().unwrap()).unwrap();
    let g = groups
        .iter()
        .find(|g| g["question"] == first["query"])
        .unwrap();
    let mut utils: Vec<f64> = g["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["utility"].as_f64().unwrap())
        .collect();
    utils.sort_by(|a, b| b.total_cmp(a));
    let label: Vec<f64> = first["label"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(label, utils[..k].to_vec());
    let e = run_err(&["label", "export", "--candidates", "1", s(&lab), s(&out)]);
    assert!(e.contains("--candidates"), "{e}");

    if !python_has("datasets") {
        return;
    }
    let py = r#"
import json, sys
from datasets import load_dataset
out, k = sys.argv[1], int(sys.argv[2])
cols = ["query", "positive"] + [f"negative_{i}" for i in range(1, k)] + ["label"]
j = load_dataset("json", data_files=f"{out}/train.jsonl", split="train")
p = load_dataset("parquet", data_files=f"{out}/train.parquet", split="train")
for ds in (j, p):
    assert ds.column_names == cols, ds.column_names
    assert str(ds.features["label"].feature.dtype) in ("float64", "float32"), ds.features
    assert all(len(l) == k for l in ds["label"])
    assert all(l == sorted(l, reverse=True) for l in ds["label"])
assert j.num_rows == p.num_rows
for a, b in zip(j, p):
    assert a["query"] == b["query"] and a["positive"] == b["positive"]
    assert all(abs(x - y) < 1e-9 for x, y in zip(a["label"], b["label"])), (a["label"], b["label"])
print(json.dumps({"rows": p.num_rows}))
"#;
    let r = Command::new("python3")
        .args(["-c", py, s(&out), &k.to_string()])
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HOME", d.path().join("hf"))
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let rank = |x: &[f64]| {
        let mut idx: Vec<usize> = (0..x.len()).collect();
        idx.sort_by(|&i, &j| x[i].total_cmp(&x[j]));
        let mut r = vec![0.0; x.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
                j += 1;
            }
            for &k in &idx[i..=j] {
                r[k] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    };
    let (ra, rb) = (rank(a), rank(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

fn utilities(dir: &Path) -> std::collections::BTreeMap<(String, String), f64> {
    labels(dir)
        .lines()
        .flat_map(|l| {
            let g: Value = serde_json::from_str(l).unwrap();
            let q = g["question_id"].as_str().unwrap().to_string();
            g["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        (q.clone(), c["passage_id"].as_str().unwrap().to_string()),
                        c["utility"].as_f64().unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// llama-cpp-python's OpenAI server with the SmolLM2 GGUF (its own Q4_1 kernels and
/// tokenizer) against the local f32 path on the same questions and candidates.
#[test]
fn llama_cpp_server_agrees_with_the_local_path() {
    if !python_has("llama_cpp.server") {
        return;
    }
    let gguf = root().join("models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    let port = free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let _server = Server(
        Command::new("python3")
            .args([
                "-m",
                "llama_cpp.server",
                "--model",
                s(&gguf),
                "--host",
                "127.0.0.1",
            ])
            .args([
                "--port",
                &port.to_string(),
                "--logits_all",
                "true",
                "--n_ctx",
                "2048",
            ])
            .args(["--n_threads", "2", "--verbose", "false"])
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}/v1");
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "llama_cpp.server did not start: {}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let d = tempfile::tempdir().unwrap();
    let local = d.path().join("local");
    let remote = d.path().join("remote");
    // Small: llama-cpp-python sorts the whole vocabulary in Python for every echoed
    // token (~50 ms each here, 15 tokens/s), so 2 questions with 48-token passages.
    let common = [
        "label",
        "--split",
        "dev",
        "--limit",
        "2",
        "--passage-tokens",
        "48",
        "--template",
        "chatml",
    ];
    run_ok(&[&common[..], &["--out", s(&local)]].concat());
    run_ok(
        &[
            &common[..],
            &["--out", s(&remote), "--lm", &url, "--lm-concurrency", "2"],
        ]
        .concat(),
    );
    let (a, b) = (utilities(&local), utilities(&remote));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let (x, y): (Vec<f64>, Vec<f64>) = a.keys().map(|k| (a[k], b[k])).unzip();
    let rho = spearman(&x, &y);
    let mad = x.iter().zip(&y).map(|(p, q)| (p - q).abs()).sum::<f64>() / x.len() as f64;
    eprintln!("local f32 vs llama-cpp-python Q4_1 over {} candidates: spearman {rho:.4}, mean |diff| {mad:.4} nats", x.len());
    assert!(rho >= 0.95, "spearman {rho}");
    assert!(mad <= 0.1, "mean |difference| {mad} nats");
}
