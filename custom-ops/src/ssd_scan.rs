//! SsdScan (docs/op-contract.md "SsdScan"), Mamba-2's scan, with g = h / (heads / ngroups):
//!
//! ```text
//! h_0  = initial_state or 0                                        [heads, head_dim, dstate]
//! dt_t = clamp(softplus(dt_t + dt_bias), dt_min, dt_max)           (no softplus if dt_softplus = 0)
//! h_t[h, p, :] = exp(dt_t[h] * A[h]) * h_{t-1}[h, p, :] + dt_t[h] * x_t[h, p] * B_t[g, :]
//! y_t[h, p]    = <C_t[g, :], h_t[h, p, :]> + D[h] * x_t[h, p]
//! ```
//!
//! Inputs x, dt, A, B, C, D?, dt_bias?, initial_state?; outputs y, final_state?.

use std::ffi::CStr;

use ort_sys::{ONNXTensorElementDataType as Elem, OrtKernelContext, OrtKernelInfo};

use crate::attributes::{attr_error, flag_or, float_or, int_opt};
use crate::error::OpError;
use crate::kernel_abi::ffi;
use crate::op_table::Kernel;
use crate::parallel::parallel_for;
use crate::selective_scan::y_and_f32_state;
use crate::slices::Slices;
use crate::tensor::{elem_bytes, input, output};

use mambac_op_schema::ssd_scan as schema;

const DT_SOFTPLUS: &CStr = schema::DT_SOFTPLUS.c;
const DT_MIN: &CStr = schema::DT_MIN.c;
const DT_MAX: &CStr = schema::DT_MAX.c;

pub struct SsdScan {
    dt_softplus: bool,
    dt_min: f32,
    dt_max: f32,
    slices: Slices,
    /// `head_dim`, `ngroups`, `dstate`: the dims packed x, B and C do not carry.
    dims: ffi::SsdScanDims,
}

impl Kernel for SsdScan {
    const NAME: &'static CStr = schema::OP.c;
    const OP: &'static str = schema::OP.str;
    const INPUTS: usize = schema::INPUT_NAMES.len();
    // y is [batch, seqlen, heads, head_dim]: x's shape when x is whole, not when x is packed
    // (rank 3, x_offset); the output's type comes from the model's value_info instead.
    const INFER_OUTPUT0: bool = false;

    fn output_types(t: Elem) -> &'static [Elem] {
        y_and_f32_state(t)
    }

    unsafe fn create(info: *const OrtKernelInfo) -> Result<Self, OpError> {
        // SAFETY: `info` is live (the trait's contract), for each read.
        let (dt_softplus, (dt_min, dt_max)) =
            unsafe { (flag_or(info, Self::OP, DT_SOFTPLUS, true)?, dt_limit(info, Self::OP)?) };
        // SAFETY: as above.
        let slices = unsafe { Slices::read(info, Self::OP, &schema::SLICEABLE)? };
        let mut dims = [None; 3];
        for (d, name) in dims.iter_mut().zip(schema::PACKED_DIMS) {
            // SAFETY: as above.
            *d = unsafe { int_opt(info, Self::OP, name.c)? };
        }
        Ok(SsdScan { dt_softplus, dt_min, dt_max, slices, dims: ffi::SsdScanDims::from_attrs(dims) })
    }

    unsafe fn compute(&self, ctx: *mut OrtKernelContext) -> Result<(), OpError> {
        // SAFETY: `ctx` is live (the trait's contract), for `params` and the thread pool alike.
        let p = &unsafe { self.params(ctx)? };
        let tasks = ffi::ssd_scan_cpu_tasks(p);
        let task = |i| ffi::ssd_scan_cpu_run(p, i).map_err(|e| e.what().to_string());
        // SAFETY: as above.
        unsafe { parallel_for(ctx, tasks, Self::OP, &task) }
    }
}

