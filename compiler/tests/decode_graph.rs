//! The decode graph comes out of the pipeline: the decode lowering (seqlen 1), the fusion rule
//! `fuse_layer_step` (once a layer), validation, the float64 interpreter and emission together
//! with the stateful graph, sharing its weights. (Its numerics through ONNX Runtime are tested
//! in tests/python/test_decode_graph.py.)

mod common;

use mambac_compiler::ir::{step2_slots, step_slots};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use mambac_compiler::checkpoint::Checkpoint;
use mambac_compiler::emit::decode_graph::{decode_graph_path, initializers, InitializerData};
use mambac_compiler::emit::{emit_onnx_models, EmitTarget, ExternalData};
use mambac_compiler::interp::{interpret, Tensor64};
use mambac_compiler::ir::{
    infer_node, validate, ConstSource, ConstTensor, Dim, Elem, Graph, Mamba2LayerStepConfig,
    MambaLayerStepConfig as Step, Op, ValueType,
};
use mambac_compiler::lower::{nodes_of_kind, LowerOptions, WeightQuant};
use mambac_compiler::pipeline::{compile, compile_decode, export, CompileOptions, ExportOptions, ExportReport};
use mambac_compiler::synth::{write_checkpoint, Preset, SynthOptions};
use onnx_protobuf::{Message, ModelProto};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The interpreter computes both graphs in float64, so they agree far inside the float32 tier
/// (1e-5): only the summation order differs.
const STEP_TOL: f64 = 1e-12;

fn stateful(dtype: Elem) -> CompileOptions {
    CompileOptions {
        lower: LowerOptions { dtype, stateful: true, ..Default::default() },
        fuse: true,
        max_rewrites: None,
    }
}

fn export_opts(lower: LowerOptions, external_data: ExternalData, decode_graph: bool) -> ExportOptions {
    ExportOptions { compile: CompileOptions { lower, fuse: true, max_rewrites: None }, external_data, decode_graph }
}

fn random(rng: &mut StdRng, shape: Vec<usize>, scale: f64) -> Tensor64 {
    let n = shape.iter().product();
    Tensor64::new(shape, (0..n).map(|_| rng.gen_range(-scale..scale)).collect())
}

/// One token a sequence for a batch of 3, on random (non-zero) states of the shapes `g`'s
/// state inputs have (Mamba-1 and Mamba-2 alike).
fn step_feeds(ckpt: &Checkpoint, g: &Graph, seed: u64) -> HashMap<String, Tensor64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let batch = 3;
    let ids = (0..batch).map(|_| rng.gen_range(0..ckpt.config.vocab_size) as f64).collect();
    let mut feeds = HashMap::from([("input_ids".to_string(), Tensor64::new(vec![batch, 1], ids))]);
    for n in g.node_ids() {
        if let Op::Input { name, ty } = g.op(n) {
            if name != "input_ids" {
                let dims = ty.shape.0.iter().map(|d| d.known().unwrap_or(batch)).collect();
                feeds.insert(name.clone(), random(&mut rng, dims, 1.0));
            }
        }
    }
    feeds
}

/// The decode IR's step equals the stateful IR's one-token step: logits and every state output.
fn check_step(label: &str, ckpt: &Checkpoint) {
    let general = compile(ckpt, &stateful(Elem::F32)).unwrap();
    let decode = compile_decode(ckpt, &stateful(Elem::F32)).unwrap();
    let layers = ckpt.config.num_hidden_layers;
    let (step, left) = match ckpt.config.mamba2 {
        Some(_) => ("Mamba2LayerStep", ["SsdScan", "CausalConv1d", "GatedRmsNorm", "RmsNorm"]),
        None => ("MambaLayerStep", ["SelectiveScan", "CausalConv1d", "GatedRmsNorm", "RmsNorm"]),
    };
    assert_eq!(nodes_of_kind(&decode.graph, step).len(), layers, "{label}");
    for kind in left {
        let n = nodes_of_kind(&decode.graph, kind).len();
        assert_eq!(n, (kind == "RmsNorm") as usize, "{label}: {n} {kind} left (only the final norm is not a layer's)");
    }
    let feeds = step_feeds(ckpt, &general.graph, 77);
    let want = interpret(&validate(&general.graph).unwrap(), ckpt, &feeds).unwrap();
    let got = interpret(&validate(&decode.graph).unwrap(), ckpt, &feeds).unwrap();
    assert_eq!(got.len(), want.len(), "{label}: outputs");
    for (name, w) in &want {
        let g = &got[name];
        assert_eq!(g.shape, w.shape, "{label}: {name}");
        let err = worst_rel(&g.data, &w.data);
        assert!(err <= STEP_TOL, "{label}: {name} worst rel {err:.3e}");
    }
    // The states moved: a step that ignored them (or a decode graph of zeros) would fail above,
    // but only if the step changes them at all.
    let moved = worst_rel(&got["ssm_state_out.0"].data, &feeds["ssm_state.0"].data);
    assert!(moved > 1e-3, "{label}: the step left ssm_state.0 nearly unchanged ({moved:.3e})");
}

