// CUDA launcher for CausalConv1d (docs/op-contract.md). Knows nothing about ONNX Runtime or TensorRT:
// it takes the kernel ABI's params struct (device pointers, contiguous token-major buffers) and a
// stream, queues the work, and returns the launch status. No host synchronisation.
#pragma once

#include <cuda_runtime.h>

namespace mambac {
struct CausalConv1dParams;
}

namespace mambac::cuda {

// Work split of the fast kernel, for benchmarks: channels (v) and steps (lt) a thread; 0 = the
// default (4 channels, 16 steps).
struct ConvConfig {
    int v = 0;
    int lt = 0;
    int step = 0;  // the per-step kernel (decode): 1 = always, -1 = never, 0 = at seqlen 1
};

// Queues y (and final_state when given) for `p` on `stream`; returns cudaSuccess, the argument
// check's cudaErrorInvalidValue (width 0, or a forced split the shape cannot take), or the launch
// error.
cudaError_t causal_conv1d(const CausalConv1dParams& p, cudaStream_t stream, const ConvConfig& cfg = {});

}  // namespace mambac::cuda
