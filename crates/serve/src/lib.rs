//! `uae serve`: the query-time half of UAE as an HTTP service (axum on tokio). The
//! corpus is embedded once at start (searches answer 503 until then), then each
//! search is one encoder pass and an exact inner-product scan: no LLM at query time.
//!
//! Routes ([`api`] holds every request and response type):
//! - `POST /search`: [`api::SearchRequest`] -> [`api::SearchResponse`];
//! - `POST /v1/embeddings`, `/embeddings`: OpenAI's embeddings API (float or base64);
//! - `POST /embed`, `POST /rerank`, `GET /info`: text-embeddings-inference's shapes;
//! - `GET /health`, `GET /metrics` (Prometheus text);
//! - `GET /` and `/api/...`: the explorer page and its JSON routes ([`explore`]);
//!   with a base model served beside (`--against`), its `/search` at
//!   `/against/search`.
//!
//! Every request's texts go through one bounded batching queue ([`batcher`]): a full
//! queue answers 429, a request that waited in it too long 503 (both with
//! `Retry-After`), a body over the limit 413 and a body that stalls 408 (both closing
//! the connection), bad input 422, a missing or wrong API key 401. Connections are
//! served concurrently, headers must arrive within a timeout, so no client can hold
//! up another. SIGTERM or SIGINT drains: no new connection is taken, `/health`
//! answers 503, requests in flight finish (within the shutdown timeout), then the
//! process exits 0.

pub mod api;
pub mod batcher;
pub mod explore;
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
use batcher::{BatchLimits, Batcher, JobError, Refused};
use metrics::Metrics;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
#[cfg(feature = "cli")]
use uae_core::flags;
use uae_core::Passage;
use uae_encoder::Encoder;
use uae_eval::lexical::LEXICAL_DEPTH;
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

/// Server limits and settings. With the `cli` feature they are `uae serve`'s flags:
/// each field's doc is its `--help`, every default is [`ServeConfig::default`]'s.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ServeConfig {
    /// The model's name in responses and `/info` (`uae serve --served-model-name`).
    #[cfg_attr(feature = "cli", arg(skip = d().model_name))]
    pub model_name: String,
    /// Largest `k` a search may ask for (>= 1).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().max_k, value_parser = flags::count()))]
    pub max_k: usize,
    /// Largest request body in bytes (>= 1; 413 beyond; TEI's default).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().payload_limit, value_parser = flags::count()))]
    pub payload_limit: usize,
    /// Most inputs in one request (>= 1; 422 beyond).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().max_client_batch_size, value_parser = flags::count()))]
    pub max_client_batch_size: usize,
    #[cfg_attr(feature = "cli", command(flatten))]
    pub batch: BatchLimits,
    /// Cut inputs longer than the model's limit (else 422).
    #[cfg_attr(feature = "cli", arg(long = "no-truncate", action = clap::ArgAction::SetFalse, help = "Refuse inputs longer than the model's limit (422) instead of cutting them"))]
    pub truncate: bool,
    /// Require `Authorization: Bearer KEY` on every route but /health (401 otherwise).
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "UAE_API_KEY", hide_env_values = true)
    )]
    pub api_key: Option<String>,
    /// Milliseconds a client has to send a request's headers (then the connection
    /// closes) and its body (then 408) (1-3600000).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().read_timeout_ms, value_parser = flags::u64_in(1, 3_600_000)))]
    pub read_timeout_ms: u64,
    /// Seconds requests in flight may take to finish after SIGTERM/SIGINT (0-3600);
    /// meanwhile /health answers 503 and new work 503, then the server exits 0.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().shutdown_timeout, value_parser = flags::u64_in(0, 3_600)))]
    pub shutdown_timeout: u64,
    /// The model's calibration (`calibration.json` in its folder): dense hits then
    /// carry expected utility and p(helps), and searches may filter on them.
    #[cfg_attr(feature = "cli", arg(skip))]
    pub calibration: Option<uae_eval::calibrate::Calibrator>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            model_name: "uae".into(),
            max_k: 1000,
            payload_limit: 2_000_000,
            max_client_batch_size: 512,
            batch: BatchLimits::default(),
            truncate: true,
            api_key: None,
            read_timeout_ms: 10_000,
            shutdown_timeout: 30,
            calibration: None,
        }
    }
}