/// The attributes `dt_min` (default 0, below +inf) and `dt_max` (default +inf, at least dt_min):
/// transformers' `time_step_limit`, as SsdScan and Mamba2LayerStep read it.
///
/// # Safety
/// `info` is the live kernel info of the kernel being created.
pub unsafe fn dt_limit(info: *const OrtKernelInfo, op: &'static str) -> Result<(f32, f32), OpError> {
    // SAFETY: `info` is live (our contract), for each read.
    let (dt_min, dt_max) = unsafe { (float_or(info, op, DT_MIN, 0.0)?, float_or(info, op, DT_MAX, f32::INFINITY)?) };
    if dt_min.is_nan() || dt_min == f32::INFINITY {
        return Err(attr_error(op, DT_MIN, format!("is {dt_min}, expected a number below +inf")));
    }
    if dt_max.is_nan() || dt_max < dt_min {
        return Err(attr_error(op, DT_MAX, format!("is {dt_max}, expected at least dt_min ({dt_min})")));
    }
    Ok((dt_min, dt_max))
}

/// The CUDA kernel's one limit past the op contract (dstate up to 512), checked in C++ so the
/// TensorRT plugin refuses with the same message; Err names the input that carries dstate.
pub fn check_cuda_limits(p: &ffi::SsdScanParams) -> Result<(), OpError> {
    ffi::check_ssd_scan_cuda_limits(p).map_err(|e| OpError::Check(e.what().to_string()))
}

impl SsdScan {
    /// Checks the inputs, allocates the outputs and fills the kernel ABI.
    ///
    /// # Safety
    /// `ctx` is the live kernel context of the current compute call.
    pub unsafe fn params(&self, ctx: *mut OrtKernelContext) -> Result<ffi::SsdScanParams, OpError> {
        let op = Self::OP;
        // SAFETY: `ctx` is live (our contract) and every index is below INPUTS, the count ORT
        // was told.
        let inputs = (0..Self::INPUTS).map(|i| unsafe { input(ctx, i, op) }).collect::<Result<Vec<_>, _>>()?;
        let descs = self.slices.descs(&inputs);
        let mut p = ffi::check_ssd_scan(&descs, &self.dims).map_err(|e| OpError::Check(e.what().to_string()))?;
        p.dt_softplus = self.dt_softplus;
        p.dt_min = self.dt_min;
        p.dt_max = self.dt_max;
        let sliced = |slot: usize| self.slices.addr(slot, &inputs[slot], elem_bytes(p.elem));
        p.x = sliced(schema::X);
        p.dt = sliced(schema::DT);
        p.a = inputs[2].addr;
        p.b = sliced(schema::B);
        p.c = sliced(schema::C);
        p.d = inputs[5].addr;
        p.dt_bias = inputs[6].addr;
        p.initial_state = inputs[7].addr;
        let y_dims = [p.batch, p.seqlen, p.heads, p.head_dim];
        // SAFETY: `ctx` is live (our contract).
        p.y = unsafe { output(ctx, 0, "y", &y_dims, elem_bytes(p.elem), op)? };
        let state_dims = [p.batch, p.heads, p.head_dim, p.dstate];
        // SAFETY: as above.
        p.final_state = unsafe { output(ctx, 1, "final_state", &state_dims, 4, op)? };
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(dstate: usize) -> ffi::SsdScanParams {
        ffi::SsdScanParams {
            batch: 1,
            seqlen: 1,
            heads: 1,
            head_dim: 1,
            ngroups: 1,
            dstate,
            elem: ffi::ElemType::F32,
            dt_softplus: true,
            dt_min: 0.0,
            dt_max: f32::INFINITY,
            dt_stride: 1,
            x_stride: 1,
            b_stride: dstate,
            c_stride: dstate,
            x: 0,
            dt: 0,
            a: 0,
            b: 0,
            c: 0,
            d: 0,
            dt_bias: 0,
            initial_state: 0,
            y: 0,
            final_state: 0,
            scratch: 0,
        }
    }

    #[test]
    fn cuda_limit_takes_dstate_up_to_512() {
        for n in [0, 1, 128, 512] {
            assert!(check_cuda_limits(&params(n)).is_ok(), "dstate {n}");
        }
    }

    #[test]
    fn cuda_limit_names_b_and_the_limit() {
        let err = check_cuda_limits(&params(513)).unwrap_err();
        assert_eq!(err.to_string(), "SsdScan: input 'B' has dstate 513, more than the CUDA kernel takes (512)");
    }
}
