// CausalConv1d kernels (docs/op-contract.md "CausalConv1d"). Included only by causal_conv1d_*.cu.
//
// Memory-bound: each input is read once from DRAM and each output written once. A thread owns V
// consecutive channels (one 16-byte vector when the layout allows, else one channel) and LT
// consecutive steps; it loads its LT + K - 1 rows (the K - 1 rows before its first step come from
// the neighbouring thread's range through L2, or from initial_state before step 0) all at once, so
// many loads are in flight, then slides the K-tap filter over them in registers.
#pragma once

#include "common.cuh"

namespace mambac::cuda::detail {

struct ConvArgs {
    const void* x;
    const void* weight;
    const void* bias;  // nullable
    const void* init;  // nullable, [batch, dim, K-1]
    void* y;
    void* final_state;  // nullable, [batch, dim, K-1]
    int batch, seqlen, dim, width;
    // Elements between consecutive rows of x: dim, or a packed tensor's row (docs/op-contract.md
    // "Sliced inputs"). Vector loads need it a multiple of the vector (host checks).
    int x_stride;
    bool silu;
    bool param_vec;  // weight 16-byte aligned, bias aligned to one V-channel vector (host checks)
};

constexpr int kConvLT = 16;  // steps per thread (default; ConvConfig overrides it)

// V elements of T as one load: 8 bytes (4 x 16-bit) or 16 bytes (4 x float).
template <int BYTES> struct RawOf;
template <> struct RawOf<8> { using type = uint2; };
template <> struct RawOf<16> { using type = uint4; };
template <typename T, int V> union VecN {
    typename RawOf<sizeof(T) * V>::type raw;
    T e[V];
};

// The K taps and the bias of channels d .. d + V - 1 as float. With param_vec the V * K taps, one
// contiguous run of the [dim, K] weight, come in 16-byte loads and the bias as one vector: at
// float16 and 4 channels a thread, 3 loads instead of 20.
template <typename T, int K, int V>
__device__ __forceinline__ void load_taps(const ConvArgs& a, int d, float (&w)[V][K], float (&bias)[V]) {
    const T* wt = static_cast<const T*>(a.weight);
    const T* bp = static_cast<const T*>(a.bias);
    constexpr int BYTES = V * K * static_cast<int>(sizeof(T));
    if constexpr (V > 1 && BYTES % 16 == 0) {
        if (a.param_vec) {
            const uint4* src = reinterpret_cast<const uint4*>(wt + static_cast<size_t>(d) * K);
#pragma unroll
            for (int i = 0; i < BYTES / 16; ++i) {
                Vec16<T> q;
                q.raw = __ldg(src + i);
#pragma unroll
                for (int j = 0; j < kVec<T>; ++j) {
                    const int f = i * kVec<T> + j;  // flat index e * K + k
                    w[f / K][f % K] = to_f32(q.e[j]);
                }
            }
            if (bp) {
                VecN<T, V> q;
                q.raw = __ldg(reinterpret_cast<const typename RawOf<sizeof(T) * V>::type*>(bp + d));
#pragma unroll
                for (int e = 0; e < V; ++e) bias[e] = to_f32(q.e[e]);
            } else {
#pragma unroll
                for (int e = 0; e < V; ++e) bias[e] = 0.f;
            }
            return;
        }
    }
#pragma unroll
    for (int e = 0; e < V; ++e) {
#pragma unroll
        for (int k = 0; k < K; ++k) w[e][k] = to_f32(wt[static_cast<size_t>(d + e) * K + k]);
        bias[e] = bp ? to_f32(bp[d + e]) : 0.f;
    }
}

// The SiLU of the conv output: the one-op form where the output is 16-bit (common.cuh silu_fast:
// its error, under half a float16 ulp, is not worth the two multi-function ops and two more
// instructions a channel it saves at batch 1, where the kernel's arithmetic sets the pace).
template <typename T>
__device__ __forceinline__ float conv_act(float v, bool on) {
    if (!on) return v;
    if constexpr (sizeof(T) < 4) {
        return silu_fast(v);
    } else {
        return silu(v);
    }
}

template <typename T, int K, int V, int LT>
__global__ void __launch_bounds__(128) causal_conv1d_kernel(const ConvArgs a) {
    constexpr int R = LT + K - 1;  // rows held
    const int L = a.seqlen, D = a.dim;
    const int col = blockIdx.x * blockDim.x + threadIdx.x;  // vector column
    const int d = col * V;
    if (d >= D) return;
    const int chunks = (L + LT - 1) / LT;
    const int b = blockIdx.y / chunks;
    const int t0 = (blockIdx.y - b * chunks) * LT;
    const T* x = static_cast<const T*>(a.x);
    const T* init = static_cast<const T*>(a.init);
    const size_t row0 = static_cast<size_t>(b) * L;

    // Inputs x[t0 - K + 1 .. t0 + LT - 1] of channels d .. d + V - 1.
    using Raw = typename std::conditional<V == 1, T, typename RawOf<sizeof(T) * (V == 1 ? 4 : V)>::type>::type;
    static_assert(V == 1 || sizeof(T) * V == sizeof(Raw), "a vector of V channels is one 8- or 16-byte access");
    Raw raw[R];
    // A chunk whose rows, halo included, all lie inside the sequence (all but the first and the
    // last of a batch row): loaded and computed without per-row or per-step checks.
    const bool full = t0 >= K - 1 && t0 + LT <= L;
    if (full) {
        const T* base = x + (row0 + t0 - (K - 1)) * a.x_stride + d;
#pragma unroll
        for (int r = 0; r < R; ++r) raw[r] = *reinterpret_cast<const Raw*>(base + static_cast<size_t>(r) * a.x_stride);
    } else {
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const int gt = t0 - (K - 1) + r;
            if (gt >= 0 && gt < L) {
                raw[r] = *reinterpret_cast<const Raw*>(x + (row0 + gt) * a.x_stride + d);
            } else {
                if constexpr (V == 1) {
                    raw[r] = from_f32<T>(0.f);
                } else {
                    raw[r] = Raw{};
                }
                if (gt < 0 && init) {
                    // initial_state[b, c, j] holds x[j - (K - 1)].
                    const int j = gt + (K - 1);
                    if constexpr (V == 1) {
                        raw[r] = init[(static_cast<size_t>(b) * D + d) * (K - 1) + j];
                    } else {
                        VecN<T, V> v;
#pragma unroll
                        for (int e = 0; e < V; ++e) v.e[e] = init[(static_cast<size_t>(b) * D + d + e) * (K - 1) + j];
                        raw[r] = v.raw;
                    }
                }
            }
        }
    }
    float w[V][K], bias[V];
    load_taps<T, K, V>(a, d, w, bias);
    T* y = static_cast<T*>(a.y);
#pragma unroll
    for (int s = 0; s < LT; ++s) {
        const int gt = t0 + s;
        if (!full && gt >= L) break;
        float acc[V];
#pragma unroll
        for (int e = 0; e < V; ++e) acc[e] = bias[e];
#pragma unroll
        for (int k = 0; k < K; ++k) {
            if constexpr (V == 1) {
                acc[0] = fmaf(w[0][k], to_f32(raw[s + k]), acc[0]);
            } else {
                VecN<T, V> v;
                v.raw = raw[s + k];
#pragma unroll
                for (int e = 0; e < V; ++e) acc[e] = fmaf(w[e][k], to_f32(v.e[e]), acc[e]);
            }
        }
        if constexpr (V == 1) {
            y[(row0 + gt) * D + d] = from_f32<T>(conv_act<T>(acc[0], a.silu));
        } else {
            VecN<T, V> o;
#pragma unroll
            for (int e = 0; e < V; ++e) o.e[e] = from_f32<T>(conv_act<T>(acc[e], a.silu));
            *reinterpret_cast<Raw*>(y + (row0 + gt) * D + d) = o.raw;
        }
    }
    // final_state = the last K - 1 inputs, x[L - K + 1 .. L - 1] (initial state included when
    // L < K - 1): rows L - t0 .. L - t0 + K - 2 of this thread's window, if L - 1 is in its range.
    if (a.final_state && t0 <= L - 1 && L - 1 < t0 + LT) {
        T* fs = static_cast<T*>(a.final_state);
#pragma unroll
        for (int j = 0; j < K - 1; ++j) {
            const int r = L - t0 + j;  // = (L - K + 1 + j) - (t0 - K + 1)
#pragma unroll
            for (int rr = 0; rr < R; ++rr) {
                if (rr == r) {
                    if constexpr (V == 1) {
                        fs[(static_cast<size_t>(b) * D + d) * (K - 1) + j] = raw[rr];
                    } else {
                        VecN<T, V> v;
                        v.raw = raw[rr];
#pragma unroll
                        for (int e = 0; e < V; ++e) fs[(static_cast<size_t>(b) * D + d + e) * (K - 1) + j] = v.e[e];
                    }
                }
            }
        }
    }
}

