//! Linear layers for a handful of rows (one short query): the latency path.
//!
//! A general GEMM packs both operands on every call and splits work across a thread
//! pool; for a 14-token query that overhead, not arithmetic, is most of the time.
//! Here the weight is packed once, at load time, into panels of [`PANEL`] output
//! columns (`k x 16` floats each, contiguous), and each call streams every panel
//! once while blocks of up to [`ROWS`] input rows accumulate in registers. The loops are
//! compiled per instruction set (AVX-512, AVX2, scalar) and picked at run time.
//!
//! Panels hold f32, or bf16 ([`Panels::from_weight_bf16`]): half the bytes to stream,
//! widened to f32 in registers, so only the weights are rounded (the activations and
//! the accumulation stay f32).

/// Output columns per panel: one AVX-512 register of f32.
pub const PANEL: usize = 16;
/// Input rows that share one pass over a panel (accumulators kept in registers).
pub const ROWS: usize = 16;

/// A weight element of [`Panels`]: f32, or bf16 bits (`u16`).
pub trait Element: Copy + Default + Send + Sync + 'static {
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
    /// Sixteen consecutive elements widened to f32.
    ///
    /// # Safety
    /// AVX-512F must be available and `p` must point at 16 readable elements.
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
}

impl Element for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    #[allow(unsafe_code)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        // SAFETY: the caller's contract.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
}

impl Element for u16 {
    fn from_f32(v: f32) -> Self {
        crate::packed::to_bf16(v)
    }
    fn to_f32(self) -> f32 {
        crate::packed::from_bf16(self)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx512f")]
    #[allow(unsafe_code)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: the caller's contract; a bf16 is the high half of its f32.
        unsafe {
            let h = _mm256_loadu_si256(p.cast());
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }
}

/// A `[out, in]` weight (PyTorch `Linear` layout) repacked for [`small_linear`].
#[derive(Clone)]
pub struct Panels<T: Element = f32> {
    k: usize,
    n: usize,
    data: Vec<T>,
}

impl Panels<f32> {
    /// Packs `w`, row-major `[n, k]` (output `j` is row `j`). Panics if the slice is
    /// shorter than `n * k` (a bug in the caller).
    pub fn from_weight(w: &[f32], n: usize, k: usize) -> Self {
        Self::pack(w, n, k)
    }
}

impl Panels<u16> {
    /// [`Panels::from_weight`] with the weights rounded to bf16 (nearest, ties to
    /// even, as the bf16 GEMMs round).
    pub fn from_weight_bf16(w: &[f32], n: usize, k: usize) -> Self {
        Self::pack(w, n, k)
    }
}

impl<T: Element> Panels<T> {
    fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert!(w.len() >= n * k, "Panels: weight shorter than n * k (bug)");
        let panels = n.div_ceil(PANEL);
        let mut data = vec![T::default(); panels * k * PANEL];
        for (p, panel) in data.chunks_mut(k * PANEL).enumerate() {
            for l in 0..PANEL.min(n - p * PANEL) {
                let row = &w[(p * PANEL + l) * k..(p * PANEL + l + 1) * k];
                for (kk, &v) in row.iter().enumerate() {
                    panel[kk * PANEL + l] = T::from_f32(v);
                }
            }
        }
        Panels { k, n, data }
    }

    /// Input width.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output width.
    pub fn n(&self) -> usize {
        self.n
    }
}

