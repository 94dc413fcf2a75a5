//! `uae serve`: the query-time half of UAE as an HTTP service (axum on tokio). The
//! corpus is embedded once at start (searches answer 503 until then), then each
//! search is one encoder pass and an exact inner-product scan: no LLM at query time.
//!
//! Routes ([`api`] holds every request and response type):
//! - `POST /search`: [`api::SearchRequest`] -> [`api::SearchResponse`];
//! - `POST /v1/embeddings`, `/embeddings`: OpenAI's embeddings API (float or base64);
//! - `POST /embed`, `POST /rerank`, `GET /info`: text-embeddings-inference's shapes;
//! - `GET /health`, `GET /metrics` (Prometheus text).
//!
//! Every request's texts go through one bounded batching queue ([`batcher`]): a full
//! queue answers 429, a body over the limit 413, a body that stalls 408, bad input
//! 422, a missing or wrong API key 401. Connections are served concurrently, headers
//! must arrive within a timeout, so no client can hold up another.

pub mod api;
pub mod batcher;
pub mod metrics;

use api::*;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use batcher::{BatchLimits, Batcher, Refused};
use metrics::Metrics;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use uae_core::Passage;
use uae_encoder::Encoder;
use uae_search::DenseSearcher;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the corpus has no passages")]
    EmptyCorpus,
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Search(#[from] uae_search::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Server limits and settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The model's name in responses and `/info`.
    pub model_name: String,
    /// Largest `k` a search may ask for.
    pub max_k: usize,
    /// Largest request body, bytes (413 beyond).
    pub payload_limit: usize,
    /// Most inputs in one request (422 beyond).
    pub max_client_batch_size: usize,
    pub batch: BatchLimits,
    /// Cut inputs longer than the model's limit (else 422).
    pub truncate: bool,
    /// Requests must carry `Authorization: Bearer KEY` (all routes but `/health`).
    pub api_key: Option<String>,
    /// Time allowed for a request's headers (then the connection is closed) and for
    /// its body (then 408).
    pub read_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            model_name: "uae".into(),
            max_k: 1000,
            payload_limit: 2_000_000,
            max_client_batch_size: 512,
            batch: BatchLimits {
                max_batch_tokens: 16384,
                max_batch_requests: 64,
                max_concurrent_requests: 512,
            },
            truncate: true,
            api_key: None,
            read_timeout: Duration::from_secs(10),
        }
    }
}

struct Index {
    passages: Vec<Passage>,
    searcher: DenseSearcher,
}

/// The shared state of every handler.
pub struct App {
    enc: Arc<Encoder>,
    batcher: Batcher,
    index: OnceLock<Index>,
    passages: usize,
    cfg: ServeConfig,
    metrics: Arc<Metrics>,
}

impl App {
    /// A service over a corpus of `passages` (0 for embeddings only); the corpus
    /// is added with [`App::set_corpus`] once embedded.
    pub fn new(enc: Encoder, passages: usize, cfg: ServeConfig) -> Arc<App> {
        let enc = Arc::new(enc);
        let metrics = Arc::new(Metrics::new());
        let batcher = Batcher::start(enc.clone(), cfg.batch, metrics.clone());
        Arc::new(App {
            enc,
            batcher,
            index: OnceLock::new(),
            passages,
            cfg,
            metrics,
        })
    }

    /// The encoder (to embed the corpus with, before [`App::set_corpus`]).
    pub fn encoder(&self) -> &Encoder {
        &self.enc
    }

    /// Makes searches answer: `vecs` are the passages' embeddings.
    pub fn set_corpus(&self, passages: Vec<Passage>, vecs: &[Vec<f32>]) -> Result<()> {
        if passages.is_empty() {
            return Err(Error::EmptyCorpus);
        }
        let searcher = DenseSearcher::new(&passages, vecs)?;
        let _ = self.index.set(Index { passages, searcher });
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        self.index.get().is_some()
    }

