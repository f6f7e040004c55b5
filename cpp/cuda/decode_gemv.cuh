// The decode layers' split-K GEMVs (decode_layer.cu for Mamba-1, mamba2_decode_layer.cu for
// Mamba-2), their launchers and the stats kernel both layers start with. Knows nothing about
// either layer: what a GEMV multiplies is made by its prologue, a functor the layer supplies.
//
// GEMVs read the [in, out] weights row by row: a warp takes 32 x V consecutive outputs (V = one
// 16-byte vector of T) of one input row, the 8 warps of a block take interleaved rows of its K
// tile, the block sums its warps in shared memory and adds the tile's share to the float32
// output with atomics. K tiles are sized so the grid covers the GPU about six times over. The
// roundings to T sit where the unfused graph stores a T tensor, so both agree to T's precision.
// Float atomics make the last bits depend on the order the tiles land in.
// From batch 4, 16-bit weights take the tensor-core GEMV instead (decode_gemv_tc_kernel): same
// tiles, prologues and atomics, mma.sync for the products.
//
// A prologue is a struct passed by value to the kernels with the member template
//   template <typename T, int BB, typename X, int LD>
//   __device__ void fill(X (*xs)[LD], int b0, int nb, int k0, int kt, bool first_col_block) const;
// which writes x[b][i] = input k0 + i of batch row b0 + b for i < kt (zero for b >= nb), each
// value already rounded to T; first_col_block is true in the blocks of the first column range
// (a prologue with side effects does them there only).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "decode_layer.h"

