//! Fused, multi-threaded CPU operators for BERT, each with a backward pass, plus
//! composed candle equivalents that run on any device (and serve as the reference
//! the fused ones are tested against).
//!
//! Why: candle's element-wise CPU ops run on one thread, `softmax_last_dim` and the
//! fast layer norm have no backward, and per-head attention through candle costs
//! several transposed copies. Here attention reads the packed `[b, s, 3h]` QKV
//! projection in place with strided GEMMs, one task per sequence.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D,
};
use rayon::prelude::*;
use uae_kernels::{
    gelu_grad_into, gelu_inplace, gelu_into, layer_norm_rows, moments, sgemm, softmax_rows, Mat,
};

fn f32s<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: input must be contiguous"),
    }
}

fn threads() -> usize {
    rayon::current_num_threads()
}

/// Whether the fused CPU kernels apply to this tensor.
fn fused(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

// ---------------------------------------------------------------- linear

/// What happens to `x` before the GEMM of [`linear_fwd`].
#[derive(Clone, Copy, PartialEq)]
enum Pre {
    None,
    /// GELU of `x` into a scratch buffer (the input is the pre-activation).
    Gelu,
}

/// `pre(x) W^T + b`, then GELU when `gelu_after`: the CPU forward of [`LinearOp`] and
/// [`GeluLinearOp`].
#[allow(clippy::too_many_arguments)]
fn linear_fwd(
    xs: &CpuStorage,
    xl: &Layout,
    ws: &CpuStorage,
    wl: &Layout,
    bs: &CpuStorage,
    bl: &Layout,
    gelu_after: bool,
    pre: Pre,
    bf16: bool,
) -> Result<(CpuStorage, Shape)> {
    let (x, w, b) = (
        f32s(xs, xl, "linear x")?,
        f32s(ws, wl, "linear w")?,
        f32s(bs, bl, "linear b")?,
    );
    let (n, k) = xl.shape().dims2()?;
    let (out, k2) = wl.shape().dims2()?;
    if k != k2 || b.len() != out {
        candle_core::bail!("linear: x [{n}, {k}] vs w [{out}, {k2}] vs b [{}]", b.len());
    }
    let act;
    let x = match pre {
        Pre::None => x,
        Pre::Gelu => {
            let mut buf = vec![0f32; x.len()];
            buf.par_chunks_mut(4096)
                .zip(x.par_chunks(4096))
                .for_each(|(o, x)| gelu_into(o, x));
            act = buf;
            &act
        }
    };
    if bf16 {
        // Mixed precision: W^T packed in bf16 for this call (the weights change every
        // step), bias and GELU in the GEMM's epilogue.
        let packed = uae_kernels::bf16::PackedB::new(
            Mat {
                data: w,
                rs: 1,
                cs: k,
            },
            k,
            out,
        );
        let mut dst = vec![0f32; n * out];
        let x = Mat {
            data: x,
            rs: k,
            cs: 1,
        };
        uae_kernels::bf16::gemm_linear(n, x, &packed, &mut dst, b, None, gelu_after, threads());
        return Ok((CpuStorage::F32(dst), (n, out).into()));
    }
    let mut dst = vec![0f32; n * out];
    dst.par_chunks_mut(out)
        .for_each(|row| row.copy_from_slice(b));
    sgemm(
        n,
        out,
        k,
        Mat {
            data: x,
            rs: k,
            cs: 1,
        },
        Mat {
            data: w,
            rs: 1,
            cs: k,
        },
        &mut dst,
        out,
        true,
        threads(),
    );
    if gelu_after {
        dst.par_chunks_mut(4096).for_each(gelu_inplace);
    }
    Ok((CpuStorage::F32(dst), (n, out).into()))
}

/// `x W^T + b` with the bias written by the GEMM epilogue; optional GELU (inference only).
/// `bf16`: every GEMM, forward and backward, on the bf16 unit (mixed precision).
struct LinearOp {
    gelu: bool,
    bf16: bool,
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "uae-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        linear_fwd(xs, xl, ws, wl, bs, bl, self.gelu, Pre::None, self.bf16)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if self.gelu {
            candle_core::bail!("uae-linear with fused GELU is inference-only (this is a bug)");
        }
        let dx = matmul_in(g, w, self.bf16)?;
        let dw = matmul_in(&g.t()?, x, self.bf16)?;
        let db = col_sum(g)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Column sums of `[n, m]`: the bias gradient. Candle's `sum(0)` walks the rows on one
/// thread with a strided inner loop; this sums bands of rows in parallel.
struct ColSumOp;

impl CustomOp1 for ColSumOp {
    fn name(&self) -> &'static str {
        "uae-col-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = f32s(s, l, "column sum")?;
        let (n, m) = l.shape().dims2()?;
        let band = n.div_ceil(4 * threads()).max(64) * m;
        let partial: Vec<Vec<f32>> = g
            .par_chunks(band.max(1))
            .map(|rows| {
                let mut acc = vec![0f32; m];
                for row in rows.chunks(m) {
                    acc.iter_mut().zip(row).for_each(|(a, x)| *a += x);
                }
                acc
            })
            .collect();
        let mut out = vec![0f32; m];
        for p in partial {
            out.iter_mut().zip(p).for_each(|(a, x)| *a += x);
        }
        Ok((CpuStorage::F32(out), m.into()))
    }
}

