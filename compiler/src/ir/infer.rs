//! Shape and type inference, one function per op. This is the Rust half of the op contract's
//! shape rules (the C++ half is `cpp/include/mambac/shape_check.h`; a test checks they agree).

use super::infer_standard as std_infer;
use super::op::{conv_slots, scan_slots, step_slots};
use super::op::{CausalConv1dConfig as Conv, Op, SelectiveScanConfig as Scan};
use super::standard_ops::{causal_conv_with_state as std_conv, linear_attention as std_la};
use super::types::{Dim, Elem, Shape, ValueType};

/// Why a node's inputs do not fit its op. `input` names the slot at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("input '{input}' {problem}")]
pub struct InferError {
    pub input: String,
    pub problem: String,
}

pub(super) fn err(input: &str, problem: impl Into<String>) -> InferError {
    InferError { input: input.to_string(), problem: problem.into() }
}

type Inputs<'a> = [Option<&'a ValueType>];

fn required<'a>(op: &Op, inputs: &Inputs<'a>, slot: usize) -> Result<&'a ValueType, InferError> {
    let name = op.input_names()[slot];
    inputs.get(slot).copied().flatten().ok_or_else(|| err(name, "is required but missing"))
}

pub(super) fn expect_rank(name: &str, t: &ValueType, rank: usize) -> Result<(), InferError> {
    if t.shape.rank() != rank {
        return Err(err(name, format!("has shape {}, expected rank {rank}", t.shape)));
    }
    Ok(())
}

pub(super) fn expect_elem(name: &str, t: &ValueType, elem: Elem, why: &str) -> Result<(), InferError> {
    if t.elem != elem {
        return Err(err(name, format!("has element type {}, expected {elem} ({why})", t.elem)));
    }
    Ok(())
}

pub(super) fn expect_float(name: &str, t: &ValueType) -> Result<(), InferError> {
    if !t.elem.is_float() {
        return Err(err(name, format!("has element type {}, expected a float type", t.elem)));
    }
    Ok(())
}

/// Checks `t`'s shape equals `want` dim by dim (symbols compare by name).
pub(super) fn expect_shape(name: &str, t: &ValueType, want: &[Dim]) -> Result<(), InferError> {
    if t.shape.0 != want {
        return Err(err(name, format!("has shape {}, expected {}", t.shape, Shape(want.to_vec()))));
    }
    Ok(())
}

