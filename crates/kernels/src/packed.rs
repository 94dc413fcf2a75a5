//! The packed bf16 form of a GEMM's `B` that both bf16 backends read ([`crate::amx`]
//! and [`crate::bf16`]'s AVX512_BF16 kernel), its [`Layout`], and the bf16
//! conversions. Neither backend owns it, so neither imports the other for it.

use crate::Mat;

/// Rounds to the nearest bf16, ties to even (NaN payloads are not preserved).
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    ((b.wrapping_add(0x7fff + ((b >> 16) & 1))) >> 16) as u16
}

/// The f32 value of a bf16.
#[inline(always)]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// How a [`PackedB`] orders its pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[kp / 2][np][2]`: the layout AMX's `tdpbf16ps` reads with a row stride.
    Pairs,
    /// 32-column strips `[np / 32][kp / 2][32][2]`, each streaming through memory in
    /// order: what the AVX512_BF16 kernel reads fastest (it reads both).
    Strips,
}

impl Layout {
    /// The layout of this CPU's bf16 unit ([`crate::unit::backend`]), chosen once.
    pub fn native() -> Layout {
        match crate::unit::backend() {
            Some(crate::unit::Backend::Avx512Bf16) => Layout::Strips,
            _ => Layout::Pairs,
        }
    }
}

/// `B [k, n]` in bf16, padded to multiples of 32, pairs of consecutive `k` of one column
/// side by side ("VNNI"), in a [`Layout`].
pub struct PackedB {
    data: Vec<u16>,
    k: usize,
    n: usize,
    kp: usize,
    np: usize,
    layout: Layout,
}

impl PackedB {
    /// Packs the `k x n` matrix that `b` views (element `(r, c)` at `r * rs + c * cs`)
    /// in the layout of this CPU's bf16 unit ([`Layout::native`]).
    pub fn new(b: Mat, k: usize, n: usize) -> Self {
        Self::with_layout(b, k, n, Layout::native())
    }

    /// [`PackedB::new`] in a chosen layout. Packs on all threads, with a branch-free inner loop where
    /// a whole 32-column block of two rows is inside the matrix: training packs weights
    /// and activations at every step, so this is on the hot path there.
    pub fn with_layout(b: Mat, k: usize, n: usize, layout: Layout) -> Self {
        use rayon::prelude::*;
        let (kp, np) = (k.div_ceil(32) * 32, n.div_ceil(32) * 32);
        let mut data = vec![0u16; kp * np];
        let kh = kp / 2;
        let at = |r: usize, c: usize| {
            if r < k && c < n {
                to_bf16(b.data[r * b.rs + c * b.cs])
            } else {
                0
            }
        };
        // Columns c0..c0 + 32 of rows 2p and 2p + 1, interleaved into `out` (64 values).
        let block = |p: usize, c0: usize, out: &mut [u16]| {
            let (r0, r1) = (2 * p, 2 * p + 1);
            if b.cs == 1 && r1 < k && c0 + 32 <= n {
                let x0 = &b.data[r0 * b.rs + c0..r0 * b.rs + c0 + 32];
                let x1 = &b.data[r1 * b.rs + c0..r1 * b.rs + c0 + 32];
                for ((o, &v0), &v1) in out.chunks_exact_mut(2).zip(x0).zip(x1) {
                    o[0] = to_bf16(v0);
                    o[1] = to_bf16(v1);
                }
            } else if b.rs == 1 && r1 < k && c0 + 32 <= n {
                // Column-major source (a transposed view): each pair is two adjacent
                // floats of one column.
                for (cc, o) in out.chunks_exact_mut(2).enumerate() {
                    let at = (c0 + cc) * b.cs + r0;
                    o[0] = to_bf16(b.data[at]);
                    o[1] = to_bf16(b.data[at + 1]);
                }
            } else {
                for (cc, o) in out.chunks_exact_mut(2).enumerate() {
                    o[0] = at(r0, c0 + cc);
                    o[1] = at(r1, c0 + cc);
                }
            }
        };
        if layout == Layout::Strips {
            // Strip s holds columns 32s..32s + 32 of every pair of rows, in order.
            data.par_chunks_mut(kh * 64)
                .enumerate()
                .for_each(|(s, strip)| {
                    for (p, out) in strip.chunks_exact_mut(64).enumerate() {
                        block(p, s * 32, out);
                    }
                });
        } else {
            // Pair-row p holds every column of rows 2p and 2p + 1.
            data.par_chunks_mut(np * 2)
                .enumerate()
                .for_each(|(p, row)| {
                    for (cb, out) in row.chunks_exact_mut(64).enumerate() {
                        block(p, cb * 32, out);
                    }
                });
        }
        PackedB {
            data,
            k,
            n,
            kp,
            np,
            layout,
        }
    }

    /// The order of the packed pairs.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Rows (`k`) of the packed matrix.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns (`n`) of the packed matrix.
    pub fn n(&self) -> usize {
        self.n
    }

    /// `k` padded to a multiple of 32 (pairs per column: `kp / 2`).
    pub fn kp(&self) -> usize {
        self.kp
    }

    /// `n` padded to a multiple of 32 (the row stride of the packed data, in columns).
    pub fn np(&self) -> usize {
        self.np
    }

    /// The packed bf16 values, in the order [`PackedB::layout`] names.
    pub fn data(&self) -> &[u16] {
        &self.data
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 2
    }
}

/// Panics (a bug in the caller) unless `a` reaches `m x b.k()` and `c` (row stride
/// `c_rs`) reaches `m x b.n()`; `m` and `b.n()` must be non-zero.
pub(crate) fn check_views(m: usize, a: Mat, b: &PackedB, c: &[f32], c_rs: usize, what: &str) {
    let (k, n) = (b.k, b.n);
    assert!(
        k == 0 || (m - 1) * a.rs + (k - 1) * a.cs < a.data.len(),
        "{what}: lhs view out of bounds (bug)"
    );
    assert!(
        (m - 1) * c_rs + n <= c.len() && c_rs >= n,
        "{what}: dst view out of bounds (bug)"
    );
}