namespace mambac::cuda::detail {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kKTileMax = 512;  // rows of a K tile (passes of kPassRows)

template <typename T> __device__ __forceinline__ float round_t(float v) { return to_f32(from_f32<T>(v)); }

__host__ __device__ inline size_t align4(size_t n) { return (n + 3) & ~size_t(3); }

// One split-K GEMV launch: out[b, n] += sum_k x[b, k] W[k, n] for the block's K tile, n in its
// column range, b < batch in its batch chunk. x is made by the prologue.
struct GemvArgs {
    const void* W;
    const void* bias;  // [N] T, added once (by the first K tile); nullable
    float* out;
    int K, N, ldo, k_tile;
    int batch;
};

// V consecutive weights of one row: one 16-byte load, or V scalar ones.
template <typename T, int V> struct WRow {
    T e[V];
    __device__ __forceinline__ void load(const T* q) {
        if constexpr (V * sizeof(T) == 16) {
            Vec16<T> v;
            v.raw = __ldg(reinterpret_cast<const uint4*>(q));
#pragma unroll
            for (int i = 0; i < V; ++i) e[i] = v.e[i];
        } else {
#pragma unroll
            for (int i = 0; i < V; ++i) e[i] = q[i];
        }
    }
};

// RPP: rows of one pass a thread holds in registers (a pass is kWarps * RPP rows of the tile),
// i.e. its 16-byte loads in flight. More loads in flight cost registers and so resident blocks;
// at 16 with 8 batch rows of accumulators a block took up to 240 registers (one a
// multiprocessor). Chosen by the launcher (DecodeTuning overrides it for the harness).

// The plain prologue: x[b][k] = src[row * ld + k], a float32 activation already rounded to T.
struct PlainPrologue {
    const float* src;
    int ld;
    template <typename T, int BB, typename X, int LD>
    __device__ __forceinline__ void fill(X (*xs)[LD], int b0, int nb, int k0, int kt, bool) const {
        for (int i = threadIdx.x; i < kt; i += kThreads) {
            const int k = k0 + i;
#pragma unroll
            for (int b = 0; b < BB; ++b) xs[b][i] = from_f32<X>(b < nb ? src[size_t(b0 + b) * ld + k] : 0.f);
        }
    }
};

// The norm prologue: x[b][k] = T(residual[row, k] * inv_rms[row] * w[k]). One k a thread with
// the block's batch rows unrolled inside, so the rows' loads are independent and go out together
// (a loop over (row, k) pairs waited on one load latency an element: in_proj took 29 us at
// batch 8 and 60 us at 16 that way, 22 and 38 this way).
struct NormPrologue {
    const float* residual;  // [B, hidden]
    const float* inv_rms;   // [B]
    const float* w;         // [hidden]
    int hidden;
    template <typename T, int BB, typename X, int LD>
    __device__ __forceinline__ void fill(X (*xs)[LD], int b0, int nb, int k0, int kt, bool) const {
        for (int i = threadIdx.x; i < kt; i += kThreads) {
            const int k = k0 + i;
            const float nw = w[k];
#pragma unroll
            for (int b = 0; b < BB; ++b) {
                float v = 0.f;
                if (b < nb) {
                    const size_t row = size_t(b0 + b);
                    v = round_t<T>(residual[row * hidden + k] * inv_rms[row] * nw);
                }
                xs[b][i] = from_f32<X>(v);
            }
        }
    }
};

template <typename T, int V, int RPP>
__device__ __forceinline__ void load_pass(WRow<T, V> (&w)[RPP], const T* wp, int N, int i0, int kt, bool col_ok) {
#pragma unroll
    for (int r = 0; r < RPP; ++r) {
        const int i = i0 + r * kWarps;
        if (col_ok && i < kt) w[r].load(wp + size_t(i) * N);
    }
}

template <typename T, int V, int BB, int RPP>
__device__ __forceinline__ void fma_pass(float (&acc)[BB][V], const float (*xs)[kKTileMax], const WRow<T, V> (&w)[RPP],
                                         int i0, int kt) {
#pragma unroll
    for (int r = 0; r < RPP; ++r) {
        const int i = i0 + r * kWarps;
        if (i < kt) {
#pragma unroll
            for (int b = 0; b < BB; ++b) {
                const float x = xs[b][i];
#pragma unroll
                for (int e = 0; e < V; ++e) acc[b][e] = fmaf(x, to_f32(w[r].e[e]), acc[b][e]);
            }
        }
    }
}

// AHEAD: the next pass's weights are requested before this pass's FMAs, into a second register
// set, so a thread always has loads in flight; otherwise they go out after the FMAs and each
// pass waits a whole memory latency (batch 1's GEMVs read 2.1-2.5 TB/s that way).
template <typename T, int V, int BB, int RPP, bool AHEAD, typename Pro>
__global__ void __launch_bounds__(kThreads) decode_gemv_kernel(const Pro pro, const GemvArgs g) {
    __shared__ float xs[BB][kKTileMax];
    __shared__ float red[kWarps][32 * V];
    const int b0 = blockIdx.z * BB;
    const int nb = min(BB, g.batch - b0);
    const int k0 = blockIdx.y * g.k_tile;
    const int kt = min(g.k_tile, g.K - k0);
    const int n0 = blockIdx.x * 32 * V;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int n = n0 + lane * V;
    const bool col_ok = n < g.N;
    const T* wp = static_cast<const T*>(g.W) + size_t(k0) * g.N + n;

    // The first pass's weights are requested before the prologue, so their latency and the
    // prologue's overlap; each thread has up to rows_per_pass 16-byte loads in flight.
    constexpr int kPassRows = kWarps * RPP;
    // Launched as a dependent of the kernel before (common.cuh): the weights are read before
    // waiting for it, x (the prologue reads the activations it wrote) after.
    allow_dependent_grids();
    WRow<T, V> w[RPP];
    load_pass<T, V, RPP>(w, wp, g.N, warp, kt, col_ok);
    wait_for_prior_grids();
    pro.template fill<T, BB, float, kKTileMax>(xs, b0, nb, k0, kt, blockIdx.x == 0);
    __syncthreads();

    float acc[BB][V];
#pragma unroll
    for (int b = 0; b < BB; ++b)
#pragma unroll
        for (int e = 0; e < V; ++e) acc[b][e] = 0.f;
    if constexpr (AHEAD) {
        WRow<T, V> next[RPP];
        for (int i0 = warp;; i0 += kPassRows) {
            const bool more = i0 + kPassRows < kt;
            if (more) load_pass<T, V, RPP>(next, wp, g.N, i0 + kPassRows, kt, col_ok);
            fma_pass<T, V, BB, RPP>(acc, xs, w, i0, kt);
            if (!more) break;
#pragma unroll
            for (int r = 0; r < RPP; ++r) w[r] = next[r];
        }
    } else {
        for (int i0 = warp;; i0 += kPassRows) {
            fma_pass<T, V, BB, RPP>(acc, xs, w, i0, kt);
            if (i0 + kPassRows >= kt) break;
            load_pass<T, V, RPP>(w, wp, g.N, i0 + kPassRows, kt, col_ok);
        }
    }
    // Sum the 8 warps' partials per output, then one atomic per (row, output) and tile.
    const T* bias = static_cast<const T*>(g.bias);
#pragma unroll
    for (int b = 0; b < BB; ++b) {
        if (b >= nb) break;  // uniform over the block
#pragma unroll
        for (int e = 0; e < V; ++e) red[warp][lane * V + e] = acc[b][e];
        __syncthreads();
        // Four outputs a thread and one vector atomic (sm_90) where the row allows: the tiles of
        // a column all land on the same addresses, so fewer, wider atomics contend less.
        float* orow = g.out + size_t(b0 + b) * g.ldo;
        for (int c = threadIdx.x * 4; c < 32 * V; c += kThreads * 4) {
            const int col = n0 + c;
            float s[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[e] = 0.f;
                if (c + e < 32 * V) {
#pragma unroll
                    for (int w2 = 0; w2 < kWarps; ++w2) s[e] += red[w2][c + e];
                    if (bias && blockIdx.y == 0 && col + e < g.N) s[e] += to_f32(bias[col + e]);
                }
            }
            if (col + 3 < g.N && (reinterpret_cast<uintptr_t>(orow + col) & 15u) == 0) {
                atomicAdd(reinterpret_cast<float4*>(orow + col), make_float4(s[0], s[1], s[2], s[3]));
            } else {
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    if (col + e < g.N && c + e < 32 * V) atomicAdd(orow + col + e, s[e]);
            }
        }
        __syncthreads();
    }
}

// The tensor-core GEMV, for 16-bit weights once a block serves several batch rows. The FMA
// kernel above spends BB FMAs and conversions on every weight it loads; from batch ~8 that, not
// the weight bytes, bounds it (74.8 us a 2.8b layer at batch 8 against 36.7 at batch 1). Here a
// warp's 16-row step feeds mma.sync m16n8k16 (float32 accumulate), 8 batch rows an n-tile, so
// a weight costs about the same at batch 16 as at batch 1. Same K tiles, prologues and atomics
// as the FMA kernel; x is staged in T, which is exact (the prologues round to T), so only the
// order of the float32 sums differs.
//
// Fragments (PTX ISA, mma.m16n8k16 .f16/.bf16; g = lane / 4, t = lane % 4): the mma's row m is an
// output, its k a weight row. Thread (g, t) loads rows 2t, 2t+1, 2t+8, 2t+9 of the step, 8
// outputs from column ca = n0 + 8g and 8 from cb = n0 + 64 + 8g (16-byte loads, coalesced
// across g). mma i (0..7) maps its row g to output ca + i and row g + 8 to cb + i, so each A
// register is a byte permutation of two loaded rows; B is x[batch][k] straight from shared
// memory (k pairs are contiguous). A warp covers 128 outputs, the block's 8 warps interleave
// the K tile's 16-row steps and sum their fragments in shared memory.
constexpr int kTcCols = 128;
// Row stride of x in shared memory, padded so a warp's reads (rows g, words t) hit distinct banks.
constexpr int kTcLd = kKTileMax + 8;

template <typename T> __device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <> __device__ __forceinline__ void mma_16816<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <> __device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t word(const uint4& v, int j) {
    return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w;
}

// A step's weights: rows 2t + (r & 1) + 8 (r >> 1) of the step, columns ca (even slots) and cb
// (odd slots); zeros past the tile or the columns, so padded products are 0 x 0.
template <typename T>
__device__ __forceinline__ void load_tc_step(uint4 (&w)[8], const T* W, int N, int k0, int kt, int step, int tig,
                                             int ca, int cb) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
        const int i = step * 16 + 2 * tig + (r & 1) + 8 * (r >> 1);
        const T* row = W + size_t(k0 + i) * N;
        const bool rok = i < kt;
        w[2 * r] = (rok && ca < N) ? __ldg(reinterpret_cast<const uint4*>(row + ca)) : make_uint4(0, 0, 0, 0);
        w[2 * r + 1] = (rok && cb < N) ? __ldg(reinterpret_cast<const uint4*>(row + cb)) : make_uint4(0, 0, 0, 0);
    }
}

