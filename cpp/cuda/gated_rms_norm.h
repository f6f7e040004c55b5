// CUDA launcher for GatedRmsNorm (docs/op-contract.md "GatedRmsNorm"): Mamba-2's gated RMSNorm
// over groups of channels. Knows nothing about ONNX Runtime or TensorRT: it takes the kernel
// ABI's params struct (device pointers; z's rows z_stride apart) and a stream, queues the work,
// and returns the launch status. No host synchronisation.
#pragma once

#include <cuda_runtime.h>

namespace mambac {
struct GatedRmsNormParams;
}

namespace mambac::cuda {

// The kernel's vector width, for tests: 0 = by alignment (16-byte loads when every buffer, row
// and group allows), 1 = scalar loads forced.
struct GatedRmsNormConfig {
    int scalar = 0;
};

// Queues `out` for `p` on `stream`; returns cudaSuccess (at once for no rows), cudaErrorInvalidValue
// for a missing pointer, a group_size of 0 or one that does not divide d, or the launch error.
cudaError_t gated_rms_norm(const GatedRmsNormParams& p, cudaStream_t stream, const GatedRmsNormConfig& cfg = {});

}  // namespace mambac::cuda
