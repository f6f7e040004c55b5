#!/usr/bin/env python3
"""End to end on ONNX Runtime's CUDA execution provider (H200): the exported models, the fused
ops, `mambac generate/bench --ep cuda`, and the 2.8b-shape model beside Hugging Face's PyTorch
fallback measured in the same call.

Two steps:

  here (no GPU; needs the CUDA-enabled build and .venv):
    tools/setup-cuda.sh && CARGO_TARGET_DIR=target/cuda cargo build --release --features cuda -p mambac-ops -p mambac-tools
    .venv/bin/python tools/gpu/ort_cuda_e2e.py prepare          # -> .device/e2e (stripped binaries,
                                                                 #    fixture exports, CPU greedy ids)
  on the H200 (onnxruntime-gpu in /root/ortsite, carry .device/e2e):
    PYTHONPATH=/root/ortsite python3 tools/gpu/ort_cuda_e2e.py run --bundle .device/e2e --work /root/e2e

`run --ep cpu` runs the same checks on the CPU EP (a dry run of this script without a GPU;
`--big-preset tiny --prefill-len 64` keeps part C small there).

  A. Fixture exports (float32, float16, bfloat16) on the CUDA EP (use_tf32=0) against
     testdata/mamba-tiny-hf/reference.safetensors; the fused nodes' provider read from ORT's
     profile. One-node SelectiveScan / CausalConv1d / SsdScan models (every option, odd sizes, 3 dtypes)
     with inputs and NaN-poisoned outputs bound on the device (IoBinding), with
     session.disable_cpu_ep_fallback=1 (a node the CUDA EP does not take fails the session),
     against the float64 references of tests/python/ops_reference.py.
  B. The stateful export through IoBinding with device-resident, NaN-poisoned ping-pong state
     buffers: prefill k then decode one token at a time, and uneven chunks, against the reference
     logits and states; the `mambac` binary: generate --ep cuda --greedy --json (ids compared with
     the CPU EP's, computed by `prepare`), bench --ep cuda.
     The decode graph (`--decode-graph`, one MambaLayerStep a layer) against the stateful model
     on the EP, float32 and float16; generate/bench with it (the default on the CUDA EP), with
     `--decode-graph off` and with `--no-cuda-graph`.
  C. `mambac synth --preset 2.8b --dtype float16` + export --stateful --logits last --decode-graph
     on the device, `mambac bench --ep cuda` (prefill of 2048 tokens at batch 1, decode at batch 1
     and 8; also with --decode-graph off and --no-cuda-graph), and
     transformers' MambaForCausalLM (same config, random init, fp16, no mamba_ssm: its PyTorch
     fallback) prefill of 2048 tokens and greedy decode at batch 1.

  Q. `--quantize int8|int4` exports: the tiny fixture's logits on the CUDA EP against the CPU EP's
     for the same quantized model, then the 2.8b shape quantized and benchmarked.

Where a decode step's time goes (GEMV layouts, CUDA-graph replay, GPU time): decode_probe.py
(it replaced this script's former part D).

Prints a summary table last; with $OUT set, also writes $OUT/ort-cuda-e2e.json.
"""

import argparse
import ctypes
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO / "testdata"
FIXTURE = TESTDATA / "mamba-tiny-hf"
PROMPTS = [[17, 900, 3, 44, 1000, 12, 7], [500, 2]]
GEN_TOKENS = 12
SAMPLED = ["--temperature", "1.0", "--top-k", "50", "--seed", "3"]  # differences of 1e-6 in the logits do not move these draws
MODEL_TIERS = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}  # docs/op-contract.md, model logits
OP_TIERS = {"float32": (1e-5, 1e-5), "float16": (3e-3, 5e-3), "bfloat16": (3e-2, 5e-2)}  # (rtol, atol)
ONNX_T = {"float32": 1, "float16": 10, "bfloat16": 16}  # TensorProto element types
STORE = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}  # bfloat16 as its bits
SCAN_INPUTS = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]
CONV_INPUTS = ["x", "weight", "bias", "initial_state"]
SSD_INPUTS = ["x", "dt", "A", "B", "C", "D", "dt_bias", "initial_state"]

RESULTS = {"checks": [], "timings": {}}
T_START = time.time()


def log(*a):
    print(*a, flush=True)


def record(part, what, ok, detail=""):
    RESULTS["checks"].append({"part": part, "what": what, "ok": bool(ok), "detail": detail})
    log(f"  [{'PASS' if ok else 'FAIL'}] {part} {what} {detail}")


def guarded(part, fn, *a, label=None, **kw):
    """Runs one section; an exception is recorded as a failure and the script goes on."""
    try:
        return fn(*a, **kw)
    except Exception as e:  # noqa: BLE001 - every section must report, not stop the call
        traceback.print_exc()
        record(part, f"{label or fn.__name__} raised", False, f"{type(e).__name__}: {str(e)[:400]}")
        return None


# ---------------------------------------------------------------- bfloat16 without ml_dtypes