#[test]
fn decode_ir_step_equals_the_stateful_ir_step_on_the_fixtures() {
    for fixture in ["mamba-tiny-hf", "mamba-tiny-ssm"] {
        check_step(fixture, &Checkpoint::open(&testdata(fixture)).unwrap());
    }
}

#[test]
fn mamba2_decode_ir_step_equals_the_stateful_ir_step() {
    for fixture in ["mamba2-tiny-hf", "mamba2-groups2"] {
        let mut ckpt = Checkpoint::open(&testdata(fixture)).unwrap();
        check_step(fixture, &ckpt);
        // mamba_ssm's other gated norm (no released model uses it): the rule carries the flag.
        ckpt.config.mamba2.as_mut().unwrap().norm_before_gate = true;
        check_step(&format!("{fixture}, norm_before_gate"), &ckpt);
        let decode = compile_decode(&ckpt, &stateful(Elem::F32)).unwrap();
        let step = nodes_of_kind(&decode.graph, "Mamba2LayerStep")[0];
        assert!(matches!(decode.graph.op(step), Op::Mamba2LayerStep(c) if c.norm_before_gate));
    }
}

#[test]
fn the_mamba2_rule_fires_once_a_layer_and_only_when_seqlen_is_one() {
    let ckpt = Checkpoint::open(&testdata("mamba2-groups2")).unwrap();
    for dtype in [Elem::F32, Elem::F16, Elem::BF16] {
        let decode = compile_decode(&ckpt, &stateful(dtype)).unwrap();
        let n = decode.passes.rewrites.iter().filter(|r| r.starts_with("fuse_mamba2_layer_step/")).count();
        assert_eq!(n, 2, "{dtype}: one rewrite a layer");
        assert!(!decode.passes.rules_applied.contains(&"fuse_layer_step"));
        let step = nodes_of_kind(&decode.graph, "Mamba2LayerStep")[1];
        let Op::Mamba2LayerStep(cfg) = decode.graph.op(step) else { unreachable!() };
        assert_eq!((cfg.dt_min, cfg.dt_max, cfg.eps), (0.05, 0.5, 1e-5), "the fixture's time_step_limit");
        let name_of = |slot| decode.graph.node(decode.graph.input(step, slot).unwrap().node).name.clone();
        assert_eq!(name_of(step2_slots::IN_PROJ_WEIGHT), "backbone.layers.1.mixer.in_proj.weight.T");
        assert_eq!(name_of(step2_slots::A), "backbone.layers.1.mixer.A");
        assert_eq!(name_of(step2_slots::GATE_NORM_WEIGHT), "backbone.layers.1.mixer.norm.weight");
        assert_eq!(name_of(step2_slots::RESIDUAL), "backbone.layers.0.residual", "layer 1 reads layer 0's step");
        let general = compile(&ckpt, &stateful(dtype)).unwrap();
        assert!(general.passes.rewrites.iter().all(|r| !r.starts_with("fuse_mamba2_layer_step/")), "{dtype}");
    }
}

