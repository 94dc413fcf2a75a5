//! `uae bench serve`: the server in this process on a loopback port, driven by a
//! bounded load (a fixed number of requests at each concurrency): latency
//! percentiles and throughput for `/v1/embeddings` (single short queries, and
//! batches of 32 passages of a fixed token length) and `/search`.

use crate::{Error, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uae_data::Qasper;
use uae_eval::percentile;
use uae_serve::{App, Listener, ServeConfig};

/// What the load looks like, and the server's settings.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ServeBench {
    /// The bi-encoder folder.
    #[cfg_attr(feature = "cli", arg(long, default_value = uae_search::DEFAULT_ENCODER))]
    pub model: PathBuf,
    /// Test-split passages in the searched corpus (>= 1; the first ones).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <ServeBench as Default>::default().passages, value_parser = uae_core::flags::count()))]
    pub passages: usize,
    /// Requests per row (batch rows send a quarter as many) (1-100000).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <ServeBench as Default>::default().requests, value_parser = uae_core::flags::count_in(1, 100_000)))]
    pub requests: usize,
    /// Concurrency levels, comma separated (each 1-1024).
    #[cfg_attr(feature = "cli", arg(long, default_values_t = <ServeBench as Default>::default().concurrency, value_delimiter = ',', value_parser = uae_core::flags::count_in(1, 1024)))]
    pub concurrency: Vec<usize>,
    /// Tokens per passage in the batch rows (2-512).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <ServeBench as Default>::default().tokens, value_parser = uae_core::flags::count_in(2, 512)))]
    pub tokens: usize,
    /// Passages per batch request (1-512).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = <ServeBench as Default>::default().batch, value_parser = uae_core::flags::count_in(1, 512)))]
    pub batch: usize,
    /// The server's settings: `uae serve`'s flags (its --api-key is not used: the
    /// bench's server is its own, on loopback).
    #[cfg_attr(feature = "cli", command(flatten))]
    pub config: ServeConfig,
}

impl Default for ServeBench {
    fn default() -> Self {
        ServeBench {
            model: PathBuf::from(uae_search::DEFAULT_ENCODER),
            passages: 2000,
            requests: 400,
            concurrency: vec![1, 8, 32, 64],
            tokens: 128,
            batch: 32,
            config: ServeConfig::default(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ServeRow {
    pub route: &'static str,
    pub load: &'static str,
    pub concurrency: usize,
    pub requests: usize,
    pub ok: usize,
    pub seconds: f64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Embedded tokens per second (batch rows).
    pub tokens_per_s: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ServeReport {
    pub bench: &'static str,
    pub model: String,
    pub threads: usize,
    pub passages: usize,
    /// Offline throughput of the same batches without HTTP (the bar for batching).
    pub offline_tokens_per_s: f64,
    pub rows: Vec<ServeRow>,
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One POST; (status, latency ms).
async fn post(client: &HttpClient, url: &str, body: Bytes) -> (u16, f64) {
    let t = Instant::now();
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("a static request shape; this is a bug");
    let status = match client.request(req).await {
        Ok(resp) => {
            let s = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            s
        }
        Err(_) => 0,
    };
    (status, t.elapsed().as_secs_f64() * 1e3)
}

/// `requests` POSTs of `bodies` (cycled) with `concurrency` in flight.
async fn drive(
    client: &HttpClient,
    url: &str,
    bodies: &Arc<Vec<Bytes>>,
    requests: usize,
    concurrency: usize,
) -> (f64, Vec<f64>, usize) {
    let t = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, bodies, next) = (
            client.clone(),
            url.to_string(),
            bodies.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= requests {
                    break out;
                }
                out.push(post(&client, &url, bodies[i % bodies.len()].clone()).await);
            }
        }));
    }
    let mut lat = Vec::new();
    let mut ok = 0;
    for task in tasks {
        for (s, ms) in task.await.unwrap_or_default() {
            ok += (s == 200) as usize;
            lat.push(ms);
        }
    }
    (t.elapsed().as_secs_f64(), lat, ok)
}

pub fn serve(b: &ServeBench, q: &Qasper) -> Result<ServeReport> {
    if b.requests == 0
        || b.tokens < 2
        || b.batch == 0
        || b.passages == 0
        || b.concurrency.contains(&0)
    {
        return Err(Error::Invalid {
            what: "bench serve",
            message: "--requests, --batch, --passages, --concurrency >= 1 and --tokens >= 2".into(),
        });
    }
    let enc = uae_search::load_encoder(&b.model, false)?;
    let passages: Vec<_> = q.passages().into_iter().take(b.passages).collect();
    let questions: Vec<String> = q
        .questions
        .iter()
        .map(|x| x.text.clone())
        .take(200)
        .collect();
    // Batches of passages cut to exactly `tokens` ids (sent as token ids).
    let cut = crate::speed::encoder_sequences(&enc, &passages, b.tokens, 4 * b.batch)?;
    if cut.len() < b.batch {
        return Err(Error::Invalid {
            what: "bench serve",
            message: format!("only {} passages have {} tokens", cut.len(), b.tokens),
        });
    }
    let offline = offline_tokens_per_s(&enc, &cut, b.batch)?;
    let vecs = uae_search::embed_passages(
        &enc,
        &passages,
        uae_encoder::BatchOptions::default(),
        "corpus",
        &uae_core::NoProgress,
    )?;
    let config = ServeConfig {
        api_key: None,
        ..b.config.clone()
    };
    let app = App::new(enc, passages.len(), config);
    app.set_corpus(passages, &vecs)
        .map_err(|e| Error::Invalid {
            what: "bench serve",
            message: e.to_string(),
        })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::ThreadPool(e.to_string()))?;
    let rows = rt.block_on(load(app, b, &questions, &cut))?;
    Ok(ServeReport {
        bench: "serve",
        model: b.model.display().to_string(),
        threads: rayon::current_num_threads(),
        passages: vecs.len(),
        offline_tokens_per_s: offline,
        rows,
    })
}