def bf16_bits(x):
    """float32 -> bfloat16 bits, round to nearest even (inputs here are finite)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_to_f32(bits):
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_store(x32, dtype):
    """float32 data -> (array as stored for `dtype`, float64 of the rounded values)."""
    if dtype == "bfloat16":
        b = bf16_bits(x32)
        return b, bf16_to_f32(b).astype(np.float64)
    s = np.asarray(x32).astype(STORE[dtype])
    return s, s.astype(np.float64)


def from_store(a, dtype):
    return bf16_to_f32(a).astype(np.float64) if dtype == "bfloat16" else np.asarray(a, np.float64)


def nan_store(shape, dtype):
    if dtype == "bfloat16":
        return np.full(shape, 0x7FC0, np.uint16)
    return np.full(shape, np.nan, STORE[dtype])


# ---------------------------------------------------------------- device buffers


class Mem:
    """Raw buffers where the EP computes: CUDA memory through torch (bytes only), or host numpy."""

    def __init__(self, ep):
        self.cuda = ep == "cuda"
        if self.cuda:
            import torch

            self.torch = torch
        self.device = "cuda" if self.cuda else "cpu"

    def put(self, arr):
        arr = np.ascontiguousarray(arr)
        if self.cuda:
            t = self.torch.from_numpy(arr.view(np.uint8).reshape(-1).copy()).to("cuda")
            return {"t": t, "ptr": t.data_ptr(), "dtype": arr.dtype, "shape": arr.shape}
        a = arr.copy()
        return {"t": a, "ptr": a.ctypes.data, "dtype": a.dtype, "shape": a.shape}

    def get(self, buf):
        if self.cuda:
            self.torch.cuda.synchronize()
            raw = buf["t"].cpu().numpy()
        else:
            raw = buf["t"].view(np.uint8).reshape(-1)
        return raw.view(buf["dtype"]).reshape(buf["shape"]).copy()

    def fill(self, buf, arr):
        """Overwrites `buf` with `arr` (same byte size): poisoning before a run."""
        src = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
        if self.cuda:
            buf["t"].copy_(self.torch.from_numpy(src.copy()).to("cuda"))
            self.torch.cuda.synchronize()
        else:
            buf["t"].view(np.uint8).reshape(-1)[:] = src

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()


# ---------------------------------------------------------------- sessions


def ort_env(ep):
    """Imports onnxruntime (after torch on CUDA, so its CUDA libraries are loaded) and checks it."""
    if ep == "cuda":
        import torch  # noqa: F401 - loads libcudart / cuBLAS / cuDNN from torch's wheels first
    import onnxruntime as ort

    if ep == "cuda" and hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as e:  # noqa: BLE001
            log(f"ort.preload_dlls(): {e}")
    log(f"onnxruntime {ort.__version__} from {Path(ort.__file__).parent}; providers {ort.get_available_providers()}")
    if ep == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise SystemExit("CUDAExecutionProvider is not available: set PYTHONPATH to onnxruntime-gpu")
    return ort


class Runner:
    def __init__(self, ep, bundle, work):
        self.ep = ep
        self.ort = ort_env(ep)
        self.bundle = Path(bundle).resolve()
        self.work = Path(work).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "prof").mkdir(exist_ok=True)
        self.lib = str(self.bundle / "libmambac_ops.so")
        self.mambac = str(self.bundle / "mambac")
        self.mem = Mem(ep)
        self.want = "CUDAExecutionProvider" if ep == "cuda" else "CPUExecutionProvider"
        self._n = 0

    def providers(self, strict=False):
        if self.ep == "cuda":
            cuda = [("CUDAExecutionProvider", {"device_id": "0", "use_tf32": "0"})]
            return cuda if strict else cuda + ["CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def session(self, model, strict=False, profile=True, disabled_optimizers=None):
        """strict: session.disable_cpu_ep_fallback=1 (every node must go to the CUDA EP)."""
        so = self.ort.SessionOptions()
        so.register_custom_ops_library(self.lib)
        so.log_severity_level = 3
        if strict and self.ep == "cuda":
            so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        if profile:
            self._n += 1
            so.enable_profiling = True
            so.profile_file_prefix = str(self.work / "prof" / f"p{self._n}")
        src = model if isinstance(model, (str, bytes)) else str(model)
        kw = {"disabled_optimizers": disabled_optimizers} if disabled_optimizers else {}
        return self.ort.InferenceSession(src, so, providers=self.providers(strict), **kw)

    @staticmethod
    def fused_providers(sess):
        """{op_type: set(provider)} of the mambac nodes that ran, from ORT's profile."""
        path = sess.end_profiling()
        events = json.loads(Path(path).read_text())
        seen, placement = {}, {}
        for e in events:
            args = e.get("args") or {}
            if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
                continue
            placement.setdefault(args.get("provider"), set()).add(args.get("op_name"))
            if args.get("op_name") in ("SelectiveScan", "CausalConv1d", "MambaLayerStep", "SsdScan", "AddRmsNorm",
                                        "GatedRmsNorm"):
                seen.setdefault(args["op_name"], set()).add(args.get("provider"))
        os.unlink(path)
        Runner.last_placement = {k: sorted(v) for k, v in placement.items()}
        return seen

    def check_fused(self, part, what, sess, expect_ops=("SelectiveScan", "CausalConv1d", "AddRmsNorm")):
        seen = self.fused_providers(sess)
        ok = all(seen.get(op) == {self.want} for op in expect_ops)
        record(part, f"{what}: fused nodes on {self.want}", ok,
               f"{ {k: sorted(v) for k, v in seen.items()} }; op types by provider {Runner.last_placement}")
        return ok

    def env(self):
        """Environment for the mambac binary: this onnxruntime's library, the CUDA libraries of
        the Python wheels (libonnxruntime_providers_cuda.so needs cuBLAS / cuDNN / cudart)."""
        env = dict(os.environ)
        capi = Path(self.ort.__file__).parent / "capi"
        libs = sorted(capi.glob("libonnxruntime.so*"))
        if libs:
            env["ORT_DYLIB_PATH"] = str(libs[-1])
        if self.ep == "cuda":
            dirs = []
            for sp in sys.path:
                for pat in ("nvidia/*/lib", "nvidia/*/*/lib", "torch/lib"):
                    dirs += [d for d in glob.glob(os.path.join(sp, pat)) if os.path.isdir(d)]
            dirs += [str(capi)]
            dirs += [d for d in env.get("LD_LIBRARY_PATH", "").split(":") if d]
            env["LD_LIBRARY_PATH"] = ":".join(dict.fromkeys(dirs))
        env["MAMBAC_OPS_LIB"] = self.lib
        return env

    def mambac_run(self, *args, timeout=300):
        cmd = [self.mambac, *map(str, args)]
        log("$ " + " ".join(cmd))
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True, env=self.env(), timeout=timeout)
        dt = time.time() - t0
        tail = (r.stderr.strip().splitlines() or [""])[-6:]
        log(f"  rc {r.returncode} in {dt:.1f} s; stderr tail: " + " | ".join(tail))
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[1:3])} failed (rc {r.returncode}): {r.stderr[-1500:]}")
        return r


# ---------------------------------------------------------------- A. models and ops


def load_reference():
    from safetensors.numpy import load_file

    return load_file(str(FIXTURE / "reference.safetensors"))


def worst_rel(out, ref):
    out = np.asarray(out, np.float64)
    ref = np.asarray(ref, np.float64)
    if out.shape != ref.shape:
        return float("inf")
    d = np.abs(out - ref)
    if np.isnan(d).any():
        return float("inf")
    return float(d.max() / max(np.abs(ref).max(), 1e-30))


def ortvalue_to_f64(v):
    """A CPU OrtValue of float32 / float16 / bfloat16 -> float64 numpy."""
    if v.data_type() == "tensor(bfloat16)":
        shape = v.shape()
        n = int(np.prod(shape))
        bits = np.ctypeslib.as_array((ctypes.c_uint16 * n).from_address(v.data_ptr())).copy()
        return bf16_to_f32(bits).astype(np.float64).reshape(shape)
    return v.numpy().astype(np.float64)


def part_a_models(R):
    for dtype in ["float32", "float16", "bfloat16"]:
        guarded("A", part_a_model, R, dtype, label=f"fixture {dtype}")


