//! A float64 reference interpreter of the IR. Every op is evaluated in float64 whatever the
//! graph's element types (casts are identities), so the unfused and the fused graph of one
//! checkpoint can each be checked against the fixtures' reference logits.

use crate::ir::standard_ops::{causal_conv_with_state as std_conv, linear_attention as std_la};
use crate::ir::{conv_slots, gated_norm_slots, norm_slots, scan_slots, ssd_slots, step2_slots, step_slots};
use std::collections::HashMap;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::ir::{Dim, Op, ValidatedGraph, ValueRef};
use crate::reference::{self, softplus};

/// A dense row-major float64 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor64 {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Tensor64 {
    pub fn new(shape: Vec<usize>, data: Vec<f64>) -> Tensor64 {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "shape {shape:?} vs {} values", data.len());
        Tensor64 { shape, data }
    }

    pub fn zeros(shape: Vec<usize>) -> Tensor64 {
        let n = shape.iter().product();
        Tensor64 { shape, data: vec![0.0; n] }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InterpError {
    #[error("missing graph input '{0}'")]
    MissingInput(String),
    #[error("graph input '{name}' has shape {got:?}, expected {expected}")]
    InputShape { name: String, got: Vec<usize>, expected: String },
    #[error("symbol '{symbol}' is {first} in one input and {second} in another")]
    InconsistentSymbol { symbol: String, first: usize, second: usize },
    #[error("node '{node}': token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { node: String, id: f64, vocab: usize },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// Evaluates the graph on named inputs (token ids as float64 values); returns every graph output.
pub fn interpret(
    vg: &ValidatedGraph<'_>,
    ckpt: &Checkpoint,
    inputs: &HashMap<String, Tensor64>,
) -> Result<HashMap<String, Tensor64>, InterpError> {
    let g = vg.graph;
    let mut symbols: HashMap<String, usize> = HashMap::new();
    let mut values: HashMap<ValueRef, Tensor64> = HashMap::new();
    for &id in &vg.order {
        let node = g.node(id);
        let ins: Vec<Option<&Tensor64>> = g.node_inputs(id).iter().map(|v| v.map(|v| &values[&v])).collect();
        let outs = match &node.op {
            Op::Input { name, ty } => {
                let t = inputs.get(name).ok_or_else(|| InterpError::MissingInput(name.clone()))?;
                bind_shape(name, &ty.shape.0, &t.shape, &mut symbols)?;
                vec![t.clone()]
            }
            Op::Const(c) => vec![Tensor64::new(c.shape.clone(), c.values_f64(ckpt)?)],
            op => eval(&node.name, op, &ins)?,
        };
        for (k, t) in outs.into_iter().enumerate() {
            values.insert(ValueRef { node: id, output: k }, t);
        }
    }
    Ok(g.outputs().iter().map(|o| (o.name.clone(), values[&o.value].clone())).collect())
}

fn bind_shape(
    name: &str,
    want: &[Dim],
    got: &[usize],
    symbols: &mut HashMap<String, usize>,
) -> Result<(), InterpError> {
    let expected = || crate::ir::Shape(want.to_vec()).to_string();
    if want.len() != got.len() {
        return Err(InterpError::InputShape { name: name.into(), got: got.to_vec(), expected: expected() });
    }
    for (w, &n) in want.iter().zip(got) {
        match w {
            Dim::Known(k) if *k != n => {
                return Err(InterpError::InputShape { name: name.into(), got: got.to_vec(), expected: expected() })
            }
            Dim::Known(_) => {}
            Dim::Sym(s) => {
                let first = *symbols.entry(s.clone()).or_insert(n);
                if first != n {
                    return Err(InterpError::InconsistentSymbol { symbol: s.clone(), first, second: n });
                }
            }
        }
    }
    Ok(())
}

/// Channels `[offset, offset + count)` of `t`'s last axis when `offset` is given (a fused op's
/// sliced input, docs/op-contract.md "Sliced inputs"), else `t` itself.
fn view(t: &Tensor64, offset: Option<usize>, count: usize) -> std::borrow::Cow<'_, Tensor64> {
    let Some(offset) = offset else { return std::borrow::Cow::Borrowed(t) };
    let last = *t.shape.last().expect("rank >= 1");
    let data = t.data.chunks(last).flat_map(|row| row[offset..offset + count].iter().copied()).collect();
    let mut shape = t.shape.clone();
    *shape.last_mut().expect("rank >= 1") = count;
    std::borrow::Cow::Owned(Tensor64 { shape, data })
}

fn map(x: &Tensor64, f: impl Fn(f64) -> f64) -> Tensor64 {
    Tensor64 { shape: x.shape.clone(), data: x.data.iter().map(|&v| f(v)).collect() }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Numpy broadcasting of a binary op (shapes were checked by validation).
fn broadcast(a: &Tensor64, b: &Tensor64, f: impl Fn(f64, f64) -> f64) -> Tensor64 {
    let rank = a.shape.len().max(b.shape.len());
    let pad = |s: &[usize]| {
        let mut p = vec![1; rank - s.len()];
        p.extend_from_slice(s);
        p
    };
    let (sa, sb) = (pad(&a.shape), pad(&b.shape));
    let shape: Vec<usize> = sa.iter().zip(&sb).map(|(x, y)| *x.max(y)).collect();
    let (ta, tb) = (strides(&sa), strides(&sb));
    let n: usize = shape.iter().product();
    let out_strides = strides(&shape);
    let mut data = Vec::with_capacity(n);
    for flat in 0..n {
        let (mut ia, mut ib) = (0, 0);
        for k in 0..rank {
            let idx = (flat / out_strides[k]) % shape[k];
            if sa[k] != 1 {
                ia += idx * ta[k];
            }
            if sb[k] != 1 {
                ib += idx * tb[k];
            }
        }
        data.push(f(a.data[ia], b.data[ib]));
    }
    Tensor64 { shape, data }
}

fn eval(name: &str, op: &Op, ins: &[Option<&Tensor64>]) -> Result<Vec<Tensor64>, InterpError> {
    let x = |k: usize| ins[k].expect("validated: required input present");
    Ok(match op {
        Op::Input { .. } | Op::Const(_) => unreachable!("handled by the caller"),
        Op::Gather { axis } => vec![gather(name, x(0), x(1), *axis)?],
        Op::Transpose { perm } => vec![transpose(x(0), perm)],
        Op::RmsNorm { eps } => {
            let (t, w) = (x(0), x(1));
            vec![Tensor64::new(t.shape.clone(), reference::rms_norm(&t.data, &w.data, *eps))]
        }
        Op::Cast { .. } => vec![x(0).clone()],
        Op::MatMul => {
            let (a, w) = (x(0), x(1));
            let (k, n) = (w.shape[0], w.shape[1]);
            let rows = a.data.len() / k;
            let mut data = vec![0.0; rows * n];
            for r in 0..rows {
                let out = &mut data[r * n..(r + 1) * n];
                for (kk, &av) in a.data[r * k..(r + 1) * k].iter().enumerate() {
                    for (o, wv) in out.iter_mut().zip(&w.data[kk * n..(kk + 1) * n]) {
                        *o += av * wv;
                    }
                }
            }
            let mut shape = a.shape.clone();
            *shape.last_mut().expect("rank >= 1") = n;
            vec![Tensor64 { shape, data }]
        }
        Op::MatMulNBits(cfg) => {
            // The weight the file holds, read back as MatMulNBits does (x then in float64).
            let (a, values, scales) = (x(0), x(1), x(2));
            let packed: Vec<u8> = values.data.iter().map(|&v| v as u8).collect();
            let w = cfg.quant.dequantize(&packed, &scales.data, cfg.n, cfg.k);
            let (k, n) = (cfg.k, cfg.n);
            let rows = a.data.len() / k;
            let mut data = vec![0.0; rows * n];
            for r in 0..rows {
                let xr = &a.data[r * k..(r + 1) * k];
                for (j, o) in data[r * n..(r + 1) * n].iter_mut().enumerate() {
                    *o = xr.iter().zip(&w[j * k..(j + 1) * k]).map(|(p, q)| p * q).sum();
                }
            }
            let mut shape = a.shape.clone();
            *shape.last_mut().expect("rank >= 1") = n;
            vec![Tensor64 { shape, data }]
        }
        Op::Add => vec![broadcast(x(0), x(1), |a, b| a + b)],
        Op::Mul => vec![broadcast(x(0), x(1), |a, b| a * b)],
        Op::Silu => vec![map(x(0), reference::silu)],
        Op::Softplus => vec![map(x(0), softplus)],
        Op::Exp => vec![map(x(0), f64::exp)],
        Op::Neg => vec![map(x(0), |v| -v)],
        Op::Clip { min, max } => vec![map(x(0), |v| reference::clamp(v, *min, *max))],
        Op::SplitLast { sizes } => {
            let t = x(0);
            let last = *t.shape.last().expect("rank >= 1");
            let mut outs: Vec<Tensor64> = Vec::new();
            let mut start = 0;
            for &s in sizes {
                let data = t.data.chunks(last).flat_map(|row| row[start..start + s].iter().copied()).collect();
                let mut shape = t.shape.clone();
                *shape.last_mut().expect("rank >= 1") = s;
                outs.push(Tensor64 { shape, data });
                start += s;
            }
            outs
        }
        Op::SliceLast { start, len } => vec![view(x(0), Some(*start), *len).into_owned()],
        Op::LastPosition => {
            let t = x(0);
            let (b, l) = (t.shape[0], t.shape[1]);
            let inner: usize = t.shape[2..].iter().product();
            let data =
                (0..b).flat_map(|bi| t.data[((bi + 1) * l - 1) * inner..(bi + 1) * l * inner].to_vec()).collect();
            let mut shape = t.shape.clone();
            shape[1] = 1;
            vec![Tensor64::new(shape, data)]
        }
        Op::ArgMaxLast => {
            let t = x(0);
            let last = *t.shape.last().expect("rank >= 1");
            // ONNX's rule: the first index on ties.
            let first_max = |row: &[f64]| (0..row.len()).fold(0, |m, i| if row[i] > row[m] { i } else { m }) as f64;
            let data = t.data.chunks(last).map(first_max).collect();
            vec![Tensor64::new(t.shape[..t.shape.len() - 1].to_vec(), data)]
        }
        Op::MinusOneWhereNonFinite => {
            let (scores, picks) = (x(0), x(1));
            let last = *scores.shape.last().expect("rank >= 1");
            let rows = scores.data.chunks(last);
            let data = rows.zip(&picks.data).map(|(r, &p)| if r.iter().all(|v| v.is_finite()) { p } else { -1.0 });
            vec![Tensor64::new(picks.shape.clone(), data.collect())]
        }
        Op::Unsqueeze { axis } => {
            let t = x(0);
            let mut shape = t.shape.clone();
            shape.insert(*axis, 1);
            vec![Tensor64 { shape, data: t.data.clone() }]
        }
        Op::Expand { shape } => {
            let ones = Tensor64::zeros(shape.clone());
            vec![broadcast(x(0), &ones, |a, _| a)]
        }
        Op::CausalConvWithState(cfg) => {
            // CausalConv1d's equation, channels-first: through the token-major reference.
            let (xs, w) = (x(std_conv::INPUT), x(std_conv::WEIGHT));
            let (batch, dim, seqlen, width) = (xs.shape[0], xs.shape[1], xs.shape[2], w.shape[2]);
            let token_major = transpose(xs, &[0, 2, 1]);
            let (y, fin) = reference::causal_conv1d(&reference::CausalConv1dInputs {
                batch,
                seqlen,
                dim,
                width,
                x: &token_major.data,
                weight: &w.data,
                bias: ins[std_conv::BIAS].map(|t| t.data.as_slice()),
                initial_state: ins[std_conv::PAST_STATE].map(|t| t.data.as_slice()),
                silu: cfg.silu,
            });
            let y = transpose(&Tensor64::new(vec![batch, seqlen, dim], y), &[0, 2, 1]);
            vec![y, Tensor64::new(vec![batch, dim, width - 1], fin)]
        }
        Op::LinearAttention(cfg) => {
            let (q, v) = (x(std_la::QUERY), x(std_la::VALUE));
            let (batch, seqlen, heads) = (q.shape[0], q.shape[1], cfg.heads);
            let (dk, dv) = (q.shape[2] / heads, v.shape[2] / heads);
            let (out, state) = reference::linear_attention(&reference::LinearAttentionInputs {
                batch,
                seqlen,
                heads,
                dk,
                dv,
                scale: cfg.scale,
                query: &q.data,
                key: &x(std_la::KEY).data,
                value: &v.data,
                decay: &x(std_la::DECAY).data,
                past_state: ins[std_la::PAST_STATE].map(|t| t.data.as_slice()),
            });
            vec![Tensor64::new(vec![batch, seqlen, heads * dv], out), Tensor64::new(vec![batch, heads, dk, dv], state)]
        }
        Op::Reshape { keep, tail } => {
            let t = x(0);
            let mut shape = t.shape[..*keep].to_vec();
            shape.extend_from_slice(tail);
            vec![Tensor64::new(shape, t.data.clone())]
        }
        Op::AddRmsNorm(cfg) => {
            let (xs, w) = (x(norm_slots::X), x(norm_slots::WEIGHT));
            let residual = ins[norm_slots::RESIDUAL].map(|t| t.data.as_slice());
            let (y, sum) = reference::add_rms_norm(&xs.data, residual, &w.data, cfg.eps);
            let mut outs = vec![Tensor64::new(xs.shape.clone(), y)];
            if cfg.residual_out {
                outs.push(Tensor64::new(xs.shape.clone(), sum));
            }
            outs
        }
        Op::GatedRmsNorm(cfg) => {
            let (t, z, w) = (x(0), x(1), x(2));
            let data =
                reference::gated_rms_norm(&t.data, &z.data, &w.data, cfg.group_size, cfg.eps, cfg.norm_before_gate);
            vec![Tensor64::new(t.shape.clone(), data)]
        }
        Op::FusedGatedRmsNorm(cfg) => {
            let (t, z, w) = (x(0), x(1), x(2));
            let z = view(z, cfg.slices.offset(gated_norm_slots::Z), *t.shape.last().expect("validated: rank 3"));
            let n = &cfg.norm;
            let data = reference::gated_rms_norm(&t.data, &z.data, &w.data, n.group_size, n.eps, n.norm_before_gate);
            vec![Tensor64::new(t.shape.clone(), data)]
        }
        Op::SsdScan(cfg) => {
            // x, B and C may be packed rows (docs/op-contract.md "Sliced inputs"): their dims
            // then come from A and the node's attributes, and the view reads them contiguous.
            let (xw, b) = (x(ssd_slots::X), x(ssd_slots::B));
            let opt = |k: usize| ins[k].map(|t| t.data.as_slice());
            let (batch, seqlen, heads) = (xw.shape[0], xw.shape[1], x(ssd_slots::A).shape[0]);
            let head_dim = cfg.dims.head_dim.unwrap_or_else(|| xw.shape[3]);
            let ngroups = cfg.dims.ngroups.unwrap_or_else(|| b.shape[2]);
            let dstate = cfg.dims.dstate.unwrap_or_else(|| b.shape[3]);
            let read = |slot: usize, count: usize| view(x(slot), cfg.slices.offset(slot), count);
            let (y, fin) = reference::ssd_scan(&reference::SsdScanInputs {
                batch,
                seqlen,
                heads,
                head_dim,
                ngroups,
                dstate,
                x: &read(ssd_slots::X, heads * head_dim).data,
                dt: &read(ssd_slots::DT, heads).data,
                a: &x(ssd_slots::A).data,
                b: &read(ssd_slots::B, ngroups * dstate).data,
                c: &read(ssd_slots::C, ngroups * dstate).data,
                d: opt(ssd_slots::D),
                dt_bias: opt(ssd_slots::DT_BIAS),
                initial_state: opt(ssd_slots::INITIAL_STATE),
                dt_softplus: cfg.dt_softplus,
                dt_min: cfg.dt_min,
                dt_max: cfg.dt_max,
            });
            let mut outs = vec![Tensor64::new(vec![batch, seqlen, heads, head_dim], y)];
            if cfg.final_state {
                outs.push(Tensor64::new(vec![batch, heads, head_dim, dstate], fin));
            }
            outs
        }
        Op::CausalConv1d(cfg) => {
            let w = x(conv_slots::WEIGHT);
            let xs = &view(x(conv_slots::X), cfg.slices.offset(conv_slots::X), w.shape[0]);
            let (y, fin) = reference::causal_conv1d(&reference::CausalConv1dInputs {
                batch: xs.shape[0],
                seqlen: xs.shape[1],
                dim: xs.shape[2],
                width: w.shape[1],
                x: &xs.data,
                weight: &w.data,
                bias: ins[conv_slots::BIAS].map(|t| t.data.as_slice()),
                initial_state: ins[conv_slots::INITIAL_STATE].map(|t| t.data.as_slice()),
                silu: cfg.silu,
            });
            let mut outs = vec![Tensor64::new(xs.shape.clone(), y)];
            if cfg.final_state {
                outs.push(Tensor64::new(vec![xs.shape[0], xs.shape[2], w.shape[1] - 1], fin));
            }
            outs
        }
        Op::SelectiveScan(cfg) => {
            let (u, dstate) = (x(scan_slots::U), x(scan_slots::A).shape[1]);
            // Sliced inputs as the op reads them (docs/op-contract.md "Sliced inputs").
            let sliced = |slot: usize, count: usize| ins[slot].map(|t| view(t, cfg.slices.offset(slot), count));
            let (b, c, z) =
                (sliced(scan_slots::B, dstate), sliced(scan_slots::C, dstate), sliced(scan_slots::Z, u.shape[2]));
            let b = b.as_deref().expect("required input");
            let opt = |k: usize| ins[k].map(|t| t.data.as_slice());
            let (y, fin) = reference::selective_scan(&reference::SelectiveScanInputs {
                batch: u.shape[0],
                seqlen: u.shape[1],
                dim: u.shape[2],
                dstate: b.shape[3],
                ngroups: b.shape[2],
                u: &u.data,
                delta: &x(scan_slots::DELTA).data,
                a: &x(scan_slots::A).data,
                b: &b.data,
                c: &c.as_deref().expect("required input").data,
                d: opt(scan_slots::D),
                z: z.as_deref().map(|t| t.data.as_slice()),
                delta_bias: opt(scan_slots::DELTA_BIAS),
                initial_state: opt(scan_slots::INITIAL_STATE),
                delta_softplus: cfg.delta_softplus,
            });
            let mut outs = vec![Tensor64::new(u.shape.clone(), y)];
            if cfg.final_state {
                outs.push(Tensor64::new(vec![u.shape[0], u.shape[2], b.shape[3]], fin));
            }
            outs
        }
        Op::MambaLayerStep(cfg) => {
            let (conv_state, ssm_state, x_proj) =
                (x(step_slots::CONV_STATE), x(step_slots::SSM_STATE), x(step_slots::X_PROJ_WEIGHT));
            let (batch, inner, past) = (conv_state.shape[0], conv_state.shape[1], conv_state.shape[2]);
            let (dstate, hidden, dt_rank) =
                (ssm_state.shape[2], x(step_slots::RESIDUAL).shape[2], x(step_slots::DT_PROJ_WEIGHT).shape[0]);
            debug_assert_eq!(x_proj.shape[1], dt_rank + 2 * dstate);
            let opt = |k: usize| ins[k].map(|t| t.data.as_slice());
            let (res, conv, ssm) = reference::layer_step(&reference::LayerStepInputs {
                frame: reference::StepFrame::of_node(&step_slots::FRAME, opt, [batch, hidden, past + 1], cfg.eps),
                inner,
                dstate,
                dt_rank,
                ssm_state: &ssm_state.data,
                x_proj_weight: &x_proj.data,
                dt_proj_weight: &x(step_slots::DT_PROJ_WEIGHT).data,
                dt_bias: opt(step_slots::DT_BIAS),
                a: &x(step_slots::A).data,
                d: opt(step_slots::D),
            });
            vec![
                Tensor64::new(vec![batch, 1, hidden], res),
                Tensor64::new(vec![batch, inner, past], conv),
                Tensor64::new(vec![batch, inner, dstate], ssm),
            ]
        }
        Op::Mamba2LayerStep(cfg) => {
            use step2_slots as s;
            let (conv_state, ssm_state) = (x(s::CONV_STATE), x(s::SSM_STATE));
            let (batch, conv_dim, past) = (conv_state.shape[0], conv_state.shape[1], conv_state.shape[2]);
            let (heads, head_dim, dstate) = (ssm_state.shape[1], ssm_state.shape[2], ssm_state.shape[3]);
            let hidden = x(s::RESIDUAL).shape[2];
            // Validated: conv_dim = heads * head_dim + 2 * ngroups * dstate.
            let ngroups = (conv_dim - heads * head_dim) / (2 * dstate);
            let opt = |k: usize| ins[k].map(|t| t.data.as_slice());
            let (res, conv, ssm) = reference::mamba2_layer_step(&reference::Mamba2LayerStepInputs {
                frame: reference::StepFrame::of_node(&s::FRAME, opt, [batch, hidden, past + 1], cfg.eps),
                heads,
                head_dim,
                ngroups,
                dstate,
                dt_min: cfg.dt_min,
                dt_max: cfg.dt_max,
                norm_before_gate: cfg.norm_before_gate,
                ssm_state: &ssm_state.data,
                dt_bias: opt(s::DT_BIAS),
                a: &x(s::A).data,
                d: opt(s::D),
                gate_norm_weight: &x(s::GATE_NORM_WEIGHT).data,
            });
            vec![
                Tensor64::new(vec![batch, 1, hidden], res),
                Tensor64::new(vec![batch, conv_dim, past], conv),
                Tensor64::new(vec![batch, heads, head_dim, dstate], ssm),
            ]
        }
    })
}

fn gather(name: &str, table: &Tensor64, ids: &Tensor64, axis: usize) -> Result<Tensor64, InterpError> {
    let outer: usize = table.shape[..axis].iter().product();
    let rows = table.shape[axis];
    let inner: usize = table.shape[axis + 1..].iter().product();
    let mut data = Vec::with_capacity(outer * ids.data.len() * inner);
    for o in 0..outer {
        for &id in &ids.data {
            if id < 0.0 || id as usize >= rows || id.fract() != 0.0 {
                return Err(InterpError::TokenOutOfRange { node: name.into(), id, vocab: rows });
            }
            let start = (o * rows + id as usize) * inner;
            data.extend_from_slice(&table.data[start..start + inner]);
        }
    }
    let mut shape = table.shape[..axis].to_vec();
    shape.extend_from_slice(&ids.shape);
    shape.extend_from_slice(&table.shape[axis + 1..]);
    Ok(Tensor64::new(shape, data))
}

fn transpose(t: &Tensor64, perm: &[usize]) -> Tensor64 {
    let shape: Vec<usize> = perm.iter().map(|&p| t.shape[p]).collect();
    let in_strides = strides(&t.shape);
    let out_strides = strides(&shape);
    let n = t.data.len();
    let mut data = vec![0.0; n];
    for (flat, slot) in data.iter_mut().enumerate() {
        let mut src = 0;
        for (k, &p) in perm.iter().enumerate() {
            let idx = (flat / out_strides[k]) % shape[k];
            src += idx * in_strides[p];
        }
        *slot = t.data[src];
    }
    Tensor64 { shape, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_ties() {
        let x = Tensor64::new(vec![3, 4], vec![1.0, 3.0, 3.0, 2.0, -1.0, 5.0, 5.0, 5.0, -2.0, -2.0, -2.0, -3.0]);
        let out = eval("next_token", &Op::ArgMaxLast, &[Some(&x)]).unwrap();
        assert_eq!(out[0].shape, vec![3]);
        assert_eq!(out[0].data, vec![1.0, 1.0, 0.0]);
    }

    /// `next_token` as the exports compute it: ArgMaxLast, then -1 on every row holding a NaN,
    /// +inf or -inf (one or several, anywhere in the row), the argmax on every other row.
    #[test]
    fn the_pick_is_minus_one_exactly_on_rows_with_nan_or_infinity() {
        use rand::{Rng, SeedableRng};
        let (batch, positions, vocab) = (4, 6, 37);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut data: Vec<f64> = (0..batch * positions * vocab).map(|_| rng.gen_range(-8.0..8.0)).collect();
        let poisons = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
        let mut poisoned = vec![false; batch * positions];
        for (row, flag) in poisoned.iter_mut().enumerate() {
            // Two rows in three of each poison's turn: the others stay finite.
            if rng.gen_range(0..3) == 0 {
                continue;
            }
            *flag = true;
            for _ in 0..rng.gen_range(1..3) {
                data[row * vocab + rng.gen_range(0..vocab)] = poisons[row % poisons.len()];
            }
        }
        assert!(poisoned.iter().any(|&p| p) && poisoned.iter().any(|&p| !p), "the seed covers both kinds of row");
        let scores = Tensor64::new(vec![batch, positions, vocab], data.clone());
        let picks = eval("next_token.argmax", &Op::ArgMaxLast, &[Some(&scores)]).unwrap().remove(0);
        let out = eval("next_token", &Op::MinusOneWhereNonFinite, &[Some(&scores), Some(&picks)]).unwrap();
        let want: Vec<f64> = data
            .chunks(vocab)
            .zip(&poisoned)
            .map(|(row, &bad)| {
                let best = (0..vocab).fold(0, |m, i| if row[i] > row[m] { i } else { m });
                if bad {
                    -1.0
                } else {
                    best as f64
                }
            })
            .collect();
        assert_eq!(out[0], Tensor64::new(vec![batch, positions], want));
    }
}