impl ServeConfig {
    /// [`ServeConfig::read_timeout_ms`] as a duration.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }

    /// [`ServeConfig::shutdown_timeout`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout)
    }
}

/// The defaults, for the flags' `default_value_t`.
#[cfg(feature = "cli")]
fn d() -> ServeConfig {
    ServeConfig::default()
}

struct Index {
    passages: Vec<Passage>,
    searcher: DenseSearcher,
    /// BM25 per scope and corpus-wide, for `"mode": "bm25"` and `"hybrid"`: built by
    /// the first such search, so a dense-only server never holds its postings.
    bm25: OnceLock<uae_index::ScopedBm25>,
}

impl Index {
    fn bm25(&self) -> &uae_index::ScopedBm25 {
        self.bm25.get_or_init(|| {
            uae_index::ScopedBm25::with_global(&self.passages, uae_index::Bm25Params::default())
        })
    }
}

/// How deep each ranking goes before a hybrid search fuses them (at least `k`).
const FUSION_DEPTH: usize = 100;

/// The shared state of every handler.
pub struct App {
    enc: Arc<Encoder>,
    batcher: Batcher,
    index: OnceLock<Index>,
    passages: usize,
    cfg: ServeConfig,
    metrics: Arc<Metrics>,
    /// The special tokens added around client token ids (BERT: [CLS], [SEP]).
    specials: (Vec<u32>, Vec<u32>),
    /// Set on SIGTERM/SIGINT: `/health` answers 503 so balancers stop sending, and
    /// new work is refused (503) while the requests in flight finish.
    draining: AtomicBool,
    /// Requests being answered (not counting `/health` and `/metrics`).
    in_flight: std::sync::atomic::AtomicUsize,
    /// Woken each time a request finishes, for the drain to check `in_flight`.
    finished: tokio::sync::Notify,
}

impl App {
    /// A service over a corpus of `passages` (0 for embeddings only); the corpus
    /// is added with [`App::set_corpus`] once embedded.
    pub fn new(enc: Encoder, passages: usize, cfg: ServeConfig) -> Arc<App> {
        let enc = Arc::new(enc);
        let metrics = Arc::new(Metrics::new());
        let batcher = Batcher::start(enc.clone(), cfg.batch, metrics.clone());
        let specials = enc.special_tokens().unwrap_or_else(|e| {
            tracing::warn!(
                "finding the tokenizer's special tokens: {e}; token-id input is used as given"
            );
            (Vec::new(), Vec::new())
        });
        Arc::new(App {
            enc,
            batcher,
            index: OnceLock::new(),
            passages,
            cfg,
            metrics,
            specials,
            draining: AtomicBool::new(false),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            finished: tokio::sync::Notify::new(),
        })
    }

