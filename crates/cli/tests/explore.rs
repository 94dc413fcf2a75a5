//! The explorer page and its API (`uae explore`), as a user meets them: JSON routes
//! that page and filter, refuse paths and bad parameters, an API key that covers the
//! page, and the page itself driven in headless Chromium (search, the labels view,
//! a passage carrying markup that must stay text), with a screenshot.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

mod common;
use common::{listening, uae, Server};

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use uae_artifacts::labels::{LabeledCandidate, LabeledGroup};

const XSS: &str = "<script>window.__uae_xss = true</script><img src=x onerror=\"window.__uae_xss = true; document.title = 'pwned'\"> a passage with markup";

fn cand(id: &str, text: &str, gold: bool, utility: f32) -> LabeledCandidate {
    LabeledCandidate {
        passage_id: id.into(),
        text: text.into(),
        is_gold: gold,
        source: if gold { "gold" } else { "dense" }.into(),
        utility,
        per_answer: vec![utility],
    }
}

fn group(
    id: &str,
    question: &str,
    answer: &str,
    candidates: Vec<LabeledCandidate>,
) -> LabeledGroup {
    LabeledGroup {
        question_id: id.into(),
        paper_id: "doc".into(),
        question: question.into(),
        answers: vec![answer.into()],
        nll_without: vec![3.0],
        candidates,
    }
}

/// Three labelled questions (candidates deliberately not in utility order) and two
/// eval folders that disagree on one question.
fn fixture(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let labels = dir.join("labels");
    std::fs::create_dir_all(&labels).unwrap();
    let groups = vec![
        group(
            "q-cat",
            "Where did the cat sit?",
            "on the mat",
            vec![
                cand("rates", "Interest rates rose in March.", false, 0.1),
                cand("xss", XSS, false, -0.2),
                cand("cat", "The cat sat on the mat all afternoon.", true, 2.5),
            ],
        ),
        group(
            "q-paris",
            "What is the capital of France?",
            "Paris",
            vec![
                cand("leaf", "Photosynthesis turns light into sugar.", false, 0.3),
                cand(
                    "paris",
                    "Paris is the capital and largest city of France.",
                    true,
                    3.1,
                ),
            ],
        ),
        group(
            "q-rust",
            "Does Rust have a garbage collector?",
            "No",
            vec![
                cand(
                    "gc",
                    "Garbage collection reclaims memory automatically.",
                    true,
                    0.5,
                ),
                cand(
                    "rust",
                    "Rust manages memory through ownership, without a garbage collector.",
                    false,
                    1.4,
                ),
            ],
        ),
    ];
    LabeledGroup::write_all(&labels, &groups).unwrap();
    let (a, b) = (dir.join("eval-a"), dir.join("eval-b"));
    let qrels = "q-cat 0 cat 1\nq-paris 0 paris 1\n";
    for (d, run) in [
        (
            &a,
            "q-cat Q0 rates 1 2.0 a\nq-cat Q0 cat 2 1.0 a\nq-paris Q0 paris 1 2.0 a\n",
        ),
        (
            &b,
            "q-cat Q0 cat 1 2.0 b\nq-cat Q0 rates 2 1.0 b\nq-paris Q0 paris 1 2.0 b\n",
        ),
    ] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("run.trec"), run).unwrap();
        std::fs::write(d.join("qrels.trec"), qrels).unwrap();
    }
    (labels, a, b)
}

fn explore(dir: &Path, extra: &[&str]) -> Server {
    let (labels, a, b) = fixture(dir);
    listening(
        uae()
            .arg("explore")
            .arg(&labels)
            .args(["--addr", "127.0.0.1:0", "--compare"])
            .args([&a, &b])
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .args(extra),
    )
}

fn get(addr: &str, path: &str, headers: &str) -> (u16, String, String) {
    common::http(addr, "GET", path, headers, "")
}

fn post(addr: &str, path: &str, body: &str) -> (u16, Value) {
    let headers = "Content-Type: application/json\r\n";
    let (status, _, body) = common::http(addr, "POST", path, headers, body);
    (status, serde_json::from_str(&body).unwrap())
}

fn api(addr: &str, path: &str) -> (u16, Value) {
    let (status, _, body) = get(addr, path, "");
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
    )
}

