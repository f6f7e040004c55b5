//! The op grid `mambac conformance` runs: every op, every optional input and output, each
//! dtype, odd sizes, decode steps. Seeds are fixed, so a case is the same everywhere it runs.

use std::fmt;

use mambac_compiler::ir::Elem;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OpName {
    SelectiveScan,
    CausalConv1d,
    MambaLayerStep,
    Mamba2LayerStep,
}

/// Which optional inputs and outputs a case uses, and the op's flag attribute.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// SelectiveScan: D, z, delta_bias. CausalConv1d: bias. MambaLayerStep, Mamba2LayerStep:
    /// every optional input (in/out_proj biases, conv_bias, dt_bias, D).
    pub optional_inputs: bool,
    /// initial_state (MambaLayerStep always takes its states).
    pub initial_state: bool,
    /// final_state (MambaLayerStep always gives its states).
    pub final_state: bool,
    /// SelectiveScan: delta_softplus; CausalConv1d: activation "silu"; Mamba2LayerStep: a
    /// clamping time_step_limit (dt_min 0.01, dt_max 0.5).
    pub flag: bool,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub op: OpName,
    pub elem: Elem,
    /// SelectiveScan [batch, seqlen, dim, dstate, ngroups]; CausalConv1d [batch, seqlen, dim,
    /// width]; MambaLayerStep [batch, hidden, inner, dstate, dt_rank, width]; Mamba2LayerStep
    /// [batch, hidden, heads, head_dim, ngroups, dstate, width].
    pub dims: Vec<usize>,
    pub options: Options,
    pub seed: u64,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.dims.iter().map(usize::to_string).collect();
        let o = self.options;
        let flags = [(o.optional_inputs, "opt"), (o.initial_state, "init"), (o.final_state, "final"), (o.flag, "flag")];
        let on: Vec<&str> = flags.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
        let on = if on.is_empty() { "none".to_string() } else { on.join("+") };
        write!(f, "{:?} {} [{}] {on}", self.op, self.elem.name(), dims.join(","))
    }
}

const ALL: Options = Options { optional_inputs: true, initial_state: true, final_state: true, flag: true };
const NONE: Options = Options { optional_inputs: false, initial_state: false, final_state: false, flag: false };

/// Everything on, everything off, and each one off in turn.
fn option_sets() -> Vec<Options> {
    vec![
        ALL,
        NONE,
        Options { optional_inputs: false, ..ALL },
        Options { initial_state: false, ..ALL },
        Options { final_state: false, ..ALL },
        Options { flag: false, ..ALL },
    ]
}

pub fn cases(ops: &[OpName], elems: &[Elem]) -> Vec<Case> {
    let mut out = Vec::new();
    let mut push = |op: OpName, dims: &[usize], options: Options| {
        for &elem in elems {
            let seed = 1000 + out.len() as u64;
            out.push(Case { op, elem, dims: dims.to_vec(), options, seed });
        }
    };
    if ops.contains(&OpName::SelectiveScan) {
        // Odd sizes, groups, dstate 1 and past 16, a tile boundary crossed (seqlen 300), decode
        // steps (seqlen 1 and 2).
        for dims in [[2, 37, 24, 16, 1], [1, 300, 40, 16, 2], [3, 7, 5, 3, 1], [2, 1, 48, 16, 4], [1, 2, 8, 64, 1]] {
            push(OpName::SelectiveScan, &dims, ALL);
        }
        for options in option_sets().into_iter().skip(1) {
            push(OpName::SelectiveScan, &[2, 65, 36, 16, 3], options);
        }
    }
    if ops.contains(&OpName::CausalConv1d) {
        for dims in [[2, 37, 24, 4], [1, 300, 40, 3], [3, 7, 5, 2], [2, 1, 48, 4], [1, 9, 16, 1], [2, 5, 13, 6]] {
            push(OpName::CausalConv1d, &dims, ALL);
        }
        for options in option_sets().into_iter().skip(1) {
            push(OpName::CausalConv1d, &[2, 33, 20, 4], options);
        }
    }
    if ops.contains(&OpName::MambaLayerStep) {
        for dims in [[2, 16, 32, 4, 2, 4], [3, 40, 80, 8, 5, 3], [1, 24, 48, 16, 3, 1], [5, 64, 128, 16, 4, 4]] {
            push(OpName::MambaLayerStep, &dims, ALL);
        }
        push(OpName::MambaLayerStep, &[2, 24, 48, 4, 2, 2], Options { optional_inputs: false, ..ALL });
    }
    if ops.contains(&OpName::Mamba2LayerStep) {
        // One group, two (heads sharing B and C), an odd three, one a head with width 1.
        for dims in [[2, 32, 4, 16, 1, 16, 4], [3, 48, 8, 8, 2, 8, 4], [1, 40, 6, 4, 3, 5, 3], [2, 24, 4, 8, 4, 4, 1]] {
            push(OpName::Mamba2LayerStep, &dims, ALL);
        }
        push(
            OpName::Mamba2LayerStep,
            &[2, 32, 4, 16, 2, 16, 4],
            Options { optional_inputs: false, flag: false, ..ALL },
        );
    }
    out
}
