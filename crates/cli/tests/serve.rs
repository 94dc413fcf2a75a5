//! `uae serve` as the clients of a RAG stack meet it: the official `openai` Python
//! client, TEI's routes, every error status, batching under concurrent load (answers
//! stay with their requests), the queue limit, and clients that stall or hold
//! connections open without blocking anyone else.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

mod common;
use common::{listening, uae, Server};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn corpus(dir: &Path) -> PathBuf {
    let p = dir.join("corpus.jsonl");
    std::fs::write(
        &p,
        concat!(
            "{\"id\": \"cat\", \"text\": \"The cat sat on the mat all afternoon.\"}\n",
            "{\"id\": \"rates\", \"text\": \"Interest rates rose in March.\"}\n",
            "{\"id\": \"leaf\", \"text\": \"Photosynthesis turns light into sugar.\"}\n",
        ),
    )
    .unwrap();
    p
}

fn start(dir: &Path, extra: &[&str]) -> Server {
    start_on(&corpus(dir), extra)
}

/// `uae serve` over `corpus` on a free port, once it says it is listening.
fn start_on(corpus: &Path, extra: &[&str]) -> Server {
    listening(
        uae()
            .args(["serve", "--addr", "127.0.0.1:0", "--corpus"])
            .arg(corpus)
            .args(extra),
    )
}

/// One request on a fresh connection: (status, body).
fn http(addr: &str, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let (status, _, body) = common::http(addr, method, path, headers, body);
    (status, body)
}

