//! The `OrtCustomOp` tables: what ORT calls to learn an op's signature and to create and run its
//! kernels. One table per (op, T), T in float32 / float16 / bfloat16; ORT merges tables of one
//! name into one schema and picks the kernel by the type of input 0.
//!
//! Only input 0 (`u` / `x`) is typed for ORT. Every other input is declared "any type" and every
//! input optional, so that a wrong type or a missing input reaches the C++ check, whose error
//! names the input and what was expected; ORT's own messages would name neither.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use ort_sys::{
    ONNXTensorElementDataType as Elem, OrtApi, OrtCustomOp, OrtCustomOpInputOutputCharacteristic as Io,
    OrtKernelContext, OrtKernelInfo, OrtMemType, OrtShapeInferContext, OrtStatusPtr,
};

use crate::error::{panic_message, OpError};
use crate::ort_api::{api, check, error_status, API_VERSION};

/// The element types the ops accept as T.
pub const FLOAT_TYPES: [Elem; 3] = [
    Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
    Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16,
    Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16,
];

/// What an op supplies; `op_table` turns it into the C callbacks.
pub trait Kernel: Sized + Send + Sync + 'static {
    /// The ONNX op type, e.g. `c"SelectiveScan"`.
    const NAME: &'static CStr;
    /// The same, for messages.
    const OP: &'static str;
    const INPUTS: usize;
    /// The execution provider the kernel runs on; empty for the CPU EP.
    const EP: &'static CStr = c"";
    /// Whether output 0 has input 0's type and shape (ORT's shape inference is told so).
    const INFER_OUTPUT0: bool = true;
    /// With `INFER_OUTPUT0`: the input whose first dim is output 0's last one, when input 0 may
    /// be read as a slice of a longer last axis (CausalConv1d's `x_offset`: its weight's dim).
    const OUTPUT0_LAST_DIM_FROM: Option<usize> = None;
    /// The output element types given T (outputs past index 0 are optional).
    fn output_types(t: Elem) -> &'static [Elem];

    /// Reads and validates the node's attributes.
    ///
    /// # Safety
    /// `info` is the live kernel info of the kernel being created.
    unsafe fn create(info: *const OrtKernelInfo) -> Result<Self, OpError>;

    /// # Safety
    /// `ctx` is the live kernel context of the current compute call.
    unsafe fn compute(&self, ctx: *mut OrtKernelContext) -> Result<(), OpError>;
}

/// An `OrtCustomOp` and the T it was made for. `repr(C)` with the table first: ORT hands the
/// callbacks a pointer to the table, which is also a pointer to this.
#[repr(C)]
pub struct OpDef {
    base: OrtCustomOp,
    t: Elem,
}

impl OpDef {
    pub fn as_ort(&self) -> *const OrtCustomOp {
        &self.base
    }
}

/// # Safety
/// `op` points at the `base` of a live `OpDef` (all tables ORT sees are ours and static).
unsafe fn def<'a>(op: *const OrtCustomOp) -> &'a OpDef {
    // SAFETY: `OpDef` is `repr(C)` with the table first, so a pointer to a live `OpDef`'s
    // `base` is a pointer to that `OpDef` (our contract).
    unsafe { &*(op as *const OpDef) }
}

/// The table of `K` for element type `t`.
pub const fn op_def<K: Kernel>(t: Elem) -> OpDef {
    OpDef {
        base: OrtCustomOp {
            version: API_VERSION,
            CreateKernel: None,
            GetName: Some(get_name::<K>),
            GetExecutionProviderType: Some(get_ep::<K>),
            GetInputType: Some(get_input_type),
            GetInputTypeCount: Some(get_input_count::<K>),
            GetOutputType: Some(get_output_type::<K>),
            GetOutputTypeCount: Some(get_output_count::<K>),
            KernelCompute: None,
            KernelDestroy: Some(kernel_destroy::<K>),
            GetInputCharacteristic: Some(input_characteristic),
            GetOutputCharacteristic: Some(output_characteristic),
            GetInputMemoryType: Some(input_memory_type),
            GetVariadicInputMinArity: Some(variadic_min_arity),
            GetVariadicInputHomogeneity: Some(variadic_homogeneity),
            GetVariadicOutputMinArity: Some(variadic_min_arity),
            GetVariadicOutputHomogeneity: Some(variadic_homogeneity),
            CreateKernelV2: Some(create_kernel::<K>),
            KernelComputeV2: Some(kernel_compute::<K>),
            InferOutputShapeFn: if K::INFER_OUTPUT0 { Some(infer_output_shape::<K>) } else { None },
            GetStartVersion: Some(start_version),
            GetEndVersion: None,
            GetMayInplace: None,
            ReleaseMayInplace: None,
            GetAliasMap: None,
            ReleaseAliasMap: None,
        },
        t,
    }
}