def part_a_model(R, dtype):
    ref = load_reference()
    try:
        sess = R.session(R.bundle / f"tiny-{dtype}.onnx")
    except Exception as e:  # noqa: BLE001
        if "SimplifiedLayerNormalization" not in str(e):
            raise
        # ORT fuses the exported RMSNorm into SimplifiedLayerNormalization, which has no kernel for
        # this type on this EP: say so, and run the graph as exported (the fusion off).
        record("A", f"fixture {dtype}: ORT's SimplifiedLayerNormFusion leaves a node no EP can run", False,
               f"{str(e)[-160:]}; retrying with that fusion disabled")
        sess = R.session(R.bundle / f"tiny-{dtype}.onnx", disabled_optimizers=["SimplifiedLayerNormFusion"])
        dtype_note = " (SimplifiedLayerNormFusion disabled)"
    else:
        dtype_note = ""
    outs = sess.run_with_ort_values(["logits"], {"input_ids": R.ort.OrtValue.ortvalue_from_numpy(ref["input_ids"])})
    logits = ortvalue_to_f64(outs[0])
    err = worst_rel(logits, ref["logits"])
    RESULTS.setdefault("models", {})[dtype] = err
    record("A", f"fixture {dtype} logits{dtype_note}", err <= MODEL_TIERS[dtype], f"worst rel {err:.3e} (tier {MODEL_TIERS[dtype]:g})")
    R.check_fused("A", f"fixture {dtype}{dtype_note}", sess)


def make_one_node(op, slots, types, outputs, out_types, attrs):
    from onnx import TensorProto, helper

    node = helper.make_node(op, slots, outputs, domain="mambac", **attrs)
    inputs = [helper.make_tensor_value_info(n, types[n], None) for n in slots if n]
    outs = [helper.make_tensor_value_info(n, t, None) for n, t in zip(outputs, out_types) if n]
    g = helper.make_graph([node], op, inputs, outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("mambac", 1)], ir_version=9)
    assert TensorProto.FLOAT == 1
    return m.SerializeToString()


def scan_case_data(c, dtype, rng):
    b, L, d, n, g = c["b"], c["L"], c["d"], c["n"], c["g"]
    sp = c["sp"]
    f32 = lambda shape, s=1.0, m=0.0: (rng.standard_normal(shape) * s + m).astype(np.float32)  # noqa: E731
    raw = {
        "u": f32((b, L, d)),
        "delta": f32((b, L, d), 0.5, -1.0) if sp else np.abs(f32((b, L, d), 0.3)) + 0.01,
        "A": -np.exp(f32((d, n))),
        "B": f32((b, L, g, n)),
        "C": f32((b, L, g, n)),
        "D": f32((d,)),
        "z": f32((b, L, d)),
        "delta_bias": f32((d,), 0.5) if sp else np.abs(f32((d,), 0.1)),
        "initial_state": f32((b, d, n)),
    }
    t_inputs = {"u", "delta", "B", "C", "z"}  # T; the rest float32
    store, vals, types = {}, {}, {}
    for k, v in raw.items():
        dt = dtype if k in t_inputs else "float32"
        store[k], vals[k] = to_store(v, dt)
        types[k] = ONNX_T[dt]
    return store, vals, types


def ssd_case_data(c, dtype, rng):
    b, L, h, p, g, n, sp = c["b"], c["L"], c["h"], c["p"], c["g"], c["n"], c["sp"]
    f32 = lambda shape, s=1.0, m=0.0: (rng.standard_normal(shape) * s + m).astype(np.float32)  # noqa: E731
    raw = {
        "x": f32((b, L, h, p)),
        "dt": f32((b, L, h), 0.5, -1.0) if sp else np.abs(f32((b, L, h), 0.1)),
        "A": -np.exp(f32((h,), 0.5)),
        "B": f32((b, L, g, n)),
        "C": f32((b, L, g, n)),
        "D": f32((h,)),
        "dt_bias": f32((h,), 0.5, -1.0),
        "initial_state": f32((b, h, p, n)),
    }
    t_inputs = {"x", "dt", "B", "C"}  # T; the rest float32
    store, vals, types = {}, {}, {}
    for k, v in raw.items():
        dt = dtype if k in t_inputs else "float32"
        store[k], vals[k] = to_store(v, dt)
        types[k] = ONNX_T[dt]
    return store, vals, types


def conv_case_data(c, dtype, rng):
    b, L, d, w = c["b"], c["L"], c["d"], c["w"]
    f32 = lambda shape, s=1.0: (rng.standard_normal(shape) * s).astype(np.float32)  # noqa: E731
    raw = {"x": f32((b, L, d)), "weight": f32((d, w), 0.5), "bias": f32((d,), 0.3), "initial_state": f32((b, d, w - 1))}
    store, vals, types = {}, {}, {}
    for k, v in raw.items():
        store[k], vals[k] = to_store(v, dtype)
        types[k] = ONNX_T[dtype]
    return store, vals, types


SCAN_CASES = [
    # batch, seqlen, dim, dstate, groups, optional inputs, final_state, softplus
    dict(b=2, L=37, d=130, n=16, g=1, opt="D z delta_bias initial_state", final=True, sp=1),
    dict(b=1, L=1, d=5, n=16, g=1, opt="D", final=True, sp=0),
    dict(b=3, L=300, d=64, n=8, g=4, opt="z delta_bias initial_state", final=False, sp=1),
    dict(b=1, L=129, d=33, n=4, g=1, opt="", final=False, sp=1),
    dict(b=2, L=64, d=256, n=64, g=2, opt="D z delta_bias initial_state", final=True, sp=1),
    dict(b=1, L=2100, d=40, n=16, g=1, opt="D z delta_bias", final=True, sp=1),
    dict(b=8, L=1, d=1536, n=16, g=1, opt="D z delta_bias initial_state", final=True, sp=1),
    dict(b=1, L=7, d=48, n=3, g=3, opt="D delta_bias initial_state", final=True, sp=0),
]
SSD_CASES = [
    # batch, seqlen, heads, head_dim, groups, dstate, optional inputs, final_state, softplus, dt limit
    dict(b=2, L=37, h=6, p=24, g=3, n=64, opt="D dt_bias initial_state", final=True, sp=1, lim=None),
    dict(b=1, L=1, h=80, p=64, g=1, n=128, opt="D dt_bias initial_state", final=True, sp=1, lim=None),
    dict(b=2, L=300, h=8, p=16, g=2, n=16, opt="", final=False, sp=1, lim=(0.05, 0.5)),
    dict(b=1, L=7, h=3, p=5, g=1, n=1, opt="D initial_state", final=True, sp=0, lim=None),
    dict(b=1, L=64, h=16, p=64, g=8, n=128, opt="D dt_bias", final=True, sp=1, lim=None),
]
CONV_CASES = [
    dict(b=2, L=37, d=130, w=4, opt="bias initial_state", final=True, act="silu"),
    dict(b=1, L=1, d=5, w=4, opt="initial_state", final=True, act="none"),
    dict(b=3, L=300, d=64, w=3, opt="bias", final=True, act="silu"),
    dict(b=1, L=129, d=33, w=2, opt="", final=False, act="silu"),
    dict(b=2, L=50, d=96, w=5, opt="bias initial_state", final=True, act="silu"),
    dict(b=8, L=1, d=1536, w=4, opt="bias initial_state", final=True, act="silu"),
    dict(b=1, L=2, d=7, w=4, opt="bias", final=True, act="silu"),
]