/// Sum over dim 0 of a 2-D tensor (parallel on CPU; no gradient).
pub fn col_sum(g: &Tensor) -> Result<Tensor> {
    if !fused(g) || g.rank() != 2 {
        return g.sum(0);
    }
    g.contiguous()?.apply_op1_no_bwd(&ColSumOp)
}

/// `x [n, in] -> [n, out]` with weight `[out, in]` and bias `[out]`; GELU after it when
/// `gelu` is set. Differentiable; on CPU the bias (and, without gradients, the GELU)
/// are fused into the matmul.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, gelu_after: bool) -> Result<Tensor> {
    linear_in(x, w, b, gelu_after, false)
}

/// [`linear`], with its GEMMs (forward and backward) on the bf16 unit when `bf16` is
/// set: mixed precision, as PyTorch's CPU autocast runs a linear layer. Weights,
/// activations and gradients stay f32; each GEMM rounds its two inputs to bf16 and
/// sums in f32. Needs [`uae_kernels::bf16::backend`] (the caller checks).
pub fn linear_in(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    gelu_after: bool,
    bf16: bool,
) -> Result<Tensor> {
    if !fused(x) {
        return linear_reference(x, w, b, gelu_after);
    }
    let x = x.contiguous()?;
    let needs_grad = x.track_op() || w.track_op() || b.track_op();
    if gelu_after && !needs_grad {
        return x.apply_op3_no_bwd(w, b, &LinearOp { gelu: true, bf16 });
    }
    let y = x.apply_op3(w, b, LinearOp { gelu: false, bf16 })?;
    if gelu_after {
        gelu_t(&y)
    } else {
        Ok(y)
    }
}

/// `gelu(x) W^T + b` for the pre-activation `x`, keeping only `x` for the backward
/// pass: the GELU output (as wide as the FFN) is recomputed there instead of living in
/// the autograd graph, so a training graph holds one FFN-wide tensor per layer, not two.
struct GeluLinearOp {
    bf16: bool,
}

impl CustomOp3 for GeluLinearOp {
    fn name(&self) -> &'static str {
        "uae-gelu-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        linear_fwd(xs, xl, ws, wl, bs, bl, false, Pre::Gelu, self.bf16)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let act = x.apply_op1_no_bwd(&GeluOp)?;
        let dact = matmul_in(g, w, self.bf16)?;
        let dw = matmul_in(&g.t()?, &act, self.bf16)?;
        drop(act);
        let dx = x.apply_op2_no_bwd(&dact.contiguous()?, &GeluBwdOp)?;
        let db = col_sum(g)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `gelu(x) W^T + b` (`x [n, in]` the pre-activation, weight `[out, in]`).
/// Differentiable; on CPU the GELU output is not kept for the backward pass.
pub fn gelu_linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    gelu_linear_in(x, w, b, false)
}

/// [`gelu_linear`] with its GEMMs on the bf16 unit when `bf16` is set (see
/// [`linear_in`]).
pub fn gelu_linear_in(x: &Tensor, w: &Tensor, b: &Tensor, bf16: bool) -> Result<Tensor> {
    if !fused(x) {
        return linear_reference(&gelu_t(x)?, w, b, false);
    }
    x.contiguous()?.apply_op3(w, b, GeluLinearOp { bf16 })
}

