//! MambaLayerStep: one Mamba layer's decode step (one token a sequence), fused. The decode
//! graph (`mambac export --decode-graph`) is one such node a layer; see docs/decode-graph.md.
//!
//! ```text
//! v      = T(r / sqrt(mean(r^2) + eps) * norm_weight)          r = residual [B, 1, H] float32
//! x, z   = split(v @ in_proj_weight (+ in_proj_bias))           weights stored [in, out]
//! xc     = silu(conv_bias + <conv_weight[d], [conv_state[d], x[d]]>),  conv_state' = last width-1
//! dt, B, C = split(xc @ x_proj_weight);  dt = softplus(dt @ dt_proj_weight + dt_bias)
//! h'     = exp(dt A) h + dt B xc;  y = (<C, h'> + D xc) * silu(z)       h = ssm_state
//! residual_out = r + y @ out_proj_weight (+ out_proj_bias)
//! ```
//!
//! Inputs: conv_state [B, I, K-1] T, ssm_state [B, I, N] f32, residual [B, 1, H] f32,
//! norm_weight [H] f32, in_proj_weight [H, 2I] T, in_proj_bias? [2I] T, conv_weight [I, K] T,
//! conv_bias? [I] T, x_proj_weight [I, R+2N] T, dt_proj_weight [R, I] T, dt_bias? [I] f32,
//! A [I, N] f32, D? [I] f32, out_proj_weight [I, H] T, out_proj_bias? [H] T. Attribute
//! `epsilon` (float, default 1e-5). Outputs: residual_out [B, 1, H] f32, conv_state_out,
//! ssm_state_out (both required). T (float32, float16, bfloat16) is conv_state's type, input 0,
//! so ORT picks the kernel by it. Intermediates are rounded to T where the unfused graph stores a
//! T tensor, so both graphs agree to T's precision.

use std::ffi::CStr;

use half::{bf16, f16};
use ort_sys::{ONNXTensorElementDataType as Elem, OrtKernelContext, OrtKernelInfo};

use crate::attributes::epsilon_or;
use crate::error::OpError;
use crate::kernel_abi::ffi;
use crate::layer_step_params::{allocate_outputs, checked_inputs};
use crate::op_table::Kernel;
use crate::step_cpu::{for_elem, gemv_rows, silu, slice, slice_mut, softplus, Elt};

const EPSILON: &CStr = slot::EPSILON.c;

/// Input slots, in the order of the op's inputs (the names, for messages, are the C++ check's:
/// cpp/shape_check.cpp `check_mamba_layer_step`).
pub use mambac_op_schema::mamba_layer_step as slot;

pub struct MambaLayerStep {
    eps: f32,
}

impl Kernel for MambaLayerStep {
    const NAME: &'static CStr = slot::OP.c;
    const OP: &'static str = slot::OP.str;
    const INPUTS: usize = slot::INPUT_NAMES.len();
    // Output 0 is the float32 residual, not input 0's type: ORT infers nothing, the graph says.
    const INFER_OUTPUT0: bool = false;

    fn output_types(t: Elem) -> &'static [Elem] {
        const F: Elem = Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
        match t {
            Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 => &[F, Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, F],
            Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16 => &[F, Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16, F],
            _ => &[F, F, F],
        }
    }

    unsafe fn create(info: *const OrtKernelInfo) -> Result<Self, OpError> {
        // SAFETY: `info` is live (the trait's contract).
        let eps = unsafe { epsilon_or(info, Self::OP, EPSILON, slot::DEFAULT_EPSILON)? };
        Ok(MambaLayerStep { eps })
    }

    unsafe fn compute(&self, ctx: *mut OrtKernelContext) -> Result<(), OpError> {
        // SAFETY: `ctx` is live (the trait's contract).
        let p = unsafe { self.params(ctx)? };
        let run: unsafe fn(&ffi::MambaLayerStepParams) =
            for_elem(p.elem, [run_cpu::<f32>, run_cpu::<f16>, run_cpu::<bf16>]);
        // SAFETY: `p` comes from `params` of this compute call, and `run` is the instance for the
        // type `p.elem` names.
        unsafe { run(&p) };
        Ok(())
    }
}

impl MambaLayerStep {
    /// Checks every input, allocates the outputs and fills the params; shared by the CPU and
    /// CUDA kernels. What it shares with Mamba2LayerStep is `layer_step_params`'s.
    ///
    /// # Safety
    /// `ctx` is the live kernel context of the current compute call.
    pub unsafe fn params(&self, ctx: *mut OrtKernelContext) -> Result<ffi::MambaLayerStepParams, OpError> {
        // SAFETY: `ctx` is live (our contract) and INPUTS is the count ORT was told.
        let (mut p, inputs) = unsafe { checked_inputs::<ffi::MambaLayerStepParams>(ctx, Self::INPUTS, Self::OP)? };
        p.eps = self.eps;
        p.x_proj_weight = inputs[slot::X_PROJ_WEIGHT].addr;
        p.dt_proj_weight = inputs[slot::DT_PROJ_WEIGHT].addr;
        let (b, i, n, k1) = (p.batch, p.inner, p.dstate, p.width - 1);
        // SAFETY: `ctx` is live (our contract).
        unsafe { allocate_outputs(ctx, &mut p, &[b, i, k1], &[b, i, n], Self::OP)? };
        Ok(p)
    }
}

