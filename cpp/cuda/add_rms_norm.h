// CUDA launcher for AddRmsNorm (docs/op-contract.md "AddRmsNorm"): the residual add and the next
// RMSNorm between two layers. Knows nothing about ONNX Runtime or TensorRT: it takes the kernel
// ABI's params struct (device pointers, contiguous buffers) and a stream, queues the work, and
// returns the launch status. No host synchronisation.
#pragma once

#include <cuda_runtime.h>

namespace mambac {
struct AddRmsNormParams;
}

namespace mambac::cuda {

// The kernel's vector width, for tests: 0 = by alignment (16-byte loads when every buffer and row
// allows), 1 = scalar loads forced.
struct AddRmsNormConfig {
    int scalar = 0;
};

// Queues y (and residual_out when given) for `p` on `stream`; returns cudaSuccess (at once for
// no rows), cudaErrorInvalidValue for a missing x, weight or y, or the launch error.
cudaError_t add_rms_norm(const AddRmsNormParams& p, cudaStream_t stream, const AddRmsNormConfig& cfg = {});

}  // namespace mambac::cuda