template <typename T, int NT>
__device__ __forceinline__ void mma_tc_step(float (&acc)[NT][8][4], const uint4 (&w)[8], const T (*xs)[kTcLd],
                                            int step, int gid, int tig) {
    uint32_t b[NT][2];
#pragma unroll
    for (int j = 0; j < NT; ++j) {
        const uint32_t* xr = reinterpret_cast<const uint32_t*>(&xs[8 * j + gid][step * 16 + 2 * tig]);
        b[j][0] = xr[0];
        b[j][1] = xr[4];  // k + 8
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        // Low half of a register = the lower k: rows 2t (w[0], w[1]) and 2t + 8 (w[4], w[5]).
        const uint32_t sel = (i & 1) ? 0x7632u : 0x5410u;
        uint32_t a[4];
        a[0] = __byte_perm(word(w[0], i >> 1), word(w[2], i >> 1), sel);  // row g, k 2t..2t+1
        a[1] = __byte_perm(word(w[1], i >> 1), word(w[3], i >> 1), sel);  // row g + 8
        a[2] = __byte_perm(word(w[4], i >> 1), word(w[6], i >> 1), sel);  // row g, k 2t+8..2t+9
        a[3] = __byte_perm(word(w[5], i >> 1), word(w[7], i >> 1), sel);  // row g + 8
#pragma unroll
        for (int j = 0; j < NT; ++j) mma_16816<T>(acc[j][i], a, b[j][0], b[j][1]);
    }
}

