//! GFLOP/s of the single-query projections (`uae_kernels::small`) at MiniLM's shapes,
//! first with one weight reused (it stays in cache), then over six layers' distinct
//! weights (42 MB: streamed from memory, as a real query is):
//! `cargo run --release -p uae-kernels --example small_shapes [ROWS] [THREADS]`.

use std::time::Instant;
use uae_kernels::small::{small_linear, Panels};

const SHAPES: [(usize, usize); 4] = [(1152, 384), (384, 384), (1536, 384), (384, 1536)];

fn main() {
    let mut args = std::env::args().skip(1);
    let m: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(14);
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let make = |n: usize, k: usize, seed: usize| {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i + seed) % 13) as f32 * 0.01)
            .collect();
        Panels::from_weight(&w, n, k)
    };
    let x: Vec<f32> = (0..m * 1536).map(|i| (i % 7) as f32 * 0.1).collect();
    let mut out = vec![0f32; m * 1536];
    for &(n, k) in &SHAPES {
        let p = make(n, k, 0);
        let b = vec![0.5f32; n];
        let reps = 2000;
        small_linear(&x, m, &p, &b, false, &mut out, threads);
        let t = Instant::now();
        for _ in 0..reps {
            small_linear(&x, m, &p, &b, false, &mut out, threads);
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "cached {m} x {n} x {k}: {:.1} us, {:.1} GFLOP/s",
            s * 1e6,
            2.0 * (m * n * k) as f64 / s / 1e9
        );
    }
    let layers: Vec<Vec<Panels>> = (0..6)
        .map(|l| SHAPES.iter().map(|&(n, k)| make(n, k, l + 1)).collect())
        .collect();
    let bias = vec![0.5f32; 1536];
    let reps = 100;
    let mut flops = 0.0;
    let t = Instant::now();
    for _ in 0..reps {
        for layer in &layers {
            for p in layer {
                small_linear(&x, m, p, &bias[..p.n()], false, &mut out, threads);
                flops += 2.0 * (m * p.n() * p.k()) as f64;
            }
        }
    }
    let s = t.elapsed().as_secs_f64();
    let bytes = layers
        .iter()
        .flatten()
        .map(|p| p.n() * p.k() * 4)
        .sum::<usize>();
    println!(
        "streamed, 6 layers ({:.0} MB): {:.2} ms a pass, {:.1} GFLOP/s, {:.1} GB/s",
        bytes as f64 / 1e6,
        s / reps as f64 * 1e3,
        flops / s / 1e9,
        bytes as f64 * reps as f64 / s / 1e9
    );
}
