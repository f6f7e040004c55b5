//! What a stateful export looks like from the outside, read from the session's inputs and
//! outputs (never from the checkpoint: the ONNX file is all `generate` and `bench` get).

use mambac_op_schema::graph;
use ort::session::Session;
use ort::value::{TensorElementType, ValueType};

use crate::error::{fail, Result};

/// One graph input or output: name, element type, shape (-1 for a symbolic dimension).
#[derive(Debug, Clone, PartialEq)]
pub struct IoDesc {
    pub name: String,
    pub ty: Option<TensorElementType>,
    pub shape: Vec<i64>,
}

impl IoDesc {
    fn from_ort(name: &str, ty: &ValueType) -> IoDesc {
        match ty {
            ValueType::Tensor { ty, shape, .. } => {
                IoDesc { name: name.to_string(), ty: Some(*ty), shape: shape.iter().copied().collect() }
            }
            _ => IoDesc { name: name.to_string(), ty: None, shape: vec![] },
        }
    }
}

/// One recurrent state tensor: fed as `input`, read back from `output`, `[batch, dims...]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StateSpec {
    pub input: String,
    pub output: String,
    pub ty: TensorElementType,
    /// The dimensions after the batch dimension (static in every mambac export).
    pub dims: Vec<usize>,
}

impl StateSpec {
    pub fn shape(&self, batch: usize) -> Vec<usize> {
        std::iter::once(batch).chain(self.dims.iter().copied()).collect()
    }
}

/// The stateful interface: `input_ids`, `logits`, and per layer a conv and an SSM state.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSignature {
    pub layers: usize,
    /// `conv_state.0, ssm_state.0, conv_state.1, ...`: the order states are stored in.
    pub states: Vec<StateSpec>,
    pub logits_ty: TensorElementType,
    /// Size of the logits' last dimension when the graph states it (it always does for mambac).
    pub vocab: Option<usize>,
    /// Positions the logits hold when fixed (1 for `--logits last`), else one per input token.
    pub logits_positions: Option<usize>,
    /// The graph picks the greedy token itself (output `next_token`, int64 `[batch, positions]`,
    /// -1 where a row's logits are not finite; exports before it was added do not have it).
    pub next_token: bool,
}

/// `conv_state.3` -> ("conv_state", 3); with `output`, `conv_state_out.3` -> ("conv_state", 3).
fn state_layer(name: &str, output: bool) -> Option<(&'static str, usize)> {
    graph::STATE_KINDS.into_iter().find_map(|kind| {
        let rest = name.strip_prefix(kind)?;
        let rest = if output { rest.strip_prefix(graph::OUT_SUFFIX)? } else { rest };
        Some((kind, rest.strip_prefix('.')?.parse().ok()?))
    })
}

/// A state is `[batch, channels, width]` (Mamba-2's ssm state `[batch, heads, head_dim, dstate]`)
/// with every dim after the batch a fixed number: zero states of the right size are made from
/// them before the first step.
fn check_state_shape(what: &str, name: &str, shape: &[i64]) -> Result<()> {
    let ssm = state_layer(name, what.ends_with("output")).is_some_and(|(kind, _)| kind == "ssm_state");
    if shape.len() != 3 && !(ssm && shape.len() == 4) {
        let mamba2 = if ssm { " (Mamba-1) or [batch, heads, head_dim, dstate] (Mamba-2)" } else { "" };
        fail!(
            Signature,
            "{what} '{name}' has rank {} (shape {shape:?}); expected [batch, channels, width]{mamba2}",
            shape.len()
        );
    }
    if shape[1..].iter().any(|&x| x <= 0) {
        fail!(
            Signature,
            "{what} '{name}' has shape {shape:?}: channels and width must be fixed positive numbers, not symbolic"
        );
    }
    Ok(())
}

fn elem_bytes(t: TensorElementType) -> u128 {
    match t {
        TensorElementType::Float16 | TensorElementType::Bfloat16 => 2,
        _ => 4,
    }
}