    /// Marks the server as draining (`/health` answers 503, new work 503).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Waits until no request is in flight (call after [`App::start_draining`]).
    pub async fn drained(&self) {
        loop {
            let notified = self.finished.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
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
        let _ = self.index.set(Index {
            passages,
            searcher,
            bm25: OnceLock::new(),
        });
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        self.index.get().is_some()
    }

    /// Tokenises texts (cut to the model's limit, or refused without truncation); the
    /// caller has checked their number ([`App::check_count`]).
    fn tokenize(
        &self,
        texts: &[&str],
        truncate: bool,
    ) -> std::result::Result<Vec<Vec<u32>>, ApiError> {
        if texts.is_empty() {
            return Err(ApiError::validation("the input is empty"));
        }
        // Blank text embeds to the special tokens alone: a vector that means nothing
        // (and `/search` refuses a blank query).
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(ApiError::validation(format!(
                "input {i} is empty or only whitespace"
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

    /// At most `--max-client-batch-size` inputs per request.
    fn check_count(&self, n: usize) -> std::result::Result<(), ApiError> {
        if n > self.cfg.max_client_batch_size {
            return Err(ApiError::validation(format!(
                "{n} inputs; at most {} per request",
                self.cfg.max_client_batch_size
            )));
        }
        Ok(())
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
            .map_err(|e| match e {
                JobError::Expired(waited) => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "overloaded: the request waited {} ms for the encoder (--max-queue-wait-ms {}); retry later",
                        waited.as_millis(),
                        self.cfg.batch.max_queue_wait_ms
                    ),
                ),
                JobError::Failed(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e),
            })
    }

    /// Token ids given directly (OpenAI's token-array input): each must be a known id
    /// of the model's vocabulary; the model's special tokens are added where missing
    /// (as tokenising the text would), and the ids cut to its length limit.
    fn check_ids(&self, ids: Vec<Vec<u32>>) -> std::result::Result<Vec<Vec<u32>>, ApiError> {
        if ids.is_empty() || ids.iter().any(Vec::is_empty) {
            return Err(ApiError::validation("the input is empty"));
        }
        self.check_count(ids.len())?;
        let vocab = self.enc.vocab_size() as u32;
        for (i, seq) in ids.iter().enumerate() {
            if let Some(t) = seq.iter().find(|&&t| t >= vocab) {
                return Err(ApiError::validation(format!(
                    "input {i}: token id {t} is not in the model's vocabulary of {vocab}"
                )));
            }
        }
        Ok(ids
            .iter()
            .map(|s| self.enc.with_special_tokens(s, &self.specials))
            .collect())
    }
}

/// The router with every route and the auth/metrics layer; the explorer offers the
/// served model's search.
pub fn router(app: Arc<App>) -> Router {
    let explorer = explore::Explorer {
        model: Some(app.cfg.model_name.clone()),
        ..Default::default()
    };
    router_with(app, Some(Arc::new(explorer)))
}

/// [`router`] with the explorer's page and API over `explorer` (none: no page).
pub fn router_with(app: Arc<App>, explorer: Option<Arc<explore::Explorer>>) -> Router {
    let routes = Router::new()
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics_text))
        .route("/search", post(search))
        .route("/v1/embeddings", post(openai_embeddings))
        .route("/embeddings", post(openai_embeddings))
        .route("/embed", post(tei_embed))
        .route("/rerank", post(rerank));
    let routes = match explorer {
        Some(x) => routes.merge(explore::routes(x)),
        None => routes,
    };
    routes
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
    let openai = route.ends_with("embeddings");
    let work = route != "/health" && route != "/metrics";
    let resp = match &app.cfg.api_key {
        Some(key) if route != "/health" && !authorized(req.headers(), key) => {
            let e = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key (Authorization: Bearer KEY)",
            );
            let mut r = if openai { e.openai() } else { e }.into_response();
            // A browser opening the explorer asks for the key (as the password).
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"uae\", charset=\"UTF-8\""),
            );
            r
        }
        _ if work && app.draining.load(Ordering::SeqCst) => {
            let e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down; send the request elsewhere",
            );
            let mut r = if openai { e.openai() } else { e }.into_response();
            r.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            r
        }
        _ if work => {
            let _guard = InFlight::enter(&app);
            next.run(req).await
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

/// Counts a request in flight for as long as it lives (also when its client goes away
/// and the handler is dropped).
struct InFlight<'a>(&'a App);