/// `out[m, n] = x[m, k] W^T + bias` (then GELU when `gelu`), rows row-major. With
/// `threads > 1` the panels are split between rayon workers. Panics when a slice is
/// shorter than its shape (a bug in the caller).
pub fn small_linear<T: Element>(
    x: &[f32],
    m: usize,
    w: &Panels<T>,
    bias: &[f32],
    gelu: bool,
    out: &mut [f32],
    threads: usize,
) {
    let (k, n) = (w.k, w.n);
    assert!(x.len() >= m * k, "small_linear: x shorter than m * k (bug)");
    assert!(
        out.len() >= m * n,
        "small_linear: out shorter than m * n (bug)"
    );
    assert_eq!(bias.len(), n, "small_linear: bias length (bug)");
    let panels = n.div_ceil(PANEL);
    let parts = threads.clamp(1, panels);
    if parts == 1 {
        panel_range(x, m, k, &w.data, bias, 0, panels, n, out, n, gelu);
        return;
    }
    // Each worker fills its own column block; the blocks are then copied into place.
    let per = panels.div_ceil(parts);
    use rayon::prelude::*;
    let blocks: Vec<(usize, usize, Vec<f32>)> = (0..parts)
        .into_par_iter()
        .map(|t| {
            let (p0, p1) = (t * per, ((t + 1) * per).min(panels));
            let c0 = p0 * PANEL;
            let width = (p1 * PANEL).min(n).saturating_sub(c0);
            let mut block = vec![0f32; m * width];
            if width > 0 {
                let data = &w.data[p0 * k * PANEL..p1 * k * PANEL];
                panel_range(
                    x,
                    m,
                    k,
                    data,
                    &bias[c0..c0 + width],
                    0,
                    p1 - p0,
                    width,
                    &mut block,
                    width,
                    gelu,
                );
            }
            (c0, width, block)
        })
        .collect();
    for (c0, width, block) in blocks {
        if width == 0 {
            continue;
        }
        for (r, row) in block.chunks(width).enumerate() {
            out[r * n + c0..r * n + c0 + width].copy_from_slice(row);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn panel_range<T: Element>(
    x: &[f32],
    m: usize,
    k: usize,
    data: &[T],
    bias: &[f32],
    p0: usize,
    p1: usize,
    n: usize,
    out: &mut [f32],
    out_rs: usize,
    gelu: bool,
) {
    struct Kernel<'a, T> {
        x: &'a [f32],
        m: usize,
        k: usize,
        data: &'a [T],
        bias: &'a [f32],
        p0: usize,
        p1: usize,
        n: usize,
        out: &'a mut [f32],
        out_rs: usize,
        gelu: bool,
    }
    impl<T: Element> pulp::WithSimd for Kernel<'_, T> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _simd: S) {
            let Kernel {
                x,
                m,
                k,
                data,
                bias,
                p0,
                p1,
                n,
                out,
                out_rs,
                gelu,
            } = self;
            // Panels outer, row blocks inner: each panel is read from memory once
            // and stays in L1/L2 while every block of rows uses it.
            for p in p0..p1 {
                let panel = &data[p * k * PANEL..(p + 1) * k * PANEL];
                let c0 = p * PANEL;
                let width = PANEL.min(n - c0);
                let mut b = [0f32; PANEL];
                b[..width].copy_from_slice(&bias[c0..c0 + width]);
                let mut r0 = 0;
                while r0 < m {
                    let rows = ROWS.min(m - r0);
                    let xs = &x[r0 * k..(r0 + rows) * k];
                    let mut acc = [[0f32; PANEL]; ROWS];
                    tile(xs, rows, k, panel, &b, &mut acc);
                    for (r, a) in acc.iter_mut().take(rows).enumerate() {
                        if gelu {
                            for v in a.iter_mut() {
                                *v = crate::gelu(*v);
                            }
                        }
                        let o = (r0 + r) * out_rs + c0;
                        out[o..o + width].copy_from_slice(&a[..width]);
                    }
                    r0 += rows;
                }
            }
        }
    }
    pulp::Arch::new().dispatch(Kernel {
        x,
        m,
        k,
        data,
        bias,
        p0,
        p1,
        n,
        out,
        out_rs,
        gelu,
    })
}

