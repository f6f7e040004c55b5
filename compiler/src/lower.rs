//! Lowering: a checkpoint becomes an IR graph of unfused primitive ops (one Mamba-1 block per
//! layer, as in the paper and Hugging Face's `MambaMixer.slow_forward`; Mamba-2 blocks in
//! `lower/mamba2.rs`). The fusion passes then
//! fold the primitives into `CausalConv1d` and `SelectiveScan`.
//!
//! Per layer, with `v = RMSNorm(h)`:
//!
//! ```text
//! x, z  = split(in_proj(v))                          [B, L, I] each
//! x     = SiLU(CausalConv1d(x, w) + b)               depthwise, left-padded by K-1
//! dt, B, C = split(x_proj(x))                        [R], [N], [N]
//! delta = softplus(dt_proj.weight @ dt + dt_proj.bias)
//! y     = (Scan(x, delta, A = -exp(A_log), B, C) + D * x) * SiLU(z)
//! h     = h + out_proj(y)
//! ```

mod mamba2;

use crate::checkpoint::{Checkpoint, MambaConfig};
use crate::ir::{
    BlockQuant, CausalConv1dConfig, ConstSource, ConstTensor, ConstTransform, Dim, Elem, Graph, MatMulNBitsConfig,
    NodeId, Op, SelectiveScanConfig, ValueRef, ValueType,
};

/// What the lowered graph looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowerOptions {
    /// Element type of activations and weights (the ops' `T`). A, D, dt bias and states stay f32.
    pub dtype: Elem,
    /// Per-layer conv/ssm state inputs and outputs (docs/op-contract.md "The exported model's interface").
    pub stateful: bool,
    /// Which positions get logits.
    pub logits: LogitsOutput,
    /// Linear layers (in/x/dt/out_proj, lm_head) as block-quantized `MatMulNBits`; None = `MatMul`
    /// with weights in `dtype`.
    pub quant: Option<WeightQuant>,
    /// The decode lowering: seqlen fixed to 1 (one token a sequence), which lets
    /// `fuse_layer_step` fold each layer into one `MambaLayerStep` (docs/decode-graph.md).
    /// Meaningful with `stateful`.
    pub decode_step: bool,
    /// What the fused layers become: mambac's custom ops, or opset 27's standard ops
    /// (`pipeline::compile` runs the standard rules after the fusion rules).
    pub ops: OpSet,
}

/// `--ops`: the op set of the exported layers (docs/standard-onnx.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpSet {
    /// `mambac.CausalConv1d` and `mambac.SelectiveScan`: needs libmambac_ops.
    #[default]
    Mambac,
    /// Opset 27's `CausalConvWithState` and `LinearAttention`: any runtime with opset 27.
    Standard,
}

impl OpSet {
    pub fn name(self) -> &'static str {
        match self {
            OpSet::Mambac => "mambac",
            OpSet::Standard => "standard",
        }
    }
}

/// `--quantize`: how the linear layers' weights are stored and multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightQuant {
    pub quant: BlockQuant,
    /// ORT's `accuracy_level` (see [`MatMulNBitsConfig`]).
    pub accuracy_level: i64,
}

/// Logits for every position (scoring, the default) or the last one only (generation: the
/// lm_head is then applied to one position, a quarter of a 130m model's prefill saved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogitsOutput {
    #[default]
    All,
    Last,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions {
            dtype: Elem::F32,
            stateful: false,
            logits: LogitsOutput::All,
            quant: None,
            decode_step: false,
            ops: OpSet::Mambac,
        }
    }
}

/// Names of the graph's inputs and outputs (docs/op-contract.md "The exported model's interface").
pub mod names {
    use mambac_op_schema::graph::{CONV_STATE, OUT_SUFFIX, SSM_STATE};
    pub use mambac_op_schema::graph::{INPUT_IDS, LOGITS, NEXT_TOKEN};

    pub fn conv_state(i: usize) -> String {
        format!("{CONV_STATE}.{i}")
    }
    pub fn ssm_state(i: usize) -> String {
        format!("{SSM_STATE}.{i}")
    }
    pub fn conv_state_out(i: usize) -> String {
        format!("{CONV_STATE}{OUT_SUFFIX}.{i}")
    }
    pub fn ssm_state_out(i: usize) -> String {
        format!("{SSM_STATE}{OUT_SUFFIX}.{i}")
    }
}

struct Lowerer<'c> {
    g: Graph,
    cfg: &'c MambaConfig,
    opts: LowerOptions,
    /// Per-layer state outputs, added after `logits` so it stays the first output.
    state_outputs: Vec<(String, ValueRef)>,
}

pub fn lower(ckpt: &Checkpoint, opts: LowerOptions) -> Graph {
    lower_config(&ckpt.config, opts)
}

