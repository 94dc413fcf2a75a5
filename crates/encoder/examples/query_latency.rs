//! Per-query embedding latency (one short text at a time, as a server sees it):
//! `cargo run --release -p uae-encoder --example query_latency [MODEL_DIR] [N] [bf16]`.

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "models/all-MiniLM-L6-v2".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let bf16 = args.next().is_some_and(|s| s == "bf16");
    let mut enc =
        uae_encoder::Encoder::load(std::path::Path::new(&dir), &candle_core::Device::Cpu, false)?;
    if bf16 {
        enc.model.to_bf16()?;
    }
    let q = "What evaluation metrics did the authors use to compare the models?";
    enc.embed(&[q])?;
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        enc.embed(&[q])?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "{n} queries ({}): p50 {:.2} ms, p95 {:.2} ms, min {:.2} ms",
        if bf16 { "bf16" } else { "f32" },
        ms[n / 2],
        ms[n * 95 / 100],
        ms[0]
    );
    Ok(())
}
