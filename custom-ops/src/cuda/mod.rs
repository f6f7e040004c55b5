//! The ops on ONNX Runtime's CUDA execution provider (`--features cuda`).
//!
//! Same signatures, attributes and shape checks as the CPU ops: [`Cuda<K>`] wraps the CPU op's
//! struct, so attribute parsing and the input checks (`params`, the C++ `check_*` functions
//! through the kernel ABI) exist once. The difference is where the work runs. ORT hands us
//! device pointers for every input and output, and the kernels (`cpp/cuda`) are queued on ORT's
//! compute stream (`KernelContext_GetGPUComputeStream`) with no host synchronisation. A failed
//! launch comes back as a `cudaError_t` and becomes an ORT error naming the op and CUDA's message.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;

use ort_sys::{ONNXTensorElementDataType as Elem, OrtKernelContext, OrtKernelInfo};

use crate::add_rms_norm::AddRmsNorm;
use crate::causal_conv1d::CausalConv1d;
use crate::error::OpError;
use crate::gated_rms_norm::GatedRmsNorm;
use crate::kernel_abi::ffi;
use crate::layer_step::MambaLayerStep;
use crate::mamba2_layer_step::Mamba2LayerStep;
use crate::op_table::Kernel;
use crate::ort_api::{api, check};
use crate::selective_scan::SelectiveScan;
use crate::ssd_scan::{check_cuda_limits, SsdScan};

extern "C" {
    // cpp/cuda/c_api.cu; each returns a cudaError_t (0 = success).
    fn mambac_cuda_selective_scan(p: *const ffi::SelectiveScanParams, stream: *mut c_void) -> c_int;
    fn mambac_cuda_ssd_scan(p: *const ffi::SsdScanParams, stream: *mut c_void) -> c_int;
    fn mambac_cuda_ssd_scan_scratch_bytes(p: *const ffi::SsdScanParams) -> usize;
    fn mambac_cuda_causal_conv1d(p: *const ffi::CausalConv1dParams, stream: *mut c_void) -> c_int;
    fn mambac_cuda_add_rms_norm(p: *const ffi::AddRmsNormParams, stream: *mut c_void) -> c_int;
    fn mambac_cuda_gated_rms_norm(p: *const ffi::GatedRmsNormParams, stream: *mut c_void) -> c_int;
    fn mambac_cuda_decode_layer(p: *const ffi::MambaLayerStepParams, stream: *mut c_void) -> c_int;
    fn mambac_cuda_decode_layer_scratch_bytes(p: *const ffi::MambaLayerStepParams) -> usize;
    fn mambac_cuda_mamba2_decode_layer(p: *const ffi::Mamba2LayerStepParams, stream: *mut c_void) -> c_int;
    fn mambac_cuda_mamba2_decode_layer_scratch_bytes(p: *const ffi::Mamba2LayerStepParams) -> usize;
    fn mambac_cuda_error_string(err: c_int) -> *const c_char;
}

const CUDA_EP: &CStr = c"CUDAExecutionProvider";

/// What a CPU op adds to run on the CUDA EP as [`Cuda<Self>`].
pub trait CudaLaunch: Kernel {
    /// What the launch needs: the kernel ABI's params.
    type Params;

    /// The CPU op's input checks and output allocation, then the CUDA kernels' own limits;
    /// `None` when there is nothing to launch.
    ///
    /// # Safety
    /// `ctx` is the live kernel context of the current compute call.
    unsafe fn prepare(&self, ctx: *mut OrtKernelContext) -> Result<Option<Self::Params>, OpError>;

    /// Queues the kernels on `stream`.
    ///
    /// # Safety
    /// `ctx` is the live kernel context of the current compute call, `stream` its CUDA stream and
    /// `p` what `prepare` returned for it.
    unsafe fn launch(p: &mut Self::Params, ctx: *mut OrtKernelContext, stream: *mut c_void) -> Result<(), OpError>;
}

/// Op `K` on the CUDA EP: `K`'s name, signature and attributes; compute launches on ORT's stream.
pub struct Cuda<K>(K);

