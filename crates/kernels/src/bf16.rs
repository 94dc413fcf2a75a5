//! bf16 matrix multiply on whichever unit the CPU has, chosen at run time: Intel AMX
//! tiles ([`crate::amx`]) or the AVX512_BF16 dot product `vdpbf16ps` (AMD Zen 4/5,
//! Intel Cooper Lake and later). Both read the same [`PackedB`] (pairs of `k` side by
//! side, "VNNI" layout), round `A` to bf16 row by row, and accumulate in f32, so both
//! have the same accuracy: only the rounding of the two inputs to 8 significant bits.
//!
//! `vdpbf16ps` multiplies 16 pairs per instruction, twice an f32 FMA's 16 products;
//! the kernel below holds a 12 x 32 block of `C` in 24 AVX-512 registers and streams
//! one 32-column slice of `B` per row block. Measured by `cargo run --release -p
//! uae-kernels --example gemm_shapes`.

pub use crate::packed::{from_bf16, to_bf16, Layout, PackedB};
pub use crate::unit::{avx512bf16, backend, Backend};
use crate::Mat;

/// What a caller without any bf16 unit should tell its user.
pub const UNAVAILABLE: &str =
    "needs a CPU with AMX (Intel Sapphire Rapids or later) or AVX512_BF16 (AMD Zen 4 or later, Intel Cooper Lake or later); run in f32";

/// `c[m x n] = (accumulate ? c : 0) + a[m x k] * b`, `c` with row stride `c_rs`, on
/// `threads` threads, through [`backend`]. Call only when [`backend`] is `Some`.
///
/// Panics (a bug in the caller) if the views are out of bounds or no bf16 unit exists.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    a: Mat,
    b: &PackedB,
    c: &mut [f32],
    c_rs: usize,
    accumulate: bool,
    threads: usize,
) {
    match backend() {
        Some(Backend::Amx) => crate::amx::gemm(m, a, b, c, c_rs, accumulate, threads),
        Some(Backend::Avx512Bf16) => dp::gemm(m, a, b, c, c_rs, accumulate, threads),
        None => panic!("bf16::gemm without a bf16 unit (bug)"),
    }
}

