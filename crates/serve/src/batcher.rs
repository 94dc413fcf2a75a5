//! The batching queue: requests hand their token ids to one worker thread that owns
//! the encoder; it takes every job waiting (within a token and a request budget) and
//! embeds them in one model pass, then answers each job with its own vectors. The
//! queue is bounded: a full queue is the caller's 429, never unbounded growth.

use crate::metrics::Metrics;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use uae_encoder::{BatchOptions, Encoder};

/// A model pass of at most this many tokens takes the single-query path
/// ([`Encoder::embed_queries_ids`]: no tensors, no GEMM packing, no padding, each
/// weight streamed once for all its texts); a larger one the batch path's GEMMs.
pub const SMALL_PASS_TOKENS: usize = 256;

/// Batching limits.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most (unpadded) tokens taken into one model pass.
    pub max_batch_tokens: usize,
    /// Most requests taken into one model pass.
    pub max_batch_requests: usize,
    /// Most requests waiting; more are refused (429).
    pub max_concurrent_requests: usize,
}

/// A job's vectors, or why the model pass failed.
pub type Answer = Result<Vec<Vec<f32>>, String>;
type Reply = tokio::sync::oneshot::Sender<Answer>;

struct Job {
    ids: Vec<Vec<u32>>,
    reply: Reply,
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
        std::thread::Builder::new()
            .name("uae-batcher".into())
            .spawn(move || {
                if let Err(e) = enc.prepare_query_path() {
                    tracing::warn!("single-query path unavailable, batching every request: {e}");
                }
                run(&enc, rx, limits, &m)
            })
            .expect("spawning the batching thread; this is a bug or the OS is out of threads");
        Batcher { tx, metrics }
    }

    /// Queues token ids for embedding; the vectors arrive on the returned channel.
    pub fn submit(
        &self,
        ids: Vec<Vec<u32>>,
    ) -> Result<tokio::sync::oneshot::Receiver<Answer>, Refused> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        match self.tx.try_send(Job { ids, reply }) {
            Ok(()) => {
                self.metrics.queue.inc();
                Ok(rx)
            }
            Err(TrySendError::Full(_)) => Err(Refused::Full),
            Err(TrySendError::Disconnected(_)) => Err(Refused::Closed),
        }
    }
}

fn run(enc: &Encoder, rx: Receiver<Job>, limits: BatchLimits, metrics: &Metrics) {
    while let Ok(first) = rx.recv() {
        let mut tokens: usize = first.ids.iter().map(Vec::len).sum();
        let mut jobs = vec![first];
        // Everything already waiting joins, within the budgets.
        while jobs.len() < limits.max_batch_requests && tokens < limits.max_batch_tokens {
            match rx.try_recv() {
                Ok(j) => {
                    tokens += j.ids.iter().map(Vec::len).sum::<usize>();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        metrics.queue.sub(jobs.len() as i64);
        let all: Vec<Vec<u32>> = jobs.iter().flat_map(|j| j.ids.iter().cloned()).collect();
        metrics.batch_requests.observe(jobs.len() as f64);
        metrics.batch_tokens.observe(tokens as f64);
        let opts = BatchOptions {
            max_tokens: limits.max_batch_tokens.max(1),
            max_batch: all.len().max(1),
        };
        let result = if tokens <= SMALL_PASS_TOKENS {
            enc.embed_queries_ids(&all, rayon::current_num_threads())
        } else {
            enc.embed_ids(&all, opts, &mut |_| {})
        }
        .map_err(|e| e.to_string());
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