/// `a [m, k] b [k, n]`: candle's f32 matmul, or with `bf16` both inputs rounded to
/// bf16 and summed in f32 (the backward GEMMs of mixed precision).
fn matmul_in(a: &Tensor, b: &Tensor, bf16: bool) -> Result<Tensor> {
    if bf16 && fused(a) && fused(b) {
        a.apply_op2_no_bwd(&b.contiguous()?, &Bf16MatmulOp)
    } else {
        a.matmul(b)
    }
}

/// `a [m, k] b [k, n]` on the bf16 unit; `a` may be any strided view (a transposed
/// gradient is read in place), `b` contiguous (packed per call). No gradient.
struct Bf16MatmulOp;

impl CustomOp2 for Bf16MatmulOp {
    fn name(&self) -> &'static str {
        "uae-matmul-bf16"
    }

    fn cpu_fwd(
        &self,
        as_: &CpuStorage,
        al: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = al.shape().dims2()?;
        let (k2, n) = bl.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("matmul: a [{m}, {k}] vs b [{k2}, {n}]");
        }
        let b = f32s(bs, bl, "matmul b")?;
        let stride = al.stride();
        let a = Mat {
            data: &as_.as_slice::<f32>()?[al.start_offset()..],
            rs: stride[0],
            cs: stride[1],
        };
        let packed = uae_kernels::bf16::PackedB::new(
            Mat {
                data: b,
                rs: n,
                cs: 1,
            },
            k,
            n,
        );
        let mut c = vec![0f32; m * n];
        uae_kernels::bf16::gemm(m, a, &packed, &mut c, n, false, threads());
        Ok((CpuStorage::F32(c), (m, n).into()))
    }
}

// ---------------------------------------------------------------- dropout

/// The inverted-dropout mask of one site: each element `0` with probability `p`,
/// else `1 / (1 - p)`, from a SplitMix64 stream keyed by `(seed, site)`.
pub fn dropout_mask(n: usize, p: f32, seed: u64, site: u64) -> Vec<f32> {
    let mut rng = uae_core::SplitMix64::new(seed ^ site.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let keep = 1.0 / (1.0 - p);
    let threshold = (p as f64 * (1u64 << 53) as f64) as u64;
    (0..n)
        .map(|_| {
            if (rng.next_u64() >> 11) < threshold {
                0.0
            } else {
                keep
            }
        })
        .collect()
}

/// `dropout(x) + r` with the mask of `(seed, site)`.
struct DropAddOp {
    p: f32,
    seed: u64,
    site: u64,
}

impl CustomOp2 for DropAddOp {
    fn name(&self) -> &'static str {
        "uae-dropout-add"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, r) = (
            f32s(xs, xl, "dropout x")?,
            f32s(rs, rl, "dropout residual")?,
        );
        if xl.shape() != rl.shape() {
            candle_core::bail!("dropout-add: {:?} vs {:?}", xl.shape(), rl.shape());
        }
        let mut out = dropout_mask(x.len(), self.p, self.seed, self.site);
        out.par_chunks_mut(4096)
            .zip(x.par_chunks(4096).zip(r.par_chunks(4096)))
            .for_each(|(o, (x, r))| {
                for ((o, x), r) in o.iter_mut().zip(x).zip(r) {
                    *o = *x * *o + *r;
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _r: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let mask = dropout_mask(x.elem_count(), self.p, self.seed, self.site);
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
        Ok((Some(g.mul(&mask)?), Some(g.clone())))
    }
}

/// `dropout(x) + r`: inverted dropout with the mask of `(seed, site)`
/// ([`dropout_mask`]), then the residual. Differentiable; on CPU one pass, and the
/// autograd graph keeps neither the mask nor the dropped-out tensor (the backward
/// pass draws the mask again).
pub fn dropout_add(x: &Tensor, r: &Tensor, p: f32, seed: u64, site: u64) -> Result<Tensor> {
    if !fused(x) {
        let mask = Tensor::from_vec(
            dropout_mask(x.elem_count(), p, seed, site),
            x.shape(),
            x.device(),
        )?;
        return (x * mask)? + r;
    }
    x.contiguous()?
        .apply_op2(&r.contiguous()?, DropAddOp { p, seed, site })
}

/// A linear layer rounded to bf16 and packed for the bf16 GEMM (AMX tiles or
/// AVX512_BF16; inference only).
pub struct PackedLinear {
    w: std::sync::Arc<uae_kernels::bf16::PackedB>,
    b: std::sync::Arc<Vec<f32>>,
}

impl PackedLinear {
    /// Packs `w [out, in]` (f32, CPU) and keeps the f32 bias `b [out]`.
    pub fn new(w: &Tensor, b: &Tensor) -> Result<Self> {
        let (out, inp) = w.dims2()?;
        let wv = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let bv = b.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        if bv.len() != out {
            candle_core::bail!(
                "packed linear: bias [{}] for weight [{out}, {inp}]",
                bv.len()
            );
        }
        // B = W^T: element (r, c) of the [in, out] matrix is w[c * inp + r].
        let mat = Mat {
            data: &wv,
            rs: 1,
            cs: inp,
        };
        Ok(PackedLinear {
            w: std::sync::Arc::new(uae_kernels::bf16::PackedB::new(mat, inp, out)),
            b: std::sync::Arc::new(bv),
        })
    }
}

struct PackedLinearOp<'a> {
    p: &'a PackedLinear,
    gelu: bool,
}

impl CustomOp1 for PackedLinearOp<'_> {
    fn name(&self) -> &'static str {
        "uae-linear-bf16"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        self.p
            .forward(f32s(xs, xl, "linear x")?, xl, None, self.gelu)
    }
}

