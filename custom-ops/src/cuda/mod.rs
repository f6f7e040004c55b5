//! The ops on ONNX Runtime's CUDA execution provider (`--features cuda`).
//!
//! Same signatures, attributes and shape checks as the CPU ops: each CUDA kernel wraps the CPU
//! op's struct, so attribute parsing and the input checks (`params`, the C++ `check_*` functions
//! through the kernel ABI) exist once. The difference is where the work runs. ORT hands us
//! device pointers for every input and output, and the kernels (`cpp/cuda`) are queued on ORT's
//! compute stream (`KernelContext_GetGPUComputeStream`) with no host synchronisation. A failed
//! launch comes back as a `cudaError_t` and becomes an ORT error naming the op and CUDA's message.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;

use ort_sys::{ONNXTensorElementDataType as Elem, OrtKernelContext, OrtKernelInfo};

use crate::causal_conv1d::CausalConv1d;
use crate::error::OpError;
use crate::kernel_abi::ffi;
use crate::layer_step::{slot, MambaLayerStep};
use crate::op_table::{op_def, Kernel, OpDef, FLOAT_TYPES};
use crate::ort_api::{api, check};
use crate::selective_scan::SelectiveScan;

extern "C" {
    // cpp/cuda/c_api.cu; each returns a cudaError_t (0 = success).
    fn mambac_cuda_selective_scan(p: *const ffi::SelectiveScanParams, stream: *mut c_void) -> c_int;
    fn mambac_cuda_causal_conv1d(p: *const ffi::CausalConv1dParams, stream: *mut c_void) -> c_int;
    fn mambac_cuda_decode_layer(p: *const ffi::MambaLayerStepParams, stream: *mut c_void) -> c_int;
    fn mambac_cuda_decode_layer_scratch_bytes(p: *const ffi::MambaLayerStepParams) -> usize;
    fn mambac_cuda_error_string(err: c_int) -> *const c_char;
}

const CUDA_EP: &CStr = c"CUDAExecutionProvider";

/// The op tables for the CUDA EP, one per (op, T); static, as ORT keeps pointers to them.
pub static OPS: [OpDef; 9] = [
    op_def::<CudaSelectiveScan>(FLOAT_TYPES[0]),
    op_def::<CudaSelectiveScan>(FLOAT_TYPES[1]),
    op_def::<CudaSelectiveScan>(FLOAT_TYPES[2]),
    op_def::<CudaCausalConv1d>(FLOAT_TYPES[0]),
    op_def::<CudaCausalConv1d>(FLOAT_TYPES[1]),
    op_def::<CudaCausalConv1d>(FLOAT_TYPES[2]),
    op_def::<CudaMambaLayerStep>(FLOAT_TYPES[0]),
    op_def::<CudaMambaLayerStep>(FLOAT_TYPES[1]),
    op_def::<CudaMambaLayerStep>(FLOAT_TYPES[2]),
];

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

/// SelectiveScan on the CUDA EP.
pub struct CudaSelectiveScan(SelectiveScan);

impl Kernel for CudaSelectiveScan {
    const NAME: &'static CStr = SelectiveScan::NAME;
    const OP: &'static str = SelectiveScan::OP;
    const INPUTS: usize = SelectiveScan::INPUTS;
    const EP: &'static CStr = CUDA_EP;

    fn output_types(t: Elem) -> &'static [Elem] {
        SelectiveScan::output_types(t)
    }

    unsafe fn create(info: *const OrtKernelInfo) -> Result<Self, OpError> {
        SelectiveScan::create(info).map(CudaSelectiveScan)
    }

    unsafe fn compute(&self, ctx: *mut OrtKernelContext) -> Result<(), OpError> {
        let p = self.0.params(ctx)?;
        let stream = compute_stream(ctx, Self::OP)?;
        launch_result(mambac_cuda_selective_scan(&p, stream), Self::OP)
    }
}

/// CausalConv1d on the CUDA EP.
pub struct CudaCausalConv1d(CausalConv1d);

