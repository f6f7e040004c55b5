//! Mamba2LayerStep: one Mamba-2 layer's decode step (one token a sequence), fused. The Mamba-2
//! decode graph (`mambac export --decode-graph` of a Mamba-2 checkpoint) is one such node a
//! layer; see docs/decode-graph.md "Mamba2LayerStep". With `inner = heads * head_dim`, G groups
//! of N state channels and head h reading group `g = h / (heads / G)`:
//!
//! ```text
//! v        = T(r / sqrt(mean(r^2) + eps) * norm_weight)        r = residual [B, 1, H] float32
//! z, xBC, dt = split(v @ in_proj_weight (+ in_proj_bias))       [inner], [inner + 2 G N], [heads]
//! xBC'     = silu(conv_bias + <conv_weight[c], [conv_state[c], xBC[c]]>),  conv_state' = last width-1
//! x, B, C  = split(xBC')                                        [heads, P], [G, N], [G, N]
//! dt       = clamp(softplus(dt + dt_bias), dt_min, dt_max)
//! h'[h, p] = exp(dt[h] A[h]) h[h, p] + dt[h] x[h, p] B[g]       h = ssm_state [B, heads, P, N]
//! y[h, p]  = <C[g], h'[h, p]> + D[h] x[h, p]
//! y        = rmsnorm_groups(y * silu(z)) * gate_norm_weight      (norm_before_gate 0)
//!            rmsnorm_groups(y) * gate_norm_weight * silu(z)      (norm_before_gate 1)
//! residual_out = r + y @ out_proj_weight (+ out_proj_bias)
//! ```
//!
//! The gated norm's groups are `inner / G` channels (mamba_ssm's `RMSNormGated(group_size =
//! d_ssm / ngroups)`). Intermediates are rounded to T where the unfused graph stores a T tensor
//! (the normed input, in_proj's output, the conv output, y and the gated norm's output), so both
//! graphs agree to T's precision. On the CUDA EP, five kernels (cpp/cuda/mamba2_decode_layer.cu,
//! custom-ops/src/cuda) run it with MambaLayerStep's GEMVs.

use std::ffi::CStr;

use half::{bf16, f16};
use ort_sys::{ONNXTensorElementDataType as Elem, OrtKernelContext, OrtKernelInfo};

use crate::attributes::{epsilon_or, flag_or};
use crate::error::OpError;
use crate::kernel_abi::ffi;
use crate::layer_step::MambaLayerStep;
use crate::layer_step_params::{allocate_outputs, checked_inputs};
use crate::op_table::Kernel;
use crate::ssd_scan::dt_limit;
use crate::step_cpu::{for_elem, gemv_rows, silu, slice, slice_mut, softplus, Elt};

/// Input slots, names and attributes (the names, for messages, are the C++ check's too:
/// cpp/shape_check.cpp `check_mamba2_layer_step`).
pub use mambac_op_schema::mamba2_layer_step as slot;

const EPSILON: &CStr = slot::EPSILON.c;
const NORM_BEFORE_GATE: &CStr = slot::NORM_BEFORE_GATE.c;

pub struct Mamba2LayerStep {
    eps: f32,
    dt_min: f32,
    dt_max: f32,
    norm_before_gate: bool,
}

impl Kernel for Mamba2LayerStep {
    const NAME: &'static CStr = slot::OP.c;
    const OP: &'static str = slot::OP.str;
    const INPUTS: usize = slot::INPUT_NAMES.len();
    // Output 0 is the float32 residual, not input 0's type: ORT infers nothing, the graph says.
    const INFER_OUTPUT0: bool = false;

    fn output_types(t: Elem) -> &'static [Elem] {
        // residual_out f32, conv_state_out T, ssm_state_out f32: MambaLayerStep's outputs.
        MambaLayerStep::output_types(t)
    }

    unsafe fn create(info: *const OrtKernelInfo) -> Result<Self, OpError> {
        // SAFETY: `info` is live (the trait's contract), for each read.
        let (eps, (dt_min, dt_max), nbg) = unsafe {
            (
                epsilon_or(info, Self::OP, EPSILON, slot::DEFAULT_EPSILON)?,
                dt_limit(info, Self::OP)?,
                flag_or(info, Self::OP, NORM_BEFORE_GATE, false)?,
            )
        };
        Ok(Mamba2LayerStep { eps, dt_min, dt_max, norm_before_gate: nbg })
    }

    unsafe fn compute(&self, ctx: *mut OrtKernelContext) -> Result<(), OpError> {
        // SAFETY: `ctx` is live (the trait's contract).
        let p = unsafe { self.params(ctx)? };
        let run: unsafe fn(&ffi::Mamba2LayerStepParams) =
            for_elem(p.elem, [run_cpu::<f32>, run_cpu::<f16>, run_cpu::<bf16>]);
        // SAFETY: `p` comes from `params` of this compute call, and `run` is the instance for the
        // type `p.elem` names.
        unsafe { run(&p) };
        Ok(())
    }
}