struct PackedLinearAddOp<'a> {
    p: &'a PackedLinear,
}

impl CustomOp2 for PackedLinearAddOp<'_> {
    fn name(&self) -> &'static str {
        "uae-linear-add-bf16"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let r = f32s(rs, rl, "linear residual")?;
        self.p
            .forward(f32s(xs, xl, "linear x")?, xl, Some((r, rl)), false)
    }
}

impl PackedLinear {
    /// `gelu?(x W^T + b) + r?` for `x` of layout `xl` (`[n, in]`) and the residual
    /// `r [n, out]`, through [`uae_kernels::bf16::gemm_linear`].
    fn forward(
        &self,
        x: &[f32],
        xl: &Layout,
        residual: Option<(&[f32], &Layout)>,
        gelu: bool,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, k) = xl.shape().dims2()?;
        let out = self.w.n();
        if k != self.w.k() {
            candle_core::bail!("linear: x [{n}, {k}] vs packed w [{out}, {}]", self.w.k());
        }
        if let Some((_, rl)) = residual.filter(|(_, rl)| rl.shape().dims() != [n, out]) {
            candle_core::bail!(
                "linear: residual {:?} for output [{n}, {out}]",
                rl.shape().dims()
            );
        }
        let mut dst = vec![0f32; n * out];
        let x = Mat {
            data: x,
            rs: k,
            cs: 1,
        };
        let r = residual.map(|(r, _)| r);
        uae_kernels::bf16::gemm_linear(n, x, &self.w, &mut dst, &self.b, r, gelu, threads());
        Ok((CpuStorage::F32(dst), (n, out).into()))
    }
}

/// `x W^T + b + r` through a [`PackedLinear`]: the residual sum of a BERT block with
/// the addition fused into the GEMM's stores; no gradient. `x [n, in]` and
/// `r [n, out]` must be f32 on the CPU.
pub fn linear_bf16_add(x: &Tensor, p: &PackedLinear, r: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&r.contiguous()?, &PackedLinearAddOp { p })
}

/// `x [n, in] -> [n, out]` through a [`PackedLinear`] (bias and GELU fused); no
/// gradient. `x` must be f32 on the CPU.
pub fn linear_bf16(x: &Tensor, p: &PackedLinear, gelu_after: bool) -> Result<Tensor> {
    let x = x.contiguous()?;
    x.apply_op1_no_bwd(&PackedLinearOp {
        p,
        gelu: gelu_after,
    })
}

// ---------------------------------------------------------------- gelu

struct GeluOp;
struct GeluBwdOp;

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "uae-gelu"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, "gelu")?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(4096)
            .zip(x.par_chunks(4096))
            .for_each(|(o, x)| gelu_into(o, x));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&g.contiguous()?, &GeluBwdOp)?))
    }
}