def close(out, ref, dtype):
    """|out - ref| <= atol * max(1, max|ref|) + rtol * |ref| everywhere (atol on the tensor's
    scale, as the kernel conformance harness); NaN fails. Returns (ok, worst rel)."""
    rtol, atol = OP_TIERS[dtype]
    o = np.asarray(out, np.float64)
    if o.shape != ref.shape or np.isnan(o).any():
        return False, float("inf")
    scale = max(1.0, float(np.abs(ref).max()) if ref.size else 0.0)
    ok = bool((np.abs(o - ref) <= atol * scale + rtol * np.abs(ref)).all())
    return ok, worst_rel(o, ref)


def run_one_node(R, op, case, dtype, seed):
    sys.path.insert(0, str(REPO / "tests" / "python"))
    os.environ.setdefault("MAMBAC_OPS_LIB", R.lib)
    from ops_reference import causal_conv1d_ref, selective_scan_ref, ssd_scan_ref

    rng = np.random.default_rng(seed)
    opt = set(case["opt"].split())
    if op == "SelectiveScan":
        store, vals, types = scan_case_data(case, dtype, rng)
        slots = [n if (n in ("u", "delta", "A", "B", "C") or n in opt) else "" for n in SCAN_INPUTS]
        attrs = {"delta_softplus": case["sp"]}
        y, h = selective_scan_ref(*(vals[n] for n in SCAN_INPUTS[:5]), **{n: vals[n] for n in opt}, delta_softplus=bool(case["sp"]))
        out_t = [dtype, "float32"]
        shapes = [(case["b"], case["L"], case["d"]), (case["b"], case["d"], case["n"])]
    elif op == "SsdScan":
        store, vals, types = ssd_case_data(case, dtype, rng)
        slots = [n if (n in ("x", "dt", "A", "B", "C") or n in opt) else "" for n in SSD_INPUTS]
        lo, hi = case["lim"] or (0.0, float("inf"))
        attrs = {"dt_softplus": case["sp"]} | ({"dt_min": lo, "dt_max": hi} if case["lim"] else {})
        y, h = ssd_scan_ref(*(vals[n] for n in SSD_INPUTS[:5]), **{n: vals[n] for n in opt},
                            dt_softplus=bool(case["sp"]), dt_min=lo, dt_max=hi)
        out_t = [dtype, "float32"]
        shapes = [(case["b"], case["L"], case["h"], case["p"]), (case["b"], case["h"], case["p"], case["n"])]
    else:
        store, vals, types = conv_case_data(case, dtype, rng)
        slots = [n if (n in ("x", "weight") or n in opt) else "" for n in CONV_INPUTS]
        attrs = {"activation": case["act"]}
        y, h = causal_conv1d_ref(vals["x"], vals["weight"], **{n: vals[n] for n in opt}, silu=case["act"] == "silu")
        out_t = [dtype, dtype]
        shapes = [(case["b"], case["L"], case["d"]), (case["b"], case["d"], case["w"] - 1)]
    outputs = ["y", "final_state"] if case["final"] else ["y"]
    model = make_one_node(op, slots, types, outputs, [ONNX_T[t] for t in out_t], attrs)
    sess = R.session(model, strict=True)
    io = sess.io_binding()
    bufs = {}
    for n in slots:
        if n:
            bufs[n] = R.mem.put(store[n])
            io.bind_input(n, R.mem.device, 0, types[n], list(store[n].shape), bufs[n]["ptr"])
    outs = []
    for k, name in enumerate(outputs):
        buf = R.mem.put(nan_store(shapes[k], out_t[k]))  # poisoned: an unwritten element fails
        io.bind_output(name, R.mem.device, 0, ONNX_T[out_t[k]], list(shapes[k]), buf["ptr"])
        outs.append(buf)
    R.mem.sync()
    sess.run_with_iobinding(io)
    io.synchronize_outputs()
    got = [from_store(R.mem.get(b), t) for b, t in zip(outs, out_t)]
    ok_y, e_y = close(got[0], y, dtype)
    ok_h, e_h = close(got[1], h, dtype) if case["final"] else (True, 0.0)
    seen = R.fused_providers(sess)
    on_ep = seen.get(op) == {R.want}
    key = f"{op} {dtype}"
    agg = RESULTS.setdefault("ops", {}).setdefault(key, {"n": 0, "pass": 0, "worst_y": 0.0, "worst_state": 0.0})
    agg["n"] += 1
    agg["pass"] += int(ok_y and ok_h and on_ep)
    agg["worst_y"] = max(agg["worst_y"], e_y)
    agg["worst_state"] = max(agg["worst_state"], e_h)
    if op == "SsdScan":
        shape = "b{b} L{L} h{h} p{p} g{g} n{n} sp{sp} lim{lim}".format(**case)
    else:
        shape = "b{b} L{L} d{d}".format(**case) + (f" n{case['n']} g{case['g']} sp{case['sp']}" if op == "SelectiveScan" else f" w{case['w']} {case['act']}")
    record("A", f"{key} [{shape} opt={case['opt'] or '-'} final={case['final']}]", ok_y and ok_h and on_ep,
           f"y {e_y:.2e} state {e_h:.2e} on {sorted(seen.get(op, []))}")


def part_a_ops(R):
    for dtype in ["float32", "float16", "bfloat16"]:
        for i, c in enumerate(SCAN_CASES):
            guarded("A", run_one_node, R, "SelectiveScan", c, dtype, 100 + i)
        for i, c in enumerate(CONV_CASES):
            guarded("A", run_one_node, R, "CausalConv1d", c, dtype, 200 + i)
        for i, c in enumerate(SSD_CASES):
            guarded("A", run_one_node, R, "SsdScan", c, dtype, 300 + i)


# ---------------------------------------------------------------- B. stateful model, mambac binary


