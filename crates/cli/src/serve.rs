//! `uae serve`: the query-time half of UAE as an HTTP service. Embeds a corpus once
//! (cached next to it), then answers searches with one encoder pass and an exact
//! inner-product scan: no LLM at query time.
//!
//! - `POST /search` with `{"query": "...", "k": 10, "scope": "optional"}` returns
//!   `{"hits": [{"id", "score", "text", "scope"}], "took_ms"}`; `scope` restricts
//!   the search to one scope's passages (a paper, for QASPER).
//! - `GET /health` returns `{"ok": true, "passages", "model", "bf16"}`.
//!
//! Bad requests get a 4xx status and `{"error": "..."}`; the server never panics on
//! input.

use crate::common::{load_encoder_in, passage_embeddings, DataDir, DEFAULT_ENCODER};
use anyhow::{Context, Result};
use serde::Deserialize;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;
use uae_core::Passage;
use uae_data::Split;
use uae_encoder::Encoder;
use uae_index::{DenseIndex, Scopes};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Bi-encoder folder (a `uae train` export or any sentence-transformers BERT).
    #[arg(long, default_value = DEFAULT_ENCODER)]
    model: PathBuf,
    #[arg(long, help = crate::common::ENCODER_BF16_HELP)]
    bf16: bool,
    /// Corpus to serve: JSONL, one `{"id", "text", "scope"?}` per line; a BEIR
    /// corpus.jsonl (`_id`, `title`, `text`) works as it is.
    #[arg(long, conflicts_with = "split")]
    corpus: Option<PathBuf>,
    /// Corpus to serve: the paragraphs of a QASPER split (scope = paper id); the
    /// default when no --corpus is given is the test split.
    #[arg(long)]
    split: Option<Split>,
    #[command(flatten)]
    data: DataDir,
    /// Address to listen on (port 0: any free port; the line on stdout says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Where passage embeddings are cached (default: CORPUS.uae-cache beside the
    /// corpus file, or `runs/serve-cache` for QASPER).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Request-handling threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Largest `k` a request may ask for.
    #[arg(long, default_value_t = 1000)]
    max_k: usize,
}

#[derive(Deserialize)]
struct CorpusLine {
    #[serde(alias = "_id")]
    id: String,
    text: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchRequest {
    query: String,
    #[serde(default = "default_k")]
    k: usize,
    #[serde(default)]
    scope: Option<String>,
}

fn default_k() -> usize {
    10
}

struct Service {
    enc: Encoder,
    passages: Vec<Passage>,
    index: DenseIndex,
    scopes: Scopes,
    model: String,
    bf16: bool,
    max_k: usize,
}

impl Service {
    /// (status, JSON body) for one request.
    fn handle(&self, method: &tiny_http::Method, url: &str, body: &[u8]) -> (u16, String) {
        let path = url.split('?').next().unwrap_or("");
        match (method, path) {
            (tiny_http::Method::Get, "/health") => (
                200,
                serde_json::json!({
                    "ok": true,
                    "passages": self.passages.len(),
                    "model": self.model,
                    "bf16": self.bf16,
                })
                .to_string(),
            ),
            (tiny_http::Method::Post, "/search") => match self.search(body) {
                Ok(v) => (200, v.to_string()),
                Err(e) => (400, serde_json::json!({ "error": e }).to_string()),
            },
            (_, "/search" | "/health") => (
                405,
                serde_json::json!({ "error": "use POST /search or GET /health" }).to_string(),
            ),
            _ => (
                404,
                serde_json::json!({ "error": format!("no route {path}") }).to_string(),
            ),
        }
    }

