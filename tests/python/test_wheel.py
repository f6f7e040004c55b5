"""The `mambac` Python package as a user gets it (pyproject.toml, docs/python-package.md): the
wheel `pip wheel .` builds, installed into a fresh venv with the pinned onnxruntime, numpy and onnx
of tools/requirements.txt, used from a folder outside the repository.

Checked: the wheel's tag and files; the op library it ships needs glibc 2.28 at most, no
libstdc++, is stripped and exports ONNX Runtime's entry point alone; `mambac.get_library_path()`
loads into onnxruntime and each op matches the float64 reference; the OpRun classes
(`mambac.reference.OPS`) under `onnx.reference.ReferenceEvaluator` match onnxruntime; the
`mambac` command runs and has the same glibc floor; custom-ops/README.md's Python snippet runs.

MAMBAC_WHEEL=path/to/mambac-*.whl tests that wheel instead of building one. The build is
incremental in target/wheel/; from cold it compiles the op library and the command with zig.
"""

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mambac_testing import ROOT
from ops_reference import (
    CONV_INPUTS,
    LAYER_STEP_INPUTS,
    MAMBA2_STEP_INPUTS,
    SCAN_INPUTS,
    SSD_INPUTS,
    assert_close,
    causal_conv1d_ref,
    f64,
    mamba2_layer_step_ref,
    mamba_layer_step_ref,
    one_node_model,
    selective_scan_ref,
    ssd_scan_ref,
)

# manylinux_2_28's glibc: the newest symbol version the wheel's binaries may ask for.
GLIBC_FLOOR = (2, 28)
# What the op library and the command may link dynamically: glibc's own libraries and GCC's
# unwinder (part of every manylinux policy); libstdc++ is not there (libc++ is linked in).
ALLOWED_NEEDED = {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1", "libgcc_s.so.1",
                  "ld-linux-x86-64.so.2"}

# Runs in the venv, from a folder outside the repo: one model through onnxruntime with the
# installed library, and through onnx's ReferenceEvaluator with the installed OpRun classes.
RUN_MODEL = r"""
import sys
import numpy as np, onnx, onnxruntime as ort
from onnx.reference import ReferenceEvaluator
import mambac, mambac.reference

model = onnx.load(sys.argv[1])
feeds = dict(np.load(sys.argv[2]))
names = [o.name for o in model.graph.output]
so = ort.SessionOptions()
so.register_custom_ops_library(mambac.get_library_path())
sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
got = sess.run(names, feeds)
evaluated = ReferenceEvaluator(model, new_ops=mambac.reference.OPS).run(names, feeds)
np.savez(sys.argv[3], **{"ort_" + n: a for n, a in zip(names, got)},
         **{"ref_" + n: a for n, a in zip(names, evaluated)})
"""


def pinned(*names):
    """The `name==version` lines of tools/requirements.txt for `names`."""
    lines = (ROOT / "tools/requirements.txt").read_text().splitlines()
    found = [line.strip() for line in lines if line.split("==")[0].strip() in names]
    assert len(found) == len(names), f"tools/requirements.txt pins {found}, expected {names}"
    return found