#[test]
fn decode_ir_step_equals_the_stateful_ir_step_on_variants() {
    type Configure = fn(&mut SynthOptions);
    let variants: [(&str, Configure); 2] = [
        ("use_bias, no conv bias, untied, 3 layers", |o| {
            o.use_bias = Some(true);
            o.use_conv_bias = Some(false);
            o.tie_word_embeddings = Some(false);
            o.num_hidden_layers = Some(3);
        }),
        ("d_state 8, conv 3, dt_rank 7", |o| {
            o.state_size = Some(8);
            o.conv_kernel = Some(3);
            o.time_step_rank = Some(7);
        }),
    ];
    for (label, configure) in variants {
        let dir = tempfile::tempdir().unwrap();
        let mut o = SynthOptions::new(Preset::Tiny);
        o.seed = 99;
        configure(&mut o);
        write_checkpoint(&o, dir.path()).unwrap();
        check_step(label, &Checkpoint::open(dir.path()).unwrap());
    }
}

#[test]
fn the_rule_fires_once_a_layer_and_only_when_seqlen_is_one() {
    let ckpt = Checkpoint::open(&testdata("mamba-tiny-hf")).unwrap();
    let fired = |opts: &CompileOptions| {
        let c = compile(&ckpt, opts).unwrap();
        c.passes.rewrites.iter().filter(|r| r.starts_with("fuse_layer_step/")).count()
    };
    for dtype in [Elem::F32, Elem::F16, Elem::BF16] {
        let decode = compile_decode(&ckpt, &stateful(dtype)).unwrap();
        let n = decode.passes.rewrites.iter().filter(|r| r.starts_with("fuse_layer_step/")).count();
        assert_eq!(n, 2, "{dtype}: one rewrite a layer");
        assert!(decode.passes.rules_applied.contains(&"fuse_layer_step"));
        // The step reads the stateful graph's own weights: in_proj's W^T, the folded A.
        let step = nodes_of_kind(&decode.graph, "MambaLayerStep")[1];
        let name_of = |slot| decode.graph.node(decode.graph.input(step, slot).unwrap().node).name.clone();
        assert_eq!(name_of(step_slots::IN_PROJ_WEIGHT), "backbone.layers.1.mixer.in_proj.weight.T");
        assert_eq!(name_of(step_slots::A), "backbone.layers.1.mixer.A");
        assert_eq!(name_of(step_slots::RESIDUAL), "backbone.layers.0.residual", "layer 1 reads layer 0's step");
        // Not on the general graph (seqlen symbolic), nor without states to read.
        assert_eq!(fired(&stateful(dtype)), 0, "{dtype}: general graph");
    }
    let no_states = CompileOptions {
        lower: LowerOptions { stateful: false, decode_step: true, ..Default::default() },
        fuse: true,
        max_rewrites: None,
    };
    assert_eq!(fired(&no_states), 0, "seqlen 1 without states");
}

