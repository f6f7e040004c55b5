//! Filling a fused layer step's kernel ABI params: the part `MambaLayerStep` and
//! `Mamba2LayerStep` do alike. Read every input, run the op's C++ shape check and point the params
//! at the inputs both ops have ([`checked_inputs`]); then allocate the three outputs and refuse
//! missing or in-place states ([`allocate_outputs`]). Each op's `params` keeps what differs in
//! between: its attributes, its own inputs (Mamba-1's x_proj and dt_proj, Mamba-2's gate norm) and
//! the shapes of its states.

use ort_sys::OrtKernelContext;

use crate::error::OpError;
use crate::kernel_abi::ffi;
use crate::step_cpu::check_step_outputs;
use crate::tensor::{elem_bytes, input, output, Input};

/// The kernel ABI params of a layer step. The two params structs spell their shared fields
/// alike, and one macro implements this for both from those names, so the wiring cannot differ.
pub(crate) trait LayerStepParams: Sized {
    /// The op's C++ shape check (cpp/shape_check.cpp): sizes and element type, every pointer 0.
    fn check(descs: &[ffi::TensorDesc]) -> Result<Self, cxx::Exception>;
    /// Points the inputs both ops have at their buffers: the two states, the residual, the
    /// pre-norm weight, in_proj, the conv, dt_bias, A, D and out_proj.
    fn wire_shared_inputs(&mut self, inputs: &[Input]);
    /// `(batch, hidden, width, elem)`: what the outputs' shapes and types take from the check.
    fn step_dims(&self) -> (usize, usize, usize, ffi::ElemType);
    /// `(conv_state_in, ssm_state_in)`.
    fn state_inputs(&self) -> (usize, usize);
    fn set_outputs(&mut self, residual_out: usize, conv_state_out: usize, ssm_state_out: usize);
}

/// Implements [`LayerStepParams`] for `$params`, checked by `$check`, its input slots those of
/// the op-schema module `$slot`.
macro_rules! layer_step_params {
    ($params:ty, $check:path, $slot:ident) => {
        impl LayerStepParams for $params {
            fn check(descs: &[ffi::TensorDesc]) -> Result<Self, cxx::Exception> {
                $check(descs)
            }

            fn wire_shared_inputs(&mut self, inputs: &[Input]) {
                use mambac_op_schema::$slot as s;
                let addr = |slot: usize| inputs[slot].addr;
                self.conv_state_in = addr(s::CONV_STATE);
                self.ssm_state_in = addr(s::SSM_STATE);
                self.residual_in = addr(s::RESIDUAL);
                self.norm_weight = addr(s::NORM_WEIGHT);
                self.in_proj_weight = addr(s::IN_PROJ_WEIGHT);
                self.in_proj_bias = addr(s::IN_PROJ_BIAS);
                self.conv_weight = addr(s::CONV_WEIGHT);
                self.conv_bias = addr(s::CONV_BIAS);
                self.dt_bias = addr(s::DT_BIAS);
                self.a = addr(s::A);
                self.d = addr(s::D);
                self.out_proj_weight = addr(s::OUT_PROJ_WEIGHT);
                self.out_proj_bias = addr(s::OUT_PROJ_BIAS);
            }

            fn step_dims(&self) -> (usize, usize, usize, ffi::ElemType) {
                (self.batch, self.hidden, self.width, self.elem)
            }

            fn state_inputs(&self) -> (usize, usize) {
                (self.conv_state_in, self.ssm_state_in)
            }

            fn set_outputs(&mut self, residual_out: usize, conv_state_out: usize, ssm_state_out: usize) {
                (self.residual_out, self.conv_state_out, self.ssm_state_out) =
                    (residual_out, conv_state_out, ssm_state_out);
            }
        }
    };
}

layer_step_params!(ffi::MambaLayerStepParams, ffi::check_mamba_layer_step, mamba_layer_step);
layer_step_params!(ffi::Mamba2LayerStepParams, ffi::check_mamba2_layer_step, mamba2_layer_step);

/// Reads the node's `count` inputs, runs the op's shape check and wires the shared inputs.
/// Returns the params and the inputs, for the op's own ones.
///
/// # Safety
/// `ctx` is the live kernel context of the current compute call and `count` the input count ORT
/// was told.
pub(crate) unsafe fn checked_inputs<P: LayerStepParams>(
    ctx: *mut OrtKernelContext,
    count: usize,
    op: &'static str,
) -> Result<(P, Vec<Input>), OpError> {
    // SAFETY: `ctx` is live and every index is below `count` (our contract).
    let inputs = (0..count).map(|i| unsafe { input(ctx, i, op) }).collect::<Result<Vec<_>, _>>()?;
    let descs: Vec<ffi::TensorDesc> = inputs.iter().map(|i| i.desc).collect();
    let mut p = P::check(&descs).map_err(|e| OpError::Check(e.what().to_string()))?;
    p.wire_shared_inputs(&inputs);
    Ok((p, inputs))
}

/// Allocates residual_out `[batch, 1, hidden]` float32, conv_state_out `conv_dims` T and
/// ssm_state_out `ssm_dims` float32 into `p`, then refuses an output missing or bound to its
/// state input ([`check_step_outputs`]).
///
/// # Safety
/// `ctx` is the live kernel context of the current compute call.
pub(crate) unsafe fn allocate_outputs<P: LayerStepParams>(
    ctx: *mut OrtKernelContext,
    p: &mut P,
    conv_dims: &[usize],
    ssm_dims: &[usize],
    op: &'static str,
) -> Result<(), OpError> {
    let (batch, hidden, width, elem) = p.step_dims();
    // SAFETY: `ctx` is live (our contract).
    let (residual_out, conv_state_out, ssm_state_out) = unsafe {
        (
            output(ctx, 0, "residual_out", &[batch, 1, hidden], 4, op)?,
            output(ctx, 1, "conv_state_out", conv_dims, elem_bytes(elem), op)?,
            output(ctx, 2, "ssm_state_out", ssm_dims, 4, op)?,
        )
    };
    p.set_outputs(residual_out, conv_state_out, ssm_state_out);
    let (conv_state_in, ssm_state_in) = p.state_inputs();
    check_step_outputs(
        op,
        batch > 0,
        (conv_state_in, conv_state_out, width > 1),
        (ssm_state_in, ssm_state_out),
        residual_out,
    )
}
