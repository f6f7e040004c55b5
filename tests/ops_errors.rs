//! Bad inputs reach ONNX Runtime from Rust (`ort`, `with_operator_library`) as errors naming the
//! input, the expected and the actual shape or type; the process and the session go on. Also
//! calls the C++ shape checks directly through the cxx bridge, as the compiler's agreement test
//! and the TensorRT plugin will.

mod ops_common;

use mambac_ops::ffi::{self, ElemType, TensorDesc};
use ops_common::*;
use ort::session::Session;
use ort::value::Tensor;

const SCAN: [&str; 9] = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"];

/// SelectiveScan with u, delta, A, B, C (all float32); y out.
fn scan_session() -> Session {
    let slots: Vec<(&str, i32)> = SCAN[..5].iter().map(|n| (*n, FLOAT)).collect();
    session(&one_node_model("SelectiveScan", &slots, &[("y", FLOAT)], &[])).unwrap()
}

/// Inputs with batch 2, seqlen 7, dim 48, dstate 16 and the given ngroups and A rows.
fn scan_inputs(ngroups: usize, a_rows: usize) -> Vec<(&'static str, Tensor<f32>)> {
    let t = |shape: Vec<usize>, seed| {
        let n = shape.iter().product();
        Tensor::from_array((shape, data(n, seed))).unwrap()
    };
    let a = {
        let n = a_rows * 16;
        Tensor::from_array((vec![a_rows, 16], data(n, 3).iter().map(|v| -v.abs() - 0.1).collect::<Vec<_>>())).unwrap()
    };
    vec![
        ("u", t(vec![2, 7, 48], 1)),
        ("delta", t(vec![2, 7, 48], 2)),
        ("A", a),
        ("B", t(vec![2, 7, ngroups, 16], 4)),
        ("C", t(vec![2, 7, ngroups, 16], 5)),
    ]
}

