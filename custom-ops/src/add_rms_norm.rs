//! AddRmsNorm (docs/op-contract.md "AddRmsNorm"): the residual add and the RMSNorm between two
//! layers in one pass over the rows, the float32 stream read once and written once.
//!
//! ```text
//! residual_out = residual + float32(x)            (float32(x) when residual is absent)
//! y            = T(residual_out / sqrt(mean(residual_out^2) + epsilon) * weight)
//! ```
//!
//! Inputs x (T), residual? (float32), weight (float32 [hidden]); outputs y (T, x's shape),
//! residual_out? (float32, x's shape).

use std::ffi::CStr;

use ort_sys::{ONNXTensorElementDataType as Elem, OrtKernelContext, OrtKernelInfo};

use crate::attributes::epsilon_or;
use crate::error::OpError;
use crate::kernel_abi::ffi;
use crate::op_table::Kernel;
use crate::parallel::parallel_for;
use crate::tensor::{elem_bytes, input, output};

use mambac_op_schema::add_rms_norm as schema;

pub struct AddRmsNorm {
    eps: f32,
}

impl Kernel for AddRmsNorm {
    const NAME: &'static CStr = schema::OP.c;
    const OP: &'static str = schema::OP.str;
    const INPUTS: usize = schema::INPUT_NAMES.len();

    fn output_types(t: Elem) -> &'static [Elem] {
        const F: Elem = Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
        match t {
            Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 => &[Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, F],
            Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16 => &[Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16, F],
            _ => &[F, F],
        }
    }

    unsafe fn create(info: *const OrtKernelInfo) -> Result<Self, OpError> {
        // SAFETY: `info` is live (the trait's contract).
        let eps = unsafe { epsilon_or(info, Self::OP, schema::EPSILON.c, schema::DEFAULT_EPSILON)? };
        Ok(AddRmsNorm { eps })
    }

    unsafe fn compute(&self, ctx: *mut OrtKernelContext) -> Result<(), OpError> {
        // SAFETY: `ctx` is live (the trait's contract), for `params` and the thread pool alike.
        let p = &unsafe { self.params(ctx)? };
        let tasks = ffi::add_rms_norm_cpu_tasks(p);
        let task = |i| ffi::add_rms_norm_cpu_run(p, i).map_err(|e| e.what().to_string());
        // SAFETY: as above.
        unsafe { parallel_for(ctx, tasks, Self::OP, &task) }
    }
}

impl AddRmsNorm {
    /// Checks the inputs, allocates the outputs and fills the kernel ABI (shared by the CPU and
    /// the CUDA kernels).
    ///
    /// # Safety
    /// `ctx` is the live kernel context of the current compute call.
    pub unsafe fn params(&self, ctx: *mut OrtKernelContext) -> Result<ffi::AddRmsNormParams, OpError> {
        let op = Self::OP;
        // SAFETY: `ctx` is live (our contract) and every index is below INPUTS, the count ORT
        // was told.
        let inputs = (0..Self::INPUTS).map(|i| unsafe { input(ctx, i, op) }).collect::<Result<Vec<_>, _>>()?;
        let descs: Vec<ffi::TensorDesc> = inputs.iter().map(|i| i.desc).collect();
        let mut p = ffi::check_add_rms_norm(&descs).map_err(|e| OpError::Check(e.what().to_string()))?;
        p.eps = self.eps;
        p.x = inputs[schema::X].addr;
        p.residual = inputs[schema::RESIDUAL].addr;
        p.weight = inputs[schema::WEIGHT].addr;
        // x's dims, not rows: the outputs keep [batch, seqlen, hidden] (the check passed rank 3).
        let dims: Vec<usize> = inputs[schema::X].desc.dims[..3].iter().map(|&d| d as usize).collect();
        let [y, residual_out] = schema::OUTPUT_NAMES;
        // SAFETY: `ctx` is live (our contract).
        p.y = unsafe { output(ctx, 0, y, &dims, elem_bytes(p.elem), op)? };
        // SAFETY: as above.
        p.residual_out = unsafe { output(ctx, 1, residual_out, &dims, 4, op)? };
        Ok(p)
    }
}