    /// Tokenises texts (cut to the model's limit, or refused without truncation).
    fn tokenize(
        &self,
        texts: &[&str],
        truncate: bool,
    ) -> std::result::Result<Vec<Vec<u32>>, ApiError> {
        if texts.is_empty() {
            return Err(ApiError::validation("the input is empty"));
        }
        if texts.len() > self.cfg.max_client_batch_size {
            return Err(ApiError::validation(format!(
                "{} inputs; at most {} per request",
                texts.len(),
                self.cfg.max_client_batch_size
            )));
        }
        if let Some(i) = texts.iter().position(|t| t.is_empty()) {
            return Err(ApiError::validation(format!(
                "input {i} is an empty string"
            )));
        }
        let toks = self
            .enc
            .tokenize_checked(texts)
            .map_err(|e| ApiError::validation(format!("tokenizing: {e}")))?;
        if !truncate {
            if let Some(i) = toks.iter().position(|(_, cut)| *cut) {
                return Err(ApiError::validation(format!(
                    "input {i} is longer than the model's {} tokens (truncation is off)",
                    self.enc.max_seq_length
                )));
            }
        }
        Ok(toks.into_iter().map(|(ids, _)| ids).collect())
    }

    /// Embeds token ids through the batching queue.
    async fn embed(&self, ids: Vec<Vec<u32>>) -> std::result::Result<Vec<Vec<f32>>, ApiError> {
        let rx = self.batcher.submit(ids).map_err(|r| match r {
            Refused::Full => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "the queue is full ({} requests waiting); retry later",
                    self.cfg.batch.max_concurrent_requests
                ),
            ),
            Refused::Closed => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the encoder has stopped")
            }
        })?;
        rx.await
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the encoder has stopped"))?
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))
    }

    /// Token ids given directly (OpenAI's token-array input): each must be a known id
    /// of the model's vocabulary, within its length limit.
    fn check_ids(&self, ids: Vec<Vec<u32>>) -> std::result::Result<Vec<Vec<u32>>, ApiError> {
        if ids.is_empty() || ids.iter().any(Vec::is_empty) {
            return Err(ApiError::validation("the input is empty"));
        }
        if ids.len() > self.cfg.max_client_batch_size {
            return Err(ApiError::validation(format!(
                "{} inputs; at most {} per request",
                ids.len(),
                self.cfg.max_client_batch_size
            )));
        }
        let vocab = self.enc.vocab_size() as u32;
        for (i, seq) in ids.iter().enumerate() {
            if let Some(t) = seq.iter().find(|&&t| t >= vocab) {
                return Err(ApiError::validation(format!(
                    "input {i}: token id {t} is not in the model's vocabulary of {vocab}"
                )));
            }
        }
        let max = self.enc.max_seq_length;
        Ok(ids
            .into_iter()
            .map(|mut s| {
                s.truncate(max);
                s
            })
            .collect())
    }
}

/// The router with every route and the auth/metrics layer.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics_text))
        .route("/search", post(search))
        .route("/v1/embeddings", post(openai_embeddings))
        .route("/embeddings", post(openai_embeddings))
        .route("/embed", post(tei_embed))
        .route("/rerank", post(rerank))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "wrong method for this route",
            )
        })
        .layer(axum::middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// Authentication, then metrics (route, status, latency) for every request.
async fn observe(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let t = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = match &app.cfg.api_key {
        Some(key) if route != "/health" && !authorized(req.headers(), key) => {
            let e = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key (Authorization: Bearer KEY)",
            );
            let openai = route.ends_with("embeddings");
            if openai { e.openai() } else { e }.into_response()
        }
        _ => next.run(req).await,
    };
    app.metrics
        .requests
        .with_label_values(&[route.as_str(), resp.status().as_str()])
        .inc();
    app.metrics
        .latency
        .with_label_values(&[route.as_str()])
        .observe(t.elapsed().as_secs_f64());
    resp
}

fn authorized(headers: &HeaderMap, key: &str) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| k.trim() == key)
}

/// Reads a body within the size limit (413) and the read timeout (408).
async fn read_body(app: &App, body: Body) -> std::result::Result<Bytes, ApiError> {
    let limit = app.cfg.payload_limit;
    match tokio::time::timeout(app.cfg.read_timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {:?}", app.cfg.read_timeout),
        )),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.to_string().contains("length limit"))
                || e.to_string().contains("length limit");
            Err(if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is over the {limit}-byte limit (--payload-limit)"),
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
            })
        }
        Ok(Ok(b)) => Ok(b),
    }
}

/// Reads and parses a JSON body.
async fn json_body<T: serde::de::DeserializeOwned>(
    app: &App,
    body: Body,
) -> std::result::Result<T, ApiError> {
    let bytes = read_body(app, body).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::validation(format!("bad request body: {e}")))
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let h = Health {
        ok: app.is_ready(),
        ready: app.is_ready(),
        passages: app.passages,
        model: app.cfg.model_name.clone(),
        bf16: app.enc.model.is_bf16(),
    };
    let status = if h.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(h)).into_response()
}