/// `c[m x n] = gelu?(a[m x k] * b + bias) + residual?` (`c` and `residual` dense, row
/// stride `n`): a linear layer, and the residual sum after it. On AVX512_BF16 the
/// bias seeds the accumulators, the residual is added as they are stored, and GELU
/// runs on each register tile right after, while it is in L1; the AMX path does them
/// in passes over `c`. Call only when [`backend`] is `Some`.
///
/// Panics (a bug in the caller) if `bias` is not `n` long, `residual` not `m * n`,
/// both `gelu` and `residual` are asked for, or the views are out of bounds.
#[allow(clippy::too_many_arguments)]
pub fn gemm_linear(
    m: usize,
    a: Mat,
    b: &PackedB,
    c: &mut [f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    gelu: bool,
    threads: usize,
) {
    let n = b.n();
    assert_eq!(bias.len(), n, "bf16::gemm_linear: bias length (bug)");
    assert!(
        residual.is_none_or(|r| r.len() == m * n) && !(gelu && residual.is_some()),
        "bf16::gemm_linear: residual (bug)"
    );
    match backend() {
        Some(Backend::Amx) => {
            // The passes run on all threads, as the encoder's did before they moved
            // here.
            use rayon::prelude::*;
            c[..m * n]
                .par_chunks_mut(n.max(1))
                .enumerate()
                .for_each(|(r, row)| match residual {
                    Some(res) => row
                        .iter_mut()
                        .zip(&res[r * n..(r + 1) * n])
                        .zip(bias)
                        .for_each(|((o, x), b)| *o = x + b),
                    None => row.copy_from_slice(bias),
                });
            crate::amx::gemm(m, a, b, c, n, true, threads);
            if gelu {
                c[..m * n]
                    .par_chunks_mut(4096)
                    .for_each(crate::gelu_inplace);
            }
        }
        Some(Backend::Avx512Bf16) => dp::gemm_with(
            m,
            a,
            b,
            c,
            n,
            dp::Epilogue {
                accumulate: false,
                bias: Some(bias),
                residual,
                gelu,
            },
            threads,
        ),
        None => panic!("bf16::gemm_linear without a bf16 unit (bug)"),
    }
}

/// Rows of `C` per register block.
const MR: usize = 12;
/// Columns of `C` per register block (two AVX-512 registers).
const NR: usize = 32;

mod dp {
    use super::{to_bf16, Mat, PackedB, MR, NR};

    /// What a register tile does with its sums: add them onto `c` (`accumulate`),
    /// start them from `bias` (indexed by column), add `residual` (laid out as `c`)
    /// as they are stored, and apply GELU after.
    #[derive(Clone, Copy)]
    pub(super) struct Epilogue<'e> {
        pub accumulate: bool,
        pub bias: Option<&'e [f32]>,
        pub residual: Option<&'e [f32]>,
        pub gelu: bool,
    }

    pub(super) fn gemm(
        m: usize,
        a: Mat,
        b: &PackedB,
        c: &mut [f32],
        c_rs: usize,
        accumulate: bool,
        threads: usize,
    ) {
        let epi = Epilogue {
            accumulate,
            bias: None,
            residual: None,
            gelu: false,
        };
        gemm_with(m, a, b, c, c_rs, epi, threads)
    }

    pub(super) fn gemm_with(
        m: usize,
        a: Mat,
        b: &PackedB,
        c: &mut [f32],
        c_rs: usize,
        epi: Epilogue,
        threads: usize,
    ) {
        let (k, n) = (b.k(), b.n());
        if m == 0 || n == 0 {
            return;
        }
        assert!(super::avx512bf16(), "vdpbf16ps without AVX512_BF16 (bug)");
        crate::packed::check_views(m, a, b, c, c_rs, "bf16::gemm");
        // A as bf16 pairs: row r, pair j = (a[r, 2j], a[r, 2j + 1]) in one u32.
        let kh = b.kp() / 2;
        let mut pairs = vec![0u32; m * kh];
        let convert = |(r, row): (usize, &mut [u32])| {
            if a.cs == 1 {
                // SAFETY: AVX-512F is present (asserted above); the row of `a` is
                // `k` floats from `r * a.rs` (check_views) and `row` holds `kh >= k / 2`
                // pairs.
                #[allow(unsafe_code)]
                unsafe {
                    round_row(&a.data[r * a.rs..r * a.rs + k], row)
                };
                return;
            }
            let at = |j: usize| {
                if j < k {
                    to_bf16(a.data[r * a.rs + j * a.cs]) as u32
                } else {
                    0
                }
            };
            for (j, p) in row.iter_mut().enumerate() {
                *p = at(2 * j) | (at(2 * j + 1) << 16);
            }
        };
        // A transposed view (row r of A is column r of a row-major matrix, as for a
        // weight gradient `g^T x`): bands of 16 rows, so that each step reads 16
        // adjacent floats instead of one float per cache line.
        let transposed = |(bi, band): (usize, &mut [u32])| {
            let r0 = bi * 16;
            let rows = band.len() / kh;
            let zeros = [0f32; 16];
            // Row t of the stored matrix, columns r0..r0 + rows (zeros past k).
            let src = |t: usize| -> &[f32] {
                if t < k {
                    &a.data[t * a.cs + r0..t * a.cs + r0 + rows]
                } else {
                    &zeros[..rows]
                }
            };
            // 16 pairs x 16 rows at a time: rounded in vector-friendly loops into
            // `tmp`, then written out as 16-pair runs of each row.
            let mut tmp = [[0u32; 16]; 16];
            for j0 in (0..kh).step_by(16) {
                let jn = 16.min(kh - j0);
                for (jj, t) in tmp.iter_mut().enumerate().take(jn) {
                    let (lo, hi) = (src(2 * (j0 + jj)), src(2 * (j0 + jj) + 1));
                    for ((d, &l), &h) in t.iter_mut().zip(lo).zip(hi) {
                        *d = to_bf16(l) as u32 | ((to_bf16(h) as u32) << 16);
                    }
                }
                for rr in 0..rows {
                    let out = &mut band[rr * kh + j0..rr * kh + j0 + jn];
                    for (jj, d) in out.iter_mut().enumerate() {
                        *d = tmp[jj][rr];
                    }
                }
            }
        };
        let par = threads > 1 && m >= 64;
        match (a.rs == 1 && a.cs != 1, par) {
            (true, true) => {
                use rayon::prelude::*;
                pairs
                    .par_chunks_mut(16 * kh)
                    .enumerate()
                    .for_each(transposed);
            }
            (true, false) => pairs.chunks_mut(16 * kh).enumerate().for_each(transposed),
            (false, true) => {
                use rayon::prelude::*;
                pairs.par_chunks_mut(kh).enumerate().for_each(convert);
            }
            (false, false) => pairs.chunks_mut(kh).enumerate().for_each(convert),
        }
        let rows_per = if threads > 1 && m >= 2 * MR * threads {
            m.div_ceil(threads).div_ceil(MR) * MR
        } else {
            m
        };
        let work = |(t, c): (usize, &mut [f32])| {
            let r0 = t * rows_per;
            let rows = rows_per.min(m - r0);
            // The band's own rows of the residual, aligned with `c`'s.
            let epi = Epilogue {
                residual: epi.residual.map(|res| &res[r0 * c_rs..]),
                ..epi
            };
            block_rows(&pairs[r0 * kh..(r0 + rows) * kh], rows, kh, b, c, c_rs, epi);
        };
        // Row bands of `c`; the last band may be shorter than `rows_per * c_rs`.
        let bands: Vec<(usize, &mut [f32])> = c.chunks_mut(rows_per * c_rs).enumerate().collect();
        if bands.len() > 1 {
            use rayon::prelude::*;
            bands.into_par_iter().for_each(work);
        } else {
            bands.into_iter().for_each(work);
        }
    }

    /// Rounds the floats `src` to bf16 pairs in `dst` (zeros past the end): 16 at a time
    /// with AVX-512F integer ops computing exactly [`to_bf16`]'s round-to-nearest-even.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `dst` must hold at least `src.len() / 2` pairs.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[allow(unsafe_code)]
    pub(super) unsafe fn round_row(src: &[f32], dst: &mut [u32]) {
        use std::arch::x86_64::*;
        assert!(dst.len() * 2 >= src.len());
        let full = src.len() / 16 * 16;
        // SAFETY (whole body): 16 floats are read at i < full <= src.len() - 15, and
        // 16 u16 (8 pairs) written at pair i / 2 < dst.len() - 7.
        unsafe {
            let out = dst.as_mut_ptr().cast::<u16>();
            let bias = _mm512_set1_epi32(0x7fff);
            let one = _mm512_set1_epi32(1);
            for i in (0..full).step_by(16) {
                let bits = _mm512_loadu_si512(src.as_ptr().add(i).cast());
                let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), one);
                let r =
                    _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, _mm512_add_epi32(bias, odd)));
                _mm256_storeu_si256(out.add(i).cast(), _mm512_cvtepi32_epi16(r));
            }
        }
        let tail = dst[full / 2..].iter_mut();
        let at = |j: usize| src.get(j).map_or(0, |&x| to_bf16(x) as u32);
        for (j, p) in (full / 2..).zip(tail) {
            *p = at(2 * j) | (at(2 * j + 1) << 16);
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[allow(unsafe_code)]
    pub(super) unsafe fn round_row(_src: &[f32], _dst: &mut [u32]) {
        unreachable!("AVX512_BF16 is x86-64 only")
    }

    /// `rows` rows of pairs times all of `b` into the band `c`.
    fn block_rows(
        pairs: &[u32],
        rows: usize,
        kh: usize,
        b: &PackedB,
        c: &mut [f32],
        c_rs: usize,
        epi: Epilogue,
    ) {
        let (n, np) = (b.n(), b.np());
        let data = b.data();
        // Where pair 0 of columns c0..c0 + 32 starts, and the step from pair j to j + 1.
        let strips = b.layout() == crate::packed::Layout::Strips;
        let stride = if strips { 2 * NR } else { 2 * np };
        let start = |c0: usize| {
            if strips {
                c0 / NR * kh * 2 * NR
            } else {
                c0 * 2
            }
        };
        for c0 in (0..n).step_by(NR) {
            let cols = NR.min(n - c0);
            let bs = &data[start(c0)..];
            for r0 in (0..rows).step_by(MR) {
                let rr = MR.min(rows - r0);
                let a = &pairs[r0 * kh..(r0 + rr) * kh];
                let dst = &mut c[r0 * c_rs + c0..];
                let bias = epi.bias.map(|b| &b[c0..c0 + cols]);
                let res = epi.residual.map(|res| &res[r0 * c_rs + c0..]);
                tile(
                    a,
                    rr,
                    kh,
                    bs,
                    stride,
                    dst,
                    c_rs,
                    cols,
                    epi.accumulate,
                    bias,
                    res,
                );
                if epi.gelu {
                    for r in 0..rr {
                        crate::gelu_inplace(&mut dst[r * c_rs..r * c_rs + cols]);
                    }
                }
            }
        }
    }

    /// `rr` rows of pairs (each `kh` long) times a 32-column slice of the packed `b`
    /// (pair j of its columns: 64 u16 at `j * stride`) into (or onto, with
    /// `accumulate`) the first `cols` floats of `rr` rows of `c` (row stride `c_rs`),
    /// plus `bias` (`cols` floats) and `res` (laid out as `c`) when given.
    #[allow(unsafe_code, clippy::too_many_arguments)]
    fn tile(
        a: &[u32],
        rr: usize,
        kh: usize,
        b: &[u16],
        stride: usize,
        c: &mut [f32],
        c_rs: usize,
        cols: usize,
        accumulate: bool,
        bias: Option<&[f32]>,
        res: Option<&[f32]>,
    ) {
        assert!(rr <= MR && a.len() >= rr * kh && cols <= NR && stride >= 2 * NR);
        assert!(bias.is_none_or(|b| b.len() == cols));
        assert!(rr == 0 || res.is_none_or(|r| (rr - 1) * c_rs + cols <= r.len()));
        assert!(kh == 0 || (kh - 1) * stride + 2 * NR <= b.len());
        assert!(rr > 0 && (rr - 1) * c_rs + cols <= c.len());
        macro_rules! dispatch {
            ($($r:literal)*) => {
                match rr {
                    // SAFETY: `gemm` asserted AVX512_BF16; the asserts above are the
                    // bounds contract of `tile_dp`.
                    $($r => unsafe { tile_dp::<$r>(a, kh, b, stride, c, c_rs, cols, accumulate, bias, res) },)*
                    _ => {}
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8 9 10 11 12);
    }

    /// # Safety
    /// The CPU must have AVX-512F and AVX512_BF16; `a` holds `R * kh` pairs, `b`
    /// reaches `(kh - 1) * stride + 64` elements, `cols <= 32` and `c` reaches
    /// `(R - 1) * c_rs + cols` floats, and so does `res` if given; `bias`, if given,
    /// holds `cols` floats.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(unsafe_code, clippy::too_many_arguments)]
    unsafe fn tile_dp<const R: usize>(
        a: &[u32],
        kh: usize,
        b: &[u16],
        stride: usize,
        c: &mut [f32],
        c_rs: usize,
        cols: usize,
        accumulate: bool,
        bias: Option<&[f32]>,
        res: Option<&[f32]>,
    ) {
        use std::arch::x86_64::*;
        // SAFETY (whole body): offsets stay inside `a`, `b`, `c` and `bias` per the
        // contract above (loads and stores are masked to `cols`); `__m512i` and
        // `__m512bh` are both 512-bit vectors.
        unsafe {
            let mask = |from: usize| -> __mmask16 {
                let n = cols.saturating_sub(from).min(16);
                ((1u32 << n) - 1) as __mmask16
            };
            let (m0, m1) = (mask(0), mask(16));
            let seed = match bias {
                Some(bv) => [
                    _mm512_maskz_loadu_ps(m0, bv.as_ptr()),
                    _mm512_maskz_loadu_ps(m1, bv.as_ptr().wrapping_add(16)),
                ],
                None => [_mm512_setzero_ps(); 2],
            };
            let mut acc = [seed; R];
            let (ap, bp) = (a.as_ptr(), b.as_ptr());
            for j in 0..kh {
                let bj = bp.add(j * stride);
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bj.cast()));
                let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bj.add(32).cast()));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*ap.add(r * kh + j) as i32));
                    acc[0] = _mm512_dpbf16_ps(acc[0], x, b0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], x, b1);
                }
            }
            let cp = c.as_mut_ptr();
            for (r, acc) in acc.iter().enumerate() {
                let row = cp.add(r * c_rs);
                let (mut v0, mut v1) = (acc[0], acc[1]);
                if accumulate {
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, row.wrapping_add(16)));
                }
                if let Some(res) = res {
                    let x = res.as_ptr().add(r * c_rs);
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, x));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, x.wrapping_add(16)));
                }
                _mm512_mask_storeu_ps(row, m0, v0);
                _mm512_mask_storeu_ps(row.wrapping_add(16), m1, v1);
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[allow(unsafe_code, clippy::too_many_arguments)]
    unsafe fn tile_dp<const R: usize>(
        _a: &[u32],
        _kh: usize,
        _b: &[u16],
        _stride: usize,
        _c: &mut [f32],
        _c_rs: usize,
        _cols: usize,
        _accumulate: bool,
        _bias: Option<&[f32]>,
        _res: Option<&[f32]>,
    ) {
        unreachable!("AVX512_BF16 is x86-64 only")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "hardware: needs AVX512_BF16; scripts/test.sh runs it where the CPU has it"]
    #[allow(unsafe_code)]
    fn hw_avx512bf16_vector_rounding_equals_scalar_rounding() {
        assert!(avx512bf16(), "needs AVX512_BF16: run where the CPU has it");
        let mut rng = crate::test_floats(5);
        for len in [0, 1, 15, 16, 17, 33, 384] {
            let mut src: Vec<f32> = (0..len).map(|_| rng() * 1e3).collect();
            // Ties and specials: halfway cases round to even, signs and zeros kept.
            for (i, v) in [
                f32::from_bits(0x3f80_8000),
                f32::from_bits(0x3f81_8000),
                -0.0,
                f32::INFINITY,
                1e-40,
            ]
            .into_iter()
            .enumerate()
            {
                if i < len {
                    src[i] = v;
                }
            }
            let mut dst = vec![7u32; len.div_ceil(32) * 16 + 1];
            // SAFETY: AVX-512F checked above; dst holds more than len / 2 pairs.
            unsafe { dp::round_row(&src, &mut dst) };
            for (j, &p) in dst.iter().enumerate() {
                let at = |t: usize| src.get(t).map_or(0, |&x| to_bf16(x) as u32);
                assert_eq!(p, at(2 * j) | (at(2 * j + 1) << 16), "len {len} pair {j}");
            }
        }
    }

    #[test]
    #[ignore = "hardware: needs AVX512_BF16; scripts/test.sh runs it where the CPU has it"]
    fn hw_avx512bf16_matches_f32_within_bf16_rounding() {
        assert!(avx512bf16(), "needs AVX512_BF16: run where the CPU has it");
        let mut rng = crate::test_floats(11);
        for &(m, n, k) in &[
            (1, 1, 1),
            (37, 70, 45),
            (64, 96, 384),
            (9, 33, 2),
            (130, 40, 17),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rng()).collect();
            let bm: Vec<f32> = (0..k * n).map(|_| rng()).collect();
            for (layout, threads, accumulate) in [
                (Layout::Strips, 1, false),
                (Layout::Strips, 2, true),
                (Layout::Pairs, 3, false),
                (Layout::Pairs, 2, true),
            ] {
                let packed = PackedB::with_layout(
                    Mat {
                        data: &bm,
                        rs: n,
                        cs: 1,
                    },
                    k,
                    n,
                    layout,
                );
                let c_rs = n + 3;
                let mut c = vec![1.0f32; m * c_rs];
                dp::gemm(
                    m,
                    Mat {
                        data: &a,
                        rs: k,
                        cs: 1,
                    },
                    &packed,
                    &mut c,
                    c_rs,
                    accumulate,
                    threads,
                );
                // The same A as a transposed view (its transpose stored row-major), as
                // a weight gradient passes it: the same pairs, so the same bits.
                let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
                let mut ct = vec![1.0f32; m * c_rs];
                dp::gemm(
                    m,
                    Mat {
                        data: &at,
                        rs: 1,
                        cs: m,
                    },
                    &packed,
                    &mut ct,
                    c_rs,
                    accumulate,
                    threads,
                );
                assert_eq!(c, ct, "{m}x{n}x{k}: transposed A");
                for r in 0..m {
                    for j in 0..n {
                        // Reference on the bf16-rounded inputs, in f64.
                        let want: f64 = (0..k)
                            .map(|t| {
                                from_bf16(to_bf16(a[r * k + t])) as f64
                                    * from_bf16(to_bf16(bm[t * n + j])) as f64
                            })
                            .sum::<f64>()
                            + if accumulate { 1.0 } else { 0.0 };
                        let got = c[r * c_rs + j] as f64;
                        assert!(
                            (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                            "{m}x{n}x{k} ({r},{j}): {got} vs {want}"
                        );
                    }
                    // The padding past n is never written.
                    for j in n..c_rs {
                        if r * c_rs + j < c.len() {
                            assert_eq!(c[r * c_rs + j], 1.0);
                        }
                    }
                }
            }
        }
    }

    /// The fused linear layer equals bias + GEMM (+ GELU, or + residual) in passes, on
    /// whichever bf16 unit this CPU has.
    #[test]
    #[ignore = "hardware: needs AMX or AVX512_BF16; scripts/test.sh runs it where the CPU has it"]
    fn hw_bf16_gemm_linear_fuses_bias_and_gelu() {
        assert!(
            backend().is_some(),
            "needs a bf16 unit: run where the CPU has one"
        );
        let mut rng = crate::test_floats(5);
        for &(m, n, k) in &[(1, 1, 1), (37, 70, 45), (130, 40, 17), (64, 96, 384)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng()).collect();
            let bm: Vec<f32> = (0..k * n).map(|_| rng()).collect();
            let bias: Vec<f32> = (0..n).map(|_| rng()).collect();
            let packed = PackedB::new(
                Mat {
                    data: &bm,
                    rs: n,
                    cs: 1,
                },
                k,
                n,
            );
            let am = Mat {
                data: &a,
                rs: k,
                cs: 1,
            };
            let res: Vec<f32> = (0..m * n).map(|_| rng()).collect();
            for (gelu, residual, threads) in [(false, false, 1), (true, false, 2), (false, true, 2)]
            {
                let mut want = vec![0f32; m * n];
                want.chunks_mut(n).for_each(|r| r.copy_from_slice(&bias));
                gemm(m, am, &packed, &mut want, n, true, threads);
                if gelu {
                    crate::gelu_inplace(&mut want);
                }
                if residual {
                    want.iter_mut().zip(&res).for_each(|(w, r)| *w += r);
                }
                let mut got = vec![f32::NAN; m * n];
                let r = residual.then_some(&res[..]);
                gemm_linear(m, am, &packed, &mut got, &bias, r, gelu, threads);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{m}x{n}x{k} gelu {gelu} at {i}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