impl Mamba2LayerStep {
    /// Checks every input (the C++ check), allocates the outputs and fills the params; shared by
    /// the CPU and CUDA kernels. What it shares with MambaLayerStep is `layer_step_params`'s.
    ///
    /// # Safety
    /// `ctx` is the live kernel context of the current compute call.
    pub unsafe fn params(&self, ctx: *mut OrtKernelContext) -> Result<ffi::Mamba2LayerStepParams, OpError> {
        // SAFETY: `ctx` is live (our contract) and INPUTS is the count ORT was told.
        let (mut p, inputs) = unsafe { checked_inputs::<ffi::Mamba2LayerStepParams>(ctx, Self::INPUTS, Self::OP)? };
        (p.eps, p.dt_min, p.dt_max, p.norm_before_gate) = (self.eps, self.dt_min, self.dt_max, self.norm_before_gate);
        p.gate_norm_weight = inputs[slot::GATE_NORM_WEIGHT].addr;
        let s = Sizes::of(&p);
        let ssm_dims = [s.batch, p.heads, p.head_dim, p.dstate];
        // SAFETY: `ctx` is live (our contract).
        unsafe { allocate_outputs(ctx, &mut p, &[s.batch, s.conv_dim, s.k1], &ssm_dims, Self::OP)? };
        Ok(p)
    }
}

/// The sizes the params imply.
struct Sizes {
    batch: usize,
    hidden: usize,
    /// heads * head_dim: x, z and y.
    inner: usize,
    /// ngroups * dstate: B and C each.
    bc: usize,
    /// inner + 2 * bc: the conv's channels.
    conv_dim: usize,
    /// inner + conv_dim + heads: in_proj's outputs (z, xBC, dt).
    in_dim: usize,
    /// width - 1: the conv state's steps.
    k1: usize,
}

impl Sizes {
    fn of(p: &ffi::Mamba2LayerStepParams) -> Sizes {
        let inner = p.heads * p.head_dim;
        let bc = p.ngroups * p.dstate;
        let conv_dim = inner + 2 * bc;
        let (batch, hidden, k1) = (p.batch, p.hidden, p.width - 1);
        Sizes { batch, hidden, inner, bc, conv_dim, in_dim: inner + conv_dim + p.heads, k1 }
    }
}

/// `clamp(softplus(v), lo, hi)`, as SsdScan: a NaN passes both comparisons and stays NaN.
fn step_size(v: f32, lo: f32, hi: f32) -> f32 {
    let mut dt = softplus(v);
    if dt < lo {
        dt = lo;
    }
    if dt > hi {
        dt = hi;
    }
    dt
}