fn run(session: &mut Session, inputs: Vec<(&'static str, Tensor<f32>)>) -> ort::Result<Vec<f32>> {
    let inputs: Vec<(std::borrow::Cow<'_, str>, ort::session::SessionInputValue<'_>)> =
        inputs.into_iter().map(|(n, t)| (n.into(), t.into())).collect();
    let outputs = session.run(inputs)?;
    let (_, y) = outputs["y"].try_extract_tensor::<f32>()?;
    Ok(y.to_vec())
}

#[test]
fn bad_ngroups_is_an_error_naming_b_and_the_session_goes_on() {
    let mut s = scan_session();
    let err = run(&mut s, scan_inputs(5, 48)).unwrap_err().to_string();
    assert!(
        err.contains("SelectiveScan: input 'B' has shape [2, 7, 5, 16], expected [2, 7, ngroups, 16] with dim 48 divisible by ngroups"),
        "{err}"
    );
    let y = run(&mut s, scan_inputs(3, 48)).unwrap();
    assert_eq!(y.len(), 2 * 7 * 48);
    assert!(y.iter().all(|v| v.is_finite()));
}

#[test]
fn mismatched_dims_name_the_input() {
    let mut s = scan_session();
    let err = run(&mut s, scan_inputs(1, 40)).unwrap_err().to_string();
    assert!(err.contains("SelectiveScan: input 'A' has shape [40, 16], expected [48, dstate] (dim from 'u')"), "{err}");
}

#[test]
fn wrong_element_type_names_the_input() {
    let slots = [("u", FLOAT), ("delta", FLOAT16), ("A", FLOAT), ("B", FLOAT), ("C", FLOAT)];
    let mut s = session(&one_node_model("SelectiveScan", &slots, &[("y", FLOAT)], &[])).unwrap();
    let mut inputs: Vec<(std::borrow::Cow<'_, str>, ort::session::SessionInputValue<'_>)> = Vec::new();
    for (name, t) in scan_inputs(1, 48) {
        if name == "delta" {
            let (shape, v) = t.extract_tensor();
            let h: Vec<half::f16> = v.iter().map(|x| half::f16::from_f32(*x)).collect();
            let dims: Vec<usize> = shape.iter().map(|d| *d as usize).collect();
            inputs.push((name.into(), Tensor::from_array((dims, h)).unwrap().into()));
        } else {
            inputs.push((name.into(), t.into()));
        }
    }
    let Err(err) = s.run(inputs) else { panic!("a float16 delta must be refused") };
    let err = err.to_string();
    assert!(
        err.contains("SelectiveScan: input 'delta' has element type float16, expected float32 (same as 'u')"),
        "{err}"
    );
}

#[test]
fn missing_required_input_is_named() {
    let slots = [("u", FLOAT), ("delta", FLOAT), ("", FLOAT), ("B", FLOAT), ("C", FLOAT)];
    let mut s = session(&one_node_model("SelectiveScan", &slots, &[("y", FLOAT)], &[])).unwrap();
    let inputs = scan_inputs(1, 48).into_iter().filter(|(n, _)| *n != "A").collect();
    let err = run(&mut s, inputs).unwrap_err().to_string();
    assert!(err.contains("SelectiveScan: required input 'A' is missing"), "{err}");
}

#[test]
fn bad_attribute_fails_session_creation() {
    let slots = [("x", FLOAT), ("weight", FLOAT)];
    let model = one_node_model("CausalConv1d", &slots, &[("y", FLOAT)], &[Attr::Str("activation", "gelu")]);
    let Err(err) = session(&model) else { panic!("activation \"gelu\" must be refused") };
    let err = err.to_string();
    assert!(err.contains("CausalConv1d: attribute 'activation' is \"gelu\", expected \"silu\" or \"none\""), "{err}");
}

#[test]
fn causal_conv1d_runs_and_matches_a_direct_sum() {
    let (b, l, d, k) = (1usize, 5usize, 3usize, 4usize);
    let slots = [("x", FLOAT), ("weight", FLOAT)];
    let model = one_node_model("CausalConv1d", &slots, &[("y", FLOAT)], &[Attr::Str("activation", "none")]);
    let mut s = session(&model).unwrap();
    let x = data(b * l * d, 1);
    let w = data(d * k, 2);
    let inputs = vec![
        ("x", Tensor::from_array((vec![b, l, d], x.clone())).unwrap()),
        ("weight", Tensor::from_array((vec![d, k], w.clone())).unwrap()),
    ];
    let y = run(&mut s, inputs).unwrap();
    for t in 0..l {
        for c in 0..d {
            let mut want = 0.0f64;
            for j in 0..k {
                let src = t as i64 - (k as i64 - 1) + j as i64;
                if src >= 0 {
                    want += w[c * k + j] as f64 * x[src as usize * d + c] as f64;
                }
            }
            assert!((y[t * d + c] as f64 - want).abs() <= 1e-5 + 1e-5 * want.abs(), "t {t} c {c}");
        }
    }
}

fn desc(shape: &[i64]) -> TensorDesc {
    TensorDesc::new(1, shape)
}

#[test]
fn cxx_shape_check_direct() {
    let mut inputs = vec![
        desc(&[2, 7, 48]),
        desc(&[2, 7, 48]),
        desc(&[48, 16]),
        desc(&[2, 7, 4, 16]),
        desc(&[2, 7, 4, 16]),
        TensorDesc::absent(),
        TensorDesc::absent(),
        desc(&[48]),
        desc(&[2, 48, 16]),
    ];
    let p = ffi::check_selective_scan(&inputs).unwrap();
    assert_eq!((p.batch, p.seqlen, p.dim, p.dstate, p.ngroups), (2, 7, 48, 16, 4));
    assert_eq!(p.elem, ElemType::F32);
    assert_eq!((p.u, p.y, p.final_state), (0, 0, 0));

    inputs[8] = desc(&[2, 47, 16]);
    let err = ffi::check_selective_scan(&inputs).unwrap_err();
    assert_eq!(
        err.what(),
        "SelectiveScan: input 'initial_state' has shape [2, 47, 16], expected [2, 48, 16] ([batch, dim, dstate] from 'u' and 'A')"
    );

    let conv = [desc(&[1, 3, 8]), desc(&[8, 4]), TensorDesc::absent(), TensorDesc::new(10, &[1, 8, 3])];
    let err = ffi::check_causal_conv1d(&conv).unwrap_err();
    assert_eq!(
        err.what(),
        "CausalConv1d: input 'initial_state' has element type float16, expected float32 (same as 'x')"
    );
    assert!(ffi::check_causal_conv1d(&conv[..3]).unwrap_err().what().contains("4 input slots expected, got 3"));
}

/// The checks' slice rules (docs/op-contract.md "Sliced inputs") as a direct caller meets them:
/// the strides they return, and the inputs no attribute can slice, refused by name.
#[test]
fn cxx_shape_check_slices() {
    let scan = |u: TensorDesc, z: TensorDesc| {
        let packed = desc(&[2, 7, 1, 40]);
        let inputs = [
            u,
            desc(&[2, 7, 48]),
            desc(&[48, 16]),
            packed.sliced_at(Some(8)),
            packed.sliced_at(Some(24)),
            TensorDesc::absent(),
            z,
            TensorDesc::absent(),
            TensorDesc::absent(),
        ];
        ffi::check_selective_scan(&inputs)
    };
    let p = scan(desc(&[2, 7, 48]), desc(&[2, 7, 96]).sliced_at(Some(48))).unwrap();
    assert_eq!((p.z_stride, p.b_stride, p.c_stride, p.dim, p.dstate), (96, 40, 40, 48, 16));
    let p = scan(desc(&[2, 7, 48]), desc(&[2, 7, 48])).unwrap();
    assert_eq!((p.z_stride, p.b_stride), (48, 40));
    let err = scan(desc(&[2, 7, 48]).sliced_at(Some(0)), desc(&[2, 7, 48])).unwrap_err();
    assert_eq!(err.what(), "SelectiveScan: input 'u' cannot be read as a slice (the op has no attribute 'u_offset')");

    let conv = [desc(&[1, 3, 20]).sliced_at(Some(12)), desc(&[8, 4]), TensorDesc::absent(), TensorDesc::absent()];
    let p = ffi::check_causal_conv1d(&conv).unwrap();
    assert_eq!((p.dim, p.x_stride, p.width), (8, 20, 4));
    let mut bad = conv;
    bad[1] = desc(&[8, 4]).sliced_at(Some(0));
    let err = ffi::check_causal_conv1d(&bad).unwrap_err();
    assert_eq!(
        err.what(),
        "CausalConv1d: input 'weight' cannot be read as a slice (the op has no attribute 'weight_offset')"
    );
}

/// SsdScan's packed x, B and C through the cxx bridge: the token strides the check returns, the
/// dims it takes from A and the attributes, and what it refuses.
#[test]
fn cxx_shape_check_ssd_bounds_dims_before_their_products() {
    // Empty tensors may carry any dims (no bytes to overflow), so the dims that multiply into
    // row strides are bounded first.
    let inputs = |x: TensorDesc, b: TensorDesc| {
        let c = b;
        [x, desc(&[0, 3, 4]), desc(&[4]), b, c, TensorDesc::absent(), TensorDesc::absent(), TensorDesc::absent()]
    };
    let check = |ins: [TensorDesc; 8]| ffi::check_ssd_scan(&ins, &ffi::SsdScanDims::from_attrs([None, None, None]));
    let err = check(inputs(desc(&[0, 3, 4, 1 << 40]), desc(&[0, 3, 1, 8]))).unwrap_err();
    assert_eq!(err.what(), "SsdScan: input 'x' gives head_dim = 1099511627776, more than 2^31 - 1");
    let err = check(inputs(desc(&[0, 3, 4, 2]), desc(&[0, 3, 1, 1 << 40]))).unwrap_err();
    assert_eq!(err.what(), "SsdScan: input 'B' gives dstate = 1099511627776, more than 2^31 - 1");
}

#[test]
fn cxx_shape_check_ssd_packed_inputs() {
    // Mamba-2's conv output: 4 heads of 2 at 0, 1 group of 8 at 8 (B) and 16 (C), row 27.
    let xbc = desc(&[2, 3, 27]);
    let inputs = |x: TensorDesc| {
        [
            x,
            desc(&[2, 3, 4]),
            desc(&[4]),
            xbc.sliced_at(Some(8)),
            xbc.sliced_at(Some(16)),
            TensorDesc::absent(),
            TensorDesc::absent(),
            TensorDesc::absent(),
        ]
    };
    let packed = || inputs(xbc.sliced_at(Some(0)));
    let check = |ins: [TensorDesc; 8], dims| ffi::check_ssd_scan(&ins, &ffi::SsdScanDims::from_attrs(dims));
    let dims = [Some(2), Some(1), Some(8)];
    let p = check(packed(), dims).unwrap();
    assert_eq!((p.heads, p.head_dim, p.ngroups, p.dstate), (4, 2, 1, 8));
    assert_eq!((p.x_stride, p.b_stride, p.c_stride, p.dt_stride), (27, 27, 27, 4));
    let p = check(inputs(desc(&[2, 3, 4, 2])), dims).unwrap();
    assert_eq!(p.x_stride, 8, "a whole x: its token rows are contiguous");

    let err = check(packed(), [None, Some(1), Some(8)]).unwrap_err();
    assert_eq!(
        err.what(),
        "SsdScan: attribute 'x_offset' needs attribute 'head_dim': input 'x' read packed as [batch, seqlen, row] \
         has no head_dim axis"
    );
    let err = check(packed(), [Some(2), None, None]).unwrap_err();
    assert_eq!(
        err.what(),
        "SsdScan: attribute 'B_offset' needs attribute 'ngroups': input 'B' read packed as [batch, seqlen, row] \
         has no ngroups axis"
    );
    let mut bad = packed();
    bad[2] = desc(&[4]).sliced_at(Some(0));
    let err = check(bad, dims).unwrap_err();
    assert_eq!(err.what(), "SsdScan: input 'A' cannot be read as a slice (the op has no attribute 'A_offset')");
    let err = check(packed(), [Some(2), Some(1), Some(1 << 31)]).unwrap_err();
    assert_eq!(err.what(), "SsdScan: attribute 'dstate' is 2147483648, expected 1 to 2^31 - 1");
}

#[test]
fn cxx_shape_check_rejects_inputs_whose_byte_size_overflows() {
    // u of 2^62 x 2 x 16 float32s: 2^69 bytes. No ORT tensor can be this, but a plugin's shapes can.
    let big = 1i64 << 62;
    let scan = [
        desc(&[big, 2, 16]),
        desc(&[big, 2, 16]),
        desc(&[16, 4]),
        desc(&[big, 2, 1, 4]),
        desc(&[big, 2, 1, 4]),
        TensorDesc::absent(),
        TensorDesc::absent(),
        TensorDesc::absent(),
        TensorDesc::absent(),
    ];
    let err = ffi::check_selective_scan(&scan).unwrap_err();
    assert_eq!(
        err.what(),
        "SelectiveScan: input 'u' has shape [4611686018427387904, 2, 16], whose size in bytes exceeds 2^63 - 1"
    );

    // An empty x is no work, but weight [2^61, 4] (float16: 2^64 bytes) still cannot exist.
    let conv = [
        TensorDesc::new(10, &[1, 0, 1 << 61]),
        TensorDesc::new(10, &[1 << 61, 4]),
        TensorDesc::absent(),
        TensorDesc::absent(),
    ];
    let err = ffi::check_causal_conv1d(&conv).unwrap_err();
    assert_eq!(
        err.what(),
        "CausalConv1d: input 'weight' has shape [2305843009213693952, 4], whose size in bytes exceeds 2^63 - 1"
    );

    // Just under the limit, and a zero dim beside huge ones, pass.
    let ok = [desc(&[1 << 30, 0, 1 << 40]), desc(&[1 << 40, 4]), TensorDesc::absent(), TensorDesc::absent()];
    let p = ffi::check_causal_conv1d(&ok).unwrap();
    assert_eq!((p.batch, p.seqlen, p.dim, p.width), (1 << 30, 0, 1 << 40, 4));
}

/// AddRmsNorm's check as the TensorRT plugin and direct callers meet it: the errors ORT's own
/// typing of input 0 keeps the ORT op from reaching (x's type), the slot count, a sliced input,
/// and the sizes it returns (rows 0 for an empty x, however large the other dims).
#[test]
fn cxx_add_rms_norm_check_direct() {
    let ok = [TensorDesc::new(10, &[2, 7, 48]), desc(&[2, 7, 48]), desc(&[48])];
    let p = ffi::check_add_rms_norm(&ok).unwrap();
    assert_eq!((p.rows, p.hidden, p.elem), (14, 48, ElemType::F16));
    assert_eq!((p.x, p.residual, p.weight, p.y, p.residual_out), (0, 0, 0, 0, 0));

    let no_residual = [desc(&[2, 7, 48]), TensorDesc::absent(), desc(&[48])];
    assert_eq!(ffi::check_add_rms_norm(&no_residual).unwrap().rows, 14);

    let f64_x = [TensorDesc::new(11, &[2, 7, 48]), TensorDesc::absent(), desc(&[48])];
    assert_eq!(
        ffi::check_add_rms_norm(&f64_x).unwrap_err().what(),
        "AddRmsNorm: input 'x' has element type float64, expected float32, float16 or bfloat16"
    );
    assert_eq!(ffi::check_add_rms_norm(&ok[..2]).unwrap_err().what(), "AddRmsNorm: 3 input slots expected, got 2");
    let no_weight = [desc(&[2, 7, 48]), desc(&[2, 7, 48]), TensorDesc::absent()];
    assert_eq!(
        ffi::check_add_rms_norm(&no_weight).unwrap_err().what(),
        "AddRmsNorm: required input 'weight' is missing"
    );
    let sliced = [desc(&[2, 7, 48]).sliced_at(Some(0)), TensorDesc::absent(), desc(&[48])];
    assert_eq!(
        ffi::check_add_rms_norm(&sliced).unwrap_err().what(),
        "AddRmsNorm: input 'x' cannot be read as a slice (the op has no attribute 'x_offset')"
    );

    let empty = [desc(&[i64::MAX / 2, 4, 0]), TensorDesc::absent(), desc(&[0])];
    assert_eq!(ffi::check_add_rms_norm(&empty).unwrap().rows, 0);
    let huge = [desc(&[i64::MAX / 2, 4, 1]), TensorDesc::absent(), desc(&[1])];
    assert!(ffi::check_add_rms_norm(&huge).unwrap_err().what().contains("whose size in bytes exceeds 2^63 - 1"));
    let wide = [desc(&[1, 1, 1 << 31]), TensorDesc::absent(), desc(&[1 << 31])];
    assert_eq!(
        ffi::check_add_rms_norm(&wide).unwrap_err().what(),
        "AddRmsNorm: input 'x' gives hidden = 2147483648, more than 2^31 - 1"
    );
}

/// GatedRmsNorm's check as the TensorRT plugin and direct callers meet it: the errors ORT's own
/// typing of input 0 keeps the ORT op from reaching (y's type), the slot count, a sliced y, the
/// group size, and the sizes and z stride it returns.
#[test]
fn cxx_gated_rms_norm_check_direct() {
    let ok = [TensorDesc::new(10, &[2, 7, 48]), TensorDesc::new(10, &[2, 7, 48]), desc(&[48])];
    let p = ffi::check_gated_rms_norm(&ok, 16).unwrap();
    assert_eq!((p.rows, p.d, p.group_size, p.z_stride, p.elem), (14, 48, 16, 48, ElemType::F16));
    assert_eq!((p.y, p.z, p.weight, p.out), (0, 0, 0, 0));

    let packed = [desc(&[2, 7, 48]), desc(&[2, 7, 200]).sliced_at(Some(100)), desc(&[48])];
    assert_eq!(ffi::check_gated_rms_norm(&packed, 48).unwrap().z_stride, 200);

    let f64_y = [TensorDesc::new(11, &[2, 7, 48]), desc(&[2, 7, 48]), desc(&[48])];
    assert_eq!(
        ffi::check_gated_rms_norm(&f64_y, 16).unwrap_err().what(),
        "GatedRmsNorm: input 'y' has element type float64, expected float32, float16 or bfloat16"
    );
    assert_eq!(
        ffi::check_gated_rms_norm(&ok[..2], 16).unwrap_err().what(),
        "GatedRmsNorm: 3 input slots expected, got 2"
    );
    let no_z = [desc(&[2, 7, 48]), TensorDesc::absent(), desc(&[48])];
    assert_eq!(ffi::check_gated_rms_norm(&no_z, 16).unwrap_err().what(), "GatedRmsNorm: required input 'z' is missing");
    let sliced_y = [desc(&[2, 7, 48]).sliced_at(Some(0)), desc(&[2, 7, 48]), desc(&[48])];
    assert_eq!(
        ffi::check_gated_rms_norm(&sliced_y, 16).unwrap_err().what(),
        "GatedRmsNorm: input 'y' cannot be read as a slice (the op has no attribute 'y_offset')"
    );
    let f32_ok = [desc(&[2, 7, 48]), desc(&[2, 7, 48]), desc(&[48])];
    for bad in [0, -3, 5] {
        assert_eq!(
            ffi::check_gated_rms_norm(&f32_ok, bad).unwrap_err().what(),
            format!(
                "GatedRmsNorm: attribute 'group_size' is {bad}, expected a positive divisor of d = 48 (from input 'y')"
            )
        );
    }

    let empty = [desc(&[i64::MAX / 2, 4, 0]), desc(&[i64::MAX / 2, 4, 0]), desc(&[0])];
    assert_eq!(ffi::check_gated_rms_norm(&empty, 8).unwrap().rows, 0);
    let huge = [desc(&[i64::MAX / 2, 4, 1]), desc(&[i64::MAX / 2, 4, 1]), desc(&[1])];
    assert!(ffi::check_gated_rms_norm(&huge, 1).unwrap_err().what().contains("whose size in bytes exceeds 2^63 - 1"));
    let wide = [desc(&[1, 1, 1 << 31]), desc(&[1, 1, 1 << 31]), desc(&[1 << 31])];
    assert_eq!(
        ffi::check_gated_rms_norm(&wide, 1 << 31).unwrap_err().what(),
        "GatedRmsNorm: input 'y' gives d = 2147483648, more than 2^31 - 1"
    );
}
