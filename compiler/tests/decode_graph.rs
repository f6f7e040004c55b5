//! The decode graph (`emit::decode_graph`): derived from a stateful, unquantized export, one
//! MambaLayerStep node a layer wired to the export's own initializers; anything else is refused
//! with a message that says why. (Its numerics are tested through ONNX Runtime in
//! tests/python/test_decode_graph.py.)

mod common;

use common::*;
use mambac_compiler::checkpoint::Checkpoint;
use mambac_compiler::emit::decode_graph::{decode_graph_path, write_decode_graph};
use mambac_compiler::emit::ExternalData;
use mambac_compiler::ir::{BlockQuant, Elem};
use mambac_compiler::lower::{LowerOptions, WeightQuant};
use mambac_compiler::pipeline::{export, CompileOptions, ExportOptions};
use onnx_protobuf::{Message, ModelProto};

fn export_to(dir: &std::path::Path, name: &str, lower: LowerOptions) -> std::path::PathBuf {
    let ckpt = Checkpoint::open(&testdata("mamba-tiny-hf")).unwrap();
    let out = dir.join(name);
    let opts = ExportOptions {
        compile: CompileOptions { lower, fuse: true, max_rewrites: None },
        external_data: ExternalData::Never,
    };
    export(&ckpt, &out, &opts, &mut |_, _| {}).unwrap();
    out
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("mambac-decode-graph-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn one_step_node_a_layer_reading_the_exports_weights() {
    let d = tmpdir("ok");
    let model = export_to(&d, "m.onnx", LowerOptions { dtype: Elem::F32, stateful: true, ..Default::default() });
    let out = decode_graph_path(&model);
    assert_eq!(out, d.join("m.decode.onnx"));
    write_decode_graph(&model, &out, 1e-5).unwrap();
    let g = ModelProto::parse_from_bytes(&std::fs::read(&model).unwrap()).unwrap();
    let m = ModelProto::parse_from_bytes(&std::fs::read(&out).unwrap()).unwrap();
    let graph = m.graph.as_ref().unwrap();
    let steps: Vec<_> = graph.node.iter().filter(|n| n.op_type == "MambaLayerStep").collect();
    assert_eq!(steps.len(), 2);
    assert!(graph.node.iter().all(|n| !n.name.starts_with("backbone.layers.") || n.op_type == "MambaLayerStep"));
    let names: Vec<&str> = g.graph.as_ref().unwrap().initializer.iter().map(|t| t.name.as_str()).collect();
    for n in &steps {
        assert_eq!(n.input.len(), 15);
        for i in n.input.iter().skip(3).filter(|i| !i.is_empty()) {
            assert!(names.contains(&i.as_str()), "{i} is not an initializer of the stateful export");
        }
    }
    assert_eq!(steps[1].input[2], "backbone.layers.0.residual", "layer 1 reads layer 0's residual");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn refuses_what_it_cannot_derive() {
    let d = tmpdir("err");
    let plain = export_to(&d, "plain.onnx", LowerOptions { dtype: Elem::F32, ..Default::default() });
    let e = write_decode_graph(&plain, &d.join("x.onnx"), 1e-5).unwrap_err().to_string();
    assert_eq!(e, "the decode graph needs a stateful export (--stateful): no input 'conv_state.0'");
    let quant = Some(WeightQuant { quant: BlockQuant::new(8, 32).unwrap(), accuracy_level: 0 });
    let q = export_to(&d, "q.onnx", LowerOptions { dtype: Elem::F32, stateful: true, quant, ..Default::default() });
    let e = write_decode_graph(&q, &d.join("x.onnx"), 1e-5).unwrap_err().to_string();
    assert!(
        e.starts_with("the decode graph needs a float export: 'backbone.layers.0.mixer.in_proj' is quantized"),
        "{e}"
    );
    let e = write_decode_graph(&d.join("missing.onnx"), &d.join("x.onnx"), 1e-5).unwrap_err().to_string();
    assert!(e.starts_with(&format!("cannot read or write {}", d.join("missing.onnx").display())), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn initializers_are_listed_with_their_data_inline_or_external() {
    use mambac_compiler::emit::decode_graph::{initializers, InitializerData};
    let d = tmpdir("inits");
    let ckpt = Checkpoint::open(&testdata("mamba-tiny-hf")).unwrap();
    for (name, ext) in [("inline.onnx", ExternalData::Never), ("external.onnx", ExternalData::Always)] {
        let out = d.join(name);
        let opts = ExportOptions {
            compile: CompileOptions {
                lower: LowerOptions { dtype: Elem::F16, stateful: true, ..Default::default() },
                fuse: true,
                max_rewrites: None,
            },
            external_data: ext,
        };
        let report = export(&ckpt, &out, &opts, &mut |_, _| {}).unwrap();
        let refs = initializers(&out).unwrap();
        let w =
            refs.iter().find(|r| r.name == "backbone.layers.1.mixer.in_proj.weight.T").expect("in_proj weight listed");
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
    let _ = std::fs::remove_dir_all(&d);
}
