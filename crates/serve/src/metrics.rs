//! Prometheus metrics of the service (`GET /metrics`).

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

/// Every metric, registered in one registry.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub queue: IntGauge,
    pub batch_requests: Histogram,
    pub batch_tokens: Histogram,
    /// Requests answered 503 for waiting longer than `--max-queue-wait-ms`.
    pub expired: IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("uae_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )
        .expect("static metric definition; this is a bug");
        let latency = HistogramVec::new(
            HistogramOpts::new("uae_request_duration_seconds", "Request latency by route").buckets(
                vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
                ],
            ),
            &["route"],
        )
        .expect("static metric definition; this is a bug");
        let queue = IntGauge::new("uae_queue_size", "Requests waiting for the encoder")
            .expect("static metric definition; this is a bug");
        let batch_requests = Histogram::with_opts(
            HistogramOpts::new("uae_batch_requests", "Requests per model pass")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        )
        .expect("static metric definition; this is a bug");
        let batch_tokens = Histogram::with_opts(
            HistogramOpts::new("uae_batch_tokens", "Tokens per model pass")
                .buckets(vec![16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0]),
        )
        .expect("static metric definition; this is a bug");
        let expired = IntCounter::new(
            "uae_queue_expired_total",
            "Requests that waited longer than --max-queue-wait-ms (answered 503)",
        )
        .expect("static metric definition; this is a bug");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(queue.clone()),
            Box::new(batch_requests.clone()),
            Box::new(batch_tokens.clone()),
            Box::new(expired.clone()),
        ] {
            registry
                .register(m)
                .expect("metric names are distinct; this is a bug");
        }
        Metrics {
            registry,
            requests,
            latency,
            queue,
            batch_requests,
            batch_tokens,
            expired,
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding to memory cannot fail; this is a bug");
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