unsafe extern "system" fn get_name<K: Kernel>(_op: *const OrtCustomOp) -> *const c_char {
    K::NAME.as_ptr()
}

/// Null means the CPU execution provider.
unsafe extern "system" fn get_ep<K: Kernel>(_op: *const OrtCustomOp) -> *const c_char {
    if K::EP.is_empty() {
        ptr::null()
    } else {
        K::EP.as_ptr()
    }
}

unsafe extern "system" fn get_input_type(op: *const OrtCustomOp, index: usize) -> Elem {
    if index == 0 {
        // SAFETY: ORT calls back with the table it was given, one of ours.
        unsafe { def(op) }.t
    } else {
        Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED
    }
}

unsafe extern "system" fn get_input_count<K: Kernel>(_op: *const OrtCustomOp) -> usize {
    K::INPUTS
}

unsafe extern "system" fn get_output_type<K: Kernel>(op: *const OrtCustomOp, index: usize) -> Elem {
    // SAFETY: ORT calls back with the table it was given, one of ours.
    K::output_types(unsafe { def(op) }.t).get(index).copied().unwrap_or(Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED)
}

unsafe extern "system" fn get_output_count<K: Kernel>(op: *const OrtCustomOp) -> usize {
    // SAFETY: as in `get_output_type`.
    K::output_types(unsafe { def(op) }.t).len()
}

unsafe extern "system" fn input_characteristic(_op: *const OrtCustomOp, _index: usize) -> Io {
    Io::INPUT_OUTPUT_OPTIONAL
}

unsafe extern "system" fn output_characteristic(_op: *const OrtCustomOp, index: usize) -> Io {
    if index == 0 {
        Io::INPUT_OUTPUT_REQUIRED
    } else {
        Io::INPUT_OUTPUT_OPTIONAL
    }
}

unsafe extern "system" fn input_memory_type(_op: *const OrtCustomOp, _index: usize) -> OrtMemType {
    OrtMemType::OrtMemTypeDefault
}

unsafe extern "system" fn variadic_min_arity(_op: *const OrtCustomOp) -> c_int {
    1
}

unsafe extern "system" fn variadic_homogeneity(_op: *const OrtCustomOp) -> c_int {
    1
}

unsafe extern "system" fn start_version(_op: *const OrtCustomOp) -> c_int {
    1
}

unsafe extern "system" fn create_kernel<K: Kernel>(
    _op: *const OrtCustomOp,
    _api: *const OrtApi,
    info: *const OrtKernelInfo,
    kernel: *mut *mut c_void,
) -> OrtStatusPtr {
    guard(K::OP, || {
        // SAFETY: ORT passes the live kernel info of the kernel it is creating.
        let k = unsafe { K::create(info)? };
        // SAFETY: `kernel` is where ORT takes the new kernel from; it frees it with `kernel_destroy`.
        unsafe { *kernel = Box::into_raw(Box::new(k)) as *mut c_void };
        Ok(())
    })
}

unsafe extern "system" fn kernel_compute<K: Kernel>(kernel: *mut c_void, ctx: *mut OrtKernelContext) -> OrtStatusPtr {
    // SAFETY: `kernel` is what `create_kernel::<K>` made for this table (ORT hands each table's
    // kernels back to it) and is alive until `kernel_destroy`; `ctx` is this call's live context.
    guard(K::OP, || unsafe { (*(kernel as *const K)).compute(ctx) })
}

unsafe extern "system" fn kernel_destroy<K: Kernel>(kernel: *mut c_void) {
    if !kernel.is_null() {
        // A panic in a destructor has nowhere to go; swallow it rather than unwind into ORT.
        // SAFETY: `kernel` came from `Box::into_raw` in `create_kernel::<K>`, and ORT destroys
        // each kernel once.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(kernel as *mut K) })));
    }
}

/// Output 0 has the type and shape of input 0 (the scan and the conv), symbolic dims included. Outputs past
/// 0 are left to ORT: this API version cannot tell how many outputs the node has, and naming
/// one it lacks is undefined behaviour inside ORT. Never fails: errors belong to compute.
unsafe extern "system" fn infer_output_shape<K: Kernel>(
    _op: *const OrtCustomOp,
    ctx: *mut OrtShapeInferContext,
) -> OrtStatusPtr {
    // SAFETY: ORT passes the live shape-inference context of this call.
    let _ = catch_unwind(AssertUnwindSafe(|| unsafe { infer_output0(ctx, K::OUTPUT0_LAST_DIM_FROM) }));
    OrtStatusPtr(ptr::null_mut())
}