/// Embedding throughput of `cut`'s batches through the encoder, in this process (the
/// bar the server's batching is held to), tokens/s.
fn offline_tokens_per_s(enc: &uae_encoder::Encoder, cut: &[Vec<u32>], batch: usize) -> Result<f64> {
    let t = Instant::now();
    let reps = 3;
    let tokens: usize = cut.iter().map(Vec::len).sum();
    for _ in 0..reps {
        for chunk in cut.chunks(batch) {
            std::hint::black_box(enc.embed_ids(
                chunk,
                uae_encoder::BatchOptions {
                    max_tokens: usize::MAX,
                    max_batch: batch,
                },
                &mut |_| {},
            )?);
        }
    }
    Ok((reps * tokens) as f64 / t.elapsed().as_secs_f64())
}

/// The server on a loopback port, then every (route, load, concurrency) row.
async fn load(
    app: std::sync::Arc<App>,
    b: &ServeBench,
    questions: &[String],
    cut: &[Vec<u32>],
) -> Result<Vec<ServeRow>> {
    let listener = Listener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::Invalid {
            what: "bench serve",
            message: e.to_string(),
        })?;
    let base = format!("http://{}", listener.addr());
    tokio::spawn(listener.serve(
        uae_serve::router(app),
        Duration::from_secs(10),
        std::future::pending::<()>(),
        Duration::from_secs(1),
    ));
    let client: HttpClient = Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http();
    let single: Vec<Bytes> = questions
        .iter()
        .map(|t| Bytes::from(serde_json::json!({ "input": t }).to_string()))
        .collect();
    let batches: Vec<Bytes> = cut
        .chunks(b.batch)
        .filter(|c| c.len() == b.batch)
        .map(|c| Bytes::from(serde_json::json!({ "input": c }).to_string()))
        .collect();
    let searches: Vec<Bytes> = questions
        .iter()
        .map(|t| Bytes::from(serde_json::json!({ "query": t, "k": 10 }).to_string()))
        .collect();
    let mut rows = Vec::new();
    for (route, load, bodies, per_request_tokens) in [
        ("/v1/embeddings", "one query", single, None),
        (
            "/v1/embeddings",
            "batch of passages",
            batches,
            Some(b.batch * b.tokens),
        ),
        ("/search", "one query", searches, None),
    ] {
        let bodies = Arc::new(bodies);
        let url = format!("{base}{route}");
        // Warm-up: one request per body kind.
        let _ = post(&client, &url, bodies[0].clone()).await;
        for &c in &b.concurrency {
            let n = if per_request_tokens.is_some() {
                (b.requests / 4).max(c)
            } else {
                b.requests
            };
            let (sec, lat, ok) = drive(&client, &url, &bodies, n, c).await;
            rows.push(ServeRow {
                route,
                load,
                concurrency: c,
                requests: n,
                ok,
                seconds: sec,
                // Answered requests only: a refused one (429/503) is not served.
                requests_per_s: ok as f64 / sec,
                p50_ms: percentile(&lat, 50.0),
                p95_ms: percentile(&lat, 95.0),
                p99_ms: percentile(&lat, 99.0),
                tokens_per_s: per_request_tokens.map(|t| (ok * t) as f64 / sec),
            });
        }
    }
    Ok::<_, Error>(rows)
}
