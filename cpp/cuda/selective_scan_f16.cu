// SelectiveScan kernels for __half inputs and outputs (float32 arithmetic and state).
#include "selective_scan_launch.cuh"

MAMBAC_INSTANTIATE_SCAN(__half)
