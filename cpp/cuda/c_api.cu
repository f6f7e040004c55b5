// C entry points of the CUDA kernels for the Rust ORT registration (custom-ops/src/cuda). Each
// returns a cudaError_t as int; nothing throws across them. The benchmark harness's extra entry
// points (forced work splits, GEMV tuning, struct layouts) are in harness_api.cu, which only
// tools/gpu/build_harness.sh compiles: they are not part of the shipped library.
#include <cstddef>

#include "abi.h"
#include "add_rms_norm.h"
#include "causal_conv1d.h"
#include "decode_layer.h"
#include "gated_rms_norm.h"
#include "mamba2_decode_layer.h"
#include "selective_scan.h"
#include "ssd_scan.h"

extern "C" {

int mambac_cuda_selective_scan(const mambac::SelectiveScanParams* p, void* stream) noexcept {
    if (!p) return cudaErrorInvalidValue;
    return mambac::cuda::selective_scan(*p, static_cast<cudaStream_t>(stream));
}

int mambac_cuda_ssd_scan(const mambac::SsdScanParams* p, void* stream) noexcept {
    if (!p) return cudaErrorInvalidValue;
    return mambac::cuda::ssd_scan(*p, static_cast<cudaStream_t>(stream));
}

// The device scratch SsdScan wants in p->scratch (0: none, the step kernel runs).
size_t mambac_cuda_ssd_scan_scratch_bytes(const mambac::SsdScanParams* p) noexcept {
    return p ? mambac::cuda::ssd_scan_scratch_bytes(*p) : 0;
}

// The most of it any seqlen from min_seqlen to p->seqlen wants (the TensorRT plugin's workspace
// over a profile's shapes).
size_t mambac_cuda_ssd_scan_scratch_bytes_bound(const mambac::SsdScanParams* p, size_t min_seqlen) noexcept {
    return p ? mambac::cuda::ssd_scan_scratch_bytes_bound(*p, min_seqlen) : 0;
}

int mambac_cuda_causal_conv1d(const mambac::CausalConv1dParams* p, void* stream) noexcept {
    if (!p) return cudaErrorInvalidValue;
    return mambac::cuda::causal_conv1d(*p, static_cast<cudaStream_t>(stream));
}

int mambac_cuda_add_rms_norm(const mambac::AddRmsNormParams* p, void* stream) noexcept {
    if (!p) return cudaErrorInvalidValue;
    return mambac::cuda::add_rms_norm(*p, static_cast<cudaStream_t>(stream));
}

int mambac_cuda_gated_rms_norm(const mambac::GatedRmsNormParams* p, void* stream) noexcept {
    if (!p) return cudaErrorInvalidValue;
    return mambac::cuda::gated_rms_norm(*p, static_cast<cudaStream_t>(stream));
}

// One layer's fused decode step (decode_layer.h); the scratch size it needs.
int mambac_cuda_decode_layer(const mambac::MambaLayerStepParams* p, void* stream) noexcept {
    if (!p) return cudaErrorInvalidValue;
    return mambac::cuda::decode_layer(*p, static_cast<cudaStream_t>(stream));
}

size_t mambac_cuda_decode_layer_scratch_bytes(const mambac::MambaLayerStepParams* p) noexcept {
    return p ? mambac::cuda::decode_layer_scratch_bytes(*p) : 0;
}

// One Mamba-2 layer's fused decode step (mamba2_decode_layer.h); the scratch size it needs.
int mambac_cuda_mamba2_decode_layer(const mambac::Mamba2LayerStepParams* p, void* stream) noexcept {
    if (!p) return cudaErrorInvalidValue;
    return mambac::cuda::mamba2_decode_layer(*p, static_cast<cudaStream_t>(stream));
}

size_t mambac_cuda_mamba2_decode_layer_scratch_bytes(const mambac::Mamba2LayerStepParams* p) noexcept {
    return p ? mambac::cuda::mamba2_decode_layer_scratch_bytes(*p) : 0;
}

const char* mambac_cuda_error_string(int err) noexcept {
    return cudaGetErrorString(static_cast<cudaError_t>(err));
}

}  // extern "C"