/// `rows` rows of `x` (each `k` long) times one panel, plus `bias`, into `acc[..rows]`.
#[inline(always)]
#[allow(unsafe_code)]
fn tile<T: Element>(
    x: &[f32],
    rows: usize,
    k: usize,
    panel: &[T],
    bias: &[f32; PANEL],
    acc: &mut [[f32; PANEL]; ROWS],
) {
    assert!(rows <= ROWS && x.len() >= rows * k && panel.len() >= k * PANEL);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        macro_rules! dispatch {
            ($($r:literal)*) => {
                match rows {
                    // SAFETY: AVX-512F was detected just above, and the assert above
                    // is the bounds contract `tile_avx512` documents.
                    $($r => unsafe { tile_avx512::<T, $r>(x, k, panel, bias, acc) },)*
                    _ => {}
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
        return;
    }
    acc[..rows].fill(*bias);
    for (kk, w) in panel.chunks_exact(PANEL).take(k).enumerate() {
        for (r, a) in acc.iter_mut().take(rows).enumerate() {
            let v = x[r * k + kk];
            for (a, w) in a.iter_mut().zip(w) {
                *a += v * w.to_f32();
            }
        }
    }
}

/// [`tile`] with `R` accumulators held in AVX-512 registers.
///
/// # Safety
/// The CPU must support AVX-512F; `x` must hold `R * k` floats and `panel` `k * 16`
/// elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(unsafe_code)]
unsafe fn tile_avx512<T: Element, const R: usize>(
    x: &[f32],
    k: usize,
    panel: &[T],
    bias: &[f32; PANEL],
    acc: &mut [[f32; PANEL]; ROWS],
) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): every pointer offset stays below `R * k` into `x` and
    // `k * PANEL` into `panel`, which the caller guarantees; `acc` rows and `bias`
    // are arrays of exactly 16 floats.
    unsafe {
        let b = _mm512_loadu_ps(bias.as_ptr());
        let mut a = [b; R];
        let (xp, wp) = (x.as_ptr(), panel.as_ptr());
        for kk in 0..k {
            // A hint 2 KB ahead (the pointer may pass the end: prefetches never fault).
            let ahead = 2048 / std::mem::size_of::<T>();
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(kk * PANEL + ahead).cast());
            let w = T::load16(wp.add(kk * PANEL));
            for (r, a) in a.iter_mut().enumerate() {
                let v = _mm512_set1_ps(*xp.add(r * k + kk));
                *a = _mm512_fmadd_ps(v, w, *a);
            }
        }
        for (dst, a) in acc.iter_mut().zip(a) {
            _mm512_storeu_ps(dst.as_mut_ptr(), a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], m: usize, w: &[f32], n: usize, k: usize, b: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for j in 0..n {
                let mut s = b[j] as f64;
                for kk in 0..k {
                    s += x[r * k + kk] as f64 * w[j * k + kk] as f64;
                }
                out[r * n + j] = s as f32;
            }
        }
        out
    }

    #[test]
    fn matches_a_plain_matmul_for_odd_shapes_and_threads() {
        let mut rng = crate::test_floats(7);
        for &(m, n, k) in &[
            (1, 1, 1),
            (14, 1152, 384),
            (9, 37, 5),
            (17, 16, 33),
            (3, 100, 64),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| rng()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rng()).collect();
            let b: Vec<f32> = (0..n).map(|_| rng()).collect();
            let want = reference(&x, m, &w, n, k, &b);
            let p = Panels::from_weight(&w, n, k);
            for threads in [1, 2, 3] {
                let mut out = vec![f32::NAN; m * n];
                small_linear(&x, m, &p, &b, false, &mut out, threads);
                for (g, w) in out.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                        "{m}x{n}x{k}: {g} vs {w}"
                    );
                }
                let mut gl = vec![0f32; m * n];
                small_linear(&x, m, &p, &b, true, &mut gl, threads);
                for (g, w) in gl.iter().zip(&want) {
                    assert!((g - crate::gelu(*w)).abs() <= 1e-4 * (1.0 + w.abs()));
                }
            }
        }
    }
}
