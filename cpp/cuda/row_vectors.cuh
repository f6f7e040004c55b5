// Row-wise helpers of the one-block-a-row norm kernels (add_rms_norm.cu, gated_rms_norm.cu):
// V elements of a row loaded or stored as one 16-byte vector where V fills one (the launchers
// check the alignment), else element by element, widened to float; a block-wide sum; and the
// two passes of an RMSNorm over a row, each kernel saying what a value is and what is written.
#pragma once

#include <algorithm>
#include <cstddef>

#include "common.cuh"

namespace mambac::cuda::detail {
namespace {

// V elements of T at p, widened to float: one 16-byte load when V = kVec<T>.
template <typename T, int V>
__device__ __forceinline__ void load_t(const T* p, float (&out)[V]) {
    if constexpr (V == kVec<T>) {
        Vec16<T> u;
        u.raw = *reinterpret_cast<const uint4*>(p);
#pragma unroll
        for (int i = 0; i < V; ++i) out[i] = to_f32<T>(u.e[i]);
    } else {
#pragma unroll
        for (int i = 0; i < V; ++i) out[i] = to_f32<T>(p[i]);
    }
}

template <typename T, int V>
__device__ __forceinline__ void store_t(T* p, const float (&v)[V]) {
    if constexpr (V == kVec<T>) {
        Vec16<T> u;
#pragma unroll
        for (int i = 0; i < V; ++i) u.e[i] = from_f32<T>(v[i]);
        *reinterpret_cast<uint4*>(p) = u.raw;
    } else {
#pragma unroll
        for (int i = 0; i < V; ++i) p[i] = from_f32<T>(v[i]);
    }
}

// V floats at p: float4 loads when V is a multiple of 4 (the vector path's alignment holds).
template <int V>
__device__ __forceinline__ void load_f32(const float* p, float (&out)[V]) {
    if constexpr (V % 4 == 0) {
#pragma unroll
        for (int j = 0; j < V / 4; ++j) {
            const float4 f = reinterpret_cast<const float4*>(p)[j];
            out[4 * j] = f.x, out[4 * j + 1] = f.y, out[4 * j + 2] = f.z, out[4 * j + 3] = f.w;
        }
    } else {
#pragma unroll
        for (int i = 0; i < V; ++i) out[i] = p[i];
    }
}

template <int V>
__device__ __forceinline__ void store_f32(float* p, const float (&v)[V]) {
    if constexpr (V % 4 == 0) {
#pragma unroll
        for (int j = 0; j < V / 4; ++j) {
            reinterpret_cast<float4*>(p)[j] = make_float4(v[4 * j], v[4 * j + 1], v[4 * j + 2], v[4 * j + 3]);
        }
    } else {
#pragma unroll
        for (int i = 0; i < V; ++i) p[i] = v[i];
    }
}

// The sum of `v` over the block, returned to every thread. `partials` holds one float a warp;
// the trailing barrier lets the next row or group reuse it.
__device__ __forceinline__ float block_sum(float v, float* partials) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    if (lane == 0) partials[warp] = v;
    __syncthreads();
    v = lane < warps ? partials[lane] : 0.f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    return v;
}

// The two passes of one RMSNorm over a row (or group) of n elements, nv vectors of V, the block
// sharing it: a thread owns vectors v = threadIdx.x + k * blockDim.x. Pass 1 takes each vector's
// value from `value(e, s)` (e its element offset; it may also write, e.g. AddRmsNorm's
// residual_out) and sums the squares; the block reduces the sum into
// inv = rsqrt(mean + eps); pass 2 hands each value and inv to `finish(e, s, inv)`. The first
// kCache vectors a thread owns keep their values in registers between the passes; past them
// `revalue(e, s)` gets a value again (an L2 hit for the row just read). A NaN anywhere makes inv
// NaN; an infinite sum gives inv = 0 and inf * 0 = NaN where the equations have inf / inf
// (docs/op-contract.md). `partials` is block_sum's.
template <int V, int kCache, typename Value, typename Revalue, typename Finish>
__device__ __forceinline__ void rms_two_pass(size_t nv, size_t n, float eps, float* partials, Value value,
                                             Revalue revalue, Finish finish) {
    float cache[kCache][V];
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < kCache; ++k) {
        const size_t v = threadIdx.x + size_t(k) * blockDim.x;
        if (v < nv) {
            value(v * V, cache[k]);
#pragma unroll
            for (int i = 0; i < V; ++i) ss = fmaf(cache[k][i], cache[k][i], ss);
        }
    }
    for (size_t v = threadIdx.x + size_t(kCache) * blockDim.x; v < nv; v += blockDim.x) {
        float s[V];
        value(v * V, s);
#pragma unroll
        for (int i = 0; i < V; ++i) ss = fmaf(s[i], s[i], ss);
    }
    const float inv = rsqrtf(block_sum(ss, partials) / static_cast<float>(n) + eps);

#pragma unroll
    for (int k = 0; k < kCache; ++k) {
        const size_t v = threadIdx.x + size_t(k) * blockDim.x;
        if (v < nv) finish(v * V, cache[k], inv);
    }
    for (size_t v = threadIdx.x + size_t(kCache) * blockDim.x; v < nv; v += blockDim.x) {
        float s[V];
        revalue(v * V, s);
        finish(v * V, s, inv);
    }
}

// Host side of both launchers: whether a buffer starts on a 16-byte boundary (the vector path
// needs every one to), and the threads a block takes for a row of `nv` vectors: whole warps, at
// least one, at most `max_threads`.
inline bool aligned16(size_t addr) { return addr % 16 == 0; }
inline int row_threads(size_t nv, int max_threads) {
    return static_cast<int>(std::min<size_t>(max_threads, std::max<size_t>(32, (nv + 31) / 32 * 32)));
}

}  // namespace
}  // namespace mambac::cuda::detail