template <typename T, int NT, typename Pro>
__global__ void __launch_bounds__(kThreads) decode_gemv_tc_kernel(const Pro pro, const GemvArgs g) {
    constexpr int BB = 8 * NT;
    // x during the K loop; then the warps' partial sums (below), in the same bytes.
    constexpr size_t kXsBytes = sizeof(T) * BB * kTcLd;
    constexpr size_t kRedBytes = sizeof(float) * (kWarps / 2) * NT * 32 * 32;
    __shared__ __align__(16) unsigned char smem[kXsBytes > kRedBytes ? kXsBytes : kRedBytes];
    T(*xs)[kTcLd] = reinterpret_cast<T(*)[kTcLd]>(smem);
    // Batch chunks are the fastest grid dimension: the chunks reading one weight tile run side
    // by side and share it through L2 rather than reading it from HBM once each.
    const int b0 = blockIdx.x * BB;
    const int nb = min(BB, g.batch - b0);
    const int k0 = blockIdx.z * g.k_tile;
    const int kt = min(g.k_tile, g.K - k0);
    const int n0 = blockIdx.y * kTcCols;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int gid = lane >> 2, tig = lane & 3;
    const int ca = n0 + 8 * gid, cb = n0 + 64 + 8 * gid;
    const T* W = static_cast<const T*>(g.W);
    const int steps = (kt + 15) / 16;

    // The warp's first step is requested before the prologue, as in the FMA kernel.
    allow_dependent_grids();
    uint4 cur[8], nxt[8];
    if (warp < steps) load_tc_step<T>(cur, W, g.N, k0, kt, warp, tig, ca, cb);
    wait_for_prior_grids();  // the weights above before, x after (as in the FMA kernel)
    pro.template fill<T, BB, T, kTcLd>(xs, b0, nb, k0, kt, blockIdx.y == 0);
    // x past the tile up to the last step's 16 rows: zeros (shared memory holds anything).
    for (int j = threadIdx.x; j < BB * (steps * 16 - kt); j += kThreads) {
        const int span = steps * 16 - kt;
        xs[j / span][kt + j % span] = from_f32<T>(0.f);
    }
    __syncthreads();

    float acc[NT][8][4];
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[j][i][e] = 0.f;
    for (int s = warp; s < steps; s += kWarps) {
        const bool more = s + kWarps < steps;
        if (more) load_tc_step<T>(nxt, W, g.N, k0, kt, s + kWarps, tig, ca, cb);
        mma_tc_step<T, NT>(acc, cur, xs, s, gid, tig);
        if (more) {
#pragma unroll
            for (int q = 0; q < 8; ++q) cur[q] = nxt[q];
        }
    }
    // The 8 warps' partial sums meet in a three-round tree through shared memory, stored in
    // fragment order (lane fastest: no bank conflicts); warp 0 ends with the block's sums.
    // (Shared-memory atomics into an output tile, tried first, cost more than the whole GEMV at
    // batch 16: 64 a thread, most of them conflicting.)
    __syncthreads();  // every warp is done reading xs
    float* red = reinterpret_cast<float*>(smem);
    for (int half = kWarps / 2; half >= 1; half /= 2) {
        if (warp >= half && warp < 2 * half) {
            float* dst = red + size_t(warp - half) * NT * 32 * 32 + lane;
#pragma unroll
            for (int j = 0; j < NT; ++j)
#pragma unroll
                for (int i = 0; i < 8; ++i)
#pragma unroll
                    for (int e = 0; e < 4; ++e) dst[((j * 8 + i) * 4 + e) * 32] = acc[j][i][e];
        }
        __syncthreads();
        if (warp < half) {
            const float* src = red + size_t(warp) * NT * 32 * 32 + lane;
#pragma unroll
            for (int j = 0; j < NT; ++j)
#pragma unroll
                for (int i = 0; i < 8; ++i)
#pragma unroll
                    for (int e = 0; e < 4; ++e) acc[j][i][e] += src[((j * 8 + i) * 4 + e) * 32];
        }
        __syncthreads();
    }
    if (warp != 0) return;
    // C fragment: acc[j][i][2h + r] = output (h ? cb : ca) + i of batch row 8j + 2t + r, so a
    // thread's 8 outputs of a row are consecutive: two float4 atomics.
    const T* bias = static_cast<const T*>(g.bias);
    const bool add_bias = bias && blockIdx.z == 0;
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int row = 8 * j + 2 * tig + r;
            if (row >= nb) continue;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int col = h ? cb : ca;
                if (col >= g.N) continue;
                float v[8];
#pragma unroll
                for (int i = 0; i < 8; ++i) v[i] = acc[j][i][2 * h + r] + (add_bias ? to_f32(bias[col + i]) : 0.f);
                float* o = g.out + size_t(b0 + row) * g.ldo + col;
                if ((reinterpret_cast<uintptr_t>(o) & 15u) == 0) {
                    atomicAdd(reinterpret_cast<float4*>(o), make_float4(v[0], v[1], v[2], v[3]));
                    atomicAdd(reinterpret_cast<float4*>(o + 4), make_float4(v[4], v[5], v[6], v[7]));
                } else {
#pragma unroll
                    for (int i = 0; i < 8; ++i) atomicAdd(o + i, v[i]);
                }
            }
        }
}

