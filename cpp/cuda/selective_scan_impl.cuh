// SelectiveScan kernel (DESIGN.md "SelectiveScan"), templated on the element type and the
// compile-time shape of the work split. Included only by the per-dtype selective_scan_*.cu files.
//
// Work split (see cpp/cuda/README.md for the reasoning and the measurements):
//   * a block owns CH consecutive channels of one batch row and walks the whole sequence in tiles
//     of Tt = W * S steps;
//   * the NP = KN * LANES (>= dstate) states of a channel are spread over LANES consecutive lanes
//     of a warp, KN states each, all in registers; y_t = <C_t, h_t> is summed across those lanes
//     by a shuffle reduce-scatter, so each lane ends up owning the y of one step;
//   * SPLIT: the W warps-groups of a block take W consecutive sub-chunks of S steps of the same
//     channels. Each runs its sub-chunk from a zero state keeping the S*KN decays in registers,
//     the block folds the sub-chunk end states (h_in(w+1) = P_w * h_in(w) + H_w, P_w the chunk's
//     total decay), and each sub-chunk then adds the contribution of its true initial state,
//     C_t . (prod dA) h_in, with FMAs only. Every exp is computed once; batch 1 fills the GPU.
//   * Per tile, the block stages u, delta, z, B, C in shared memory (cp.async, one tile ahead),
//     computes softplus(delta + bias), delta*u, D*u and silu(z) once per (step, channel), scans,
//     and writes y through shared memory with 16-byte stores.
#pragma once

#include "common.cuh"

namespace mambac::cuda::detail {

struct ScanArgs {
    const void* u;
    const void* delta;
    const void* z;  // nullable
    const void* B;
    const void* C;
    const float* A;
    const float* D;           // nullable
    const float* delta_bias;  // nullable
    const float* init;        // nullable
    void* y;
    float* final_state;  // nullable
    int batch, seqlen, dim, dstate, ngroups, group_size;
    bool softplus;
    // Configuration chosen by the host.
    int ch;    // channels per block
    int w;     // sub-chunks per tile (1 unless SPLIT)
    int ngbm;  // most groups one block's channels can span
    int ncg;   // channel groups (blocks) per batch row
};

// Sums v over the LANES lanes of a channel and scatters: lane l returns the sum of v[l].
template <int LANES>
__device__ __forceinline__ float reduce_scatter(float (&v)[LANES], int lane) {
#pragma unroll
    for (int m = LANES / 2; m >= 1; m /= 2) {
        const bool hi = (lane & m) != 0;
#pragma unroll
        for (int j = 0; j < m; ++j) {
            const float send = hi ? v[j] : v[j + m];
            const float keep = hi ? v[j + m] : v[j];
            v[j] = keep + __shfl_xor_sync(0xffffffffu, send, m);
        }
    }
    return v[0];
}

template <int KN>
__device__ __forceinline__ void load_kn(float (&dst)[KN], const float* src) {
    if constexpr (KN % 4 == 0) {
#pragma unroll
        for (int k = 0; k < KN; k += 4) {
            const float4 q = *reinterpret_cast<const float4*>(src + k);
            dst[k] = q.x; dst[k + 1] = q.y; dst[k + 2] = q.z; dst[k + 3] = q.w;
        }
    } else if constexpr (KN % 2 == 0) {
#pragma unroll
        for (int k = 0; k < KN; k += 2) {
            const float2 q = *reinterpret_cast<const float2*>(src + k);
            dst[k] = q.x; dst[k + 1] = q.y;
        }
    } else {
#pragma unroll
        for (int k = 0; k < KN; ++k) dst[k] = src[k];
    }
}

// Shared-memory layout of one block, in bytes from the start of dynamic shared memory.
struct ScanSmem {
    int dt2, du, zg, y, b, c, p, h, raw, raw_stride, total;
};

template <typename T, int KN, int LANES, int S, bool SPLIT, bool VEC>
struct ScanKernel {
    static constexpr int NP = KN * LANES;
    static constexpr int V = kVec<T>;
    static constexpr int kMaxThreads = SPLIT ? 640 : 256;

    // Raw (element type T) staging of one tile: u, delta, z rows [Tt][ch], B, C rows [Tt][ngbm*N].
    __host__ __device__ static int raw_elems(int tt, int ch, int ngbm, int n) {
        return 3 * tt * ch + 2 * tt * ngbm * n;
    }

