// CUDA launcher for one Mamba-2 layer's decode step (Mamba2LayerStep; its equations are
// custom-ops/src/mamba2_layer_step.rs's): residual RMSNorm, in_proj, causal conv1d + SiLU over
// xBC, the SSD recurrence's one step with its D skip, the gated RMSNorm over groups, out_proj
// and the residual add, in five kernels. The Mamba-2 counterpart of decode_layer.h, with the
// same GEMVs (decode_gemv.cuh) and the same reason to exist: a decode step of the unfused graph
// is a dozen launch-bound kernels a layer. Knows nothing about ORT.
#pragma once

#include <cstddef>
#include <cuda_runtime.h>

#include "abi.h"
#include "decode_layer.h"

namespace mambac::cuda {

// Bytes of device scratch the step needs (float32 accumulators and activations); 0 for sizes
// the kernels do not take.
size_t mamba2_decode_layer_scratch_bytes(const Mamba2LayerStepParams& p);

// Queues the step on `stream`: cudaSuccess, cudaErrorInvalidValue for a shape or pointer it does
// not take (the message is the caller's to write), or the launch error. `p` has passed
// check_mamba2_layer_step and check_mamba2_layer_step_cuda_limits (cpp/shape_check.cpp), has
// its attributes and its `scratch` set. `tuning` forces the GEMVs' work split (harness only).
cudaError_t mamba2_decode_layer(const Mamba2LayerStepParams& p, cudaStream_t stream, const DecodeTuning& tuning = {});

// The kernels' view of the params: 32-bit sizes and typed pointers, made from the ABI struct by
// mamba2_decode_layer(). T is the element type `elem` names (0 float32, 1 float16, 2 bfloat16);
// states, norm weights, A, D and dt bias are float32 (docs/op-contract.md).
struct Mamba2DecodeParams {
    int elem;
    int batch, hidden, heads, head_dim, ngroups, dstate, width;
    int inner;     // heads * head_dim: x, z, y
    int conv_dim;  // inner + 2 * ngroups * dstate: the conv's channels (x, B, C)
    int in_dim;    // inner + conv_dim + heads: in_proj's outputs (z, xBC, dt)
    float eps, dt_min, dt_max;
    bool norm_before_gate;
    const float* residual_in;   // [B, H]
    float* residual_out;        // [B, H]
    const void* conv_state_in;  // [B, conv_dim, width - 1] T
    void* conv_state_out;       // [B, conv_dim, width - 1] T
    const float* ssm_state_in;  // [B, heads, head_dim, N] = [B, inner, N]
    float* ssm_state_out;       // [B, inner, N]
    const float* norm_w;        // [H]
    const void* in_proj_t;      // [H, in_dim] T
    const void* in_proj_b;      // [in_dim] T, nullable
    const void* conv_w;         // [conv_dim, width] T
    const void* conv_b;         // [conv_dim] T, nullable
    const float* dt_bias;       // [heads], nullable
    const float* A;             // [heads] (= -exp(A_log))
    const float* D;             // [heads], nullable
    const float* gate_norm_w;   // [inner]
    const void* out_proj_t;     // [inner, H] T
    const void* out_proj_b;     // [H] T, nullable
    void* scratch;              // mamba2_decode_layer_scratch_bytes bytes, 16-byte aligned
    DecodeTuning tuning;
};

}  // namespace mambac::cuda
