//! The batching queue: requests hand their token ids to one worker thread that owns
//! the encoder; it takes every job waiting (within a token and a request budget) and
//! embeds them in one model pass, then answers each job with its own vectors. The
//! queue is bounded: a full queue is the caller's 429, never unbounded growth.

use crate::metrics::Metrics;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uae_encoder::{BatchOptions, Encoder};

/// A pass of texts no longer than this (a question, a search query) may be cut into
/// single-query slices ([`PathChoice`]) rather than sent to the batch path.
pub const SHORT_TEXT_TOKENS: usize = 64;

/// Most padded tokens in one batch-path forward pass: a larger pass is cut into
/// length-sorted sub-batches ([`uae_encoder::plan_batches`]).
pub const PASS_PADDED_TOKENS: usize = 512;

/// Which encoder path a model pass takes, chosen by timing both on this CPU when
/// the server starts. The single-query path ([`Encoder::embed_queries_ids`]: no
/// tensors, no GEMM packing, no padding, each weight streamed once for all its
/// texts) beat the batch path's GEMMs up to 16 short queries on AVX-512 machines
/// (BENCHMARKS, "Serving"), and lost at every size on an AVX2-only Zen 1 (its small
/// kernel has no AVX2 tile): hence a measurement, not a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathChoice {
    /// A pass of at most this many tokens takes the single-query path (0: never).
    pub single_max_tokens: usize,
    /// A pass of many short texts goes through the single-query path in slices of
    /// `single_max_tokens` (it measured faster per query than one batch pass).
    pub slice_short: bool,
}

impl PathChoice {
    /// Times both paths on 1, 4 and 16 copies of a 16-token question (best of two
    /// runs each, after a warm-up: about 0.2 s on an AVX-512 core pair, 1 s on an
    /// AVX2 one). The single-query path is taken up to the largest size at which it
    /// won at every size so far.
    pub fn measure(enc: &Encoder) -> PathChoice {
        let never = PathChoice {
            single_max_tokens: 0,
            slice_short: false,
        };
        if let Err(e) = enc.prepare_query_path() {
            tracing::warn!("single-query path unavailable, batching every request: {e}");
            return never;
        }
        let probe = "What evaluation metrics did the authors use to compare the models?";
        let Ok(ids) = enc.tokenize(&[probe]) else {
            return never;
        };
        let threads = rayon::current_num_threads();
        let best = |f: &dyn Fn() -> bool| -> Option<f64> {
            let mut best = f64::INFINITY;
            for _ in 0..2 {
                let t = Instant::now();
                if !f() {
                    return None;
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            Some(best)
        };
        let mut choice = never;
        for n in [1usize, 4, 16] {
            let all: Vec<Vec<u32>> = ids.iter().cycle().take(n).cloned().collect();
            let single = || enc.embed_queries_ids(&all, threads).is_ok();
            let batch = || {
                enc.embed_ids(&all, BatchOptions::default(), &mut |_| {})
                    .is_ok()
            };
            let _ = (single(), batch());
            let (Some(ts), Some(tb)) = (best(&single), best(&batch)) else {
                return never;
            };
            tracing::debug!(n, single_ms = ts * 1e3, batch_ms = tb * 1e3, "path timing");
            if ts >= tb {
                break;
            }
            choice.single_max_tokens = all.iter().map(Vec::len).sum();
            choice.slice_short = n == 16;
        }
        tracing::info!(
            single_max_tokens = choice.single_max_tokens,
            slice_short = choice.slice_short,
            "encoder path chosen by timing"
        );
        choice
    }
}

/// Batching limits (`uae serve`'s flags with the `cli` feature).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct BatchLimits {
    /// Most tokens in one model pass across batched requests (>= 1; unpadded).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().max_batch_tokens, value_parser = uae_core::flags::count()))]
    pub max_batch_tokens: usize,
    /// Most requests in one model pass (>= 1).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().max_batch_requests, value_parser = uae_core::flags::count()))]
    pub max_batch_requests: usize,
    /// Most requests waiting for the encoder (1-100000); more get 429.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().max_concurrent_requests, value_parser = uae_core::flags::count_in(1, 100_000)))]
    pub max_concurrent_requests: usize,
    /// Milliseconds a request may wait for the encoder (1-3600000); one that waited
    /// longer gets 503 with `Retry-After` ([`JobError::Expired`]) instead of a late
    /// answer, so that latency stays bounded when more arrives than the CPU can embed.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = d().max_queue_wait_ms, value_parser = uae_core::flags::u64_in(1, 3_600_000)))]
    pub max_queue_wait_ms: u64,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_batch_tokens: 16384,
            max_batch_requests: 64,
            max_concurrent_requests: 512,
            max_queue_wait_ms: 2_000,
        }
    }
}

impl BatchLimits {
    /// [`BatchLimits::max_queue_wait_ms`] as a duration.
    pub fn max_queue_wait(&self) -> Duration {
        Duration::from_millis(self.max_queue_wait_ms)
    }
}

#[cfg(feature = "cli")]
fn d() -> BatchLimits {
    BatchLimits::default()
}

/// Why a job got no vectors.
#[derive(Debug, Clone)]
pub enum JobError {
    /// It waited longer than [`BatchLimits::max_queue_wait_ms`].
    Expired(Duration),
    /// The model pass failed.
    Failed(String),
}

/// A job's vectors, or why it has none.
pub type Answer = Result<Vec<Vec<f32>>, JobError>;
type Reply = tokio::sync::oneshot::Sender<Answer>;

