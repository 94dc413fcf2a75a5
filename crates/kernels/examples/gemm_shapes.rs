//! GFLOP/s of `sgemm` at the shapes the LM and encoder use:
//! `cargo run --release -p uae-kernels --example gemm_shapes`. With a bf16 unit, the bf16
//! path too (`uae_kernels::bf16`: AMX or AVX512_BF16).
use std::time::Instant;
use uae_kernels::{bf16, sgemm, Mat};

fn small() {
    // Per-head attention in the encoder: Q K^T (128x128x32, K^T strided) and P V.
    let (s, hd, h3) = (128usize, 32usize, 1152usize);
    let qkv = vec![0.1f32; s * h3];
    let mut p = vec![0f32; s * s];
    let mut o = vec![0f32; s * 384];
    let reps = 2000;
    let t = Instant::now();
    for _ in 0..reps {
        sgemm(
            s,
            s,
            hd,
            Mat {
                data: &qkv,
                rs: h3,
                cs: 1,
            },
            Mat {
                data: &qkv[384..],
                rs: 1,
                cs: h3,
            },
            &mut p,
            s,
            false,
            1,
        );
    }
    let e = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "QK^T 128x128x32 strided: {:.0} GFLOP/s",
        2.0 * (s * s * hd) as f64 / e / 1e9
    );
    let t = Instant::now();
    for _ in 0..reps {
        sgemm(
            s,
            hd,
            s,
            Mat {
                data: &p,
                rs: s,
                cs: 1,
            },
            Mat {
                data: &qkv[768..],
                rs: h3,
                cs: 1,
            },
            &mut o,
            384,
            false,
            1,
        );
    }
    let e = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "PV 128x32x128 strided: {:.0} GFLOP/s",
        2.0 * (s * s * hd) as f64 / e / 1e9
    );
}

fn main() {
    small();
    let shapes = [
        (2048, 960, 576),
        (2048, 3072, 576),
        (2048, 576, 1536),
        (2048, 576, 576),
        (4096, 1536, 384),
        (4096, 1152, 384),
    ];
    for &(m, n, k) in &shapes {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0f32; m * n];
        for (name, bm) in [
            (
                "B [k,n]",
                Mat {
                    data: &b,
                    rs: n,
                    cs: 1,
                },
            ),
            (
                "B^T [n,k]",
                Mat {
                    data: &b,
                    rs: 1,
                    cs: k,
                },
            ),
        ] {
            for threads in [1, 2] {
                sgemm(
                    m,
                    n,
                    k,
                    Mat {
                        data: &a,
                        rs: k,
                        cs: 1,
                    },
                    bm,
                    &mut c,
                    n,
                    false,
                    threads,
                );
                let t = Instant::now();
                let reps = 5;
                for _ in 0..reps {
                    sgemm(
                        m,
                        n,
                        k,
                        Mat {
                            data: &a,
                            rs: k,
                            cs: 1,
                        },
                        bm,
                        &mut c,
                        n,
                        false,
                        threads,
                    );
                }
                let s = t.elapsed().as_secs_f64() / reps as f64;
                println!(
                    "{m}x{n}x{k} {name} threads={threads}: {:.0} GFLOP/s",
                    2.0 * (m * n * k) as f64 / s / 1e9
                );
            }
        }
        if let Some(backend) = bf16::backend() {
            let packed = bf16::PackedB::new(
                Mat {
                    data: &b,
                    rs: n,
                    cs: 1,
                },
                k,
                n,
            );
            for threads in [1, 2] {
                let x = Mat {
                    data: &a,
                    rs: k,
                    cs: 1,
                };
                bf16::gemm(m, x, &packed, &mut c, n, false, threads);
                let t = Instant::now();
                let reps = 10;
                for _ in 0..reps {
                    bf16::gemm(m, x, &packed, &mut c, n, false, threads);
                }
                let s = t.elapsed().as_secs_f64() / reps as f64;
                println!(
                    "{m}x{n}x{k} bf16 ({}) threads={threads}: {:.0} GFLOP/s",
                    backend.name(),
                    2.0 * (m * n * k) as f64 / s / 1e9
                );
            }
        }
    }
}