/// Infers the output types of `op` from its input types (one entry per slot, `None` = absent).
pub fn infer_node(op: &Op, inputs: &Inputs<'_>) -> Result<Vec<ValueType>, InferError> {
    let names = op.input_names();
    for (slot, present) in inputs.iter().enumerate() {
        if slot >= names.len() && present.is_some() {
            return Err(err(&format!("#{slot}"), format!("is not an input of {}", op.kind())));
        }
    }
    for slot in 0..names.len() {
        if !op.input_is_optional(slot) {
            required(op, inputs, slot)?;
        }
    }
    let get = |slot: usize| inputs.get(slot).copied().flatten();
    match op {
        Op::Input { ty, .. } => Ok(vec![ty.clone()]),
        Op::Const(c) => Ok(vec![ValueType::new(c.elem, c.shape.iter().map(|&d| Dim::Known(d)).collect())]),
        Op::Gather { axis } => {
            let (table, ids) = (required(op, inputs, 0)?, required(op, inputs, 1)?);
            expect_elem("ids", ids, Elem::I64, "token ids")?;
            if *axis >= table.shape.rank() {
                return Err(err("table", format!("has shape {}, no axis {axis}", table.shape)));
            }
            let mut dims = table.shape.0[..*axis].to_vec();
            dims.extend(ids.shape.0.iter().cloned());
            dims.extend(table.shape.0[axis + 1..].iter().cloned());
            Ok(vec![ValueType::new(table.elem, dims)])
        }
        Op::Transpose { perm } => {
            let x = required(op, inputs, 0)?;
            let mut sorted = perm.clone();
            sorted.sort();
            if sorted != (0..x.shape.rank()).collect::<Vec<_>>() {
                return Err(err("x", format!("has shape {}, not permutable by {perm:?}", x.shape)));
            }
            Ok(vec![ValueType::new(x.elem, perm.iter().map(|&p| x.shape.0[p].clone()).collect())])
        }
        Op::RmsNorm { .. } => {
            let (x, w) = (required(op, inputs, 0)?, required(op, inputs, 1)?);
            expect_float("x", x)?;
            let last = x.shape.last().cloned().ok_or_else(|| err("x", "is a scalar"))?;
            expect_float("weight", w)?;
            expect_shape("weight", w, &[last])?;
            Ok(vec![ValueType { elem: w.elem, shape: x.shape.clone() }])
        }
        Op::MatMul => {
            let (x, w) = (required(op, inputs, 0)?, required(op, inputs, 1)?);
            expect_float("x", x)?;
            expect_rank("w", w, 2)?;
            expect_elem("w", w, x.elem, "same as 'x'")?;
            let k = x.shape.last().ok_or_else(|| err("x", "is a scalar"))?;
            if *k != w.shape.0[0] {
                return Err(err("w", format!("has shape {}, expected [{k}, N] to match 'x' {}", w.shape, x.shape)));
            }
            let mut dims = x.shape.0.clone();
            *dims.last_mut().expect("rank checked") = w.shape.0[1].clone();
            Ok(vec![ValueType::new(x.elem, dims)])
        }
        Op::MatMulNBits(cfg) => {
            let (x, values, scales) = (required(op, inputs, 0)?, required(op, inputs, 1)?, required(op, inputs, 2)?);
            expect_float("x", x)?;
            let k = x.shape.last().ok_or_else(|| err("x", "is a scalar"))?;
            if *k != Dim::Known(cfg.k) {
                return Err(err("x", format!("has shape {}, expected [..., {}] (the weight's K)", x.shape, cfg.k)));
            }
            let blocks = cfg.quant.blocks(cfg.k);
            expect_elem("values", values, Elem::U8, "uint8")?;
            expect_shape(
                "values",
                values,
                &[Dim::Known(cfg.n), Dim::Known(blocks), Dim::Known(cfg.quant.blob_bytes())],
            )?;
            expect_elem("scales", scales, x.elem, "same as 'x'")?;
            expect_shape("scales", scales, &[Dim::Known(cfg.n * blocks)])?;
            let mut dims = x.shape.0.clone();
            *dims.last_mut().expect("rank checked") = Dim::Known(cfg.n);
            Ok(vec![ValueType::new(x.elem, dims)])
        }
        Op::Add | Op::Mul => {
            let (a, b) = (required(op, inputs, 0)?, required(op, inputs, 1)?);
            expect_elem("b", b, a.elem, "same as 'a'")?;
            Ok(vec![ValueType::new(a.elem, broadcast(&a.shape, &b.shape)?)])
        }
        Op::Silu | Op::Softplus | Op::Exp | Op::Neg | Op::Clip { .. } => {
            let x = required(op, inputs, 0)?;
            expect_float("x", x)?;
            Ok(vec![x.clone()])
        }
        Op::Cast { to } => {
            let x = required(op, inputs, 0)?;
            expect_float("x", x)?;
            Ok(vec![ValueType { elem: *to, shape: x.shape.clone() }])
        }
        Op::SplitLast { sizes } => {
            let x = required(op, inputs, 0)?;
            let total: usize = sizes.iter().sum();
            if x.shape.last() != Some(&Dim::Known(total)) {
                return Err(err(
                    "x",
                    format!("has shape {}, expected last dim {total} to split into {sizes:?}", x.shape),
                ));
            }
            Ok(sizes
                .iter()
                .map(|&s| {
                    let mut dims = x.shape.0.clone();
                    *dims.last_mut().expect("rank >= 1") = Dim::Known(s);
                    ValueType::new(x.elem, dims)
                })
                .collect())
        }
        Op::SliceLast { start, len } => {
            let x = required(op, inputs, 0)?;
            match x.shape.last().and_then(Dim::known) {
                Some(last) if start + len <= last => {}
                _ => {
                    let end = start + len;
                    return Err(err("x", format!("has shape {}, expected a last dim of at least {end}", x.shape)));
                }
            }
            let mut dims = x.shape.0.clone();
            *dims.last_mut().expect("rank >= 1") = Dim::Known(*len);
            Ok(vec![ValueType::new(x.elem, dims)])
        }
        Op::LastPosition => {
            let x = required(op, inputs, 0)?;
            if x.shape.rank() < 2 {
                return Err(err("x", format!("has shape {}, expected [batch, seqlen, ...]", x.shape)));
            }
            let mut dims = x.shape.0.clone();
            dims[1] = Dim::Known(1);
            Ok(vec![ValueType::new(x.elem, dims)])
        }
        Op::ArgMaxLast => {
            let x = required(op, inputs, 0)?;
            expect_elem("x", x, Elem::F32, "the exports cast 16-bit logits first")?;
            let mut dims = x.shape.0.clone();
            if dims.pop().is_none() {
                return Err(err("x", "is a scalar"));
            }
            Ok(vec![ValueType::new(Elem::I64, dims)])
        }
        Op::MinusOneWhereNonFinite => {
            let (scores, picks) = (required(op, inputs, 0)?, required(op, inputs, 1)?);
            expect_elem("scores", scores, Elem::F32, "the logits as ArgMaxLast reads them")?;
            expect_elem("picks", picks, Elem::I64, "token ids")?;
            let Some((_, rows)) = scores.shape.0.split_last() else { return Err(err("scores", "is a scalar")) };
            expect_shape("picks", picks, rows)?;
            Ok(vec![picks.clone()])
        }
        Op::Unsqueeze { axis } => {
            let x = required(op, inputs, 0)?;
            if *axis > x.shape.rank() {
                return Err(err("x", format!("has shape {}, cannot insert axis {axis}", x.shape)));
            }
            let mut dims = x.shape.0.clone();
            dims.insert(*axis, Dim::Known(1));
            Ok(vec![ValueType::new(x.elem, dims)])
        }
        Op::CausalConv1d(cfg) => infer_causal_conv1d(
            cfg,
            required(op, inputs, conv_slots::X)?,
            required(op, inputs, conv_slots::WEIGHT)?,
            get(conv_slots::BIAS),
            get(conv_slots::INITIAL_STATE),
        ),
        Op::Reshape { keep, tail } => {
            let x = required(op, inputs, 0)?;
            let want: usize = tail.iter().product();
            let rest: Option<usize> = x.shape.0.get(*keep..).and_then(|r| r.iter().map(Dim::known).product());
            if rest != Some(want) {
                return Err(err(
                    "x",
                    format!("has shape {}, whose dims after the first {keep} cannot become {tail:?}", x.shape),
                ));
            }
            let mut dims = x.shape.0[..*keep].to_vec();
            dims.extend(tail.iter().map(|&d| Dim::Known(d)));
            Ok(vec![ValueType::new(x.elem, dims)])
        }
        Op::GatedRmsNorm(cfg) => {
            let (x, z, w) = (required(op, inputs, 0)?, required(op, inputs, 1)?, required(op, inputs, 2)?);
            expect_float("x", x)?;
            expect_elem("z", z, x.elem, "same as 'x'")?;
            expect_shape("z", z, &x.shape.0)?;
            let last = x.shape.last().cloned().ok_or_else(|| err("x", "is a scalar"))?;
            match last.known() {
                Some(n) if cfg.group_size > 0 && n % cfg.group_size == 0 => {}
                _ => {
                    return Err(err(
                        "x",
                        format!(
                            "has shape {}, whose last dim is not a multiple of group_size {}",
                            x.shape, cfg.group_size
                        ),
                    ))
                }
            }
            expect_elem("weight", w, x.elem, "same as 'x'")?;
            expect_shape("weight", w, &[last])?;
            Ok(vec![x.clone()])
        }
        Op::SelectiveScan(cfg) => infer_selective_scan(cfg, &|s| get(s)),
        Op::SsdScan(cfg) => super::infer_ssd_scan::infer_ssd_scan(cfg, &|s| get(s)),
        Op::AddRmsNorm(cfg) => super::infer_add_rms_norm::infer_add_rms_norm(cfg, &|s| get(s)),
        Op::Expand { shape } => std_infer::infer_expand(required(op, inputs, 0)?, shape),
        Op::CausalConvWithState(cfg) => std_infer::infer_causal_conv_with_state(
            cfg,
            required(op, inputs, std_conv::INPUT)?,
            required(op, inputs, std_conv::WEIGHT)?,
            get(std_conv::BIAS),
            get(std_conv::PAST_STATE),
        ),
        Op::LinearAttention(cfg) => std_infer::infer_linear_attention(
            cfg,
            required(op, inputs, std_la::QUERY)?,
            required(op, inputs, std_la::KEY)?,
            required(op, inputs, std_la::VALUE)?,
            get(std_la::PAST_STATE),
            required(op, inputs, std_la::DECAY)?,
        ),
        Op::MambaLayerStep(_) => infer_layer_step(&|s| get(s)),
        Op::FusedGatedRmsNorm(cfg) => super::infer_gated_norm::infer_fused_gated_rms_norm(
            cfg,
            required(op, inputs, 0)?,
            required(op, inputs, 1)?,
            required(op, inputs, 2)?,
        ),
        Op::Mamba2LayerStep(_) => super::infer_mamba2_step::infer_mamba2_layer_step(&|s| get(s)),
    }
}