/// The reference-order CPU implementation: one batch row at a time, float32 arithmetic.
///
/// # Safety
/// `p` comes from [`Mamba2LayerStep::params`] of the current compute call and E is the element
/// type `p.elem` names.
unsafe fn run_cpu<E: Elt>(p: &ffi::Mamba2LayerStepParams) {
    let s = Sizes::of(p);
    let (h, inner, conv_dim, in_dim, k1) = (s.hidden, s.inner, s.conv_dim, s.in_dim, s.k1);
    let (heads, hd, n, k) = (p.heads, p.head_dim, p.dstate, p.width);
    let state = heads * hd * n;
    // SAFETY: the shape check gave every present input these extents and E is T; the outputs are
    // buffers ORT allocated for this call with the same extents, apart from every input (the ops
    // declare no in-place outputs, and `params` refused a state output on its input), so the
    // mutable slices alias nothing.
    let (res_in, res_out, conv_in, conv_out, ssm_in, ssm_out) = unsafe {
        (
            slice::<f32>(p.residual_in, s.batch * h).unwrap_or(&[]),
            slice_mut::<f32>(p.residual_out, s.batch * h),
            slice::<E>(p.conv_state_in, s.batch * conv_dim * k1).unwrap_or(&[]),
            slice_mut::<E>(p.conv_state_out, s.batch * conv_dim * k1),
            slice::<f32>(p.ssm_state_in, s.batch * state).unwrap_or(&[]),
            slice_mut::<f32>(p.ssm_state_out, s.batch * state),
        )
    };
    // SAFETY: as above, for the weights.
    let (norm_w, w_in, b_in, conv_w, conv_b, dt_bias, a, dskip, gate_w, w_out, b_out) = unsafe {
        (
            slice::<f32>(p.norm_weight, h).unwrap_or(&[]),
            slice::<E>(p.in_proj_weight, h * in_dim).unwrap_or(&[]),
            slice::<E>(p.in_proj_bias, in_dim),
            slice::<E>(p.conv_weight, conv_dim * k).unwrap_or(&[]),
            slice::<E>(p.conv_bias, conv_dim),
            slice::<f32>(p.dt_bias, heads),
            slice::<f32>(p.a, heads).unwrap_or(&[]),
            slice::<f32>(p.d, heads),
            slice::<f32>(p.gate_norm_weight, inner).unwrap_or(&[]),
            slice::<E>(p.out_proj_weight, inner * h).unwrap_or(&[]),
            slice::<E>(p.out_proj_bias, h),
        )
    };

    let mut xn = vec![0f32; h];
    let mut proj = vec![0f32; in_dim];
    let mut xbc = vec![0f32; conv_dim];
    let mut y = vec![0f32; inner];
    let mut out = vec![0f32; h];
    let heads_per_group = heads / p.ngroups;
    let group_size = inner / p.ngroups;
    for b in 0..s.batch {
        let rr = &res_in[b * h..(b + 1) * h];
        let ms = rr.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let inv = 1.0 / (ms + p.eps).sqrt();
        for ((o, &v), &w) in xn.iter_mut().zip(rr).zip(norm_w) {
            *o = E::round(v * inv * w);
        }
        proj.iter_mut().for_each(|v| *v = 0.0);
        gemv_rows(&xn, w_in, in_dim, &mut proj);
        if let Some(bias) = b_in {
            proj.iter_mut().zip(bias).for_each(|(v, bv)| *v += bv.f());
        }
        // z, xBC and dt are T tensors of the unfused graph.
        proj.iter_mut().for_each(|v| *v = E::round(*v));
        let (z, rest) = proj.split_at(inner);
        let (xbc_in, dt) = rest.split_at(conv_dim);

        for c in 0..conv_dim {
            let row = (b * conv_dim + c) * k1;
            let st = &conv_in[row..row + k1];
            let w = &conv_w[c * k..(c + 1) * k];
            let x = E::t(xbc_in[c]);
            let mut acc = conv_b.map_or(0.0, |cb| cb[c].f());
            for q in 0..k1 {
                acc += w[q].f() * st[q].f();
            }
            acc += w[k1].f() * x.f();
            xbc[c] = E::round(silu(acc));
            if k1 > 0 {
                let so = &mut conv_out[row..row + k1];
                so[..k1 - 1].copy_from_slice(&st[1..]);
                so[k1 - 1] = x;
            }
        }
        let (x, bc) = xbc.split_at(inner);
        let (bm, cm) = bc.split_at(s.bc);

        for hh in 0..heads {
            let g = hh / heads_per_group;
            let delta = step_size(dt[hh] + dt_bias.map_or(0.0, |v| v[hh]), p.dt_min, p.dt_max);
            let decay = (delta * a[hh]).exp();
            let (bg, cg) = (&bm[g * n..(g + 1) * n], &cm[g * n..(g + 1) * n]);
            for pp in 0..hd {
                let c = hh * hd + pp;
                let xv = x[c];
                let at = (b * heads * hd + c) * n;
                let mut acc = 0f32;
                for (((&h0, h1), &bv), &cv) in ssm_in[at..at + n].iter().zip(&mut ssm_out[at..at + n]).zip(bg).zip(cg) {
                    *h1 = decay * h0 + delta * xv * bv;
                    acc += cv * *h1;
                }
                y[c] = E::round(acc + dskip.map_or(0.0, |ds| ds[hh] * xv));
            }
        }

        // The gated RMSNorm over groups, in float32 (the unfused graph casts y and z up).
        for (g, (yg, zg)) in y.chunks_mut(group_size).zip(z.chunks(group_size)).enumerate() {
            let w = &gate_w[g * group_size..(g + 1) * group_size];
            if p.norm_before_gate {
                let inv = 1.0 / (yg.iter().map(|v| v * v).sum::<f32>() / group_size as f32 + p.eps).sqrt();
                for ((v, &zv), &wv) in yg.iter_mut().zip(zg).zip(w) {
                    *v = E::round(*v * inv * wv * silu(zv));
                }
            } else {
                yg.iter_mut().zip(zg).for_each(|(v, &zv)| *v *= silu(zv));
                let inv = 1.0 / (yg.iter().map(|v| v * v).sum::<f32>() / group_size as f32 + p.eps).sqrt();
                for (v, &wv) in yg.iter_mut().zip(w) {
                    *v = E::round(*v * inv * wv);
                }
            }
        }

        out.iter_mut().for_each(|v| *v = 0.0);
        gemv_rows(&y, w_out, h, &mut out);
        for (j, o) in res_out[b * h..(b + 1) * h].iter_mut().enumerate() {
            *o = rr[j] + out[j] + b_out.map_or(0.0, |bias| bias[j].f());
        }
    }
}
