//! `RegisterCustomOps`, the library's one exported symbol: ORT calls it when a user loads the
//! library (Python `SessionOptions.register_custom_ops_library`, C `RegisterCustomOpsLibrary_V2`,
//! Rust `ort`'s `SessionBuilder::with_operator_library`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use ort_sys::{OrtApiBase, OrtErrorCode, OrtSessionOptions, OrtStatus};

use crate::error::{panic_message, OpError};
use crate::ops::OPS;
use crate::ort_api::{self, api, check, cstr_to_string, make_status, API_VERSION};

/// The ONNX domain of the ops (docs/op-contract.md).
pub const DOMAIN: &std::ffi::CStr = mambac_op_schema::DOMAIN.c;

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
    // SAFETY: `api_base` is ORT's non-null API base (our contract); GetApi returns null for a
    // version it lacks.
    let api_ptr = unsafe { ((*api_base).GetApi)(API_VERSION) };
    if api_ptr.is_null() {
        // An ORT older than 1.20. Version 1 of the API always exists and has CreateStatus.
        // SAFETY: as above.
        let old = unsafe { ((*api_base).GetApi)(1) };
        if old.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: as above; the version string is static and NUL-terminated.
        let version = unsafe { cstr_to_string(((*api_base).GetVersionString)()) };
        let msg = format!("libmambac_ops needs ONNX Runtime 1.20 or later (C API {API_VERSION}); this is {version}");
        // SAFETY: `old` is the non-null version-1 table, static in ORT.
        return make_status(unsafe { &*old }, OrtErrorCode::ORT_FAIL, &msg);
    }
    ort_api::set_api(api_ptr);
    // SAFETY: `options` are live session options (our contract).
    let result = catch_unwind(AssertUnwindSafe(|| unsafe { register(options) }))
        .unwrap_or_else(|p| Err(OpError::Panic { op: "RegisterCustomOps", message: panic_message(p.as_ref()) }));
    match result {
        Ok(()) => ptr::null_mut(),
        Err(e) => ort_api::error_status(&e).0,
    }
}

/// # Safety
/// `options` are live session options.
unsafe fn register(options: *mut OrtSessionOptions) -> Result<(), OpError> {
    let api = api();
    let op = "RegisterCustomOps";
    let mut domain = ptr::null_mut();
    // SAFETY: DOMAIN is NUL-terminated and the call writes `domain`.
    unsafe { check((api.CreateCustomOpDomain)(DOMAIN.as_ptr(), &mut domain), op, "CreateCustomOpDomain")? };
    for def in OPS.iter().flatten() {
        // SAFETY: `domain` is the live domain made above; the tables are static, as ORT keeps them.
        unsafe { check((api.CustomOpDomain_Add)(domain, def.as_ort()), op, "CustomOpDomain_Add")? };
    }
    // The domain must outlive every session made from `options`, which we cannot see end, so it
    // is never released (a few hundred bytes per registration).
    // SAFETY: `options` are live (our contract) and `domain` is the live domain made above.
    unsafe { check((api.AddCustomOpDomain)(options, domain), op, "AddCustomOpDomain") }
}
