// Fused decode step of one Mamba layer (decode_layer.h): five kernels.
//
//   1. stats:    per batch row, 1 / rms(residual); residual_out = residual_in; zero the split-K
//                accumulators (so a CUDA-graph replay starts clean).
//   2. in_proj:  xz += W_in^T . T(norm(residual) * w)        split-K GEMV, norm in the prologue
//   3. x_proj:   dbc += W_x^T . xc, with xc = T(silu(conv(state, T(x)))) computed in the prologue
//                for the block's own channels (each channel once), writing conv_state_out
//   4. scan:     dt = T(W_dt^T . T(dt_low)), the selective-scan step on 4 lanes a channel,
//                y = T((C . h + D u) silu(T(z)))
//   5. out_proj: residual_out += W_out^T . y                  split-K GEMV
//
// GEMVs read the [in, out] weights row by row: a warp takes 32 x V consecutive outputs (V = one
// 16-byte vector of T) of one input row, the 8 warps of a block take interleaved rows of its K
// tile, the block sums its warps in shared memory and adds the tile's share to the float32
// output with atomics. K tiles are sized so the grid covers the GPU about six times over. The
// roundings to T sit where the unfused graph stores a T tensor, so both agree to T's precision.
// Float atomics make the last bits depend on the order the tiles land in.
// From batch 4, 16-bit weights take the tensor-core GEMV instead (decode_gemv_tc_kernel): same
// tiles, prologues and atomics, mma.sync for the products.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "decode_layer.h"

