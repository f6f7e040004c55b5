//! Node attributes, read once at kernel creation. An attribute of the wrong kind is an error
//! naming it, never silently the default.

use std::ffi::{c_char, CStr};
use std::ptr;

use ort_sys::OrtKernelInfo;

use crate::error::OpError;
use crate::ort_api::{api, discard};

/// An int attribute, or `default` when the node does not set it.
///
/// # Safety
/// `info` is the live kernel info of the kernel being created.
pub unsafe fn int_or(
    info: *const OrtKernelInfo,
    op: &'static str,
    name: &'static CStr,
    default: i64,
) -> Result<i64, OpError> {
    // SAFETY: `info` is live (our contract).
    Ok(unsafe { int_opt(info, op, name)? }.unwrap_or(default))
}

/// An int attribute, or `None` when the node does not set it.
///
/// # Safety
/// As for [`int_or`].
pub unsafe fn int_opt(
    info: *const OrtKernelInfo,
    op: &'static str,
    name: &'static CStr,
) -> Result<Option<i64>, OpError> {
    let api = api();
    let mut value = 0i64;
    // SAFETY: `info` is live (our contract), `name` is NUL-terminated and `value` is the int64
    // the call writes; `discard` gets the status that call returned.
    if unsafe { discard((api.KernelInfoGetAttribute_int64)(info, name.as_ptr(), &mut value)) } {
        return Ok(Some(value));
    }
    // SAFETY: `info` is live (our contract).
    if unsafe { has_other_kind(info, name, Kind::Int) } {
        return Err(attr_error(op, name, "must be an int".into()));
    }
    Ok(None)
}

/// A 0/1 int attribute (the ops' flags), or `default` when the node does not set it; any other
/// value is refused with the value in the message.
///
/// # Safety
/// As for [`int_or`].
pub unsafe fn flag_or(
    info: *const OrtKernelInfo,
    op: &'static str,
    name: &'static CStr,
    default: bool,
) -> Result<bool, OpError> {
    // SAFETY: `info` is live (our contract).
    match unsafe { int_or(info, op, name, i64::from(default))? } {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(attr_error(op, name, format!("is {v}, expected 0 or 1"))),
    }
}

/// A float attribute, or `default` when the node does not set it.
///
/// # Safety
/// As for [`int_or`].
pub unsafe fn float_or(
    info: *const OrtKernelInfo,
    op: &'static str,
    name: &'static CStr,
    default: f32,
) -> Result<f32, OpError> {
    let api = api();
    let mut value = 0f32;
    // SAFETY: `info` is live (our contract), `name` is NUL-terminated and `value` is the float
    // the call writes; `discard` gets the status that call returned.
    if unsafe { discard((api.KernelInfoGetAttribute_float)(info, name.as_ptr(), &mut value)) } {
        return Ok(value);
    }
    // SAFETY: `info` is live (our contract).
    if unsafe { has_other_kind(info, name, Kind::Float) } {
        return Err(attr_error(op, name, "must be a float".into()));
    }
    Ok(default)
}

/// An RMSNorm's `epsilon` (float), or `default` when the node does not set it; anything but a
/// positive finite number is an error naming the attribute.
///
/// # Safety
/// As for [`int_or`].
pub unsafe fn epsilon_or(
    info: *const OrtKernelInfo,
    op: &'static str,
    name: &'static CStr,
    default: f32,
) -> Result<f32, OpError> {
    // SAFETY: `info` is live (our contract).
    let eps = unsafe { float_or(info, op, name, default)? };
    if !(eps.is_finite() && eps > 0.0) {
        return Err(attr_error(op, name, format!("is {eps}, expected a positive number")));
    }
    Ok(eps)
}

/// A string attribute, or `default` when the node does not set it.
///
/// # Safety
/// As for [`int_or`].
pub unsafe fn string_or(
    info: *const OrtKernelInfo,
    op: &'static str,
    name: &'static CStr,
    default: &str,
) -> Result<String, OpError> {
    // SAFETY: `info` is live (our contract).
    match unsafe { read_string(info, name) } {
        Some(s) => Ok(s),
        // SAFETY: as above.
        None if unsafe { has_other_kind(info, name, Kind::String) } => {
            Err(attr_error(op, name, "must be a string".into()))
        }
        None => Ok(default.to_string()),
    }
}

pub fn attr_error(op: &'static str, name: &'static CStr, problem: String) -> OpError {
    OpError::Attribute { op, name: name.to_str().unwrap_or("?"), problem }
}

#[derive(PartialEq)]
enum Kind {
    Int,
    Float,
    String,
}

/// # Safety
/// `info` is the live kernel info of the kernel being created.
unsafe fn read_string(info: *const OrtKernelInfo, name: &CStr) -> Option<String> {
    let api = api();
    let mut size = 0usize;
    // SAFETY: `info` is live (our contract), `name` is NUL-terminated; a null buffer asks only
    // for the size, written to `size`.
    if !unsafe { discard((api.KernelInfoGetAttribute_string)(info, name.as_ptr(), ptr::null_mut(), &mut size)) } {
        return None;
    }
    let mut buf = vec![0u8; size.max(1)];
    // SAFETY: as above; `buf` holds the `size` bytes the first call asked for.
    if !unsafe {
        discard((api.KernelInfoGetAttribute_string)(info, name.as_ptr(), buf.as_mut_ptr() as *mut c_char, &mut size))
    } {
        return None;
    }
    let s = CStr::from_bytes_until_nul(&buf).ok()?;
    Some(s.to_string_lossy().into_owned())
}

/// Whether the node sets `name` as some kind other than `expected` (int, float or string).
///
/// # Safety
/// `info` is the live kernel info of the kernel being created.
unsafe fn has_other_kind(info: *const OrtKernelInfo, name: &CStr, expected: Kind) -> bool {
    let api = api();
    let mut i = 0i64;
    let mut f = 0f32;
    // SAFETY: `info` is live (our contract), `name` is NUL-terminated, `i` and `f` are what the
    // int64 and float getters write; `discard` gets the status each returned.
    unsafe {
        (expected != Kind::Int && discard((api.KernelInfoGetAttribute_int64)(info, name.as_ptr(), &mut i)))
            || (expected != Kind::Float && discard((api.KernelInfoGetAttribute_float)(info, name.as_ptr(), &mut f)))
            || (expected != Kind::String && read_string(info, name).is_some())
    }
}
