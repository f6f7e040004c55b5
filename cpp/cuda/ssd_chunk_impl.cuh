// SsdScan's chunked prefill (docs/op-contract.md "SsdScan"; the SSD algorithm of Mamba-2, as
// mamba_ssm's mamba_chunk_scan_combined decomposes it), one template per element type. The
// sequence is cut into chunks of Q steps (64, 128 or 256); per (batch, head, chunk), with
// dt' = clamp(softplus(dt + dt_bias)) and cs the inclusive cumulative sum of dt' A inside the chunk:
//
//   1. prep    dt', cs                                        -> scratch
//   2. cb      CB[i, j] = C_i . B_j  per (batch, chunk, group) (j <= i tiles only)
//   3. state   S[p, n]  = sum_i x[i, p] dt'[i] exp(cs[Q-1] - cs[i]) B[i, n]     (the chunk's end
//              state from zero)
//   4. pass    H_0 = initial_state or 0; H_{c+1} = exp(cs_c[Q-1]) H_c + S_c, sequential over the
//              chunks, writing H_c in T; the last H (float32) is final_state
//   5. scan    y[i, p] = exp(cs[i]) (C H_c^T)[i, p] + sum_{j <= i} M[i, j] x[j, p] + D x[i, p],
//              M[i, j] = CB[i, j] exp(cs[i] - cs[j]) dt'[j]
//
// tests/python/test_ssd_chunked_model.py is this decomposition in float64, against the step-by-step
// reference. Steps past the sequence take dt' = 0 and a log-decay of exactly 0 (selected, so an
// A of -inf stays out), x, B, C = 0; M above the diagonal is a selected 0. Products 2, 3 and 5
// run on tensor cores for float16 / bfloat16 (their operands rounded to T: the scaled x of 3,
// H_c and M of 5, as mamba_ssm does; float32 accumulators), on CUDA cores for float32
// (ssd_chunk_tile.cuh says why). Scratch (ssd_scan.h SsdPlan) is float32 but for H_c, in T.
// Operand tiles go global -> registers -> shared in 16-byte vectors (Staged), the next K block's
// loads issued before the current block's product, so a block waits on one load latency per K
// block, not two (cpp/cuda/README.md "The chunked prefill" has the figures).
#pragma once

#include "ssd_chunk_tile.cuh"
#include "ssd_scan_impl.cuh"

namespace mambac::cuda::detail {

// Blocks a multiprocessor must hold of the scan and state phases (register caps of 96 and 80):
// uncapped, the scan took 128 registers (4 blocks, 16 warps) and both waited on latency. H200,
// same call, fp16 batch 1 at mamba2-2.7b's shape: scan 101 -> 88 us, state 35 -> 31 us (the
// scan spills 28 bytes). Overridable at build time for measuring other caps.
#ifndef MAMBAC_SSD_SCAN_BLOCKS
#define MAMBAC_SSD_SCAN_BLOCKS 5
#endif
#ifndef MAMBAC_SSD_STATE_BLOCKS
#define MAMBAC_SSD_STATE_BLOCKS 6
#endif
// float32 tiles (CUDA cores, 32 accumulators a thread) would spill under the caps: uncapped.
template <typename T> constexpr int kScanMinBlocks = std::is_same_v<T, float> ? 1 : MAMBAC_SSD_SCAN_BLOCKS;
template <typename T> constexpr int kStateMinBlocks = std::is_same_v<T, float> ? 1 : MAMBAC_SSD_STATE_BLOCKS;
constexpr int kChunkThreads = 128;  // 4 warps, 2 x 2 over a 64 x 64 output tile
constexpr int kTile = 64;
// The K extent of one staged operand pair. 64 for 16-bit T was measured and dropped (half the
// barriers, twice the loads a stage: the scan phase 111 -> 117 us, state 43 -> 43 us at
// mamba2-2.7b's shape on the H200); float32 tiles of 64 would pass 48 KB of static shared memory.
template <typename T> constexpr int kKb = 32;
constexpr int kMaxChunk = 256;
constexpr int kPassThreads = 256;
// Leading dimensions of the staged tiles, in elements. 16-bit tiles: a multiple of 8 (WMMA), with
// 16-byte padding against bank conflicts; float32 tiles (CUDA cores): odd, so a column read along
// the lanes hits 32 banks.
template <typename T> constexpr int kPad = std::is_same_v<T, float> ? 1 : 8;
template <typename T> constexpr int kLdK = kKb<T> + kPad<T>;  // [64][kKb] tiles
template <typename T> constexpr int kLdT = kTile + kPad<T>;   // [kKb][64] tiles
constexpr int kLdY = kTile + 4;                                // the float [64][64] result tile

// Where the phases meet: scratch regions (float32) and the chunking.
struct ChunkArgs {
    float* dtp;  // [batch, heads, nchunks, Q]
    float* cs;   // [batch, heads, nchunks, Q]
    float* cb;   // [batch, nchunks, ngroups, Q, Q]
    float* st;   // [batch, nchunks, heads, head_dim, dstate]: S_c
    void* hs;    // [batch, nchunks, heads, head_dim, dstate] of T: H_c, the state entering chunk c
    int Q;
    long long nc;
};

template <typename T> __device__ __forceinline__ T zero_of() { return from_f32<T>(0.f); }

// kVec<T> floats rounded to T, two at a time for the 16-bit types (one conversion instruction a
// pair).
template <typename T> __device__ __forceinline__ Vec16<T> pack_vec(const float (&m)[kVec<T>]) {
    Vec16<T> v;
    if constexpr (std::is_same_v<T, __half>) {
        __half2* h2 = reinterpret_cast<__half2*>(&v.raw);
#pragma unroll
        for (int e = 0; e < kVec<T> / 2; ++e) h2[e] = __floats2half2_rn(m[2 * e], m[2 * e + 1]);
    } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        __nv_bfloat162* h2 = reinterpret_cast<__nv_bfloat162*>(&v.raw);
#pragma unroll
        for (int e = 0; e < kVec<T> / 2; ++e) h2[e] = __floats2bfloat162_rn(m[2 * e], m[2 * e + 1]);
    } else {
#pragma unroll
        for (int e = 0; e < kVec<T>; ++e) v.e[e] = from_f32<T>(m[e]);
    }
    return v;
}

