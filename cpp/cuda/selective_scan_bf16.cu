// SelectiveScan kernels for __nv_bfloat16 inputs and outputs (float32 arithmetic and state).
#include "selective_scan_launch.cuh"

MAMBAC_INSTANTIATE_SCAN(__nv_bfloat16)