namespace mambac::cuda {
namespace detail {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kKTileMax = 512;  // rows of a K tile (passes of kPassRows)

template <typename T> __device__ __forceinline__ float round_t(float v) { return to_f32(from_f32<T>(v)); }

// Where the float32 scratch lives (in floats from the start); the accumulators come first so one
// range is zeroed.
struct ScratchLayout {
    size_t xz, dbc, stats, xc, y, zero_end, total;
};

__host__ __device__ inline size_t align4(size_t n) { return (n + 3) & ~size_t(3); }

__host__ __device__ inline ScratchLayout scratch_layout(const DecodeLayerParams& p) {
    ScratchLayout s{};
    const size_t B = p.batch, I = p.inner, E = size_t(p.dt_rank) + 2 * size_t(p.dstate);
    s.xz = 0;
    s.dbc = align4(s.xz + B * 2 * I);
    s.zero_end = align4(s.dbc + B * E);
    s.stats = s.zero_end;
    s.xc = align4(s.stats + B);
    s.y = align4(s.xc + B * I);
    s.total = align4(s.y + B * I);
    return s;
}

enum Prologue { kNorm, kConv, kPlain };

// One split-K GEMV launch: out[b, n] += sum_k x[b, k] W[k, n] for the block's K tile, n in its
// column range, b in its batch chunk. x is made by the prologue (MODE).
struct GemvArgs {
    const void* W;
    const void* bias;  // [N] T, added once (by the first K tile); nullable
    float* out;
    int K, N, ldo, k_tile;
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

// The tile's inputs, x[b][i] = input k0 + i of batch row b0 + b (zero past nb), made by MODE.
// X is the shared-memory type of x: float for the FMA kernel, T for the tensor-core one (exact:
// every prologue value is already rounded to T).
template <typename T, int BB, int MODE, typename X, int LD>
__device__ __forceinline__ void gemv_prologue(const DecodeLayerParams& p, const ScratchLayout& L, float* scratch,
                                              X (*xs)[LD], int b0, int nb, int k0, int kt, bool first_col_block) {
    // Norm and plain inputs: one k a thread with the block's batch rows unrolled inside, so the
    // rows' loads are independent and go out together (a loop over (row, k) pairs waited on one
    // load latency an element: in_proj took 29 us at batch 8 and 60 us at 16 that way, 22 and
    // 38 this way).
    if constexpr (MODE == kConv) {
        // The conv keeps one (row, k) pair a thread: its k tiles are short (x_proj has few
        // columns, so many tiles), and its stores to conv_state_out kept the unrolled rows' loads
        // from overlapping anyway (x_proj 14.9 us at batch 8 that way, 6.2 this way).
        for (int j = threadIdx.x; j < BB * kt; j += kThreads) {
            const int b = j / kt, i = j % kt, k = k0 + i;
            float v = 0.f;
            if (b < nb) {
                // Channel k's conv step: window = the width - 1 stored inputs, then x = T(xz[b, k]).
                const size_t row = size_t(b0 + b);
                const int K1 = p.width - 1;
                const T* st = static_cast<const T*>(p.conv_state_in) + (row * p.inner + k) * K1;
                const T* w = static_cast<const T*>(p.conv_w) + size_t(k) * p.width;
                const T xk = from_f32<T>(scratch[L.xz + row * 2 * p.inner + k]);
                float acc = p.conv_b ? to_f32(static_cast<const T*>(p.conv_b)[k]) : 0.f;
                for (int q = 0; q < K1; ++q) acc = fmaf(to_f32(w[q]), to_f32(st[q]), acc);
                acc = fmaf(to_f32(w[K1]), to_f32(xk), acc);
                v = round_t<T>(silu(acc));
                if (first_col_block) {  // column blocks past the first recompute it; one writes
                    T* so = static_cast<T*>(p.conv_state_out) + (row * p.inner + k) * K1;
                    for (int q = 0; q + 1 < K1; ++q) so[q] = st[q + 1];
                    if (K1 > 0) so[K1 - 1] = xk;
                    scratch[L.xc + row * p.inner + k] = v;
                }
            }
            xs[b][i] = from_f32<X>(v);
        }
        return;
    }
    for (int i = threadIdx.x; i < kt; i += kThreads) {
        const int k = k0 + i;
        if constexpr (MODE == kNorm) {
            const float nw = p.norm_w[k];
#pragma unroll
            for (int b = 0; b < BB; ++b) {
                float v = 0.f;
                if (b < nb) {
                    const size_t row = size_t(b0 + b);
                    v = round_t<T>(p.residual_in[row * p.hidden + k] * scratch[L.stats + row] * nw);
                }
                xs[b][i] = from_f32<X>(v);
            }
        } else {
#pragma unroll
            for (int b = 0; b < BB; ++b)
                xs[b][i] = from_f32<X>(b < nb ? scratch[L.y + size_t(b0 + b) * p.inner + k] : 0.f);
        }
    }
}

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

template <typename T, int V, int BB, int RPP, int MODE>
__global__ void __launch_bounds__(kThreads) decode_gemv_kernel(const DecodeLayerParams p, const GemvArgs g) {
    __shared__ float xs[BB][kKTileMax];
    __shared__ float red[kWarps][32 * V];
    const ScratchLayout L = scratch_layout(p);
    float* scratch = static_cast<float*>(p.scratch);
    const int b0 = blockIdx.z * BB;
    const int nb = min(BB, p.batch - b0);
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
    WRow<T, V> w[RPP];
    load_pass<T, V, RPP>(w, wp, g.N, warp, kt, col_ok);
    gemv_prologue<T, BB, MODE, float, kKTileMax>(p, L, scratch, xs, b0, nb, k0, kt, blockIdx.x == 0);
    __syncthreads();

    float acc[BB][V];
#pragma unroll
    for (int b = 0; b < BB; ++b)
#pragma unroll
        for (int e = 0; e < V; ++e) acc[b][e] = 0.f;
    for (int i0 = warp;; i0 += kPassRows) {
        fma_pass<T, V, BB, RPP>(acc, xs, w, i0, kt);
        if (i0 + kPassRows >= kt) break;
        load_pass<T, V, RPP>(w, wp, g.N, i0 + kPassRows, kt, col_ok);
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

template <typename T, int NT, int MODE>
__global__ void __launch_bounds__(kThreads) decode_gemv_tc_kernel(const DecodeLayerParams p, const GemvArgs g) {
    constexpr int BB = 8 * NT;
    // x during the K loop; then the warps' partial sums (below), in the same bytes.
    constexpr size_t kXsBytes = sizeof(T) * BB * kTcLd;
    constexpr size_t kRedBytes = sizeof(float) * (kWarps / 2) * NT * 32 * 32;
    __shared__ __align__(16) unsigned char smem[kXsBytes > kRedBytes ? kXsBytes : kRedBytes];
    T(*xs)[kTcLd] = reinterpret_cast<T(*)[kTcLd]>(smem);
    const ScratchLayout L = scratch_layout(p);
    float* scratch = static_cast<float*>(p.scratch);
    // Batch chunks are the fastest grid dimension: the chunks reading one weight tile run side
    // by side and share it through L2 rather than reading it from HBM once each.
    const int b0 = blockIdx.x * BB;
    const int nb = min(BB, p.batch - b0);
    const int k0 = blockIdx.z * g.k_tile;
    const int kt = min(g.k_tile, g.K - k0);
    const int n0 = blockIdx.y * kTcCols;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int gid = lane >> 2, tig = lane & 3;
    const int ca = n0 + 8 * gid, cb = n0 + 64 + 8 * gid;
    const T* W = static_cast<const T*>(g.W);
    const int steps = (kt + 15) / 16;

    // The warp's first step is requested before the prologue, as in the FMA kernel.
    uint4 cur[8], nxt[8];
    if (warp < steps) load_tc_step<T>(cur, W, g.N, k0, kt, warp, tig, ca, cb);
    gemv_prologue<T, BB, MODE, T, kTcLd>(p, L, scratch, xs, b0, nb, k0, kt, blockIdx.y == 0);
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

// 1 / rms of each residual row; residual_out = residual_in (out_proj adds into it); zeroed
// accumulators. kStatsSplit blocks a batch row share the copy and the zeroing (one block alone
// took 5.3 us at batch 1); the first also sums the squares.
constexpr int kStatsSplit = 8;

__global__ void __launch_bounds__(kThreads) decode_stats_kernel(const DecodeLayerParams p) {
    __shared__ float part[kWarps];
    const ScratchLayout L = scratch_layout(p);
    float* scratch = static_cast<float*>(p.scratch);
    const size_t b = blockIdx.x;
    const int j0 = blockIdx.y * kThreads + threadIdx.x, js = kStatsSplit * kThreads;
    const float* r = p.residual_in + b * p.hidden;
    for (int k = j0; k < p.hidden; k += js) p.residual_out[b * p.hidden + k] = r[k];
    const size_t E = size_t(p.dt_rank) + 2 * size_t(p.dstate);
    for (size_t j = j0; j < 2 * size_t(p.inner); j += js) scratch[L.xz + b * 2 * p.inner + j] = 0.f;
    for (size_t j = j0; j < E; j += js) scratch[L.dbc + b * E + j] = 0.f;
    if (blockIdx.y != 0) return;
    float ss = 0.f;
    for (int k = threadIdx.x; k < p.hidden; k += kThreads) ss = fmaf(r[k], r[k], ss);
#pragma unroll
    for (int m = 16; m >= 1; m /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, m);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.f;
        for (int w = 0; w < kWarps; ++w) t += part[w];
        // The unfused graph's x / sqrt(mean(x^2) + eps).
        scratch[L.stats + b] = 1.f / sqrtf(t / p.hidden + p.eps);
    }
}

// dt_proj + softplus + the scan step + D skip + SiLU(z) gate for 32 channels of one batch row.
// dt_proj: 8 groups of input rows x 32 channels, each thread's rows loaded at once, summed in
// shared memory; the scan: 8 lanes a channel (states l, l + 8, ...), y summed by three shuffles.
// What does not depend on dt (a lane's NPL states and their A, u and z) is loaded first, so
// those loads overlap the dt_proj phase; NPL = 0 loops over any dstate instead. Every phase is
// a memory round trip, so the kernel is latency-bound: 32 channels a block (160 blocks at dim
// 5120) and all loads of a phase in flight together.
constexpr int kScanCh = 32;
constexpr int kScanLanes = kThreads / kScanCh;  // 8
constexpr int kDtRowsMax = 32;                   // dt_proj rows a thread holds (dt_rank <= 256)

template <typename T, int NPL>
__global__ void __launch_bounds__(kThreads) decode_scan_kernel(const DecodeLayerParams p, int rows_per_block) {
    extern __shared__ float sm[];  // [R + 2N] dt_low, B, C; then [kWarps][kScanCh] partials
    const ScratchLayout L = scratch_layout(p);
    const float* scratch = static_cast<const float*>(p.scratch);
    float* y_out = static_cast<float*>(p.scratch) + L.y;
    const int R = p.dt_rank, N = p.dstate, I = p.inner;
    const int E = R + 2 * N;
    const int d0 = blockIdx.x * kScanCh;
    const int c = threadIdx.x / kScanLanes, l = threadIdx.x % kScanLanes;
    const int d = d0 + c;
    const bool live = d < I;
    // What does not depend on the batch row (A, the dt_proj weights) is loaded once for the
    // block's rows: at batch 64 one row a block re-read the dt_proj weights 64 times.
    float a2[NPL > 0 ? NPL : 1];
    if (live) {
#pragma unroll
        for (int q = 0; q < NPL; ++q) {
            const int n = l + kScanLanes * q;
            a2[q] = n < N ? p.A[size_t(d) * N + n] * kLog2e : 0.f;
        }
    }
    // dt_proj weights of this thread: rows grp, grp + 8, ... of channel d0 + lane.
    const int lane = threadIdx.x & 31, grp = threadIdx.x >> 5;
    const int dc = d0 + lane;
    const T* Wd = static_cast<const T*>(p.dt_proj_t) + dc;
    T wv[kDtRowsMax];
#pragma unroll
    for (int q = 0; q < kDtRowsMax; ++q) {
        const int r = grp + kWarps * q;
        wv[q] = (dc < I && r < R) ? Wd[size_t(r) * I] : from_f32<T>(0.f);
    }
    float* part = sm + ((E + 3) & ~3);
    const int b_end = min(p.batch, (blockIdx.y + 1) * rows_per_block);
    for (int bi = blockIdx.y * rows_per_block; bi < b_end; ++bi) {
        const size_t b = bi;
        const size_t s0 = (b * I + (live ? d : 0)) * N;
        float h0[NPL > 0 ? NPL : 1];
        float u = 0.f, zg = 0.f;
        if (live) {
#pragma unroll
            for (int q = 0; q < NPL; ++q) {
                const int n = l + kScanLanes * q;
                h0[q] = n < N ? p.ssm_state_in[s0 + n] : 0.f;
            }
            u = scratch[L.xc + b * I + d];
            zg = scratch[L.xz + b * 2 * I + I + d];
        }
        for (int j = threadIdx.x; j < E; j += kThreads) sm[j] = round_t<T>(scratch[L.dbc + b * E + j]);
        __syncthreads();
        {
            float a0 = 0.f;
#pragma unroll
            for (int q = 0; q < kDtRowsMax; ++q) {
                const int r = grp + kWarps * q;
                if (r < R) a0 = fmaf(sm[r], to_f32(wv[q]), a0);
            }
            for (int r = grp + kWarps * kDtRowsMax; r < R; r += kWarps)  // dt_rank > 256
                if (dc < I) a0 = fmaf(sm[r], to_f32(Wd[size_t(r) * I]), a0);
            part[grp * kScanCh + lane] = a0;
        }
        __syncthreads();
        float dt = 0.f;
        if (live) {
            for (int w = 0; w < kWarps; ++w) dt += part[w * kScanCh + c];
            dt = round_t<T>(dt) + (p.dt_bias ? p.dt_bias[d] : 0.f);
            dt = softplus(dt);
        }
        const float* Bv = sm + R;
        const float* Cv = sm + R + N;
        float acc = 0.f;
        if (live) {
            const float du = dt * u;
            if constexpr (NPL > 0) {
#pragma unroll
                for (int q = 0; q < NPL; ++q) {
                    const int n = l + kScanLanes * q;
                    if (n < N) {
                        const float h = fmaf(ex2(dt * a2[q]), h0[q], du * Bv[n]);
                        p.ssm_state_out[s0 + n] = h;
                        acc = fmaf(Cv[n], h, acc);
                    }
                }
            } else {
                for (int n = l; n < N; n += kScanLanes) {
                    const float h = fmaf(ex2(dt * p.A[size_t(d) * N + n] * kLog2e), p.ssm_state_in[s0 + n], du * Bv[n]);
                    p.ssm_state_out[s0 + n] = h;
                    acc = fmaf(Cv[n], h, acc);
                }
            }
        }
#pragma unroll
        for (int m = 1; m < kScanLanes; m *= 2) acc += __shfl_xor_sync(0xffffffffu, acc, m);
        if (live && l == 0) {
            float out = p.D ? fmaf(p.D[d], u, acc) : acc;
            out *= silu(round_t<T>(zg));
            y_out[b * I + d] = round_t<T>(out);
        }
        __syncthreads();  // the next row overwrites sm and part
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

template <typename T, int V, int BB, int RPP, int MODE>
cudaError_t launch_gemv_v(const DecodeLayerParams& p, GemvArgs g, cudaStream_t s, int sms) {
    const int col_blocks = (g.N + 32 * V - 1) / (32 * V);
    const int chunks = (p.batch + BB - 1) / BB;
    // Defaults measured on the H200 (tools/gpu/bench_decode_layer.py; cpp/cuda/README.md, "Decode steps").
    const int per_sm = p.tuning.blocks_per_sm > 0 ? p.tuning.blocks_per_sm : (BB >= 4 ? 2 : 6);
    const int kt_max = p.tuning.k_tile_max > 0 ? std::min(p.tuning.k_tile_max, kKTileMax) : (BB >= 4 ? 512 : 256);
    g.k_tile = pick_k_tile(g.K, col_blocks, chunks, sms, per_sm, kt_max);
    const dim3 grid(col_blocks, (g.K + g.k_tile - 1) / g.k_tile, chunks);
    if (grid.z > 65535 || grid.y > 65535) return cudaErrorInvalidValue;
    decode_gemv_kernel<T, V, BB, RPP, MODE><<<grid, kThreads, 0, s>>>(p, g);
    return cudaGetLastError();
}

template <typename T, int V, int BB, int MODE>
cudaError_t launch_gemv_rpp(const DecodeLayerParams& p, const GemvArgs& g, cudaStream_t s, int sms) {
    if constexpr (BB == 1) {
        const int rpp = p.tuning.rows_per_pass > 0 ? p.tuning.rows_per_pass : 4;
        if (rpp == 4) return launch_gemv_v<T, V, BB, 4, MODE>(p, g, s, sms);
        if (rpp == 16) return launch_gemv_v<T, V, BB, 16, MODE>(p, g, s, sms);
    }
    return launch_gemv_v<T, V, BB, 8, MODE>(p, g, s, sms);
}

template <typename T, int BB, int MODE>
cudaError_t launch_gemv_bb(const DecodeLayerParams& p, const GemvArgs& g, cudaStream_t s, int sms) {
    constexpr int V = kVec<T>;
    if (g.N % V == 0 && aligned16(g.W)) return launch_gemv_rpp<T, V, BB, MODE>(p, g, s, sms);
    return launch_gemv_rpp<T, 1, BB, MODE>(p, g, s, sms);
}

// Batch rows from which the 16-bit GEMVs take the tensor-core kernel by default (measured on the
// H200 with tools/gpu/bench_decode_layer.py; cpp/cuda/README.md, "Decode steps").
constexpr int kTcMinBatch = 4;

template <typename T, int MODE>
cudaError_t launch_gemv_tc(const DecodeLayerParams& p, GemvArgs g, cudaStream_t s, int sms) {
    const int nt = p.batch <= 8 ? 1 : 2;  // n-tiles of 8 batch rows a block (accumulator registers)
    const int col_blocks = (g.N + kTcCols - 1) / kTcCols;
    const int chunks = (p.batch + 8 * nt - 1) / (8 * nt);
    const int per_sm = p.tuning.blocks_per_sm > 0 ? p.tuning.blocks_per_sm : 2;
    const int kt_max = p.tuning.k_tile_max > 0 ? std::min(p.tuning.k_tile_max, kKTileMax) : kKTileMax;
    g.k_tile = pick_k_tile(g.K, col_blocks, chunks, sms, per_sm, kt_max);
    const dim3 grid(chunks, col_blocks, (g.K + g.k_tile - 1) / g.k_tile);
    if (grid.z > 65535 || grid.y > 65535) return cudaErrorInvalidValue;
    if (nt == 1) decode_gemv_tc_kernel<T, 1, MODE><<<grid, kThreads, 0, s>>>(p, g);
    else decode_gemv_tc_kernel<T, 2, MODE><<<grid, kThreads, 0, s>>>(p, g);
    return cudaGetLastError();
}

template <typename T, int MODE>
cudaError_t launch_gemv(const DecodeLayerParams& p, const GemvArgs& g, cudaStream_t s, int sms) {
    if constexpr (!std::is_same_v<T, float>) {
        // Whole 16-byte vectors of 8 outputs: every row of W starts 16-byte aligned.
        const int tc = p.tuning.tensor_cores;
        if (tc >= 0 && (tc > 0 || p.batch >= kTcMinBatch) && g.N % 8 == 0 && aligned16(g.W))
            return launch_gemv_tc<T, MODE>(p, g, s, sms);
    }
    // Batch rows a block: each weight vector loaded serves BB rows (registers: BB x V).
    if (p.batch <= 1) return launch_gemv_bb<T, 1, MODE>(p, g, s, sms);
    if (p.batch <= 2) return launch_gemv_bb<T, 2, MODE>(p, g, s, sms);
    if (p.batch <= 4) return launch_gemv_bb<T, 4, MODE>(p, g, s, sms);
    return launch_gemv_bb<T, 8, MODE>(p, g, s, sms);
}

template <typename T>
cudaError_t launch_typed(const DecodeLayerParams& p, cudaStream_t s) {
    int dev = 0, sms = 132;
    if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    const ScratchLayout L = scratch_layout(p);
    float* scratch = static_cast<float*>(p.scratch);
    const int I = p.inner, H = p.hidden, E = p.dt_rank + 2 * p.dstate;
    // Checked before anything is queued, so a refused call writes nothing.
    const size_t smem = (size_t((E + 3) & ~3) + size_t(kWarps) * kScanCh) * sizeof(float);
    if (smem > 48 * 1024) return cudaErrorInvalidValue;

    decode_stats_kernel<<<dim3(p.batch, kStatsSplit), kThreads, 0, s>>>(p);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    e = launch_gemv<T, kNorm>(p, GemvArgs{p.in_proj_t, p.in_proj_b, scratch + L.xz, H, 2 * I, 2 * I, 0}, s, sms);
    if (e != cudaSuccess) return e;
    e = launch_gemv<T, kConv>(p, GemvArgs{p.x_proj_t, nullptr, scratch + L.dbc, I, E, E, 0}, s, sms);
    if (e != cudaSuccess) return e;
    // Batch rows a scan block: enough blocks to fill the GPU about four times, at most 8 rows.
    const int ch_blocks = (I + kScanCh - 1) / kScanCh;
    const int rpb = std::clamp((p.batch * ch_blocks + 4 * sms - 1) / (4 * sms), 1, 8);
    const dim3 sgrid(ch_blocks, (p.batch + rpb - 1) / rpb);
    if (p.dstate <= 16) decode_scan_kernel<T, 2><<<sgrid, kThreads, smem, s>>>(p, rpb);
    else if (p.dstate <= 32) decode_scan_kernel<T, 4><<<sgrid, kThreads, smem, s>>>(p, rpb);
    else decode_scan_kernel<T, 0><<<sgrid, kThreads, smem, s>>>(p, rpb);
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    return launch_gemv<T, kPlain>(p, GemvArgs{p.out_proj_t, p.out_proj_b, p.residual_out, I, H, H, 0}, s, sms);
}

}  // namespace
}  // namespace detail

namespace {

// The ABI struct as the kernels take it; false if a size does not fit their 32-bit ints (the
// shape check already refuses those).
bool kernel_params(const MambaLayerStepParams& a, const DecodeTuning& tuning, DecodeLayerParams* k) {
    for (size_t v : {a.batch, a.hidden, a.inner, a.dstate, a.dt_rank, a.width})
        if (v > 0x7fffffff) return false;
    k->elem = static_cast<int>(a.elem);
    k->batch = static_cast<int>(a.batch);
    k->hidden = static_cast<int>(a.hidden);
    k->inner = static_cast<int>(a.inner);
    k->dstate = static_cast<int>(a.dstate);
    k->dt_rank = static_cast<int>(a.dt_rank);
    k->width = static_cast<int>(a.width);
    k->eps = a.eps;
    const auto cptr = [](size_t v) { return reinterpret_cast<const void*>(v); };
    const auto mptr = [](size_t v) { return reinterpret_cast<void*>(v); };
    k->residual_in = static_cast<const float*>(cptr(a.residual_in));
    k->residual_out = static_cast<float*>(mptr(a.residual_out));
    k->conv_state_in = cptr(a.conv_state_in);
    k->conv_state_out = mptr(a.conv_state_out);
    k->ssm_state_in = static_cast<const float*>(cptr(a.ssm_state_in));
    k->ssm_state_out = static_cast<float*>(mptr(a.ssm_state_out));
    k->norm_w = static_cast<const float*>(cptr(a.norm_weight));
    k->in_proj_t = cptr(a.in_proj_weight);
    k->in_proj_b = cptr(a.in_proj_bias);
    k->conv_w = cptr(a.conv_weight);
    k->conv_b = cptr(a.conv_bias);
    k->x_proj_t = cptr(a.x_proj_weight);
    k->dt_proj_t = cptr(a.dt_proj_weight);
    k->dt_bias = static_cast<const float*>(cptr(a.dt_bias));
    k->A = static_cast<const float*>(cptr(a.a));
    k->D = static_cast<const float*>(cptr(a.d));
    k->out_proj_t = cptr(a.out_proj_weight);
    k->out_proj_b = cptr(a.out_proj_bias);
    k->scratch = mptr(a.scratch);
    k->tuning = tuning;
    return true;
}

}  // namespace

size_t decode_layer_scratch_bytes(const MambaLayerStepParams& a) {
    DecodeLayerParams p{};
    if (!kernel_params(a, DecodeTuning{}, &p) || p.batch <= 0 || p.inner <= 0) return 0;
    return detail::scratch_layout(p).total * sizeof(float);
}

cudaError_t decode_layer(const MambaLayerStepParams& a, cudaStream_t stream, const DecodeTuning& tuning) {
    DecodeLayerParams p{};
    if (!kernel_params(a, tuning, &p)) return cudaErrorInvalidValue;
    if (p.batch == 0) return cudaSuccess;
    if (p.batch > 65535 || p.hidden <= 0 || p.inner <= 0 || p.dstate <= 0 || p.dt_rank <= 0 ||
        p.width < 1 || !p.residual_in || !p.residual_out || !p.ssm_state_in || !p.ssm_state_out ||
        !p.norm_w || !p.in_proj_t || !p.conv_w || !p.x_proj_t || !p.dt_proj_t || !p.A || !p.out_proj_t ||
        !p.scratch || (p.width > 1 && (!p.conv_state_in || !p.conv_state_out)))
        return cudaErrorInvalidValue;
    switch (p.elem) {
        case 0: return detail::launch_typed<float>(p, stream);
        case 1: return detail::launch_typed<__half>(p, stream);
        case 2: return detail::launch_typed<__nv_bfloat16>(p, stream);
        default: return cudaErrorInvalidValue;
    }
}

}  // namespace mambac::cuda
