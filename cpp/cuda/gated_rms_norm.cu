// GatedRmsNorm on the GPU (docs/op-contract.md "GatedRmsNorm"), per row and group of group_size
// channels, float32 throughout:
//
//   norm_before_gate = 0:  v = y * silu(z);  out = T(v / sqrt(mean_g(v^2) + eps) * weight)
//   norm_before_gate = 1:  v = y;            out = T(v / sqrt(mean_g(v^2) + eps) * weight * silu(z))
//
// One block a (row, group) (grid-striding past the grid's size). A thread owns the vectors
// k = threadIdx.x + j * blockDim.x of its group: 16-byte loads of y and z (kVec<T> elements) and
// the matching float4s of weight. Pass 1 sums v^2; the block reduces the sum (warp shuffles,
// then one warp over the warps' partials); pass 2 scales and writes out in T. The first kCache
// vectors a thread owns keep v in registers between the passes (mamba2-2.7b's one group of 5120
// is 640 float16 vectors: all cached at 256 threads); past them v is recomputed from y and z, an
// L2 hit, so a group costs one read of y and z and one write of out in DRAM. With
// norm_before_gate = 1 pass 2 reads z again for the gate (also an L2 hit). A group whose buffers
// or strides are off 16-byte alignment takes the same kernel one element a vector.
#include "abi.h"
#include "common.cuh"
#include "gated_rms_norm.h"
#include "row_vectors.cuh"

#include <algorithm>
#include <cstdint>

namespace mambac::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;
constexpr int kCache = 4;
// Blocks a grid covers before striding (grid-stride keeps any row count launchable).
constexpr size_t kMaxBlocks = size_t(1) << 20;


// The value normalised for the V channels at offset e of a group: y, or y * silu(z).
template <typename T, int V, bool kNormBeforeGate>
__device__ __forceinline__ void gated_value(const T* y, const T* z, size_t e, float (&v)[V]) {
    load_t<T, V>(y + e, v);
    if constexpr (!kNormBeforeGate) {
        float zv[V];
        load_t<T, V>(z + e, zv);
#pragma unroll
        for (int i = 0; i < V; ++i) v[i] *= silu(zv[i]);
    }
}

// v * inv * weight (* silu(z) when the gate comes after the norm), written in T.
template <typename T, int V, bool kNormBeforeGate>
__device__ __forceinline__ void scale_store(float (&v)[V], const T* z, const float* w, T* out, size_t e, float inv) {
    float wv[V];
    load_f32<V>(w + e, wv);
#pragma unroll
    for (int i = 0; i < V; ++i) v[i] = v[i] * inv * wv[i];
    if constexpr (kNormBeforeGate) {
        float zv[V];
        load_t<T, V>(z + e, zv);
#pragma unroll
        for (int i = 0; i < V; ++i) v[i] *= silu(zv[i]);
    }
    store_t<T, V>(out + e, v);
}

template <typename T, int V, bool kNormBeforeGate>
__global__ void __launch_bounds__(kThreads) gated_rms_norm_kernel(const GatedRmsNormParams p) {
    __shared__ float partials[kThreads / 32];
    const size_t G = p.group_size;
    const size_t groups = p.d / G;
    const size_t nv = G / V;
    const size_t blocks = p.rows * groups;
    for (size_t b = blockIdx.x; b < blocks; b += gridDim.x) {
        const size_t row = b / groups, g0 = (b % groups) * G;
        const T* y = reinterpret_cast<const T*>(p.y) + row * p.d + g0;
        const T* z = reinterpret_cast<const T*>(p.z) + row * p.z_stride + g0;
        const float* w = reinterpret_cast<const float*>(p.weight) + g0;
        T* out = reinterpret_cast<T*>(p.out) + row * p.d + g0;

        // v is recomputed from y and z past the register cache.
        const auto value = [=](size_t e, float (&v)[V]) { gated_value<T, V, kNormBeforeGate>(y, z, e, v); };
        const auto finish = [=](size_t e, float (&v)[V], float inv) {
            scale_store<T, V, kNormBeforeGate>(v, z, w, out, e, inv);
        };
        rms_two_pass<V, kCache>(nv, G, p.eps, partials, value, value, finish);
    }
}

template <typename T, int V>
void launch_width(const GatedRmsNormParams& p, cudaStream_t stream, unsigned blocks, int threads) {
    if (p.norm_before_gate) {
        gated_rms_norm_kernel<T, V, true><<<blocks, threads, 0, stream>>>(p);
    } else {
        gated_rms_norm_kernel<T, V, false><<<blocks, threads, 0, stream>>>(p);
    }
}

template <typename T>
cudaError_t launch(const GatedRmsNormParams& p, cudaStream_t stream, const GatedRmsNormConfig& cfg) {
    constexpr int V = kVec<T>;
    // The vector path reads whole groups in 16-byte pieces: every group start must be aligned,
    // which group_size % V == 0 gives for y, out and weight (V being a multiple of 4 for the
    // float32 weight), and z_stride % V == 0 for z's rows (a sliced z: its offset is in p.z).
    const bool vec = !cfg.scalar && p.group_size % V == 0 && p.z_stride % V == 0 && aligned16(p.y) &&
                     aligned16(p.z) && aligned16(p.out) && aligned16(p.weight);
    const size_t nv = vec ? p.group_size / V : p.group_size;
    const int threads = row_threads(nv, kThreads);
    const size_t work = p.rows * (p.d / p.group_size);
    const unsigned blocks = static_cast<unsigned>(std::min(work, kMaxBlocks));
    if (vec) {
        launch_width<T, V>(p, stream, blocks, threads);
    } else {
        launch_width<T, 1>(p, stream, blocks, threads);
    }
    return cudaGetLastError();
}

}  // namespace
}  // namespace detail

cudaError_t gated_rms_norm(const GatedRmsNormParams& params, cudaStream_t stream, const GatedRmsNormConfig& cfg) {
    // A z_stride of 0 means contiguous z, as for every CUDA entry point (kernel_abi.rs).
    GatedRmsNormParams p = params;
    if (p.z_stride == 0) p.z_stride = p.d;
    if (p.rows == 0 || p.d == 0) return cudaSuccess;
    if (!p.y || !p.z || !p.weight || !p.out || p.group_size == 0 || p.d % p.group_size != 0 || p.z_stride < p.d) {
        return cudaErrorInvalidValue;
    }
    return detail::with_elem_type(static_cast<int>(p.elem),
                                  [&](auto t) { return detail::launch<decltype(t)>(p, stream, cfg); });
}

}  // namespace mambac::cuda