/// Shape inference for output 0: the element type and shape (symbolic dims included) of input 0,
/// the last dim taken from input `last_from`'s first when given.
///
/// # Safety
/// `ctx` is the live shape-inference context ORT passed to `InferOutputShapeFn`.
unsafe fn infer_output0(ctx: *mut OrtShapeInferContext, last_from: Option<usize>) -> Result<(), OpError> {
    let api = api();
    let op = "InferOutputShapeFn";
    let mut count = 0usize;
    // SAFETY: `ctx` is live (our contract) and `count` is what the call writes.
    unsafe { check((api.ShapeInferContext_GetInputCount)(ctx, &mut count), op, "ShapeInferContext_GetInputCount")? };
    if count == 0 {
        return Ok(());
    }
    // Owned by the context: not released here.
    let mut input = ptr::null_mut();
    let mut elem = Elem::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    let mut rank = 0usize;
    // SAFETY: `ctx` is live and has an input 0; `input` is then the context's live type-and-shape
    // info, and each call writes the variable it is given.
    unsafe {
        check(
            (api.ShapeInferContext_GetInputTypeShape)(ctx, 0, &mut input),
            op,
            "ShapeInferContext_GetInputTypeShape",
        )?;
        check((api.GetTensorElementType)(input, &mut elem), op, "GetTensorElementType")?;
        check((api.GetDimensionsCount)(input, &mut rank), op, "GetDimensionsCount")?;
    }
    if rank != 3 || !FLOAT_TYPES.contains(&elem) {
        return Ok(()); // compute will report it
    }
    let mut dims = vec![0i64; rank];
    let mut names = vec![ptr::null::<c_char>(); rank];
    // SAFETY: `input` is live as above; `dims` and `names` have the `rank` slots the calls fill.
    unsafe {
        check((api.GetDimensions)(input, dims.as_mut_ptr(), rank), op, "GetDimensions")?;
        check((api.GetSymbolicDimensions)(input, names.as_mut_ptr(), rank), op, "GetSymbolicDimensions")?;
    }
    if let Some(slot) = last_from.filter(|&s| s < count) {
        // SAFETY: `ctx` is live and has input `slot`.
        match unsafe { first_dim(ctx, slot)? } {
            Some(d) => {
                dims[rank - 1] = d;
                names[rank - 1] = c"".as_ptr();
            }
            None => return Ok(()), // unknown: leave the output to the model's value_info
        }
    }

    let mut out = ptr::null_mut();
    // SAFETY: the call writes `out`, which we own from here.
    unsafe { check((api.CreateTensorTypeAndShapeInfo)(&mut out), op, "CreateTensorTypeAndShapeInfo")? };
    // SAFETY: `out` is the live info made above and `ctx` is live; `dims` and `names` hold
    // `rank` entries, the names still owned by input 0's info (SetSymbolicDimensions copies them).
    let result = (|| unsafe {
        check((api.SetTensorElementType)(out, elem), op, "SetTensorElementType")?;
        check((api.SetDimensions)(out, dims.as_ptr(), rank), op, "SetDimensions")?;
        check((api.SetSymbolicDimensions)(out, names.as_mut_ptr(), rank), op, "SetSymbolicDimensions")?;
        check((api.ShapeInferContext_SetOutputTypeShape)(ctx, 0, out), op, "ShapeInferContext_SetOutputTypeShape")
    })();
    // SAFETY: `out` is ours (the context copies it) and released once, after its last use.
    unsafe { (api.ReleaseTensorTypeAndShapeInfo)(out) };
    result
}

/// The first dim of input `slot` when known (rank >= 1, not symbolic).
///
/// # Safety
/// `ctx` is the live shape-inference context ORT passed to `InferOutputShapeFn`, with an input `slot`.
unsafe fn first_dim(ctx: *mut OrtShapeInferContext, slot: usize) -> Result<Option<i64>, OpError> {
    let api = api();
    let op = "InferOutputShapeFn";
    let mut info = ptr::null_mut();
    let mut rank = 0usize;
    // SAFETY: `ctx` is live with input `slot` (our contract); `info` is then the context's (not
    // released here), and each call writes the variable it is given.
    unsafe {
        check(
            (api.ShapeInferContext_GetInputTypeShape)(ctx, slot, &mut info),
            op,
            "ShapeInferContext_GetInputTypeShape",
        )?;
        check((api.GetDimensionsCount)(info, &mut rank), op, "GetDimensionsCount")?;
    }
    if rank == 0 {
        return Ok(None);
    }
    let mut dims = vec![0i64; rank];
    // SAFETY: as above; `dims` has the `rank` slots the call fills.
    unsafe { check((api.GetDimensions)(info, dims.as_mut_ptr(), rank), op, "GetDimensions")? };
    Ok((dims[0] >= 0).then_some(dims[0]))
}

/// Runs `f`, turning an error or a panic into an OrtStatus (null on success).
fn guard(op: &'static str, f: impl FnOnce() -> Result<(), OpError>) -> OrtStatusPtr {
    let result = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(OpError::Panic { op, message: panic_message(payload.as_ref()) }),
    };
    match result {
        Ok(()) => OrtStatusPtr(ptr::null_mut()),
        Err(e) => error_status(&e),
    }
}