impl CustomOp2 for GeluBwdOp {
    fn name(&self) -> &'static str {
        "uae-gelu-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (f32s(s1, l1, "gelu-bwd x")?, f32s(s2, l2, "gelu-bwd g")?);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(4096)
            .zip(x.par_chunks(4096).zip(g.par_chunks(4096)))
            .for_each(|(o, (x, g))| gelu_grad_into(o, x, g));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// [`linear`] through stock candle ops (any device).
pub fn linear_reference(x: &Tensor, w: &Tensor, b: &Tensor, gelu_after: bool) -> Result<Tensor> {
    let y = x.matmul(&w.t()?)?.broadcast_add(b)?;
    if gelu_after {
        y.gelu_erf()
    } else {
        Ok(y)
    }
}

/// Exact (erf) GELU, differentiable, parallel on CPU.
pub fn gelu_t(x: &Tensor) -> Result<Tensor> {
    if !fused(x) {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1(GeluOp)
}

// ---------------------------------------------------------------- layer norm

struct LayerNormOp {
    eps: f32,
}
struct LayerNormBwdOp {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "uae-layer-norm"
    }
    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, gamma, beta) = (
            f32s(xs, xl, "ln x")?,
            f32s(gs, gl, "ln gamma")?,
            f32s(bs, bl, "ln beta")?,
        );
        let h = gamma.len();
        if h == 0 || x.len() % h != 0 || beta.len() != h {
            candle_core::bail!("layer norm: hidden size mismatch");
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(h * 16)
            .zip(x.par_chunks(h * 16))
            .for_each(|(o, x)| layer_norm_rows(o, x, gamma, beta, self.eps));
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = gamma.dim(0)?;
        let rows = x.elem_count() / h;
        let all = x.apply_op3_no_bwd(gamma, &g.contiguous()?, &LayerNormBwdOp { eps: self.eps })?;
        let dx = all.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dgamma = all.narrow(0, rows, 1)?.reshape(h)?;
        let dbeta = all.narrow(0, rows + 1, 1)?.reshape(h)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

impl CustomOp3 for LayerNormBwdOp {
    fn name(&self) -> &'static str {
        "uae-layer-norm-bwd"
    }
    /// Output `[rows + 2, h]`: dx rows, then d gamma, then d beta.
    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, gamma, gout) = (
            f32s(xs, xl, "ln-bwd x")?,
            f32s(gs, gl, "ln-bwd gamma")?,
            f32s(ds, dl, "ln-bwd g")?,
        );
        let h = gamma.len();
        let rows = x.len() / h;
        let mut out = vec![0f32; (rows + 2) * h];
        let (dx, tail) = out.split_at_mut(rows * h);
        dx.par_chunks_mut(h)
            .zip(x.par_chunks(h).zip(gout.par_chunks(h)))
            .for_each(|(dx, (x, g))| {
                let (mean, rstd) = moments(x, self.eps);
                let (mut m1, mut m2) = (0f32, 0f32);
                for i in 0..h {
                    let gg = g[i] * gamma[i];
                    m1 += gg;
                    m2 += gg * (x[i] - mean) * rstd;
                }
                let (m1, m2) = (m1 / h as f32, m2 / h as f32);
                for i in 0..h {
                    let xhat = (x[i] - mean) * rstd;
                    dx[i] = rstd * (g[i] * gamma[i] - m1 - xhat * m2);
                }
            });
        // Partial sums over fixed blocks of 64 rows, added in block order: the result
        // does not depend on how rayon splits the work (a resumed run must repeat it).
        let partials: Vec<(Vec<f32>, Vec<f32>)> = x
            .par_chunks(h * 64)
            .zip(gout.par_chunks(h * 64))
            .map(|(xb, gb)| {
                let (mut dg, mut db) = (vec![0f32; h], vec![0f32; h]);
                for (x, g) in xb.chunks(h).zip(gb.chunks(h)) {
                    let (mean, rstd) = moments(x, self.eps);
                    for i in 0..h {
                        dg[i] += g[i] * (x[i] - mean) * rstd;
                        db[i] += g[i];
                    }
                }
                (dg, db)
            })
            .collect();
        let (mut dgamma, mut dbeta) = (vec![0f32; h], vec![0f32; h]);
        for (dg, db) in partials {
            dgamma.iter_mut().zip(dg).for_each(|(a, c)| *a += c);
            dbeta.iter_mut().zip(db).for_each(|(a, c)| *a += c);
        }
        tail[..h].copy_from_slice(&dgamma);
        tail[h..].copy_from_slice(&dbeta);
        Ok((CpuStorage::F32(out), (rows + 2, h).into()))
    }
}

