//! GatedRmsNorm (docs/op-contract.md "GatedRmsNorm"): Mamba-2's gated RMSNorm in one pass over
//! the rows, y and z read in T and the output written in T, computed in float32:
//!
//! ```text
//! norm_before_gate = 0:  out = T(rms_g(y * silu(z)) * weight)
//! norm_before_gate = 1:  out = T(rms_g(y) * weight * silu(z))
//! rms_g(v) = v / sqrt(mean(v^2 over the group_size channels of v's group) + epsilon)
//! ```
//!
//! Inputs y (T [batch, seqlen, d]), z (T, y's shape, or a slice of a wider last axis with
//! `z_offset`), weight (float32 [d]); output out (T, y's shape).

use std::ffi::CStr;

use ort_sys::{ONNXTensorElementDataType as Elem, OrtKernelContext, OrtKernelInfo};

use crate::attributes::{attr_error, epsilon_or, flag_or, int_opt};
use crate::error::OpError;
use crate::kernel_abi::ffi;
use crate::op_table::Kernel;
use crate::parallel::parallel_for;
use crate::slices::Slices;
use crate::tensor::{elem_bytes, input, output};

use mambac_op_schema::gated_rms_norm as schema;

pub struct GatedRmsNorm {
    eps: f32,
    group_size: i64,
    norm_before_gate: bool,
    slices: Slices,
}

impl Kernel for GatedRmsNorm {
    const NAME: &'static CStr = schema::OP.c;
    const OP: &'static str = schema::OP.str;
    const INPUTS: usize = schema::INPUT_NAMES.len();

    fn output_types(t: Elem) -> &'static [Elem] {
        match t {
            Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 => &[Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16],
            Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16 => &[Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16],
            _ => &[Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT],
        }
    }

    unsafe fn create(info: *const OrtKernelInfo) -> Result<Self, OpError> {
        let (eps_name, gs_name) = (schema::EPSILON.c, schema::GROUP_SIZE.c);
        // SAFETY: `info` is live (the trait's contract), for each read.
        let (eps, group_size, norm_before_gate, slices) = unsafe {
            (
                epsilon_or(info, Self::OP, eps_name, schema::DEFAULT_EPSILON)?,
                int_opt(info, Self::OP, gs_name)?,
                flag_or(info, Self::OP, schema::NORM_BEFORE_GATE.c, false)?,
                Slices::read(info, Self::OP, &schema::SLICEABLE)?,
            )
        };
        // No default: a wrong group count would normalise silently over the wrong channels.
        let group_size = group_size
            .ok_or_else(|| attr_error(Self::OP, gs_name, "is missing (channels a group: d / ngroups)".into()))?;
        if group_size < 1 {
            return Err(attr_error(Self::OP, gs_name, format!("is {group_size}, expected a positive number")));
        }
        Ok(GatedRmsNorm { eps, group_size, norm_before_gate, slices })
    }

    unsafe fn compute(&self, ctx: *mut OrtKernelContext) -> Result<(), OpError> {
        // SAFETY: `ctx` is live (the trait's contract), for `params` and the thread pool alike.
        let p = &unsafe { self.params(ctx)? };
        let tasks = ffi::gated_rms_norm_cpu_tasks(p);
        let task = |i| ffi::gated_rms_norm_cpu_run(p, i).map_err(|e| e.what().to_string());
        // SAFETY: as above.
        unsafe { parallel_for(ctx, tasks, Self::OP, &task) }
    }
}

impl GatedRmsNorm {
    /// Checks the inputs, allocates the output and fills the kernel ABI (shared by the CPU and
    /// the CUDA kernels).
    ///
    /// # Safety
    /// `ctx` is the live kernel context of the current compute call.
    pub unsafe fn params(&self, ctx: *mut OrtKernelContext) -> Result<ffi::GatedRmsNormParams, OpError> {
        let op = Self::OP;
        // SAFETY: `ctx` is live (our contract) and every index is below INPUTS, the count ORT
        // was told.
        let inputs = (0..Self::INPUTS).map(|i| unsafe { input(ctx, i, op) }).collect::<Result<Vec<_>, _>>()?;
        let descs = self.slices.descs(&inputs);
        let mut p =
            ffi::check_gated_rms_norm(&descs, self.group_size).map_err(|e| OpError::Check(e.what().to_string()))?;
        p.eps = self.eps;
        p.norm_before_gate = self.norm_before_gate;
        let t = elem_bytes(p.elem);
        p.y = inputs[schema::Y].addr;
        p.z = self.slices.addr(schema::Z, &inputs[schema::Z], t);
        p.weight = inputs[schema::WEIGHT].addr;
        // y's dims, not rows: the output keeps [batch, seqlen, d] (the check passed rank 3).
        let dims: Vec<usize> = inputs[schema::Y].desc.dims[..3].iter().map(|&d| d as usize).collect();
        // SAFETY: `ctx` is live (our contract).
        p.out = unsafe { output(ctx, 0, schema::OUTPUT_NAMES[0], &dims, t, op)? };
        Ok(p)
    }
}
