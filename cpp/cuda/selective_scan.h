// CUDA launcher for SelectiveScan (docs/op-contract.md). Knows nothing about ONNX Runtime or TensorRT:
// it takes the kernel ABI's params struct (device pointers, contiguous token-major buffers) and a
// stream, queues the work, and returns the launch status. No host synchronisation.
#pragma once

#include <cuda_runtime.h>

namespace mambac {
struct SelectiveScanParams;
}

namespace mambac::cuda {

// Work split of the scan; 0 everywhere = chosen from the shape and the device (the default).
// Exposed for the benchmark harness (tools/gpu), which sweeps it; see selective_scan_impl.cuh.
struct ScanConfig {
    int lanes = 0;  // lanes per channel (dstate / lanes states per lane): 1..16, a power of two
    int ch = 0;     // channels per block (the warp split, w < 0: 4 or 8)
    int w = 0;      // sub-chunks per tile: 1 = one scan per channel, > 1 = split scan
    int s = 0;      // steps per sub-chunk of the split scan (instantiated values only)
    int cpt = 0;    // channels per thread (1 or 2; 2 where dstate <= 16)
    int step = 0;   // the per-step kernel (selective_scan_step.cuh): 1 = always (never the one-token
                    // kernel, selective_scan_token.cuh), -1 = never
};

// Queues y (and final_state when given) for `p` on `stream`. Returns cudaSuccess or the error of
// the argument check (cudaErrorInvalidValue: dstate > 256, dim not divisible by ngroups, a
// config that does not fit) or of the launch.
cudaError_t selective_scan(const SelectiveScanParams& p, cudaStream_t stream);
cudaError_t selective_scan(const SelectiveScanParams& p, cudaStream_t stream, const ScanConfig& cfg);

}  // namespace mambac::cuda