    fn search(&self, body: &[u8]) -> std::result::Result<serde_json::Value, String> {
        let t = Instant::now();
        let req: SearchRequest =
            serde_json::from_slice(body).map_err(|e| format!("bad request body: {e}"))?;
        if req.query.trim().is_empty() {
            return Err("`query` is empty".into());
        }
        if req.k == 0 || req.k > self.max_k {
            return Err(format!("`k` must be between 1 and {}", self.max_k));
        }
        let candidates = match &req.scope {
            Some(s) => {
                let c = self.scopes.scope(s);
                if c.is_empty() {
                    return Err(format!("unknown scope `{s}`"));
                }
                c
            }
            None => self.scopes.all(),
        };
        let q = self
            .enc
            .embed(&[req.query.as_str()])
            .map_err(|e| format!("encoding the query: {e}"))?;
        let hits = self
            .index
            .search(&q[0], candidates, Some(req.k))
            .map_err(|e| format!("search: {e}"))?;
        let hits: Vec<serde_json::Value> = hits
            .iter()
            .map(|h| {
                let p = &self.passages[h.passage];
                serde_json::json!({
                    "id": p.id,
                    "score": h.score,
                    "text": p.text,
                    "scope": p.scope,
                })
            })
            .collect();
        Ok(serde_json::json!({
            "hits": hits,
            "took_ms": t.elapsed().as_secs_f64() * 1e3,
        }))
    }
}

fn load_corpus(a: &ServeArgs) -> Result<(Vec<Passage>, PathBuf)> {
    if let Some(path) = &a.corpus {
        let lines: Vec<CorpusLine> = uae_data::read_jsonl(path)?;
        let passages = lines
            .into_iter()
            .map(|l| Passage {
                id: l.id,
                scope: l.scope,
                section: None,
                // BEIR's convention, as in `uae eval --beir`.
                text: match l.title.filter(|t| !t.trim().is_empty()) {
                    Some(t) => format!("{t} {}", l.text),
                    None => l.text,
                },
            })
            .collect();
        let cache = path.with_extension("uae-cache");
        return Ok((passages, cache));
    }
    let split = a.split.unwrap_or(Split::Test);
    let q = a.data.load(split)?;
    Ok((q.passages(), PathBuf::from("runs/serve-cache")))
}

pub fn run(a: ServeArgs) -> Result<()> {
    let (passages, default_cache) = load_corpus(&a)?;
    anyhow::ensure!(!passages.is_empty(), "the corpus has no passages");
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = passages.iter().find(|p| !seen.insert(p.id.as_str())) {
        anyhow::bail!("passage id `{}` appears twice in the corpus", dup.id);
    }
    let enc = load_encoder_in(&a.model, a.bf16)?;
    let cache = a.cache_dir.clone().unwrap_or(default_cache);
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let vecs = passage_embeddings("corpus", &enc, &a.model, &passages, &cache)?;
    let index = DenseIndex::new(&vecs)?;
    let service = Service {
        enc,
        scopes: Scopes::new(&passages),
        passages,
        index,
        model: a.model.display().to_string(),
        bf16: a.bf16,
        max_k: a.max_k.max(1),
    };
    let server = tiny_http::Server::http(&a.addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", a.addr))?;
    let addr = server
        .server_addr()
        .to_ip()
        .map(|s| s.to_string())
        .unwrap_or_else(|| a.addr.clone());
    println!("listening on http://{addr}");
    tracing::info!(passages = service.passages.len(), "serving");
    std::thread::scope(|s| {
        for _ in 0..a.workers.max(1) {
            s.spawn(|| loop {
                let mut req = match server.recv() {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!("accepting a request: {e}");
                        continue;
                    }
                };
                let mut body = Vec::new();
                let (status, json) = match req.as_reader().take(1 << 20).read_to_end(&mut body) {
                    Ok(_) => service.handle(req.method(), req.url(), &body),
                    Err(e) => (
                        400,
                        serde_json::json!({ "error": format!("reading the body: {e}") })
                            .to_string(),
                    ),
                };
                let header = tiny_http::Header::from_bytes("Content-Type", "application/json")
                    .expect("a constant, valid header; this is a bug otherwise");
                let resp = tiny_http::Response::from_string(json)
                    .with_status_code(status)
                    .with_header(header);
                if let Err(e) = req.respond(resp) {
                    tracing::warn!("answering a request: {e}");
                }
            });
        }
    });
    Ok(())
}