// K tile: a multiple of 32 rows, at most kt_max, so the grid is about `per_sm` blocks a
// multiprocessor. Fewer, longer tiles where a block serves several batch rows: each tile costs
// one atomic per (row, output), and at batch 8 those dominated (in_proj 50 us with 128-row tiles).
inline int pick_k_tile(int K, int col_blocks, int batch_chunks, int sms, int per_sm, int kt_max) {
    const long long want = 1LL * per_sm * sms;
    long long tiles = std::max<long long>(1, want / std::max(1LL, 1LL * col_blocks * batch_chunks));
    long long kt = (K + tiles - 1) / tiles;
    kt = (kt + 31) / 32 * 32;
    return static_cast<int>(std::min<long long>(kt_max, std::max<long long>(32, kt)));
}

inline bool aligned16(const void* q) { return (reinterpret_cast<uintptr_t>(q) & 15u) == 0; }

template <typename T, int V, int BB, int RPP, bool AHEAD, typename Pro>
cudaError_t launch_gemv_v(const Pro& pro, GemvArgs g, const DecodeTuning& tuning, cudaStream_t s, int sms) {
    const int col_blocks = (g.N + 32 * V - 1) / (32 * V);
    const int chunks = (g.batch + BB - 1) / BB;
    // Defaults measured on the H200 (tools/gpu/bench_decode_layer.py; cpp/cuda/README.md, "Decode steps").
    const int per_sm = tuning.blocks_per_sm > 0 ? tuning.blocks_per_sm : (BB >= 4 ? 2 : 6);
    const int kt_max = tuning.k_tile_max > 0 ? std::min(tuning.k_tile_max, kKTileMax) : (BB >= 4 ? 512 : 256);
    g.k_tile = pick_k_tile(g.K, col_blocks, chunks, sms, per_sm, kt_max);
    const dim3 grid(col_blocks, (g.K + g.k_tile - 1) / g.k_tile, chunks);
    if (grid.z > 65535 || grid.y > 65535) return cudaErrorInvalidValue;
    return launch_kernel(tuning.dependent(), decode_gemv_kernel<T, V, BB, RPP, AHEAD, Pro>, grid, kThreads, 0, s, pro,
                         g);
}