/// Layer norm over the last dimension, differentiable (unlike candle's fast path).
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused(x) {
        return layer_norm_reference(x, gamma, beta, eps);
    }
    x.contiguous()?
        .apply_op3(gamma, beta, LayerNormOp { eps: eps as f32 })
}

/// [`layer_norm`] through stock candle ops (any device).
pub fn layer_norm_reference(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xhat = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    xhat.broadcast_mul(gamma)?.broadcast_add(beta)
}

// ---------------------------------------------------------------- attention

/// Multi-head self-attention over a packed `[b, s, 3h]` QKV tensor with right
/// padding: sequence `i` has `lens[i]` real tokens; padded query rows output 0.
#[derive(Clone)]
struct AttentionOp {
    heads: usize,
    lens: Vec<usize>,
    scale: f32,
}

struct AttentionBwdOp(AttentionOp);

impl AttentionOp {
    fn dims(&self, l: &Layout) -> Result<(usize, usize, usize, usize)> {
        let (b, s, h3) = l.shape().dims3()?;
        if h3 % (3 * self.heads) != 0 || self.lens.len() != b || self.lens.iter().any(|&n| n > s) {
            candle_core::bail!(
                "attention: bad shape {:?} for {} heads / lens {:?}",
                l.shape(),
                self.heads,
                self.lens
            );
        }
        Ok((b, s, h3 / 3, h3 / 3 / self.heads))
    }

    /// Scores `scale * Q K^T` of head `hh` for the first `n` tokens, softmaxed in place.
    fn probs(&self, qkv: &[f32], h: usize, hh: usize, n: usize, hd: usize, p: &mut [f32]) {
        let q = Mat {
            data: &qkv[hh * hd..],
            rs: 3 * h,
            cs: 1,
        };
        let kt = Mat {
            data: &qkv[h + hh * hd..],
            rs: 1,
            cs: 3 * h,
        };
        sgemm(n, n, hd, q, kt, p, n, false, 1);
        softmax_rows(p, n, self.scale);
    }
}

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "uae-attention"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = f32s(s, l, "attention")?;
        let (b, seq, h, hd) = self.dims(l)?;
        let mut out = vec![0f32; b * seq * h];
        out.par_chunks_mut(seq * h)
            .zip(qkv.par_chunks(seq * 3 * h))
            .zip(self.lens.par_iter())
            .for_each(|((o, qkv), &n)| {
                let mut p = vec![0f32; n * n];
                for hh in 0..self.heads {
                    self.probs(qkv, h, hh, n, hd, &mut p);
                    let v = Mat {
                        data: &qkv[2 * h + hh * hd..],
                        rs: 3 * h,
                        cs: 1,
                    };
                    sgemm(
                        n,
                        hd,
                        n,
                        Mat {
                            data: &p,
                            rs: n,
                            cs: 1,
                        },
                        v,
                        &mut o[hh * hd..],
                        h,
                        false,
                        1,
                    );
                }
            });
        Ok((CpuStorage::F32(out), (b, seq, h).into()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(
            &g.contiguous()?,
            &AttentionBwdOp(self.clone()),
        )?))
    }
}