def part_b_stateful(R):
    ref = load_reference()
    ids = ref["input_ids"]
    batch, total = ids.shape
    sess = R.session(R.bundle / "tiny-stateful.onnx")
    state_in = [i for i in sess.get_inputs() if i.name != "input_ids"]
    assert all(i.type == "tensor(float)" for i in state_in), [i.type for i in state_in]
    shapes = {i.name: [batch] + list(i.shape[1:]) for i in state_in}
    out_of = {n: n.replace("_state.", "_state_out.") for n in shapes}
    for schedule_name, bounds in [
        ("prefill 1 + 36 decode steps", [0] + list(range(1, total + 1))),
        ("prefill 12 + 25 decode steps", [0] + list(range(12, total + 1))),
        ("uneven chunks 5,1,1,12,1,17", [0, 5, 6, 7, 19, 20, total]),
    ]:
        cur = {n: R.mem.put(np.zeros(s, np.float32)) for n, s in shapes.items()}
        nxt = {n: R.mem.put(np.zeros(s, np.float32)) for n, s in shapes.items()}
        logits = []
        io = sess.io_binding()
        for a, b in zip(bounds, bounds[1:]):
            for n, s in shapes.items():
                R.mem.fill(nxt[n], np.full(s, np.nan, np.float32))
            io.clear_binding_inputs()
            io.clear_binding_outputs()
            io.bind_cpu_input("input_ids", np.ascontiguousarray(ids[:, a:b]))
            io.bind_output("logits", "cpu")
            for n, s in shapes.items():
                io.bind_input(n, R.mem.device, 0, 1, s, cur[n]["ptr"])
                io.bind_output(out_of[n], R.mem.device, 0, 1, s, nxt[n]["ptr"])
            R.mem.sync()
            sess.run_with_iobinding(io)
            io.synchronize_outputs()
            logits.append(io.get_outputs()[0].numpy().astype(np.float64))
            cur, nxt = nxt, cur
        err = worst_rel(np.concatenate(logits, axis=1), ref["logits"])
        st = {}
        for i in range(len(shapes) // 2):
            st[f"ssm{i}"] = worst_rel(R.mem.get(cur[f"ssm_state.{i}"]), ref[f"ssm_states.{i}"])
            st[f"conv{i}"] = worst_rel(R.mem.get(cur[f"conv_state.{i}"]), ref[f"conv_states.{i}"][:, :, 1:])
        worst_state = max(st.values())
        RESULTS.setdefault("stateful", {})[schedule_name] = {"logits": err, "states": worst_state}
        record("B", f"stateful IoBinding, device states: {schedule_name}", err <= 1e-4 and worst_state <= 1e-4,
               f"logits worst rel {err:.3e}, final states {worst_state:.3e} (tier 1e-4)")
    R.check_fused("B", "stateful", sess)


def part_b_decode_graph(R):
    """The decode graph (one MambaLayerStep a layer) on the EP: from the states of a 9-token
    prefill, four one-token steps (batch 3, random tokens) on the decode graph against the same
    steps on the stateful model, both on this EP, logits and states (float32: 1e-5; float16: its
    tier), and against the decode graph on the CPU EP."""
    import onnxruntime as ort

    rng = np.random.default_rng(11)
    for name, tier in [("tiny-stateful", 1e-5), ("tiny-stateful-f16", 3e-3)]:
        general = R.session(R.bundle / f"{name}.onnx")
        decode = R.session(R.bundle / f"{name}.decode.onnx")
        so = ort.SessionOptions()
        so.register_custom_ops_library(R.lib)
        cpu = ort.InferenceSession(str(R.bundle / f"{name}.decode.onnx"), so, providers=["CPUExecutionProvider"])
        outs = [o.name for o in general.get_outputs()]
        states = {i.name: np.zeros([3] + list(i.shape[1:]), np.float16 if "float16" in i.type else np.float32)
                  for i in general.get_inputs() if i.name != "input_ids"}
        res = dict(zip(outs, general.run(outs, {"input_ids": rng.integers(0, 1000, (3, 9)), **states})))
        states = {k: res[k.replace("_state.", "_state_out.")] for k in states}
        worst, worst_cpu = 0.0, 0.0
        for _ in range(4):
            tok = rng.integers(0, 1000, (3, 1))
            got = dict(zip(outs, decode.run(outs, {"input_ids": tok, **states})))
            want = dict(zip(outs, general.run(outs, {"input_ids": tok, **states})))
            on_cpu = dict(zip(outs, cpu.run(outs, {"input_ids": tok, **states})))
            worst = max(worst, *(worst_rel(got[o], want[o]) for o in outs))
            worst_cpu = max(worst_cpu, *(worst_rel(got[o], on_cpu[o]) for o in outs))
            states = {k: want[k.replace("_state.", "_state_out.")] for k in states}
        RESULTS.setdefault("decode_graph", {})[name] = {"vs_stateful": worst, "vs_cpu": worst_cpu}
        record("B", f"decode graph {name} on {R.ep}: 4 steps vs the stateful model / vs the CPU EP", worst <= tier and worst_cpu <= tier,
               f"worst rel {worst:.2e} / {worst_cpu:.2e} (tier {tier:g})")
        R.check_fused("B", f"decode graph {name}", decode, expect_ops=("MambaLayerStep",))


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def part_b_binary(R):
    """The binary's generate and bench. On the CUDA EP both run twice: with one-token steps
    replayed as CUDA graphs (the default there) and with --no-cuda-graph; the ids must equal the
    CPU EP's either way."""
    expect = json.loads((R.bundle / "cpu_expect.json").read_text())
    model = R.bundle / "tiny-stateful.onnx"
    ep = R.ep
    arg = ";".join(",".join(map(str, p)) for p in PROMPTS)
    # On the CUDA EP: the default (decode graph beside the model, CUDA graphs), the general graph
    # for decode steps too, and no graph replay.
    modes = [[], ["--decode-graph", "off"], ["--no-cuda-graph"]] if ep == "cuda" else [[], ["--decode-graph", "on"]]
    for mode in modes:
        tag = " ".join([f"--ep {ep}"] + mode)
        r = R.mambac_run("generate", model, "--prompt-ids", arg, "--max-new-tokens", GEN_TOKENS, "--greedy", "--json", "--ep", ep, *mode)
        got = last_json(r.stdout)["ids"]
        record("B", f"mambac generate {tag} --greedy, 2 prompts (batched decode)", got == expect["batched"], f"ids {got} vs CPU {expect['batched']}")
        r = R.mambac_run("generate", model, "--prompt-ids", ",".join(map(str, PROMPTS[0])), "--max-new-tokens", GEN_TOKENS,
                         "--greedy", "--json", "--prefill-chunk", 3, "--ep", ep, *mode)
        got = last_json(r.stdout)["ids"]
        record("B", f"mambac generate {tag} --greedy, one prompt in chunks of 3", got == expect["single"], f"ids {got} vs CPU {expect['single']}")
        r = R.mambac_run("generate", model, "--prompt-ids", arg, "--max-new-tokens", 24, *SAMPLED, "--json", "--ep", ep, *mode)
        got = last_json(r.stdout)["ids"]
        record("B", f"mambac generate {tag} {' '.join(SAMPLED)}, 2 prompts", got == expect["sampled"], f"ids {got} vs CPU {expect['sampled']}")
        for batch in (1, 8):
            r = R.mambac_run("bench", model, "--ep", ep, "--batch", batch, "--prompt-len", 64, "--decode-tokens", 32,
                             "--warmup", 1, "--reps", 3, "--json", *mode)
            j = last_json(r.stdout)
            RESULTS["timings"][f"tiny bench batch {batch} {' '.join(mode)}".strip()] = j
            want_graph = ep == "cuda" and "--no-cuda-graph" not in mode
            # auto: the decode graph up to batch 8 (DECODE_GRAPH_MAX_BATCH), on: at any batch
            want_decode = (ep == "cuda" and "off" not in mode and batch <= 8) or "on" in mode
            record("B", f"mambac bench {tag} (tiny, batch {batch}): CUDA graph {want_graph}, decode graph {want_decode}",
                   j.get("cuda_graph") == want_graph and j.get("decode_graph") == want_decode, json.dumps(j)[:300])


# ---------------------------------------------------------------- C. 2.8b shape


class BigModel(threading.Thread):
    """synth + export in the background while parts A and B use the GPU."""

    def __init__(self, R, preset, dtype):
        super().__init__(daemon=True)
        self.R, self.preset, self.dtype = R, preset, dtype
        self.ckpt = R.work / f"synth-{preset}"
        self.model = R.work / f"m-{preset}-{dtype}-stateful-last.onnx"
        self.error = None
        self.times = {}

    def run(self):
        try:
            if not self.model.exists():
                free = shutil.disk_usage(self.R.work).free / 1e9
                log(f"[C] disk free under {self.R.work}: {free:.1f} GB")
                t0 = time.time()
                self.R.mambac_run("synth", "--preset", self.preset, "--dtype", self.dtype, "--seed", 1, self.ckpt, timeout=400)
                self.times["synth_s"] = time.time() - t0
                t0 = time.time()
                self.R.mambac_run("export", self.ckpt, "-o", self.model, "--dtype", self.dtype, "--stateful", "--logits", "last",
                                  "--decode-graph", "-q")
                self.times["export_s"] = time.time() - t0
                log(f"[C] synth {self.times['synth_s']:.1f} s, export {self.times['export_s']:.1f} s")
        except Exception as e:  # noqa: BLE001
            self.error = e


class GpuMemPeak:
    """Peak of nvidia-smi's memory.used (MiB) while the block runs, sampled every 0.1 s: what a
    `mambac bench` process holds on the device (the decode graph's session shares the weights)."""

    def __enter__(self):
        self.peak, self.stop = 0, threading.Event()

        def sample():
            while not self.stop.is_set():
                try:
                    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                         capture_output=True, text=True, timeout=5).stdout
                    self.peak = max(self.peak, int(out.split()[0]))
                except Exception:  # noqa: BLE001  (no nvidia-smi: the CPU dry run)
                    return
                self.stop.wait(0.1)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.thread.join()