// Any width: one thread per output element, inputs read straight from global memory.
template <typename T>
__global__ void causal_conv1d_generic_kernel(const ConvArgs a) {
    const size_t total = static_cast<size_t>(a.batch) * a.seqlen * a.dim;
    const int K = a.width, L = a.seqlen, D = a.dim;
    const T* x = static_cast<const T*>(a.x);
    const T* wt = static_cast<const T*>(a.weight);
    const T* init = static_cast<const T*>(a.init);
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<size_t>(gridDim.x) * blockDim.x) {
        const int d = static_cast<int>(i % D);
        const size_t bt = i / D;
        const int t = static_cast<int>(bt % L);
        const int b = static_cast<int>(bt / L);
        float acc = a.bias ? to_f32(static_cast<const T*>(a.bias)[d]) : 0.f;
        for (int k = 0; k < K; ++k) {
            const int gt = t - (K - 1) + k;
            float xv = 0.f;
            if (gt >= 0) xv = to_f32(x[(static_cast<size_t>(b) * L + gt) * a.x_stride + d]);
            else if (init) xv = to_f32(init[(static_cast<size_t>(b) * D + d) * (K - 1) + gt + K - 1]);
            acc = fmaf(to_f32(wt[static_cast<size_t>(d) * K + k]), xv, acc);
        }
        static_cast<T*>(a.y)[i] = from_f32<T>(a.silu ? silu(acc) : acc);
    }
}

