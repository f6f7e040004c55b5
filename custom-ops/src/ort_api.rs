//! The `OrtApi` table this library was handed, and the few calls on it everyone needs.
//!
//! We ask for C API version 20 (ORT 1.20): every function used here exists there, so one build
//! of the library loads into ORT 1.20 and every later release (the API table only grows).

use std::ffi::{c_char, CStr, CString};
use std::sync::OnceLock;

use ort_sys::{OrtApi, OrtErrorCode, OrtStatus, OrtStatusPtr};

use crate::error::OpError;

/// The C API version requested from ONNX Runtime.
pub const API_VERSION: u32 = 20;

struct ApiPtr(*const OrtApi);
// SAFETY: the OrtApi table is immutable static data inside ONNX Runtime.
unsafe impl Send for ApiPtr {}
// SAFETY: as above.
unsafe impl Sync for ApiPtr {}

static API: OnceLock<ApiPtr> = OnceLock::new();

/// Records the API table (first registration wins; one process has one ONNX Runtime).
pub fn set_api(api: *const OrtApi) {
    let _ = API.set(ApiPtr(api));
}

/// The API table. Only callable after `RegisterCustomOps`, which is the only way ORT reaches us.
pub fn api() -> &'static OrtApi {
    let ptr = API.get().expect("RegisterCustomOps has not run").0;
    // SAFETY: set from ORT's GetApi, non-null, valid for the life of the process.
    unsafe { &*ptr }
}

/// A new OrtStatus carrying `message` (interior NULs replaced, as C strings cannot hold them).
pub fn make_status(api: &OrtApi, code: OrtErrorCode, message: &str) -> *mut OrtStatus {
    let msg = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: CreateStatus copies the message.
    unsafe { (api.CreateStatus)(code, msg.as_ptr()).0 }
}

/// The status ORT receives for `err`.
pub fn error_status(err: &OpError) -> OrtStatusPtr {
    OrtStatusPtr(make_status(api(), err.code(), &err.to_string()))
}

/// Turns an ORT call's status into a Result, releasing the status.
///
/// # Safety
/// `status` must come from an ORT API call (null or a live status).
pub unsafe fn check(status: OrtStatusPtr, op: &'static str, call: &'static str) -> Result<(), OpError> {
    if status.0.is_null() {
        return Ok(());
    }
    let api = api();
    // SAFETY: `status` is a live status (our contract); its message is NUL-terminated and read
    // before the status is released, once.
    let message = unsafe { cstr_to_string((api.GetErrorMessage)(status.0)) };
    // SAFETY: as above.
    unsafe { (api.ReleaseStatus)(status.0) };
    Err(OpError::Ort { op, call, message })
}

/// Releases a status we do not need (an absent attribute, for instance).
///
/// # Safety
/// As for [`check`].
pub unsafe fn discard(status: OrtStatusPtr) -> bool {
    if status.0.is_null() {
        return true;
    }
    // SAFETY: `status` is a live status (our contract), released once.
    unsafe { (api().ReleaseStatus)(status.0) };
    false
}

/// # Safety
/// `p` is null or a NUL-terminated string.
pub unsafe fn cstr_to_string(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: `p` is non-null and NUL-terminated (our contract).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}
