// CausalConv1d kernels for __nv_bfloat16 inputs and outputs (float32 arithmetic).
#include "abi.h"
#include "causal_conv1d.h"
#include "causal_conv1d_impl.cuh"

MAMBAC_INSTANTIATE_CONV(__nv_bfloat16)
