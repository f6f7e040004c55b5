// CUDA launcher for SsdScan (docs/op-contract.md "SsdScan", Mamba-2's scan). Knows nothing about
// ONNX Runtime or TensorRT: it takes the kernel ABI's params struct (device pointers, contiguous
// token-major buffers) and a stream, queues one kernel, and returns the launch status. No host
// synchronisation.
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

namespace mambac {
struct SsdScanParams;
}

namespace mambac::cuda {

// The largest dstate the kernel takes (32 lanes x 16 states in registers); the op's CUDA
// registration refuses larger ones with a message before launching (custom-ops/src/ssd_scan.rs).
constexpr size_t kSsdMaxDstate = 512;

// Queues y (and final_state when given) for `p` on `stream`. Returns cudaSuccess (at once, with
// nothing queued, when there is no output element to write), cudaErrorInvalidValue for what the
// kernel cannot take (dstate > kSsdMaxDstate, heads not divisible by ngroups, a missing required
// pointer, a grid past CUDA's reach), or the launch error.
cudaError_t ssd_scan(const SsdScanParams& p, cudaStream_t stream);

}  // namespace mambac::cuda
