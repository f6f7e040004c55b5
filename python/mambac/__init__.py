"""mambac: Mamba checkpoints to ONNX (docs/python-package.md).

* `get_library_path()`: the op library (SelectiveScan, CausalConv1d, MambaLayerStep, SsdScan for
  ONNX Runtime), for `SessionOptions.register_custom_ops_library`;
* the `mambac` command (export, run, generate, ...), installed beside this package;
* `mambac.reference`: the ops in float64 numpy, and as onnx `OpRun` classes (`OPS`) for
  `onnx.reference.ReferenceEvaluator(model, new_ops=mambac.reference.OPS)`.
"""

from pathlib import Path

LIBRARY_NAME = "libmambac_ops.so"


def get_library_path() -> str:
    """The absolute path of the op library shipped in this package."""
    return str(Path(__file__).resolve().parent / LIBRARY_NAME)
