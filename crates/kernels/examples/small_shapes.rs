//! GFLOP/s of the single-query projections (`uae_kernels::small`) at MiniLM's shapes,
//! first with one weight reused (it stays in cache), then over six layers' distinct
//! weights (42 MB: streamed from memory, as a real query is):
//! `cargo run --release -p uae-kernels --example small_shapes [ROWS] [THREADS] [bf16]`
//! (`bf16`: the streamed pass with bf16 panels, half the bytes).

use std::time::Instant;
use uae_kernels::small::{small_linear, Element, Panels};

const SHAPES: [(usize, usize); 4] = [(1152, 384), (384, 384), (1536, 384), (384, 1536)];

fn main() {
    let mut args = std::env::args().skip(1);
    let m: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(14);
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let bf16 = args.next().is_some_and(|s| s == "bf16");
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
    let (s, flops, bytes) = if bf16 {
        streamed(&x, m, threads, Panels::from_weight_bf16)
    } else {
        streamed(&x, m, threads, Panels::from_weight)
    };
    let reps = REPS;
    println!(
        "streamed, 6 layers ({:.0} MB): {:.2} ms a pass, {:.1} GFLOP/s, {:.1} GB/s",
        bytes as f64 / 1e6,
        s / reps as f64 * 1e3,
        flops / s / 1e9,
        bytes as f64 * reps as f64 / s / 1e9
    );
}

const REPS: usize = 100;

/// Six layers of distinct weights, each pass streaming all of them: (seconds for
/// `REPS` passes, FLOPs, bytes of one pass).
fn streamed<T: Element>(
    x: &[f32],
    m: usize,
    threads: usize,
    pack: impl Fn(&[f32], usize, usize) -> Panels<T>,
) -> (f64, f64, usize) {
    let layers: Vec<Panels<T>> = (0..6)
        .flat_map(|l| {
            SHAPES.iter().map(move |&(n, k)| {
                (
                    n,
                    k,
                    (0..n * k)
                        .map(|i| ((i + l + 1) % 13) as f32 * 0.01)
                        .collect::<Vec<f32>>(),
                )
            })
        })
        .map(|(n, k, w)| pack(&w, n, k))
        .collect();
    let bias = vec![0.5f32; 1536];
    let mut out = vec![0f32; m * 1536];
    let mut flops = 0.0;
    let t = Instant::now();
    for _ in 0..REPS {
        for p in &layers {
            small_linear(x, m, p, &bias[..p.n()], false, &mut out, threads);
            flops += 2.0 * (m * p.n() * p.k()) as f64;
        }
    }
    let bytes = layers
        .iter()
        .map(|p| p.n() * p.k() * std::mem::size_of::<T>())
        .sum();
    (t.elapsed().as_secs_f64(), flops, bytes)
}
