//! Per-query embedding latency (one short text at a time, as a server sees it):
//! `cargo run --release -p uae-encoder --example query_latency [MODEL_DIR] [N] [batch|bf16|query|query-bf16|mixed] [TEXTS] [MAX_TOKENS]`
//! (`query`: the single-query path, on the rayon pool's thread count; `TEXTS` > 1
//! embeds that many copies of the question in one call, to find where the single-query
//! path stops beating the batch path; `mixed`: the batch path on `TEXTS` questions of
//! 5 to 40 tokens, as a server's queue holds them, in sub-batches of at most
//! `MAX_TOKENS` padded tokens (default 16384: one padded batch)).

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "models/all-MiniLM-L6-v2".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let mode = args.next().unwrap_or_else(|| "batch".into());
    let bf16 = mode.contains("bf16");
    let single = mode.starts_with("query");
    let texts: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    let max_tokens: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16384)
        .max(1);
    let mut enc =
        uae_encoder::Encoder::load(std::path::Path::new(&dir), &candle_core::Device::Cpu, false)?;
    if bf16 {
        enc.model.to_bf16()?;
    }
    let q = "What evaluation metrics did the authors use to compare the models?";
    let threads = rayon::current_num_threads();
    let mixed: Vec<String> = (0..texts)
        .map(|i| "what evaluation metric ".repeat(1 + (i * 7) % 12))
        .collect();
    let ids = if mode == "mixed" {
        enc.tokenize(&mixed.iter().map(String::as_str).collect::<Vec<_>>())?
    } else {
        enc.tokenize(&vec![q; texts])?
    };
    let run = |enc: &uae_encoder::Encoder| -> Result<Vec<Vec<f32>>, uae_encoder::Error> {
        if single {
            enc.embed_queries_ids(&ids, threads)
        } else {
            let opts = uae_encoder::BatchOptions {
                max_tokens,
                max_batch: ids.len(),
            };
            enc.embed_ids(&ids, opts, &mut |_| {})
        }
    };
    run(&enc)?;
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        run(&enc)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "{n} calls of {texts} x {} tokens ({}): p50 {:.2} ms, p95 {:.2} ms, min {:.2} ms",
        ids[0].len(),
        mode,
        ms[n / 2],
        ms[n * 95 / 100],
        ms[0]
    );
    Ok(())
}
