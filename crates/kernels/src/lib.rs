//! CPU compute kernels shared by the encoder and the LM.
//!
//! Scalar building blocks for the fused CPU kernels: a bounds-checked wrapper over
//! the `gemm` crate, and vectorisable `exp`, `erf` and GELU.

pub mod amx;

/// A seeded generator of floats in [-0.5, 0.5) for the kernels' tests.
#[cfg(test)]
pub(crate) fn test_floats(seed: u64) -> impl FnMut() -> f32 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
}
pub mod bf16;
pub mod packed;
pub mod small;
pub mod unit;
#[cfg(target_arch = "x86_64")]
mod vmath;

/// Keeps large freed blocks in the process heap instead of returning them to the
/// kernel. glibc serves allocations above its mmap threshold (at most 32 MiB by
/// default) with fresh `mmap`s, so every large activation or gradient tensor of a
/// training step costs page faults and the kernel zeroing its pages again; with a
/// 1 GiB threshold they come from (and go back to) the heap. Measured on a 2-core
/// EPYC: a default training step 12.6 s -> 11.6 s. The cost is that the resident size
/// stays near its peak. Call once, early in `main`; a no-op off Linux glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only changes allocator parameters; called before other threads
    // start allocating, with documented parameter numbers and in-range values.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}

use gemm::Parallelism;

/// A strided matrix view: element (r, c) lives at `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

/// `c[m x n] = (accumulate ? c : 0) + a[m x k] * b[k x n]`, with any row/column strides.
///
/// Panics (a bug in the caller, never user input) if a view reaches past its slice.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    c: &mut [f32],
    c_rs: usize,
    accumulate: bool,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let reach = |rows: usize, cols: usize, rs: usize, cs: usize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs + (cols - 1) * cs + 1
        }
    };
    assert!(
        reach(m, k, a.rs, a.cs) <= a.data.len(),
        "sgemm: lhs view out of bounds (bug)"
    );
    assert!(
        reach(k, n, b.rs, b.cs) <= b.data.len(),
        "sgemm: rhs view out of bounds (bug)"
    );
    assert!(
        reach(m, n, c_rs, 1) <= c.len(),
        "sgemm: dst view out of bounds (bug)"
    );
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                c[r * c_rs..r * c_rs + n].fill(0.0);
            }
        }
        return;
    }
    // Split rows into one block per thread, each a single-threaded GEMM: on this
    // 2-core machine that scales better than gemm's own rayon split (measured with
    // `cargo run --release -p uae-kernels --example gemm_shapes`).
    if threads > 1 && m >= 64 * threads {
        let rows = m.div_ceil(threads);
        let blocks: Vec<(usize, &mut [f32])> = {
            let mut out = Vec::new();
            let mut rest = &mut c[..];
            let mut r0 = 0;
            while r0 < m {
                let r = rows.min(m - r0);
                let take = if r0 + r < m { r * c_rs } else { rest.len() };
                let (head, tail) = rest.split_at_mut(take);
                out.push((r0, head));
                rest = tail;
                r0 += r;
            }
            out
        };
        use rayon::prelude::*;
        blocks.into_par_iter().for_each(|(r0, cb)| {
            let r = rows.min(m - r0);
            let ab = Mat {
                data: &a.data[r0 * a.rs..],
                rs: a.rs,
                cs: a.cs,
            };
            sgemm(r, n, k, ab, b, cb, c_rs, accumulate, 1);
        });
        return;
    }
    let par = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts above prove every element the strides can reach lies inside
    // its slice; `c` is borrowed mutably, so it aliases neither `a` nor `b`.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// e^x to ~1e-7 relative error, written so that loops over it vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Cody-Waite range reduction: x = n ln2 + y, |y| <= ln2 / 2, with ln2 split in a
    // high part exact in f32 and a low correction, then a degree-7 Taylor polynomial.
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest with the 1.5 * 2^23 trick: `f32::round` is a libm call that
    // blocks vectorisation.
    // The integer n sits in the low mantissa bits of `t`, read without a (saturating,
    // branchy) float-to-int conversion.
    const MAGIC: f32 = 12_582_912.0;
    let t = x * LOG2E + MAGIC;
    let ni = t.to_bits() as i32 - MAGIC.to_bits() as i32;
    let n = t - MAGIC;
    let y = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + y * (1.0
            + y * (0.5
                + y * (1.0 / 6.0
                    + y * (1.0 / 24.0
                        + y * (1.0 / 120.0 + y * (1.0 / 720.0 + y * (1.0 / 5040.0)))))));
    f32::from_bits(((ni + 127) << 23) as u32) * p
}