impl<K: CudaLaunch> Kernel for Cuda<K> {
    const NAME: &'static CStr = K::NAME;
    const OP: &'static str = K::OP;
    const INPUTS: usize = K::INPUTS;
    const INFER_OUTPUT0: bool = K::INFER_OUTPUT0;
    const OUTPUT0_LAST_DIM_FROM: Option<usize> = K::OUTPUT0_LAST_DIM_FROM;
    const EP: &'static CStr = CUDA_EP;

    fn output_types(t: Elem) -> &'static [Elem] {
        K::output_types(t)
    }

    unsafe fn create(info: *const OrtKernelInfo) -> Result<Self, OpError> {
        // SAFETY: `info` is live (the trait's contract).
        unsafe { K::create(info) }.map(Cuda)
    }

    unsafe fn compute(&self, ctx: *mut OrtKernelContext) -> Result<(), OpError> {
        // SAFETY: `ctx` is live (the trait's contract); `stream` is its CUDA stream and `p` what
        // `prepare` returned for it, as `launch` asks.
        unsafe {
            let Some(mut p) = self.0.prepare(ctx)? else {
                return Ok(());
            };
            let stream = compute_stream(ctx, K::OP)?;
            K::launch(&mut p, ctx, stream)
        }
    }
}

impl CudaLaunch for SelectiveScan {
    type Params = ffi::SelectiveScanParams;

    unsafe fn prepare(&self, ctx: *mut OrtKernelContext) -> Result<Option<Self::Params>, OpError> {
        // SAFETY: `ctx` is live (the trait's contract).
        unsafe { self.params(ctx) }.map(Some)
    }

    unsafe fn launch(p: &mut Self::Params, _ctx: *mut OrtKernelContext, stream: *mut c_void) -> Result<(), OpError> {
        // SAFETY: `p` passed the shape check and its addresses are this call's device buffers
        // (the trait's contract); `stream` is ORT's stream, which keeps them alive until the
        // kernel has run.
        launch_result(unsafe { mambac_cuda_selective_scan(p, stream) }, Self::OP)
    }
}

/// SsdScan on the CUDA EP: the step kernel for decode and short sequences, the chunked prefill
/// (five kernels and float32 scratch from ORT's allocator, cpp/cuda/ssd_chunk_impl.cuh) for
/// longer ones; cpp/cuda/ssd_scan.h chooses.
impl CudaLaunch for SsdScan {
    type Params = ffi::SsdScanParams;

    unsafe fn prepare(&self, ctx: *mut OrtKernelContext) -> Result<Option<Self::Params>, OpError> {
        // SAFETY: `ctx` is live (the trait's contract).
        let p = unsafe { self.params(ctx)? };
        check_cuda_limits(&p)?;
        Ok(Some(p))
    }

    unsafe fn launch(p: &mut Self::Params, ctx: *mut OrtKernelContext, stream: *mut c_void) -> Result<(), OpError> {
        // SAFETY: `p` passed the shape check; the size depends on its dims alone.
        let bytes = unsafe { mambac_cuda_ssd_scan_scratch_bytes(p) };
        // SAFETY: `ctx` is live (the trait's contract) and x, input 0, is present (required).
        unsafe {
            with_scratch(ctx, 0, bytes, Self::OP, |scratch| {
                p.scratch = scratch;
                // SAFETY: as for SelectiveScan's launch, with `scratch` holding the `bytes` the
                // kernels asked for (or 0 when they asked for none) until they have run.
                launch_result(mambac_cuda_ssd_scan(p, stream), Self::OP)
            })
        }
    }
}

impl CudaLaunch for CausalConv1d {
    type Params = ffi::CausalConv1dParams;

    unsafe fn prepare(&self, ctx: *mut OrtKernelContext) -> Result<Option<Self::Params>, OpError> {
        // SAFETY: `ctx` is live (the trait's contract).
        unsafe { self.params(ctx) }.map(Some)
    }