async fn info(State(app): State<Arc<App>>) -> Json<Info> {
    Json(Info {
        model_id: app.cfg.model_name.clone(),
        dimension: app.enc.dim(),
        max_input_length: app.enc.max_seq_length,
        max_batch_tokens: app.cfg.batch.max_batch_tokens,
        max_batch_requests: app.cfg.batch.max_batch_requests,
        max_concurrent_requests: app.cfg.batch.max_concurrent_requests,
        max_client_batch_size: app.cfg.max_client_batch_size,
        payload_limit: app.cfg.payload_limit,
        passages: app.passages,
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        app.metrics.render(),
    )
        .into_response()
}

async fn search(
    State(app): State<Arc<App>>,
    body: Body,
) -> std::result::Result<Json<SearchResponse>, ApiError> {
    let t = Instant::now();
    let req: SearchRequest = json_body(&app, body).await?;
    let Some(index) = app.index.get() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the corpus is still being embedded; retry shortly",
        ));
    };
    if req.query.trim().is_empty() {
        return Err(ApiError::validation("`query` is empty"));
    }
    if req.k == 0 || req.k > app.cfg.max_k {
        return Err(ApiError::validation(format!(
            "`k` must be between 1 and {}",
            app.cfg.max_k
        )));
    }
    let candidates = match &req.scope {
        Some(s) => {
            let c = index.searcher.scopes.scope(s);
            if c.is_empty() {
                return Err(ApiError::validation(format!("unknown scope `{s}`")));
            }
            c
        }
        None => index.searcher.scopes.all(),
    };
    let ids = app.tokenize(&[req.query.as_str()], true)?;
    let q = app.embed(ids).await?;
    let hits = index
        .searcher
        .top(&q[0], candidates, Some(req.k))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("search: {e}")))?;
    Ok(Json(SearchResponse {
        hits: hits
            .iter()
            .map(|h| {
                let p = &index.passages[h.passage];
                SearchHit {
                    id: p.id.clone(),
                    score: h.score,
                    text: p.text.clone(),
                    scope: p.scope.clone(),
                }
            })
            .collect(),
        took_ms: t.elapsed().as_secs_f64() * 1e3,
    }))
}

async fn openai_embeddings(State(app): State<Arc<App>>, body: Body) -> Response {
    match openai_inner(&app, body).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => e.openai().into_response(),
    }
}

async fn openai_inner(app: &App, body: Body) -> std::result::Result<EmbeddingsResponse, ApiError> {
    let req: EmbeddingsRequest = json_body(app, body).await?;
    if let Some(d) = req.dimensions.filter(|&d| d != app.enc.dim()) {
        return Err(ApiError::validation(format!(
            "`dimensions` {d}: this model gives {} (no truncation of vectors)",
            app.enc.dim()
        )));
    }
    let ids = match req.input {
        EmbeddingInput::One(s) => app.tokenize(&[s.as_str()], app.cfg.truncate)?,
        EmbeddingInput::Many(v) => {
            let refs: Vec<&str> = v.iter().map(String::as_str).collect();
            app.tokenize(&refs, app.cfg.truncate)?
        }
        EmbeddingInput::Ids(v) => app.check_ids(vec![v])?,
        EmbeddingInput::ManyIds(v) => app.check_ids(v)?,
    };
    let tokens = ids.iter().map(Vec::len).sum();
    let vecs = app.embed(ids).await?;
    let b64 = req.encoding_format.unwrap_or_default() == EncodingFormat::Base64;
    Ok(EmbeddingsResponse {
        object: "list",
        data: vecs
            .into_iter()
            .enumerate()
            .map(|(index, v)| EmbeddingData {
                object: "embedding",
                embedding: if b64 {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    EmbeddingValue::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    EmbeddingValue::Float(v)
                },
                index,
            })
            .collect(),
        model: req.model.unwrap_or_else(|| app.cfg.model_name.clone()),
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    })
}

fn l2_normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