/// Lowers from the config alone: weights are referenced by checkpoint tensor name and read at
/// emission or interpretation time (the reader has already checked every shape).
pub fn lower_config(cfg: &MambaConfig, opts: LowerOptions) -> Graph {
    let mut l = Lowerer { g: Graph::new(), cfg, opts, state_outputs: Vec::new() };
    l.model();
    l.g
}

impl Lowerer<'_> {
    fn t(&self) -> Elem {
        self.opts.dtype
    }

    /// Half exports keep the residual stream (and RMSNorm's arithmetic) in float32, as Hugging
    /// Face's `residual_in_fp32` does: fp16 would overflow on real checkpoints.
    fn stream(&self) -> Elem {
        Elem::F32
    }

    fn weight(&mut self, tensor: &str, shape: &[usize], elem: Elem, transform: ConstTransform) -> ValueRef {
        let name = match transform {
            ConstTransform::Transpose2d => format!("{tensor}.T"),
            ConstTransform::QuantValues(q, _) => format!("{tensor}.q{}", q.bits),
            ConstTransform::QuantScales(_) => format!("{tensor}.scales"),
            _ => tensor.to_string(),
        };
        let c = ConstTensor {
            name: name.clone(),
            shape: shape.to_vec(),
            elem,
            source: ConstSource::Checkpoint { tensor: tensor.to_string(), transform, map: vec![] },
        };
        self.g.add_op(name, Op::Const(c), &[]).into()
    }

    fn op(&mut self, name: String, op: Op, inputs: &[ValueRef]) -> ValueRef {
        self.g.add_op(name, op, inputs).into()
    }

    fn cast(&mut self, name: String, x: ValueRef, from: Elem, to: Elem) -> ValueRef {
        if from == to {
            x
        } else {
            self.op(name, Op::Cast { to }, &[x])
        }
    }

    /// `x @ W^T (+ b)` for a `torch.nn.Linear` stored as `weight [out, in]`.
    fn linear(&mut self, prefix: &str, x: ValueRef, d_in: usize, d_out: usize, bias: bool) -> ValueRef {
        let y = self.matmul_weight(prefix.to_string(), x, &format!("{prefix}.weight"), d_in, d_out);
        if !bias {
            return y;
        }
        let b = self.weight(&format!("{prefix}.bias"), &[d_out], self.t(), ConstTransform::AsStored);
        self.op(format!("{prefix}.add_bias"), Op::Add, &[y, b])
    }

    /// `x @ W^T` with W the checkpoint tensor `tensor` `[d_out, d_in]`: a `MatMul` with W^T
    /// stored `[d_in, d_out]`, or under `--quantize` a `MatMulNBits` reading W's blocks.
    fn matmul_weight(&mut self, name: String, x: ValueRef, tensor: &str, d_in: usize, d_out: usize) -> ValueRef {
        match self.opts.quant {
            None => {
                let w = self.weight(tensor, &[d_in, d_out], self.t(), ConstTransform::Transpose2d);
                self.op(name, Op::MatMul, &[x, w])
            }
            Some(wq) => {
                let q = wq.quant;
                let blocks = q.blocks(d_in);
                let values = self.weight(
                    tensor,
                    &[d_out, blocks, q.blob_bytes()],
                    Elem::U8,
                    ConstTransform::QuantValues(q, self.t()),
                );
                let scales = self.weight(tensor, &[d_out * blocks], self.t(), ConstTransform::QuantScales(q));
                let cfg = MatMulNBitsConfig { k: d_in, n: d_out, quant: q, accuracy_level: wq.accuracy_level };
                self.op(name, Op::MatMulNBits(cfg), &[x, values, scales])
            }
        }
    }

    fn input(&mut self, name: String, ty: ValueType) -> ValueRef {
        self.g.add_op(name.clone(), Op::Input { name, ty }, &[]).into()
    }

    fn model(&mut self) {
        let cfg = self.cfg;
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let batch = Dim::sym("batch");
        let seqlen = if self.opts.decode_step { Dim::Known(1) } else { Dim::sym("seqlen") };
        let ids = self.input(names::INPUT_IDS.into(), ValueType::new(Elem::I64, vec![batch, seqlen]));

        let emb_name = "backbone.embeddings.weight";
        let lm_head_tensor = if cfg.tie_word_embeddings { emb_name } else { "lm_head.weight" };
        let (embedded, lm_head_w) = if self.opts.quant.is_some() {
            // The lm_head reads its own quantized copy of its weight; the lookup keeps E [V, H]
            // in `T` (one row a token is read, so its size costs no bandwidth).
            let e = self.weight(emb_name, &[v, h], self.t(), ConstTransform::AsStored);
            (self.op("embeddings".into(), Op::Gather { axis: 0 }, &[e, ids]), None)
        } else if cfg.tie_word_embeddings {
            // One initializer for both uses: E^T [H, V] serves lm_head's MatMul directly, and
            // the embedding lookup gathers its columns (axis 1) then moves H last.
            let et = self.weight(emb_name, &[h, v], self.t(), ConstTransform::Transpose2d);
            let cols = self.op("embeddings".into(), Op::Gather { axis: 1 }, &[et, ids]);
            let e = self.op("embeddings.to_token_major".into(), Op::Transpose { perm: vec![1, 2, 0] }, &[cols]);
            (e, Some(et))
        } else {
            let e = self.weight(emb_name, &[v, h], self.t(), ConstTransform::AsStored);
            let x = self.op("embeddings".into(), Op::Gather { axis: 0 }, &[e, ids]);
            let w = self.weight("lm_head.weight", &[h, v], self.t(), ConstTransform::Transpose2d);
            (x, Some(w))
        };
        let mut hidden = self.cast("embeddings.to_stream".into(), embedded, self.t(), self.stream());
        for i in 0..cfg.num_hidden_layers {
            hidden = match &cfg.mamba2 {
                Some(m2) => self.layer_mamba2(i, hidden, m2),
                None => self.layer(i, hidden),
            };
        }
        // One position is the last one: the decode lowering needs no slice.
        if self.opts.logits == LogitsOutput::Last && !self.opts.decode_step {
            // Before the norm: it is per position, so only the last one needs it.
            hidden = self.op("last_position".into(), Op::LastPosition, &[hidden]);
        }
        let normed = self.rms_norm("backbone.norm_f", hidden);
        let logits = match lm_head_w {
            Some(w) => self.op("lm_head".into(), Op::MatMul, &[normed, w]),
            None => self.matmul_weight("lm_head".into(), normed, lm_head_tensor, h, v),
        };
        self.g.add_output(names::LOGITS, logits);
        // The greedy pick in the graph: a decode loop reads [batch] ids instead of copying
        // [batch, vocab] logits to the host (at batch 64 of a 50k vocabulary, converting and
        // scanning those on the host took longer than the step on the GPU). ArgMax reads
        // float32: ORT's CPU EP has no 16-bit ArgMax, its CUDA EP none for bfloat16.
        // A row of NaN or infinite logits (a broken checkpoint, float16 overflow) picks -1, not
        // ArgMax's arbitrary index: the runtime reports it instead of generating from it.
        let scores = self.cast("next_token.to_float".into(), logits, self.t(), Elem::F32);
        let picks = self.op("next_token.argmax".into(), Op::ArgMaxLast, &[scores]);
        let next = self.op(names::NEXT_TOKEN.into(), Op::MinusOneWhereNonFinite, &[scores, picks]);
        self.g.add_output(names::NEXT_TOKEN, next);
        for (name, v) in std::mem::take(&mut self.state_outputs) {
            self.g.add_output(name, v);
        }
    }

    /// RMSNorm of the float32 stream, weight included, then cast to `T`. Keeping the weight in
    /// float32 too means ORT's fusion of the pattern (SimplifiedLayerNormalization) sees one
    /// type: its CUDA kernel has no float32-input, bfloat16-weight variant.
    fn rms_norm(&mut self, prefix: &str, x: ValueRef) -> ValueRef {
        let w =
            self.weight(&format!("{prefix}.weight"), &[self.cfg.hidden_size], self.stream(), ConstTransform::AsStored);
        let normed = self.op(prefix.to_string(), Op::RmsNorm { eps: self.cfg.layer_norm_epsilon }, &[x, w]);
        self.cast(format!("{prefix}.to_t"), normed, self.stream(), self.t())
    }

    fn layer(&mut self, i: usize, residual: ValueRef) -> ValueRef {
        let cfg = self.cfg;
        let p = format!("backbone.layers.{i}");
        let m = format!("{p}.mixer");
        let (hid, inter, n, r) = (cfg.hidden_size, cfg.intermediate_size, cfg.state_size, cfg.time_step_rank);
        let t = self.t();

        let v = self.rms_norm(&format!("{p}.norm"), residual);
        let xz = self.linear(&format!("{m}.in_proj"), v, hid, 2 * inter, cfg.use_bias);
        let split = self.g.add_op(format!("{m}.split_xz"), Op::SplitLast { sizes: vec![inter, inter] }, &[xz]);
        let (x, z) = (ValueRef { node: split, output: 0 }, ValueRef { node: split, output: 1 });

        let xc = self.causal_conv(i, &m, x, inter);

        let dbc = self.linear(&format!("{m}.x_proj"), xc, inter, r + 2 * n, false);
        let split = self.g.add_op(format!("{m}.split_dt_b_c"), Op::SplitLast { sizes: vec![r, n, n] }, &[dbc]);
        let dt_low = ValueRef { node: split, output: 0 };
        let b = self.unsqueeze_group(format!("{m}.B"), ValueRef { node: split, output: 1 });
        let c = self.unsqueeze_group(format!("{m}.C"), ValueRef { node: split, output: 2 });
        // dt_proj's weight only: its bias is the scan's delta_bias once fused.
        let dt = self.linear(&format!("{m}.dt_proj"), dt_low, r, inter, false);
        let dt_bias = self.weight(&format!("{m}.dt_proj.bias"), &[inter], t, ConstTransform::AsStored);
        let dt = self.op(format!("{m}.dt_proj.add_bias"), Op::Add, &[dt, dt_bias]);
        let delta = self.op(format!("{m}.dt_softplus"), Op::Softplus, &[dt]);

        let a_log = self.weight(&format!("{m}.A_log"), &[inter, n], Elem::F32, ConstTransform::AsStored);
        let a = self.op(format!("{m}.A_log.exp"), Op::Exp, &[a_log]);
        let a = self.op(format!("{m}.A"), Op::Neg, &[a]);

        let ssm_state = self.opts.stateful.then(|| {
            let ty = ValueType::new(Elem::F32, vec![Dim::sym("batch"), Dim::Known(inter), Dim::Known(n)]);
            self.input(names::ssm_state(i), ty)
        });
        let scan = self.g.add(
            format!("{m}.scan"),
            Op::SelectiveScan(SelectiveScanConfig {
                delta_softplus: false,
                final_state: self.opts.stateful,
                slices: Default::default(),
            }),
            &[Some(xc), Some(delta), Some(a), Some(b), Some(c), None, None, None, ssm_state],
        );
        if self.opts.stateful {
            self.state_outputs.push((names::ssm_state_out(i), ValueRef { node: scan, output: 1 }));
        }
        let d = self.weight(&format!("{m}.D"), &[inter], t, ConstTransform::AsStored);
        let du = self.op(format!("{m}.D_skip"), Op::Mul, &[xc, d]);
        let y = self.op(format!("{m}.add_D_skip"), Op::Add, &[scan.into(), du]);
        let gate = self.op(format!("{m}.z_silu"), Op::Silu, &[z]);
        let y = self.op(format!("{m}.gate"), Op::Mul, &[y, gate]);
        let out = self.linear(&format!("{m}.out_proj"), y, inter, hid, cfg.use_bias);
        let out = self.cast(format!("{m}.out_to_stream"), out, t, self.stream());
        self.op(format!("{p}.residual"), Op::Add, &[residual, out])
    }

    /// `SiLU(CausalConv1d(x) + bias)` over `channels` channels of layer `i` (mixer prefix `m`),
    /// unfused: bias and SiLU are separate ops the passes absorb. Stateful, it reads
    /// `conv_state.{i}` and yields `conv_state_out.{i}`.
    fn causal_conv(&mut self, i: usize, m: &str, x: ValueRef, channels: usize) -> ValueRef {
        let (k, t) = (self.cfg.conv_kernel, self.t());
        let conv_w = self.weight(&format!("{m}.conv1d.weight"), &[channels, k], t, ConstTransform::Reshape);
        let conv_state = self.opts.stateful.then(|| {
            let ty = ValueType::new(t, vec![Dim::sym("batch"), Dim::Known(channels), Dim::Known(k - 1)]);
            self.input(names::conv_state(i), ty)
        });
        let conv = self.g.add(
            format!("{m}.conv1d"),
            Op::CausalConv1d(CausalConv1dConfig {
                silu: false,
                final_state: self.opts.stateful,
                slices: Default::default(),
            }),
            &[Some(x), Some(conv_w), None, conv_state],
        );
        if self.opts.stateful {
            self.state_outputs.push((names::conv_state_out(i), ValueRef { node: conv, output: 1 }));
        }
        let mut xc: ValueRef = conv.into();
        if self.cfg.use_conv_bias {
            let b = self.weight(&format!("{m}.conv1d.bias"), &[channels], t, ConstTransform::AsStored);
            xc = self.op(format!("{m}.conv1d.add_bias"), Op::Add, &[xc, b]);
        }
        self.op(format!("{m}.conv1d.silu"), Op::Silu, &[xc])
    }

    /// `[B, L, N]` -> `[B, L, 1, N]`: Mamba-1 has one group of B and C.
    fn unsqueeze_group(&mut self, name: String, x: ValueRef) -> ValueRef {
        self.op(name, Op::Unsqueeze { axis: 2 }, &[x])
    }
}

/// The node ids of every op of the given kind (for tests and `inspect`).
pub fn nodes_of_kind(g: &Graph, kind: &str) -> Vec<NodeId> {
    g.node_ids().into_iter().filter(|&n| g.op(n).kind() == kind).collect()
}