impl Kernel for CudaCausalConv1d {
    const NAME: &'static CStr = CausalConv1d::NAME;
    const OP: &'static str = CausalConv1d::OP;
    const INPUTS: usize = CausalConv1d::INPUTS;
    const EP: &'static CStr = CUDA_EP;

    fn output_types(t: Elem) -> &'static [Elem] {
        CausalConv1d::output_types(t)
    }

    unsafe fn create(info: *const OrtKernelInfo) -> Result<Self, OpError> {
        CausalConv1d::create(info).map(CudaCausalConv1d)
    }

    unsafe fn compute(&self, ctx: *mut OrtKernelContext) -> Result<(), OpError> {
        let p = self.0.params(ctx)?;
        let stream = compute_stream(ctx, Self::OP)?;
        launch_result(mambac_cuda_causal_conv1d(&p, stream), Self::OP)
    }
}

/// MambaLayerStep on the CUDA EP: five kernels (cpp/cuda/decode_layer.cu) and a float32 scratch
/// buffer from ORT's allocator for the device of the residual input. The buffer goes back to
/// the allocator once the launches are queued: ORT's CUDA EP runs a session's kernels on one
/// stream, so whatever reuses the memory next is queued behind these kernels.
pub struct CudaMambaLayerStep(MambaLayerStep);

impl Kernel for CudaMambaLayerStep {
    const NAME: &'static CStr = MambaLayerStep::NAME;
    const OP: &'static str = MambaLayerStep::OP;
    const INPUTS: usize = MambaLayerStep::INPUTS;
    const INFER_OUTPUT0: bool = MambaLayerStep::INFER_OUTPUT0;
    const EP: &'static CStr = CUDA_EP;

    fn output_types(t: Elem) -> &'static [Elem] {
        MambaLayerStep::output_types(t)
    }

    unsafe fn create(info: *const OrtKernelInfo) -> Result<Self, OpError> {
        MambaLayerStep::create(info).map(CudaMambaLayerStep)
    }

    unsafe fn compute(&self, ctx: *mut OrtKernelContext) -> Result<(), OpError> {
        let op = Self::OP;
        let mut p = self.0.params(ctx)?;
        if p.batch == 0 {
            return Ok(());
        }
        // The CUDA kernels' own limits (the CPU kernel has none): a grid dimension, and dt_low, B
        // and C in one block's shared memory.
        let e = p.dt_rank + 2 * p.dstate;
        if p.batch > 65535 {
            return Err(OpError::Check(format!(
                "MambaLayerStep: batch {} is more than the CUDA kernels take (65535)",
                p.batch
            )));
        }
        if ((e + 3) / 4 * 4 + 8 * 32) * 4 > 48 * 1024 {
            return Err(OpError::Check(format!(
                "MambaLayerStep: dt_rank + 2 * dstate = {e} is more than the CUDA kernels take (12032)"
            )));
        }
        let stream = compute_stream(ctx, op)?;
        let api = api();
        // The residual input's memory info names the device (and ORT's allocator for it).
        let mut value: *const ort_sys::OrtValue = ptr::null();
        check((api.KernelContext_GetInput)(ctx, slot::RESIDUAL, &mut value), op, "KernelContext_GetInput")?;
        let mut info: *const ort_sys::OrtMemoryInfo = ptr::null();
        check((api.GetTensorMemoryInfo)(value, &mut info), op, "GetTensorMemoryInfo")?;
        let mut alloc: *mut ort_sys::OrtAllocator = ptr::null_mut();
        check((api.KernelContext_GetAllocator)(ctx, info, &mut alloc), op, "KernelContext_GetAllocator")?;
        let bytes = mambac_cuda_decode_layer_scratch_bytes(&p);
        let mut scratch: *mut c_void = ptr::null_mut();
        let got = check((api.AllocatorAlloc)(alloc, bytes.max(16), &mut scratch), op, "AllocatorAlloc");
        let result = got.and_then(|()| {
            p.scratch = scratch as usize;
            launch_result(mambac_cuda_decode_layer(&p, stream), op)
        });
        if !scratch.is_null() {
            let _ = check((api.AllocatorFree)(alloc, scratch), op, "AllocatorFree");
        }
        (api.ReleaseAllocator)(alloc);
        result
    }
}
