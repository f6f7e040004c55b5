//! Shape and type inference of the fused `GatedRmsNorm` (`Op::FusedGatedRmsNorm`): the rule of
//! `cpp/shape_check.cpp` `check_gated_rms_norm`, input for input in its order, so both name the
//! same input (tests/shape_agreement.rs).

use super::infer::{err, expect_elem, expect_float, expect_rank, expect_shape, expect_view, InferError};
use super::op::{gated_norm_slots as slots, FusedGatedRmsNormConfig};
use super::types::{Elem, ValueType};

pub(super) fn infer_fused_gated_rms_norm(
    cfg: &FusedGatedRmsNormConfig,
    y: &ValueType,
    z: &ValueType,
    w: &ValueType,
) -> Result<Vec<ValueType>, InferError> {
    expect_float("y", y)?;
    expect_rank("y", y, 3)?;
    expect_elem("z", z, y.elem, "same as 'y'")?;
    expect_view("z", z, &y.shape.0, cfg.slices.offset(slots::Z))?;
    expect_elem("weight", w, Elem::F32, "the norm weights are float32")?;
    let d = y.shape.0[2].clone();
    expect_shape("weight", w, std::slice::from_ref(&d))?;
    let gs = cfg.norm.group_size;
    match d.known() {
        Some(n) if gs > 0 && n % gs == 0 => Ok(vec![y.clone()]),
        _ => Err(err("y", format!("has shape {}, whose last dim is not a multiple of group_size {gs}", y.shape))),
    }
}
