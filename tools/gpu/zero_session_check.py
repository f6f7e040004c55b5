"""Whether this onnxruntime's EP takes the runtime's zero-state model (tools/runtime/src/stateful/
zeros.rs) whole: one ConstantOfShape (value 0) of a state's shape, built the same way (shape as an
int64 input, IR 9), opened with `session.disable_cpu_ep_fallback` = 1 as the runtime opens it on
the CUDA EP. A model the EP cannot take all of is refused at creation, which is when the runtime
falls back to host zeros with a warning. (On the CPU EP, as in the runtime, the option is not
set: ORT refuses it beside an explicit CPU EP, "Conflicting session configuration".)

Cases: opset 19 (ConstantOfShape-9) float32 and float16, which the runtime emits without bfloat16
states and every ORT's CUDA EP must take; opset 20 bfloat16 (what it emits with bfloat16 states;
refused by ORT releases before microsoft/onnxruntime PR #27728); opset 21 float32 (what it
emitted before, for comparison: refused by those releases too). Runs the float32 and float16
ones and checks the output is zeros. Prints one line a case, then OK when the opset-19 cases
pass (exit status 0), else FAIL (1).

    python tools/gpu/zero_session_check.py            # CUDA EP
    python tools/gpu/zero_session_check.py --ep cpu   # dry run (tests/python runs it)
"""

import argparse
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

# (opset, element type, whether the runtime depends on it on every ORT release)
CASES = [
    (19, TensorProto.FLOAT, True),
    (19, TensorProto.FLOAT16, True),
    (20, TensorProto.BFLOAT16, False),
    (21, TensorProto.FLOAT, False),
]
DIMS = [80, 64, 128]  # mamba2-2.7b's SSM state after the batch
BATCH = 3
NUMPY = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16}


def zero_model(opset, elem):
    rank = len(DIMS) + 1
    value = helper.make_tensor("value", elem, [1], [0])
    node = helper.make_node("ConstantOfShape", ["shape.0"], ["ssm_state.0"], name="zeros:ssm_state.0", value=value)
    graph = helper.make_graph(
        [node],
        "mambac_zero_states",
        [helper.make_tensor_value_info("shape.0", TensorProto.INT64, [rank])],
        [helper.make_tensor_value_info("ssm_state.0", elem, ["batch", *DIMS])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="mambac-runtime")
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def check(opset, elem, providers):
    opts = ort.SessionOptions()
    if providers[0] == "CUDAExecutionProvider":
        opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(zero_model(opset, elem), opts, providers=providers)
    except Exception as e:  # ORT raises its own Fail/InvalidGraph types
        return False, f"refused: {str(e).splitlines()[0][:200]}"
    if elem not in NUMPY:
        return True, "created"
    (out,) = sess.run(None, {"shape.0": np.array([BATCH, *DIMS], dtype=np.int64)})
    ok = out.dtype == NUMPY[elem] and list(out.shape) == [BATCH, *DIMS] and not out.view(np.uint8).any()
    return ok, "created, ran: zeros" if ok else f"created, ran: wrong output {out.dtype} {out.shape}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ep", choices=["cuda", "cpu"], default="cuda")
    args = ap.parse_args()
    providers = ["CUDAExecutionProvider"] if args.ep == "cuda" else ["CPUExecutionProvider"]
    fallback = ", session.disable_cpu_ep_fallback=1" if args.ep == "cuda" else ""
    print(f"onnxruntime {ort.__version__}, {providers[0]}{fallback}")
    needed_ok = True
    for opset, elem, needed in CASES:
        ok, what = check(opset, elem, providers)
        print(f"  opset {opset} {TensorProto.DataType.Name(elem).lower()}: {what}")
        needed_ok &= ok or not needed
    print("OK" if needed_ok else "FAIL")
    return 0 if needed_ok else 1


if __name__ == "__main__":
    sys.exit(main())
