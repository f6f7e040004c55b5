// C entry points of the CUDA kernels, for the Rust ORT registration (custom-ops/src/cuda) and the
// device harness (tools/gpu). Each returns a cudaError_t as int; nothing throws across them.
#include <cstddef>

#include "abi.h"
#include "causal_conv1d.h"
#include "decode_layer.h"
#include "selective_scan.h"

extern "C" {

int mambac_cuda_selective_scan(const mambac::SelectiveScanParams* p, void* stream) noexcept {
    if (!p) return cudaErrorInvalidValue;
    return mambac::cuda::selective_scan(*p, static_cast<cudaStream_t>(stream));
}

// Same, with the work split forced (0 = automatic; step: 1 = the per-step kernel, -1 = never
// it); for benchmarks.
int mambac_cuda_selective_scan_cfg(const mambac::SelectiveScanParams* p, void* stream, int lanes,
                                   int ch, int w, int s, int cpt, int step) noexcept {
    if (!p) return cudaErrorInvalidValue;
    mambac::cuda::ScanConfig cfg;
    cfg.lanes = lanes;
    cfg.ch = ch;
    cfg.w = w;
    cfg.s = s;
    cfg.cpt = cpt;
    cfg.step = step;
    return mambac::cuda::selective_scan(*p, static_cast<cudaStream_t>(stream), cfg);
}

int mambac_cuda_causal_conv1d(const mambac::CausalConv1dParams* p, void* stream) noexcept {
    if (!p) return cudaErrorInvalidValue;
    return mambac::cuda::causal_conv1d(*p, static_cast<cudaStream_t>(stream));
}

// Same, with the fast kernel's split forced (channels and steps a thread; 0 = default), or the
// per-step kernel forced (step 1) or ruled out (-1).
int mambac_cuda_causal_conv1d_cfg(const mambac::CausalConv1dParams* p, void* stream, int v, int lt,
                                  int step) noexcept {
    if (!p) return cudaErrorInvalidValue;
    mambac::cuda::ConvConfig cfg;
    cfg.v = v;
    cfg.lt = lt;
    cfg.step = step;
    return mambac::cuda::causal_conv1d(*p, static_cast<cudaStream_t>(stream), cfg);
}

// One layer's fused decode step (decode_layer.h); the scratch size it needs.
int mambac_cuda_decode_layer(const mambac::cuda::DecodeLayerParams* p, void* stream) noexcept {
    if (!p) return cudaErrorInvalidValue;
    return mambac::cuda::decode_layer(*p, static_cast<cudaStream_t>(stream));
}

// The harness's override of the decode GEMVs' work split (decode_layer.h; zeros = defaults).
void mambac_cuda_decode_layer_tune(int rows_per_pass, int k_tile_max, int blocks_per_sm) noexcept {
    mambac::cuda::DecodeTuning t;
    t.rows_per_pass = rows_per_pass;
    t.k_tile_max = k_tile_max;
    t.blocks_per_sm = blocks_per_sm;
    mambac::cuda::decode_layer_set_tuning(t);
}

size_t mambac_cuda_decode_layer_scratch_bytes(const mambac::cuda::DecodeLayerParams* p) noexcept {
    return p ? mambac::cuda::decode_layer_scratch_bytes(*p) : 0;
}

const char* mambac_cuda_error_string(int err) noexcept {
    return cudaGetErrorString(static_cast<cudaError_t>(err));
}

// Layout of the ABI structs as this C++ sees them, so a harness written in another language can
// check its own copy: [sizeof SS, offsetof SS.elem, SS.u, SS.final_state, sizeof CC, CC.elem,
// CC.x, CC.final_state].
void mambac_cuda_abi_layout(size_t out[8]) noexcept {
    out[0] = sizeof(mambac::SelectiveScanParams);
    out[1] = offsetof(mambac::SelectiveScanParams, elem);
    out[2] = offsetof(mambac::SelectiveScanParams, u);
    out[3] = offsetof(mambac::SelectiveScanParams, final_state);
    out[4] = sizeof(mambac::CausalConv1dParams);
    out[5] = offsetof(mambac::CausalConv1dParams, elem);
    out[6] = offsetof(mambac::CausalConv1dParams, x);
    out[7] = offsetof(mambac::CausalConv1dParams, final_state);
}

}  // extern "C"
