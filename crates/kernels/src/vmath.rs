//! The element-wise functions of [`crate`] (GELU, its gradient, softmax's exponent)
//! written out in AVX-512 intrinsics, sixteen lanes at a time.
//!
//! The portable versions rely on auto-vectorisation, which keeps `erf`'s division as
//! `vdivps` and, on the short rows a GEMM epilogue hands over (32 columns), pays a
//! dispatch and a remainder loop per call; here the division is a 14-bit reciprocal
//! with one Newton step (~1e-8 relative), and everything else is the same polynomial
//! in the same order, so results agree with the portable path to a few ulps
//! (`vmath_matches_the_portable_path`). Callers check AVX-512F first.

#![allow(unsafe_code)]

use std::arch::x86_64::*;

#[inline(always)]
fn splat(v: f32) -> __m512 {
    // SAFETY: only ever inlined into functions compiled with AVX-512F.
    unsafe { _mm512_set1_ps(v) }
}

/// [`crate::exp`] on 16 lanes: the same Cody-Waite reduction and Taylor polynomial.
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn exp16(x: __m512) -> __m512 {
    let x = _mm512_max_ps(_mm512_min_ps(x, splat(88.0)), splat(-87.0));
    let magic = splat(12_582_912.0);
    let t = _mm512_fmadd_ps(x, splat(std::f32::consts::LOG2_E), magic);
    let ni = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_castps_si512(magic));
    let n = _mm512_sub_ps(t, magic);
    let y = _mm512_fnmadd_ps(n, splat(0.693_145_75), x);
    let y = _mm512_fnmadd_ps(n, splat(1.428_606_8e-6), y);
    let mut p = splat(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = _mm512_fmadd_ps(p, y, splat(c));
    }
    let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
        ni,
        _mm512_set1_epi32(127),
    )));
    _mm512_mul_ps(scale, p)
}

/// [`crate::erf`] on 16 lanes.
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn erf16(x: __m512) -> __m512 {
    let a = _mm512_abs_ps(x);
    let d = _mm512_fmadd_ps(splat(0.327_591_1), a, splat(1.0));
    let r = _mm512_rcp14_ps(d);
    let t = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, splat(2.0)));
    let mut p = splat(1.061_405_4);
    for c in [-1.453_152_1, 1.421_413_7, -0.284_496_74, 0.254_829_6] {
        p = _mm512_fmadd_ps(p, t, splat(c));
    }
    p = _mm512_mul_ps(p, t);
    // SAFETY: AVX-512F, as this function's contract requires.
    let e = unsafe { exp16(_mm512_mul_ps(_mm512_sub_ps(splat(0.0), a), a)) };
    let m = _mm512_fnmadd_ps(p, e, splat(1.0));
    let sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN));
    _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(m), sign))
}

/// [`crate::gelu`] on 16 lanes.
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn gelu16(v: __m512) -> __m512 {
    // SAFETY: AVX-512F, as this function's contract requires.
    let e = unsafe { erf16(_mm512_mul_ps(v, splat(std::f32::consts::FRAC_1_SQRT_2))) };
    _mm512_mul_ps(_mm512_mul_ps(splat(0.5), v), _mm512_add_ps(splat(1.0), e))
}

/// [`crate::gelu_grad`] on 16 lanes.
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_grad16(v: __m512) -> __m512 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    // SAFETY: AVX-512F, as this function's contract requires.
    let (e, g) = unsafe {
        (
            erf16(_mm512_mul_ps(v, splat(std::f32::consts::FRAC_1_SQRT_2))),
            exp16(_mm512_mul_ps(_mm512_mul_ps(splat(-0.5), v), v)),
        )
    };
    let phi = _mm512_mul_ps(_mm512_mul_ps(v, splat(INV_SQRT_2PI)), g);
    _mm512_fmadd_ps(splat(0.5), _mm512_add_ps(splat(1.0), e), phi)
}

/// Applies `f` to `x` sixteen lanes at a time (`out[i] = f(x[i])`, the tail masked).
#[inline(always)]
unsafe fn map(out: *mut f32, x: *const f32, n: usize, f: impl Fn(__m512) -> __m512) {
    let full = n / 16 * 16;
    // SAFETY (whole body): the caller guarantees `n` readable floats at `x` and `n`
    // writable at `out`; full vectors stay below `full <= n`, the tail is masked.
    unsafe {
        for i in (0..full).step_by(16) {
            _mm512_storeu_ps(out.add(i), f(_mm512_loadu_ps(x.add(i))));
        }
        if full < n {
            let k: __mmask16 = (1u32 << (n - full)).wrapping_sub(1) as __mmask16;
            let v = _mm512_maskz_loadu_ps(k, x.add(full));
            _mm512_mask_storeu_ps(out.add(full), k, f(v));
        }
    }
}

/// `x <- gelu(x)`.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn gelu_inplace(x: &mut [f32]) {
    let p = x.as_mut_ptr();
    // SAFETY: `x` is both source and destination, `x.len()` floats; AVX-512F per the
    // contract.
    unsafe { map(p, p, x.len(), |v| gelu16(v)) }
}

/// `out <- gelu(x)` over the shorter of the two.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn gelu_into(out: &mut [f32], x: &[f32]) {
    let n = out.len().min(x.len());
    // SAFETY: `n` fits both slices; AVX-512F per the contract.
    unsafe { map(out.as_mut_ptr(), x.as_ptr(), n, |v| gelu16(v)) }
}

/// `out <- g * gelu'(x)` over the shortest of the three.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn gelu_grad_into(out: &mut [f32], x: &[f32], g: &[f32]) {
    let n = out.len().min(x.len()).min(g.len());
    let full = n / 16 * 16;
    // SAFETY: every offset stays below `n`, which fits all three slices; the tail is
    // done by the scalar reference.
    unsafe {
        for i in (0..full).step_by(16) {
            let d = gelu_grad16(_mm512_loadu_ps(x.as_ptr().add(i)));
            let gv = _mm512_loadu_ps(g.as_ptr().add(i));
            _mm512_storeu_ps(out.as_mut_ptr().add(i), _mm512_mul_ps(gv, d));
        }
    }
    for i in full..n {
        out[i] = g[i] * crate::gelu_grad(x[i]);
    }
}

/// Row-wise softmax of `scale * p` for rows of length `n`.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn softmax_rows(p: &mut [f32], n: usize, scale: f32) {
    for row in p.chunks_mut(n.max(1)) {
        let m = crate::max(row);
        let (len, ptr) = (row.len(), row.as_mut_ptr());
        let (sub, sc) = (splat(m), splat(scale));
        // SAFETY: `row` is source and destination; AVX-512F per the contract.
        unsafe {
            map(ptr, ptr, len, |v| {
                exp16(_mm512_mul_ps(_mm512_sub_ps(v, sub), sc))
            })
        };
        let inv = 1.0 / crate::sum(row);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}
