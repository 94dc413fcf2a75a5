//! bf16 matrix multiply on Intel AMX tiles (Sapphire Rapids and later), for inference.
//!
//! `C (+)= A B` with `A` given in f32 (rounded to bf16 row block by row block) and `B`
//! packed once into bf16 pairs ("VNNI" layout) by [`PackedB::new`]. Products accumulate
//! in f32 inside the tiles, so the only loss against f32 is rounding both inputs to
//! bf16 (8 significant bits): about 1e-3 relative per product, averaging out over `k`.
//! That is why this path is opt-in (`--bf16` in the CLI) and the f32 [`crate::sgemm`]
//! stays the default: the parity tests against PyTorch run in f32.
//!
//! The kernel holds a 32 x 32 block of `C` in four tiles (tmm0-3) and streams 32 x 32
//! slices of `A` (tmm4-5) and `B` (tmm6-7) through `tdpbf16ps`; one such instruction
//! is 16 x 16 x 32 multiply-adds. Measured by `cargo run --release -p uae-kernels
//! --example gemm_shapes`.

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

/// `B [k, n]` in bf16, padded to multiples of 32, pairs of consecutive `k` of one column
/// side by side ("VNNI"), in one of two orders: `[kp / 2][np][2]`, the layout AMX's
/// `tdpbf16ps` reads with a row stride; or, for the AVX512_BF16 kernel, 32-column
/// strips `[np / 32][kp / 2][32][2]`, so that a strip streams through memory in order.
pub struct PackedB {
    data: Vec<u16>,
    k: usize,
    n: usize,
    kp: usize,
    np: usize,
    strips: bool,
}

impl PackedB {
    /// Packs the `k x n` matrix that `b` views (element `(r, c)` at `r * rs + c * cs`)
    /// in the layout of this CPU's bf16 unit ([`crate::bf16::backend`]).
    pub fn new(b: Mat, k: usize, n: usize) -> Self {
        let strips = crate::bf16::backend() == Some(crate::bf16::Backend::Avx512Bf16);
        Self::with_layout(b, k, n, strips)
    }

    /// [`PackedB::new`] in a chosen layout: `strips` for the AVX512_BF16 kernel (which
    /// reads both), else AMX's. Packs on all threads, with a branch-free inner loop where
    /// a whole 32-column block of two rows is inside the matrix: training packs weights
    /// and activations at every step, so this is on the hot path there.
    pub fn with_layout(b: Mat, k: usize, n: usize, strips: bool) -> Self {
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
        if strips {
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
            strips,
        }
    }

