// AddRmsNorm on the GPU (docs/op-contract.md "AddRmsNorm"):
//
//   s            = residual + float32(x)        (float32(x) when residual is absent)
//   residual_out = s                            float32
//   y            = T(s / sqrt(mean(s^2) + eps) * weight)
//
// One block a row (grid-striding past the grid's size), float32 throughout. A thread owns the
// vectors v = threadIdx.x + k * blockDim.x of its row: 16-byte loads of x (kVec<T> elements) and
// the matching float4s of residual, weight and residual_out. Pass 1 writes residual_out and sums
// s^2; the block reduces the sum (warp shuffles, then one warp over the warps' partials); pass 2
// scales. The first kCache vectors a thread owns stay in registers between the passes (2.8b's
// hidden 2560 is 320 float16 vectors, 640 float32 ones: all cached at 256 threads); any past them
// are read back from residual_out (or recomputed from x and residual), an L2 hit, so a row
// costs one read of x and residual and one write of y and residual_out in DRAM. Rows whose
// buffers are not 16-byte aligned (hidden not a multiple of kVec<T>, or an offset pointer) take
// the same kernel with one element a vector.
#include "abi.h"
#include "add_rms_norm.h"
#include "common.cuh"
#include "row_vectors.cuh"

#include <algorithm>
#include <cstdint>

namespace mambac::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;
constexpr int kCache = 4;
// Rows a grid covers before striding (grid-stride keeps any row count launchable).
constexpr size_t kMaxBlocks = size_t(1) << 20;

// s = residual + x for the V elements at element offset `e` of a row.
template <typename T, int V>
__device__ __forceinline__ void row_sum(const T* x, const float* r, size_t e, float (&s)[V]) {
    load_t<T, V>(x + e, s);
    if (r) {
        float rv[V];
        load_f32<V>(r + e, rv);
#pragma unroll
        for (int i = 0; i < V; ++i) s[i] += rv[i];
    }
}


template <typename T, int V>
__global__ void __launch_bounds__(kThreads) add_rms_norm_kernel(const AddRmsNormParams p) {
    __shared__ float partials[kThreads / 32];
    const size_t H = p.hidden;
    const size_t nv = H / V;
    const float* w = reinterpret_cast<const float*>(p.weight);
    for (size_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
        const T* x = reinterpret_cast<const T*>(p.x) + row * H;
        const float* r = p.residual ? reinterpret_cast<const float*>(p.residual) + row * H : nullptr;
        float* r_out = p.residual_out ? reinterpret_cast<float*>(p.residual_out) + row * H : nullptr;
        T* y = reinterpret_cast<T*>(p.y) + row * H;

        // Pass 1: s = residual + x, written to residual_out when asked for.
        const auto sum = [=](size_t e, float (&s)[V]) {
            row_sum<T, V>(x, r, e, s);
            if (r_out) store_f32<V>(r_out + e, s);
        };
        // Past the register cache, s again: this thread wrote those residual_out elements in
        // pass 1 (program order makes them visible to it without a barrier), else recomputed.
        const auto resum = [=](size_t e, float (&s)[V]) {
            if (r_out) {
                load_f32<V>(r_out + e, s);
            } else {
                row_sum<T, V>(x, r, e, s);
            }
        };
        const auto scale_store = [=](size_t e, float (&s)[V], float inv) {
            float wv[V];
            load_f32<V>(w + e, wv);
#pragma unroll
            for (int i = 0; i < V; ++i) s[i] = s[i] * inv * wv[i];
            store_t<T, V>(y + e, s);
        };
        rms_two_pass<V, kCache>(nv, H, p.eps, partials, sum, resum, scale_store);
    }
}

template <typename T>
cudaError_t launch(const AddRmsNormParams& p, cudaStream_t stream, const AddRmsNormConfig& cfg) {
    constexpr int V = kVec<T>;
    // The vector path reads whole rows in 16-byte pieces: every row start must be aligned, which
    // hidden % V == 0 gives for x and y (and, V being a multiple of 4, for the float32 buffers).
    const bool vec = !cfg.scalar && p.hidden % V == 0 && aligned16(p.x) && aligned16(p.y) && aligned16(p.weight) &&
                     aligned16(p.residual) && aligned16(p.residual_out);
    const size_t nv = vec ? p.hidden / V : p.hidden;
    const int threads = row_threads(nv, kThreads);
    const unsigned blocks = static_cast<unsigned>(std::min(p.rows, kMaxBlocks));
    if (vec) {
        add_rms_norm_kernel<T, V><<<blocks, threads, 0, stream>>>(p);
    } else {
        add_rms_norm_kernel<T, 1><<<blocks, threads, 0, stream>>>(p);
    }
    return cudaGetLastError();
}

}  // namespace
}  // namespace detail

cudaError_t add_rms_norm(const AddRmsNormParams& p, cudaStream_t stream, const AddRmsNormConfig& cfg) {
    if (p.rows == 0 || p.hidden == 0) return cudaSuccess;
    if (!p.x || !p.weight || !p.y) return cudaErrorInvalidValue;
    return detail::with_elem_type(static_cast<int>(p.elem),
                                  [&](auto t) { return detail::launch<decltype(t)>(p, stream, cfg); });
}

}  // namespace mambac::cuda