/// The decode lowering's rewrites: the general graph's eight a layer, then one step a layer;
/// every prefix validates (the driver validates after each), so a bad fold can be bisected.
#[test]
fn decode_rewrites_bisect_like_the_others() {
    let ckpt = Checkpoint::open(&testdata("mamba-tiny-ssm")).unwrap();
    let decode_opts = mambac_compiler::pipeline::decode_options(&stateful(Elem::F32)).unwrap();
    let full = compile(&ckpt, &decode_opts).unwrap().passes.rewrites;
    assert_eq!(full.len(), 9 * 2);
    assert_eq!(&full[16..], ["fuse_layer_step/0", "fuse_layer_step/1"]);
    for n in [0, 8, 16, 17] {
        let partial = CompileOptions { max_rewrites: Some(n), ..decode_opts.clone() };
        assert_eq!(compile(&ckpt, &partial).unwrap().passes.rewrites, full[..n]);
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mambac-decode-graph-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn load(path: &Path) -> ModelProto {
    ModelProto::parse_from_bytes(&std::fs::read(path).unwrap()).unwrap()
}

fn meta(m: &ModelProto, key: &str) -> Option<String> {
    m.metadata_props.iter().find(|e| e.key == key).map(|e| e.value.clone())
}

#[test]
fn both_graphs_come_out_of_one_export_sharing_the_weights() {
    let d = tmpdir("export");
    let ckpt = Checkpoint::open(&testdata("mamba-tiny-hf")).unwrap();
    let lower = LowerOptions { dtype: Elem::F16, stateful: true, ..Default::default() };
    for (name, ext) in [("inline.onnx", ExternalData::Never), ("external.onnx", ExternalData::Always)] {
        let out = d.join(name);
        let report = export(&ckpt, &out, &export_opts(lower, ext, true), &mut |_, _| {}).unwrap();
        let decode = report.decode.as_ref().expect("a decode report");
        assert_eq!(decode.output, decode_graph_path(&out));
        assert_eq!(decode.passes.rewrites.iter().filter(|r| r.starts_with("fuse_layer_step/")).count(), 2);
        let (g, m) = (load(&out), load(&decode.output));
        let graph = m.graph.as_ref().unwrap();
        let steps: Vec<_> = graph.node.iter().filter(|n| n.op_type == "MambaLayerStep").collect();
        assert_eq!(steps.len(), 2, "{name}");
        // 14 inputs: the trailing optional out_proj_bias is absent (ONNX drops trailing empties).
        assert!(steps.iter().all(|n| n.domain == "mambac" && n.input.len() == 14 && n.output.len() == 3), "{steps:?}");
        assert!(graph.node.iter().all(|n| !n.name.starts_with("backbone.layers.") || n.op_type == "MambaLayerStep"));
        assert_eq!(steps[1].input[2], steps[0].output[0], "layer 1 reads layer 0's residual");
        let names = |m: &ModelProto, io: bool| -> Vec<String> {
            let gr = m.graph.as_ref().unwrap();
            let v = if io { &gr.input } else { &gr.output };
            v.iter().map(|v| v.name.clone()).collect()
        };
        assert_eq!(names(&m, true), names(&g, true), "{name}: same inputs");
        assert_eq!(names(&m, false), names(&g, false), "{name}: same outputs");
        assert_eq!(meta(&m, "mambac.export_id"), meta(&g, "mambac.export_id"));
        assert_eq!(meta(&m, "mambac.graph").as_deref(), Some("decode-step"));
        assert_eq!(meta(&g, "mambac.graph"), None);
        // Every initializer of the decode graph is the stateful graph's (the weights): same name,
        // type, dims, and bytes or external location; but for the final norm's scalar helpers,
        // which the stateful graph folds into an AddRmsNorm.
        let general: HashMap<String, _> =
            g.graph.as_ref().unwrap().initializer.iter().map(|t| (t.name.clone(), t.clone())).collect();
        let mut shared = 0;
        for t in graph.initializer.iter().filter(|t| !is_final_norm_helper(t)) {
            let w = general.get(&t.name).unwrap_or_else(|| panic!("{name}: {} is not the stateful graph's", t.name));
            assert_eq!(t, w, "{name}: {}", t.name);
            shared += 1;
        }
        assert!(shared >= 2 * 11, "{name}: only {shared} weights shared");
        // The decode graph's steps read initializers, not values computed at run time.
        let inits: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        for n in &steps {
            assert!(n.input[3..].iter().filter(|i| !i.is_empty()).all(|i| inits.contains(&i.as_str())), "{n:?}");
        }
        if ext == ExternalData::Always {
            let alone = d.join("alone.onnx");
            let alone_report = export(&ckpt, &alone, &export_opts(lower, ext, false), &mut |_, _| {}).unwrap();
            let size = |p: &Path| std::fs::metadata(p).unwrap().len();
            let data_file = |r: &ExportReport| r.emit.external_data.clone().expect("an external data file");
            let (data, data_alone) = (size(&data_file(&report)), size(&data_file(&alone_report)));
            assert_eq!(data, data_alone, "no weight written twice");
            assert!(size(&decode.output) < 100_000, "nothing but the graph in the decode file");
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn refuses_what_it_cannot_fuse() {
    let d = tmpdir("err");
    let ckpt = Checkpoint::open(&testdata("mamba-tiny-hf")).unwrap();
    let out = d.join("m.onnx");
    let err = |opts: ExportOptions| match export(&ckpt, &out, &opts, &mut |_, _| {}) {
        Ok(_) => panic!("the export must be refused"),
        Err(e) => e.to_string(),
    };
    let plain = LowerOptions { dtype: Elem::F32, ..Default::default() };
    assert_eq!(
        err(export_opts(plain, ExternalData::Never, true)),
        "the decode graph needs a stateful export (--stateful): it reads and writes the states"
    );
    let quant = Some(WeightQuant { quant: mambac_compiler::ir::BlockQuant::new(8, 32).unwrap(), accuracy_level: 0 });
    let q = LowerOptions { dtype: Elem::F32, stateful: true, quant, ..Default::default() };
    assert_eq!(
        err(export_opts(q, ExternalData::Never, true)),
        "the decode graph needs float weights: MambaLayerStep does not read quantized ones"
    );
    let mut unfused = export_opts(LowerOptions { stateful: true, ..plain }, ExternalData::Never, true);
    unfused.compile.fuse = false;
    let want = "the decode graph needs the fusion passes, all of them: its layers are fused layers";
    assert_eq!(err(unfused.clone()), want);
    unfused.compile.fuse = true;
    unfused.compile.max_rewrites = Some(3);
    assert_eq!(err(unfused), want);
    assert!(!out.exists() && !decode_graph_path(&out).exists(), "nothing written");
    let _ = std::fs::remove_dir_all(&d);
}

/// A graph `y = Neg(w)` with `w` a computed constant.
fn neg_graph(values: &[f64]) -> Graph {
    let mut g = Graph::new();
    let source = ConstSource::Computed(Arc::new(values.to_vec()));
    let c = ConstTensor { name: "w".into(), shape: vec![values.len()], elem: Elem::F32, source };
    let w = g.add_op("w", Op::Const(c), &[]);
    let y = g.add_op("y", Op::Neg, &[w.into()]);
    g.add_output("y", y.into());
    g
}

#[test]
fn emitting_several_graphs_refuses_conflicts_and_split_folders() {
    let d = tmpdir("emit");
    let ckpt = Checkpoint::open(&testdata("mamba-tiny-hf")).unwrap();
    let (g1, g2) = (neg_graph(&[1.0, 2.0]), neg_graph(&[3.0, 4.0]));
    let (v1, v2) = (validate(&g1).unwrap(), validate(&g2).unwrap());
    let (a, b) = (d.join("a.onnx"), d.join("b.onnx"));
    let t = |vg, path| EmitTarget { graph: vg, path, metadata: vec![] };
    let e = emit_onnx_models(&[t(&v1, &a), t(&v2, &b)], &ckpt, ExternalData::Never, "e1", &mut |_, _| {}).unwrap_err();
    assert_eq!(e.to_string(), "two graphs of one export hold different weights named 'w' (a mambac bug)");
    let sub = d.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let elsewhere = sub.join("b.onnx");
    let e = emit_onnx_models(&[t(&v1, &a), t(&v1, &elsewhere)], &ckpt, ExternalData::Always, "e1", &mut |_, _| {})
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{} is not in the folder of {}, whose external data file it would share: write both to one folder",
            elsewhere.display(),
            a.display()
        )
    );
    // The same graph twice: one weight, converted and written once, progress counts it once.
    let mut last = (0, 0);
    let reports = emit_onnx_models(&[t(&v1, &a), t(&v1, &b)], &ckpt, ExternalData::Always, "e1", &mut |done, total| {
        last = (done, total)
    })
    .unwrap();
    assert_eq!(last, (8, 8));
    assert_eq!(std::fs::metadata(d.join("a.onnx.e1.data")).unwrap().len(), 8);
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|r| r.external_data.as_deref() == Some(d.join("a.onnx.e1.data").as_path())));
    let _ = std::fs::remove_dir_all(&d);
}

/// Types of a valid step: batch 2, hidden 8, inner 16, dstate 4, dt_rank 2, width 4, T float16.
fn step_types() -> Vec<Option<ValueType>> {
    let ty = |elem, dims: &[usize]| Some(ValueType::new(elem, dims.iter().map(|&d| Dim::Known(d)).collect()));
    let (t, f) = (Elem::F16, Elem::F32);
    let mut v = vec![
        ty(t, &[2, 16, 3]),
        ty(f, &[2, 16, 4]),
        ty(f, &[2, 1, 8]),
        ty(f, &[8]),
        ty(t, &[8, 32]),
        ty(t, &[32]),
        ty(t, &[16, 4]),
        ty(t, &[16]),
        ty(t, &[16, 10]),
        ty(t, &[2, 16]),
        ty(f, &[16]),
        ty(f, &[16, 4]),
        ty(f, &[16]),
        ty(t, &[16, 8]),
        ty(t, &[8]),
    ];
    v[step_slots::CONV_STATE].as_mut().unwrap().shape.0[0] = Dim::sym("batch");
    v[step_slots::SSM_STATE].as_mut().unwrap().shape.0[0] = Dim::sym("batch");
    v[step_slots::RESIDUAL].as_mut().unwrap().shape.0[0] = Dim::sym("batch");
    v
}

fn infer_step(types: &[Option<ValueType>]) -> Result<Vec<ValueType>, String> {
    let refs: Vec<Option<&ValueType>> = types.iter().map(|t| t.as_ref()).collect();
    infer_node(&Op::MambaLayerStep(Step { eps: 1e-5 }), &refs).map_err(|e| e.to_string())
}

#[test]
fn the_step_inference_rule_types_the_outputs_and_names_the_input_at_fault() {
    let outs = infer_step(&step_types()).unwrap();
    let shown: Vec<String> = outs.iter().map(|t| format!("{} {}", t.elem, t.shape)).collect();
    assert_eq!(shown, ["float32 [batch, 1, 8]", "float16 [batch, 16, 3]", "float32 [batch, 16, 4]"]);
    let mut optional_absent = step_types();
    for slot in step_slots::OPTIONAL {
        optional_absent[slot] = None;
    }
    assert_eq!(infer_step(&optional_absent).unwrap(), outs);

    let broken = |edit: &dyn Fn(&mut Vec<Option<ValueType>>)| {
        let mut v = step_types();
        edit(&mut v);
        infer_step(&v).unwrap_err()
    };
    let seq2 = |v: &mut Vec<Option<ValueType>>| v[step_slots::RESIDUAL].as_mut().unwrap().shape.0[1] = Dim::Known(2);
    assert_eq!(
        broken(&seq2),
        "input 'residual' has shape [batch, 2, 8], expected [batch, 1, hidden] (one token a sequence; batch from \
         'conv_state')"
    );
    assert_eq!(broken(&|v| v[step_slots::A] = None), "input 'A' is required but missing");
    assert_eq!(
        broken(&|v| v[step_slots::SSM_STATE].as_mut().unwrap().elem = Elem::F16),
        "input 'ssm_state' has element type float16, expected float32 (the state is always float32)"
    );
    assert_eq!(
        broken(&|v| v[step_slots::X_PROJ_WEIGHT].as_mut().unwrap().shape.0[1] = Dim::Known(9)),
        "input 'x_proj_weight' has shape [16, 9], expected [16, 10] ([inner, dt_rank + 2 * dstate] = [16, 2 + 2 * 4])"
    );
    assert_eq!(
        broken(&|v| v[step_slots::D].as_mut().unwrap().elem = Elem::F16),
        "input 'D' has element type float16, expected float32 (always float32)"
    );
    assert_eq!(
        broken(&|v| v[step_slots::CONV_STATE].as_mut().unwrap().shape.0[1] = Dim::Known(0)),
        "input 'conv_state' has shape [batch, 0, 3], expected [batch, inner, width - 1] with a known inner >= 1"
    );
    assert_eq!(
        broken(&|v| v[step_slots::OUT_PROJ_BIAS].as_mut().unwrap().shape.0[0] = Dim::Known(7)),
        "input 'out_proj_bias' has shape [7], expected [8] (hidden from 'residual')"
    );
}

#[test]
fn initializers_are_listed_with_their_data_inline_or_external() {
    let d = tmpdir("inits");
    let ckpt = Checkpoint::open(&testdata("mamba-tiny-hf")).unwrap();
    let lower = LowerOptions { dtype: Elem::F16, stateful: true, ..Default::default() };
    for (name, ext) in [("inline.onnx", ExternalData::Never), ("external.onnx", ExternalData::Always)] {
        let out = d.join(name);
        let report = export(&ckpt, &out, &export_opts(lower, ext, true), &mut |_, _| {}).unwrap();
        for model in [out.clone(), decode_graph_path(&out)] {
            let refs = initializers(&model).unwrap();
            let w = refs
                .iter()
                .find(|r| r.name == "backbone.layers.1.mixer.in_proj.weight.T")
                .expect("in_proj weight listed");
            assert_eq!((w.data_type, w.dims.clone()), (10, vec![64, 256]));
            match (&w.data, ext) {
                (InitializerData::Inline(b), ExternalData::Never) => assert_eq!(b.len(), 64 * 256 * 2),
                (InitializerData::External { path, offset, length }, ExternalData::Always) => {
                    assert_eq!(*length, 64 * 256 * 2);
                    let want = format!("external.onnx.{}.data", report.export_id);
                    assert!(path.ends_with(&want), "{path:?} is not {want}");
                    assert!(offset + length <= std::fs::metadata(path).unwrap().len());
                }
                (other, _) => panic!("{name}: unexpected data {other:?}"),
            }
        }
    }
    let missing = d.join("missing.onnx");
    let e = initializers(&missing).unwrap_err().to_string();
    assert!(e.starts_with(&format!("cannot read or write {}: ", missing.display())), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

/// Types of a valid Mamba-2 step: batch symbolic, hidden 8, 4 heads of 4, 2 groups, dstate 4,
/// width 4 (conv_dim 32, in_proj 52), T bfloat16.
fn step2_types() -> Vec<Option<ValueType>> {
    let ty = |elem, dims: &[usize]| Some(ValueType::new(elem, dims.iter().map(|&d| Dim::Known(d)).collect()));
    let (t, f) = (Elem::BF16, Elem::F32);
    let mut v = vec![
        ty(t, &[2, 32, 3]),
        ty(f, &[2, 4, 4, 4]),
        ty(f, &[2, 1, 8]),
        ty(f, &[8]),
        ty(t, &[8, 52]),
        ty(t, &[52]),
        ty(t, &[32, 4]),
        ty(t, &[32]),
        ty(f, &[4]),
        ty(f, &[4]),
        ty(f, &[4]),
        ty(f, &[16]),
        ty(t, &[16, 8]),
        ty(t, &[8]),
    ];
    for slot in [step2_slots::CONV_STATE, step2_slots::SSM_STATE, step2_slots::RESIDUAL] {
        v[slot].as_mut().unwrap().shape.0[0] = Dim::sym("batch");
    }
    v
}

fn infer_step2(types: &[Option<ValueType>]) -> Result<Vec<ValueType>, String> {
    let refs: Vec<Option<&ValueType>> = types.iter().map(|t| t.as_ref()).collect();
    let cfg = Mamba2LayerStepConfig { eps: 1e-5, dt_min: 0.0, dt_max: f64::INFINITY, norm_before_gate: false };
    infer_node(&Op::Mamba2LayerStep(cfg), &refs).map_err(|e| e.to_string())
}

#[test]
fn the_mamba2_step_inference_rule_types_the_outputs_and_names_the_input_at_fault() {
    let outs = infer_step2(&step2_types()).unwrap();
    let shown: Vec<String> = outs.iter().map(|t| format!("{} {}", t.elem, t.shape)).collect();
    assert_eq!(shown, ["float32 [batch, 1, 8]", "bfloat16 [batch, 32, 3]", "float32 [batch, 4, 4, 4]"]);
    let mut optional_absent = step2_types();
    for slot in step2_slots::OPTIONAL {
        optional_absent[slot] = None;
    }
    assert_eq!(infer_step2(&optional_absent).unwrap(), outs);

    let broken = |edit: &dyn Fn(&mut Vec<Option<ValueType>>)| {
        let mut v = step2_types();
        edit(&mut v);
        infer_step2(&v).unwrap_err()
    };
    let dim = |v: &mut Vec<Option<ValueType>>, slot: usize, axis: usize, n: usize| {
        v[slot].as_mut().unwrap().shape.0[axis] = Dim::Known(n)
    };
    assert_eq!(
        broken(&|v| dim(v, step2_slots::CONV_STATE, 1, 34)),
        "input 'conv_state' has shape [batch, 34, 3], expected [batch, conv_dim, 3] with conv_dim = 16 + 2 * \
         ngroups * 4 and ngroups dividing heads 4 (inner and dstate from 'ssm_state')"
    );
    assert_eq!(
        broken(&|v| dim(v, step2_slots::SSM_STATE, 3, 0)),
        "input 'ssm_state' has shape [batch, 4, 4, 0], expected [batch, heads, head_dim, dstate] with heads, \
         head_dim and dstate >= 1"
    );
    assert_eq!(
        broken(&|v| dim(v, step2_slots::RESIDUAL, 1, 2)),
        "input 'residual' has shape [batch, 2, 8], expected [batch, 1, hidden] (one token a sequence; batch from \
         'conv_state')"
    );
    assert_eq!(
        broken(&|v| dim(v, step2_slots::IN_PROJ_WEIGHT, 1, 48)),
        "input 'in_proj_weight' has shape [8, 48], expected [8, 52] (inner + conv_dim + heads = 16 + 32 + 4)"
    );
    assert_eq!(
        broken(&|v| v[step2_slots::GATE_NORM_WEIGHT] = None),
        "input 'gate_norm_weight' is required but missing"
    );
    assert_eq!(
        broken(&|v| dim(v, step2_slots::GATE_NORM_WEIGHT, 0, 8)),
        "input 'gate_norm_weight' has shape [8], expected [16] (inner = heads * head_dim from 'ssm_state')"
    );
    assert_eq!(
        broken(&|v| v[step2_slots::OUT_PROJ_WEIGHT].as_mut().unwrap().elem = Elem::F16),
        "input 'out_proj_weight' has element type float16, expected bfloat16 (same as 'conv_state')"
    );
    assert_eq!(
        broken(&|v| dim(v, step2_slots::D, 0, 5)),
        "input 'D' has shape [5], expected [4] (heads from 'ssm_state')"
    );
}

#[test]
fn a_mamba2_export_writes_its_decode_graph_on_the_shared_weights() {
    let d = tmpdir("mamba2");
    let ckpt = Checkpoint::open(&testdata("mamba2-groups2")).unwrap();
    let lower = LowerOptions { dtype: Elem::F16, stateful: true, ..Default::default() };
    let out = d.join("m.onnx");
    let report = export(&ckpt, &out, &export_opts(lower, ExternalData::Always, true), &mut |_, _| {}).unwrap();
    let decode = report.decode.as_ref().expect("a decode report");
    assert_eq!(decode.step_op, "Mamba2LayerStep");
    let m = load(&decode.output);
    let steps: Vec<_> = m.graph.node.iter().filter(|n| n.op_type == "Mamba2LayerStep").collect();
    // 14 inputs: every optional one present (the fixture has in_proj and out_proj biases).
    assert!(steps.len() == 2 && steps.iter().all(|n| n.domain == "mambac" && n.input.len() == 14), "{steps:?}");
    assert_eq!(
        mambac_compiler::emit::decode_graph::layer_step_op(&decode.output).unwrap().as_deref(),
        Some("Mamba2LayerStep")
    );
    let general = load(&out);
    let names: HashMap<String, _> = general.graph.initializer.iter().map(|t| (t.name.clone(), t.clone())).collect();
    for t in m.graph.initializer.iter().filter(|t| !is_final_norm_helper(t)) {
        assert_eq!(Some(t), names.get(&t.name), "{} is not the stateful graph's", t.name);
    }
    // The stateful graph's first mambac node is the first layer's norm (no layer step).
    assert_eq!(mambac_compiler::emit::decode_graph::layer_step_op(&out).unwrap().as_deref(), Some("AddRmsNorm"));
    let _ = std::fs::remove_dir_all(&d);
}

/// A scalar (or one-axis list) of the decode graph's final RMSNorm pattern (`backbone.norm_f.two`,
/// `.eps`, `.axes`): inline, never shared, as the stateful graph's final norm is an AddRmsNorm.
fn is_final_norm_helper(t: &onnx_protobuf::TensorProto) -> bool {
    t.name.starts_with("backbone.norm_f.") && t.name != "backbone.norm_f.weight" && t.dims.len() <= 1
}
