//! candle's `matmul` against `uae_kernels::sgemm` at the linear layers' backward
//! shapes (micro-batch of 32 texts x 128 tokens): `dx = g W` and `dW = g^T x`.
//! `cargo run --release -p uae-kernels --example backward_shapes`.
use candle_core::{Device, Tensor};
use std::time::Instant;
use uae_kernels::{sgemm, Mat};

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

fn main() -> candle_core::Result<()> {
    let n = 4096;
    let threads = rayon::current_num_threads();
    for (out, inp) in [(1152usize, 384usize), (384, 384), (1536, 384), (384, 1536)] {
        let g = Tensor::randn(0f32, 1.0, (n, out), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 1.0, (out, inp), &Device::Cpu)?;
        let x = Tensor::randn(0f32, 1.0, (n, inp), &Device::Cpu)?;
        let flops = 2.0 * (n * out * inp) as f64 / 1e9;
        let c_dx = time(5, || {
            g.matmul(&w).expect("matmul");
        });
        let c_dw = time(5, || {
            g.t().expect("t").matmul(&x).expect("matmul");
        });
        let (gv, wv, xv) = (
            g.flatten_all()?.to_vec1::<f32>()?,
            w.flatten_all()?.to_vec1::<f32>()?,
            x.flatten_all()?.to_vec1::<f32>()?,
        );
        let mut dx = vec![0f32; n * inp];
        let mut dw = vec![0f32; out * inp];
        let s_dx = time(5, || {
            let a = Mat {
                data: &gv,
                rs: out,
                cs: 1,
            };
            let b = Mat {
                data: &wv,
                rs: inp,
                cs: 1,
            };
            sgemm(n, inp, out, a, b, &mut dx, inp, false, threads);
        });
        let s_dw = time(5, || {
            let a = Mat {
                data: &gv,
                rs: 1,
                cs: out,
            };
            let b = Mat {
                data: &xv,
                rs: inp,
                cs: 1,
            };
            sgemm(out, inp, n, a, b, &mut dw, inp, false, threads);
        });
        println!(
            "[{out}x{inp}] dx: candle {:.0} vs sgemm {:.0} GFLOP/s; dW: candle {:.0} vs sgemm {:.0} GFLOP/s",
            flops / c_dx,
            flops / s_dx,
            flops / c_dw,
            flops / s_dw
        );
    }
    Ok(())
}