/// The reference-order CPU implementation: one batch row at a time, float32 arithmetic.
///
/// # Safety
/// `p` comes from [`MambaLayerStep::params`] of the current compute call and E is the element
/// type `p.elem` names.
unsafe fn run_cpu<E: Elt>(p: &ffi::MambaLayerStepParams) {
    let (bsz, h, i, n, r, k) = (p.batch, p.hidden, p.inner, p.dstate, p.dt_rank, p.width);
    let e = r + 2 * n;
    let k1 = k - 1;
    // SAFETY: the shape check gave every present input these extents and E is T; the outputs are
    // buffers ORT allocated for this call with the same extents, apart from every input (the ops
    // declare no in-place outputs), so the mutable slices alias nothing.
    let (res_in, res_out, conv_in, conv_out, ssm_in, ssm_out) = unsafe {
        (
            slice::<f32>(p.residual_in, bsz * h).unwrap_or(&[]),
            slice_mut::<f32>(p.residual_out, bsz * h),
            slice::<E>(p.conv_state_in, bsz * i * k1).unwrap_or(&[]),
            slice_mut::<E>(p.conv_state_out, bsz * i * k1),
            slice::<f32>(p.ssm_state_in, bsz * i * n).unwrap_or(&[]),
            slice_mut::<f32>(p.ssm_state_out, bsz * i * n),
        )
    };
    // SAFETY: as above, for the weights.
    let (norm_w, w_in, b_in, conv_w, conv_b, w_x, w_dt, dt_bias, a, dskip, w_out, b_out) = unsafe {
        (
            slice::<f32>(p.norm_weight, h).unwrap_or(&[]),
            slice::<E>(p.in_proj_weight, h * 2 * i).unwrap_or(&[]),
            slice::<E>(p.in_proj_bias, 2 * i),
            slice::<E>(p.conv_weight, i * k).unwrap_or(&[]),
            slice::<E>(p.conv_bias, i),
            slice::<E>(p.x_proj_weight, i * e).unwrap_or(&[]),
            slice::<E>(p.dt_proj_weight, r * i).unwrap_or(&[]),
            slice::<f32>(p.dt_bias, i),
            slice::<f32>(p.a, i * n).unwrap_or(&[]),
            slice::<f32>(p.d, i),
            slice::<E>(p.out_proj_weight, i * h).unwrap_or(&[]),
            slice::<E>(p.out_proj_bias, h),
        )
    };

    let mut xn = vec![0f32; h];
    let mut xz = vec![0f32; 2 * i];
    let mut xc = vec![0f32; i];
    let mut dbc = vec![0f32; e];
    let mut dt = vec![0f32; i];
    let mut y = vec![0f32; i];
    let mut out = vec![0f32; h];
    for b in 0..bsz {
        let rr = &res_in[b * h..(b + 1) * h];
        let ms = rr.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let inv = 1.0 / (ms + p.eps).sqrt();
        for ((o, &v), &w) in xn.iter_mut().zip(rr).zip(norm_w) {
            *o = E::round(v * inv * w);
        }
        xz.iter_mut().for_each(|v| *v = 0.0);
        gemv_rows(&xn, w_in, 2 * i, &mut xz);
        if let Some(bias) = b_in {
            xz.iter_mut().zip(bias).for_each(|(v, bv)| *v += bv.f());
        }
        for d in 0..i {
            let st = &conv_in[(b * i + d) * k1..(b * i + d + 1) * k1];
            let w = &conv_w[d * k..(d + 1) * k];
            let x = E::t(xz[d]);
            let mut acc = conv_b.map_or(0.0, |cb| cb[d].f());
            for q in 0..k1 {
                acc += w[q].f() * st[q].f();
            }
            acc += w[k1].f() * x.f();
            xc[d] = E::round(silu(acc));
            let so = &mut conv_out[(b * i + d) * k1..(b * i + d + 1) * k1];
            if k1 > 0 {
                so[..k1 - 1].copy_from_slice(&st[1..]);
                so[k1 - 1] = x;
            }
        }
        dbc.iter_mut().for_each(|v| *v = 0.0);
        gemv_rows(&xc, w_x, e, &mut dbc);
        dbc.iter_mut().for_each(|v| *v = E::round(*v));
        dt.iter_mut().for_each(|v| *v = 0.0);
        gemv_rows(&dbc[..r], w_dt, i, &mut dt);
        let (bv, cv) = (&dbc[r..r + n], &dbc[r + n..]);
        for d in 0..i {
            let delta = softplus(E::round(dt[d]) + dt_bias.map_or(0.0, |bias| bias[d]));
            let u = xc[d];
            let mut acc = 0f32;
            for s in 0..n {
                let at = (b * i + d) * n + s;
                let hs = (delta * a[d * n + s]).exp() * ssm_in[at] + delta * u * bv[s];
                ssm_out[at] = hs;
                acc += cv[s] * hs;
            }
            let v = acc + dskip.map_or(0.0, |ds| ds[d] * u);
            y[d] = E::round(v * silu(E::round(xz[i + d])));
        }
        out.iter_mut().for_each(|v| *v = 0.0);
        gemv_rows(&y, w_out, h, &mut out);
        for (j, o) in res_out[b * h..(b + 1) * h].iter_mut().enumerate() {
            *o = rr[j] + out[j] + b_out.map_or(0.0, |bias| bias[j].f());
        }
    }
}
