"""Drives target/tensorrt/trt_harness (tensorrt/harness/harness.cpp), the stand-in for TensorRT
that loads libmambac_trt.so through its exported entry points. A script is one command a line:

    op NAME                    pick the creator (prints its name, version, namespace, field names)
    field NAME KIND VALUE      a plugin field as the ONNX parser makes one (KIND: i32 i64 f32 f64 str)
    create                     createPlugin(kBUILD) from the fields so far
    in TYPE d0,d1,... [MIN:MAX]  an input (dims: numbers, or names for symbolic dims); MIN and MAX,
                               d0,d1,... each, are the profile's bounds (default: the dims)
    types | shapes | formats | configure | configure_raw | serialize | clone | run DIR

Every message the plugin logs is printed as `log error: ...`."""

import os
import subprocess
from pathlib import Path

import pytest

from mambac_testing import ROOT


def trt_dir() -> Path:
    return Path(os.environ.get("MAMBAC_TRT_DIR", ROOT / "target" / "tensorrt"))


def trt_lib() -> Path:
    return trt_dir() / "libmambac_trt.so"


def require_built():
    """Skips unless tools/build-tensorrt.sh has run; MAMBAC_TRT_REQUIRED=1 (CI) makes that a failure."""
    if not (trt_lib().exists() and (trt_dir() / "trt_harness").exists()):
        if os.environ.get("MAMBAC_TRT_REQUIRED") == "1":
            pytest.fail(f"{trt_lib()} not built (tools/build-tensorrt.sh)")
        pytest.skip("TensorRT plugin not built (tools/build-tensorrt.sh)")


def run(script: str, tmp_path: Path) -> list[str]:
    """Runs a harness script; returns its output lines (the first, `creators 7`, dropped)."""
    path = tmp_path / "script.txt"
    path.write_text(script)
    p = subprocess.run([str(trt_dir() / "trt_harness"), str(trt_lib()), str(path)], capture_output=True, text=True)
    lines = p.stdout.splitlines()
    assert lines and lines[0] == "creators 7", (p.stdout, p.stderr)
    assert "harness error" not in p.stdout, p.stdout
    return lines[1:]