// final_state for the generic path (and for seqlen 0): one thread per (b, d, j).
template <typename T>
__global__ void causal_conv1d_final_state_kernel(const ConvArgs a) {
    const int K1 = a.width - 1, L = a.seqlen, D = a.dim;
    const size_t total = static_cast<size_t>(a.batch) * D * K1;
    const T* x = static_cast<const T*>(a.x);
    const T* init = static_cast<const T*>(a.init);
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<size_t>(gridDim.x) * blockDim.x) {
        const int j = static_cast<int>(i % K1);
        const size_t bd = i / K1;
        const int d = static_cast<int>(bd % D);
        const int b = static_cast<int>(bd / D);
        const int gt = L - K1 + j;
        T v = from_f32<T>(0.f);
        if (gt >= 0) v = x[(static_cast<size_t>(b) * L + gt) * a.x_stride + d];
        else if (init) v = init[(static_cast<size_t>(b) * D + d) * K1 + gt + K1];
        static_cast<T*>(a.final_state)[i] = v;
    }
}

// Decode path (seqlen 1 to 4, as mamba's causal_conv1d_update): one thread a (batch, channel) holds
// its K - 1 state inputs and K weights in registers and walks the steps in order. The fast
// kernel gives a thread 4 channels and 16 steps, so at seqlen 1 it runs a quarter of the threads
// for 1/16 of the work each (3.6 us a launch at batch 1, dim 5120, measured on the H200).
constexpr int kConvStepThreads = 128;

template <typename T, int K>
__global__ void __launch_bounds__(kConvStepThreads) causal_conv1d_step_kernel(const ConvArgs a) {
    const long long row = static_cast<long long>(blockIdx.x) * kConvStepThreads + threadIdx.x;
    if (row >= static_cast<long long>(a.batch) * a.dim) return;
    const int b = static_cast<int>(row / a.dim), d = static_cast<int>(row % a.dim);
    const int L = a.seqlen, D = a.dim;
    const T* x = static_cast<const T*>(a.x);
    const T* wt = static_cast<const T*>(a.weight) + static_cast<size_t>(d) * K;
    const T* init = static_cast<const T*>(a.init);
    T win[K];  // win[k] = x[t - (K - 1) + k], kept in T: final_state repeats the inputs exactly
#pragma unroll
    for (int j = 0; j < K - 1; ++j) win[j] = init ? init[static_cast<size_t>(row) * (K - 1) + j] : from_f32<T>(0.f);
    float w[K];
#pragma unroll
    for (int k = 0; k < K; ++k) w[k] = to_f32(wt[k]);
    const float bias = a.bias ? to_f32(static_cast<const T*>(a.bias)[d]) : 0.f;
    T* y = static_cast<T*>(a.y);
    for (int t = 0; t < L; ++t) {
        const size_t at = (static_cast<size_t>(b) * L + t) * D + d;
        win[K - 1] = x[(static_cast<size_t>(b) * L + t) * a.x_stride + d];
        float acc = bias;
#pragma unroll
        for (int k = 0; k < K; ++k) acc = fmaf(w[k], to_f32(win[k]), acc);
        y[at] = from_f32<T>(a.silu ? silu(acc) : acc);
#pragma unroll
        for (int k = 0; k < K - 1; ++k) win[k] = win[k + 1];
    }
    if (a.final_state) {
        T* fs = static_cast<T*>(a.final_state) + static_cast<size_t>(row) * (K - 1);
#pragma unroll
        for (int j = 0; j < K - 1; ++j) fs[j] = win[j];
    }
}

