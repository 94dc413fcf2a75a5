//! Greedy decoding speed (prefill excluded from the per-token figure):
//! `cargo run --release -p uae-lm --example decode_speed [GGUF] [BATCH] [NEW_TOKENS] [bf16]`.

use std::time::Instant;
use uae_lm::{CausalLm, LmSource};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let batch: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(8);
    let new: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(32);
    let bf16 = args.next().is_some_and(|s| s == "bf16");
    let mut lm = CausalLm::load(&LmSource {
        path: path.into(),
        quantized: false,
    })?;
    if bf16 {
        lm.to_bf16()?;
    }
    let prompt = lm.encode(
        "<|im_start|>user\nWrite a long story about a robot.<|im_end|>\n<|im_start|>assistant\n",
    )?;
    let prompts: Vec<&[u32]> = (0..batch).map(|_| prompt.as_slice()).collect();
    let t = Instant::now();
    lm.prefill(&prompts)?;
    let prefill = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let out = lm.generate_batch(&prompts, new)?;
    let total = t.elapsed().as_secs_f64();
    let steps = out.iter().map(Vec::len).max().unwrap_or(0).max(1);
    println!(
        "batch {batch} ({}): {steps} steps, {:.1} ms per decode step ({:.1} ms prefill)",
        if bf16 { "bf16" } else { "f32" },
        (total - prefill) * 1e3 / steps as f64,
        prefill * 1e3
    );
    Ok(())
}
