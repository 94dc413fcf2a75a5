//! `uae serve`: the query-time half of UAE as an HTTP service. The corpus is
//! embedded once (cached by the caller), then each search is one encoder pass and
//! an exact inner-product scan: no LLM at query time.
//!
//! - `POST /search` with [`SearchRequest`] returns [`SearchResponse`]; `scope`
//!   restricts the search to one scope's passages (a paper, for QASPER).
//! - `GET /health` returns [`Health`].
//!
//! Bad requests get a 4xx status and [`ErrorBody`]; the server never panics on
//! input.

use serde::{Deserialize, Serialize};
use std::io::Read;
use std::time::Instant;
use uae_core::Passage;
use uae_encoder::Encoder;
use uae_search::DenseSearcher;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the corpus has no passages")]
    EmptyCorpus,
    #[error("cannot listen on {addr}: {message}")]
    Listen { addr: String, message: String },
    #[error(transparent)]
    Search(#[from] uae_search::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The largest request body read; longer ones are cut (and then fail to parse).
pub const MAX_BODY: u64 = 1 << 20;

/// `POST /search`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub query: String,
    #[serde(default = "default_k")]
    pub k: usize,
    #[serde(default)]
    pub scope: Option<String>,
}

fn default_k() -> usize {
    10
}

/// One search result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchHit {
    pub id: String,
    pub score: f32,
    pub text: String,
    pub scope: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchResponse {
    pub hits: Vec<SearchHit>,
    pub took_ms: f64,
}

/// `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub ok: bool,
    pub passages: usize,
    pub model: String,
    pub bf16: bool,
}

/// Every 4xx answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// The searchable state: encoder, passages and their index.
pub struct Service {
    enc: Encoder,
    passages: Vec<Passage>,
    searcher: DenseSearcher,
    model: String,
    bf16: bool,
    max_k: usize,
}

impl Service {
    /// A service over `passages` with their embeddings `vecs` (by `enc`); `model`
    /// names the model in `/health`; requests may ask for at most `max_k` hits.
    pub fn new(
        enc: Encoder,
        model: String,
        passages: Vec<Passage>,
        vecs: &[Vec<f32>],
        max_k: usize,
    ) -> Result<Self> {
        if passages.is_empty() {
            return Err(Error::EmptyCorpus);
        }
        let searcher = DenseSearcher::new(&passages, vecs)?;
        Ok(Service {
            bf16: enc.model.is_bf16(),
            enc,
            passages,
            searcher,
            model,
            max_k: max_k.max(1),
        })
    }

    /// (status, JSON body) for one request.
    pub fn handle(&self, method: &str, url: &str, body: &[u8]) -> (u16, String) {
        let path = url.split('?').next().unwrap_or("");
        match (method, path) {
            ("GET", "/health") => (
                200,
                json(&Health {
                    ok: true,
                    passages: self.passages.len(),
                    model: self.model.clone(),
                    bf16: self.bf16,
                }),
            ),
            ("POST", "/search") => match self.search(body) {
                Ok(r) => (200, json(&r)),
                Err(error) => (400, json(&ErrorBody { error })),
            },
            (_, "/search" | "/health") => (
                405,
                json(&ErrorBody {
                    error: "use POST /search or GET /health".into(),
                }),
            ),
            _ => (
                404,
                json(&ErrorBody {
                    error: format!("no route {path}"),
                }),
            ),
        }
    }

    fn search(&self, body: &[u8]) -> std::result::Result<SearchResponse, String> {
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
                let c = self.searcher.scopes.scope(s);
                if c.is_empty() {
                    return Err(format!("unknown scope `{s}`"));
                }
                c
            }
            None => self.searcher.scopes.all(),
        };
        let q = self
            .enc
            .embed(&[req.query.as_str()])
            .map_err(|e| format!("encoding the query: {e}"))?;
        let hits = self
            .searcher
            .top(&q[0], candidates, Some(req.k))
            .map_err(|e| format!("search: {e}"))?;
        Ok(SearchResponse {
            hits: hits
                .iter()
                .map(|h| {
                    let p = &self.passages[h.passage];
                    SearchHit {
                        id: p.id.clone(),
                        score: h.score,
                        text: p.text.clone(),
                        scope: p.scope.clone(),
                    }
                })
                .collect(),
            took_ms: t.elapsed().as_secs_f64() * 1e3,
        })
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("responses serialise; this is a bug")
}

/// A bound listener; [`Listener::addr`] is the actual address (port 0 resolved).
pub struct Listener {
    server: tiny_http::Server,
    addr: String,
}

impl Listener {
    pub fn bind(addr: &str) -> Result<Self> {
        let server = tiny_http::Server::http(addr).map_err(|e| Error::Listen {
            addr: addr.into(),
            message: e.to_string(),
        })?;
        let addr = server
            .server_addr()
            .to_ip()
            .map(|s| s.to_string())
            .unwrap_or_else(|| addr.to_string());
        Ok(Listener { server, addr })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Answers requests on `workers` threads until the process ends.
    pub fn serve(&self, service: &Service, workers: usize) {
        tracing::info!(passages = service.passages.len(), "serving");
        std::thread::scope(|s| {
            for _ in 0..workers.max(1) {
                s.spawn(|| loop {
                    let mut req = match self.server.recv() {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!("accepting a request: {e}");
                            continue;
                        }
                    };
                    let mut body = Vec::new();
                    let method = req.method().as_str().to_string();
                    let (status, json) = match req.as_reader().take(MAX_BODY).read_to_end(&mut body)
                    {
                        Ok(_) => service.handle(&method, req.url(), &body),
                        Err(e) => (
                            400,
                            json(&ErrorBody {
                                error: format!("reading the body: {e}"),
                            }),
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
    }
}
