//! Mamba2LayerStep's C++ shape check (cpp/shape_check.cpp, through the kernel ABI): the sizes it
//! returns for valid inputs (ngroups derived from the states), and the exact message for each way
//! an input can be wrong.

use mambac_ops::ffi::{check_mamba2_layer_step, check_mamba2_layer_step_cuda_limits, ElemType, TensorDesc};

const F32: i32 = 1;
const I64: i32 = 7;
const F16: i32 = 10;
const B: i64 = 2;
const H: i64 = 8;
const HEADS: i64 = 4;
const P: i64 = 4;
const G: i64 = 2;
const N: i64 = 4;
const K: i64 = 4;
const I: i64 = HEADS * P;
const CONV: i64 = I + 2 * G * N;
const IN: i64 = I + CONV + HEADS;

/// Valid inputs in slot order, T = `t`, every optional input present.
fn good(t: i32) -> Vec<TensorDesc> {
    vec![
        TensorDesc::new(t, &[B, CONV, K - 1]),   // conv_state
        TensorDesc::new(F32, &[B, HEADS, P, N]), // ssm_state
        TensorDesc::new(F32, &[B, 1, H]),        // residual
        TensorDesc::new(F32, &[H]),              // norm_weight
        TensorDesc::new(t, &[H, IN]),            // in_proj_weight
        TensorDesc::new(t, &[IN]),               // in_proj_bias
        TensorDesc::new(t, &[CONV, K]),          // conv_weight
        TensorDesc::new(t, &[CONV]),             // conv_bias
        TensorDesc::new(F32, &[HEADS]),          // dt_bias
        TensorDesc::new(F32, &[HEADS]),          // A
        TensorDesc::new(F32, &[HEADS]),          // D
        TensorDesc::new(F32, &[I]),              // gate_norm_weight
        TensorDesc::new(t, &[I, H]),             // out_proj_weight
        TensorDesc::new(t, &[H]),                // out_proj_bias
    ]
}

fn error(inputs: &[TensorDesc]) -> String {
    match check_mamba2_layer_step(inputs) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e.what().to_string(),
    }
}

#[test]
fn valid_inputs_give_the_sizes() {
    let p = check_mamba2_layer_step(&good(F16)).unwrap();
    let sizes = [p.batch, p.hidden, p.heads, p.head_dim, p.ngroups, p.dstate, p.width];
    assert_eq!(sizes, [2, 8, 4, 4, 2, 4, 4]);
    assert_eq!(p.elem, ElemType::F16);
    // One group a head, width 1 (no conv state), optional inputs absent, an empty batch.
    let mut inputs = good(F32);
    for slot in [5, 7, 8, 10, 13] {
        inputs[slot] = TensorDesc::absent();
    }
    let conv = I + 2 * HEADS * N;
    inputs[0] = TensorDesc::new(F32, &[0, conv, 0]);
    inputs[1] = TensorDesc::new(F32, &[0, HEADS, P, N]);
    inputs[2] = TensorDesc::new(F32, &[0, 1, H]);
    inputs[4] = TensorDesc::new(F32, &[H, I + conv + HEADS]);
    inputs[6] = TensorDesc::new(F32, &[conv, 1]);
    let p = check_mamba2_layer_step(&inputs).unwrap();
    assert_eq!((p.batch, p.ngroups, p.width, p.elem), (0, 4, 1, ElemType::F32));
}

