// CUDA launcher for CausalConv1d (DESIGN.md). Knows nothing about ONNX Runtime or TensorRT:
// it takes the kernel ABI's params struct (device pointers, contiguous token-major buffers) and a
// stream, queues the work, and returns the launch status. No host synchronisation.
#pragma once

#include <cuda_runtime.h>

namespace mambac {
struct CausalConv1dParams;
}

namespace mambac::cuda {

// Queues y (and final_state when given) for `p` on `stream`; returns cudaSuccess, the argument
// check's cudaErrorInvalidValue (width 0), or the launch error.
cudaError_t causal_conv1d(const CausalConv1dParams& p, cudaStream_t stream);

}  // namespace mambac::cuda