pub(super) fn broadcast(a: &Shape, b: &Shape) -> Result<Vec<Dim>, InferError> {
    let rank = a.rank().max(b.rank());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = (i + a.rank()).checked_sub(rank).map(|j| &a.0[j]);
        let db = (i + b.rank()).checked_sub(rank).map(|j| &b.0[j]);
        let d = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) if x == y => x.clone(),
            (Some(Dim::Known(1)), Some(y)) => y.clone(),
            (Some(x), Some(Dim::Known(1))) => x.clone(),
            _ => return Err(err("b", format!("has shape {b}, which does not broadcast with 'a' {a}"))),
        };
        out.push(d);
    }
    Ok(out)
}

/// Input `name` read whole: `want`; read as a slice from channel `offset` of its last axis
/// (docs/op-contract.md "Sliced inputs"): `want` but for a last dim of at least `offset` + want's
/// last. The rule of `cpp/shape_check.cpp`'s `view_is`.
pub(super) fn expect_view(name: &str, t: &ValueType, want: &[Dim], offset: Option<usize>) -> Result<(), InferError> {
    let Some(offset) = offset else { return expect_shape(name, t, want) };
    let (count, lead) = want.split_last().expect("ops' inputs have rank >= 1");
    if t.shape.rank() != want.len() || t.shape.0[..lead.len()] != *lead {
        let shown: Vec<String> = lead.iter().map(Dim::to_string).chain(["row".to_string()]).collect();
        return Err(err(name, format!("has shape {}, expected [{}]", t.shape, shown.join(", "))));
    }
    match (count.known(), t.shape.0[lead.len()].known()) {
        (Some(c), Some(row)) if offset + c <= row => Ok(()),
        _ => Err(err(
            name,
            format!("has shape {}, whose last dim must hold {name}_offset {offset} + {count} channels", t.shape),
        )),
    }
}

