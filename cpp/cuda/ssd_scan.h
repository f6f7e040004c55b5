// CUDA launcher for SsdScan (docs/op-contract.md "SsdScan", Mamba-2's scan). Knows nothing about
// ONNX Runtime or TensorRT: it takes the kernel ABI's params struct (device pointers, contiguous
// token-major buffers, and the scratch the chunked prefill needs) and a stream, queues the
// kernels, and returns the launch status. No host synchronisation.
//
// Three paths, chosen by shape (cpp/cuda/README.md "SsdScan"): the one-token kernel
// (ssd_token_impl.cuh; decode steps), the step-by-step kernel (ssd_scan_impl.cuh; short
// sequences) and the chunked prefill (ssd_chunk_impl.cuh;
// five kernels, tensor cores for 16-bit types), which needs `ssd_scan_scratch_bytes` of device
// scratch in `SsdScanParams::scratch`, 16-byte aligned (its kernels read it in 16-byte vectors;
// ORT's, torch's and TensorRT's allocations are 256-byte aligned). Without that scratch the step
// kernel runs; misaligned scratch is refused (cudaErrorInvalidValue).
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

// The chunked path from this sequence length on; below it the step kernel's seqlen dependent
// steps cost less than the chunked path's five launches and its fixed per-chunk work.
constexpr size_t kSsdChunkedMinSeqlen = 33;

// Forces a path or a chunk size (the harness's tests and benchmarks); zeros = automatic.
struct SsdConfig {
    int path = 0;   // 1 = the step kernel (never the one-token kernel), -1 = the chunked path
                    // (an error without scratch)
    int chunk = 0;  // the chunked path's Q: 64, 128 or 256
};

// What a call will run, and the scratch regions of the chunked path (byte offsets; float32 but
// for hs, in the element type): dtp and cs [batch, heads, nchunks, chunk], cb [batch, nchunks,
// ngroups, chunk, chunk], st and hs [batch, nchunks, heads, head_dim, dstate].
struct SsdPlan {
    bool valid = true;  // false: a forced chunk or path this shape cannot take
    bool chunked = false;
    bool token = false;  // seqlen 1, automatic: the one-token kernel where dstate and alignment allow
    size_t chunk = 0, nchunks = 0;
    size_t dtp = 0, cs = 0, cb = 0, st = 0, hs = 0, bytes = 0;
};
SsdPlan ssd_plan(const SsdScanParams& p, const SsdConfig& cfg = {});

// Device scratch bytes `ssd_scan` with the same params and config wants in `p.scratch`; 0 when it
// runs the step kernel.
size_t ssd_scan_scratch_bytes(const SsdScanParams& p, const SsdConfig& cfg = {});

// The most scratch `ssd_scan_scratch_bytes` (automatic config) wants for any seqlen from
// `min_seqlen` to `p.seqlen`, the other sizes as in `p`: what a caller that allocates once for a
// range of shapes (TensorRT's workspace, sized at a profile's min and max) must give. Not simply
// the value at `p.seqlen`: a longer sequence can take a longer chunk and need fewer chunk states.
size_t ssd_scan_scratch_bytes_bound(const SsdScanParams& p, size_t min_seqlen);

// Queues y (and final_state when given) for `p` on `stream`. Returns cudaSuccess (at once, with
// nothing queued, when there is no output element to write), cudaErrorInvalidValue for what the
// kernels cannot take (dstate > kSsdMaxDstate, heads not divisible by ngroups, a missing required
// pointer, a grid past CUDA's reach, a forced config the shape cannot take), or the launch error.
cudaError_t ssd_scan(const SsdScanParams& p, cudaStream_t stream, const SsdConfig& cfg = {});

}  // namespace mambac::cuda