/// Defines a slice kernel whose body is compiled once per SIMD instruction set
/// (AVX-512, AVX2, scalar) and picked at run time by `pulp`: the body is inlined into
/// a `#[target_feature]` function, so its loops auto-vectorise at full width while the
/// binary still runs on any x86-64. All arguments share the lifetime `'a`.
macro_rules! simd_kernel {
    ($(#[$m:meta])* $vis:vis fn $name:ident<'a>($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name<'a>($($arg: $ty),*) {
            struct Kernel<'a> {
                $($arg: $ty,)*
                _life: std::marker::PhantomData<&'a ()>,
            }
            impl<'a> pulp::WithSimd for Kernel<'a> {
                type Output = ();
                #[inline(always)]
                fn with_simd<S: pulp::Simd>(self, _simd: S) {
                    let Kernel { $($arg,)* .. } = self;
                    $body
                }
            }
            pulp::Arch::new().dispatch(Kernel { $($arg,)* _life: std::marker::PhantomData })
        }
    };
}

/// Whether the explicit AVX-512 element-wise kernels (`vmath`) can run here.
#[inline]
fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `x <- gelu(x)` element-wise.
#[allow(unsafe_code)]
pub fn gelu_inplace(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512F was detected just above.
        return unsafe { vmath::gelu_inplace(x) };
    }
    portable_gelu_inplace(x)
}

/// `out <- gelu(x)` element-wise (over the shorter slice).
#[allow(unsafe_code)]
pub fn gelu_into(out: &mut [f32], x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512F was detected just above.
        return unsafe { vmath::gelu_into(out, x) };
    }
    portable_gelu_into(out, x)
}

/// `out <- g * gelu'(x)` element-wise (over the shortest slice).
#[allow(unsafe_code)]
pub fn gelu_grad_into(out: &mut [f32], x: &[f32], g: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512F was detected just above.
        return unsafe { vmath::gelu_grad_into(out, x, g) };
    }
    portable_gelu_grad_into(out, x, g)
}

/// Row-wise softmax of `scale * p` for rows of length `n`.
#[allow(unsafe_code)]
pub fn softmax_rows(p: &mut [f32], n: usize, scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512F was detected just above.
        return unsafe { vmath::softmax_rows(p, n, scale) };
    }
    portable_softmax_rows(p, n, scale)
}

simd_kernel! {
    /// [`gelu_inplace`] without AVX-512 intrinsics (auto-vectorised).
    pub fn portable_gelu_inplace<'a>(x: &'a mut [f32]) {
        for v in x.iter_mut() {
            *v = gelu(*v);
        }
    }
}

simd_kernel! {
    /// [`gelu_into`] without AVX-512 intrinsics.
    pub fn portable_gelu_into<'a>(out: &'a mut [f32], x: &'a [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = gelu(v);
        }
    }
}

simd_kernel! {
    /// [`gelu_grad_into`] without AVX-512 intrinsics.
    pub fn portable_gelu_grad_into<'a>(out: &'a mut [f32], x: &'a [f32], g: &'a [f32]) {
        for ((o, &v), &gv) in out.iter_mut().zip(x).zip(g) {
            *o = gv * gelu_grad(v);
        }
    }
}

simd_kernel! {
    /// [`softmax_rows`] without AVX-512 intrinsics.
    pub fn portable_softmax_rows<'a>(p: &'a mut [f32], n: usize, scale: f32) {
        for row in p.chunks_mut(n.max(1)) {
            softmax_scaled(row, scale);
        }
    }
}

/// Mean and 1/sqrt(var + eps) of one row (population variance, as LayerNorm uses).
#[inline(always)]
pub fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = sum(x) / n;
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for c in chunks {
        for l in 0..16 {
            acc[l] += (c[l] - mean) * (c[l] - mean);
        }
    }
    let var = (rest + sum(&acc)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

simd_kernel! {
    /// LayerNorm of rows of length `h`: `out = (x - mean) * rstd * gamma + beta`.
    pub fn layer_norm_rows<'a>(out: &'a mut [f32], x: &'a [f32], gamma: &'a [f32], beta: &'a [f32], eps: f32) {
        let h = gamma.len();
        for (o, x) in out.chunks_mut(h).zip(x.chunks(h)) {
            let (mean, rstd) = moments(x, eps);
            for i in 0..h {
                o[i] = (x[i] - mean) * rstd * gamma[i] + beta[i];
            }
        }
    }
}

/// Maximum of a slice, in 16 independent lanes so that it vectorises (-inf if empty).
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            acc[l] = acc[l].max(c[l]);
        }
    }
    rest.iter()
        .chain(acc.iter())
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// Sum of a slice, in 16 independent lanes so that it vectorises.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            acc[l] += c[l];
        }
    }
    rest.iter().sum::<f32>() + acc.iter().sum::<f32>()
}