impl<'a> InFlight<'a> {
    fn enter(app: &'a App) -> InFlight<'a> {
        app.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(app)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.finished.notify_waiters();
    }
}

/// `Authorization: Bearer KEY`, the scheme name in any case (RFC 9110 11.1).
/// `Authorization: Bearer KEY`, or HTTP Basic with KEY as the password (what a
/// browser sends for the explorer page once asked; any user name).
fn authorized(headers: &HeaderMap, key: &str) -> bool {
    let Some((scheme, value)) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once(' '))
    else {
        return false;
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        return value.trim() == key;
    }
    scheme.eq_ignore_ascii_case("basic")
        && base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|pair| pair.split_once(':').map(|(_, k)| k == key))
            .unwrap_or(false)
}

/// Reads a body within the size limit (413) and the read timeout (408).
async fn read_body(app: &App, body: Body) -> std::result::Result<Bytes, ApiError> {
    let limit = app.cfg.payload_limit;
    match tokio::time::timeout(app.cfg.read_timeout(), axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {:?}",
                app.cfg.read_timeout()
            ),
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
    let draining = app.draining.load(Ordering::SeqCst);
    let h = Health {
        ok: app.is_ready() && !draining,
        ready: app.is_ready(),
        draining,
        passages: app.passages,
        model: app.cfg.model_name.clone(),
        bf16: app.enc.model.is_bf16(),
    };
    let status = if h.ok {
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
    let fusion = fusion_of(&req)?;
    let calibration = calibration_for(&app, &req)?;
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
    let depth = match req.mode {
        SearchMode::Dense => req.k,
        _ => req.k.max(FUSION_DEPTH),
    };
    let (dense, qvec) = if req.mode == SearchMode::Bm25 {
        (Vec::new(), Vec::new())
    } else {
        let ids = app.tokenize(&[req.query.as_str()], true)?;
        let mut q = app.embed(ids).await?;
        let qvec = q.pop().unwrap_or_default();
        let hits = index
            .searcher
            .top(&qvec, candidates, Some(depth))
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("search: {e}"))
            })?;
        (hits, qvec)
    };
    let lexical = || {
        index.bm25().search(
            &uae_core::Query {
                id: String::new(),
                text: req.query.clone(),
                scope: req.scope.clone(),
                gold: Vec::new(),
            },
            Some(depth.max(LEXICAL_DEPTH)),
        )
    };
    // A calibration whose p(helps) reads each hit's BM25 rank gets it in dense mode
    // too.
    let reads_lexical =
        req.mode != SearchMode::Bm25 && calibration.is_some_and(|c| c.reads_lexical());
    let bm25_hits = (req.mode != SearchMode::Dense || reads_lexical).then(lexical);
    let ranks = match &bm25_hits {
        Some(l) if reads_lexical => Some(uae_eval::lexical::rank_map(l, LEXICAL_DEPTH)),
        _ => None,
    };
    let mut hits = match req.mode {
        SearchMode::Dense => dense,
        SearchMode::Bm25 => bm25_hits.unwrap_or_default(),
        SearchMode::Hybrid => fusion.fuse(&dense, bm25_hits.as_deref().unwrap_or_default(), None),
    };
    hits.truncate(req.k);
    // The calibration maps the model's cosine of the query and the passage: a fused
    // hit is valued by its own cosine, not by its fused score.
    let cosines: Vec<f32> = match req.mode {
        SearchMode::Dense => hits.iter().map(|h| h.score).collect(),
        SearchMode::Hybrid => hits
            .iter()
            .map(|h| uae_index::dot(&qvec, index.searcher.index.vector(h.passage)))
            .collect(),
        SearchMode::Bm25 => Vec::new(),
    };
    let hits = value_hits(
        &app,
        index,
        &req,
        hits,
        &cosines,
        calibration.map(|c| (c.for_query(&qvec), ranks.as_ref())),
    )?;
    Ok(Json(SearchResponse {
        hits: hits
            .iter()
            .map(|(h, v)| {
                let p = &index.passages[h.passage];
                SearchHit {
                    id: p.id.clone(),
                    score: h.score,
                    text: p.text.clone(),
                    scope: p.scope.clone(),
                    expected_utility: v.map(|(u, _)| u),
                    p_helps: v.map(|(_, p)| p),
                }
            })
            .collect(),
        took_ms: t.elapsed().as_secs_f64() * 1e3,
    }))
}