fn infer_causal_conv1d(
    cfg: &Conv,
    x: &ValueType,
    w: &ValueType,
    bias: Option<&ValueType>,
    state: Option<&ValueType>,
) -> Result<Vec<ValueType>, InferError> {
    expect_rank("x", x, 3)?;
    expect_float("x", x)?;
    let x_offset = cfg.slices.offset(conv_slots::X);
    expect_rank("weight", w, 2)?;
    expect_elem("weight", w, x.elem, "same as 'x'")?;
    // A sliced x has no dim of its own: weight gives it (as the C++ check does).
    let dim = if x_offset.is_some() { w.shape.0[0].clone() } else { x.shape.0[2].clone() };
    let batch = x.shape.0[0].clone();
    if w.shape.0[0] != dim {
        return Err(err("weight", format!("has shape {}, expected [{dim}, width]", w.shape)));
    }
    let width = w.shape.0[1].known().ok_or_else(|| err("weight", "must have a known width"))?;
    if width < 1 {
        return Err(err("weight", format!("has shape {}, width must be at least 1", w.shape)));
    }
    let y_dims = vec![batch.clone(), x.shape.0[1].clone(), dim.clone()];
    expect_view("x", x, &y_dims, x_offset)?;
    if let Some(b) = bias {
        expect_elem("bias", b, x.elem, "same as 'x'")?;
        expect_shape("bias", b, std::slice::from_ref(&dim))?;
    }
    let state_dims = vec![batch, dim, Dim::Known(width - 1)];
    if let Some(s) = state {
        expect_elem("initial_state", s, x.elem, "same as 'x'")?;
        expect_shape("initial_state", s, &state_dims)?;
    }
    let mut outs = vec![ValueType::new(x.elem, y_dims)];
    if cfg.final_state {
        outs.push(ValueType::new(x.elem, state_dims));
    }
    Ok(outs)
}