    /// Whether the layout is 32-column strips (else AMX's row-major pairs).
    pub fn strips(&self) -> bool {
        self.strips
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

    /// The packed bf16 values, in the layout [`PackedB::strips`] names.
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

/// Whether this CPU and kernel run AMX bf16 (asks the kernel for the tile state once).
pub fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(imp::enable)
}

/// `c[m x n] = (accumulate ? c : 0) + a[m x k] * b`, `c` with row stride `c_rs`, on
/// `threads` threads. Call only when [`available`] is true.
///
/// Panics (a bug in the caller) if the views are out of bounds, the shapes disagree or
/// AMX is unavailable.
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
    if m == 0 || b.n == 0 {
        return;
    }
    assert!(available(), "amx::gemm without AMX (bug)");
    assert!(!b.strips, "amx::gemm on a strip-packed B (bug)");
    check_views(m, a, b, c, c_rs, "amx::gemm");
    imp::gemm(m, a, b, c, c_rs, accumulate, threads.max(1));
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod imp {
    use super::{to_bf16, Mat, PackedB};
    use rayon::prelude::*;
    use std::arch::asm;

    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    const SYS_ARCH_PRCTL: i64 = 158;

    pub(super) fn enable() -> bool {
        if std::env::var_os("UAE_NO_AMX").is_some() {
            return false;
        }
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let (tile, bf16) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 22) != 0);
        if !(tile && bf16) {
            return false;
        }
        // Linux hands out the 8 KB tile state only on request (arch_prctl, kernel 5.16+).
        let rc: i64;
        // SAFETY: a plain syscall with two integer arguments; it touches no memory of ours.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL => rc,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack)
            );
        }
        rc == 0
    }

    /// Palette 1, eight tiles of 16 rows x 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    fn load_config() {
        let mut cfg = TileConfig([0; 64]);
        cfg.0[0] = 1;
        for t in 0..8 {
            cfg.0[16 + 2 * t] = 64;
            cfg.0[48 + t] = 16;
        }
        // SAFETY: AMX is enabled (checked by the caller) and `cfg` is a valid palette-1
        // configuration, 64 bytes, 64-aligned.
        unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack)) };
    }

    fn release() {
        // SAFETY: tilerelease only resets tile state.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    /// `C[32 x 32] (+)= A[32 x kp] B[kp x 32]`.
    ///
    /// SAFETY (caller): tiles configured by `load_config`; `a` points at 32 rows of `kp`
    /// bf16 (row stride `kp`); `b` at column block start of a `PackedB` with row stride
    /// `np` pairs; `c` at 32 rows of 32 f32 with row stride `c_rs` elements.
    unsafe fn block(
        a: *const u16,
        kp: usize,
        b: *const u16,
        np: usize,
        c: *mut f32,
        c_rs: usize,
        zero: bool,
    ) {
        let sc = c_rs * 4;
        let (c1, c2, c3) = (c.add(16), c.add(16 * c_rs), c.add(16 * c_rs + 16));
        if zero {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
        } else {
            asm!(
                "tileloadd tmm0, [{c0} + {sc}*1]",
                "tileloadd tmm1, [{c1} + {sc}*1]",
                "tileloadd tmm2, [{c2} + {sc}*1]",
                "tileloadd tmm3, [{c3} + {sc}*1]",
                c0 = in(reg) c, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3,
                sc = in(reg) sc, options(nostack, readonly)
            );
        }
        let (sa, sb) = (kp * 2, np * 4);
        let a1 = a.add(16 * kp);
        for kb in 0..kp / 32 {
            let (pa0, pa1) = (a.add(kb * 32), a1.add(kb * 32));
            let pb0 = b.add(kb * 32 * np);
            let pb1 = pb0.add(32);
            asm!(
                "tileloadd tmm4, [{pa0} + {sa}*1]",
                "tileloadd tmm6, [{pb0} + {sb}*1]",
                "tileloadd tmm7, [{pb1} + {sb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm5, [{pa1} + {sa}*1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                pa0 = in(reg) pa0, pa1 = in(reg) pa1, pb0 = in(reg) pb0, pb1 = in(reg) pb1,
                sa = in(reg) sa, sb = in(reg) sb, options(nostack, readonly)
            );
        }
        asm!(
            "tilestored [{c0} + {sc}*1], tmm0",
            "tilestored [{c1} + {sc}*1], tmm1",
            "tilestored [{c2} + {sc}*1], tmm2",
            "tilestored [{c3} + {sc}*1], tmm3",
            c0 = in(reg) c, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3,
            sc = in(reg) sc, options(nostack)
        );
    }

    /// Rows `r0..r0 + 32` of `a` (zero past `m` and past `k`) as bf16, row stride `kp`.
    fn convert_rows(a: Mat, m: usize, k: usize, r0: usize, kp: usize, out: &mut [u16]) {
        if a.rs == 1 && a.cs != 1 {
            // A transposed view (a weight gradient's `g^T`): walk `k` outside, so each
            // step reads up to 32 adjacent floats.
            let rows = 32.min(m.saturating_sub(r0));
            out.fill(0);
            for t in 0..k {
                let src = &a.data[t * a.cs + r0..t * a.cs + r0 + rows];
                for (i, &v) in src.iter().enumerate() {
                    out[i * kp + t] = to_bf16(v);
                }
            }
            return;
        }
        for i in 0..32 {
            let row = &mut out[i * kp..(i + 1) * kp];
            let r = r0 + i;
            if r >= m {
                row.fill(0);
                continue;
            }
            if a.cs == 1 {
                let src = &a.data[r * a.rs..r * a.rs + k];
                for (d, &s) in row[..k].iter_mut().zip(src) {
                    *d = to_bf16(s);
                }
            } else {
                for (j, d) in row[..k].iter_mut().enumerate() {
                    *d = to_bf16(a.data[r * a.rs + j * a.cs]);
                }
            }
            row[k..].fill(0);
        }
    }

    /// `c` as a pointer that threads writing disjoint blocks may share.
    #[derive(Clone, Copy)]
    struct Dst(*mut f32);
    // SAFETY: every task writes a disjoint set of (row, column) blocks of `c`.
    unsafe impl Send for Dst {}
    unsafe impl Sync for Dst {}

    #[allow(clippy::too_many_arguments)]
    fn run(
        m: usize,
        a: Mat,
        b: &PackedB,
        c: Dst,
        c_rs: usize,
        accumulate: bool,
        mblocks: std::ops::Range<usize>,
        nblocks: std::ops::Range<usize>,
    ) {
        let (k, n, kp, np) = (b.k, b.n, b.kp, b.np);
        let mut abuf = vec![0u16; 32 * kp];
        let mut cbuf = [0f32; 32 * 32];
        load_config();
        for mb in mblocks {
            let r0 = mb * 32;
            convert_rows(a, m, k, r0, kp, &mut abuf);
            let rows = 32.min(m - r0);
            for nb in nblocks.clone() {
                let c0 = nb * 32;
                let cols = 32.min(n - c0);
                let bptr = b.data[c0 * 2..].as_ptr();
                if rows == 32 && cols == 32 {
                    // SAFETY: the 32 x 32 block at (r0, c0) lies inside `c` (checked in
                    // `super::gemm`); no other task writes it.
                    unsafe {
                        let cp = c.0.add(r0 * c_rs + c0);
                        block(abuf.as_ptr(), kp, bptr, np, cp, c_rs, !accumulate);
                    }
                } else {
                    for i in 0..rows {
                        for j in 0..cols {
                            // SAFETY: (r0 + i, c0 + j) is inside `c`, owned by this task.
                            cbuf[i * 32 + j] = if accumulate {
                                unsafe { *c.0.add((r0 + i) * c_rs + c0 + j) }
                            } else {
                                0.0
                            };
                        }
                    }
                    // SAFETY: `cbuf` is 32 x 32 with row stride 32.
                    unsafe { block(abuf.as_ptr(), kp, bptr, np, cbuf.as_mut_ptr(), 32, false) };
                    for i in 0..rows {
                        for j in 0..cols {
                            // SAFETY: as above.
                            unsafe { *c.0.add((r0 + i) * c_rs + c0 + j) = cbuf[i * 32 + j] };
                        }
                    }
                }
            }
        }
        release();
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
        let (mb, nb) = (m.div_ceil(32), b.n.div_ceil(32));
        let dst = Dst(c.as_mut_ptr());
        let split = |blocks: usize| -> Vec<std::ops::Range<usize>> {
            let parts = threads.min(blocks).max(1);
            (0..parts)
                .map(|p| blocks * p / parts..blocks * (p + 1) / parts)
                .collect()
        };
        if threads == 1 {
            run(m, a, b, dst, c_rs, accumulate, 0..mb, 0..nb);
        } else if mb >= 2 * threads {
            split(mb).into_par_iter().for_each(|r| {
                run(m, a, b, dst, c_rs, accumulate, r, 0..nb);
            });
        } else {
            split(nb).into_par_iter().for_each(|r| {
                run(m, a, b, dst, c_rs, accumulate, 0..mb, r);
            });
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use super::{Mat, PackedB};

    pub(super) fn enable() -> bool {
        false
    }

    pub(super) fn gemm(_: usize, _: Mat, _: &PackedB, _: &mut [f32], _: usize, _: bool, _: usize) {
        unreachable!("amx::gemm without AMX")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(m: usize, k: usize, n: usize, accumulate: bool, threads: usize) {
        check_layout(m, k, n, accumulate, threads, false);
        check_layout(m, k, n, accumulate, threads, true);
    }

    /// `transposed_a`: A is read through a column-major view (the strided path).
    fn check_layout(
        m: usize,
        k: usize,
        n: usize,
        accumulate: bool,
        threads: usize,
        transposed_a: bool,
    ) {
        if !available() {
            eprintln!("no AMX on this machine: skipped");
            return;
        }
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0)
            .collect();
        // The same logical A stored column-major.
        let mut at = vec![0f32; m * k];
        for r in 0..m {
            for t in 0..k {
                at[t * m + r] = a[r * k + t];
            }
        }
        let view = if transposed_a {
            Mat {
                data: &at,
                rs: 1,
                cs: m,
            }
        } else {
            Mat {
                data: &a,
                rs: k,
                cs: 1,
            }
        };
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 64.0)
            .collect();
        // Inputs are multiples of 1/64 within [-1, 1]: exact in bf16, so the result must
        // equal the f64 product up to f32 accumulation error.
        let packed = PackedB::new(
            Mat {
                data: &b,
                rs: n,
                cs: 1,
            },
            k,
            n,
        );
        let c_rs = n + 3;
        let init = |i: usize| (i % 7) as f32;
        let mut c: Vec<f32> = (0..m * c_rs).map(init).collect();
        gemm(m, view, &packed, &mut c, c_rs, accumulate, threads);
        for r in 0..m {
            for j in 0..c_rs {
                let got = c[r * c_rs + j];
                if j >= n {
                    assert_eq!(got, init(r * c_rs + j), "padding column touched");
                    continue;
                }
                let mut want: f64 = if accumulate {
                    init(r * c_rs + j) as f64
                } else {
                    0.0
                };
                for t in 0..k {
                    want += a[r * k + t] as f64 * b[t * n + j] as f64;
                }
                assert!(
                    (got as f64 - want).abs() < 1e-3,
                    "({r},{j}): {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn matches_f64_on_exact_bf16_inputs() {
        check(64, 64, 64, false, 1);
        check(37, 70, 45, true, 1);
        check(5, 384, 1000, false, 2);
        check(200, 96, 33, true, 2);
        check(1, 31, 1, true, 3);
    }

    /// The threaded, blocked packing puts every element where the layouts say, from
    /// row-major and column-major views, with zeros in the padding.
    #[test]
    fn packing_places_every_element() {
        for (k, n) in [(64, 64), (37, 70), (1, 1), (33, 95), (128, 31)] {
            let m: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.37).sin()).collect();
            let rows = Mat {
                data: &m,
                rs: n,
                cs: 1,
            };
            let cols = Mat {
                data: &m,
                rs: 1,
                cs: k,
            };
            for (view, idx) in [
                (
                    rows,
                    Box::new(|r: usize, c: usize| r * n + c) as Box<dyn Fn(usize, usize) -> usize>,
                ),
                (cols, Box::new(|r: usize, c: usize| c * k + r)),
            ] {
                for strips in [false, true] {
                    let p = PackedB::with_layout(view, k, n, strips);
                    let (kp, np) = (p.kp(), p.np());
                    let kh = kp / 2;
                    for r in 0..kp {
                        for c in 0..np {
                            let at = if strips {
                                (((c / 32) * kh + r / 2) * 32 + c % 32) * 2 + r % 2
                            } else {
                                (r / 2) * np * 2 + c * 2 + r % 2
                            };
                            let want = if r < k && c < n {
                                to_bf16(m[idx(r, c)])
                            } else {
                                0
                            };
                            assert_eq!(p.data()[at], want, "{k}x{n} strips {strips} ({r},{c})");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(from_bf16(to_bf16(1.0 + 1.0 / 256.0)), 1.0); // tie: to even
        assert_eq!(from_bf16(to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0); // tie: up
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
    }
}