/// In-place softmax of `scale * x` over one row.
#[inline(always)]
pub fn softmax_scaled(row: &mut [f32], scale: f32) {
    let m = max(row);
    for v in row.iter_mut() {
        *v = exp((*v - m) * scale);
    }
    let inv = 1.0 / sum(row);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// erf(x), Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let s = x.signum();
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    s * (1.0 - poly * exp(-a * a))
}

/// GELU with the exact (erf) form that BERT uses.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// d GELU / dx = Phi(x) + x * phi(x).
#[inline(always)]
pub fn gelu_grad(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)) + x * INV_SQRT_2PI * exp(-0.5 * x * x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmath_matches_the_portable_path() {
        // Whatever the CPU picks (the AVX-512 kernels where there is AVX-512F) against
        // the auto-vectorised reference, on every length around the 16-lane tail.
        let mut rng = test_floats(11);
        for n in [0usize, 1, 5, 15, 16, 17, 31, 32, 33, 100, 1536] {
            let x: Vec<f32> = (0..n).map(|_| rng() * 16.0).collect();
            let g: Vec<f32> = (0..n).map(|_| rng()).collect();
            let close = |a: &[f32], b: &[f32], what: &str| {
                for (i, (p, q)) in a.iter().zip(b).enumerate() {
                    let tol = 2e-6 * q.abs().max(1.0);
                    assert!(
                        (p - q).abs() <= tol,
                        "{what} n={n} [{i}] x={}: {p} vs {q}",
                        x[i]
                    );
                }
            };
            let (mut a, mut b) = (x.clone(), x.clone());
            gelu_inplace(&mut a);
            portable_gelu_inplace(&mut b);
            close(&a, &b, "gelu_inplace");
            let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
            gelu_into(&mut a, &x);
            portable_gelu_into(&mut b, &x);
            close(&a, &b, "gelu_into");
            gelu_grad_into(&mut a, &x, &g);
            portable_gelu_grad_into(&mut b, &x, &g);
            close(&a, &b, "gelu_grad_into");
            for row in [1usize, 7, 16, 33] {
                let m = n / row * row;
                let (mut a, mut b) = (x[..m].to_vec(), x[..m].to_vec());
                softmax_rows(&mut a, row, 0.3);
                portable_softmax_rows(&mut b, row, 0.3);
                close(&a, &b, "softmax_rows");
            }
        }
    }

    #[test]
    fn exp_erf_gelu_are_accurate() {
        for i in -400..400 {
            let x = i as f32 * 0.05;
            let e = exp(x);
            assert!(((e - x.exp()) / x.exp()).abs() < 2e-7, "exp({x})");
            let want = candle_core::cpu::erf::erf_f64(x as f64) as f32;
            assert!((erf(x) - want).abs() < 3e-7, "erf({x})");
        }
        // Finite difference of gelu against gelu_grad.
        for i in -60..60 {
            let x = i as f64 * 0.1;
            let g = |x: f64| 0.5 * x * (1.0 + candle_core::cpu::erf::erf_f64(x / 2f64.sqrt()));
            let fd = (g(x + 1e-5) - g(x - 1e-5)) / 2e-5;
            assert!((gelu_grad(x as f32) as f64 - fd).abs() < 1e-5, "gelu'({x})");
            assert!((gelu(x as f32) as f64 - g(x)).abs() < 1e-6);
        }
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let mut r: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).sin() * 5.0).collect();
        let want: Vec<f64> = {
            let m = r.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
            let e: Vec<f64> = r.iter().map(|&v| ((v as f64 - m) * 0.5).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        };
        softmax_scaled(&mut r, 0.5);
        for (a, b) in r.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-6);
        }
        assert_eq!(max(&[1.0, 5.0, -2.0]), 5.0);
        assert_eq!(sum(&[1.0; 40]), 40.0);
    }

    /// The row-block split (threads > 1) gives the same result as one thread, with
    /// accumulation, an uneven last block and a strided destination.
    #[test]
    fn threaded_row_split_equals_single_thread() {
        let (m, n, k) = (301, 17, 29);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5)
            .collect();
        let c_rs = n + 3;
        let init: Vec<f32> = (0..m * c_rs).map(|i| (i % 5) as f32).collect();
        let run = |threads| {
            let mut c = init.clone();
            sgemm(
                m,
                n,
                k,
                Mat {
                    data: &a,
                    rs: k,
                    cs: 1,
                },
                Mat {
                    data: &b,
                    rs: n,
                    cs: 1,
                },
                &mut c,
                c_rs,
                true,
                threads,
            );
            c
        };
        assert_eq!(run(1), run(3));
    }

    /// gelu_tanh(x) * u against the formula in f64, over the range where tanh saturates.
    #[test]
    fn gelu_tanh_mul_matches_formula() {
        let f = 37;
        let gu: Vec<f32> = (0..2 * f)
            .map(|i| {
                if i < f {
                    -12.0 + 0.65 * i as f32
                } else {
                    0.5 + 0.01 * i as f32
                }
            })
            .collect();
        let mut out = vec![0f32; f];
        gelu_tanh_mul_rows(&mut out, &gu, f);
        for i in 0..f {
            let x = gu[i] as f64;
            let want = 0.5
                * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
                * gu[f + i] as f64;
            assert!(
                (out[i] as f64 - want).abs() < 1e-5 * want.abs().max(1.0),
                "x {x}"
            );
        }
    }

    #[test]
    fn sgemm_with_strides_matches_naive() {
        // a: 2x3 row-major; b given transposed (3x2 view over a 2x3 buffer).
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bt = [1.0, 0.0, -1.0, 2.0, 1.0, 0.5];
        let mut c = [10.0f32; 4];
        sgemm(
            2,
            2,
            3,
            Mat {
                data: &a,
                rs: 3,
                cs: 1,
            },
            Mat {
                data: &bt,
                rs: 1,
                cs: 3,
            },
            &mut c,
            2,
            true,
            1,
        );
        // row0: [1*1+2*0+3*-1, 1*2+2*1+3*0.5] = [-2, 5.5]; row1: [4-6, 8+5+3] = [-2, 16]
        assert_eq!(c, [8.0, 15.5, 8.0, 26.0]);
    }
}