// Steps of chunk c inside the sequence: Q, or fewer in the last chunk.
__device__ __forceinline__ int chunk_steps(const SsdArgs& a, const ChunkArgs& k, size_t c0) {
    const size_t left = a.seqlen - c0;
    return left < static_cast<size_t>(k.Q) ? static_cast<int>(left) : k.Q;
}

// A ROWS x COLS tile of T on its way into shared memory, in two halves so that a K loop can load
// the next tile into registers while the current one is multiplied: load() reads it (tile row r
// is row(r), a pointer to its first element with `ncols` elements readable, null: a row of zeros;
// columns past ncols are zeros), store() writes it at dst (leading dimension ld). 16-byte loads
// where a vector lies inside the row and is 16-byte aligned (head_dim and dstate multiples of 8
// for 16-bit T, of 4 for float32, and so a packed input's offset and row: docs/op-contract.md
// "Sliced inputs"), element loads otherwise; 16-byte shared stores for 16-bit T
// (kLdK / kLdT keep their rows 16-byte aligned). store()'s SCALE: each element of tile row r
// becomes T(float(element) * scale(r)) (NoScale: stored as read); CHECK: it returns whether any
// element this thread staged is not finite.
struct NoScale {
    static constexpr bool kOn = false;
    __device__ float operator()(int) const { return 1.f; }
};
struct RowScale {
    static constexpr bool kOn = true;
    const float* w;  // shared memory: the scale of tile row r is w[r]
    __device__ float operator()(int r) const { return w[r]; }
};

template <typename T, int ROWS, int COLS> struct Staged {
    static constexpr int V = kVec<T>, PER_ROW = COLS / V, COUNT = ROWS * PER_ROW;
    static constexpr int PER_THREAD = (COUNT + kChunkThreads - 1) / kChunkThreads;
    static_assert(COLS % V == 0, "whole vectors a row");
    Vec16<T> v[PER_THREAD];

    template <typename Row> __device__ __forceinline__ void load(const Row& row, int ncols) {
#pragma unroll
        for (int u = 0; u < PER_THREAD; ++u) {
            const int q = threadIdx.x + u * kChunkThreads;
            if (q >= COUNT) break;
            const int r = q / PER_ROW, c = (q % PER_ROW) * V;
            const T* src = row(r);
            if (src && c + V <= ncols && (reinterpret_cast<size_t>(src + c) & 15) == 0) {
                v[u].raw = *reinterpret_cast<const uint4*>(src + c);
            } else {
#pragma unroll
                for (int e = 0; e < V; ++e) v[u].e[e] = src && c + e < ncols ? src[c + e] : zero_of<T>();
            }
        }
    }

    template <bool CHECK = false, typename Scale = NoScale>
    __device__ __forceinline__ bool store(T* dst, int ld, const Scale& scale = Scale{}) {
        bool bad = false;
#pragma unroll
        for (int u = 0; u < PER_THREAD; ++u) {
            const int q = threadIdx.x + u * kChunkThreads;
            if (q >= COUNT) break;
            const int r = q / PER_ROW, c = (q % PER_ROW) * V;
            Vec16<T> w = v[u];
            if constexpr (Scale::kOn) {
                const float f = scale(r);
#pragma unroll
                for (int e = 0; e < V; ++e) w.e[e] = from_f32<T>(to_f32(w.e[e]) * f);
            }
            if constexpr (std::is_same_v<T, float>) {
#pragma unroll
                for (int e = 0; e < V; ++e) dst[r * ld + c + e] = w.e[e];
            } else {
                *reinterpret_cast<uint4*>(dst + r * ld + c) = w.raw;
            }
            if constexpr (CHECK) {
#pragma unroll
                for (int e = 0; e < V; ++e) bad |= !isfinite(to_f32(w.e[e]));
            }
        }
        return bad;
    }
};