template <typename T, int V, int BB, typename Pro>
cudaError_t launch_gemv_rpp(const Pro& pro, const GemvArgs& g, const DecodeTuning& tuning, cudaStream_t s, int sms) {
    if constexpr (BB == 1) {
        // Batch 1 is bound by the weights' latency: the next pass's loads go out ahead.
        // 16 loads in flight never go ahead: twice 16 vectors took too many registers.
        const int rpp = tuning.rows_per_pass > 0 ? tuning.rows_per_pass : 4;
        const bool ahead = tuning.loads_ahead >= 0;
        if (rpp == 4) return ahead ? launch_gemv_v<T, V, BB, 4, true>(pro, g, tuning, s, sms)
                                   : launch_gemv_v<T, V, BB, 4, false>(pro, g, tuning, s, sms);
        if (rpp == 16) return launch_gemv_v<T, V, BB, 16, false>(pro, g, tuning, s, sms);
        if (ahead) return launch_gemv_v<T, V, BB, 8, true>(pro, g, tuning, s, sms);
    }
    return launch_gemv_v<T, V, BB, 8, false>(pro, g, tuning, s, sms);
}

template <typename T, int BB, typename Pro>
cudaError_t launch_gemv_bb(const Pro& pro, const GemvArgs& g, const DecodeTuning& tuning, cudaStream_t s, int sms) {
    constexpr int V = kVec<T>;
    if (g.N % V == 0 && aligned16(g.W)) return launch_gemv_rpp<T, V, BB>(pro, g, tuning, s, sms);
    return launch_gemv_rpp<T, 1, BB>(pro, g, tuning, s, sms);
}

// Batch rows from which the 16-bit GEMVs take the tensor-core kernel by default (measured on the
// H200 with tools/gpu/bench_decode_layer.py; cpp/cuda/README.md, "Decode steps").
constexpr int kTcMinBatch = 4;