#[test]
fn each_broken_input_is_named() {
    let cases: Vec<(usize, TensorDesc, &str)> = vec![
        (
            0,
            TensorDesc::new(I64, &[B, CONV, K - 1]),
            "input 'conv_state' has element type int64, expected float32, float16 or bfloat16",
        ),
        (
            0,
            TensorDesc::new(F16, &[B, CONV]),
            "input 'conv_state' has shape [2, 32], expected [batch, conv_dim, width - 1]",
        ),
        (
            0,
            TensorDesc::new(F16, &[0, 1 << 31, K - 1]),
            "input 'conv_state' gives conv_dim = 2147483648, more than 2^31 - 1",
        ),
        (
            0,
            TensorDesc::new(F16, &[B, CONV + 2, K - 1]),
            "input 'conv_state' has shape [2, 34, 3], expected [2, conv_dim, 3] with conv_dim = 16 + 2 * ngroups * 4 \
             and ngroups dividing heads 4 (inner and dstate from 'ssm_state')",
        ),
        (
            0,
            TensorDesc::new(F16, &[B, I, K - 1]),
            "input 'conv_state' has shape [2, 16, 3], expected [2, conv_dim, 3] with conv_dim = 16 + 2 * ngroups * 4 \
             and ngroups dividing heads 4 (inner and dstate from 'ssm_state')",
        ),
        (1, TensorDesc::new(F16, &[B, HEADS, P, N]), "input 'ssm_state' has element type float16, expected float32"),
        (
            1,
            TensorDesc::new(F32, &[B, I, N]),
            "input 'ssm_state' has shape [2, 16, 4], expected [2, heads, head_dim, dstate] (batch from 'conv_state')",
        ),
        (
            1,
            TensorDesc::new(F32, &[B, HEADS, 0, N]),
            "input 'ssm_state' has shape [2, 4, 0, 4], expected [2, heads, head_dim, dstate] with heads, head_dim and \
             dstate >= 1",
        ),
        (
            1,
            TensorDesc::new(F32, &[B, 1 << 16, 1 << 16, N]),
            "input 'ssm_state' gives inner = heads * head_dim = 4294967296, more than 2^31 - 1",
        ),
        (
            2,
            TensorDesc::new(F32, &[B, 2, H]),
            "input 'residual' has shape [2, 2, 8], expected [2, 1, hidden] (one token a sequence; batch from \
             'conv_state')",
        ),
        (
            2,
            TensorDesc::new(F32, &[B, 1, 0]),
            "input 'residual' has shape [2, 1, 0], expected [2, 1, hidden] with hidden >= 1",
        ),
        (3, TensorDesc::new(F16, &[H]), "input 'norm_weight' has element type float16, expected float32"),
        (
            4,
            TensorDesc::new(F16, &[H, 2 * I]),
            "input 'in_proj_weight' has shape [8, 32], expected [8, 52] (inner + conv_dim + heads = 16 + 32 + 4)",
        ),
        (
            4,
            TensorDesc::new(F32, &[H, IN]),
            "input 'in_proj_weight' has element type float32, expected float16 (same as 'conv_state')",
        ),
        (
            5,
            TensorDesc::new(F16, &[IN - 1]),
            "input 'in_proj_bias' has shape [51], expected [52] (inner + conv_dim + heads = 16 + 32 + 4)",
        ),
        (
            6,
            TensorDesc::new(F16, &[CONV, K + 1]),
            "input 'conv_weight' has shape [32, 5], expected [32, 4] ([conv_dim, width] from 'conv_state')",
        ),
        (7, TensorDesc::new(F16, &[I]), "input 'conv_bias' has shape [16], expected [32] (conv_dim from 'conv_state')"),
        (8, TensorDesc::new(F32, &[I]), "input 'dt_bias' has shape [16], expected [4] (heads from 'ssm_state')"),
        (9, TensorDesc::absent(), "required input 'A' is missing"),
        (10, TensorDesc::new(F16, &[HEADS]), "input 'D' has element type float16, expected float32"),
        (
            11,
            TensorDesc::new(F32, &[CONV]),
            "input 'gate_norm_weight' has shape [32], expected [16] (inner = heads * head_dim from 'ssm_state')",
        ),
        (
            12,
            TensorDesc::new(F16, &[H, I]),
            "input 'out_proj_weight' has shape [8, 16], expected [16, 8] ([inner, hidden])",
        ),
        (13, TensorDesc::new(F16, &[I]), "input 'out_proj_bias' has shape [16], expected [8] (hidden from 'residual')"),
    ];
    for (slot, desc, message) in cases {
        let mut inputs = good(F16);
        inputs[slot] = desc;
        assert_eq!(error(&inputs), format!("Mamba2LayerStep: {message}"), "slot {slot}");
    }
    assert_eq!(error(&good(F16)[..13]), "Mamba2LayerStep: 14 input slots expected, got 13");
}

/// The CUDA decode layer's own limit: the largest batch it takes passes, one more is refused.
#[test]
fn cuda_limits_take_the_largest_batch_and_refuse_one_more() {
    let p = check_mamba2_layer_step(&good(F16)).expect("valid inputs");
    let limits = |batch: usize| {
        let mut q = p;
        q.batch = batch;
        check_mamba2_layer_step_cuda_limits(&q).map_err(|e| e.what().to_string())
    };
    assert_eq!(limits(65535), Ok(()));
    assert_eq!(
        limits(65536),
        Err("Mamba2LayerStep: batch 65536 is more than the CUDA kernels take (65535)".to_string())
    );
}