// Both halves at once, where nothing is left to overlap.
template <typename T, int ROWS, int COLS, typename Row>
__device__ __forceinline__ void stage(T* dst, int ld, const Row& row, int ncols) {
    Staged<T, ROWS, COLS> t;
    t.load(row, ncols);
    t.store(dst, ld);
}

// The next tile index of a block's linear index: id % n, with n taken off id.
__device__ __forceinline__ int take(long long& id, long long n) {
    const int t = static_cast<int>(id % n);
    id /= n;
    return t;
}

// The (batch, chunk, head) a block of phases 3 and 5 works on, from what is left of its index
// after its tile indices ((b, c, h)-major, as the launcher counts the blocks).
struct HeadChunk {
    size_t b, c0, row;  // row: of the [batch, heads, nchunks, Q] scratch
    long long c;
    int h, g, qc;       // qc: the chunk's steps inside the sequence
};
__device__ __forceinline__ HeadChunk head_chunk(const SsdArgs& a, const ChunkArgs& k, long long id) {
    HeadChunk w;
    w.h = take(id, a.heads);
    w.c = id % k.nc;
    w.b = static_cast<size_t>(id / k.nc);
    w.g = w.h / a.heads_per_group;
    w.c0 = static_cast<size_t>(w.c) * k.Q;
    w.qc = chunk_steps(a, k, w.c0);
    w.row = (w.b * a.heads + w.h) * k.nc + w.c;
    return w;
}

// 1. One warp per (batch, head, chunk) row; lane l owns steps [l E, l E + E), E = Q / 32.
template <typename T>
__global__ void __launch_bounds__(kChunkThreads) ssd_chunk_prep(const SsdArgs a, const ChunkArgs k) {
    const long long row = static_cast<long long>(blockIdx.x) * (kChunkThreads / 32) + threadIdx.x / 32;
    const long long rows = static_cast<long long>(a.rows / a.head_dim) * k.nc;
    if (row >= rows) return;  // whole warps leave together
    const int lane = threadIdx.x % 32;
    const long long c = row % k.nc;
    const long long bh = row / k.nc;
    const int h = static_cast<int>(bh % a.heads);
    const size_t b = static_cast<size_t>(bh / a.heads);
    const T* __restrict__ dt = static_cast<const T*>(a.dt);
    const float A = a.A[h];
    const float bias = a.dt_bias ? a.dt_bias[h] : 0.f;
    const int E = k.Q / 32;
    float* dtp = k.dtp + row * k.Q;
    float* cs = k.cs + row * k.Q;
    float local[kMaxChunk / 32];
    float run = 0.f;
#pragma unroll
    for (int e = 0; e < kMaxChunk / 32; ++e) {
        if (e >= E) break;
        const int i = lane * E + e;
        const size_t t = static_cast<size_t>(c) * k.Q + i;
        float d = 0.f, la = 0.f;
        if (t < a.seqlen) {
            // As the step kernel and the reference: softplus, then the clamp; a NaN passes both.
            d = to_f32(dt[(b * a.seqlen + t) * a.dt_stride + h]) + bias;
            if (a.softplus) d = softplus(d);
            if (d < a.dt_min) d = a.dt_min;
            if (d > a.dt_max) d = a.dt_max;
            la = d * A;
        }
        dtp[i] = d;
        run += la;
        local[e] = run;
    }
    // Exclusive prefix of the lanes' sums.
    float incl = run;
#pragma unroll
    for (int off = 1; off < 32; off *= 2) {
        const float v = __shfl_up_sync(0xffffffffu, incl, off);
        if (lane >= off) incl += v;
    }
    float excl = __shfl_up_sync(0xffffffffu, incl, 1);
    if (lane == 0) excl = 0.f;
#pragma unroll
    for (int e = 0; e < kMaxChunk / 32; ++e) {
        if (e >= E) break;
        cs[lane * E + e] = excl + local[e];
    }
}

// Writes the float [64][64] result tile Ys (leading dimension kLdY) to out (row stride ld
// elements), rows below `rows` and columns below `cols` only: 16-byte stores where the row stays
// 16-byte aligned, element stores otherwise.
__device__ __forceinline__ void store_tile(float* out, size_t ld, const float* Ys, int rows, int cols) {
    for (int q = threadIdx.x; q < kTile * kTile / 4; q += kChunkThreads) {
        const int r = q / (kTile / 4), col = (q % (kTile / 4)) * 4;
        if (r >= rows) continue;
        float* dst = out + r * ld + col;
        const float4 v = *reinterpret_cast<const float4*>(Ys + r * kLdY + col);
        if (col + 4 <= cols && (reinterpret_cast<size_t>(dst) & 15) == 0) {
            *reinterpret_cast<float4*>(dst) = v;
        } else {
            const float e[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int j = 0; j < 4; ++j)
                if (col + j < cols) dst[j] = e[j];
        }
    }
}