template <typename T, typename Pro>
cudaError_t launch_gemv_tc(const Pro& pro, GemvArgs g, const DecodeTuning& tuning, cudaStream_t s, int sms) {
    const int nt = g.batch <= 8 ? 1 : 2;  // n-tiles of 8 batch rows a block (accumulator registers)
    const int col_blocks = (g.N + kTcCols - 1) / kTcCols;
    const int chunks = (g.batch + 8 * nt - 1) / (8 * nt);
    const int per_sm = tuning.blocks_per_sm > 0 ? tuning.blocks_per_sm : 2;
    const int kt_max = tuning.k_tile_max > 0 ? std::min(tuning.k_tile_max, kKTileMax) : kKTileMax;
    g.k_tile = pick_k_tile(g.K, col_blocks, chunks, sms, per_sm, kt_max);
    const dim3 grid(chunks, col_blocks, (g.K + g.k_tile - 1) / g.k_tile);
    if (grid.z > 65535 || grid.y > 65535) return cudaErrorInvalidValue;
    if (nt == 1) return launch_kernel(tuning.dependent(), decode_gemv_tc_kernel<T, 1, Pro>, grid, kThreads, 0, s, pro, g);
    return launch_kernel(tuning.dependent(), decode_gemv_tc_kernel<T, 2, Pro>, grid, kThreads, 0, s, pro, g);
}

// Queues out[b, :] += x[b, :] W (+ bias) for b < g.batch, x made by `pro`; g.k_tile is chosen
// here. The kernel by batch and T: the tensor-core one for 16-bit weights from kTcMinBatch
// (tuning.tensor_cores forces it on or off), else the FMA one with BB batch rows a block.
template <typename T, typename Pro>
cudaError_t launch_gemv(const Pro& pro, const GemvArgs& g, const DecodeTuning& tuning, cudaStream_t s, int sms) {
    if constexpr (!std::is_same_v<T, float>) {
        // Whole 16-byte vectors of 8 outputs: every row of W starts 16-byte aligned.
        const int tc = tuning.tensor_cores;
        if (tc >= 0 && (tc > 0 || g.batch >= kTcMinBatch) && g.N % 8 == 0 && aligned16(g.W))
            return launch_gemv_tc<T>(pro, g, tuning, s, sms);
    }
    // Batch rows a block: each weight vector loaded serves BB rows (registers: BB x V).
    if (g.batch <= 1) return launch_gemv_bb<T, 1>(pro, g, tuning, s, sms);
    if (g.batch <= 2) return launch_gemv_bb<T, 2>(pro, g, tuning, s, sms);
    if (g.batch <= 4) return launch_gemv_bb<T, 4>(pro, g, tuning, s, sms);
    return launch_gemv_bb<T, 8>(pro, g, tuning, s, sms);
}

// 1 / rms of each residual row; residual_out = residual_in (out_proj adds into it); zeroed
// split-K accumulators (so a CUDA-graph replay starts clean). kStatsSplit blocks a batch row
// share the copy and the zeroing (one block alone took 5.3 us at batch 1); the first also sums
// the squares. Grid (batch, kStatsSplit).
constexpr int kStatsSplit = 8;

struct StatsArgs {
    const float* residual_in;  // [B, hidden]
    float* residual_out;       // [B, hidden]
    float* inv_rms;            // [B]
    float* zero;               // [zero_count], zeroed by the grid as a whole
    size_t zero_count;
    int hidden;
    float eps;
};

