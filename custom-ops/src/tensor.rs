//! Reading a kernel's inputs and allocating its outputs through the ORT API.

use std::ffi::c_void;
use std::ptr;

use ort_sys::{ONNXTensorElementDataType, OrtKernelContext, OrtValue};

use crate::error::OpError;
use crate::kernel_abi::ffi::{ElemType, TensorDesc};
use crate::kernel_abi::MAX_RANK;
use crate::ort_api::{api, check};

/// One input slot: what the shape check sees, and the data address (0 = absent).
pub struct Input {
    pub desc: TensorDesc,
    pub addr: usize,
}

/// Reads input `index` of `ctx`; an omitted trailing input and an empty-named one are both absent.
///
/// # Safety
/// `ctx` is the live kernel context of the current compute call.
pub unsafe fn input(ctx: *mut OrtKernelContext, index: usize, op: &'static str) -> Result<Input, OpError> {
    let api = api();
    let mut count = 0usize;
    // SAFETY: `ctx` is live (our contract) and `count` is what the call writes; `check` gets the
    // status it returned.
    unsafe { check((api.KernelContext_GetInputCount)(ctx, &mut count), op, "KernelContext_GetInputCount")? };
    let mut value: *const OrtValue = ptr::null();
    if index < count {
        // SAFETY: as above, with `index` below the input count.
        unsafe { check((api.KernelContext_GetInput)(ctx, index, &mut value), op, "KernelContext_GetInput")? };
    }
    if value.is_null() {
        return Ok(Input { desc: TensorDesc::absent(), addr: 0 });
    }
    // SAFETY: `value` is the live input ORT just returned.
    let (elem, dims) = unsafe { type_and_shape(value, op)? };
    let mut data: *mut c_void = ptr::null_mut();
    // GetTensorMutableData is the API-20 way to reach an input's buffer; we only read it.
    // SAFETY: as above; the call writes `data` and nothing is written through it here.
    unsafe { check((api.GetTensorMutableData)(value as *mut OrtValue, &mut data), op, "GetTensorMutableData")? };
    let mut desc = TensorDesc::new(elem as i32, &dims[..dims.len().min(MAX_RANK)]);
    desc.rank = dims.len();
    Ok(Input { desc, addr: data as usize })
}

/// Element type and dims of a tensor value.
///
/// # Safety
/// `value` is a live OrtValue.
unsafe fn type_and_shape(
    value: *const OrtValue,
    op: &'static str,
) -> Result<(ONNXTensorElementDataType, Vec<i64>), OpError> {
    let api = api();
    let mut info = ptr::null_mut();
    // SAFETY: `value` is live (our contract); the call writes `info`, which we own from here.
    unsafe { check((api.GetTensorTypeAndShape)(value, &mut info), op, "GetTensorTypeAndShape")? };
    let mut elem = ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    let mut rank = 0usize;
    // SAFETY: `info` is the live type-and-shape info made above; each call writes the variable
    // it is given, `dims` having the `rank` slots GetDimensions fills.
    let result = (|| unsafe {
        check((api.GetTensorElementType)(info, &mut elem), op, "GetTensorElementType")?;
        check((api.GetDimensionsCount)(info, &mut rank), op, "GetDimensionsCount")?;
        let mut dims = vec![0i64; rank];
        check((api.GetDimensions)(info, dims.as_mut_ptr(), rank), op, "GetDimensions")?;
        Ok((elem, dims))
    })();
    // SAFETY: `info` is ours and released once, after its last use.
    unsafe { (api.ReleaseTensorTypeAndShapeInfo)(info) };
    result
}

/// Bytes of one element of a kernel ABI element type.
pub fn elem_bytes(e: ElemType) -> usize {
    if e == ElemType::F32 {
        4
    } else {
        2
    }
}

/// Number of outputs the node declares (trailing optional outputs may be omitted).
///
/// # Safety
/// As for [`input`].
pub unsafe fn output_count(ctx: *mut OrtKernelContext, op: &'static str) -> Result<usize, OpError> {
    let mut count = 0usize;
    // SAFETY: `ctx` is live (our contract) and `count` is what the call writes.
    unsafe { check((api().KernelContext_GetOutputCount)(ctx, &mut count), op, "KernelContext_GetOutputCount")? };
    Ok(count)
}

/// Allocates output `index` (`name` in messages) with `dims` of `elem_bytes`-byte elements and
/// returns its address, or 0 when the node does not ask for that output (omitted or empty-named).
/// A size in bytes past `i64::MAX` is an error naming the output: the inputs fit, but a state
/// output's dims combine them differently (an empty sequence of a huge batch).
///
/// # Safety
/// As for [`input`].
pub unsafe fn output(
    ctx: *mut OrtKernelContext,
    index: usize,
    name: &str,
    dims: &[usize],
    elem_bytes: usize,
    op: &'static str,
) -> Result<usize, OpError> {
    // SAFETY: `ctx` is live (our contract).
    if index >= unsafe { output_count(ctx, op)? } {
        return Ok(0);
    }
    let bytes = dims.iter().try_fold(elem_bytes, |acc, &d| acc.checked_mul(d));
    if !dims.contains(&0) && bytes.is_none_or(|b| b > i64::MAX as usize) {
        return Err(OpError::Check(format!(
            "{op}: output '{name}' would have shape {dims:?}, whose size in bytes exceeds 2^63 - 1"
        )));
    }
    let api = api();
    let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    let mut value: *mut OrtValue = ptr::null_mut();
    // SAFETY: `ctx` is live (our contract), `index` is below its output count and `dims` holds
    // `dims.len()` extents; the call writes `value`.
    unsafe {
        check(
            (api.KernelContext_GetOutput)(ctx, index, dims.as_ptr(), dims.len(), &mut value),
            op,
            "KernelContext_GetOutput",
        )?
    };
    if value.is_null() {
        return Ok(0);
    }
    let mut data: *mut c_void = ptr::null_mut();
    // SAFETY: `value` is the live output ORT just allocated; the call writes `data`.
    unsafe { check((api.GetTensorMutableData)(value, &mut data), op, "GetTensorMutableData")? };
    Ok(data as usize)
}
