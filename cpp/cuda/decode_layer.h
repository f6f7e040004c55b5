// CUDA launcher for one Mamba layer's decode step (one token a sequence), fused: residual RMSNorm,
// in_proj, causal conv1d + SiLU, x_proj, dt_proj + softplus, the selective-scan step with its D
// skip and SiLU(z) gate, out_proj and the residual add, in five kernels.
//
// Why: a decode step of the unfused graph is ~14 kernels a layer (903 for the 2.8b shape), and
// at batch 1 each is a few microseconds of launch-bound work; the step is bound by their count,
// not by the weight bytes (tools/gpu/decode_probe.py; cpp/cuda/README.md, "Decode steps"). This path reads every
// weight once with split-K GEMVs sized to fill the GPU and keeps the small per-channel work
// inside those kernels' prologues.
//
// Weights are in the layouts the exporter already writes for the general graph (the projections
// transposed, [in, out]), so a decode graph can share them with it. Knows nothing about ORT.
#pragma once

#include <cstddef>
#include <cuda_runtime.h>

#include "abi.h"

namespace mambac::cuda {

// Work split of the GEMVs (0 = the default): 16-byte loads a thread keeps in flight (4, 8 or 16;
// batch 1 only), the longest K tile (rows, <= 512), the blocks a multiprocessor the K tiles are
// sized for, whether 16-bit weights go through the tensor-core kernel, and whether the step's
// kernels are dependent launches. Only the benchmark harness (harness_api.cu) sets it.
struct DecodeTuning {
    int rows_per_pass = 0;
    int k_tile_max = 0;
    int blocks_per_sm = 0;
    int tensor_cores = 0;  // 16-bit GEMVs on tensor cores: 1 = at every batch, -1 = never
    // Each kernel of the step a programmatic dependent launch of the one before (common.cuh):
    // 0 or 1 = yes, -1 = no (plain stream order).
    int dependent_launch = 0;
    bool dependent() const { return dependent_launch >= 0; }
    // Batch 1's FMA GEMV requests the next pass's weights before this pass's FMAs: 0 or 1 = yes,
    // -1 = no (then 4 or 8 loads in flight; 16 takes too many registers twice over).
    int loads_ahead = 0;
};

// Bytes of device scratch the step needs (float32 accumulators and activations).
size_t decode_layer_scratch_bytes(const MambaLayerStepParams& p);

// Queues the step on `stream`: cudaSuccess, cudaErrorInvalidValue for a shape or pointer it does
// not take (the message is the caller's to write), or the launch error. `p` has passed
// check_mamba_layer_step (cpp/shape_check.cpp) and has its `scratch` set.
cudaError_t decode_layer(const MambaLayerStepParams& p, cudaStream_t stream, const DecodeTuning& tuning = {});

// The kernels' view of the params: 32-bit sizes and typed pointers, made from the ABI struct by
// decode_layer(). Element codes as ElemType: 0 float32, 1 float16, 2 bfloat16; T below is that
// type; states, norm weight, A, D and dt bias are float32 (docs/op-contract.md).
struct DecodeLayerParams {
    int elem;
    int batch, hidden, inner, dstate, dt_rank, width;
    float eps;
    const float* residual_in;   // [B, H]
    float* residual_out;        // [B, H] = residual_in + out_proj(mixer(norm(residual_in)))
    const void* conv_state_in;  // [B, I, width - 1] T
    void* conv_state_out;       // [B, I, width - 1] T
    const float* ssm_state_in;  // [B, I, N]
    float* ssm_state_out;       // [B, I, N]
    const float* norm_w;        // [H]
    const void* in_proj_t;      // [H, 2I] T
    const void* in_proj_b;      // [2I] T, nullable
    const void* conv_w;         // [I, width] T
    const void* conv_b;         // [I] T, nullable
    const void* x_proj_t;       // [I, R + 2N] T
    const void* dt_proj_t;      // [R, I] T
    const float* dt_bias;       // [I], nullable
    const float* A;             // [I, N] (= -exp(A_log))
    const float* D;             // [I], nullable
    const void* out_proj_t;     // [I, H] T
    const void* out_proj_b;     // [H] T, nullable
    void* scratch;              // decode_layer_scratch_bytes bytes, 16-byte aligned
    DecodeTuning tuning;
};



}  // namespace mambac::cuda
