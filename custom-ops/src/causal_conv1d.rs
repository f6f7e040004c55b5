//! CausalConv1d (docs/op-contract.md): depthwise, left-padded by width - 1 with the previous inputs.
//!
//! ```text
//! y[t, d] = act(bias[d] + sum_k weight[d, k] * x[t - (width - 1) + k, d])
//! ```
//!
//! with x at negative times taken from initial_state ([batch, dim, width - 1], oldest first), else
//! 0; `act` is SiLU or none (attribute `activation`). final_state holds the last width - 1 inputs.

use std::ffi::CStr;

use ort_sys::{ONNXTensorElementDataType as Elem, OrtKernelContext, OrtKernelInfo};

use crate::attributes::{attr_error, string_or};
use crate::error::OpError;
use crate::kernel_abi::ffi;
use crate::op_table::Kernel;
use crate::parallel::parallel_for;
use crate::slices::Slices;
use crate::tensor::{elem_bytes, input, output};

use mambac_op_schema::causal_conv1d as schema;

const ACTIVATION: &CStr = schema::ACTIVATION.c;

pub struct CausalConv1d {
    silu: bool,
    slices: Slices,
}

impl Kernel for CausalConv1d {
    const NAME: &'static CStr = schema::OP.c;
    const OP: &'static str = schema::OP.str;
    const INPUTS: usize = schema::INPUT_NAMES.len();
    /// y has weight's dim channels, which a sliced x (`x_offset`) does not.
    const OUTPUT0_LAST_DIM_FROM: Option<usize> = Some(schema::WEIGHT);

    fn output_types(t: Elem) -> &'static [Elem] {
        match t {
            Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 => {
                &[Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16]
            }
            Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16 => {
                &[Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16, Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16]
            }
            _ => &[Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT],
        }
    }

    unsafe fn create(info: *const OrtKernelInfo) -> Result<Self, OpError> {
        // SAFETY: `info` is live (the trait's contract).
        let activation = unsafe { string_or(info, Self::OP, ACTIVATION, "silu")? };
        let silu = match activation.as_str() {
            "silu" => true,
            "none" => false,
            other => {
                return Err(attr_error(Self::OP, ACTIVATION, format!("is \"{other}\", expected \"silu\" or \"none\"")))
            }
        };
        // SAFETY: as above.
        let slices = unsafe { Slices::read(info, Self::OP, &schema::SLICEABLE)? };
        Ok(CausalConv1d { silu, slices })
    }

    unsafe fn compute(&self, ctx: *mut OrtKernelContext) -> Result<(), OpError> {
        // SAFETY: `ctx` is live (the trait's contract), for `params` and the thread pool alike.
        let p = &unsafe { self.params(ctx)? };
        let tasks = ffi::causal_conv1d_cpu_tasks(p);
        let task = |i| ffi::causal_conv1d_cpu_run(p, i).map_err(|e| e.what().to_string());
        // SAFETY: as above.
        unsafe { parallel_for(ctx, tasks, Self::OP, &task) }
    }
}

impl CausalConv1d {
    /// Checks the inputs, allocates the outputs and fills the kernel ABI (shared by the CPU and
    /// the CUDA kernels).
    ///
    /// # Safety
    /// `ctx` is the live kernel context of the current compute call.
    pub unsafe fn params(&self, ctx: *mut OrtKernelContext) -> Result<ffi::CausalConv1dParams, OpError> {
        let op = Self::OP;
        // SAFETY: `ctx` is live (our contract) and every index is below INPUTS, the count ORT
        // was told.
        let inputs = (0..Self::INPUTS).map(|i| unsafe { input(ctx, i, op) }).collect::<Result<Vec<_>, _>>()?;
        let descs = self.slices.descs(&inputs);
        let mut p = ffi::check_causal_conv1d(&descs).map_err(|e| OpError::Check(e.what().to_string()))?;
        p.silu = self.silu;
        let t = elem_bytes(p.elem);
        p.x = self.slices.addr(schema::X, &inputs[schema::X], t);
        p.weight = inputs[1].addr;
        p.bias = inputs[2].addr;
        p.initial_state = inputs[3].addr;
        // SAFETY: `ctx` is live (our contract).
        p.y = unsafe { output(ctx, 0, "y", &[p.batch, p.seqlen, p.dim], t, op)? };
        // SAFETY: as above.
        p.final_state = unsafe { output(ctx, 1, "final_state", &[p.batch, p.dim, p.width - 1], t, op)? };
        Ok(p)
    }
}