__global__ void __launch_bounds__(kThreads) decode_stats_kernel(const StatsArgs a) {
    __shared__ float part[kWarps];
    // A dependent launch (common.cuh): everything it reads and writes is the layer before's.
    allow_dependent_grids();
    wait_for_prior_grids();
    const size_t b = blockIdx.x;
    const int j0 = blockIdx.y * kThreads + threadIdx.x, js = kStatsSplit * kThreads;
    const float* r = a.residual_in + b * a.hidden;
    for (int k = j0; k < a.hidden; k += js) a.residual_out[b * a.hidden + k] = r[k];
    const size_t all = size_t(gridDim.x) * js;
    for (size_t j = b * js + j0; j < a.zero_count; j += all) a.zero[j] = 0.f;
    if (blockIdx.y != 0) return;
    float ss = 0.f;
    for (int k = threadIdx.x; k < a.hidden; k += kThreads) ss = fmaf(r[k], r[k], ss);
#pragma unroll
    for (int m = 16; m >= 1; m /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, m);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.f;
        for (int w = 0; w < kWarps; ++w) t += part[w];
        // The unfused graph's x / sqrt(mean(x^2) + eps).
        a.inv_rms[b] = 1.f / sqrtf(t / a.hidden + a.eps);
    }
}

// Queues the stats kernel: grid batch x kStatsSplit.
cudaError_t launch_stats(const StatsArgs& a, int batch, const DecodeTuning& tuning, cudaStream_t s) {
    return launch_kernel(tuning.dependent(), decode_stats_kernel, dim3(batch, kStatsSplit), kThreads, 0, s, a);
}

// --- Host side both layers' launchers share ----------------------------------------------------
// Their ABI structs (MambaLayerStepParams, Mamba2LayerStepParams) and kernel params
// (DecodeLayerParams, Mamba2DecodeParams) name these fields alike, so one template serves both.

// Copies the fields both layers have from the ABI struct `a` into the kernel params `k`: the
// element type, batch, hidden, dstate, width, eps, the residual, the states, the norm, in_proj,
// the conv, dt_bias, A, D, out_proj and the scratch. The caller has checked the sizes fit an int.
template <typename Abi, typename K>
void copy_common_params(const Abi& a, const DecodeTuning& tuning, K* k) {
    k->elem = static_cast<int>(a.elem);
    k->batch = static_cast<int>(a.batch);
    k->hidden = static_cast<int>(a.hidden);
    k->dstate = static_cast<int>(a.dstate);
    k->width = static_cast<int>(a.width);
    k->eps = a.eps;
    const auto cptr = [](size_t v) { return reinterpret_cast<const void*>(v); };
    const auto mptr = [](size_t v) { return reinterpret_cast<void*>(v); };
    const auto fptr = [](size_t v) { return reinterpret_cast<const float*>(v); };
    k->residual_in = fptr(a.residual_in);
    k->residual_out = static_cast<float*>(mptr(a.residual_out));
    k->conv_state_in = cptr(a.conv_state_in);
    k->conv_state_out = mptr(a.conv_state_out);
    k->ssm_state_in = fptr(a.ssm_state_in);
    k->ssm_state_out = static_cast<float*>(mptr(a.ssm_state_out));
    k->norm_w = fptr(a.norm_weight);
    k->in_proj_t = cptr(a.in_proj_weight);
    k->in_proj_b = cptr(a.in_proj_bias);
    k->conv_w = cptr(a.conv_weight);
    k->conv_b = cptr(a.conv_bias);
    k->dt_bias = fptr(a.dt_bias);
    k->A = fptr(a.a);
    k->D = fptr(a.d);
    k->out_proj_t = cptr(a.out_proj_weight);
    k->out_proj_b = cptr(a.out_proj_bias);
    k->scratch = mptr(a.scratch);
    k->tuning = tuning;
}

// What the shape check guarantees of the fields copy_common_params copies, checked again before
// anything is queued (the launchers are C entry points too): a batch the grids hold, sizes
// >= 1, every required buffer present.
template <typename K>
bool common_params_ok(const K& p) {
    return p.batch <= 65535 && p.hidden > 0 && p.dstate > 0 && p.width >= 1 && p.residual_in && p.residual_out &&
           p.ssm_state_in && p.ssm_state_out && p.norm_w && p.in_proj_t && p.conv_w && p.A && p.out_proj_t &&
           p.scratch && (p.width == 1 || (p.conv_state_in && p.conv_state_out));
}

}  // namespace
}  // namespace mambac::cuda::detail
