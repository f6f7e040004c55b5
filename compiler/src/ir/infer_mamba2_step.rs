//! Shape and type inference of `Mamba2LayerStep`: the rule of `cpp/shape_check.cpp`
//! `check_mamba2_layer_step`, input for input in its order, so both name the same input
//! (tests/shape_agreement.rs).

use super::infer::{defined_size, dims_error, err, expect_dims, expect_elem, expect_float, InferError, Want};
use super::op::step2_slots as slots;
use super::types::{Dim, Elem, ValueType};

/// The sizes come from the inputs that define them (conv_state: batch, conv_dim, width;
/// ssm_state: heads, head_dim, dstate; the two together: ngroups, from `conv_dim = heads *
/// head_dim + 2 * ngroups * dstate`; residual: hidden) and every other input is checked against them.
pub(super) fn infer_mamba2_layer_step<'a>(
    get: &dyn Fn(usize) -> Option<&'a ValueType>,
) -> Result<Vec<ValueType>, InferError> {
    use Want::{Free, Is};
    let req = |slot: usize| get(slot).ok_or_else(|| err(slots::INPUT_NAMES[slot], "is required but missing"));
    let known = |n: usize| Is(Dim::Known(n));
    let same_as_conv_state = "same as 'conv_state'";

    let conv_state = req(slots::CONV_STATE)?;
    expect_float("conv_state", conv_state)?;
    let t = conv_state.elem;
    let conv_dims = [Free("batch"), Free("conv_dim"), Free("width - 1")];
    expect_dims("conv_state", conv_state, &conv_dims, "")?;
    let batch = conv_state.shape.0[0].clone();
    let conv_dim = conv_state.shape.0[1]
        .known()
        .ok_or_else(|| dims_error("conv_state", conv_state, &conv_dims, " with a known conv_dim"))?;
    let width = conv_state.shape.0[2]
        .known()
        .ok_or_else(|| dims_error("conv_state", conv_state, &conv_dims, " with a known width"))?
        + 1;

    let ssm_state = req(slots::SSM_STATE)?;
    expect_elem("ssm_state", ssm_state, Elem::F32, "the state is always float32")?;
    let ssm_dims = [Is(batch.clone()), Free("heads"), Free("head_dim"), Free("dstate")];
    expect_dims("ssm_state", ssm_state, &ssm_dims, " (batch from 'conv_state')")?;
    let sizes = " with heads, head_dim and dstate >= 1";
    let heads = defined_size("ssm_state", ssm_state, 1, &ssm_dims, "heads")
        .map_err(|_| dims_error("ssm_state", ssm_state, &ssm_dims, sizes))?;
    let head_dim = defined_size("ssm_state", ssm_state, 2, &ssm_dims, "head_dim")
        .map_err(|_| dims_error("ssm_state", ssm_state, &ssm_dims, sizes))?;
    let dstate = defined_size("ssm_state", ssm_state, 3, &ssm_dims, "dstate")
        .map_err(|_| dims_error("ssm_state", ssm_state, &ssm_dims, sizes))?;
    let inner = heads * head_dim;

    // conv_dim = inner + 2 * ngroups * dstate, with heads a multiple of ngroups.
    let ngroups = conv_dim.checked_sub(inner).filter(|bc| bc % (2 * dstate) == 0).map_or(0, |bc| bc / (2 * dstate));
    if ngroups < 1 || heads % ngroups != 0 {
        let why = format!(
            " with conv_dim = {inner} + 2 * ngroups * {dstate} and ngroups dividing heads {heads} (inner and dstate \
             from 'ssm_state')"
        );
        return Err(dims_error("conv_state", conv_state, &[Is(batch), Free("conv_dim"), known(width - 1)], &why));
    }

    let residual = req(slots::RESIDUAL)?;
    expect_elem("residual", residual, Elem::F32, "the residual stream is float32")?;
    let res_dims = [Is(batch.clone()), known(1), Free("hidden")];
    expect_dims("residual", residual, &res_dims, " (one token a sequence; batch from 'conv_state')")?;
    let hidden = defined_size("residual", residual, 2, &res_dims, "hidden")?;
    let hidden_from = " (hidden from 'residual')";
    let heads_from = " (heads from 'ssm_state')";
    let in_dim = inner + conv_dim + heads;
    let in_dim_why = format!(" (inner + conv_dim + heads = {inner} + {conv_dim} + {heads})");

    let w = req(slots::NORM_WEIGHT)?;
    expect_elem("norm_weight", w, Elem::F32, "always float32")?;
    expect_dims("norm_weight", w, &[known(hidden)], hidden_from)?;
    let w = req(slots::IN_PROJ_WEIGHT)?;
    expect_elem("in_proj_weight", w, t, same_as_conv_state)?;
    expect_dims("in_proj_weight", w, &[known(hidden), known(in_dim)], &in_dim_why)?;
    let w = req(slots::CONV_WEIGHT)?;
    expect_elem("conv_weight", w, t, same_as_conv_state)?;
    expect_dims("conv_weight", w, &[known(conv_dim), known(width)], " ([conv_dim, width] from 'conv_state')")?;
    let w = req(slots::A)?;
    expect_elem("A", w, Elem::F32, "A is always float32")?;
    expect_dims("A", w, &[known(heads)], heads_from)?;
    let w = req(slots::GATE_NORM_WEIGHT)?;
    expect_elem("gate_norm_weight", w, Elem::F32, "always float32")?;
    expect_dims("gate_norm_weight", w, &[known(inner)], " (inner = heads * head_dim from 'ssm_state')")?;
    let w = req(slots::OUT_PROJ_WEIGHT)?;
    expect_elem("out_proj_weight", w, t, same_as_conv_state)?;
    expect_dims("out_proj_weight", w, &[known(inner), known(hidden)], " ([inner, hidden])")?;

    // Optional inputs last, in slot order, as the C++ check does.
    let f32 = (Elem::F32, "always float32");
    let tt = (t, same_as_conv_state);
    let optional = [
        (slots::IN_PROJ_BIAS, tt, in_dim, in_dim_why.as_str()),
        (slots::CONV_BIAS, tt, conv_dim, " (conv_dim from 'conv_state')"),
        (slots::DT_BIAS, f32, heads, heads_from),
        (slots::D, f32, heads, heads_from),
        (slots::OUT_PROJ_BIAS, tt, hidden, hidden_from),
    ];
    for (slot, (elem, type_why), len, why) in optional {
        if let Some(v) = get(slot) {
            let name = slots::INPUT_NAMES[slot];
            expect_elem(name, v, elem, type_why)?;
            expect_dims(name, v, &[known(len)], why)?;
        }
    }
    Ok(vec![
        ValueType::new(Elem::F32, vec![batch.clone(), Dim::Known(1), Dim::Known(hidden)]),
        ValueType::new(t, vec![batch.clone(), Dim::Known(conv_dim), Dim::Known(width - 1)]),
        ValueType::new(Elem::F32, vec![batch, Dim::Known(heads), Dim::Known(head_dim), Dim::Known(dstate)]),
    ])
}