impl ModelSignature {
    pub fn of_session(session: &Session) -> Result<ModelSignature> {
        let inputs: Vec<IoDesc> = session.inputs().iter().map(|o| IoDesc::from_ort(o.name(), o.dtype())).collect();
        let outputs: Vec<IoDesc> = session.outputs().iter().map(|o| IoDesc::from_ort(o.name(), o.dtype())).collect();
        ModelSignature::from_io(&inputs, &outputs)
    }

    pub fn from_io(inputs: &[IoDesc], outputs: &[IoDesc]) -> Result<ModelSignature> {
        let names = |v: &[IoDesc]| v.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ");
        let find = |v: &[IoDesc], n: &str| v.iter().find(|d| d.name == n).cloned();
        let Some(ids) = find(inputs, graph::INPUT_IDS) else {
            fail!(Signature, "the model has no input 'input_ids' (inputs: {}); is it a mambac export?", names(inputs));
        };
        if ids.ty != Some(TensorElementType::Int64) || ids.shape.len() != 2 {
            fail!(
                Signature,
                "input 'input_ids' must be int64 [batch, seqlen], the model has {:?} {:?}",
                ids.ty,
                ids.shape
            );
        }
        // Every input is fed on every step: one this code does not know would be left unbound.
        if let Some(other) = inputs.iter().find(|d| d.name != graph::INPUT_IDS && state_layer(&d.name, false).is_none())
        {
            fail!(
                Signature,
                "the model has an input '{}' that generation cannot feed (it feeds input_ids, conv_state.{{i}} and \
                 ssm_state.{{i}}; inputs: {})",
                other.name,
                names(inputs)
            );
        }
        let layers = inputs.iter().filter(|d| state_layer(&d.name, false).is_some()).count();
        if layers == 0 {
            fail!(
                Signature,
                "the model has no state inputs (conv_state.{{i}}, ssm_state.{{i}}), so it cannot carry a sequence from one step \
                 to the next: export it with `mambac export CHECKPOINT -o MODEL.onnx --stateful` (inputs: {})",
                names(inputs)
            );
        }
        if layers % 2 != 0 {
            fail!(Signature, "the model's state inputs do not come in conv/ssm pairs (inputs: {})", names(inputs));
        }
        let layers = layers / 2;
        // A state output whose input is missing would be computed and dropped: the next step
        // would start from zeros without a word.
        for o in outputs {
            if let Some((kind, i)) = state_layer(&o.name, true) {
                if i >= layers || find(inputs, &format!("{kind}.{i}")).is_none() {
                    fail!(
                        Signature,
                        "the model has a state output '{}' but no input '{kind}.{i}' to feed it back (inputs: {})",
                        o.name,
                        names(inputs)
                    );
                }
            }
        }
        let mut states = Vec::with_capacity(2 * layers);
        for i in 0..layers {
            for kind in graph::STATE_KINDS {
                let input = format!("{kind}.{i}");
                let output = format!("{kind}{}.{i}", graph::OUT_SUFFIX);
                let Some(d) = find(inputs, &input) else {
                    fail!(
                        Signature,
                        "the model has {layers} layers of state inputs but no '{input}' (inputs: {})",
                        names(inputs)
                    );
                };
                let Some(o) = find(outputs, &output) else {
                    fail!(
                        Signature,
                        "the model has a state input '{input}' but no output '{output}' (outputs: {})",
                        names(outputs)
                    );
                };
                let ty = match d.ty {
                    Some(
                        t @ (TensorElementType::Float32 | TensorElementType::Float16 | TensorElementType::Bfloat16),
                    ) => t,
                    t => fail!(
                        Signature,
                        "state input '{input}' has element type {t:?}; expected float32, float16 or bfloat16"
                    ),
                };
                check_state_shape("state input", &input, &d.shape)?;
                if o.ty.is_none() {
                    fail!(Signature, "state output '{output}' is not a tensor");
                }
                check_state_shape("state output", &output, &o.shape)?;
                if o.ty != d.ty || o.shape[1..] != d.shape[1..] {
                    fail!(
                        Signature,
                        "state output '{output}' ({:?} {:?}) does not match its input '{input}' ({ty:?} {:?})",
                        o.ty,
                        o.shape,
                        d.shape
                    );
                }
                states.push(StateSpec { input, output, ty, dims: d.shape[1..].iter().map(|&x| x as usize).collect() });
            }
        }
        let Some(logits) = find(outputs, graph::LOGITS) else {
            fail!(Signature, "the model has no output 'logits' (outputs: {})", names(outputs));
        };
        let logits_ty = match logits.ty {
            Some(t @ (TensorElementType::Float32 | TensorElementType::Float16 | TensorElementType::Bfloat16)) => t,
            t => fail!(Signature, "output 'logits' has element type {t:?}; expected float32, float16 or bfloat16"),
        };
        if logits.shape.len() != 3 {
            fail!(Signature, "output 'logits' must be [batch, seqlen, vocab], the model has {:?}", logits.shape);
        }
        let vocab = (logits.shape[2] > 0).then_some(logits.shape[2] as usize);
        let logits_positions = (logits.shape[1] > 0).then_some(logits.shape[1] as usize);
        let next_token = match find(outputs, graph::NEXT_TOKEN) {
            None => false,
            Some(d) if d.ty == Some(TensorElementType::Int64) && d.shape.len() == 2 => true,
            Some(d) => fail!(
                Signature,
                "output '{}' must be int64 [batch, positions], the model has {:?} {:?}",
                graph::NEXT_TOKEN,
                d.ty,
                d.shape
            ),
        };
        Ok(ModelSignature { layers, states, logits_ty, vocab, logits_positions, next_token })
    }