async fn tei_embed(
    State(app): State<Arc<App>>,
    body: Body,
) -> std::result::Result<Json<Vec<Vec<f32>>>, ApiError> {
    let req: EmbedRequest = json_body(&app, body).await?;
    let texts: Vec<String> = match req.inputs {
        TeiInputs::One(s) => vec![s],
        TeiInputs::Many(v) => v,
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = app.tokenize(&refs, req.truncate.unwrap_or(app.cfg.truncate))?;
    let mut vecs = app.embed(ids).await?;
    if req.normalize.unwrap_or(true) {
        vecs.iter_mut().for_each(|v| l2_normalize(v));
    }
    Ok(Json(vecs))
}

async fn rerank(
    State(app): State<Arc<App>>,
    body: Body,
) -> std::result::Result<Json<Vec<RerankHit>>, ApiError> {
    let req: RerankRequest = json_body(&app, body).await?;
    if req.query.trim().is_empty() {
        return Err(ApiError::validation("`query` is empty"));
    }
    let mut all: Vec<&str> = vec![req.query.as_str()];
    all.extend(req.texts.iter().map(String::as_str));
    if req.texts.is_empty() {
        return Err(ApiError::validation("`texts` is empty"));
    }
    let ids = app.tokenize(&all, req.truncate.unwrap_or(app.cfg.truncate))?;
    let mut vecs = app.embed(ids).await?;
    vecs.iter_mut().for_each(|v| l2_normalize(v));
    let mut hits: Vec<RerankHit> = vecs[1..]
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let cos = dot(&vecs[0], v);
            RerankHit {
                index,
                // Cosine in [-1, 1]; without raw scores mapped to [0, 1] as a relevance.
                score: if req.raw_scores.unwrap_or(false) {
                    cos
                } else {
                    (cos + 1.0) / 2.0
                },
                text: req
                    .return_text
                    .unwrap_or(false)
                    .then(|| req.texts[index].clone()),
            }
        })
        .collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    Ok(Json(hits))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Where the corpus comes from and how the server runs: what `uae serve` does.
pub struct Deployment {
    pub addr: String,
    /// The model folder (its files key the embedding cache).
    pub model_dir: std::path::PathBuf,
    pub passages: Vec<Passage>,
    pub cache_dir: std::path::PathBuf,
    /// Threads answering connections.
    pub workers: usize,
}

/// Binds `d.addr`, serves at once (searches answer 503), embeds the corpus (from the
/// cache when it can), calls `on_ready` with the bound address, and serves until the
/// process ends.
pub fn run(
    enc: Encoder,
    d: Deployment,
    cfg: ServeConfig,
    progress: &(dyn uae_core::Progress + Send),
    on_ready: impl FnOnce(&str),
) -> std::result::Result<(), RunError> {
    let read_timeout = cfg.read_timeout;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(d.workers.max(1))
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let (listener, app) = rt.block_on(async {
        let listener = Listener::bind(&d.addr).await?;
        let app = App::new(enc, d.passages.len(), cfg);
        Ok::<_, Error>((listener, app))
    })?;
    let addr = listener.addr().to_string();
    tracing::info!(
        addr,
        passages = d.passages.len(),
        "bound; embedding the corpus"
    );
    let server = rt.spawn(listener.serve(router(app.clone()), read_timeout));
    std::fs::create_dir_all(&d.cache_dir)
        .map_err(uae_core::Error::io(&d.cache_dir))
        .map_err(uae_search::Error::from)?;
    let vecs = uae_search::cached_passage_embeddings(
        "corpus",
        app.encoder(),
        &d.model_dir,
        &d.passages,
        &d.cache_dir,
        progress,
    )?;
    app.set_corpus(d.passages, &vecs)?;
    on_ready(&addr);
    rt.block_on(server)
        .map_err(|e| RunError::Runtime(std::io::Error::other(e)))?;
    Ok(())
}

/// Why [`run`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Serve(#[from] Error),
    #[error(transparent)]
    Search(#[from] uae_search::Error),
}

/// A bound listener; [`Listener::addr`] is the actual address (port 0 resolved).
pub struct Listener {
    listener: tokio::net::TcpListener,
    addr: String,
}

impl Listener {
    pub async fn bind(addr: &str) -> Result<Listener> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen {
                addr: addr.into(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| addr.to_string());
        Ok(Listener { listener, addr })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Serves connections until the process ends: each on its own task, headers
    /// within `header_timeout` or the connection is closed.
    pub async fn serve(self, router: Router, header_timeout: Duration) {
        use hyper_util::rt::{TokioIo, TokioTimer};
        loop {
            let (stream, _) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let svc = hyper_util::service::TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(TokioTimer::new())
                    .header_read_timeout(header_timeout);
                if let Err(e) = b.serve_connection(TokioIo::new(stream), svc).await {
                    tracing::debug!("connection: {e}");
                }
            });
        }
    }
}