simd_kernel! {
    /// RMSNorm of rows of length `w.len()`: `out = x / sqrt(mean(x^2) + eps) * w`.
    pub fn rms_norm_rows<'a>(out: &'a mut [f32], x: &'a [f32], w: &'a [f32], eps: f32) {
        let h = w.len();
        for (o, x) in out.chunks_mut(h).zip(x.chunks(h)) {
            let mut acc = [0f32; 16];
            let chunks = x.chunks_exact(16);
            let rest: f32 = chunks.remainder().iter().map(|v| v * v).sum();
            for c in chunks {
                for l in 0..16 {
                    acc[l] += c[l] * c[l];
                }
            }
            let r = 1.0 / ((rest + sum(&acc)) / h as f32 + eps).sqrt();
            for i in 0..h {
                o[i] = x[i] * r * w[i];
            }
        }
    }
}

simd_kernel! {
    /// SwiGLU: for rows `[gate (f) | up (f)]` of `gu`, `out = silu(gate) * up`, rows of `f`.
    pub fn silu_mul_rows<'a>(out: &'a mut [f32], gu: &'a [f32], f: usize) {
        for (o, row) in out.chunks_mut(f).zip(gu.chunks(2 * f)) {
            let (g, u) = row.split_at(f);
            for i in 0..f {
                o[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
            }
        }
    }
}

simd_kernel! {
    /// GeGLU: for rows `[gate (f) | up (f)]` of `gu`, `out = gelu_tanh(gate) * up`, rows
    /// of `f`, with GELU's tanh approximation `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`
    /// (PyTorch's `gelu(approximate="tanh")`, Gemma's `gelu_pytorch_tanh`). The tanh is
    /// written through `exp` as `1 - 2 / (e^{2z} + 1)`, so the loop vectorises.
    pub fn gelu_tanh_mul_rows<'a>(out: &'a mut [f32], gu: &'a [f32], f: usize) {
        const C: f32 = 0.797_884_6; // sqrt(2 / pi)
        for (o, row) in out.chunks_mut(f).zip(gu.chunks(2 * f)) {
            let (g, u) = row.split_at(f);
            for i in 0..f {
                let x = g[i];
                let z = C * (x + 0.044_715 * x * x * x);
                let t = 1.0 - 2.0 / (exp(2.0 * z) + 1.0);
                o[i] = 0.5 * x * (1.0 + t) * u[i];
            }
        }
    }
}

simd_kernel! {
    /// Row-wise log-softmax in place.
    pub fn log_softmax_rows<'a>(x: &'a mut [f32], n: usize) {
        for row in x.chunks_mut(n.max(1)) {
            let m = max(row);
            let mut acc = [0f32; 16];
            let chunks = row.chunks_exact(16);
            let rest: f32 = chunks.remainder().iter().map(|v| exp(v - m)).sum();
            for c in chunks {
                for l in 0..16 {
                    acc[l] += exp(c[l] - m);
                }
            }
            let lse = m + (rest + sum(&acc)).ln();
            for v in row.iter_mut() {
                *v -= lse;
            }
        }
    }
}
