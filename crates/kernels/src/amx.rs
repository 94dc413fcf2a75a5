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

use crate::packed::{check_views, Layout};
pub use crate::packed::{from_bf16, to_bf16, PackedB};
use crate::Mat;

/// Whether this CPU and kernel run AMX bf16 ([`crate::unit::amx_tiles`]).
pub fn available() -> bool {
    crate::unit::amx_tiles()
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
    if m == 0 || b.n() == 0 {
        return;
    }
    assert!(available(), "amx::gemm without AMX (bug)");
    assert!(
        b.layout() == Layout::Pairs,
        "amx::gemm on a strip-packed B (bug)"
    );
    check_views(m, a, b, c, c_rs, "amx::gemm");
    imp::gemm(m, a, b, c, c_rs, accumulate, threads.max(1));
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod imp {
    use super::{to_bf16, Mat, PackedB};
    use rayon::prelude::*;
    use std::arch::asm;

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
        let (k, n, kp, np) = (b.k(), b.n(), b.kp(), b.np());
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
                let bptr = b.data()[c0 * 2..].as_ptr();
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
        let (mb, nb) = (m.div_ceil(32), b.n().div_ceil(32));
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
        assert!(available(), "needs AMX: run where the CPU has it");
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
    #[ignore = "hardware: needs AMX; scripts/test.sh runs it where the CPU has it"]
    fn hw_amx_matches_f64_on_exact_bf16_inputs() {
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
                for layout in [Layout::Pairs, Layout::Strips] {
                    let strips = layout == Layout::Strips;
                    let p = PackedB::with_layout(view, k, n, layout);
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