struct Job {
    ids: Vec<Vec<u32>>,
    reply: Reply,
    queued: Instant,
}

/// Why a job was not taken.
#[derive(Debug)]
pub enum Refused {
    /// The queue is full (429).
    Full,
    /// The worker has stopped (a bug, or shutdown).
    Closed,
}

/// A handle to the worker: cheap to clone, safe to share.
#[derive(Clone)]
pub struct Batcher {
    tx: SyncSender<Job>,
    metrics: Arc<Metrics>,
}

impl Batcher {
    /// Starts the worker thread that owns `enc`.
    pub fn start(enc: Arc<Encoder>, limits: BatchLimits, metrics: Arc<Metrics>) -> Batcher {
        let (tx, rx) = sync_channel(limits.max_concurrent_requests.max(1));
        let m = metrics.clone();
        let paths = PathChoice::measure(&enc);
        std::thread::Builder::new()
            .name("uae-batcher".into())
            .spawn(move || run(&enc, rx, limits, paths, &m))
            .expect("spawning the batching thread; this is a bug or the OS is out of threads");
        Batcher { tx, metrics }
    }

    /// Queues token ids for embedding; the vectors arrive on the returned channel.
    pub fn submit(
        &self,
        ids: Vec<Vec<u32>>,
    ) -> Result<tokio::sync::oneshot::Receiver<Answer>, Refused> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            ids,
            reply,
            queued: Instant::now(),
        };
        match self.tx.try_send(job) {
            Ok(()) => {
                self.metrics.queue.inc();
                Ok(rx)
            }
            Err(TrySendError::Full(_)) => Err(Refused::Full),
            Err(TrySendError::Disconnected(_)) => Err(Refused::Closed),
        }
    }
}

/// Takes what waits (within the budgets), answers the jobs that waited too long,
/// embeds the rest in one pass and hands each job its vectors.
fn run(
    enc: &Encoder,
    rx: Receiver<Job>,
    limits: BatchLimits,
    paths: PathChoice,
    metrics: &Metrics,
) {
    while let Ok(first) = rx.recv() {
        let mut tokens: usize = first.ids.iter().map(Vec::len).sum();
        let mut taken = vec![first];
        // Everything already waiting joins, within the budgets.
        while taken.len() < limits.max_batch_requests && tokens < limits.max_batch_tokens {
            match rx.try_recv() {
                Ok(j) => {
                    tokens += j.ids.iter().map(Vec::len).sum::<usize>();
                    taken.push(j);
                }
                Err(_) => break,
            }
        }
        metrics.queue.sub(taken.len() as i64);
        let mut jobs = Vec::with_capacity(taken.len());
        for j in taken {
            let waited = j.queued.elapsed();
            if waited > limits.max_queue_wait() {
                metrics.expired.inc();
                tokens -= j.ids.iter().map(Vec::len).sum::<usize>();
                let _ = j.reply.send(Err(JobError::Expired(waited)));
            } else {
                jobs.push(j);
            }
        }
        if jobs.is_empty() {
            continue;
        }
        let all: Vec<Vec<u32>> = jobs.iter().flat_map(|j| j.ids.iter().cloned()).collect();
        metrics.batch_requests.observe(jobs.len() as f64);
        metrics.batch_tokens.observe(tokens as f64);
        let result = embed_pass(enc, &all, tokens, limits, paths)
            .map_err(|e| JobError::Failed(e.to_string()));
        let mut at = 0;
        for j in jobs {
            let n = j.ids.len();
            let mine = match &result {
                Ok(v) => Ok(v[at..at + n].to_vec()),
                Err(e) => Err(e.clone()),
            };
            at += n;
            // The client may have gone away; its answer is dropped.
            let _ = j.reply.send(mine);
        }
    }
}

/// One pass over `all` (`tokens` in all), by the path [`PathChoice`] measured
/// faster. Where slicing won, many short texts go through the single-query path in
/// slices: under load a pass gathers many short queries, and sending them through
/// the batch path's GEMMs once cost 39% of the throughput (`uae bench serve`,
/// concurrency 32, AVX-512). Longer texts take the batch path, where GEMMs win.
fn embed_pass(
    enc: &Encoder,
    all: &[Vec<u32>],
    tokens: usize,
    limits: BatchLimits,
    paths: PathChoice,
) -> uae_encoder::Result<Vec<Vec<f32>>> {
    let threads = rayon::current_num_threads();
    let slice = paths.single_max_tokens;
    if tokens <= slice {
        return enc.embed_queries_ids(all, threads);
    }
    if paths.slice_short && all.iter().all(|s| s.len() <= SHORT_TEXT_TOKENS) {
        let mut out = Vec::with_capacity(all.len());
        let mut start = 0;
        while start < all.len() {
            let mut end = start;
            let mut budget = 0;
            while end < all.len() && (end == start || budget + all[end].len() <= slice) {
                budget += all[end].len();
                end += 1;
            }
            out.extend(enc.embed_queries_ids(&all[start..end], threads)?);
            start = end;
        }
        return Ok(out);
    }
    // Sub-batches of texts of like length (plan_batches sorts them): one batch of
    // every waiting query pads each to the longest, and under load that waste grew
    // with the pass (64 questions of 5-40 tokens padded to 40).
    let opts = BatchOptions {
        max_tokens: limits.max_batch_tokens.clamp(1, PASS_PADDED_TOKENS),
        max_batch: all.len().max(1),
    };
    enc.embed_ids(all, opts, &mut |_| {})
}
