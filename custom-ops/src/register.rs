//! `RegisterCustomOps`, the library's one exported symbol: ORT calls it when a user loads the
//! library (Python `SessionOptions.register_custom_ops_library`, C `RegisterCustomOpsLibrary_V2`,
//! Rust `ort`'s `SessionBuilder::with_operator_library`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use ort_sys::{
    ONNXTensorElementDataType as Elem, OrtApiBase, OrtErrorCode, OrtSessionOptions, OrtShapeInferContext, OrtStatus,
};

use crate::causal_conv1d::CausalConv1d;
use crate::error::{panic_message, OpError};
use crate::layer_step::MambaLayerStep;
use crate::op_table::{op_def, OpDef, FLOAT_TYPES};
use crate::ort_api::{self, api, check, cstr_to_string, make_status, API_VERSION};
use crate::selective_scan::SelectiveScan;

/// The ONNX domain of the ops (DESIGN.md).
pub const DOMAIN: &std::ffi::CStr = c"mambac";

/// Every op table, one per (op, T). Static: ORT keeps pointers to them for the process' life.
static OPS: [OpDef; 9] = [
    op_def::<SelectiveScan>(FLOAT_TYPES[0]),
    op_def::<SelectiveScan>(FLOAT_TYPES[1]),
    op_def::<SelectiveScan>(FLOAT_TYPES[2]),
    op_def::<CausalConv1d>(FLOAT_TYPES[0]),
    op_def::<CausalConv1d>(FLOAT_TYPES[1]),
    op_def::<CausalConv1d>(FLOAT_TYPES[2]),
    op_def::<MambaLayerStep>(FLOAT_TYPES[0]),
    op_def::<MambaLayerStep>(FLOAT_TYPES[1]),
    op_def::<MambaLayerStep>(FLOAT_TYPES[2]),
];

/// Adds the `mambac` domain with its ops to `options`.
///
/// # Safety
/// Called by ONNX Runtime with live session options and its API base.
#[no_mangle]
pub unsafe extern "C" fn RegisterCustomOps(
    options: *mut OrtSessionOptions,
    api_base: *const OrtApiBase,
) -> *mut OrtStatus {
    if api_base.is_null() {
        return ptr::null_mut(); // nothing to report an error through
    }
    let api_ptr = ((*api_base).GetApi)(API_VERSION);
    if api_ptr.is_null() {
        // An ORT older than 1.20. Version 1 of the API always exists and has CreateStatus.
        let old = ((*api_base).GetApi)(1);
        if old.is_null() {
            return ptr::null_mut();
        }
        let version = cstr_to_string(((*api_base).GetVersionString)());
        let msg = format!("libmambac_ops needs ONNX Runtime 1.20 or later (C API {API_VERSION}); this is {version}");
        return make_status(&*old, OrtErrorCode::ORT_FAIL, &msg);
    }
    ort_api::set_api(api_ptr);
    let result = catch_unwind(AssertUnwindSafe(|| register(options)))
        .unwrap_or_else(|p| Err(OpError::Panic { op: "RegisterCustomOps", message: panic_message(p.as_ref()) }));
    match result {
        Ok(()) => ptr::null_mut(),
        Err(e) => ort_api::error_status(&e).0,
    }
}

unsafe fn register(options: *mut OrtSessionOptions) -> Result<(), OpError> {
    let api = api();
    let op = "RegisterCustomOps";
    let mut domain = ptr::null_mut();
    check((api.CreateCustomOpDomain)(DOMAIN.as_ptr(), &mut domain), op, "CreateCustomOpDomain")?;
    for def in &OPS {
        check((api.CustomOpDomain_Add)(domain, def.as_ort()), op, "CustomOpDomain_Add")?;
    }
    #[cfg(feature = "cuda")]
    for def in &crate::cuda::OPS {
        check((api.CustomOpDomain_Add)(domain, def.as_ort()), op, "CustomOpDomain_Add")?;
    }
    // The domain must outlive every session made from `options`, which we cannot see end, so it
    // is never released (a few hundred bytes per registration).
    check((api.AddCustomOpDomain)(options, domain), op, "AddCustomOpDomain")
}

/// Shape inference for output 0: the element type and shape (symbolic dims included) of input 0.
///
/// # Safety
/// `ctx` is the live shape-inference context ORT passed to `InferOutputShapeFn`.
pub unsafe fn infer_output0(ctx: *mut OrtShapeInferContext) -> Result<(), OpError> {
    let api = api();
    let op = "InferOutputShapeFn";
    let mut count = 0usize;
    check((api.ShapeInferContext_GetInputCount)(ctx, &mut count), op, "ShapeInferContext_GetInputCount")?;
    if count == 0 {
        return Ok(());
    }
    // Owned by the context: not released here.
    let mut input = ptr::null_mut();
    check((api.ShapeInferContext_GetInputTypeShape)(ctx, 0, &mut input), op, "ShapeInferContext_GetInputTypeShape")?;
    let mut elem = Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    let mut rank = 0usize;
    check((api.GetTensorElementType)(input, &mut elem), op, "GetTensorElementType")?;
    check((api.GetDimensionsCount)(input, &mut rank), op, "GetDimensionsCount")?;
    if rank != 3 || !FLOAT_TYPES.contains(&elem) {
        return Ok(()); // compute will report it
    }
    let mut dims = vec![0i64; rank];
    let mut names = vec![ptr::null::<std::ffi::c_char>(); rank];
    check((api.GetDimensions)(input, dims.as_mut_ptr(), rank), op, "GetDimensions")?;
    check((api.GetSymbolicDimensions)(input, names.as_mut_ptr(), rank), op, "GetSymbolicDimensions")?;

    let mut out = ptr::null_mut();
    check((api.CreateTensorTypeAndShapeInfo)(&mut out), op, "CreateTensorTypeAndShapeInfo")?;
    let result = (|| {
        check((api.SetTensorElementType)(out, elem), op, "SetTensorElementType")?;
        check((api.SetDimensions)(out, dims.as_ptr(), rank), op, "SetDimensions")?;
        check((api.SetSymbolicDimensions)(out, names.as_mut_ptr(), rank), op, "SetSymbolicDimensions")?;
        check((api.ShapeInferContext_SetOutputTypeShape)(ctx, 0, out), op, "ShapeInferContext_SetOutputTypeShape")
    })();
    (api.ReleaseTensorTypeAndShapeInfo)(out);
    result
}
