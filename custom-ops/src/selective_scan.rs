//! SelectiveScan (docs/op-contract.md), with g = d / (dim / ngroups):
//!
//! ```text
//! h_0  = initial_state or 0
//! dt_t = softplus(delta_t + delta_bias)      (softplus(x) = x for x > 20; none if delta_softplus = 0)
//! h_t  = exp(dt_t * A[d, :]) * h_{t-1} + dt_t * B_t[g, :] * u_t
//! y_t  = <C_t[g, :], h_t> + D[d] * u_t
//! y_t *= z_t * sigmoid(z_t)                  (if z is given)
//! ```
//!
//! Inputs u, delta, A, B, C, D?, z?, delta_bias?, initial_state?; outputs y, final_state?.

use std::ffi::CStr;

use ort_sys::{ONNXTensorElementDataType as Elem, OrtKernelContext, OrtKernelInfo};

use crate::attributes::flag_or;
use crate::error::OpError;
use crate::kernel_abi::ffi;
use crate::op_table::Kernel;
use crate::parallel::parallel_for;
use crate::slices::Slices;
use crate::tensor::{elem_bytes, input, output};

use mambac_op_schema::selective_scan as schema;

const DELTA_SOFTPLUS: &CStr = schema::DELTA_SOFTPLUS.c;

pub struct SelectiveScan {
    delta_softplus: bool,
    slices: Slices,
}

impl Kernel for SelectiveScan {
    const NAME: &'static CStr = schema::OP.c;
    const OP: &'static str = schema::OP.str;
    const INPUTS: usize = schema::INPUT_NAMES.len();

    fn output_types(t: Elem) -> &'static [Elem] {
        y_and_f32_state(t)
    }

    unsafe fn create(info: *const OrtKernelInfo) -> Result<Self, OpError> {
        // SAFETY: `info` is live (the trait's contract).
        let delta_softplus = unsafe { flag_or(info, Self::OP, DELTA_SOFTPLUS, true)? };
        // SAFETY: as above.
        let slices = unsafe { Slices::read(info, Self::OP, &schema::SLICEABLE)? };
        Ok(SelectiveScan { delta_softplus, slices })
    }

    unsafe fn compute(&self, ctx: *mut OrtKernelContext) -> Result<(), OpError> {
        // SAFETY: `ctx` is live (the trait's contract), for `params` and the thread pool alike.
        let p = &unsafe { self.params(ctx)? };
        let tasks = ffi::selective_scan_cpu_tasks(p);
        let task = |i| ffi::selective_scan_cpu_run(p, i).map_err(|e| e.what().to_string());
        // SAFETY: as above.
        unsafe { parallel_for(ctx, tasks, Self::OP, &task) }
    }
}

impl SelectiveScan {
    /// Checks the inputs, allocates the outputs and fills the kernel ABI: everything but the run,
    /// shared by the CPU and the CUDA kernels.
    ///
    /// # Safety
    /// `ctx` is the live kernel context of the current compute call.
    pub unsafe fn params(&self, ctx: *mut OrtKernelContext) -> Result<ffi::SelectiveScanParams, OpError> {
        let op = Self::OP;
        // SAFETY: `ctx` is live (our contract) and every index is below INPUTS, the count ORT
        // was told.
        let inputs = (0..Self::INPUTS).map(|i| unsafe { input(ctx, i, op) }).collect::<Result<Vec<_>, _>>()?;
        let descs = self.slices.descs(&inputs);
        let mut p = ffi::check_selective_scan(&descs).map_err(|e| OpError::Check(e.what().to_string()))?;
        p.delta_softplus = self.delta_softplus;
        let t = elem_bytes(p.elem);
        p.u = inputs[0].addr;
        p.delta = inputs[1].addr;
        p.a = inputs[2].addr;
        p.b = self.slices.addr(schema::B, &inputs[schema::B], t);
        p.c = self.slices.addr(schema::C, &inputs[schema::C], t);
        p.d = inputs[5].addr;
        p.z = self.slices.addr(schema::Z, &inputs[schema::Z], t);
        p.delta_bias = inputs[7].addr;
        p.initial_state = inputs[8].addr;
        // SAFETY: `ctx` is live (our contract).
        p.y = unsafe { output(ctx, 0, "y", &[p.batch, p.seqlen, p.dim], t, op)? };
        // SAFETY: as above.
        p.final_state = unsafe { output(ctx, 1, "final_state", &[p.batch, p.dim, p.dstate], 4, op)? };
        Ok(p)
    }
}

/// Output types of the scans: `y` of T, `final_state` float32 whatever T is.
pub(crate) fn y_and_f32_state(t: Elem) -> &'static [Elem] {
    const F32: Elem = Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    match t {
        Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 => &[Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, F32],
        Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16 => &[Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16, F32],
        _ => &[F32, F32],
    }
}