// Two operand tiles of ELEMS elements of T and, once the products are done, the float result
// tile in their place: one shared buffer (a block's own; the products' last reads must be behind
// a barrier before the result is stored).
template <typename T> struct PairThenResult {
    T* a;
    T* b;
    float* y;
};
template <typename T, int ELEMS> __device__ __forceinline__ PairThenResult<T> pair_then_result() {
    constexpr size_t kOperands = 2 * ELEMS * sizeof(T), kResult = kTile * kLdY * sizeof(float);
    __shared__ __align__(128) unsigned char smem[kOperands > kResult ? kOperands : kResult];
    return {reinterpret_cast<T*>(smem), reinterpret_cast<T*>(smem) + ELEMS, reinterpret_cast<float*>(smem)};
}

// 2. One block per 64 x 64 tile of CB at or below the diagonal, per (batch, chunk, group).
template <typename T>
__global__ void __launch_bounds__(kChunkThreads) ssd_chunk_cb(const SsdArgs a, const ChunkArgs k) {
    constexpr int LDK = kLdK<T>, KB = kKb<T>;
    const PairThenResult<T> sm = pair_then_result<T, kTile * LDK>();
    T* Cs = sm.a;
    T* Bs = sm.b;
    float* Ys = sm.y;
    const int tq = k.Q / kTile;
    long long id = blockIdx.x;
    const int tj = take(id, tq), ti = take(id, tq), g = take(id, a.ngroups);
    const long long c = id % k.nc;
    const size_t b = static_cast<size_t>(id / k.nc);
    const size_t c0 = static_cast<size_t>(c) * k.Q;
    const int qc = chunk_steps(a, k, c0);
    // Tiles above the diagonal or past the sequence are never read (phase 5 selects them out).
    if (tj > ti || ti * kTile >= qc) return;
    const T* __restrict__ Bm = static_cast<const T*>(a.B);
    const T* __restrict__ Cm = static_cast<const T*>(a.C);
    const int N = a.dstate;
    const int w = threadIdx.x / 32, wr = w / 2, wc = w % 2;
    WarpTile<T> acc;
    acc.zero();
    for (int n0 = 0; n0 < N; n0 += KB) {
        __syncthreads();
        // Row r of the C tile is step ti * 64 + r, of the B tile step tj * 64 + r.
        const auto c_row = [&](int r) -> const T* {
            const int i = ti * kTile + r;
            return i < qc ? Cm + (b * a.seqlen + c0 + i) * a.c_stride + static_cast<size_t>(g) * N + n0 : nullptr;
        };
        const auto b_row = [&](int r) -> const T* {
            const int j = tj * kTile + r;
            return j < qc ? Bm + (b * a.seqlen + c0 + j) * a.b_stride + static_cast<size_t>(g) * N + n0 : nullptr;
        };
        stage<T, kTile, KB>(Cs, LDK, c_row, N - n0);
        stage<T, kTile, KB>(Bs, LDK, b_row, N - n0);
        __syncthreads();
        acc.template mma<RowMajor, ColMajor>(Cs + wr * 32 * LDK, LDK, Bs + wc * 32 * LDK, LDK, KB);
    }
    __syncthreads();  // every warp's products are done before Ys overwrites the operands
    acc.store(Ys + wr * 32 * kLdY + wc * 32, kLdY);
    __syncthreads();
    float* out = k.cb + ((static_cast<size_t>(b) * k.nc + c) * a.ngroups + g) * k.Q * k.Q;
    store_tile(out + static_cast<size_t>(ti * kTile) * k.Q + tj * kTile, k.Q, Ys, kTile, kTile);
}

// 3. One block per 64 x 64 tile of S (head_dim x dstate), per (batch, chunk, head).
template <typename T>
__global__ void __launch_bounds__(kChunkThreads, kStateMinBlocks<T>) ssd_chunk_state(const SsdArgs a, const ChunkArgs k) {
    constexpr int LDT = kLdT<T>, KB = kKb<T>;
    const PairThenResult<T> sm = pair_then_result<T, KB * LDT>();
    T* Xs = sm.a;
    T* Bs = sm.b;
    float* Ys = sm.y;
    __shared__ float ws[kMaxChunk];
    const int P = a.head_dim, N = a.dstate;
    const int ntp = (P + kTile - 1) / kTile, ntn = (N + kTile - 1) / kTile;
    long long id = blockIdx.x;
    const int tn = take(id, ntn), tp = take(id, ntp);
    const HeadChunk hc = head_chunk(a, k, id);
    const size_t b = hc.b, c0 = hc.c0, row = hc.row;
    const long long c = hc.c;
    const int h = hc.h, g = hc.g, qc = hc.qc;
    const float* cs = k.cs + row * k.Q;
    const float* dtp = k.dtp + row * k.Q;
    const float last = cs[k.Q - 1];
    for (int i = threadIdx.x; i < k.Q; i += kChunkThreads) ws[i] = dtp[i] * ex2((last - cs[i]) * kLog2e);
    const T* __restrict__ x = static_cast<const T*>(a.x);
    const T* __restrict__ Bm = static_cast<const T*>(a.B);
    const int w = threadIdx.x / 32, wr = w / 2, wc = w % 2;
    WarpTile<T> acc;
    acc.zero();
    // x of this head and p tile at the chunk's first step; consecutive steps are x_stride apart.
    const T* x0 = x + (b * a.seqlen + c0) * a.x_stride + static_cast<size_t>(h) * P + tp * kTile;
    const size_t x_step = a.x_stride;
    // Rows of the K block starting at step `next`; the next block is loaded into registers
    // while this one is multiplied.
    int next = 0;
    const auto x_row = [&](int r) -> const T* {
        const int i = next + r;
        return i < qc ? x0 + i * x_step : nullptr;
    };
    const T* B0 = Bm + (b * a.seqlen + c0) * a.b_stride + static_cast<size_t>(g) * N + tn * kTile;
    const size_t b_step = a.b_stride;
    const auto b_row = [&](int r) -> const T* {
        const int i = next + r;
        return i < qc ? B0 + i * b_step : nullptr;
    };
    Staged<T, KB, kTile> xt, bt;
    xt.load(x_row, P - tp * kTile);
    bt.load(b_row, N - tn * kTile);
    for (int i0 = 0; i0 < qc; i0 += KB) {
        __syncthreads();
        xt.store(Xs, LDT, RowScale{ws + i0});
        bt.store(Bs, LDT);
        next = i0 + KB;
        if (next < qc) {
            xt.load(x_row, P - tp * kTile);
            bt.load(b_row, N - tn * kTile);
        }
        __syncthreads();
        acc.template mma<ColMajor, RowMajor>(Xs + wr * 32, LDT, Bs + wc * 32, LDT, KB);
    }
    __syncthreads();  // every warp's products are done before Ys overwrites the operands
    acc.store(Ys + wr * 32 * kLdY + wc * 32, kLdY);
    __syncthreads();
    float* out = k.st + ((b * k.nc + c) * a.heads + h) * static_cast<size_t>(P) * N;
    store_tile(out + static_cast<size_t>(tp * kTile) * N + tn * kTile, N, Ys, P - tp * kTile, N - tn * kTile);
}

