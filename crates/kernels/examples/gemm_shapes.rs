//! GFLOP/s of `sgemm` at the shapes the LM and encoder use:
//! `cargo run --release -p uae-kernels --example gemm_shapes`.
use std::time::Instant;
use uae_kernels::{sgemm, Mat};

fn main() {
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
    }
}