def check(cmd, **kw):
    """subprocess.run that fails the test with the command's output."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    shown = " ".join(map(str, cmd))
    assert proc.returncode == 0, f"{shown} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    if os.environ.get("MAMBAC_WHEEL"):
        return Path(os.environ["MAMBAC_WHEEL"])
    out = tmp_path_factory.mktemp("wheel")
    # Without build isolation: the build requirements come from this venv (tools/requirements.txt,
    # the same pins as pyproject.toml's), at fixed paths, so the build reuses target/wheel.
    check([sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "--no-build-isolation", "-w", out], cwd=ROOT)
    (built,) = out.glob("mambac-*.whl")
    return built


class Venv:
    """A fresh venv with the wheel installed, and a working folder outside the repository."""

    def __init__(self, base, wheel):
        self.dir = base / "venv"
        self.work = base / "work"
        self.work.mkdir()
        check([sys.executable, "-m", "venv", self.dir])
        self.python = self.dir / "bin" / "python"
        check([self.python, "-m", "pip", "install", "-q", wheel, *pinned("onnxruntime", "numpy", "onnx")])
        # Nothing of the repo's test set-up leaks in: no library, ORT or Python path from it.
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MAMBAC_OPS_LIB", "MAMBAC_BIN")}
        self.env["PATH"] = f"{self.dir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"

    def run(self, *cmd):
        return check(cmd, cwd=self.work, env=self.env)

    def py(self, code, *args):
        return self.run(self.python, "-c", code, *args).stdout.strip()


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    return Venv(tmp_path_factory.mktemp("fresh"), wheel)


@pytest.fixture(scope="module")
def library(venv):
    return Path(venv.py("import mambac; print(mambac.get_library_path())"))


def glibc_versions(path):
    """The GLIBC_x.y symbol versions `path` asks for, as (x, y) tuples."""
    out = check(["objdump", "-T", path]).stdout
    return {tuple(int(v) for v in m.groups()) for m in re.finditer(r"\bGLIBC_(\d+)\.(\d+)", out)}


def needed(path):
    out = check(["readelf", "-d", path]).stdout
    return {line.split("[")[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line}


def assert_manylinux_2_28(path):
    versions = glibc_versions(path)
    assert versions and max(versions) <= GLIBC_FLOOR, f"{path.name} asks for GLIBC_{'.'.join(map(str, max(versions)))}"
    assert needed(path) <= ALLOWED_NEEDED, f"{path.name} links {sorted(needed(path) - ALLOWED_NEEDED)}"
    sections = check(["readelf", "-S", "-W", path]).stdout
    assert ".symtab" not in sections and ".debug_info" not in sections, f"{path.name} is not stripped"


def test_build_requirements_are_pinned_alike_for_pip_and_the_tests():
    import tomllib

    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert sorted(requires) == sorted(pinned("maturin", "ziglang", "cargo-zigbuild"))


def test_wheel_is_tagged_manylinux_2_28_and_holds_the_three_parts(wheel):
    assert wheel.name.endswith("-py3-none-manylinux_2_28_x86_64.whl"), wheel.name
    names = set(zipfile.ZipFile(wheel).namelist())
    version = wheel.name.split("-")[1]
    for part in ["mambac/__init__.py", "mambac/reference.py", "mambac/libmambac_ops.so",
                 f"mambac-{version}.data/scripts/mambac"]:
        assert part in names, f"{part} not in {wheel.name}: {sorted(names)}"


def test_get_library_path_is_the_installed_library(venv, library):
    assert library.is_absolute() and library.is_file(), library
    assert library.parent.parent.name == "site-packages" and venv.dir in library.parents, library


def test_library_needs_glibc_2_28_at_most_and_is_stripped(library):
    assert_manylinux_2_28(library)


def test_library_exports_only_register_custom_ops(library):
    out = check(["nm", "-D", "--defined-only", library]).stdout
    assert [line.split()[-1] for line in out.splitlines() if line.strip()] == ["RegisterCustomOps"], out


def test_mambac_command_runs_and_needs_glibc_2_28_at_most(venv):
    out = venv.run("mambac", "--help").stdout
    assert "Usage: mambac" in out, out
    assert_manylinux_2_28(venv.dir / "bin" / "mambac")


def test_mambac_command_finds_the_package_library_and_onnxruntime(venv):
    """With no MAMBAC_OPS_LIB or ORT_DYLIB_PATH, the installed command takes the package's op
    library (found from its own prefix) and the venv's onnxruntime (its python3 is first on PATH)."""
    env_free = {k: v for k, v in venv.env.items() if k != "ORT_DYLIB_PATH"}
    proc = check(["mambac", "conformance", "--ops", "causal-conv1d", "--dtypes", "float32"],
                 cwd=venv.work, env=env_free)
    assert re.search(r"^(\d+) cases, \1 pass, 0 fail$", proc.stdout, re.M), proc.stdout[-2000:]