    unsafe fn launch(p: &mut Self::Params, _ctx: *mut OrtKernelContext, stream: *mut c_void) -> Result<(), OpError> {
        // SAFETY: as for SelectiveScan's launch.
        launch_result(unsafe { mambac_cuda_causal_conv1d(p, stream) }, Self::OP)
    }
}

/// AddRmsNorm on the CUDA EP: one kernel, one block a row (cpp/cuda/add_rms_norm.cu).
impl CudaLaunch for AddRmsNorm {
    type Params = ffi::AddRmsNormParams;

    unsafe fn prepare(&self, ctx: *mut OrtKernelContext) -> Result<Option<Self::Params>, OpError> {
        // SAFETY: `ctx` is live (the trait's contract).
        let p = unsafe { self.params(ctx)? };
        Ok((p.rows > 0).then_some(p))
    }

    unsafe fn launch(p: &mut Self::Params, _ctx: *mut OrtKernelContext, stream: *mut c_void) -> Result<(), OpError> {
        // SAFETY: as for SelectiveScan's launch.
        launch_result(unsafe { mambac_cuda_add_rms_norm(p, stream) }, Self::OP)
    }
}

/// GatedRmsNorm on the CUDA EP: one kernel, one block a (row, group) (cpp/cuda/gated_rms_norm.cu).
impl CudaLaunch for GatedRmsNorm {
    type Params = ffi::GatedRmsNormParams;

    unsafe fn prepare(&self, ctx: *mut OrtKernelContext) -> Result<Option<Self::Params>, OpError> {
        // SAFETY: `ctx` is live (the trait's contract).
        let p = unsafe { self.params(ctx)? };
        Ok((p.rows > 0).then_some(p))
    }

    unsafe fn launch(p: &mut Self::Params, _ctx: *mut OrtKernelContext, stream: *mut c_void) -> Result<(), OpError> {
        // SAFETY: as for SelectiveScan's launch.
        launch_result(unsafe { mambac_cuda_gated_rms_norm(p, stream) }, Self::OP)
    }
}

/// MambaLayerStep on the CUDA EP: five kernels (cpp/cuda/decode_layer.cu) and a float32 scratch
/// buffer from ORT's allocator for the device of the residual input ([`with_scratch`]).
impl CudaLaunch for MambaLayerStep {
    type Params = ffi::MambaLayerStepParams;

    unsafe fn prepare(&self, ctx: *mut OrtKernelContext) -> Result<Option<Self::Params>, OpError> {
        // SAFETY: `ctx` is live (the trait's contract).
        let p = unsafe { self.params(ctx)? };
        if p.batch == 0 {
            return Ok(None);
        }
        ffi::check_mamba_layer_step_cuda_limits(&p).map_err(|e| OpError::Check(e.what().to_string()))?;
        Ok(Some(p))
    }

    unsafe fn launch(p: &mut Self::Params, ctx: *mut OrtKernelContext, stream: *mut c_void) -> Result<(), OpError> {
        // SAFETY: `p` passed the shape check; the size depends on its dims alone.
        let bytes = unsafe { mambac_cuda_decode_layer_scratch_bytes(p) };
        // SAFETY: `ctx` is live (the trait's contract) and the shape check found its residual
        // input present.
        unsafe {
            with_scratch(ctx, crate::layer_step::slot::RESIDUAL, bytes.max(16), Self::OP, |scratch| {
                p.scratch = scratch;
                // SAFETY: as for SelectiveScan's launch, with `scratch` holding the `bytes` the
                // kernels asked for until they have run.
                launch_result(mambac_cuda_decode_layer(p, stream), Self::OP)
            })
        }
    }
}

/// Mamba2LayerStep on the CUDA EP: five kernels (cpp/cuda/mamba2_decode_layer.cu, the GEMVs
/// MambaLayerStep's) and a float32 scratch buffer as MambaLayerStep's.
impl CudaLaunch for Mamba2LayerStep {
    type Params = ffi::Mamba2LayerStepParams;

