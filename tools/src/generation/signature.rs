//! What a stateful export looks like from the outside, read from the session's inputs and
//! outputs (never from the checkpoint: the ONNX file is all `generate` and `bench` get).

use anyhow::{bail, Result};
use ort::session::Session;
use ort::value::{TensorElementType, ValueType};

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
        let Some(ids) = find(inputs, "input_ids") else {
            bail!("the model has no input 'input_ids' (inputs: {}); is it a mambac export?", names(inputs));
        };
        if ids.ty != Some(TensorElementType::Int64) || ids.shape.len() != 2 {
            bail!("input 'input_ids' must be int64 [batch, seqlen], the model has {:?} {:?}", ids.ty, ids.shape);
        }
        let layers =
            inputs.iter().filter(|d| d.name.starts_with("conv_state.") || d.name.starts_with("ssm_state.")).count();
        if layers == 0 {
            bail!(
                "the model has no state inputs (conv_state.{{i}}, ssm_state.{{i}}), so it cannot carry a sequence from one step \
                 to the next: export it with `mambac export CHECKPOINT -o MODEL.onnx --stateful` (inputs: {})",
                names(inputs)
            );
        }
        if layers % 2 != 0 {
            bail!("the model's state inputs do not come in conv/ssm pairs (inputs: {})", names(inputs));
        }
        let layers = layers / 2;
        let mut states = Vec::with_capacity(2 * layers);
        for i in 0..layers {
            for kind in ["conv_state", "ssm_state"] {
                let input = format!("{kind}.{i}");
                let output = format!("{kind}_out.{i}");
                let Some(d) = find(inputs, &input) else {
                    bail!("the model has {layers} layers of state inputs but no '{input}' (inputs: {})", names(inputs));
                };
                let Some(o) = find(outputs, &output) else {
                    bail!(
                        "the model has a state input '{input}' but no output '{output}' (outputs: {})",
                        names(outputs)
                    );
                };
                let ty = match d.ty {
                    Some(
                        t @ (TensorElementType::Float32 | TensorElementType::Float16 | TensorElementType::Bfloat16),
                    ) => t,
                    t => bail!("state input '{input}' has element type {t:?}; expected float32, float16 or bfloat16"),
                };
                if d.shape.len() != 3 || d.shape[1..].iter().any(|&x| x <= 0) {
                    bail!("state input '{input}' must be [batch, channels, width] with static channels and width, the model has {:?}", d.shape);
                }
                if o.ty != d.ty || o.shape[1..] != d.shape[1..] {
                    bail!(
                        "state output '{output}' ({:?} {:?}) does not match its input '{input}' ({ty:?} {:?})",
                        o.ty,
                        o.shape,
                        d.shape
                    );
                }
                states.push(StateSpec { input, output, ty, dims: d.shape[1..].iter().map(|&x| x as usize).collect() });
            }
        }
        let Some(logits) = find(outputs, "logits") else {
            bail!("the model has no output 'logits' (outputs: {})", names(outputs));
        };
        let logits_ty = match logits.ty {
            Some(t @ (TensorElementType::Float32 | TensorElementType::Float16 | TensorElementType::Bfloat16)) => t,
            t => bail!("output 'logits' has element type {t:?}; expected float32, float16 or bfloat16"),
        };
        if logits.shape.len() != 3 {
            bail!("output 'logits' must be [batch, seqlen, vocab], the model has {:?}", logits.shape);
        }
        let vocab = (logits.shape[2] > 0).then_some(logits.shape[2] as usize);
        Ok(ModelSignature { layers, states, logits_ty, vocab })
    }

    /// Token ids must index the embedding (the check `mambac run` makes too).
    pub fn check_ids(&self, ids: &[i64], what: &str) -> Result<()> {
        crate::tensor_io::check_token_ids(ids, &[ids.len()], self.vocab, what)
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
}
