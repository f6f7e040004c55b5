// SsdScan kernel for __nv_bfloat16 inputs and outputs (float32 arithmetic and state).
#include "ssd_chunk_impl.cuh"
#include "ssd_token_impl.cuh"

MAMBAC_INSTANTIATE_SSD(__nv_bfloat16)