def rand(rng, shape, dtype=np.float32, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def scan_case(rng, dtype):
    b, L, d, n, g = 2, 9, 12, 5, 3
    feeds = {"u": rand(rng, (b, L, d), dtype), "delta": rand(rng, (b, L, d), dtype, 0.5),
             "A": -np.exp(rand(rng, (d, n))), "B": rand(rng, (b, L, g, n), dtype), "C": rand(rng, (b, L, g, n), dtype),
             "D": rand(rng, (d,)), "z": rand(rng, (b, L, d), dtype), "delta_bias": rand(rng, (d,), scale=0.3),
             "initial_state": rand(rng, (b, d, n))}
    model = one_node_model("SelectiveScan", SCAN_INPUTS, feeds, ["y", "final_state"], {"delta_softplus": 1})
    return model, feeds, selective_scan_ref(**feeds, delta_softplus=True)


def ssd_case(rng, dtype):
    b, L, h, p, g, n = 2, 7, 4, 3, 2, 6
    feeds = {"x": rand(rng, (b, L, h, p), dtype), "dt": rand(rng, (b, L, h), dtype, 0.5), "A": -np.exp(rand(rng, (h,))),
             "B": rand(rng, (b, L, g, n), dtype), "C": rand(rng, (b, L, g, n), dtype), "D": rand(rng, (h,)),
             "dt_bias": rand(rng, (h,), scale=0.3), "initial_state": rand(rng, (b, h, p, n))}
    attrs = {"dt_softplus": 1, "dt_min": 0.01, "dt_max": 2.0}
    model = one_node_model("SsdScan", SSD_INPUTS, feeds, ["y", "final_state"], attrs)
    return model, feeds, ssd_scan_ref(**feeds, dt_softplus=True, dt_min=0.01, dt_max=2.0)


def conv_case(rng, dtype):
    b, L, d, k = 2, 6, 10, 4
    feeds = {"x": rand(rng, (b, L, d), dtype), "weight": rand(rng, (d, k), dtype), "bias": rand(rng, (d,), dtype),
             "initial_state": rand(rng, (b, d, k - 1), dtype)}
    model = one_node_model("CausalConv1d", CONV_INPUTS, feeds, ["y", "final_state"], {"activation": "silu"})
    return model, feeds, causal_conv1d_ref(**feeds, silu=True)


def layer_step_case(rng, dtype):
    b, h, i, n, k, r = 2, 8, 12, 4, 4, 3
    shapes = {"conv_state": (b, i, k - 1), "ssm_state": (b, i, n), "residual": (b, 1, h), "norm_weight": (h,),
              "in_proj_weight": (h, 2 * i), "in_proj_bias": (2 * i,), "conv_weight": (i, k), "conv_bias": (i,),
              "x_proj_weight": (i, r + 2 * n), "dt_proj_weight": (r, i), "dt_bias": (i,), "A": (i, n), "D": (i,),
              "out_proj_weight": (i, h), "out_proj_bias": (h,)}
    feeds = {name: rand(rng, shapes[name], scale=0.5) for name in LAYER_STEP_INPUTS}
    feeds["A"] = -np.exp(rand(rng, shapes["A"]))
    model = one_node_model("MambaLayerStep", LAYER_STEP_INPUTS, feeds,
                           ["residual_out", "conv_state_out", "ssm_state_out"], {"epsilon": 1e-5})
    return model, feeds, mamba_layer_step_ref(feeds, 1e-5)


def mamba2_step_case(rng, dtype):
    b, hid, heads, p, g, n, k = 2, 8, 4, 3, 2, 4, 4
    inner = heads * p
    conv_dim = inner + 2 * g * n
    shapes = {"conv_state": (b, conv_dim, k - 1), "ssm_state": (b, heads, p, n), "residual": (b, 1, hid),
              "norm_weight": (hid,), "in_proj_weight": (hid, inner + conv_dim + heads),
              "in_proj_bias": (inner + conv_dim + heads,), "conv_weight": (conv_dim, k), "conv_bias": (conv_dim,),
              "dt_bias": (heads,), "A": (heads,), "D": (heads,), "gate_norm_weight": (inner,),
              "out_proj_weight": (inner, hid), "out_proj_bias": (hid,)}
    feeds = {name: rand(rng, shapes[name], scale=0.5) for name in MAMBA2_STEP_INPUTS}
    feeds["A"] = -np.exp(rand(rng, shapes["A"]))
    attrs = {"epsilon": 1e-5, "dt_min": 0.01, "dt_max": 3.0, "norm_before_gate": 1}
    model = one_node_model("Mamba2LayerStep", MAMBA2_STEP_INPUTS, feeds,
                           ["residual_out", "conv_state_out", "ssm_state_out"], attrs)
    return model, feeds, mamba2_layer_step_ref(feeds, 1e-5, 0.01, 3.0, True)


CASES = {
    "SelectiveScan-float32": (scan_case, np.float32),
    "SelectiveScan-float16": (scan_case, np.float16),
    "SsdScan-float32": (ssd_case, np.float32),
    "CausalConv1d-float32": (conv_case, np.float32),
    "MambaLayerStep-float32": (layer_step_case, np.float32),
    "Mamba2LayerStep-float32": (mamba2_step_case, np.float32),
}


@pytest.mark.parametrize("case", list(CASES))
def test_op_in_onnxruntime_and_reference_evaluator(venv, tmp_path, case):
    """Each op through onnxruntime with get_library_path() against the float64 reference, and the
    installed OpRun class under ReferenceEvaluator against onnxruntime, both within the dtype's
    tier; the OpRun outputs have the types onnxruntime gives."""
    make, dtype = CASES[case]
    model, feeds, want = make(np.random.default_rng(sum(map(ord, case))), dtype)
    tier = np.dtype(dtype).name
    (tmp_path / "model.onnx").write_bytes(model.SerializeToString())
    np.savez(tmp_path / "feeds.npz", **feeds)
    venv.py(RUN_MODEL, tmp_path / "model.onnx", tmp_path / "feeds.npz", tmp_path / "out.npz")
    out = np.load(tmp_path / "out.npz")
    for name, ref in zip([o.name for o in model.graph.output], want):
        got, evaluated = out[f"ort_{name}"], out[f"ref_{name}"]
        assert evaluated.dtype == got.dtype, f"{case} {name}: OpRun gives {evaluated.dtype}, onnxruntime {got.dtype}"
        # States are float32 whatever T is; y and CausalConv1d's state take T's tier.
        t = "float32" if got.dtype == np.float32 else tier
        assert_close(got, ref, t, f"{case} {name}: onnxruntime vs float64")
        assert_close(evaluated, f64(got), t, f"{case} {name}: ReferenceEvaluator vs onnxruntime")


def test_readme_python_snippet_runs_from_any_folder(venv):
    text = (ROOT / "custom-ops/README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert "mambac.get_library_path()" in snippet
    assert "(1, 16, 64)" in venv.py(snippet)
