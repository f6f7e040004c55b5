//! MambaLayerStep's C++ shape check (cpp/shape_check.cpp, through the kernel ABI): the sizes it
//! returns for valid inputs, and the exact message for each way an input can be wrong.

use mambac_ops::ffi::{check_mamba_layer_step, check_mamba_layer_step_cuda_limits, ElemType, TensorDesc};

const F32: i32 = 1;
const I64: i32 = 7;
const F16: i32 = 10;
const B: i64 = 2;
const H: i64 = 8;
const I: i64 = 16;
const N: i64 = 4;
const R: i64 = 2;
const K: i64 = 4;

/// Valid inputs in slot order, T = `t`, every optional input present.
fn good(t: i32) -> Vec<TensorDesc> {
    vec![
        TensorDesc::new(t, &[B, I, K - 1]),  // conv_state
        TensorDesc::new(F32, &[B, I, N]),    // ssm_state
        TensorDesc::new(F32, &[B, 1, H]),    // residual
        TensorDesc::new(F32, &[H]),          // norm_weight
        TensorDesc::new(t, &[H, 2 * I]),     // in_proj_weight
        TensorDesc::new(t, &[2 * I]),        // in_proj_bias
        TensorDesc::new(t, &[I, K]),         // conv_weight
        TensorDesc::new(t, &[I]),            // conv_bias
        TensorDesc::new(t, &[I, R + 2 * N]), // x_proj_weight
        TensorDesc::new(t, &[R, I]),         // dt_proj_weight
        TensorDesc::new(F32, &[I]),          // dt_bias
        TensorDesc::new(F32, &[I, N]),       // A
        TensorDesc::new(F32, &[I]),          // D
        TensorDesc::new(t, &[I, H]),         // out_proj_weight
        TensorDesc::new(t, &[H]),            // out_proj_bias
    ]
}

fn error(inputs: &[TensorDesc]) -> String {
    match check_mamba_layer_step(inputs) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e.what().to_string(),
    }
}

#[test]
fn valid_inputs_give_the_sizes() {
    let p = check_mamba_layer_step(&good(F16)).unwrap();
    let sizes = [p.batch, p.hidden, p.inner, p.dstate, p.dt_rank, p.width];
    assert_eq!(sizes, [2, 8, 16, 4, 2, 4]);
    assert_eq!(p.elem, ElemType::F16);
    // Optional inputs may be absent; an empty batch is valid.
    let mut inputs = good(F32);
    for slot in [5, 7, 10, 12, 14] {
        inputs[slot] = TensorDesc::absent();
    }
    inputs[0] = TensorDesc::new(F32, &[0, I, K - 1]);
    inputs[1] = TensorDesc::new(F32, &[0, I, N]);
    inputs[2] = TensorDesc::new(F32, &[0, 1, H]);
    let p = check_mamba_layer_step(&inputs).unwrap();
    assert_eq!((p.batch, p.elem), (0, ElemType::F32));
}

#[test]
fn each_broken_input_is_named() {
    let cases: Vec<(usize, TensorDesc, &str)> = vec![
        (
            0,
            TensorDesc::new(I64, &[B, I, K - 1]),
            "input 'conv_state' has element type int64, expected float32, float16 or bfloat16",
        ),
        (
            0,
            TensorDesc::new(F32, &[B, 0, K - 1]),
            "input 'conv_state' has shape [2, 0, 3], expected [batch, inner, width - 1] with inner >= 1",
        ),
        (
            0,
            TensorDesc::new(F32, &[0, 1 << 31, K - 1]),
            "input 'conv_state' gives inner = 2147483648, more than 2^31 - 1",
        ),
        (
            1,
            TensorDesc::new(F32, &[B, I, 0]),
            "input 'ssm_state' has shape [2, 16, 0], expected [2, 16, dstate] with dstate >= 1",
        ),
        (
            1,
            TensorDesc::new(F32, &[B + 1, I, N]),
            "input 'ssm_state' has shape [3, 16, 4], expected [2, 16, dstate] ([batch, inner] from 'conv_state')",
        ),
        (
            2,
            TensorDesc::new(F32, &[B, 1, 0]),
            "input 'residual' has shape [2, 1, 0], expected [2, 1, hidden] with hidden >= 1",
        ),
        (3, TensorDesc::new(F16, &[H]), "input 'norm_weight' has element type float16, expected float32"),
        (
            4,
            TensorDesc::new(F32, &[H, 2 * I]),
            "input 'in_proj_weight' has element type float32, expected float16 (same as 'conv_state')",
        ),
        (
            6,
            TensorDesc::new(F16, &[I, K + 1]),
            "input 'conv_weight' has shape [16, 5], expected [16, 4] ([inner, width] from 'conv_state')",
        ),
        (
            9,
            TensorDesc::new(F16, &[0, I]),
            "input 'dt_proj_weight' has shape [0, 16], expected [dt_rank, 16] with dt_rank >= 1",
        ),
        (11, TensorDesc::absent(), "required input 'A' is missing"),
        (
            13,
            TensorDesc::new(F16, &[H, I]),
            "input 'out_proj_weight' has shape [8, 16], expected [16, 8] ([inner, hidden])",
        ),
        (14, TensorDesc::new(F16, &[I]), "input 'out_proj_bias' has shape [16], expected [8] (hidden from 'residual')"),
    ];
    for (slot, desc, message) in cases {
        let mut inputs = good(F16);
        inputs[slot] = desc;
        assert_eq!(error(&inputs), format!("MambaLayerStep: {message}"), "slot {slot}");
    }
    assert_eq!(error(&good(F16)[..14]), "MambaLayerStep: 15 input slots expected, got 14");
}

/// The CUDA decode layer's own limits, one C++ function for the ORT op and the TensorRT plugin:
/// the largest batch and dt_rank + 2 * dstate it takes pass, one more is refused by name.
#[test]
fn cuda_limits_take_the_largest_sizes_and_refuse_one_more() {
    let p = check_mamba_layer_step(&good(F16)).expect("valid inputs");
    let limits = |batch: usize, dt_rank: usize, dstate: usize| {
        let mut q = p;
        (q.batch, q.dt_rank, q.dstate) = (batch, dt_rank, dstate);
        check_mamba_layer_step_cuda_limits(&q).map_err(|e| e.what().to_string())
    };
    assert_eq!(limits(65535, 12032 - 32, 16), Ok(()));
    assert_eq!(
        limits(65536, 2, 4),
        Err("MambaLayerStep: batch 65536 is more than the CUDA kernels take (65535)".to_string())
    );
    assert_eq!(
        limits(1, 12033 - 32, 16),
        Err("MambaLayerStep: dt_rank + 2 * dstate = 12033 is more than the CUDA kernels take (12032)".to_string())
    );
}