// 4. VEC consecutive state elements a thread (batch, head, p, n..), sequential over the chunks.
// Each chunk waits on nothing: the S and decays of kPassAhead chunks are requested together
// before their updates (one load latency per kPassAhead chunks; one chunk ahead, with one element
// a thread, took 16.1 us at mamba2-2.7b's shape against mamba_ssm's 7.9). H_c goes out in T, as
// the scan's product takes it (half the bytes of float32 for 16-bit T). VEC = 4 takes 16-byte
// loads of S (the launcher checks PN % 4 and the alignment of init and final_state).
constexpr int kPassAhead = 4;

template <int VEC> struct PassVec {
    float v[VEC];
    __device__ __forceinline__ void load(const float* p) {
        if constexpr (VEC == 4) {
            const float4 q = *reinterpret_cast<const float4*>(p);
            v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
        } else {
#pragma unroll
            for (int i = 0; i < VEC; ++i) v[i] = p[i];
        }
    }
    __device__ __forceinline__ void store(float* p) const {
        if constexpr (VEC == 4) {
            *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
        } else {
#pragma unroll
            for (int i = 0; i < VEC; ++i) p[i] = v[i];
        }
    }
    template <typename T> __device__ __forceinline__ void store_as(T* p) const {
        if constexpr (VEC == 4 && sizeof(T) == 2) {
            T t[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) t[i] = from_f32<T>(v[i]);
            *reinterpret_cast<uint2*>(p) = *reinterpret_cast<const uint2*>(t);
        } else if constexpr (VEC == 4 && sizeof(T) == 4) {
            store(reinterpret_cast<float*>(p));
        } else {
#pragma unroll
            for (int i = 0; i < VEC; ++i) p[i] = from_f32<T>(v[i]);
        }
    }
};

template <typename T, int VEC>
__global__ void __launch_bounds__(kPassThreads) ssd_chunk_pass(const SsdArgs a, const ChunkArgs k) {
    const size_t PN = static_cast<size_t>(a.head_dim) * a.dstate;
    const size_t id = (static_cast<size_t>(blockIdx.x) * kPassThreads + threadIdx.x) * VEC;
    if (id >= static_cast<size_t>(a.rows) * a.dstate) return;
    const size_t e = id % PN, bh = id / PN;  // VEC divides PN: a thread's elements share bh
    const size_t h = bh % a.heads, b = bh / a.heads;
    const float* __restrict__ st = k.st;
    T* __restrict__ hs = static_cast<T*>(k.hs);
    const auto slot = [&](long long c) { return ((b * k.nc + c) * a.heads + h) * PN + e; };
    PassVec<VEC> s;
    if (a.init) {
        s.load(a.init + id);
    } else {
#pragma unroll
        for (int i = 0; i < VEC; ++i) s.v[i] = 0.f;
    }
    for (long long c0 = 0; c0 < k.nc; c0 += kPassAhead) {
        PassVec<VEC> add[kPassAhead];
        float ld[kPassAhead];
#pragma unroll
        for (int u = 0; u < kPassAhead; ++u) {
            if (c0 + u < k.nc) {
                add[u].load(st + slot(c0 + u));
                ld[u] = k.cs[(bh * k.nc + c0 + u + 1) * k.Q - 1];
            }
        }
#pragma unroll
        for (int u = 0; u < kPassAhead; ++u) {
            if (c0 + u < k.nc) {
                s.template store_as<T>(hs + slot(c0 + u));
                const float d = ex2(ld[u] * kLog2e);
#pragma unroll
                for (int i = 0; i < VEC; ++i) s.v[i] = fmaf(d, s.v[i], add[u].v[i]);
            }
        }
    }
    if (a.final_state) s.store(a.final_state + id);
}