impl CustomOp2 for AttentionBwdOp {
    fn name(&self) -> &'static str {
        "uae-attention-bwd"
    }
    /// Recomputes the probabilities (as flash attention does) and returns d qkv.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = &self.0;
        let (qkv, gout) = (
            f32s(s1, l1, "attention-bwd qkv")?,
            f32s(s2, l2, "attention-bwd g")?,
        );
        let (b, seq, h, hd) = op.dims(l1)?;
        let mut dqkv = vec![0f32; b * seq * 3 * h];
        dqkv.par_chunks_mut(seq * 3 * h)
            .zip(qkv.par_chunks(seq * 3 * h))
            .zip(gout.par_chunks(seq * h).zip(op.lens.par_iter()))
            .for_each(|((d, qkv), (go, &n))| {
                let mut p = vec![0f32; n * n];
                let mut dp = vec![0f32; n * n];
                for hh in 0..op.heads {
                    op.probs(qkv, h, hh, n, hd, &mut p);
                    let d_o = Mat {
                        data: &go[hh * hd..],
                        rs: h,
                        cs: 1,
                    };
                    let pt = Mat {
                        data: &p,
                        rs: 1,
                        cs: n,
                    };
                    // dV = P^T dO
                    sgemm(
                        n,
                        hd,
                        n,
                        pt,
                        d_o,
                        &mut d[2 * h + hh * hd..],
                        3 * h,
                        false,
                        1,
                    );
                    // dP = dO V^T
                    let vt = Mat {
                        data: &qkv[2 * h + hh * hd..],
                        rs: 1,
                        cs: 3 * h,
                    };
                    sgemm(n, n, hd, d_o, vt, &mut dp, n, false, 1);
                    // dS = scale * P o (dP - rowsum(dP o P))
                    for (dpr, pr) in dp.chunks_mut(n).zip(p.chunks(n)) {
                        let dot: f32 = dpr.iter().zip(pr).map(|(a, b)| a * b).sum();
                        dpr.iter_mut()
                            .zip(pr)
                            .for_each(|(a, &b)| *a = op.scale * b * (*a - dot));
                    }
                    let ds = Mat {
                        data: &dp,
                        rs: n,
                        cs: 1,
                    };
                    let dst = Mat {
                        data: &dp,
                        rs: 1,
                        cs: n,
                    };
                    // dQ = dS K, dK = dS^T Q
                    let k = Mat {
                        data: &qkv[h + hh * hd..],
                        rs: 3 * h,
                        cs: 1,
                    };
                    let q = Mat {
                        data: &qkv[hh * hd..],
                        rs: 3 * h,
                        cs: 1,
                    };
                    sgemm(n, hd, n, ds, k, &mut d[hh * hd..], 3 * h, false, 1);
                    sgemm(n, hd, n, dst, q, &mut d[h + hh * hd..], 3 * h, false, 1);
                }
            });
        Ok((CpuStorage::F32(dqkv), l1.shape().clone()))
    }
}

/// Self-attention: `qkv [b, s, 3h]` (Q, K, V concatenated on the last axis) ->
/// `[b, s, h]`. Keys past `lens[i]` are masked; outputs at padded positions are 0.
pub fn attention(qkv: &Tensor, heads: usize, lens: &[usize]) -> Result<Tensor> {
    let hd = qkv.dim(2)? / 3 / heads.max(1);
    let scale = 1.0 / (hd as f32).sqrt();
    if fused(qkv) {
        let op = AttentionOp {
            heads,
            lens: lens.to_vec(),
            scale,
        };
        return qkv.contiguous()?.apply_op1(op);
    }
    attention_reference(qkv, heads, lens)
}

/// [`attention`] through stock candle ops (any device): a large negative additive
/// mask on padded keys, padded query rows zeroed.
pub fn attention_reference(qkv: &Tensor, heads: usize, lens: &[usize]) -> Result<Tensor> {
    let (b, s, h3) = qkv.dims3()?;
    let h = h3 / 3;
    let hd = h / heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let split = |i: usize| -> Result<Tensor> {
        qkv.narrow(2, i * h, h)?
            .reshape((b, s, heads, hd))?
            .transpose(1, 2)?
            .contiguous()
    };
    let (q, k, v) = (split(0)?, split(1)?, split(2)?);
    let mask: Vec<f32> = lens
        .iter()
        .flat_map(|&n| (0..s).map(move |j| if j < n { 0.0 } else { -1e9 }))
        .collect();
    let mask = Tensor::from_vec(mask, (b, 1, 1, s), qkv.device())?;
    let scores = (q.matmul(&k.t()?.contiguous()?)? * scale as f64)?.broadcast_add(&mask)?;
    let max = scores.max_keepdim(D::Minus1)?.detach();
    let e = scores.broadcast_sub(&max)?.exp()?;
    let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
    let ctx = p.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h))?;
    let rows: Vec<f32> = lens
        .iter()
        .flat_map(|&n| (0..s).map(move |j| if j < n { 1.0 } else { 0.0 }))
        .collect();
    ctx.broadcast_mul(&Tensor::from_vec(rows, (b, s, 1), qkv.device())?)
}
