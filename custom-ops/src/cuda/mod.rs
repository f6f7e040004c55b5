//! The ops on ONNX Runtime's CUDA execution provider (`--features cuda`).
//!
//! Same signatures, attributes and shape checks as the CPU ops (the C++ `check_*` functions
//! through the kernel ABI); the difference is where the work runs. ORT hands us device pointers
//! for every input and output, and the kernels (`cpp/cuda`) are queued on ORT's compute stream
//! (`KernelContext_GetGPUComputeStream`) with no host synchronisation. A failed launch comes back
//! as a `cudaError_t` and becomes an ORT error naming the op and CUDA's message.
//!
//! The op tables are the CPU ones (`op_table::op_def`, so every callback and check is shared)
//! with `GetExecutionProviderType` answering "CUDAExecutionProvider".

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;
use std::sync::OnceLock;

use ort_sys::{ONNXTensorElementDataType as Elem, OrtCustomOp, OrtKernelContext, OrtKernelInfo};

use crate::attributes::{int_or, string_or};
use crate::causal_conv1d::CausalConv1d;
use crate::error::OpError;
use crate::kernel_abi::ffi;
use crate::op_table::{op_def, Kernel, FLOAT_TYPES};
use crate::ort_api::{api, check};
use crate::selective_scan::SelectiveScan;
use crate::tensor::{input, output};

extern "C" {
    // cpp/cuda/c_api.cu; each returns a cudaError_t (0 = success).
    fn mambac_cuda_selective_scan(p: *const ffi::SelectiveScanParams, stream: *mut c_void) -> c_int;
    fn mambac_cuda_causal_conv1d(p: *const ffi::CausalConv1dParams, stream: *mut c_void) -> c_int;
    fn mambac_cuda_error_string(err: c_int) -> *const c_char;
}

const CUDA_EP: &CStr = c"CUDAExecutionProvider";

/// The op tables for the CUDA EP, one per (op, T), built once and kept for the process' life
/// (ORT keeps pointers to them).
pub fn ops() -> &'static [CudaOpDef] {
    static OPS: OnceLock<Vec<CudaOpDef>> = OnceLock::new();
    OPS.get_or_init(|| {
        let mut v = Vec::with_capacity(6);
        for t in FLOAT_TYPES {
            v.push(cuda_def::<CudaSelectiveScan>(t));
        }
        for t in FLOAT_TYPES {
            v.push(cuda_def::<CudaCausalConv1d>(t));
        }
        v
    })
}

/// `op_table::OpDef`'s layout (the shared callbacks read `t` through the table pointer), with
/// the execution provider changed.
#[repr(C)]
pub struct CudaOpDef {
    base: OrtCustomOp,
    t: Elem,
}

// SAFETY: immutable after construction; only function pointers and an enum.
unsafe impl Send for CudaOpDef {}
unsafe impl Sync for CudaOpDef {}

impl CudaOpDef {
    pub fn as_ort(&self) -> *const OrtCustomOp {
        &self.base
    }
}

fn cuda_def<K: Kernel>(t: Elem) -> CudaOpDef {
    let cpu = op_def::<K>(t);
    // SAFETY: as_ort points at the table inside `cpu`, alive for this statement.
    let mut base = unsafe { *cpu.as_ort() };
    assert_eq!(std::mem::size_of_val(&cpu), std::mem::size_of::<CudaOpDef>(), "OpDef layout changed");
    base.GetExecutionProviderType = Some(cuda_ep);
    CudaOpDef { base, t }
}

unsafe extern "system" fn cuda_ep(_op: *const OrtCustomOp) -> *const c_char {
    CUDA_EP.as_ptr()
}

/// ORT's CUDA stream for this compute call.
unsafe fn compute_stream(ctx: *mut OrtKernelContext, op: &'static str) -> Result<*mut c_void, OpError> {
    let mut stream: *mut c_void = ptr::null_mut();
    check((api().KernelContext_GetGPUComputeStream)(ctx, &mut stream), op, "KernelContext_GetGPUComputeStream")?;
    Ok(stream)
}