    __host__ __device__ static ScanSmem layout(int ch, int w, int ngbm, int n) {
        const int tt = w * S;
        ScanSmem s{};
        int off = 0;
        s.dt2 = off; off += tt * ch * 8;
        s.du = off; off += tt * ch * 4;
        s.zg = off; off += tt * ch * 4;
        s.y = off; off += tt * ch * 4;
        s.b = off; off += tt * ngbm * NP * 4;
        s.c = off; off += tt * ngbm * NP * 4;
        s.p = off; off += SPLIT ? w * ch * NP * 4 : 0;
        s.h = off; off += SPLIT ? w * ch * NP * 4 : 0;
        off = (off + 15) & ~15;
        s.raw = off;
        s.raw_stride = VEC ? ((raw_elems(tt, ch, ngbm, n) * static_cast<int>(sizeof(T)) + 15) & ~15) : 0;
        off += 2 * s.raw_stride;
        s.total = off;
        return s;
    }
};

template <typename T, int KN, int LANES, int S, bool SPLIT, bool VEC>
__global__ void __launch_bounds__(ScanKernel<T, KN, LANES, S, SPLIT, VEC>::kMaxThreads)
    selective_scan_kernel(const ScanArgs a) {
    using K = ScanKernel<T, KN, LANES, S, SPLIT, VEC>;
    constexpr int NP = K::NP;
    constexpr int V = K::V;
    extern __shared__ __align__(16) unsigned char smem[];

    const int CH = a.ch;
    const int W = SPLIT ? a.w : 1;
    const int TT = W * S;
    const int CL = CH * LANES;
    const int nthreads = CL * W;
    const int tid = threadIdx.x;
    const int w = tid / CL;
    const int cl = tid - w * CL;
    const int c = cl / LANES;
    const int lane = cl & (LANES - 1);

    const int b = blockIdx.x / a.ncg;
    const int d0 = (blockIdx.x - b * a.ncg) * CH;
    const int L = a.seqlen, D = a.dim, N = a.dstate, G = a.ngroups, GS = a.group_size;
    const int d = d0 + c;
    const bool dvalid = d < D;
    const int g0 = d0 / GS;
    const int ngb = min(G, (min(d0 + CH, D) - 1) / GS + 1) - g0;  // groups this block spans
    const int gl = dvalid ? d / GS - g0 : 0;
    const int NB = a.ngbm * NP;  // floats per step in sB / sC

    const ScanSmem lay = K::layout(CH, W, a.ngbm, N);
    float2* sDT2 = reinterpret_cast<float2*>(smem + lay.dt2);
    float* sDU = reinterpret_cast<float*>(smem + lay.du);
    float* sZG = reinterpret_cast<float*>(smem + lay.zg);
    float* sY = reinterpret_cast<float*>(smem + lay.y);
    float* sB = reinterpret_cast<float*>(smem + lay.b);
    float* sC = reinterpret_cast<float*>(smem + lay.c);
    float* sP = reinterpret_cast<float*>(smem + lay.p);
    float* sH = reinterpret_cast<float*>(smem + lay.h);

    const T* gU = static_cast<const T*>(a.u);
    const T* gDelta = static_cast<const T*>(a.delta);
    const T* gZ = static_cast<const T*>(a.z);
    const T* gB = static_cast<const T*>(a.B);
    const T* gC = static_cast<const T*>(a.C);
    T* gY = static_cast<T*>(a.y);
    const bool has_z = gZ != nullptr;

    // Per-thread constants: A pre-scaled by log2(e), and the carried state.
    float A2[KN], carry[KN];
#pragma unroll
    for (int k = 0; k < KN; ++k) {
        const int n = lane * KN + k;
        const bool ok = dvalid && n < N;
        A2[k] = ok ? a.A[static_cast<size_t>(d) * N + n] * kLog2e : 0.f;
        carry[k] = (ok && a.init) ? a.init[(static_cast<size_t>(b) * D + d) * N + n] : 0.f;
    }

    const size_t row0 = static_cast<size_t>(b) * L;  // first token of this batch row
    const int ntiles = (L + TT - 1) / TT;

    // Stage tile `tile` into raw buffer `buf` (VEC only).
    auto issue_raw = [&](int tile, int buf) {
        T* raw = reinterpret_cast<T*>(smem + lay.raw + buf * lay.raw_stride);
        T* rU = raw;
        T* rDl = rU + TT * CH;
        T* rZ = rDl + TT * CH;
        T* rB = rZ + TT * CH;
        T* rC = rB + TT * a.ngbm * N;
        const int t0 = tile * TT;
        const int vpr = CH / V;  // vectors per row
        for (int i = tid; i < TT * vpr; i += nthreads) {
            const int t = i / vpr;
            const int v = i - t * vpr;
            const int gt = t0 + t;
            if (gt < L && d0 + v * V < D) {
                const size_t off = (row0 + gt) * D + d0 + v * V;
                cp_async16(rU + t * CH + v * V, gU + off);
                cp_async16(rDl + t * CH + v * V, gDelta + off);
                if (has_z) cp_async16(rZ + t * CH + v * V, gZ + off);
            }
        }
        const int bvpr = ngb * N / V;
        for (int i = tid; i < TT * bvpr; i += nthreads) {
            const int t = i / bvpr;
            const int v = i - t * bvpr;
            const int gt = t0 + t;
            if (gt < L) {
                const size_t off = ((row0 + gt) * G + g0) * N + v * V;
                cp_async16(rB + t * a.ngbm * N + v * V, gB + off);
                cp_async16(rC + t * a.ngbm * N + v * V, gC + off);
            }
        }
    };

    if constexpr (VEC) {
        if (ntiles > 0) issue_raw(0, 0);
        cp_async_commit();
    }

    for (int tile = 0; tile < ntiles; ++tile) {
        const int t0 = tile * TT;
        const T* rU = nullptr;
        const T* rDl = nullptr;
        const T* rZ = nullptr;
        const T* rB = nullptr;
        const T* rC = nullptr;
        if constexpr (VEC) {
            if (tile + 1 < ntiles) issue_raw(tile + 1, (tile + 1) & 1);
            cp_async_commit();
            cp_async_wait<1>();
            __syncthreads();
            const T* raw = reinterpret_cast<const T*>(smem + lay.raw + (tile & 1) * lay.raw_stride);
            rU = raw;
            rDl = rU + TT * CH;
            rZ = rDl + TT * CH;
            rB = rZ + TT * CH;
            rC = rB + TT * a.ngbm * N;
        }

        // ---- Prep: per (step, channel) values, and B, C as float; write out the last tile's y.
        for (int i = tid; i < TT * CH; i += nthreads) {
            const int t = i / CH;
            const int cc = i - t * CH;
            const int gt = t0 + t;
            const int dd = d0 + cc;
            float dt = 0.f, dtu = 0.f, du = 0.f, zg = 0.f;
            if (gt < L && dd < D) {
                float u, dl, z = 0.f;
                if constexpr (VEC) {
                    u = to_f32(rU[i]);
                    dl = to_f32(rDl[i]);
                    if (has_z) z = to_f32(rZ[i]);
                } else {
                    const size_t off = (row0 + gt) * D + dd;
                    u = to_f32(gU[off]);
                    dl = to_f32(gDelta[off]);
                    if (has_z) z = to_f32(gZ[off]);
                }
                dt = dl + (a.delta_bias ? a.delta_bias[dd] : 0.f);
                if (a.softplus) dt = softplus(dt);
                dtu = dt * u;
                du = a.D ? a.D[dd] * u : 0.f;
                zg = has_z ? silu(z) : 1.f;
            }
            sDT2[i] = make_float2(dt, dtu);
            sDU[i] = du;
            sZG[i] = zg;
        }
        for (int i = tid; i < TT * NB; i += nthreads) {
            const int t = i / NB;
            const int r = i - t * NB;
            const int gg = r / NP;
            const int n = r - gg * NP;
            const int gt = t0 + t;
            float bv = 0.f, cv = 0.f;
            if (gt < L && gg < ngb && n < N) {
                if constexpr (VEC) {
                    bv = to_f32(rB[t * a.ngbm * N + gg * N + n]);
                    cv = to_f32(rC[t * a.ngbm * N + gg * N + n]);
                } else {
                    const size_t off = ((row0 + gt) * G + g0 + gg) * N + n;
                    bv = to_f32(gB[off]);
                    cv = to_f32(gC[off]);
                }
            }
            sB[i] = bv;
            sC[i] = cv;
        }
        __syncthreads();

        // ---- Scan of sub-chunk w.
        float yp[S];
        float dA[SPLIT ? S : 1][KN];
        float h[KN];
        float sumdt = 0.f;
#pragma unroll
        for (int k = 0; k < KN; ++k) h[k] = (!SPLIT || w == 0) ? carry[k] : 0.f;
        const int ts = w * S;
#pragma unroll
        for (int s = 0; s < S; ++s) {
            const int t = ts + s;
            const float2 q = sDT2[t * CH + c];
            float Bv[KN], Cv[KN];
            load_kn<KN>(Bv, sB + t * NB + gl * NP + lane * KN);
            load_kn<KN>(Cv, sC + t * NB + gl * NP + lane * KN);
            sumdt += q.x;
            float acc = 0.f;
#pragma unroll
            for (int k = 0; k < KN; ++k) {
                const float e = ex2(q.x * A2[k]);
                if constexpr (SPLIT) dA[s][k] = e;
                h[k] = fmaf(e, h[k], q.y * Bv[k]);
                acc = fmaf(Cv[k], h[k], acc);
            }
            yp[s] = acc;
        }
        if constexpr (SPLIT) {
            float* myP = sP + (w * CL + cl) * KN;
            float* myH = sH + (w * CL + cl) * KN;
#pragma unroll
            for (int k = 0; k < KN; ++k) {
                myP[k] = (w == 0) ? 0.f : ex2(A2[k] * sumdt);
                myH[k] = h[k];
            }
            __syncthreads();
            // Fold the sub-chunk end states: the state entering sub-chunk w, and the tile's end.
            float hin[KN], q[KN];
#pragma unroll
            for (int k = 0; k < KN; ++k) { hin[k] = carry[k]; q[k] = 0.f; }
            for (int w2 = 0; w2 < W; ++w2) {
                if (w2 == w) {
#pragma unroll
                    for (int k = 0; k < KN; ++k) q[k] = hin[k];
                }
                float P[KN], H[KN];
                load_kn<KN>(P, sP + (w2 * CL + cl) * KN);
                load_kn<KN>(H, sH + (w2 * CL + cl) * KN);
#pragma unroll
                for (int k = 0; k < KN; ++k) hin[k] = fmaf(P[k], hin[k], H[k]);
            }
#pragma unroll
            for (int k = 0; k < KN; ++k) carry[k] = hin[k];
            if (w != 0) {
                // y_t += C_t . (prod_{s' <= s} dA_s') h_in
#pragma unroll
                for (int s = 0; s < S; ++s) {
                    const int t = ts + s;
                    float Cv[KN];
                    load_kn<KN>(Cv, sC + t * NB + gl * NP + lane * KN);
                    float acc = yp[s];
#pragma unroll
                    for (int k = 0; k < KN; ++k) {
                        q[k] *= dA[s][k];
                        acc = fmaf(Cv[k], q[k], acc);
                    }
                    yp[s] = acc;
                }
            }
        } else {
#pragma unroll
            for (int k = 0; k < KN; ++k) carry[k] = h[k];
        }

        // ---- Sum y over the lanes of the channel; lane l owns step g*LANES + l of each group.
#pragma unroll
        for (int g = 0; g < S / LANES; ++g) {
            float v[LANES];
#pragma unroll
            for (int j = 0; j < LANES; ++j) v[j] = yp[g * LANES + j];
            const float ysum = reduce_scatter<LANES>(v, lane);
            const int t = ts + g * LANES + lane;
            const int i = t * CH + c;
            sY[i] = (ysum + sDU[i]) * sZG[i];
        }
        __syncthreads();

        // ---- Write y of this tile.
        if constexpr (VEC) {
            const int vpr = CH / V;
            for (int i = tid; i < TT * vpr; i += nthreads) {
                const int t = i / vpr;
                const int v = i - t * vpr;
                const int gt = t0 + t;
                if (gt < L && d0 + v * V < D) {
                    Vec16<T> o;
#pragma unroll
                    for (int j = 0; j < V; ++j) o.e[j] = from_f32<T>(sY[t * CH + v * V + j]);
                    *reinterpret_cast<uint4*>(gY + (row0 + gt) * D + d0 + v * V) = o.raw;
                }
            }
        } else {
            for (int i = tid; i < TT * CH; i += nthreads) {
                const int t = i / CH;
                const int cc = i - t * CH;
                const int gt = t0 + t;
                if (gt < L && d0 + cc < D) gY[(row0 + gt) * D + d0 + cc] = from_f32<T>(sY[i]);
            }
        }
        // The next tile's prep overwrites sY, sDT2, ... and its cp.async reuses this raw buffer:
        // its first barrier comes after the writes above only if we fence here.
        __syncthreads();
    }

    if (a.final_state && w == 0 && dvalid) {
#pragma unroll
        for (int k = 0; k < KN; ++k) {
            const int n = lane * KN + k;
            if (n < N) a.final_state[(static_cast<size_t>(b) * D + d) * N + n] = carry[k];
        }
    }
}

}  // namespace mambac::cuda::detail
