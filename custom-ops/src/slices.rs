//! The `<input>_offset` attributes of SelectiveScan, SsdScan and CausalConv1d (docs/op-contract.md "Sliced
//! inputs"): an input read as channels `[offset, offset + count)` of a packed last axis, so a
//! graph can feed the op one projection's output without copying its parts apart.
//!
//! The C++ shape check (`cpp/shape_check.cpp`, `view_is`) validates the offsets against the
//! shapes and returns the row strides; this module only carries the attributes there and points
//! each sliced input's address at its first element read.

use std::ffi::CStr;

use mambac_op_schema::Name;
use ort_sys::OrtKernelInfo;

use crate::attributes::int_opt;
use crate::error::OpError;
use crate::kernel_abi::ffi::TensorDesc;
use crate::tensor::Input;

/// Per sliceable input slot, the offset its node sets (`None`: read whole).
#[derive(Debug, Clone, Default)]
pub struct Slices(Vec<(usize, Option<i64>)>);

impl Slices {
    /// Reads the node's slice attributes, one per entry of `sliceable` (slot, attribute name).
    ///
    /// # Safety
    /// `info` is the live kernel info of the kernel being created.
    pub unsafe fn read(
        info: *const OrtKernelInfo,
        op: &'static str,
        sliceable: &[(usize, Name)],
    ) -> Result<Self, OpError> {
        let mut out = Vec::with_capacity(sliceable.len());
        for &(slot, name) in sliceable {
            let c: &'static CStr = name.c;
            // SAFETY: `info` is live (our contract).
            out.push((slot, unsafe { int_opt(info, op, c)? }));
        }
        Ok(Slices(out))
    }

    fn offset(&self, slot: usize) -> Option<i64> {
        self.0.iter().find(|(s, _)| *s == slot).and_then(|(_, o)| *o)
    }

    /// The descriptors the shape check sees: the inputs', sliced where the node says so.
    pub fn descs(&self, inputs: &[Input]) -> Vec<TensorDesc> {
        inputs.iter().enumerate().map(|(slot, i)| i.desc.sliced_at(self.offset(slot))).collect()
    }

    /// The address of the first element the op reads of input `slot` (0 when absent): the
    /// buffer's, moved on by the offset. Call after the shape check accepted the offsets.
    pub fn addr(&self, slot: usize, input: &Input, elem_bytes: usize) -> usize {
        match self.offset(slot) {
            Some(o) if input.addr != 0 => input.addr + o as usize * elem_bytes,
            _ => input.addr,
        }
    }
}
