"""GPU conformance of the CUDA kernels: `pytest tests/python/gpu` on a machine with a CUDA device,
torch and the harness library (tools/gpu/build_harness.sh builds .device/gpu/libmambac_cuda_harness.so;
MAMBAC_CUDA_HARNESS names another). Every module skips where torch or a CUDA device is missing, so
CI (no GPU) collects and skips them. The references and tiers are the CPU tests' (ops_reference.py).
"""

import os
import sys

# The shared test modules (ops_reference, nonfinite_cases, mambac_testing) live one folder up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