/// How a hybrid search fuses its rankings: the request's `fusion` with its one
/// constant. A constant of the other fusion, or any of them outside hybrid mode,
/// is refused rather than ignored.
fn fusion_of(req: &SearchRequest) -> std::result::Result<uae_index::Fusion, ApiError> {
    use uae_search::FusionKind;
    let given = req.fusion.is_some() || req.rrf_k.is_some() || req.dense_weight.is_some();
    if given && req.mode != SearchMode::Hybrid {
        return Err(ApiError::validation(
            "`fusion`, `rrf_k` and `dense_weight` apply to `\"mode\": \"hybrid\"` only",
        ));
    }
    let kind = req.fusion.unwrap_or_default();
    match (kind, req.rrf_k, req.dense_weight) {
        (FusionKind::Rrf, _, Some(_)) => Err(ApiError::validation(
            "`dense_weight` needs `\"fusion\": \"convex\"` (the default fusion, rrf, has no weight)",
        )),
        (FusionKind::Convex, Some(_), _) => Err(ApiError::validation(
            "`rrf_k` applies to `\"fusion\": \"rrf\"`, not convex",
        )),
        (_, Some(k), _) if !(k.is_finite() && k > 0.0) => Err(ApiError::validation(
            format!("`rrf_k` must be a positive number, not {k}"),
        )),
        (_, _, Some(w)) if !(0.0..=1.0).contains(&w) => Err(ApiError::validation(format!(
            "`dense_weight` must be between 0 and 1, not {w}"
        ))),
        _ => Ok(kind.with(req.rrf_k, req.dense_weight)),
    }
}

/// A hit and, with a calibration, its (expected utility, p(helps)).
type Valued = (uae_core::Hit, Option<(f64, f64)>);

/// The calibration a search's hits are valued with: the model's, in dense and hybrid
/// mode; filters by value without one (or in bm25 mode) are refused before any work.
fn calibration_for<'a>(
    app: &'a App,
    req: &SearchRequest,
) -> std::result::Result<Option<&'a uae_eval::calibrate::Calibrator>, ApiError> {
    let filtering = req.min_utility.is_some()
        || req.min_p_helps.is_some()
        || (req.max_context_tokens.is_some()
            && req.budget_order == uae_eval::select::BudgetOrder::ValuePerToken);
    match (&app.cfg.calibration, req.mode) {
        (Some(c), SearchMode::Dense | SearchMode::Hybrid) => Ok(Some(c)),
        (Some(_), _) if filtering => Err(ApiError::validation(
            "`min_utility`, `min_p_helps` and a `value_per_token` budget apply to dense and hybrid searches (the calibration maps the model's cosines; bm25 has none)",
        )),
        (None, _) if filtering => Err(ApiError::validation(
            "this model has no calibration.json: run `uae calibrate` to filter by expected utility",
        )),
        _ => Ok(None),
    }
}