    unsafe fn prepare(&self, ctx: *mut OrtKernelContext) -> Result<Option<Self::Params>, OpError> {
        // SAFETY: `ctx` is live (the trait's contract).
        let p = unsafe { self.params(ctx)? };
        if p.batch == 0 {
            return Ok(None);
        }
        ffi::check_mamba2_layer_step_cuda_limits(&p).map_err(|e| OpError::Check(e.what().to_string()))?;
        Ok(Some(p))
    }

    unsafe fn launch(p: &mut Self::Params, ctx: *mut OrtKernelContext, stream: *mut c_void) -> Result<(), OpError> {
        // SAFETY: `p` passed the shape check; the size depends on its dims alone.
        let bytes = unsafe { mambac_cuda_mamba2_decode_layer_scratch_bytes(p) };
        // SAFETY: `ctx` is live (the trait's contract) and the shape check found its residual
        // input present.
        unsafe {
            with_scratch(ctx, crate::mamba2_layer_step::slot::RESIDUAL, bytes.max(16), Self::OP, |scratch| {
                p.scratch = scratch;
                // SAFETY: as for SelectiveScan's launch, with `scratch` holding the `bytes` the
                // kernels asked for until they have run.
                launch_result(mambac_cuda_mamba2_decode_layer(p, stream), Self::OP)
            })
        }
    }
}

/// Runs `launch` with `bytes` of device scratch from ORT's allocator for the device of input
/// `slot` (its address; 0 and no allocation when `bytes` is 0). The buffer goes back to the
/// allocator once the launches are queued: ORT's CUDA EP runs a session's kernels on one stream,
/// so whatever reuses the memory next is queued behind these kernels.
///
/// # Safety
/// `ctx` is the live kernel context of the current compute call and input `slot` is present.
unsafe fn with_scratch(
    ctx: *mut OrtKernelContext,
    slot: usize,
    bytes: usize,
    op: &'static str,
    launch: impl FnOnce(usize) -> Result<(), OpError>,
) -> Result<(), OpError> {
    if bytes == 0 {
        return launch(0);
    }
    let api = api();
    // The input's memory info names the device (and ORT's allocator for it).
    let mut value: *const ort_sys::OrtValue = ptr::null();
    let mut info: *const ort_sys::OrtMemoryInfo = ptr::null();
    let mut alloc: *mut ort_sys::OrtAllocator = ptr::null_mut();
    // SAFETY: `ctx` is live and input `slot` present (our contract); `value` and `info` are then
    // live for this call, and each call writes the variable it is given. `alloc` is ours from here.
    unsafe {
        check((api.KernelContext_GetInput)(ctx, slot, &mut value), op, "KernelContext_GetInput")?;
        check((api.GetTensorMemoryInfo)(value, &mut info), op, "GetTensorMemoryInfo")?;
        check((api.KernelContext_GetAllocator)(ctx, info, &mut alloc), op, "KernelContext_GetAllocator")?;
    }
    let mut scratch: *mut c_void = ptr::null_mut();
    // SAFETY: `alloc` is live; the call writes `scratch`.
    let got = unsafe { check((api.AllocatorAlloc)(alloc, bytes, &mut scratch), op, "AllocatorAlloc") };
    let result = got.and_then(|()| launch(scratch as usize));
    if !scratch.is_null() {
        // SAFETY: `scratch` came from `alloc` above and is freed once.
        let _ = unsafe { check((api.AllocatorFree)(alloc, scratch), op, "AllocatorFree") };
    }
    // SAFETY: `alloc` is ours (from KernelContext_GetAllocator) and released once.
    unsafe { (api.ReleaseAllocator)(alloc) };
    result
}

/// ORT's CUDA stream for this compute call.
///
/// # Safety
/// `ctx` is the live kernel context of the current compute call.
unsafe fn compute_stream(ctx: *mut OrtKernelContext, op: &'static str) -> Result<*mut c_void, OpError> {
    let mut stream: *mut c_void = ptr::null_mut();
    // SAFETY: `ctx` is live (our contract) and the call writes `stream`.
    unsafe {
        check((api().KernelContext_GetGPUComputeStream)(ctx, &mut stream), op, "KernelContext_GetGPUComputeStream")?
    };
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