fn post(addr: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (s, b) = http(addr, "POST", path, "", body);
    (
        s,
        serde_json::from_str(&b).unwrap_or(serde_json::Value::Null),
    )
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    d / (n(a) * n(b))
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The official `openai` client, float and its default base64, a string and a list:
/// its vectors equal `uae embed`'s.
#[test]
fn openai_client_gets_uae_embed_vectors() {
    let ok = Command::new("python3")
        .args(["-c", "import openai"])
        .status();
    if !ok.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install the openai package (.ci/run does)"
        );
        eprintln!("skipped: pip install openai to run this test");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let srv = start(d.path(), &[]);
    let texts = ["Where did the cat sit?", "photosynthesis and sugar"];
    let input = d.path().join("in.jsonl");
    std::fs::write(
        &input,
        texts
            .iter()
            .map(|t| format!("{{\"text\": {t:?}}}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let out = d.path().join("out.jsonl");
    assert!(uae()
        .args([
            "embed",
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap()
        ])
        .status()
        .unwrap()
        .success());
    let want: Vec<Vec<f64>> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| floats(&serde_json::from_str::<serde_json::Value>(l).unwrap()["embedding"]))
        .collect();
    let script = r#"
import base64, json, struct, sys, openai
c = openai.OpenAI(base_url=f"http://{sys.argv[1]}/v1", api_key="unused")
def floats(e):
    # Asked for explicitly, base64 comes back as the string: little-endian f32.
    if isinstance(e, str):
        b = base64.b64decode(e)
        return list(struct.unpack(f"<{len(b) // 4}f", b))
    return e
texts = json.loads(sys.argv[2])
out = {}
for fmt in ["float", "base64"]:
    one = c.embeddings.create(model="uae", input=texts[0], encoding_format=fmt)
    many = c.embeddings.create(model="uae", input=texts, encoding_format=fmt)
    out[fmt] = [floats(one.data[0].embedding)] + [floats(d.embedding) for d in many.data]
    out["usage"] = many.usage.prompt_tokens
# The client's default (no encoding_format): base64 on the wire, floats for the caller.
out["default"] = c.embeddings.create(model="uae", input=texts).data[1].embedding
print(json.dumps(out))
"#;
    let py = Command::new("python3")
        .args([
            "-c",
            script,
            &srv.addr,
            &serde_json::to_string(&texts).unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    for fmt in ["float", "base64"] {
        let v: Vec<Vec<f64>> = got[fmt].as_array().unwrap().iter().map(floats).collect();
        assert!(cosine(&v[0], &want[0]) >= 0.9999, "{fmt} single");
        assert!(cosine(&v[1], &want[0]) >= 0.9999, "{fmt} list[0]");
        assert!(cosine(&v[2], &want[1]) >= 0.9999, "{fmt} list[1]");
    }
    assert!(cosine(&floats(&got["default"]), &want[1]) >= 0.9999);
    assert!(got["usage"].as_u64().unwrap() > 4);
}

/// Every route and every error status, in TEI's and OpenAI's shapes.
#[test]
fn routes_and_error_statuses() {
    let d = tempfile::tempdir().unwrap();
    let srv = start(
        d.path(),
        &[
            "--payload-limit",
            "2000",
            "--max-client-batch-size",
            "4",
            "--read-timeout-ms",
            "500",
        ],
    );
    let a = srv.addr.as_str();
    // OpenAI: token-id input (the model's own vocabulary) and strings agree.
    let (s, r) = post(a, "/v1/embeddings", r#"{"input": "the cat", "model": "m"}"#);
    assert_eq!(s, 200, "{r}");
    // The model is named by its folder's name, never the server's local path.
    assert_eq!(
        (r["object"].as_str(), r["model"].as_str()),
        (Some("list"), Some("all-MiniLM-L6-v2"))
    );
    assert_eq!(r["data"][0]["object"], "embedding");
    let by_text = floats(&r["data"][0]["embedding"]);
    assert_eq!(by_text.len(), 384);
    let (s, r) = post(a, "/embeddings", r#"{"input": [[101, 1996, 4937, 102]]}"#);
    assert_eq!(s, 200, "{r}");
    assert!(cosine(&floats(&r["data"][0]["embedding"]), &by_text) >= 0.9999);
    assert_eq!(r["usage"]["prompt_tokens"], 4);
    // TEI.
    let (s, r) = post(a, "/embed", r#"{"inputs": ["the cat", "rates"]}"#);
    assert_eq!(s, 200, "{r}");
    assert!(cosine(&floats(&r[0]), &by_text) >= 0.9999);
    let (s, r) = post(
        a,
        "/rerank",
        r#"{"query": "interest rates", "texts": ["a cat", "rates rose in March"], "return_text": true}"#,
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r[0]["index"], 1, "{r}");
    assert!(r[0]["score"].as_f64() > r[1]["score"].as_f64());
    assert_eq!(r[0]["text"], "rates rose in March");
    let (s, b) = http(a, "GET", "/info", "", "");
    let info: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        (
            s,
            info["dimension"].as_u64(),
            info["max_client_batch_size"].as_u64()
        ),
        (200, Some(384), Some(4))
    );
    assert_eq!(info["model_id"], "all-MiniLM-L6-v2", "{info}");
    // Errors: OpenAI's shape on its routes, TEI's elsewhere.
    let big = format!("{{\"input\": \"{}\"}}", "x".repeat(3000));
    for (path, body, want) in [
        ("/v1/embeddings", big.as_str(), 413),
        ("/v1/embeddings", r#"{"input": []}"#, 422),
        ("/v1/embeddings", r#"{"input": ""}"#, 422),
        (
            "/v1/embeddings",
            r#"{"input": ["a", "b", "c", "d", "e"]}"#,
            422,
        ),
        ("/v1/embeddings", r#"{"input": 3}"#, 422),
        ("/v1/embeddings", r#"{"input": [[999999999]]}"#, 422),
        ("/v1/embeddings", r#"{"input": "a", "dimensions": 5}"#, 422),
        ("/embed", r#"{"inputs": []}"#, 422),
        ("/embed", r#"{"input": "a"}"#, 422),
        ("/rerank", r#"{"query": "q", "texts": []}"#, 422),
        ("/search", big.as_str(), 413),
    ] {
        let (s, r) = post(a, path, body);
        assert_eq!(s, want, "{path} {}", &body[..body.len().min(60)]);
        if path.contains("embeddings") {
            assert!(
                r["error"]["message"].is_string() && r["error"]["type"].is_string(),
                "{r}"
            );
        } else {
            assert!(r["error"].is_string() && r["error_type"].is_string(), "{r}");
        }
    }
    // A body that stops arriving: 408 once the read timeout passes.
    let mut s = TcpStream::connect(a).unwrap();
    write!(
        s,
        "POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{\"inputs\""
    )
    .unwrap();
    let mut out = String::new();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    // Metrics count what happened, by route and status.
    let (s, m) = http(a, "GET", "/metrics", "", "");
    assert_eq!(s, 200);
    assert!(
        m.contains("uae_requests_total{route=\"/v1/embeddings\",status=\"422\"}"),
        "{m}"
    );
    assert!(
        m.contains("uae_batch_tokens_bucket") && m.contains("uae_queue_size"),
        "{m}"
    );
    drop(srv);

    // With an API key, every route but /health needs it.
    let srv = start(d.path(), &["--api-key", "sesame"]);
    let a = srv.addr.as_str();
    let (s, b) = http(a, "POST", "/v1/embeddings", "", r#"{"input": "x"}"#);
    assert_eq!(s, 401, "{b}");
    let (s, _) = http(
        a,
        "POST",
        "/v1/embeddings",
        "Authorization: Bearer sesame\r\n",
        r#"{"input": "x"}"#,
    );
    assert_eq!(s, 200);
    assert_eq!(http(a, "GET", "/health", "", "").0, 200);
}

/// Concurrent requests are batched, and each answer is its own request's vectors; a
/// queue of one refuses the overflow with 429 instead of growing.
#[test]
fn batching_keeps_answers_with_their_requests_and_bounds_the_queue() {
    let d = tempfile::tempdir().unwrap();
    let srv = start(d.path(), &[]);
    let texts: Vec<String> = (0..24)
        .map(|i| format!("question number {i} about topic {}", i * 7))
        .collect();
    let single: Vec<Vec<f64>> = texts
        .iter()
        .map(|t| floats(&post(&srv.addr, "/embed", &format!("{{\"inputs\": {t:?}}}")).1[0]))
        .collect();
    let got: Vec<(usize, Vec<f64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let a = srv.addr.clone();
                s.spawn(move || {
                    (
                        i,
                        floats(&post(&a, "/embed", &format!("{{\"inputs\": [{t:?}]}}")).1[0]),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, v) in got {
        assert!(
            cosine(&v, &single[i]) >= 0.9999,
            "request {i} got another's vector"
        );
    }
    let (_, m) = http(&srv.addr, "GET", "/metrics", "", "");
    assert!(m.contains("uae_batch_requests_count"), "{m}");
    drop(srv);

    let srv = start(
        d.path(),
        &[
            "--max-concurrent-requests",
            "1",
            "--max-batch-requests",
            "1",
            // This case is about the queue's bound alone, not the wait bound.
            "--max-queue-wait-ms",
            "600000",
        ],
    );
    let long: Vec<String> = (0..32)
        .map(|i| format!("{i} {}", "many words in a long passage ".repeat(20)))
        .collect();
    let body = serde_json::json!({ "input": long }).to_string();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..12)
            .map(|_| {
                let (a, b) = (srv.addr.clone(), body.clone());
                s.spawn(move || post(&a, "/v1/embeddings", &b).0)
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "a queue of one must refuse some of 12 at once: {statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
}

/// Clients that send headers and stall, or hold keep-alive connections open, do not
/// hold up anyone: /health and /search still answer promptly.
#[test]
fn stalled_and_idle_clients_block_no_one() {
    let d = tempfile::tempdir().unwrap();
    let srv = start(d.path(), &["--workers", "2"]);
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(&srv.addr).unwrap();
        write!(
            s,
            "POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{{\"q"
        )
        .unwrap();
        held.push(s);
    }
    for _ in 0..8 {
        let mut s = TcpStream::connect(&srv.addr).unwrap();
        write!(s, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf).unwrap();
        held.push(s); // kept alive, idle
    }
    for _ in 0..8 {
        let mut s = TcpStream::connect(&srv.addr).unwrap();
        write!(s, "GET /hea").unwrap(); // half a request line
        held.push(s);
    }
    // Not a speed claim (benchmarks make those): a blocked server would not answer at
    // all until the stalled clients give up; the bound only tells "blocked" from "busy".
    for (method, path, body) in [
        ("GET", "/health", ""),
        ("POST", "/search", r#"{"query": "cat", "k": 1}"#),
    ] {
        let t = Instant::now();
        let (s, b) = http(&srv.addr, method, path, "", body);
        let ms = t.elapsed().as_millis();
        assert_eq!(s, 200, "{b}");
        eprintln!("{method} {path} with 24 stalled or idle clients: {ms} ms");
        assert!(ms < 2000, "{path} took {ms} ms");
    }
    drop(held);
}

/// `uae index export` writes vectors a vector database can bulk-load: read back, the
/// ids are the corpus's in order and each vector is the passage's embedding.
#[test]
fn index_export_reads_back() {
    let d = tempfile::tempdir().unwrap();
    let c = corpus(d.path());
    let out = d.path().join("export");
    assert!(uae()
        .args([
            "index",
            "export",
            "--corpus",
            c.to_str().unwrap(),
            "--out",
            out.to_str().unwrap()
        ])
        .status()
        .unwrap()
        .success());
    let (n, dim, v) = uae_artifacts::embeddings::read_npy(&out.join("vectors.npy"))
        .unwrap()
        .unwrap();
    assert_eq!((n, dim), (3, 384));
    let ids: Vec<String> = std::fs::read_to_string(out.join("ids.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["cat", "rates", "leaf"]);
    let texts = d.path().join("texts.jsonl");
    std::fs::copy(&c, &texts).unwrap();
    let emb = d.path().join("emb.jsonl");
    assert!(uae()
        .args([
            "embed",
            "--input",
            texts.to_str().unwrap(),
            "--out",
            emb.to_str().unwrap()
        ])
        .status()
        .unwrap()
        .success());
    for (i, l) in std::fs::read_to_string(&emb).unwrap().lines().enumerate() {
        let want = floats(&serde_json::from_str::<serde_json::Value>(l).unwrap()["embedding"]);
        let got: Vec<f64> = v[i * dim..(i + 1) * dim]
            .iter()
            .map(|&x| x as f64)
            .collect();
        assert!(cosine(&got, &want) >= 0.9999, "row {i}");
    }
}

/// `uae serve` answers searches over a JSONL corpus (BEIR field names too), restricts
/// them to a scope when asked, and turns bad requests into 4xx JSON errors.
#[test]
fn serve_answers_searches_and_rejects_bad_requests() {
    let d = tempfile::tempdir().unwrap();
    let corpus = d.path().join("corpus.jsonl");
    std::fs::write(
        &corpus,
        concat!(
            "{\"id\": \"cat\", \"text\": \"The cat sat on the mat all afternoon.\"}\n",
            "{\"_id\": \"rates\", \"title\": \"Finance\", \"text\": \"Interest rates rose in March.\"}\n",
            "{\"id\": \"leaf\", \"text\": \"Photosynthesis turns light into sugar.\", \"scope\": \"bio\"}\n",
        ),
    )
    .unwrap();
    let srv = start_on(&corpus, &[]);
    let addr = srv.addr.clone();
    let json = |s: &str| -> serde_json::Value { serde_json::from_str(s).unwrap() };
    let http = |a: &str, m: &str, p: &str, b: &str| http(a, m, p, "", b);
    let (status, body) = http(
        &addr,
        "POST",
        "/search",
        r#"{"query": "Where did the cat sit?", "k": 2}"#,
    );
    assert_eq!(status, 200, "{body}");
    let hits = json(&body)["hits"].as_array().unwrap().clone();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0]["id"], "cat");
    assert!(hits[0]["score"].as_f64().unwrap() > hits[1]["score"].as_f64().unwrap());
    let (status, body) = http(
        &addr,
        "POST",
        "/search",
        r#"{"query": "cat", "scope": "bio"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let ids: Vec<String> = json(&body)["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["leaf"]);
    // BM25 and hybrid modes: a query sharing words with one passage finds it first;
    // a hybrid hit's score is its fused score: by default reciprocal rank fusion
    // (1 / (60 + rank) from each ranking), or on request 0.7 x dense + 0.3 x BM25,
    // each normalised over its list.
    let hybrid = r#""mode": "hybrid""#;
    for (mode, top_score) in [
        (r#""mode": "bm25""#, None),
        (hybrid, Some(2.0 / 61.0)),
        (
            r#""mode": "hybrid", "fusion": "rrf", "rrf_k": 10"#,
            Some(2.0 / 11.0),
        ),
        (r#""mode": "hybrid", "fusion": "convex""#, Some(1.0)),
        (
            r#""mode": "hybrid", "fusion": "convex", "dense_weight": 0.2"#,
            Some(1.0),
        ),
    ] {
        let (status, body) = http(
            &addr,
            "POST",
            "/search",
            &format!(r#"{{"query": "interest rates in March", "k": 3, {mode}}}"#),
        );
        assert_eq!(status, 200, "{mode}: {body}");
        let hits = json(&body)["hits"].as_array().unwrap().clone();
        assert_eq!(hits[0]["id"], "rates", "{mode}: {body}");
        if let Some(want) = top_score {
            // First in both rankings.
            let s = hits[0]["score"].as_f64().unwrap();
            assert!((s - want).abs() < 1e-6, "{mode}: {s} against {want}");
        }
    }
    // A fusion constant that does not apply, or out of range, is refused.
    for bad in [
        r#""mode": "dense", "fusion": "rrf""#,
        r#""mode": "hybrid", "dense_weight": 0.5"#,
        r#""mode": "hybrid", "fusion": "convex", "rrf_k": 60"#,
        r#""mode": "hybrid", "rrf_k": 0"#,
        r#""mode": "hybrid", "fusion": "convex", "dense_weight": 1.5"#,
        r#""mode": "hybrid", "fusion": "sum""#,
    ] {
        let (status, body) = http(
            &addr,
            "POST",
            "/search",
            &format!(r#"{{"query": "interest rates", {bad}}}"#),
        );
        assert_eq!(status, 422, "{bad}: {body}");
    }
    let (status, _) = http(
        &addr,
        "POST",
        "/search",
        r#"{"query": "cat", "mode": "sparse"}"#,
    );
    assert_eq!(status, 422);
    let (status, body) = http(&addr, "GET", "/health", "");
    assert_eq!((status, json(&body)["passages"].as_u64()), (200, Some(3)));
    for (method, path, req, want) in [
        // Validation errors are 422, as text-embeddings-inference answers them.
        ("POST", "/search", "{not json", 422),
        ("POST", "/search", r#"{"query": "  "}"#, 422),
        ("POST", "/search", r#"{"query": "cat", "k": 0}"#, 422),
        (
            "POST",
            "/search",
            r#"{"query": "cat", "scope": "nope"}"#,
            422,
        ),
        ("POST", "/search", r#"{"query": "cat", "top": 3}"#, 422),
        ("GET", "/search", "", 405),
        ("GET", "/elsewhere", "", 404),
    ] {
        let (status, body) = http(&addr, method, path, req);
        assert_eq!(status, want, "{method} {path} {req}: {body}");
        assert!(json(&body)["error"].is_string(), "{body}");
    }
    drop(srv);
}

/// The raw response (status line, headers, body) to one request on a fresh connection.
fn raw(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The input holes of the hostile probe (issue 29, item 5, and the 413 of item 4):
/// each failed before.
#[test]
fn input_holes_of_the_probe_are_closed() {
    let d = tempfile::tempdir().unwrap();
    let srv = start(
        d.path(),
        &[
            "--max-client-batch-size",
            "2",
            "--api-key",
            "sesame",
            "--payload-limit",
            "500",
            "--served-model-name",
            "my-retriever",
        ],
    );
    let a = srv.addr.as_str();
    let auth = "Authorization: bearer sesame\r\n";
    let post_auth = |path: &str, body: &str| {
        let (s, b) = http(a, "POST", path, auth, body);
        (
            s,
            serde_json::from_str(&b).unwrap_or(serde_json::Value::Null),
        )
    };
    // The scheme name is case-insensitive.
    let (s, r) = post_auth("/v1/embeddings", r#"{"input": "the cat"}"#);
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["model"], "my-retriever");
    let by_text = floats(&r["data"][0]["embedding"]);
    // `/rerank` with exactly the limit of texts: the query is not one of them.
    let (s, r) = post_auth("/rerank", r#"{"query": "q", "texts": ["a", "b"]}"#);
    assert_eq!(s, 200, "{r}");
    let (s, _) = post_auth("/rerank", r#"{"query": "q", "texts": ["a", "b", "c"]}"#);
    assert_eq!(s, 422);
    // Whitespace is no input (`/search` refuses it too).
    for body in [r#"{"input": "  \n"}"#, r#"{"input": ["a", "\t"]}"#] {
        let (s, r) = post_auth("/v1/embeddings", body);
        assert_eq!(s, 422, "{body}: {r}");
    }
    // Token ids without [CLS]/[SEP] embed like the text (cosine 0.53 before).
    let (s, r) = post_auth("/v1/embeddings", r#"{"input": [1996, 4937]}"#);
    assert_eq!(s, 200, "{r}");
    let c = cosine(&floats(&r["data"][0]["embedding"]), &by_text);
    assert!(c >= 0.9999, "cosine {c}");
    assert_eq!(r["usage"]["prompt_tokens"], 4);
    // /info names the model, not the folder it was read from.
    let (_, b) = http(a, "GET", "/info", auth, "");
    let info: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(info["model_id"], "my-retriever");
    assert!(!b.contains("models/"), "{b}");
    // A 413 tells the client the connection is closed before it reuses it.
    let big = format!("{{\"input\": \"{}\"}}", "x".repeat(1000));
    let resp = raw(
        a,
        &format!(
            "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n{big}",
            big.len()
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
}

/// Requests that waited longer than `--max-queue-wait-ms` are answered 503 with
/// Retry-After instead of late; the rest are answered.
#[test]
fn requests_that_wait_too_long_get_503_with_retry_after() {
    let d = tempfile::tempdir().unwrap();
    let srv = start(d.path(), &["--max-queue-wait-ms", "1", "--workers", "4"]);
    let text = "word ".repeat(120);
    let body = serde_json::json!({ "input": vec![text; 32] }).to_string();
    let request = format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (a, r) = (srv.addr.clone(), request.clone());
            std::thread::spawn(move || raw(&a, &r))
        })
        .collect();
    let answers: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = answers
        .iter()
        .filter(|r| r.starts_with("HTTP/1.1 200"))
        .count();
    let late: Vec<&String> = answers
        .iter()
        .filter(|r| r.starts_with("HTTP/1.1 503"))
        .collect();
    assert_eq!(ok + late.len(), 8, "{answers:?}");
    assert!(ok >= 1 && !late.is_empty(), "ok {ok}, 503 {}", late.len());
    for r in late {
        assert!(r.to_ascii_lowercase().contains("retry-after: 1"), "{r}");
        assert!(r.contains("max-queue-wait-ms"), "{r}");
    }
}

/// SIGTERM drains: the request in flight is answered, `/health` and new work answer
/// 503 meanwhile, and the server exits 0.
#[cfg(unix)]
#[test]
fn sigterm_drains_requests_in_flight_and_exits_0() {
    let d = tempfile::tempdir().unwrap();
    let mut srv = start(
        d.path(),
        &[
            "--workers",
            "2",
            "--payload-limit",
            "4000000",
            "--max-queue-wait-ms",
            "600000",
        ],
    );
    let addr = srv.addr.clone();
    // Long enough to still be running when the signal comes (~16k tokens: seconds).
    let text = "retrieval ".repeat(250);
    let body = serde_json::json!({ "input": vec![text; 64] }).to_string();
    let slow = std::thread::spawn(move || post(&addr, "/v1/embeddings", &body));
    std::thread::sleep(Duration::from_millis(300));
    let pid = srv.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let t = Instant::now();
    let health = loop {
        let (s, b) = http(&srv.addr, "GET", "/health", "", "");
        if s == 503 || t.elapsed() > Duration::from_secs(5) {
            break (s, b);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(health.0, 503, "{}", health.1);
    assert!(health.1.contains("\"draining\":true"), "{}", health.1);
    let (s, r) = post(&srv.addr, "/search", r#"{"query": "cat", "k": 1}"#);
    assert_eq!(s, 503, "{r}");
    let (s, r) = slow.join().unwrap();
    assert_eq!(s, 200, "the request in flight was dropped: {r}");
    assert_eq!(r["data"].as_array().map(Vec::len), Some(64));
    let status = srv.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// `uae calibrate` fits a model's scores to the LLM's utilities on labelled
/// questions; `uae serve` then gives each dense hit its expected utility and
/// p(helps), and filters by them (an empty list is an answer).
#[test]
fn calibrated_search_says_what_each_hit_is_worth() {
    let d = tempfile::tempdir().unwrap();
    // The base model, linked file by file into a folder of our own.
    let model = d.path().join("model");
    let base = common::root().join("models/all-MiniLM-L6-v2");
    link_tree(&base, &model);
    // Labels: a passage on the question's topic lowers the NLL by 3 nats, others not.
    let topics = [
        ("cat", "The cat sat on the mat all afternoon."),
        ("rates", "Interest rates rose in March."),
        ("leaf", "Photosynthesis turns light into sugar."),
    ];
    let questions = [
        ("cat", "Where did the cat sit?"),
        ("rates", "When did interest rates rise?"),
        ("leaf", "What does photosynthesis make?"),
        ("cat", "What did the cat do all afternoon?"),
        ("rates", "Which rates went up?"),
        ("leaf", "What turns light into sugar?"),
    ];
    let mut lines = String::new();
    for (i, (topic, q)) in questions.iter().cycle().take(24).enumerate() {
        let candidates: Vec<serde_json::Value> = topics
            .iter()
            .map(|(id, text)| {
                let u = if id == topic {
                    3.0
                } else {
                    -0.2 + 0.01 * i as f64
                };
                serde_json::json!({"passage_id": id, "text": text, "is_gold": id == topic,
                    "source": "dense", "utility": u, "per_answer": [u]})
            })
            .collect();
        lines += &serde_json::json!({"question_id": format!("q{i}"), "paper_id": "",
            "question": q, "answers": ["a"], "nll_without": [4.0], "candidates": candidates})
        .to_string();
        lines.push('\n');
    }
    let labels = d.path().join("labels");
    std::fs::create_dir_all(&labels).unwrap();
    std::fs::write(labels.join("labels.jsonl"), lines).unwrap();
    let out = common::ok(&[
        "calibrate",
        "--model",
        model.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["pairs"], 72, "{report}");
    assert!(report["ece"].as_f64().unwrap() < 0.2, "{report}");
    assert!(model.join("calibration.json").is_file());
    eval_selects_what_helps(d.path(), &model, &labels, &topics, &questions);

    let srv = start(d.path(), &["--model", model.to_str().unwrap()]);
    let a = srv.addr.as_str();
    let (s, r) = post(
        a,
        "/search",
        r#"{"query": "Where did the cat sit?", "k": 3}"#,
    );
    assert_eq!(s, 200, "{r}");
    let hits = r["hits"].as_array().unwrap();
    assert_eq!(hits[0]["id"], "cat");
    let u: Vec<f64> = hits
        .iter()
        .map(|h| h["expected_utility"].as_f64().unwrap())
        .collect();
    assert!(u.windows(2).all(|w| w[0] >= w[1]), "{u:?}");
    assert!(u[0] > 1.0 && u[2] < 1.0, "{u:?}");
    let p0 = hits[0]["p_helps"].as_f64().unwrap();
    assert!((0.5..=1.0).contains(&p0), "{p0}");
    // Only what helps; nothing, when nothing will.
    let (s, r) = post(
        a,
        "/search",
        r#"{"query": "Where did the cat sit?", "k": 3, "min_utility": 1.0}"#,
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["hits"].as_array().unwrap().len(), 1, "{r}");
    let (s, r) = post(
        a,
        "/search",
        r#"{"query": "Where did the cat sit?", "k": 3, "min_utility": 100}"#,
    );
    assert_eq!(
        (s, r["hits"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{r}"
    );
    // A context budget of one passage takes the most valuable one.
    let (s, r) = post(
        a,
        "/search",
        r#"{"query": "Where did the cat sit?", "k": 3, "max_context_tokens": 12}"#,
    );
    assert_eq!(s, 200, "{r}");
    let ids: Vec<&str> = r["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["cat"], "{r}");
    // A hybrid hit is valued by the model's cosine for it, so the filters work
    // there too; BM25 alone has no model score to value.
    let (s, r) = post(
        a,
        "/search",
        r#"{"query": "Where did the cat sit?", "mode": "hybrid", "k": 3, "min_utility": 1.0}"#,
    );
    assert_eq!(s, 200, "{r}");
    let hits = r["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{r}");
    assert_eq!(hits[0]["id"], "cat", "{r}");
    assert!(hits[0]["expected_utility"].as_f64().unwrap() > 1.0, "{r}");
    let (s, _) = post(
        a,
        "/search",
        r#"{"query": "cat", "mode": "bm25", "min_utility": 1}"#,
    );
    assert_eq!(s, 422);
    drop(srv);
    // An uncalibrated model cannot filter by utility, and its hits carry none.
    let srv = start(d.path(), &[]);
    let (s, r) = post(
        &srv.addr,
        "/search",
        r#"{"query": "cat", "min_p_helps": 0.5}"#,
    );
    assert_eq!(s, 422, "{r}");
    let (_, r) = post(&srv.addr, "/search", r#"{"query": "cat"}"#);
    assert!(r["hits"][0].get("expected_utility").is_none(), "{r}");
}

/// A calibration whose p(helps) reads the question: the cat questions are easy for
/// the LLM (no-context NLL 0.5 nats; their passage lowers it by 0.3, never a nat),
/// the others hard (6 nats; their passage lowers it by 3). By the cosine alone the
/// topic passage helps two times in three; with the question term `uae calibrate`
/// keeps (it holds out better), `/search` says which.
#[test]
fn p_helps_reads_how_hard_the_question_is() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("model");
    link_tree(&common::root().join("models/all-MiniLM-L6-v2"), &model);
    let topics = [
        ("cat", "The cat sat on the mat all afternoon."),
        ("rates", "Interest rates rose in March."),
        ("leaf", "Photosynthesis turns light into sugar."),
    ];
    let asked = [
        (
            "cat",
            [
                "Where did the cat sit?",
                "What did the cat do all afternoon?",
            ],
        ),
        (
            "rates",
            ["When did interest rates rise?", "Which rates went up?"],
        ),
        (
            "leaf",
            [
                "What does photosynthesis make?",
                "What turns light into sugar?",
            ],
        ),
    ];
    let mut lines = String::new();
    for i in 0..60 {
        let (topic, texts) = asked[i % 3];
        let easy = topic == "cat";
        let candidates: Vec<serde_json::Value> = topics
            .iter()
            .map(|(id, text)| {
                let u = match (*id == topic, easy) {
                    (true, true) => 0.3,
                    (true, false) => 3.0,
                    _ => -0.2,
                };
                serde_json::json!({"passage_id": id, "text": text, "is_gold": *id == topic,
                    "source": "dense", "utility": u, "per_answer": [u]})
            })
            .collect();
        let question = format!("{} (case {i})", texts[(i / 3) % 2]);
        lines += &serde_json::json!({"question_id": format!("q{i}"), "paper_id": "",
            "question": question, "answers": ["a"], "nll_without": [if easy { 0.5 } else { 6.0 }],
            "candidates": candidates})
        .to_string();
        lines.push('\n');
    }
    let labels = d.path().join("labels");
    std::fs::create_dir_all(&labels).unwrap();
    std::fs::write(labels.join("labels.jsonl"), lines).unwrap();
    let (m, l) = (model.to_str().unwrap(), labels.to_str().unwrap());
    let out = common::ok(&["calibrate", "--model", m, "--labels", l]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let term = &report["question_term"];
    let (with, without) = (
        term["held_out_log_loss"].as_f64().unwrap(),
        term["held_out_log_loss_cosine_only"].as_f64().unwrap(),
    );
    assert!(with < without - 0.1, "{report}");
    assert!(term["difficulty_r"].as_f64().unwrap() > 0.9, "{report}");
    let cos = d.path().join("cosine-only");
    let o = cos.to_str().unwrap();
    let out = common::ok(&[
        "calibrate",
        "--model",
        m,
        "--labels",
        l,
        "--out",
        o,
        "--cosine-only",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(report.get("question_term").is_none(), "{report}");
    let srv = start(d.path(), &["--model", m]);
    let top_p = |query: &str| {
        let body = serde_json::json!({"query": query, "k": 1}).to_string();
        let (s, r) = post(&srv.addr, "/search", &body);
        assert_eq!(s, 200, "{r}");
        (
            r["hits"][0]["id"].clone(),
            r["hits"][0]["p_helps"].as_f64().unwrap(),
        )
    };
    let (id, easy) = top_p("Where did the cat sit?");
    assert_eq!(id, "cat");
    let (id, hard) = top_p("When did interest rates rise?");
    assert_eq!(id, "rates");
    assert!(easy < 0.2 && hard > 0.8, "easy {easy}, hard {hard}");
    drop(srv);
    // A label folder of another LLM cannot lend its questions' difficulty.
    let other = d.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(labels.join("labels.jsonl"), other.join("labels.jsonl")).unwrap();
    let manifest = |lm: &str| {
        serde_json::json!({"version": "0", "split": "s", "limit": null, "data_file": "q", "lm": lm,
            "lm_sha256": lm, "encoder": "e", "config": {"candidates": "retrieved", "dense_negatives": 0,
            "bm25_negatives": 0, "random_negatives": 0, "passage_tokens": 0, "template": "plain",
            "seed": 0, "max_batch": 1, "max_batch_tokens": 1}})
        .to_string()
    };
    std::fs::write(labels.join("manifest.json"), manifest("aaa")).unwrap();
    std::fs::write(other.join("manifest.json"), manifest("bbb")).unwrap();
    let o = other.to_str().unwrap();
    common::fails_with(
        &[
            "calibrate",
            "--model",
            m,
            "--labels",
            l,
            "--difficulty-labels",
            o,
        ],
        &["other", "another LLM"],
    );
}

/// A calibration whose p(helps) reads each hit's BM25 rank: per topic, one passage
/// holds the questions' words and helps (3 nats), a paraphrase on the same topic in
/// other words does not. The cosine ranks both near the top; BM25 tells them apart.
/// `uae calibrate` ranks the labelled candidates in the corpus the labels' manifest
/// names, keeps the lexical term (it holds out better), and dense `/search` reads it.
#[test]
fn p_helps_reads_the_bm25_rank_of_each_hit() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("model");
    link_tree(&common::root().join("models/all-MiniLM-L6-v2"), &model);
    let topics = [
        (
            "cat",
            "The cat sat on the mat all afternoon.",
            "A feline rested upon a rug for hours.",
            [
                "Where did the cat sit?",
                "What did the cat sit on all afternoon?",
            ],
        ),
        (
            "rates",
            "Interest rates rose in March.",
            "Borrowing costs climbed early that spring.",
            [
                "When did interest rates rise?",
                "Which rates rose in March?",
            ],
        ),
        (
            "leaf",
            "Photosynthesis turns light into sugar.",
            "Plants convert sunshine to glucose.",
            [
                "What does photosynthesis turn light into?",
                "What turns light into sugar?",
            ],
        ),
    ];
    let corpus = d.path().join("corpus.jsonl");
    let mut rows = String::new();
    for (id, words, paraphrase, _) in &topics {
        rows += &format!(
            "{}\n",
            serde_json::json!({"id": format!("{id}-words"), "text": words})
        );
        rows += &format!(
            "{}\n",
            serde_json::json!({"id": format!("{id}-para"), "text": paraphrase})
        );
    }
    std::fs::write(&corpus, rows).unwrap();
    let (mut questions, mut lines) = (String::new(), String::new());
    for i in 0..60 {
        let (topic, words, paraphrase, asked) = &topics[i % 3];
        let question = format!("{} (case {i})", asked[(i / 3) % 2]);
        questions += &format!(
            "{}\n",
            serde_json::json!({"id": format!("q{i}"), "question": question, "answers": ["a"]})
        );
        let mut candidates = Vec::new();
        for (id, text, u) in [("words", words, 3.0), ("para", paraphrase, -0.2)] {
            candidates.push(
                serde_json::json!({"passage_id": format!("{topic}-{id}"), "text": text,
                "is_gold": false, "source": "dense", "utility": u, "per_answer": [u]}),
            );
        }
        for (other, words, paraphrase, _) in topics.iter().filter(|t| t.0 != *topic) {
            for (id, text) in [("words", words), ("para", paraphrase)] {
                candidates.push(serde_json::json!({"passage_id": format!("{other}-{id}"),
                    "text": text, "is_gold": false, "source": "dense", "utility": -0.2,
                    "per_answer": [-0.2]}));
            }
        }
        lines += &format!(
            "{}\n",
            serde_json::json!({"question_id": format!("q{i}"), "paper_id": "", "question": question,
                "answers": ["a"], "nll_without": [4.0], "candidates": candidates})
        );
    }
    let questions_file = d.path().join("questions.jsonl");
    std::fs::write(&questions_file, questions).unwrap();
    let labels = d.path().join("labels");
    std::fs::create_dir_all(&labels).unwrap();
    std::fs::write(labels.join("labels.jsonl"), lines).unwrap();
    let manifest = serde_json::json!({"version": "0", "split": "questions.jsonl", "limit": null,
        "data_file": questions_file, "corpus": corpus, "lm": "lm", "lm_sha256": "lm",
        "encoder": "e", "config": {"candidates": "mined", "dense_negatives": 0,
        "bm25_negatives": 0, "random_negatives": 0, "passage_tokens": 0, "template": "plain",
        "seed": 0, "max_batch": 1, "max_batch_tokens": 1}});
    std::fs::write(labels.join("manifest.json"), manifest.to_string()).unwrap();
    let (m, l) = (model.to_str().unwrap(), labels.to_str().unwrap());
    let report: serde_json::Value =
        serde_json::from_str(&common::ok(&["calibrate", "--model", m, "--labels", l])).unwrap();
    let term = &report["lexical_term"];
    assert!(
        term["held_out_log_loss"].as_f64().unwrap()
            < term["held_out_log_loss_without_rank"].as_f64().unwrap() - 0.05,
        "{report}"
    );
    assert!(term["rank_weight"].as_f64().unwrap() < 0.0, "{report}");
    // --cosine-only fits neither term: the same model, its cosine alone.
    let cos_model = d.path().join("cosine-only");
    link_tree(&common::root().join("models/all-MiniLM-L6-v2"), &cos_model);
    let c = cos_model.to_str().unwrap();
    let out = common::ok(&["calibrate", "--model", c, "--labels", l, "--cosine-only"]);
    assert!(!out.contains("lexical_term"), "{out}");
    // Served over the same corpus: in dense and in hybrid mode the passage with the
    // question's words is worth clearly more than its paraphrase, by far more than
    // the cosine alone says.
    let gap = |model: &str, mode: &str| {
        let srv = start_on(&corpus, &["--model", model]);
        let body =
            serde_json::json!({"query": "Where did the cat sit on the mat?", "k": 6, "mode": mode});
        let (s, r) = post(&srv.addr, "/search", &body.to_string());
        assert_eq!(s, 200, "{r}");
        let p = |id: &str| {
            r["hits"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["id"] == id)
                .and_then(|h| h["p_helps"].as_f64())
                .unwrap_or_else(|| panic!("{id} in {r}"))
        };
        p("cat-words") - p("cat-para")
    };
    for mode in ["dense", "hybrid"] {
        let (lexical, cosine) = (gap(m, mode), gap(c, mode));
        assert!(
            lexical > 0.3 && lexical > cosine + 0.2,
            "{mode}: {lexical} against {cosine}"
        );
    }
}

/// `uae eval` with a calibrated model: the sweep of selection rules, the requested
/// rule (questions on a topic get their passage, one that no passage answers gets
/// nothing), the calibration checked on labels with a reliability diagram; and the
/// refusals (no calibration, a lexical retriever).
fn eval_selects_what_helps(
    d: &Path,
    model: &Path,
    labels: &Path,
    topics: &[(&str, &str)],
    questions: &[(&str, &str)],
) {
    let corpus: String = topics
        .iter()
        .map(|(id, text)| format!("{}\n", serde_json::json!({"id": id, "text": text})))
        .collect();
    let mut qs: String = questions
        .iter()
        .enumerate()
        .map(|(i, (topic, q))| {
            format!(
                "{}\n",
                serde_json::json!({"id": format!("q{i}"), "question": q, "answer": "a", "positives": [topic]})
            )
        })
        .collect();
    qs += &format!(
        "{}\n",
        serde_json::json!({"id": "none", "question": "Who won the 1930 football world cup?", "answer": "Uruguay"})
    );
    std::fs::write(d.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(d.join("questions.jsonl"), qs).unwrap();
    let (c, q) = (d.join("corpus.jsonl"), d.join("questions.jsonl"));
    let out = d.join("eval");
    // `uae eval` on these files with `model` into `out`, then `extra`.
    let args = |model: &Path, out: &Path, extra: &[&str]| -> Vec<String> {
        let (c, q, m, o) = (c.to_str(), q.to_str(), model.to_str(), out.to_str());
        let base = ["eval", "--corpus", c.unwrap(), "--questions", q.unwrap()];
        let rest = ["--model", m.unwrap(), "--out", o.unwrap()];
        base.iter()
            .chain(&rest)
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let report_of = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
    };
    let base = common::root().join("models/all-MiniLM-L6-v2");
    let a = args(
        model,
        &out,
        &["--min-p-helps", "0.5", "--labels", labels.to_str().unwrap()],
    );
    let printed = common::ok(&strs(&a));
    assert!(printed.contains("ECE"), "{printed}");
    let report = report_of(&out);
    let sel = &report["selection"];
    assert_eq!(sel["family"], "requested", "{report}");
    assert_eq!(sel["selection"]["min_p_helps"], 0.5, "{report}");
    assert_eq!(
        (
            sel["with_evidence"].as_u64(),
            sel["without_evidence"].as_u64()
        ),
        (Some(6), Some(1))
    );
    assert_eq!(sel["evidence_recall"], 1.0, "{report}");
    assert_eq!(sel["empty_without_evidence"], 1.0, "{report}");
    assert!(sel["mean_passages"].as_f64().unwrap() < 3.0, "{report}");
    let cal = &report["calibration"];
    assert_eq!(cal["pairs"], 72, "{report}");
    assert!(cal["ece"].as_f64().unwrap() < 0.2, "{report}");
    // Its interval, resampling the questions: ordered, within [0, 1].
    let [lo, hi] = [0, 1].map(|i| cal["ece_interval"][i].as_f64().unwrap());
    assert!((0.0..=hi).contains(&lo) && hi <= 1.0, "{report}");
    let sweep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("selection.json")).unwrap())
            .unwrap();
    let rows = sweep["rows"].as_array().unwrap();
    let k1 = rows
        .iter()
        .find(|r| r["selection"]["k"] == 1 && r["family"] == "k")
        .unwrap();
    assert_eq!(k1["mean_passages"], 1.0, "{k1}");
    assert_eq!(k1["empty_without_evidence"], 0.0, "{k1}");
    for svg in ["selection.svg", "reliability.svg"] {
        let text = std::fs::read_to_string(out.join(svg)).unwrap();
        assert!(text.starts_with("<svg"), "{svg}");
    }
    // --cache: the second run reads the passages' embeddings back, same ranking.
    let cache = d.join("cache");
    let ranked = |name: &str| {
        let a = args(model, &d.join(name), &["--cache", cache.to_str().unwrap()]);
        let done = uae().env("RUST_LOG", "info").args(&a).output().unwrap();
        assert!(done.status.success(), "{done:?}");
        let reused = String::from_utf8_lossy(&done.stderr).contains("passage embeddings from");
        let run = std::fs::read_to_string(d.join(name).join("run.trec")).unwrap();
        let ids: Vec<String> = run
            .lines()
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .collect();
        (ids, reused)
    };
    let (first, reused) = ranked("eval-cache-1");
    assert!(!reused);
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
    assert_eq!(ranked("eval-cache-2"), (first, true));
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
    // Hybrid: each fused hit valued by the model's cosine for it, the same choice.
    let hybrid = ["--retriever", "hybrid", "--min-p-helps", "0.5"];
    common::ok(&strs(&args(model, &d.join("eval-hybrid"), &hybrid)));
    let report = report_of(&d.join("eval-hybrid"));
    let sel = &report["selection"];
    assert_eq!(sel["evidence_recall"], 1.0, "{report}");
    assert_eq!(sel["empty_without_evidence"], 1.0, "{report}");
    // A token budget in rank order reads no value: the base model takes it.
    let budget = ["--max-context-tokens", "12"];
    common::ok(&strs(&args(&base, &d.join("eval-budget"), &budget)));
    let report = report_of(&d.join("eval-budget"));
    let sel = &report["selection"];
    assert_eq!(sel["mean_passages"], 1.0, "{report}");
    assert!(sel["mean_tokens"].as_f64().unwrap() <= 12.0, "{report}");
    // The base model has no calibration; BM25 has no cosines to calibrate.
    let a = args(&base, &d.join("eval-base"), &["--min-p-helps", "0.5"]);
    common::fails_with(&strs(&a), &["calibration.json", "uae calibrate"]);
    let bm25 = ["--retriever", "bm25", "--max-context-tokens", "100"];
    let a = args(model, &d.join("eval-bm25"), &bm25);
    common::fails_with(&strs(&a), &["--retriever dense"]);
}

/// `&str`s of owned arguments, for `common::ok`.
fn strs(a: &[String]) -> Vec<&str> {
    a.iter().map(String::as_str).collect()
}

/// Links every file under `from` into `to` (same tree), so a test can add files
/// to a model folder without copying its weights.
fn link_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            link_tree(&e.path(), &dst);
        } else {
            std::os::unix::fs::symlink(e.path(), &dst).unwrap();
        }
    }
}