/// The hits with their calibrated values, filtered by the request's `min_utility`,
/// `min_p_helps` and `max_context_tokens` ([`uae_eval::select::Selection`]).
fn value_hits(
    app: &App,
    index: &Index,
    req: &SearchRequest,
    hits: Vec<uae_core::Hit>,
    cosines: &[f32],
    calibration: Option<(
        uae_eval::calibrate::QueryCalibration,
        Option<&std::collections::HashMap<usize, usize>>,
    )>,
) -> std::result::Result<Vec<Valued>, ApiError> {
    // Each hit's value: from its cosine, and its BM25 rank where the calibration
    // reads it (`ranks`: the query's top LEXICAL_DEPTH by BM25).
    let value = |h: &uae_core::Hit, cos: f32| {
        calibration.map(|(c, ranks)| match ranks {
            Some(r) => c.predict_lexical(cos, r.get(&h.passage).copied()),
            None => c.predict(cos),
        })
    };
    let valued: Vec<Valued> = hits
        .into_iter()
        .zip(cosines.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(h, cos)| {
            let v = cos.and_then(|&c| value(&h, c));
            (h, v)
        })
        .collect();
    let selection = uae_eval::select::Selection {
        k: valued.len(),
        min_utility: req.min_utility,
        min_p_helps: req.min_p_helps,
        max_context_tokens: req.max_context_tokens,
        budget_order: req.budget_order,
    };
    if !selection.filters() {
        return Ok(valued);
    }
    // Rules that read values are refused without a calibration (calibration_for), so
    // a hit without one meets only rules that do not read it.
    let values: Vec<uae_eval::select::Value> = valued
        .iter()
        .map(|(_, v)| v.unwrap_or((f64::NEG_INFINITY, 0.0)))
        .collect();
    let lens: Vec<usize> = match req.max_context_tokens {
        Some(_) => {
            let texts: Vec<&str> = valued
                .iter()
                .map(|(h, _)| index.passages[h.passage].text.as_str())
                .collect();
            app.enc
                .token_counts(&texts)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        }
        None => Vec::new(),
    };
    let keep = selection.select(&values, |i| lens[i]);
    let mut valued: Vec<Option<Valued>> = valued.into_iter().map(Some).collect();
    Ok(keep.into_iter().filter_map(|i| valued[i].take()).collect())
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
            app.check_count(v.len())?;
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
        model: app.cfg.model_name.clone(),
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
    app.check_count(texts.len())?;
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
    if req.texts.is_empty() {
        return Err(ApiError::validation("`texts` is empty"));
    }
    // The limit is on the texts; the query rides along.
    app.check_count(req.texts.len())?;
    let mut all: Vec<&str> = vec![req.query.as_str()];
    all.extend(req.texts.iter().map(String::as_str));
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

/// The name a model folder is served under: its last path component (`/info` and
/// responses must not show the server's local paths).
pub fn model_name(dir: &std::path::Path) -> String {
    dir.components()
        .rev()
        .find_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .unwrap_or_else(|| "uae".into())
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
    /// The explorer's label folder and comparison (its search is the served model's).
    pub explorer: explore::Explorer,
    /// A second model searched over the same corpus at `/against/search`, for the
    /// explorer's side-by-side view.
    pub against: Option<Against>,
}

/// The model served beside the main one (`--against`).
pub struct Against {
    pub encoder: Encoder,
    /// Its folder (its files key the embedding cache).
    pub dir: std::path::PathBuf,
    /// Its name on the page.
    pub name: String,
}

/// Binds `d.addr`, serves at once (searches answer 503), embeds the corpus (from the
/// cache when it can), calls `on_ready` with the bound address, and serves until
/// SIGTERM or SIGINT, then drains ([`Listener::serve`]) and returns. A signal during
/// the corpus embedding ends the process (exit 0) once the drain is over: the
/// embedding cache is written in pieces, so the next start resumes it.
pub fn run(
    enc: Encoder,
    d: Deployment,
    cfg: ServeConfig,
    progress: &(dyn uae_core::Progress + Send),
    on_ready: impl FnOnce(&str),
) -> std::result::Result<(), RunError> {
    if let Some(t) = cfg.calibration.as_ref().and_then(|c| c.question.as_ref()) {
        if t.dim() != enc.dim() {
            return Err(RunError::CalibrationDim {
                model: d.model_dir,
                calibrated: t.dim(),
                model_dim: enc.dim(),
            });
        }
    }
    let read_timeout = cfg.read_timeout();
    let shutdown_timeout = cfg.shutdown_grace();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(d.workers.max(1))
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let mut explorer = d.explorer;
    let against_cfg = ServeConfig {
        calibration: None,
        model_name: d
            .against
            .as_ref()
            .map(|a| a.name.clone())
            .unwrap_or_default(),
        ..cfg.clone()
    };
    let (listener, app, against) = rt.block_on(async {
        let listener = Listener::bind(&d.addr).await?;
        let against = d
            .against
            .map(|a| (App::new(a.encoder, d.passages.len(), against_cfg), a.dir));
        if !d.passages.is_empty() {
            explorer.model = Some(cfg.model_name.clone());
            explorer.against = against.as_ref().map(|(a, _)| a.cfg.model_name.clone());
        }
        let app = App::new(enc, d.passages.len(), cfg);
        Ok::<_, Error>((listener, app, against))
    })?;
    let explorer = Arc::new(explorer);
    let addr = listener.addr().to_string();
    tracing::info!(
        addr,
        passages = d.passages.len(),
        "bound; embedding the corpus"
    );
    let apps: Vec<Arc<App>> = std::iter::once(app.clone())
        .chain(against.iter().map(|(a, _)| a.clone()))
        .collect();
    let drain = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing the requests in flight");
        for a in &apps {
            a.start_draining();
        }
        for a in &apps {
            a.drained().await;
        }
    };
    let serve_app = app.clone();
    let mut routes = router_with(serve_app.clone(), Some(explorer));
    if let Some((a, _)) = &against {
        routes = routes.nest("/against", router_with(a.clone(), None));
    }
    let server = rt.spawn(async move {
        listener
            .serve(routes, read_timeout, drain, shutdown_timeout)
            .await;
        if !serve_app.is_ready() {
            tracing::info!("stopped before the corpus was embedded");
            std::process::exit(0);
        }
    });
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
    if let Some((a, dir)) = &against {
        let v = uae_search::cached_passage_embeddings(
            "against",
            a.encoder(),
            dir,
            &d.passages,
            &d.cache_dir,
            progress,
        )?;
        a.set_corpus(d.passages.clone(), &v)?;
    }
    app.set_corpus(d.passages, &vecs)?;
    on_ready(&addr);
    rt.block_on(server)
        .map_err(|e| RunError::Runtime(std::io::Error::other(e)))?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
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
    #[error("{0}: no labelled passage to explore")]
    NothingToExplore(std::path::PathBuf),
    #[error("{model}: calibration.json's question term reads {calibrated}-dimensional query vectors, the model gives {model_dim}: recalibrate (`uae calibrate`)")]
    CalibrationDim {
        model: std::path::PathBuf,
        calibrated: usize,
        model_dim: usize,
    },
}

