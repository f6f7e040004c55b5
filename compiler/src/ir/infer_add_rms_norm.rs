//! Shape and type inference of AddRmsNorm: the rule of `cpp/shape_check.cpp`
//! `check_add_rms_norm`, input for input in its order, so both name the same input
//! (tests/shape_agreement.rs). x defines batch, seqlen and hidden; the stream and the weight are
//! float32 whatever T is.

use super::infer::{err, expect_elem, expect_float, expect_rank, expect_shape, InferError};
use super::op::{norm_slots, AddRmsNormConfig};
use super::types::{Elem, ValueType};

pub(super) fn infer_add_rms_norm<'a>(
    cfg: &AddRmsNormConfig,
    get: &dyn Fn(usize) -> Option<&'a ValueType>,
) -> Result<Vec<ValueType>, InferError> {
    let req = |slot: usize| get(slot).ok_or_else(|| err(norm_slots::INPUT_NAMES[slot], "is required but missing"));
    let x = req(norm_slots::X)?;
    expect_float("x", x)?;
    expect_rank("x", x, 3)?;
    if let Some(r) = get(norm_slots::RESIDUAL) {
        expect_elem("residual", r, Elem::F32, "the residual stream is float32")?;
        expect_shape("residual", r, &x.shape.0)?;
    }
    let w = req(norm_slots::WEIGHT)?;
    expect_elem("weight", w, Elem::F32, "norm weights are float32")?;
    expect_shape("weight", w, std::slice::from_ref(&x.shape.0[2]))?;
    let mut outs = vec![x.clone()];
    if cfg.residual_out {
        outs.push(ValueType { elem: Elem::F32, shape: x.shape.clone() });
    }
    Ok(outs)
}