template <typename T>
cudaError_t launch_conv_step(const ConvArgs& a, cudaStream_t stream) {
    const long long blocks = (static_cast<long long>(a.batch) * a.dim + kConvStepThreads - 1) / kConvStepThreads;
    if (blocks > 0x7fffffffLL) return cudaErrorNotSupported;
    const dim3 grid(static_cast<unsigned>(blocks));
    switch (a.width) {
        case 2: causal_conv1d_step_kernel<T, 2><<<grid, kConvStepThreads, 0, stream>>>(a); break;
        case 3: causal_conv1d_step_kernel<T, 3><<<grid, kConvStepThreads, 0, stream>>>(a); break;
        case 4: causal_conv1d_step_kernel<T, 4><<<grid, kConvStepThreads, 0, stream>>>(a); break;
        default: return cudaErrorNotSupported;  // the caller takes the general kernels
    }
    return cudaGetLastError();
}

template <typename T, int K, int V, int LT>
cudaError_t launch_conv_fast(const ConvArgs& a, cudaStream_t stream) {
    const int cols = a.dim / V;
    const int chunks = (a.seqlen + LT - 1) / LT;
    const long long gy = static_cast<long long>(a.batch) * chunks;
    if (gy > 65535) return cudaErrorNotSupported;  // caller falls back to the generic kernel
    dim3 grid((cols + 127) / 128, static_cast<unsigned>(gy));
    causal_conv1d_kernel<T, K, V, LT><<<grid, 128, 0, stream>>>(a);
    return cudaGetLastError();
}

// The (channels, steps) a thread of the fast kernel takes: the default (4, kConvLT), or what
// ConvConfig forces (the harness's sweep). Shapes or pointers that do not allow V-channel vectors
// take one channel a thread.
template <typename T, int K>
cudaError_t launch_conv_vec(const ConvArgs& args, cudaStream_t stream, const ConvConfig& cfg) {
    const int v = cfg.v > 0 ? cfg.v : 4;
    const int lt = cfg.lt > 0 ? cfg.lt : kConvLT;
    const unsigned align = sizeof(T) * v - 1;
    const bool vec = v > 1 && args.dim % v == 0 && args.x_stride % v == 0 &&
                     (reinterpret_cast<uintptr_t>(args.x) & align) == 0 &&
                     (reinterpret_cast<uintptr_t>(args.y) & align) == 0;
    ConvArgs a = args;
    a.param_vec = vec && (reinterpret_cast<uintptr_t>(a.weight) & 15u) == 0 &&
                  (reinterpret_cast<uintptr_t>(a.bias) & align) == 0;
    if (!vec) {
        if (cfg.v > 1) return cudaErrorInvalidValue;  // a forced vector width the shape cannot take
        return launch_conv_fast<T, K, 1, kConvLT>(a, stream);
    }
    if (v == 4 && lt == 16) return launch_conv_fast<T, K, 4, 16>(a, stream);
    if (v == 4 && lt == 8) return launch_conv_fast<T, K, 4, 8>(a, stream);
    if (v == 4 && lt == 32) return launch_conv_fast<T, K, 4, 32>(a, stream);
    if constexpr (sizeof(T) == 2) {
        if (v == 8 && lt == 8) return launch_conv_fast<T, K, 8, 8>(a, stream);
        if (v == 8 && lt == 16) return launch_conv_fast<T, K, 8, 16>(a, stream);
    }
    return cudaErrorInvalidValue;
}

