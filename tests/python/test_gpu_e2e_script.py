"""tools/gpu/ort_cuda_e2e.py (the H200 end-to-end script) in its CPU dry-run mode, so that the
script the device runs keeps working between device sessions: prepare a bundle from the release
build, then parts A and B on the CPU EP. The one expected failure is the bfloat16 fixture, which
the CPU EP cannot run (no bfloat16 kernels for the standard ops)."""

import json
import os
import subprocess
import sys

from mambac_testing import ROOT, mambac_bin, ops_lib

SCRIPT = ROOT / "tools" / "gpu" / "ort_cuda_e2e.py"


def test_dry_run_on_cpu(tmp_path):
    bundle, work, out = tmp_path / "bundle", tmp_path / "work", tmp_path / "out"
    out.mkdir()
    bins = tmp_path / "bins"
    bins.mkdir()
    (bins / "mambac").symlink_to(mambac_bin().resolve())
    (bins / "libmambac_ops.so").symlink_to(ops_lib().resolve())
    subprocess.run([sys.executable, SCRIPT, "prepare", "--bin-dir", bins, "--bundle", bundle], check=True, capture_output=True)
    r = subprocess.run([sys.executable, SCRIPT, "run", "--ep", "cpu", "--bundle", bundle, "--work", work, "--parts", "ab"],
                       capture_output=True, text=True, env={**os.environ, "OUT": str(out)})
    res = json.loads((out / "ort-cuda-e2e.json").read_text())
    failed = [c["what"] for c in res["checks"] if not c["ok"]]
    assert failed == ["fixture bfloat16 raised"], r.stdout[-3000:]
    assert set(res["models"]) == {"float32", "float16"}
    assert all(a["pass"] == a["n"] for a in res["ops"].values()) and len(res["ops"]) == 9
    assert all(v["logits"] <= 1e-4 for v in res["stateful"].values())
    assert set(res["decode_graph"]) == {"tiny-stateful", "tiny-stateful-f16"}
    assert res["decode_graph"]["tiny-stateful"]["vs_stateful"] <= 1e-5
    assert sum(c["ok"] for c in res["checks"]) >= 67