impl From<uae_core::Error> for RunError {
    fn from(e: uae_core::Error) -> RunError {
        RunError::Search(e.into())
    }
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

    /// Serves connections until `drain` completes: each on its own task, headers
    /// within `header_timeout` or the connection is closed. Then no connection is
    /// taken any more, each open one finishes the response it is writing and closes
    /// (idle keep-alive ones at once), for at most `shutdown_timeout`.
    pub async fn serve(
        self,
        router: Router,
        header_timeout: Duration,
        drain: impl std::future::Future<Output = ()>,
        shutdown_timeout: Duration,
    ) {
        use hyper_util::rt::{TokioIo, TokioTimer};
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(drain);
        loop {
            let (stream, _) = tokio::select! {
                c = self.listener.accept() => match c {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors, say: back off instead of spinning.
                        tracing::warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut drain => break,
            };
            let svc = hyper_util::service::TowerToHyperService::new(router.clone());
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = graceful.watch(b.serve_connection(TokioIo::new(stream), svc));
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("connection: {e}");
                }
            });
        }
        drop(self.listener);
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("drained; stopping"),
            () = tokio::time::sleep(shutdown_timeout) => {
                tracing::warn!("connections still open after the {shutdown_timeout:?} shutdown timeout; stopping anyway");
            }
        }
    }
}
