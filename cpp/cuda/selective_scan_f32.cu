// SelectiveScan kernels for float inputs and outputs (float32 arithmetic and state).
#include "selective_scan_launch.cuh"

MAMBAC_INSTANTIATE_SCAN(float)