// 5. One block per (batch, chunk, head, 64 rows of the chunk, 64 columns of head_dim).
template <typename T>
__global__ void __launch_bounds__(kChunkThreads, kScanMinBlocks<T>) ssd_chunk_scan(const SsdArgs a, const ChunkArgs k) {
    constexpr int LDK = kLdK<T>, LDT = kLdT<T>, V = kVec<T>, KB = kKb<T>;
    // H_c (the first products) and x (the second) take turns in one buffer.
    constexpr int kHx = kTile * LDK > KB * LDT ? kTile * LDK : KB * LDT;
    __shared__ __align__(128) T As[kTile * LDK];  // C, then M: [64 rows][KB]
    __shared__ __align__(128) T HXs[kHx];
    T* Hs = HXs;  // H_c: [64 p][KB n]
    T* Xs = HXs;  // x: [KB j][64 p]
    __shared__ __align__(128) float Ys[kTile * kLdY];
    // cs in log2 units (times log2 e, once here rather than once per element of M) and dt',
    // read V at a time below (16-byte aligned).
    __shared__ __align__(16) float css[kMaxChunk];
    __shared__ __align__(16) float dts[kMaxChunk];
    const int P = a.head_dim, N = a.dstate;
    const int ntp = (P + kTile - 1) / kTile, tq = k.Q / kTile;
    long long id = blockIdx.x;
    const int tp = take(id, ntp), tm = take(id, tq);
    const HeadChunk hc = head_chunk(a, k, id);
    const size_t b = hc.b, c0 = hc.c0, row = hc.row;
    const long long c = hc.c;
    const int h = hc.h, g = hc.g, qc = hc.qc;
    const int m0 = tm * kTile, p0 = tp * kTile;
    if (m0 >= qc) return;
    for (int i = threadIdx.x; i < k.Q; i += kChunkThreads) {
        css[i] = k.cs[row * k.Q + i] * kLog2e;
        dts[i] = k.dtp[row * k.Q + i];
    }
    const T* __restrict__ x = static_cast<const T*>(a.x);
    const T* __restrict__ Cm = static_cast<const T*>(a.C);
    const T* Hc = static_cast<const T*>(k.hs) + ((b * k.nc + c) * a.heads + h) * static_cast<size_t>(P) * N;
    const float* cb = k.cb + ((b * k.nc + c) * a.ngroups + g) * static_cast<size_t>(k.Q) * k.Q;
    const int w = threadIdx.x / 32, wr = w / 2, wc = w % 2;
    float* yw = Ys + wr * 32 * kLdY + wc * 32;  // this warp's part of the result tile
    WarpTile<T> acc;
    acc.zero();
    // The carried-in state: (C H_c^T)[i, p], K = dstate; the K block from state `nn` on is
    // loaded into registers while the previous one is multiplied.
    {
        int nn = 0;
        const T* C0 = Cm + (b * a.seqlen + c0 + m0) * a.c_stride + static_cast<size_t>(g) * N;
        const size_t c_step = a.c_stride;
        const auto c_row = [&](int r) -> const T* { return m0 + r < qc ? C0 + r * c_step + nn : nullptr; };
        const auto h_row = [&](int r) -> const T* {
            return p0 + r < P ? Hc + static_cast<size_t>(p0 + r) * N + nn : nullptr;
        };
        Staged<T, kTile, KB> ct, ht;
        ct.load(c_row, N);
        ht.load(h_row, N);
        for (int n0 = 0; n0 < N; n0 += KB) {
            __syncthreads();
            ct.store(As, LDK);
            ht.store(Hs, LDK);
            nn = n0 + KB;
            if (nn < N) {
                ct.load(c_row, N - nn);
                ht.load(h_row, N - nn);
            }
            __syncthreads();
            acc.template mma<RowMajor, ColMajor>(As + wr * 32 * LDK, LDK, Hs + wc * 32 * LDK, LDK, KB);
        }
    }
    // ... decayed to each row's step: times exp(cs[i]), through the result tile.
    acc.store(yw, kLdY);
    __syncthreads();
    for (int q = threadIdx.x; q < kTile * kTile / 4; q += kChunkThreads) {
        const int r = q / (kTile / 4), col = (q % (kTile / 4)) * 4;
        const float d = ex2(css[m0 + r]);  // css is in log2 units
        float4* v = reinterpret_cast<float4*>(Ys + r * kLdY + col);
        *v = make_float4(v->x * d, v->y * d, v->z * d, v->w * d);
    }
    __syncthreads();
    acc.load(yw, kLdY);
    // The chunk's own steps: sum_{j <= i} M[i, j] x[j, p], over the K blocks at or left of the
    // diagonal.
    const int jend = m0 + kTile < qc ? m0 + kTile : qc;
    // V consecutive columns of one row a thread: CB's row segment in 16-byte loads (Q and the
    // scratch offsets keep it aligned), one exp an element, one 16-byte store (16-bit T). A K
    // block's CB segments are loaded into registers during the previous block's product.
    constexpr int kPer = kTile * (KB / V) / kChunkThreads;
    static_assert(kPer * kChunkThreads == kTile * (KB / V), "whole vectors a thread");
    float4 cb_next[kPer][V / 4];
    const auto load_cb = [&](int j0) {
#pragma unroll
        for (int u = 0; u < kPer; ++u) {
            const int q = threadIdx.x + u * kChunkThreads;
            const int r = q / (KB / V), kk = (q % (KB / V)) * V, i = m0 + r, j = j0 + kk;
            if (i < qc && j <= i) {
                const float4* src = reinterpret_cast<const float4*>(cb + static_cast<size_t>(i) * k.Q + j);
#pragma unroll
                for (int f = 0; f < V / 4; ++f) cb_next[u][f] = src[f];
            }
        }
    };
    // x of the K block starting at step `next`, loaded during the previous block's product.
    int next = 0;
    const T* x0 = x + (b * a.seqlen + c0) * a.x_stride + static_cast<size_t>(h) * P + p0;
    const size_t x_step = a.x_stride;
    const auto x_row = [&](int r) -> const T* {
        const int j = next + r;
        return j < qc ? x0 + j * x_step : nullptr;
    };
    Staged<T, KB, kTile> xt;
    load_cb(0);
    xt.load(x_row, P - p0);
    for (int j0 = 0; j0 < jend; j0 += KB) {
        __syncthreads();
#pragma unroll
        for (int u = 0; u < kPer; ++u) {
            const int q = threadIdx.x + u * kChunkThreads;
            const int r = q / (KB / V), kk = (q % (KB / V)) * V, i = m0 + r, j = j0 + kk;
            Vec16<T> v;
            if (i < qc && j <= i) {
                float cbv[V];
#pragma unroll
                for (int f = 0; f < V / 4; ++f) {
                    const float4 t = cb_next[u][f];
                    cbv[4 * f] = t.x, cbv[4 * f + 1] = t.y, cbv[4 * f + 2] = t.z, cbv[4 * f + 3] = t.w;
                }
                // The vector's cs and dt' in 16-byte shared loads (the compiler made V scalar
                // ones of each): ncu had building M at most of the kernel's 35 M instructions.
                float csj[V], dtj[V];
#pragma unroll
                for (int f = 0; f < V / 4; ++f) {
                    const float4 c4 = *reinterpret_cast<const float4*>(css + j + 4 * f);
                    const float4 d4 = *reinterpret_cast<const float4*>(dts + j + 4 * f);
                    csj[4 * f] = c4.x, csj[4 * f + 1] = c4.y, csj[4 * f + 2] = c4.z, csj[4 * f + 3] = c4.w;
                    dtj[4 * f] = d4.x, dtj[4 * f + 1] = d4.y, dtj[4 * f + 2] = d4.z, dtj[4 * f + 3] = d4.w;
                }
                const float ci = css[i];
                float m[V];
#pragma unroll
                for (int e = 0; e < V; ++e) m[e] = cbv[e] * ex2(ci - csj[e]) * dtj[e];
                // Where the diagonal crosses the vector, a selected 0 above it, whatever CB holds
                // there (never written); left of the diagonal no select at all.
                if (j + V - 1 > i) {
#pragma unroll
                    for (int e = 0; e < V; ++e) m[e] = j + e <= i ? m[e] : 0.f;
                }
                v = pack_vec<T>(m);
            } else {
#pragma unroll
                for (int e = 0; e < V; ++e) v.e[e] = zero_of<T>();
            }
            if constexpr (std::is_same_v<T, float>) {
#pragma unroll
                for (int e = 0; e < V; ++e) As[r * LDK + kk + e] = v.e[e];
            } else {
                *reinterpret_cast<uint4*>(As + r * LDK + kk) = v.raw;
            }
        }
        const bool bad = xt.template store<true>(Xs, LDT);
        if (j0 + KB < jend) {
            load_cb(j0 + KB);
            next = j0 + KB;
            xt.load(x_row, P - p0);
        }
        // A non-finite x above the diagonal would meet M's zeros there in the product (0 * inf =
        // NaN in rows the equations keep finite): such a block is summed on CUDA cores, skipping
        // those terms. Only blocks that cross the diagonal can hold them.
        const bool crosses = j0 + KB - 1 > m0;
        if (__syncthreads_or(crosses && bad)) {
            acc.store(yw, kLdY);
            __syncthreads();
            for (int e = threadIdx.x; e < kTile * kTile; e += kChunkThreads) {
                const int r = e / kTile, col = e % kTile, i = m0 + r;
                float s = Ys[r * kLdY + col];
                for (int kk = 0; kk < KB && j0 + kk <= i; ++kk)
                    s = fmaf(to_f32(As[r * LDK + kk]), to_f32(Xs[kk * LDT + col]), s);
                Ys[r * kLdY + col] = s;
            }
            __syncthreads();
            acc.load(yw, kLdY);
        } else {
            acc.template mma<RowMajor, RowMajor>(As + wr * 32 * LDK, LDK, Xs + wc * 32, LDT, KB);
        }
    }
    __syncthreads();
    acc.store(yw, kLdY);
    __syncthreads();
    T* __restrict__ y = static_cast<T*>(a.y);
    const float Dv = a.D ? a.D[h] : 0.f;
    // y (contiguous) and x (token rows x_stride apart) of this head and p tile at the chunk's
    // first step.
    const size_t y0 = ((b * a.seqlen + c0) * a.heads + h) * P + p0, y_step = static_cast<size_t>(a.heads) * P;
    for (int q = threadIdx.x; q < kTile * (kTile / V); q += kChunkThreads) {
        const int r = q / (kTile / V), col = (q % (kTile / V)) * V, i = m0 + r;
        if (i >= qc || p0 + col >= P) continue;
        T* yo = y + y0 + i * y_step + col;
        const T* xi = x0 + i * x_step + col;
        const float* acc_y = Ys + r * kLdY + col;
        // D is optional: an absent D adds nothing, not 0 * x (NaN for an infinite x).
        if (p0 + col + V <= P && ((reinterpret_cast<size_t>(yo) | reinterpret_cast<size_t>(xi)) & 15) == 0) {
            Vec16<T> xv, yv;
            xv.raw = *reinterpret_cast<const uint4*>(xi);
#pragma unroll
            for (int e = 0; e < V; ++e) yv.e[e] = from_f32<T>(a.D ? fmaf(Dv, to_f32(xv.e[e]), acc_y[e]) : acc_y[e]);
            *reinterpret_cast<uint4*>(yo) = yv.raw;
        } else {
            for (int e = 0; e < V && p0 + col + e < P; ++e)
                yo[e] = from_f32<T>(a.D ? fmaf(Dv, to_f32(xi[e]), acc_y[e]) : acc_y[e]);
        }
    }
}