    /// Bytes of one sequence's states (all layers, one copy).
    pub fn state_bytes_per_sequence(&self) -> u128 {
        self.states
            .iter()
            .map(|s| s.dims.iter().fold(elem_bytes(s.ty), |n, &d| n.saturating_mul(d as u128)))
            .fold(0u128, u128::saturating_add)
    }

    /// Bytes of the logits a step of `batch` x `len` tokens returns (the graph's own output).
    pub fn logits_bytes(&self, batch: usize, len: usize) -> u128 {
        let positions = self.logits_positions.unwrap_or(len) as u128;
        let vocab = self.vocab.unwrap_or(0) as u128;
        (batch as u128).saturating_mul(positions).saturating_mul(vocab).saturating_mul(elem_bytes(self.logits_ty))
    }

    /// Token ids must index the embedding (the check `mambac run` makes too).
    pub fn check_ids(&self, ids: &[i64], what: &str) -> Result<()> {
        crate::tensor::check_token_ids(ids, &[ids.len()], self.vocab, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(name: &str, ty: TensorElementType, shape: &[i64]) -> IoDesc {
        IoDesc { name: name.into(), ty: Some(ty), shape: shape.to_vec() }
    }

    fn stateful(layers: usize) -> (Vec<IoDesc>, Vec<IoDesc>) {
        let f32t = TensorElementType::Float32;
        let mut inputs = vec![d("input_ids", TensorElementType::Int64, &[-1, -1])];
        let mut outputs = vec![d("logits", f32t, &[-1, -1, 1024])];
        for i in 0..layers {
            inputs.push(d(&format!("conv_state.{i}"), f32t, &[-1, 128, 3]));
            inputs.push(d(&format!("ssm_state.{i}"), f32t, &[-1, 128, 16]));
            outputs.push(d(&format!("conv_state_out.{i}"), f32t, &[-1, 128, 3]));
            outputs.push(d(&format!("ssm_state_out.{i}"), f32t, &[-1, 128, 16]));
        }
        (inputs, outputs)
    }

    #[test]
    fn reads_layers_shapes_and_vocab() {
        let (i, o) = stateful(3);
        let s = ModelSignature::from_io(&i, &o).unwrap();
        assert_eq!(s.layers, 3);
        assert_eq!(s.vocab, Some(1024));
        assert_eq!(s.states.len(), 6);
        assert_eq!(s.states[1].input, "ssm_state.0");
        assert_eq!(s.states[1].output, "ssm_state_out.0");
        assert_eq!(s.states[1].shape(8), vec![8, 128, 16]);
        assert_eq!(s.states[4].input, "conv_state.2");
    }

    #[test]
    fn reads_the_next_token_output_when_there_is_one() {
        let (i, mut o) = stateful(2);
        assert!(!ModelSignature::from_io(&i, &o).unwrap().next_token, "an export from before next_token");
        o.push(d("next_token", TensorElementType::Int64, &[-1, 1]));
        assert!(ModelSignature::from_io(&i, &o).unwrap().next_token);
        set_shape(&mut o, "next_token", &[-1]);
        assert_eq!(
            error(&i, &o),
            "output 'next_token' must be int64 [batch, positions], the model has Some(Int64) [-1]"
        );
        o.retain(|x| x.name != "next_token");
        o.push(d("next_token", TensorElementType::Float32, &[-1, 1]));
        assert_eq!(
            error(&i, &o),
            "output 'next_token' must be int64 [batch, positions], the model has Some(Float32) [-1, 1]"
        );
    }

    #[test]
    fn rejects_a_model_without_states() {
        let (i, o) = stateful(0);
        let e = ModelSignature::from_io(&i, &o).unwrap_err().to_string();
        assert!(e.contains("no state inputs") && e.contains("--stateful"), "{e}");
    }

    #[test]
    fn rejects_a_missing_state_output() {
        let (i, mut o) = stateful(2);
        o.retain(|x| x.name != "ssm_state_out.1");
        let e = ModelSignature::from_io(&i, &o).unwrap_err().to_string();
        assert!(e.contains("'ssm_state_out.1'"), "{e}");
    }

    #[test]
    fn checks_token_ids_against_the_vocabulary() {
        let (i, o) = stateful(1);
        let s = ModelSignature::from_io(&i, &o).unwrap();
        assert!(s.check_ids(&[0, 1023], "prompt 1").is_ok());
        let e = s.check_ids(&[5, 1024], "prompt 1").unwrap_err().to_string();
        assert!(e.contains("token id 1024") && e.contains("1024 entries") && e.starts_with("prompt 1"), "{e}");
        assert!(s.check_ids(&[-1], "prompt 2").is_err());
    }

    fn error(i: &[IoDesc], o: &[IoDesc]) -> String {
        ModelSignature::from_io(i, o).unwrap_err().to_string()
    }

    fn set_shape(v: &mut [IoDesc], name: &str, shape: &[i64]) {
        v.iter_mut().find(|x| x.name == name).unwrap().shape = shape.to_vec();
    }

    #[test]
    fn rejects_a_rank_0_state_output() {
        let (i, mut o) = stateful(2);
        set_shape(&mut o, "ssm_state_out.1", &[]);
        assert_eq!(
            error(&i, &o),
            "state output 'ssm_state_out.1' has rank 0 (shape []); expected [batch, channels, width] (Mamba-1) or \
             [batch, heads, head_dim, dstate] (Mamba-2)"
        );
    }

    /// Mamba-2's ssm state is `[batch, heads, head_dim, dstate]`; a conv state is never rank 4.
    #[test]
    fn takes_a_rank_4_ssm_state_only() {
        let (mut i, mut o) = stateful(1);
        set_shape(&mut i, "ssm_state.0", &[-1, 8, 16, 16]);
        set_shape(&mut o, "ssm_state_out.0", &[-1, 8, 16, 16]);
        let s = ModelSignature::from_io(&i, &o).unwrap();
        assert_eq!(s.states[1].shape(2), vec![2, 8, 16, 16]);
        set_shape(&mut i, "conv_state.0", &[-1, 160, 3, 1]);
        assert_eq!(
            error(&i, &o),
            "state input 'conv_state.0' has rank 4 (shape [-1, 160, 3, 1]); expected [batch, channels, width]"
        );
    }

    #[test]
    fn rejects_a_rank_0_state_input() {
        let (mut i, o) = stateful(1);
        set_shape(&mut i, "conv_state.0", &[]);
        assert_eq!(
            error(&i, &o),
            "state input 'conv_state.0' has rank 0 (shape []); expected [batch, channels, width]"
        );
    }

    #[test]
    fn rejects_symbolic_or_negative_state_dims() {
        for dims in [[-1i64, -1, 16], [-1, 128, -1], [-1, 128, 0], [-1, -7, 16]] {
            let (mut i, o) = stateful(1);
            set_shape(&mut i, "ssm_state.0", &dims);
            assert_eq!(
                error(&i, &o),
                format!(
                    "state input 'ssm_state.0' has shape {dims:?}: channels and width must be fixed positive numbers, not symbolic"
                )
            );
        }
        let (i, mut o) = stateful(1);
        set_shape(&mut o, "conv_state_out.0", &[-1, -1, 3]);
        assert!(error(&i, &o).starts_with("state output 'conv_state_out.0' has shape [-1, -1, 3]"));
    }

    #[test]
    fn rejects_a_state_output_that_is_not_a_tensor() {
        let (i, mut o) = stateful(1);
        o.iter_mut().find(|x| x.name == "ssm_state_out.0").unwrap().ty = None;
        assert_eq!(error(&i, &o), "state output 'ssm_state_out.0' is not a tensor");
    }

    #[test]
    fn rejects_a_state_output_without_its_input() {
        let (i, mut o) = stateful(2);
        o.push(d("conv_state_out.2", TensorElementType::Float32, &[-1, 128, 3]));
        let e = error(&i, &o);
        assert!(
            e.starts_with(
                "the model has a state output 'conv_state_out.2' but no input 'conv_state.2' to feed it back"
            ),
            "{e}"
        );
    }

    #[test]
    fn rejects_unpaired_state_inputs() {
        let (mut i, o) = stateful(2);
        i.retain(|x| x.name != "ssm_state.1");
        assert!(error(&i, &o).starts_with("the model's state inputs do not come in conv/ssm pairs"));
        let (mut i, mut o) = stateful(2);
        i.iter_mut().find(|x| x.name == "ssm_state.1").unwrap().name = "conv_state.7".into();
        let e = error(&i, &o);
        assert!(e.starts_with("the model has a state output 'ssm_state_out.1' but no input 'ssm_state.1'"), "{e}");
        o.retain(|x| x.name != "ssm_state_out.1");
        let e = error(&i, &o);
        assert!(e.starts_with("the model has 2 layers of state inputs but no 'ssm_state.1'"), "{e}");
    }

    #[test]
    fn rejects_an_input_it_cannot_feed() {
        let (mut i, o) = stateful(1);
        i.push(d("attention_mask", TensorElementType::Int64, &[-1, -1]));
        let e = error(&i, &o);
        assert!(e.starts_with("the model has an input 'attention_mask' that generation cannot feed"), "{e}");
        let (mut i, o) = stateful(1);
        i.push(d("conv_state.x", TensorElementType::Float32, &[-1, 128, 3]));
        assert!(error(&i, &o).starts_with("the model has an input 'conv_state.x' that generation cannot feed"));
    }

    #[test]
    fn rejects_a_missing_or_malformed_logits_output() {
        let (i, mut o) = stateful(1);
        o.retain(|x| x.name != "logits");
        assert!(
            error(&i, &o).starts_with("the model has no output 'logits' (outputs: conv_state_out.0, ssm_state_out.0)")
        );
        let (i, mut o) = stateful(1);
        set_shape(&mut o, "logits", &[]);
        assert_eq!(error(&i, &o), "output 'logits' must be [batch, seqlen, vocab], the model has []");
    }

    #[test]
    fn sizes_states_and_logits_without_overflow() {
        let (i, o) = stateful(3);
        let s = ModelSignature::from_io(&i, &o).unwrap();
        assert_eq!(s.state_bytes_per_sequence(), 3 * (128 * 3 + 128 * 16) * 4);
        assert_eq!(s.logits_bytes(2, 5), 2 * 5 * 1024 * 4);
        let (mut i, mut o) = stateful(1);
        set_shape(&mut i, "ssm_state.0", &[-1, i64::MAX, i64::MAX]);
        set_shape(&mut o, "ssm_state_out.0", &[-1, i64::MAX, i64::MAX]);
        let s = ModelSignature::from_io(&i, &o).unwrap();
        assert_eq!(s.state_bytes_per_sequence(), 4 * (i64::MAX as u128).pow(2) + 128 * 3 * 4);
        assert_eq!(s.logits_bytes(usize::MAX, usize::MAX), u128::MAX);
    }
}
