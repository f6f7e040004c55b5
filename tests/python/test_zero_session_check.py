"""tools/gpu/zero_session_check.py (the H200 check that the CUDA EP takes the runtime's zero-state
model with CPU fallback disabled) in its CPU dry run, so that the script keeps working between
device sessions: every case's model is valid ONNX that ORT's CPU EP creates, and the float32 and
float16 ones fill zeros."""

import subprocess
import sys

from mambac_testing import ROOT

SCRIPT = ROOT / "tools" / "gpu" / "zero_session_check.py"


def test_dry_run_on_cpu():
    r = subprocess.run([sys.executable, SCRIPT, "--ep", "cpu"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("onnxruntime ") and lines[0].endswith(", CPUExecutionProvider"), lines[0]
    assert lines[1:] == [
        "  opset 19 float: created, ran: zeros",
        "  opset 19 float16: created, ran: zeros",
        "  opset 20 bfloat16: created",
        "  opset 21 float: created, ran: zeros",
        "OK",
    ]