inline unsigned grid_for(size_t total, unsigned threads) {
    const size_t blocks = (total + threads - 1) / threads;
    return static_cast<unsigned>(blocks < 65536 * 8 ? blocks : 65536 * 8);
}

template <typename T>
cudaError_t launch_conv_typed(const CausalConv1dParams& p, cudaStream_t stream, const ConvConfig& cfg) {
    if (p.width == 0) return cudaErrorInvalidValue;
    // No output elements, or no steps and no final state: nothing to launch (see the scan's).
    if (p.batch == 0 || p.dim == 0 || (p.seqlen == 0 && (!p.final_state || p.width == 1))) return cudaSuccess;
    if (p.seqlen > 0x7fffffffull || p.dim > 0x7fffffffull || p.width > 0x7fffffffull)
        return cudaErrorInvalidValue;
    ConvArgs a{};
    a.x = reinterpret_cast<const void*>(p.x);
    a.weight = reinterpret_cast<const void*>(p.weight);
    a.bias = reinterpret_cast<const void*>(p.bias);
    a.init = reinterpret_cast<const void*>(p.initial_state);
    a.y = reinterpret_cast<void*>(p.y);
    a.final_state = reinterpret_cast<void*>(p.final_state);
    a.batch = static_cast<int>(p.batch);
    a.seqlen = static_cast<int>(p.seqlen);
    a.dim = static_cast<int>(p.dim);
    a.width = static_cast<int>(p.width);
    // 0 from a caller that predates the field: contiguous.
    if (p.x_stride > 0x7fffffffull) return cudaErrorInvalidValue;
    a.x_stride = p.x_stride ? static_cast<int>(p.x_stride) : a.dim;
    a.silu = p.silu;
    if (a.width == 1) a.final_state = nullptr;  // [batch, dim, 0]: nothing to write
    if (a.seqlen > 0 && (!a.x || !a.weight || !a.y)) return cudaErrorInvalidValue;

    // Decode steps and short chunks: the per-step kernel writes y and final_state (widths 2-4;
    // others fall through). CUDA-graph replays on the H200 (fp16, dim 5120, batch 1 and 8): 1.8 vs
    // 3.1 us at seqlen 1, 2.4 vs 3.3 at 4, 4.7 vs 4.4 at 16 (loses).
    const bool split_forced = cfg.v != 0 || cfg.lt != 0;
    if (a.seqlen > 0 && (cfg.step > 0 || (cfg.step == 0 && !split_forced && a.seqlen <= 4))) {
        const cudaError_t e = launch_conv_step<T>(a, stream);
        if (e != cudaErrorNotSupported) return e;
        if (cfg.step > 0) return cudaErrorInvalidValue;  // forced on a width it does not take
    }
    if (a.seqlen > 0) {
        // Four channels a thread (8- or 16-byte accesses): small enough a register window that
        // enough threads stay resident to keep DRAM busy at batch 1.
        cudaError_t e = cudaErrorNotSupported;
        switch (a.width) {
            case 2: e = launch_conv_vec<T, 2>(a, stream, cfg); break;
            case 3: e = launch_conv_vec<T, 3>(a, stream, cfg); break;
            case 4: e = launch_conv_vec<T, 4>(a, stream, cfg); break;
            default: break;
        }
        if (e == cudaSuccess) return e;
        if (e != cudaErrorNotSupported) return e;
        const size_t total = static_cast<size_t>(a.batch) * a.seqlen * a.dim;
        causal_conv1d_generic_kernel<T><<<grid_for(total, 256), 256, 0, stream>>>(a);
        e = cudaGetLastError();
        if (e != cudaSuccess) return e;
    }
    if (a.final_state) {
        const size_t total = static_cast<size_t>(a.batch) * a.dim * (a.width - 1);
        causal_conv1d_final_state_kernel<T><<<grid_for(total, 256), 256, 0, stream>>>(a);
        return cudaGetLastError();
    }
    return cudaSuccess;
}

}  // namespace mambac::cuda::detail

#define MAMBAC_INSTANTIATE_CONV(T)                                                              \
    namespace mambac::cuda::detail {                                                            \
    template cudaError_t launch_conv_typed<T>(const CausalConv1dParams&, cudaStream_t, const ConvConfig&); \
    }