fn launch_result(rc: c_int, op: &'static str) -> Result<(), OpError> {
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: cudaGetErrorString returns a static NUL-terminated string for any code.
    let msg = unsafe { CStr::from_ptr(mambac_cuda_error_string(rc)) }.to_string_lossy().into_owned();
    Err(OpError::Kernel { op, message: format!("CUDA error {rc}: {msg}") })
}

/// SelectiveScan on the CUDA EP. Attributes are validated by the CPU op's `create` (one place
/// says what is valid) and read again here for the flag itself.
pub struct CudaSelectiveScan {
    delta_softplus: bool,
}

impl Kernel for CudaSelectiveScan {
    const NAME: &'static CStr = SelectiveScan::NAME;
    const OP: &'static str = SelectiveScan::OP;
    const INPUTS: usize = SelectiveScan::INPUTS;

    fn output_types(t: Elem) -> &'static [Elem] {
        SelectiveScan::output_types(t)
    }

    unsafe fn create(info: *const OrtKernelInfo) -> Result<Self, OpError> {
        SelectiveScan::create(info)?;
        let v = int_or(info, Self::OP, c"delta_softplus", 1)?;
        Ok(CudaSelectiveScan { delta_softplus: v == 1 })
    }

    unsafe fn compute(&self, ctx: *mut OrtKernelContext) -> Result<(), OpError> {
        let op = Self::OP;
        let inputs = (0..Self::INPUTS).map(|i| input(ctx, i, op)).collect::<Result<Vec<_>, _>>()?;
        let descs: Vec<ffi::TensorDesc> = inputs.iter().map(|i| i.desc).collect();
        let mut p = ffi::check_selective_scan(&descs).map_err(|e| OpError::Check(e.what().to_string()))?;
        p.delta_softplus = self.delta_softplus;
        p.u = inputs[0].addr;
        p.delta = inputs[1].addr;
        p.a = inputs[2].addr;
        p.b = inputs[3].addr;
        p.c = inputs[4].addr;
        p.d = inputs[5].addr;
        p.z = inputs[6].addr;
        p.delta_bias = inputs[7].addr;
        p.initial_state = inputs[8].addr;
        p.y = output(ctx, 0, &[p.batch, p.seqlen, p.dim], op)?;
        p.final_state = output(ctx, 1, &[p.batch, p.dim, p.dstate], op)?;
        let stream = compute_stream(ctx, op)?;
        launch_result(mambac_cuda_selective_scan(&p, stream), op)
    }
}

/// CausalConv1d on the CUDA EP; attributes as for [`CudaSelectiveScan`].
pub struct CudaCausalConv1d {
    silu: bool,
}

impl Kernel for CudaCausalConv1d {
    const NAME: &'static CStr = CausalConv1d::NAME;
    const OP: &'static str = CausalConv1d::OP;
    const INPUTS: usize = CausalConv1d::INPUTS;

    fn output_types(t: Elem) -> &'static [Elem] {
        CausalConv1d::output_types(t)
    }

    unsafe fn create(info: *const OrtKernelInfo) -> Result<Self, OpError> {
        CausalConv1d::create(info)?;
        let activation = string_or(info, Self::OP, c"activation", "silu")?;
        Ok(CudaCausalConv1d { silu: activation == "silu" })
    }

    unsafe fn compute(&self, ctx: *mut OrtKernelContext) -> Result<(), OpError> {
        let op = Self::OP;
        let inputs = (0..Self::INPUTS).map(|i| input(ctx, i, op)).collect::<Result<Vec<_>, _>>()?;
        let descs: Vec<ffi::TensorDesc> = inputs.iter().map(|i| i.desc).collect();
        let mut p = ffi::check_causal_conv1d(&descs).map_err(|e| OpError::Check(e.what().to_string()))?;
        p.silu = self.silu;
        p.x = inputs[0].addr;
        p.weight = inputs[1].addr;
        p.bias = inputs[2].addr;
        p.initial_state = inputs[3].addr;
        p.y = output(ctx, 0, &[p.batch, p.seqlen, p.dim], op)?;
        p.final_state = output(ctx, 1, &[p.batch, p.dim, p.width - 1], op)?;
        let stream = compute_stream(ctx, op)?;
        launch_result(mambac_cuda_causal_conv1d(&p, stream), op)
    }
}