fn infer_selective_scan<'a>(
    cfg: &Scan,
    get: &dyn Fn(usize) -> Option<&'a ValueType>,
) -> Result<Vec<ValueType>, InferError> {
    let req = |slot: usize| get(slot).ok_or_else(|| err(scan_slots::INPUT_NAMES[slot], "is required but missing"));
    let u = req(scan_slots::U)?;
    expect_rank("u", u, 3)?;
    expect_float("u", u)?;
    let (batch, seqlen, dim) = (u.shape.0[0].clone(), u.shape.0[1].clone(), u.shape.0[2].clone());
    let t = u.elem;
    let delta = req(scan_slots::DELTA)?;
    expect_elem("delta", delta, t, "same as 'u'")?;
    expect_shape("delta", delta, &u.shape.0)?;
    let a = req(scan_slots::A)?;
    expect_elem("A", a, Elem::F32, "A is always float32")?;
    expect_rank("A", a, 2)?;
    if a.shape.0[0] != dim {
        return Err(err("A", format!("has shape {}, expected [{dim}, dstate]", a.shape)));
    }
    let dstate = a.shape.0[1].clone();
    let b = req(scan_slots::B)?;
    expect_elem("B", b, t, "same as 'u'")?;
    expect_rank("B", b, 4)?;
    let ngroups = b.shape.0[2].clone();
    let bc_dims = [batch.clone(), seqlen.clone(), ngroups.clone(), dstate.clone()];
    expect_view("B", b, &bc_dims, cfg.slices.offset(scan_slots::B))?;
    if let (Some(d), Some(g)) = (dim.known(), ngroups.known()) {
        if g == 0 || d % g != 0 {
            return Err(err("B", format!("has shape {}, ngroups {g} does not divide dim {d}", b.shape)));
        }
    }
    let c = req(scan_slots::C)?;
    expect_elem("C", c, t, "same as 'u'")?;
    expect_view("C", c, &bc_dims, cfg.slices.offset(scan_slots::C))?;
    // Optional inputs in slot order, as the C++ check does (tests/shape_agreement.rs).
    let vector_f32 = |name: &str, v: &ValueType| -> Result<(), InferError> {
        expect_elem(name, v, Elem::F32, "always float32")?;
        expect_shape(name, v, std::slice::from_ref(&dim))
    };
    if let Some(v) = get(scan_slots::D) {
        vector_f32("D", v)?;
    }
    if let Some(z) = get(scan_slots::Z) {
        expect_elem("z", z, t, "same as 'u'")?;
        expect_view("z", z, &u.shape.0, cfg.slices.offset(scan_slots::Z))?;
    }
    if let Some(v) = get(scan_slots::DELTA_BIAS) {
        vector_f32("delta_bias", v)?;
    }
    let state_dims = vec![batch, dim, dstate];
    if let Some(s) = get(scan_slots::INITIAL_STATE) {
        expect_elem("initial_state", s, Elem::F32, "the state is always float32")?;
        expect_shape("initial_state", s, &state_dims)?;
    }
    let mut outs = vec![u.clone()];
    if cfg.final_state {
        outs.push(ValueType::new(Elem::F32, state_dims));
    }
    Ok(outs)
}