inline bool grid_fits(long long blocks) { return blocks > 0 && blocks <= 0x7fffffffLL; }

// Queues the five phases on `stream`. `scratch` holds plan.bytes (ssd_scan.h SsdPlan); the launcher
// (ssd_scan_impl.cuh launch_ssd_typed) has checked the params.
template <typename T>
cudaError_t launch_ssd_chunked(const SsdArgs& a, const SsdPlan& plan, char* scratch, cudaStream_t stream) {
    ChunkArgs k{};
    k.dtp = reinterpret_cast<float*>(scratch + plan.dtp);
    k.cs = reinterpret_cast<float*>(scratch + plan.cs);
    k.cb = reinterpret_cast<float*>(scratch + plan.cb);
    k.st = reinterpret_cast<float*>(scratch + plan.st);
    k.hs = scratch + plan.hs;
    k.Q = static_cast<int>(plan.chunk);
    k.nc = static_cast<long long>(plan.nchunks);
    const long long batch = a.rows / a.head_dim / a.heads;
    const long long tq = k.Q / kTile;
    const long long ntp = (a.head_dim + kTile - 1) / kTile, ntn = (a.dstate + kTile - 1) / kTile;
    const long long warps = batch * a.heads * k.nc;
    const long long prep = (warps + kChunkThreads / 32 - 1) / (kChunkThreads / 32);
    const long long cb = batch * k.nc * a.ngroups * tq * tq;
    const long long state = batch * k.nc * a.heads * ntp * ntn;
    // Four state elements a pass thread where whole float4s line up (the scratch is aligned).
    const auto al16 = [](const void* q) { return (reinterpret_cast<uintptr_t>(q) & 15u) == 0; };
    const bool pass4 = (static_cast<long long>(a.head_dim) * a.dstate) % 4 == 0 && al16(a.init) && al16(a.final_state);
    const long long pass_vec = pass4 ? 4 : 1;
    const long long pass = (a.rows * a.dstate / pass_vec + kPassThreads - 1) / kPassThreads;
    const long long scan = batch * k.nc * a.heads * tq * ntp;
    if (!grid_fits(prep) || !grid_fits(cb) || !grid_fits(state) || !grid_fits(pass) || !grid_fits(scan))
        return cudaErrorInvalidValue;
    ssd_chunk_prep<T><<<static_cast<unsigned>(prep), kChunkThreads, 0, stream>>>(a, k);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    ssd_chunk_cb<T><<<static_cast<unsigned>(cb), kChunkThreads, 0, stream>>>(a, k);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    ssd_chunk_state<T><<<static_cast<unsigned>(state), kChunkThreads, 0, stream>>>(a, k);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    if (pass4) ssd_chunk_pass<T, 4><<<static_cast<unsigned>(pass), kPassThreads, 0, stream>>>(a, k);
    else ssd_chunk_pass<T, 1><<<static_cast<unsigned>(pass), kPassThreads, 0, stream>>>(a, k);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    ssd_chunk_scan<T><<<static_cast<unsigned>(scan), kChunkThreads, 0, stream>>>(a, k);
    return cudaGetLastError();
}

}  // namespace mambac::cuda::detail