#[test]
fn the_api_pages_filters_and_refuses_paths() {
    let d = tempfile::tempdir().unwrap();
    let base = common::root().join("models/all-MiniLM-L6-v2");
    let s = explore(d.path(), &["--against", base.to_str().unwrap()]);
    let (status, head, body) = get(&s.addr, "/", "");
    assert_eq!(status, 200);
    assert!(
        head.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    assert!(body.contains("explorer.js"));
    let (_, o) = api(&s.addr, "/api/explore");
    assert_eq!(o["labels"]["questions"], 3);
    assert_eq!(o["compare"], json!(["eval-a", "eval-b"]));
    assert!(o["model"].is_string());
    assert_eq!(o["against"], "all-MiniLM-L6-v2");
    // The base model beside answers at /against/search over the same passages.
    let (status, hits) = post(
        &s.addr,
        "/against/search",
        r#"{"query": "capital of France", "k": 2}"#,
    );
    assert_eq!(status, 200, "{hits}");
    assert_eq!(hits["hits"][0]["id"], "paris");

    let (_, page) = api(&s.addr, "/api/labels?limit=2");
    assert_eq!(page["total"], 3);
    assert_eq!(page["rows"].as_array().unwrap().len(), 2);
    let (_, page) = api(&s.addr, "/api/labels?offset=2&limit=2");
    assert_eq!(page["rows"][0]["question_id"], "q-rust");
    let (_, page) = api(&s.addr, "/api/labels?filter=gold_not_best");
    assert_eq!(page["total"], 1);
    assert_eq!(page["rows"][0]["question_id"], "q-rust");
    let (_, page) = api(&s.addr, "/api/labels?filter=below&bar=3");
    assert_eq!(page["total"], 2);
    let (_, page) = api(&s.addr, "/api/labels?q=FRANCE");
    assert_eq!(page["rows"][0]["question_id"], "q-paris");

    let (_, q) = api(&s.addr, "/api/labels/0");
    let order: Vec<&str> = q["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["passage_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["cat", "rates", "xss"]);
    assert_eq!(q["candidates"][0]["nll_with"], 0.5);
    assert_eq!(q["candidates"][2]["text"], XSS);
    let (_, h) = api(&s.addr, "/api/labels/histogram");
    let total: u64 = h["all"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .sum();
    assert_eq!(total, 7);

    let (_, c) = api(&s.addr, "/api/compare");
    assert_eq!(c["comparison"]["queries"], 2);
    let (_, dis) = api(&s.addr, "/api/compare/questions?metric=recall@1");
    assert_eq!(dis["rows"][0]["question_id"], "q-cat");
    assert_eq!(dis["rows"][0]["b"], 1.0);
    let (_, r) = api(&s.addr, "/api/compare/questions/q-cat");
    assert_eq!(r["a"][1]["passage_id"], "cat");
    assert_eq!(r["a"][1]["relevant"], 1);
    assert_eq!(r["a"][1]["other_rank"], 1);

    // No route reads a path: dots, slashes and absolute paths are not question numbers.
    for (path, want) in [
        ("/api/labels/..%2F..%2Fetc%2Fpasswd", 422),
        ("/api/labels/%2Fetc%2Fpasswd", 422),
        ("/api/labels/../../etc/passwd", 404),
        ("/../../etc/passwd", 404),
        ("/api/labels//etc/passwd", 404),
        ("/api/labels/7", 404),
        ("/api/labels?path=/etc/passwd", 422),
        ("/api/labels?limit=100000", 422),
        ("/api/compare/questions/..%2F..%2Fetc%2Fpasswd", 404),
    ] {
        let (status, _, body) = get(&s.addr, path, "");
        assert_eq!(status, want, "{path}: {body}");
        assert!(!body.contains("root:"), "{path}");
    }
}

#[test]
fn the_api_key_covers_the_page_and_its_api() {
    let d = tempfile::tempdir().unwrap();
    let s = explore(d.path(), &["--api-key", "sesame"]);
    let (status, head, _) = get(&s.addr, "/", "");
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: basic"), "{head}");
    assert_eq!(get(&s.addr, "/api/labels", "").0, 401);
    assert_eq!(get(&s.addr, "/explorer.js", "").0, 401);
    // The browser's prompt sends Basic with the key as password; clients send Bearer.
    let basic = "Authorization: Basic eDpzZXNhbWU=\r\n"; // x:sesame
    assert_eq!(get(&s.addr, "/", basic).0, 200);
    assert_eq!(get(&s.addr, "/api/labels", basic).0, 200);
    let wrong = "Authorization: Basic eDp3cm9uZw==\r\n"; // x:wrong
    assert_eq!(get(&s.addr, "/api/labels", wrong).0, 401);
    assert_eq!(
        get(&s.addr, "/api/labels", "Authorization: Bearer sesame\r\n").0,
        200
    );
}

/// The browser, or `None` when the user asked to skip this test (`UAE_SKIP_BROWSER=1`).
/// A missing browser is a failure, not a pass: the README's test command installs it
/// (scripts/browser-deps.sh).
fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(name).output() {
            if out.status.success() {
                return Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
            }
        }
    }
    if std::env::var_os("UAE_SKIP_BROWSER").is_some() {
        eprintln!("skipped on request (UAE_SKIP_BROWSER): no chromium");
        return None;
    }
    panic!("no chromium: scripts/browser-deps.sh installs it (UAE_SKIP_BROWSER=1 skips this test)");
}

/// The page in a real browser: the labels list and one question's candidates in
/// utility order, a passage with markup shown as text (nothing runs), then a
/// question typed into the search box finds its passage first. Writes the screenshot
/// to $UAE_SCREENSHOT when set (the README's picture).
#[test]
fn the_page_works_in_headless_chromium() {
    let Some(browser) = chromium() else { return };
    let d = tempfile::tempdir().unwrap();
    let s = explore(d.path(), &[]);
    let expect = d.path().join("expect.json");
    std::fs::write(
        &expect,
        json!({
            "questions": 3,
            "label_n": 0,
            "label_order": ["cat", "rates", "xss"],
            "query": "Which city is the capital of France?",
            "first_hit": "paris",
        })
        .to_string(),
    )
    .unwrap();
    let shot = std::env::var_os("UAE_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| d.path().join("explorer.png"));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/drive.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&browser)
        .arg(format!("http://{}/", s.addr))
        .arg(&expect)
        .arg(&shot)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(seen["first_hit"], "paris");
    assert!(
        seen["screenshot_bytes"].as_u64().unwrap() > 10_000,
        "{seen}"
    );
}