def hf_anchor(prefill_len, decode_tokens, reps, preset):
    """transformers' MambaForCausalLM, random init, fp16 on cuda, no mamba_ssm (PyTorch fallback)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import inspect

    import torch
    import transformers
    from transformers import MambaConfig, MambaForCausalLM

    shapes = {"2.8b": (2560, 64), "tiny": (64, 2), "130m": (768, 24)}
    hidden, layers = shapes[preset]
    cfg = MambaConfig(hidden_size=hidden, num_hidden_layers=layers, vocab_size=50280, state_size=16, conv_kernel=4,
                      expand=2, tie_word_embeddings=True, use_cache=True)
    torch.manual_seed(0)
    t0 = time.time()
    with torch.device("cuda"):
        model = MambaForCausalLM(cfg)
    model = model.half().eval()
    torch.cuda.synchronize()
    init_s = time.time() - t0
    try:
        from transformers.models.mamba import modeling_mamba as mm

        fast = getattr(mm, "is_fast_path_available", None)
    except Exception:  # noqa: BLE001
        fast = None
    params = sum(p.numel() for p in model.parameters())
    log(f"[C] HF transformers {transformers.__version__}, torch {torch.__version__}: MambaForCausalLM {params / 1e9:.2f} B params "
        f"(hidden {hidden}, {layers} layers), fp16, made on cuda in {init_s:.1f} s; mamba_ssm fast path available: {fast}")
    kw = {"use_cache": True}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        kw["logits_to_keep"] = 1  # the cheaper call for HF: no 2048 x 50280 logits
    g = torch.Generator(device="cpu").manual_seed(0)

    def prefill(n):
        ids = torch.randint(0, 50280, (1, n), generator=g).to("cuda")
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            model(input_ids=ids, **kw)
        torch.cuda.synchronize()
        return time.perf_counter() - t

    prefill(64)  # warm-up
    pre = [prefill(prefill_len) for _ in range(reps)]
    prefill_s = statistics.median(pre)

    def gen(n):
        ids = torch.randint(0, 50280, (1, 8), generator=g).to("cuda")
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        torch.cuda.synchronize()
        assert out.shape[1] == 8 + n, out.shape
        return time.perf_counter() - t

    gen(4)  # warm-up
    short, long_ = 8, 8 + decode_tokens
    rates = []
    for _ in range(reps):
        ts, tl = gen(short), gen(long_)
        rates.append(decode_tokens / (tl - ts))
    res = {
        "prefill_tokens": prefill_len, "prefill_s": pre, "prefill_tok_s": prefill_len / prefill_s,
        "decode_tok_s": statistics.median(rates), "decode_tok_s_all": rates, "params_b": params / 1e9,
        "logits_to_keep": kw.get("logits_to_keep"), "fast_path": str(fast), "transformers": transformers.__version__,
        "decode_method": f"generate(greedy) {long_} minus {short} new tokens after an 8-token prompt, same call",
    }
    del model
    torch.cuda.empty_cache()
    return res


def part_c(R, big, args):
    big.join()
    if big.error:
        raise big.error
    RESULTS["timings"]["make 2.8b"] = big.times
    ours = {}
    RESULTS["timings"]["mambac"] = ours
    nograph, general = {}, {}
    RESULTS["timings"]["mambac_no_cuda_graph"] = nograph
    RESULTS["timings"]["mambac_decode_graph_off"] = general
    def bench(batch, plen, *extra):
        with GpuMemPeak() as mem:
            r = R.mambac_run("bench", big.model, "--ep", R.ep, "--batch", batch, "--prompt-len", plen, "--decode-tokens",
                             args.decode_tokens, "--warmup", 1, "--reps", args.reps, "--json", *extra)
        j = last_json(r.stdout)
        j["peak_gpu_mem_mib"] = mem.peak
        log(f"  bench batch {batch} {' '.join(extra)}: {json.dumps(j)}")
        return j

    for batch in (int(b) for b in args.batches.split(",")):
        ours[batch] = bench(batch, args.prefill_len if batch == 1 else 16)
        if R.ep == "cuda" and batch > 8:  # past DECODE_GRAPH_MAX_BATCH: the decode graph forced
            RESULTS["timings"].setdefault("mambac_decode_graph_on", {})[batch] = bench(batch, 16, "--decode-graph", "on")
        if R.ep == "cuda" and not args.fast:  # decode steps on the general graph (what the decode graph buys), and without graph replay
            general[batch] = bench(batch, 16, "--decode-graph", "off")
            nograph[batch] = bench(batch, 16, "--no-cuda-graph")
    record("C", f"mambac bench --ep {R.ep} on the {args.big_preset} float16 export", True, "")
    if not args.skip_hf:
        reps = args.hf_reps if time.time() - T_START < args.hf_deadline else 1
        hf = guarded("C", hf_anchor, args.prefill_len, args.hf_decode_tokens, reps, args.big_preset)
        if hf:
            RESULTS["timings"]["hf"] = hf
            record("C", "HF anchor", True, f"prefill {hf['prefill_tok_s']:.1f} tok/s, decode b1 {hf['decode_tok_s']:.2f} tok/s")


# ---------------------------------------------------------------- Q. quantized exports


def part_q(R, big, args):
    """`mambac export --quantize int8|int4` on the CUDA EP: the tiny fixture's logits against the
    CPU EP's for the same quantized model (the op is ORT's MatMulNBits on both), then the 2.8b
    shape quantized from the same synthetic checkpoint, decode through `mambac bench`."""
    ref = load_reference()
    for q in ["int8", "int4"]:
        path = R.work / f"tiny-{q}.onnx"
        R.mambac_run("export", FIXTURE, "-o", path, "--quantize", q, "--accuracy-level", 0, "-q")
        cpu = R.ort.InferenceSession(str(path), _so(R), providers=["CPUExecutionProvider"])
        (want,) = cpu.run(["logits"], {"input_ids": ref["input_ids"]})
        try:
            (got,) = R.session(path, profile=False).run(["logits"], {"input_ids": ref["input_ids"]})
            err = worst_rel(got, want)
            record("Q", f"tiny {q} export: CUDA EP logits vs CPU EP (same quantized model)", err <= 1e-4, f"worst rel {err:.2e}")
        except Exception as e:  # noqa: BLE001
            record("Q", f"tiny {q} export on the CUDA EP", False, str(e)[:400])
    big.join()
    if big.error:
        raise big.error
    out = {}
    RESULTS["timings"]["quantized"] = out
    for q in ["int4", "int8"]:
        model = R.work / f"m-{args.big_preset}-float16-{q}.onnx"
        try:
            if not model.exists():
                R.mambac_run("export", big.ckpt, "-o", model, "--dtype", "float16", "--stateful", "--logits", "last", "--quantize", q, "-q")
            for batch in (1, 8):
                r = R.mambac_run("bench", model, "--ep", R.ep, "--batch", batch, "--prompt-len", 16, "--decode-tokens",
                                 args.decode_tokens, "--warmup", 1, "--reps", args.reps, "--json")
                out[f"{q} b{batch}"] = last_json(r.stdout)
                d = out[f"{q} b{batch}"]["decode"]
                log(f"  [Q] {args.big_preset} {q}, batch {batch}: decode {d['tokens_per_s']['median']:.1f} tok/s ({d['ms']['median']:.2f} ms/step)")
            record("Q", f"mambac bench --ep {R.ep} on the {args.big_preset} {q} export", True, "")
        except Exception as e:  # noqa: BLE001
            record("Q", f"{args.big_preset} {q} export / bench", False, str(e)[:600])


def _so(R):
    so = R.ort.SessionOptions()
    so.register_custom_ops_library(R.lib)
    so.log_severity_level = 3
    return so


# ---------------------------------------------------------------- summary


def pick(j, *keys):
    for k in keys:
        if isinstance(j, dict) and k in j:
            j = j[k]
        else:
            return None
    return j


def summary(args):
    log("\n================ summary ================")
    checks = RESULTS["checks"]
    fails = [c for c in checks if not c["ok"]]
    log(f"checks: {len(checks) - len(fails)} passed, {len(fails)} failed")
    for c in fails:
        log(f"  FAIL {c['part']} {c['what']}: {c['detail']}")
    log("\nfixture logits (worst rel vs float64 reference):")
    for dt, e in RESULTS.get("models", {}).items():
        log(f"  {dt:9s} {e:.3e}  (tier {MODEL_TIERS[dt]:g})")
    log("\none-node ops through the EP (pass/cases, worst rel y / final_state):")
    for k, a in RESULTS.get("ops", {}).items():
        log(f"  {k:24s} {a['pass']}/{a['n']}  {a['worst_y']:.2e} / {a['worst_state']:.2e}")
    log("\nstateful export, IoBinding with device states (worst rel logits / states):")
    for k, a in RESULTS.get("stateful", {}).items():
        log(f"  {k:32s} {a['logits']:.2e} / {a['states']:.2e}")
    t = RESULTS["timings"]
    ours, hf = t.get("mambac", {}), t.get("hf")
    if ours or hf:
        log(f"\n{args.big_preset} float16, {args.ep} (median of {args.reps}; HF median of {args.hf_reps}):")
        log("| what | mambac (ORT CUDA EP + libmambac_ops) | HF transformers fallback | ratio | target |")
        log("|---|---|---|---|---|")
        p_ours = pick(ours, 1, "prefill", "tokens_per_s", "median")
        p_ms = pick(ours, 1, "prefill", "ms", "median")
        d1 = pick(ours, 1, "decode", "tokens_per_s", "median")
        d1ms = pick(ours, 1, "decode", "ms", "median")
        d8 = pick(ours, 8, "decode", "tokens_per_s", "median")
        d8ms = pick(ours, 8, "decode", "ms", "median")
        hp = hf and hf["prefill_tok_s"]
        hd = hf and hf["decode_tok_s"]

        def fmt(v, unit, extra=None):
            return "—" if v is None else (f"{v:.1f} {unit}" + (f" ({extra:.1f} ms)" if extra is not None else ""))

        def ratio(a, b):
            return "—" if not a or not b else f"{a / b:.0f}x"

        log(f"| prefill {args.prefill_len} tokens, batch 1 | {fmt(p_ours, 'tok/s', p_ms)} | {fmt(hp, 'tok/s')} | {ratio(p_ours, hp)} | >= 100x |")
        log(f"| decode, batch 1 | {fmt(d1, 'tok/s', d1ms)} | {fmt(hd, 'tok/s')} | {ratio(d1, hd)} | >= 20x |")
        log(f"| decode, batch 8 | {fmt(d8, 'tok/s', d8ms)} | — | {ratio(d8, hd)} (vs HF batch 1) | — |")
        for key, label in [("mambac_decode_graph_off", "--decode-graph off"), ("mambac_no_cuda_graph", "--no-cuda-graph")]:
            ng = t.get(key, {})
            for b in (1, 8):
                v, ms = pick(ng, b, "decode", "tokens_per_s", "median"), pick(ng, b, "decode", "ms", "median")
                if v:
                    log(f"| decode, batch {b}, {label} | {fmt(v, 'tok/s', ms)} | — | {ratio(v, hd) if b == 1 else '—'} | — |")
        log(f"(mambac decode: CUDA graphs {pick(ours, 1, 'cuda_graph')}, decode graph {pick(ours, 1, 'decode_graph')}; "
            f"peak GPU memory of the bench process, batch 1: {pick(ours, 1, 'peak_gpu_mem_mib')} MiB with the decode graph, "
            f"{pick(t.get('mambac_decode_graph_off', {}), 1, 'peak_gpu_mem_mib')} MiB without)")
    for k, a in RESULTS.get("decode_graph", {}).items():
        log(f"decode graph {k}: vs stateful model {a['vs_stateful']:.2e}, vs CPU EP {a['vs_cpu']:.2e}")
    qt = t.get("quantized") or {}
    for key, j in qt.items():
        v, ms = pick(j, "decode", "tokens_per_s", "median"), pick(j, "decode", "ms", "median")
        log(f"| decode, {key} (`--quantize`, MatMulNBits) | {v:.1f} tok/s ({ms:.2f} ms) | — | — | — |")
    out = os.environ.get("OUT")
    if out:
        Path(out, "ort-cuda-e2e.json").write_text(json.dumps(RESULTS, indent=1, default=str))
    return 1 if fails else 0


# ---------------------------------------------------------------- prepare (here)


def prepare(args):
    bins = Path(args.bin_dir).resolve()
    b = Path(args.bundle)
    b.mkdir(parents=True, exist_ok=True)
    for name in ["libmambac_ops.so", "mambac"]:
        shutil.copy2(bins / name, b / name)
        subprocess.run(["strip", "--strip-unneeded", str(b / name)], check=True)
    mambac = str(b / "mambac")
    for dtype in ["float32", "float16", "bfloat16"]:
        subprocess.run([mambac, "export", str(FIXTURE), "-o", str(b / f"tiny-{dtype}.onnx"), "--dtype", dtype, "-q"], check=True)
    subprocess.run([mambac, "export", str(FIXTURE), "-o", str(b / "tiny-stateful.onnx"), "--stateful", "--decode-graph", "-q"], check=True)
    subprocess.run([mambac, "export", str(FIXTURE), "-o", str(b / "tiny-stateful-f16.onnx"), "--stateful", "--decode-graph",
                    "--dtype", "float16", "-q"], check=True)
    env = dict(os.environ, MAMBAC_OPS_LIB=str(b / "libmambac_ops.so"))

    def gen(*extra, tokens=GEN_TOKENS):
        mode = [] if "--temperature" in extra else ["--greedy"]
        r = subprocess.run([mambac, "generate", str(b / "tiny-stateful.onnx"), "--max-new-tokens", str(tokens), *mode,
                            "--json", "--ep", "cpu", *extra], capture_output=True, text=True, env=env, check=True)
        return last_json(r.stdout)["ids"]

    expect = {
        "batched": gen("--prompt-ids", ";".join(",".join(map(str, p)) for p in PROMPTS)),
        "single": gen("--prompt-ids", ",".join(map(str, PROMPTS[0]))),
        "sampled": gen("--prompt-ids", ";".join(",".join(map(str, p)) for p in PROMPTS), *SAMPLED, tokens=24),
    }
    (b / "cpu_expect.json").write_text(json.dumps(expect))
    total = sum(f.stat().st_size for f in b.iterdir())
    print(f"bundle {b}: {total / 2**20:.1f} MiB; CPU greedy ids {expect}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--bin-dir", default=str(REPO / "target/cuda/release"))
    p.add_argument("--bundle", default=str(REPO / ".device/e2e"))
    r = sub.add_parser("run")
    r.add_argument("--bundle", default=str(REPO / ".device/e2e"))
    r.add_argument("--work", default="/root/e2e")
    r.add_argument("--ep", choices=["cuda", "cpu"], default="cuda")
    r.add_argument("--parts", default="abc")
    r.add_argument("--big-preset", default="2.8b")
    r.add_argument("--prefill-len", type=int, default=2048)
    r.add_argument("--decode-tokens", type=int, default=64)
    r.add_argument("--reps", type=int, default=5)
    r.add_argument("--hf-reps", type=int, default=2)
    r.add_argument("--hf-decode-tokens", type=int, default=32)
    r.add_argument("--skip-hf", action="store_true")
    r.add_argument("--batches", default="1,8", help="C: decode batch sizes (batch 1 also times the prefill)")
    r.add_argument("--fast", action="store_true", help="C: only the default path (no --decode-graph off / --no-cuda-graph)")
    r.add_argument("--hf-deadline", type=float, default=420, help="past this many seconds, the HF anchor runs once")
    args = ap.parse_args()
    if args.cmd == "prepare":
        return prepare(args)
    t_start = time.time()
    R = Runner(args.ep, args.bundle, args.work)
    if args.ep == "cuda":
        import torch

        log(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
        subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,memory.used,utilization.gpu", "--format=csv"])
    big = None
    if "c" in args.parts or "q" in args.parts:
        big = BigModel(R, args.big_preset, "float16")
        big.start()
    if "a" in args.parts:
        log("\n== A. fixture models and one-node ops on the EP ==")
        guarded("A", part_a_models, R)
        part_a_ops(R)
    if "b" in args.parts:
        log("\n== B. stateful model with device states; mambac generate / bench ==")
        guarded("B", part_b_stateful, R)
        guarded("B", part_b_decode_graph, R)
        guarded("B", part_b_binary, R)
    if big is not None and "c" in args.parts:
        log("\n== C. 2.8b shape: mambac bench vs HF fallback ==")
        guarded("C", part_c, R, big, args)
    if big is not None and "q" in args.parts:
        log("\n== Q. quantized exports (MatMulNBits) ==")
        guarded("Q", part_q, R, big, args)
    log(f"\nwall time {time.time() - t_start:.0f} s")
    return summary(args)


if __name__ == "__main__":
    sys.exit(main())