/// One expected dim: a size the input itself defines (free, named for the message), or a value.
pub(super) enum Want {
    Free(&'static str),
    Is(Dim),
}

/// Checks rank and every `Want::Is` dim; `why` ends the message, as the C++ check's does.
pub(super) fn expect_dims(name: &str, t: &ValueType, want: &[Want], why: &str) -> Result<(), InferError> {
    let ok = t.shape.rank() == want.len()
        && t.shape.0.iter().zip(want).all(|(d, w)| match w {
            Want::Free(_) => true,
            Want::Is(x) => d == x,
        });
    if ok {
        return Ok(());
    }
    Err(dims_error(name, t, want, why))
}

pub(super) fn dims_error(name: &str, t: &ValueType, want: &[Want], why: &str) -> InferError {
    let dims: Vec<String> = want
        .iter()
        .map(|w| match w {
            Want::Free(n) => n.to_string(),
            Want::Is(d) => d.to_string(),
        })
        .collect();
    err(name, format!("has shape {}, expected [{}]{why}", t.shape, dims.join(", ")))
}

/// The size dim `axis` of `t` defines: known and at least 1 (weights' sizes are never symbolic).
pub(super) fn defined_size(
    name: &str,
    t: &ValueType,
    axis: usize,
    want: &[Want],
    what: &str,
) -> Result<usize, InferError> {
    match t.shape.0[axis].known() {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(dims_error(name, t, want, &format!(" with a known {what} >= 1"))),
    }
}

/// The rule of `cpp/shape_check.cpp` `check_mamba_layer_step`, input for input in its order, so
/// both name the same input (tests/shape_agreement.rs): the sizes come from the inputs that define
/// them (conv_state: batch, inner, width; ssm_state: dstate; residual: hidden; dt_proj_weight:
/// dt_rank) and every other input is checked against them.
fn infer_layer_step<'a>(get: &dyn Fn(usize) -> Option<&'a ValueType>) -> Result<Vec<ValueType>, InferError> {
    use Want::{Free, Is};
    let req = |slot: usize| get(slot).ok_or_else(|| err(step_slots::INPUT_NAMES[slot], "is required but missing"));
    let known = |n: usize| Is(Dim::Known(n));
    let same_as_conv_state = "same as 'conv_state'";
    let conv_state = req(step_slots::CONV_STATE)?;
    expect_float("conv_state", conv_state)?;
    let t = conv_state.elem;
    let conv_dims = [Free("batch"), Free("inner"), Free("width - 1")];
    expect_dims("conv_state", conv_state, &conv_dims, "")?;
    let batch = conv_state.shape.0[0].clone();
    let inner = defined_size("conv_state", conv_state, 1, &conv_dims, "inner")?;
    let width = conv_state.shape.0[2]
        .known()
        .ok_or_else(|| dims_error("conv_state", conv_state, &conv_dims, " with a known width"))?
        + 1;
    let state_dims = " ([batch, inner] from 'conv_state')";

    let ssm_state = req(step_slots::SSM_STATE)?;
    expect_elem("ssm_state", ssm_state, Elem::F32, "the state is always float32")?;
    let ssm_dims = [Is(batch.clone()), known(inner), Free("dstate")];
    expect_dims("ssm_state", ssm_state, &ssm_dims, state_dims)?;
    let dstate = defined_size("ssm_state", ssm_state, 2, &ssm_dims, "dstate")?;

    let residual = req(step_slots::RESIDUAL)?;
    expect_elem("residual", residual, Elem::F32, "the residual stream is float32")?;
    let res_dims = [Is(batch.clone()), known(1), Free("hidden")];
    expect_dims("residual", residual, &res_dims, " (one token a sequence; batch from 'conv_state')")?;
    let hidden = defined_size("residual", residual, 2, &res_dims, "hidden")?;
    let hidden_from = " (hidden from 'residual')";

    let w = req(step_slots::NORM_WEIGHT)?;
    expect_elem("norm_weight", w, Elem::F32, "always float32")?;
    expect_dims("norm_weight", w, &[known(hidden)], hidden_from)?;
    let w = req(step_slots::IN_PROJ_WEIGHT)?;
    expect_elem("in_proj_weight", w, t, same_as_conv_state)?;
    expect_dims("in_proj_weight", w, &[known(hidden), known(2 * inner)], " ([hidden, 2 * inner])")?;
    let w = req(step_slots::CONV_WEIGHT)?;
    expect_elem("conv_weight", w, t, same_as_conv_state)?;
    expect_dims("conv_weight", w, &[known(inner), known(width)], " ([inner, width] from 'conv_state')")?;

    let w = req(step_slots::DT_PROJ_WEIGHT)?;
    expect_elem("dt_proj_weight", w, t, same_as_conv_state)?;
    let dt_dims = [Free("dt_rank"), known(inner)];
    expect_dims("dt_proj_weight", w, &dt_dims, " (inner from 'conv_state')")?;
    let dt_rank = defined_size("dt_proj_weight", w, 0, &dt_dims, "dt_rank")?;
    let w = req(step_slots::X_PROJ_WEIGHT)?;
    expect_elem("x_proj_weight", w, t, same_as_conv_state)?;
    let why = format!(" ([inner, dt_rank + 2 * dstate] = [{inner}, {dt_rank} + 2 * {dstate}])");
    expect_dims("x_proj_weight", w, &[known(inner), known(dt_rank + 2 * dstate)], &why)?;

    let w = req(step_slots::A)?;
    expect_elem("A", w, Elem::F32, "A is always float32")?;
    expect_dims("A", w, &[known(inner), known(dstate)], " ([inner, dstate] from the states)")?;
    let w = req(step_slots::OUT_PROJ_WEIGHT)?;
    expect_elem("out_proj_weight", w, t, same_as_conv_state)?;
    expect_dims("out_proj_weight", w, &[known(inner), known(hidden)], " ([inner, hidden])")?;

    // Optional inputs last, in slot order, as the C++ check does.
    let f32 = (Elem::F32, "always float32");
    let tt = (t, same_as_conv_state);
    let optional = [
        (step_slots::IN_PROJ_BIAS, tt, 2 * inner, " ([2 * inner])"),
        (step_slots::CONV_BIAS, tt, inner, " (inner from 'conv_state')"),
        (step_slots::DT_BIAS, f32, inner, " (inner from 'conv_state')"),
        (step_slots::D, f32, inner, " (inner from 'conv_state')"),
        (step_slots::OUT_PROJ_BIAS, tt, hidden, hidden_from),
    ];
    for (slot, (elem, type_why), len, why) in optional {
        if let Some(v) = get(slot) {
            let name = step_slots::INPUT_NAMES[slot];
            expect_elem(name, v, elem, type_why)?;
            expect_dims(name, v, &[known(len)], why)?;
        }
    }
    Ok(vec![
        ValueType::new(Elem::F32, vec![batch.clone(), Dim::Known(1), Dim::Known(hidden)]),
        ValueType::new(t, vec![batch.clone(), Dim::Known(inner), Dim::Known(width - 1)]),
        ValueType::new(Elem::F32, vec![batch, Dim::Known(inner), Dim::Known(dstate)]),
    ])
}
