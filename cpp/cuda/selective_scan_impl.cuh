// SelectiveScan kernel (docs/op-contract.md "SelectiveScan"), templated on the element type and the
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
    // Elements between consecutive rows of z ([batch, seqlen] rows) and of B and C ([batch,
    // seqlen, ngroups] rows): dim and dstate, or a packed tensor's row (docs/op-contract.md
    // "Sliced inputs"). The VEC paths need them multiples of the vector (host checks).
    int z_stride, b_stride, c_stride;
    bool softplus;
    bool param_vec;  // D and delta_bias null or 16-byte aligned: read as float4 (host checks)
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

// KN consecutive elements of T from shared memory as float, in as few loads as their width allows
// (B and C are read straight from the staging buffer in their own type: for 16-bit inputs that
// halves the shared-memory bytes the scan pulls per state, the kernel's tightest resource).
template <int KN, typename T>
__device__ __forceinline__ void load_kn_t(float (&dst)[KN], const T* src) {
    if constexpr (sizeof(T) == 4) {
        load_kn<KN>(dst, reinterpret_cast<const float*>(src));
    } else if constexpr (KN % 4 == 0) {
#pragma unroll
        for (int k = 0; k < KN; k += 4) {
            Vec16<T> v;  // only the first 8 bytes are used
            const uint2 q = *reinterpret_cast<const uint2*>(src + k);
            v.raw = make_uint4(q.x, q.y, 0u, 0u);
#pragma unroll
            for (int j = 0; j < 4; ++j) dst[k + j] = to_f32(v.e[j]);
        }
    } else {
#pragma unroll
        for (int k = 0; k < KN; ++k) dst[k] = to_f32(src[k]);
    }
}

// V per-channel float parameters (D or delta_bias) of channels d .. d + V - 1; zeros when absent.
// `vec`: the pointer is 16-byte aligned and d a multiple of 4, so float4 loads.
template <int V>
__device__ __forceinline__ void load_channel_params(float (&dst)[V], const float* p, int d, bool vec) {
    if (!p) {
#pragma unroll
        for (int j = 0; j < V; ++j) dst[j] = 0.f;
    } else if (V % 4 == 0 && vec) {
#pragma unroll
        for (int j = 0; j < V; j += 4) {
            const float4 q = __ldg(reinterpret_cast<const float4*>(p + d + j));
            dst[j] = q.x; dst[j + 1] = q.y; dst[j + 2] = q.z; dst[j + 3] = q.w;
        }
    } else {
#pragma unroll
        for (int j = 0; j < V; ++j) dst[j] = __ldg(p + d + j);
    }
}

// Shared-memory layout of one block, in bytes from the start of dynamic shared memory.
struct ScanSmem {
    int dt2, du, zg, y, b, c, p, h, raw, raw_stride, total;
};

template <typename T, int KN, int LANES, int S, bool SPLIT, bool VEC, int CPT = 1>
struct ScanKernel {
    static constexpr int NP = KN * LANES;
    static constexpr int V = kVec<T>;
    static constexpr int kMaxThreads = SPLIT ? (CPT == 1 ? 640 : 384) : (CPT == 1 ? 256 : 128);
    // Non-split, two channels a thread: five 128-thread blocks a multiprocessor (<= 102
    // registers), so batch 8 x 5120 channels runs in one wave instead of 1.2.
    static constexpr int kMinBlocks = (!SPLIT && CPT == 2) ? 5 : 1;

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
        s.b = off; off += VEC ? 0 : tt * ngbm * NP * 4;  // VEC: B, C stay in the staging buffer
        s.c = off; off += VEC ? 0 : tt * ngbm * NP * 4;
        s.p = off; off += SPLIT ? 2 * w * ch * NP * 4 : 0;  // two tiles: see the fold
        s.h = off; off += SPLIT ? 2 * w * ch * NP * 4 : 0;
        off = (off + 15) & ~15;
        s.raw = off;
        s.raw_stride = VEC ? ((raw_elems(tt, ch, ngbm, n) * static_cast<int>(sizeof(T)) + 15) & ~15) : 0;
        off += 2 * s.raw_stride;
        s.total = off;
        return s;
    }
};

// CPT: channels per thread. With CPT > 1 a thread runs the same KN states of CPT adjacent
// channels, so each B and C value it reads from shared memory serves CPT channels: shared-memory
// bandwidth (128 B/clk into registers) is the other bound beside the exps. The CPT channels of a
// thread are in one group (the host asks group_size % CPT == 0).
template <typename T, int KN, int LANES, int S, bool SPLIT, bool VEC, int CPT>
__global__ void __launch_bounds__(ScanKernel<T, KN, LANES, S, SPLIT, VEC, CPT>::kMaxThreads,
                                  ScanKernel<T, KN, LANES, S, SPLIT, VEC, CPT>::kMinBlocks)
    selective_scan_kernel(const ScanArgs a) {
    using K = ScanKernel<T, KN, LANES, S, SPLIT, VEC, CPT>;
    constexpr int NP = K::NP;
    constexpr int V = K::V;
    extern __shared__ __align__(16) unsigned char smem[];

    const int CH = a.ch;
    const int W = SPLIT ? a.w : 1;
    const int TT = W * S;
    const int CL = CH / CPT * LANES;  // threads of one group
    const int tid = threadIdx.x;
    const int w = tid / CL;
    const int cl = tid - w * CL;
    const int c = cl / LANES * CPT;  // first of this thread's channels
    const int lane = cl & (LANES - 1);
    // Barrier of this thread's group (named barrier 1 + w; the whole block when W == 1).
    auto group_sync = [&]() {
        if (W == 1) {
            __syncthreads();
        } else {
            asm volatile("bar.sync %0, %1;" ::"r"(1 + w), "r"(CL) : "memory");
        }
    };

    const int b = blockIdx.x / a.ncg;
    const int d0 = (blockIdx.x - b * a.ncg) * CH;
    const int L = a.seqlen, D = a.dim, N = a.dstate, G = a.ngroups, GS = a.group_size;
    const int d = d0 + c;
    const bool dvalid = d < D;
    const int g0 = d0 / GS;
    const int ngb = min(G, (min(d0 + CH, D) - 1) / GS + 1) - g0;  // groups this block spans
    const int gl = dvalid ? d / GS - g0 : 0;  // same for all CPT channels (host checks)
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
    float A2[CPT][KN], carry[CPT][KN];
    bool a_neg_inf = false;
#pragma unroll
    for (int ci = 0; ci < CPT; ++ci) {
#pragma unroll
        for (int k = 0; k < KN; ++k) {
            const int n = lane * KN + k;
            const bool ok = d + ci < D && n < N;
            A2[ci][k] = ok ? a.A[static_cast<size_t>(d + ci) * N + n] * kLog2e : 0.f;
            carry[ci][k] = (ok && a.init) ? a.init[(static_cast<size_t>(b) * D + d + ci) * N + n] : 0.f;
            a_neg_inf |= isinf(A2[ci][k]) && A2[ci][k] < 0.f;
        }
    }
    // States past dstate (NP > N: only without VEC, where the host allows N < NP) hold 0 with
    // A = B = C = 0, but an infinite dt * u would make them 0 * inf = NaN, which C = 0 does not
    // cancel: they are skipped. With VEC, N == NP and the test folds away.
    auto live_state = [&](int k) { return VEC || lane * KN + k < N; };
    auto store_final = [&](const float (&hs)[CPT][KN]) {
#pragma unroll
        for (int ci = 0; ci < CPT; ++ci) {
#pragma unroll
            for (int k = 0; k < KN; ++k) {
                const int n = lane * KN + k;
                if (d + ci < D && n < N) a.final_state[(static_cast<size_t>(b) * D + d + ci) * N + n] = hs[ci][k];
            }
        }
    };

    const size_t row0 = static_cast<size_t>(b) * L;  // first token of this batch row
    const int ntiles = (L + TT - 1) / TT;

    // Fixed (vector column, first row, row stride) of this thread in the tile's [Tt][CH] arrays:
    // CH / V vectors a row, and CL (a group's threads) is a multiple of that, so no division per item.
    // Each group of CL threads (one sub-chunk w) stages, preps and writes its own S rows of the
    // tile, so only the fold needs the whole block; the rest syncs on the group's own barrier.
    const int VPR = CH / V;
    const int pv = cl % VPR;
    const int pt = cl / VPR;
    const int pstride = CL / VPR;
    const int r0 = w * S;  // the group's first row in the tile
    const int r1 = r0 + S;
    const int RV = a.ngbm * N / V;  // B or C vectors a step (VEC: N % V == 0, N == NP)

    // Stage tile `tile` into raw buffer `buf` (VEC only). B and C rows past the sequence or past
    // the block's groups are zero-filled, so their conversion needs no mask (a zero B leaves the
    // state alone on the padded steps, where dt = 0 too).
    auto issue_raw = [&](int tile, int buf) {
        T* raw = reinterpret_cast<T*>(smem + lay.raw + buf * lay.raw_stride);
        T* rU = raw;
        T* rDl = rU + TT * CH;
        T* rZ = rDl + TT * CH;
        T* rB = rZ + TT * CH;
        T* rC = rB + TT * a.ngbm * N;
        const int t0 = tile * TT;
        if (d0 + pv * V < D) {
            for (int t = r0 + pt; t < r1; t += pstride) {
                const int gt = t0 + t;
                if (gt < L) {
                    const size_t off = (row0 + gt) * D + d0 + pv * V;
                    cp_async16(rU + t * CH + pv * V, gU + off);
                    cp_async16(rDl + t * CH + pv * V, gDelta + off);
                    if (has_z) cp_async16(rZ + t * CH + pv * V, gZ + (row0 + gt) * a.z_stride + d0 + pv * V);
                }
            }
        }
        for (int i = cl; i < S * RV; i += CL) {
            const int t = r0 + i / RV;
            const int v = i % RV;
            const int gt = t0 + t;
            const bool ok = gt < L && v * V < ngb * N;
            // Vector v holds states n.. of group gg (N == NP here, a multiple of V: one group a vector).
            const int gg = v * V / NP, n = v * V - gg * NP;
            const size_t row = ok ? (row0 + gt) * G + g0 + gg : 0;
            cp_async16_zfill(rB + (t * RV + v) * V, gB + (ok ? row * a.b_stride + n : 0), ok);
            cp_async16_zfill(rC + (t * RV + v) * V, gC + (ok ? row * a.c_stride + n : 0), ok);
        }
    };

    if constexpr (VEC) {
        if (ntiles > 0) issue_raw(0, 0);
        cp_async_commit();
    }

    // Steps past the sequence in the last tile take dt = 0, which leaves a state alone unless
    // A = -inf (0 * -inf = NaN). The final state of a thread with such an A is then rebuilt from
    // the state entering that tile (parked in final_state) over the tile's real steps only.
    const bool redo_last = a.final_state && w == 0 && a_neg_inf && L % TT != 0;

    for (int tile = 0; tile < ntiles; ++tile) {
        const int t0 = tile * TT;
        if (!VEC && redo_last && tile == ntiles - 1) store_final(carry);
        const T* rU = nullptr;
        const T* rDl = nullptr;
        const T* rZ = nullptr;
        const T* rB = nullptr;
        const T* rC = nullptr;
        if constexpr (VEC) {
            if (tile + 1 < ntiles) {
                issue_raw(tile + 1, (tile + 1) & 1);
            } else if (redo_last) {
                store_final(carry);  // the state entering the last tile (in the branch that is there anyway)
            }
            cp_async_commit();
            cp_async_wait<1>();
            group_sync();
            const T* raw = reinterpret_cast<const T*>(smem + lay.raw + (tile & 1) * lay.raw_stride);
            rU = raw;
            rDl = rU + TT * CH;
            rZ = rDl + TT * CH;
            rB = rZ + TT * CH;
            rC = rB + TT * a.ngbm * N;
        }

        // ---- Prep: per (step, channel) values, and B, C as float.
        if constexpr (VEC) {
            // One 16-byte vector (V channels) of one row a pass. The parameters are loaded per row
            // (L1 hits), not hoisted: kept live across the scan they would spill. Rows past the
            // sequence or the channels take dt = 0 (the state is left alone) in one branch, so the
            // full rows carry no per-element masks.
            const int dd0 = d0 + pv * V;
            for (int t = r0 + pt; t < r1; t += pstride) {
                float4* o2 = reinterpret_cast<float4*>(sDT2 + t * CH + pv * V);
                float4* od = reinterpret_cast<float4*>(sDU + t * CH + pv * V);
                float4* oz = reinterpret_cast<float4*>(sZG + t * CH + pv * V);
                if (t0 + t >= L || dd0 >= D) {
#pragma unroll
                    for (int j = 0; j < V; j += 2) o2[j / 2] = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
                    for (int j = 0; j < V; j += 4) {
                        od[j / 4] = make_float4(0.f, 0.f, 0.f, 0.f);
                        oz[j / 4] = make_float4(1.f, 1.f, 1.f, 1.f);
                    }
                    continue;
                }
                float bias[V], dcoef[V];
                load_channel_params<V>(bias, a.delta_bias, dd0, a.param_vec);
                load_channel_params<V>(dcoef, a.D, dd0, a.param_vec);
                Vec16<T> vu, vd, vz;
                vu.raw = *reinterpret_cast<const uint4*>(rU + t * CH + pv * V);
                vd.raw = *reinterpret_cast<const uint4*>(rDl + t * CH + pv * V);
                float dt[V], dtu[V], du[V], zg[V];
#pragma unroll
                for (int j = 0; j < V; ++j) {
                    const float u = to_f32(vu.e[j]);
                    const float x = to_f32(vd.e[j]) + bias[j];
                    dt[j] = a.softplus ? softplus(x) : x;
                    dtu[j] = dt[j] * u;
                    du[j] = dcoef[j] * u;
                }
                if (has_z) {
                    vz.raw = *reinterpret_cast<const uint4*>(rZ + t * CH + pv * V);
#pragma unroll
                    for (int j = 0; j < V; ++j) zg[j] = silu(to_f32(vz.e[j]));
                } else {
#pragma unroll
                    for (int j = 0; j < V; ++j) zg[j] = 1.f;
                }
#pragma unroll
                for (int j = 0; j < V; j += 2) o2[j / 2] = make_float4(dt[j], dtu[j], dt[j + 1], dtu[j + 1]);
#pragma unroll
                for (int j = 0; j < V; j += 4) {
                    od[j / 4] = make_float4(du[j], du[j + 1], du[j + 2], du[j + 3]);
                    oz[j / 4] = make_float4(zg[j], zg[j + 1], zg[j + 2], zg[j + 3]);
                }
            }
        } else {
            for (int i = r0 * CH + cl; i < r1 * CH; i += CL) {
                const int t = i / CH;
                const int cc = i - t * CH;
                const int gt = t0 + t;
                const int dd = d0 + cc;
                float dt = 0.f, dtu = 0.f, du = 0.f, zg = 0.f;
                if (gt < L && dd < D) {
                    const size_t off = (row0 + gt) * D + dd;
                    const float u = to_f32(gU[off]);
                    dt = to_f32(gDelta[off]) + (a.delta_bias ? a.delta_bias[dd] : 0.f);
                    if (a.softplus) dt = softplus(dt);
                    dtu = dt * u;
                    du = a.D ? a.D[dd] * u : 0.f;
                    zg = has_z ? silu(to_f32(gZ[(row0 + gt) * a.z_stride + dd])) : 1.f;
                }
                sDT2[i] = make_float2(dt, dtu);
                sDU[i] = du;
                sZG[i] = zg;
            }
            for (int i = r0 * NB + cl; i < r1 * NB; i += CL) {
                const int t = i / NB;
                const int r = i - t * NB;
                const int gg = r / NP;
                const int n = r - gg * NP;
                const int gt = t0 + t;
                float bv = 0.f, cv = 0.f;
                if (gt < L && gg < ngb && n < N) {
                    const size_t row = (row0 + gt) * G + g0 + gg;
                    bv = to_f32(gB[row * a.b_stride + n]);
                    cv = to_f32(gC[row * a.c_stride + n]);
                }
                sB[i] = bv;
                sC[i] = cv;
            }
        }
        group_sync();

        // ---- Scan of sub-chunk w.
        float yp[CPT][S];
        float dA[SPLIT ? S : 1][CPT][KN];
        float h[CPT][KN];
        float sumdt[CPT];
#pragma unroll
        for (int ci = 0; ci < CPT; ++ci) {
            sumdt[ci] = 0.f;
#pragma unroll
            for (int k = 0; k < KN; ++k) h[ci][k] = (!SPLIT || w == 0) ? carry[ci][k] : 0.f;
        }
        const int ts = w * S;
        // y of steps g*LANES .. g*LANES + LANES - 1 summed over the channel's lanes (a shuffle
        // reduce-scatter: lane l owns step g*LANES + l), plus D u, times silu(z), into sY.
        auto emit_y = [&](int g) {
#pragma unroll
            for (int ci = 0; ci < CPT; ++ci) {
                float v[LANES];
#pragma unroll
                for (int j = 0; j < LANES; ++j) v[j] = yp[ci][g * LANES + j];
                const float ysum = reduce_scatter<LANES>(v, lane);
                const int i = (ts + g * LANES + lane) * CH + c + ci;
                sY[i] = (ysum + sDU[i]) * sZG[i];
            }
        };
#pragma unroll
        for (int s = 0; s < S; ++s) {
            const int t = ts + s;
            float dtv[CPT], dtu[CPT];
            if constexpr (CPT == 2) {
                const float4 q = *reinterpret_cast<const float4*>(sDT2 + t * CH + c);
                dtv[0] = q.x; dtu[0] = q.y; dtv[1] = q.z; dtu[1] = q.w;
            } else {
#pragma unroll
                for (int ci = 0; ci < CPT; ++ci) {
                    const float2 q = sDT2[t * CH + c + ci];
                    dtv[ci] = q.x; dtu[ci] = q.y;
                }
            }
            float Bv[KN], Cv[KN];
            if constexpr (VEC) {
                load_kn_t<KN>(Bv, rB + t * NB + gl * NP + lane * KN);
                load_kn_t<KN>(Cv, rC + t * NB + gl * NP + lane * KN);
            } else {
                load_kn<KN>(Bv, sB + t * NB + gl * NP + lane * KN);
                load_kn<KN>(Cv, sC + t * NB + gl * NP + lane * KN);
            }
#pragma unroll
            for (int ci = 0; ci < CPT; ++ci) {
                sumdt[ci] += dtv[ci];
                float acc = 0.f;
#pragma unroll
                for (int k = 0; k < KN; ++k) {
                    if (!live_state(k)) continue;
                    const float e = ex2(dtv[ci] * A2[ci][k]);
                    if constexpr (SPLIT) dA[s][ci][k] = e;
                    h[ci][k] = fmaf(e, h[ci][k], dtu[ci] * Bv[k]);
                    acc = fmaf(Cv[k], h[ci][k], acc);
                }
                yp[ci][s] = acc;
            }
            // Without a split a group's y is final once its LANES steps are done: summing it here
            // frees its partial sums, so y holds LANES registers a channel instead of S.
            if constexpr (!SPLIT) {
                if ((s + 1) % LANES == 0) emit_y(s / LANES);
            }
        }
        if constexpr (SPLIT) {
            // Double-buffered by tile parity: a group can start the next tile's phase 1 while a
            // slower one still folds this tile's values, but not run two tiles ahead (the fold's
            // block barrier needs everyone).
            constexpr int CK = CPT * KN;
            float* bufP = sP + (tile & 1) * W * CL * CK;
            float* bufH = sH + (tile & 1) * W * CL * CK;
            float* myP = bufP + (w * CL + cl) * CK;
            float* myH = bufH + (w * CL + cl) * CK;
#pragma unroll
            for (int ci = 0; ci < CPT; ++ci) {
#pragma unroll
                for (int k = 0; k < KN; ++k) {
                    myP[ci * KN + k] = (w == 0) ? 0.f : ex2(A2[ci][k] * sumdt[ci]);
                    myH[ci * KN + k] = h[ci][k];
                }
            }
            __syncthreads();
            // Fold the sub-chunk end states: the state entering sub-chunk w, and the tile's end.
            // Sub-chunk 0 started from the carried state, so its end state is the next one's
            // entry as it is (no 0 * carry term: an infinite carry would make that NaN).
            float hin[CPT][KN], q[CPT][KN];
#pragma unroll
            for (int ci = 0; ci < CPT; ++ci) {
                load_kn<KN>(hin[ci], bufH + cl * CK + ci * KN);
#pragma unroll
                for (int k = 0; k < KN; ++k) q[ci][k] = 0.f;
            }
            for (int w2 = 1; w2 < W; ++w2) {
                if (w2 == w) {
#pragma unroll
                    for (int ci = 0; ci < CPT; ++ci) {
#pragma unroll
                        for (int k = 0; k < KN; ++k) q[ci][k] = hin[ci][k];
                    }
                }
#pragma unroll
                for (int ci = 0; ci < CPT; ++ci) {
                    float P[KN], H[KN];
                    load_kn<KN>(P, bufP + (w2 * CL + cl) * CK + ci * KN);
                    load_kn<KN>(H, bufH + (w2 * CL + cl) * CK + ci * KN);
#pragma unroll
                    for (int k = 0; k < KN; ++k) hin[ci][k] = fmaf(P[k], hin[ci][k], H[k]);
                }
            }
#pragma unroll
            for (int ci = 0; ci < CPT; ++ci) {
#pragma unroll
                for (int k = 0; k < KN; ++k) carry[ci][k] = hin[ci][k];
            }
            if (w != 0) {
                // y_t += C_t . (prod_{s' <= s} dA_s') h_in
#pragma unroll
                for (int s = 0; s < S; ++s) {
                    const int t = ts + s;
                    float Cv[KN];
                    if constexpr (VEC) {
                        load_kn_t<KN>(Cv, rC + t * NB + gl * NP + lane * KN);
                    } else {
                        load_kn<KN>(Cv, sC + t * NB + gl * NP + lane * KN);
                    }
#pragma unroll
                    for (int ci = 0; ci < CPT; ++ci) {
                        float acc = yp[ci][s];
#pragma unroll
                        for (int k = 0; k < KN; ++k) {
                            q[ci][k] *= dA[s][ci][k];
                            acc = fmaf(Cv[k], q[ci][k], acc);
                        }
                        yp[ci][s] = acc;
                    }
                }
            }
        } else {
#pragma unroll
            for (int ci = 0; ci < CPT; ++ci) {
#pragma unroll
                for (int k = 0; k < KN; ++k) carry[ci][k] = h[ci][k];
            }
        }

        // ---- The split scan's y, summed over the lanes of the channel once corrected.
        if constexpr (SPLIT) {
#pragma unroll
            for (int g = 0; g < S / LANES; ++g) emit_y(g);
        }
        group_sync();

        // ---- Write y of this tile.
        if constexpr (VEC) {
            if (d0 + pv * V < D) {
                for (int t = r0 + pt; t < r1; t += pstride) {
                    const int gt = t0 + t;
                    if (gt < L) {
                        const float4* src = reinterpret_cast<const float4*>(sY + t * CH + pv * V);
                        Vec16<T> o;
#pragma unroll
                        for (int j = 0; j < V; j += 4) {
                            const float4 f = src[j / 4];
                            o.e[j] = from_f32<T>(f.x);
                            o.e[j + 1] = from_f32<T>(f.y);
                            o.e[j + 2] = from_f32<T>(f.z);
                            o.e[j + 3] = from_f32<T>(f.w);
                        }
                        *reinterpret_cast<uint4*>(gY + (row0 + gt) * D + d0 + pv * V) = o.raw;
                    }
                }
            }
        } else {
            for (int i = r0 * CH + cl; i < r1 * CH; i += CL) {
                const int t = i / CH;
                const int cc = i - t * CH;
                const int gt = t0 + t;
                if (gt < L && d0 + cc < D) gY[(row0 + gt) * D + d0 + cc] = from_f32<T>(sY[i]);
            }
        }
        // No barrier here: the next tile's prep touches only this group's rows, after the
        // group barrier that follows its cp.async wait, and every thread of the group has passed
        // the barrier above (so is done reading them) before any of them can reach it.
    }

    if (redo_last) {
        // Every group's rows of the last tile are staged and prepped: the fold's block barrier
        // (SPLIT) or the tile's block barrier (W == 1) came after them, and nothing rewrites them.
        float h[CPT][KN];
#pragma unroll
        for (int ci = 0; ci < CPT; ++ci) {
#pragma unroll
            for (int k = 0; k < KN; ++k) {
                const int n = lane * KN + k;
                h[ci][k] = (d + ci < D && n < N) ? a.final_state[(static_cast<size_t>(b) * D + d + ci) * N + n] : 0.f;
            }
        }
        const T* rB = nullptr;
        if constexpr (VEC) rB = reinterpret_cast<const T*>(smem + lay.raw + ((ntiles - 1) & 1) * lay.raw_stride) + 3 * TT * CH;
        for (int t = 0; t < L % TT; ++t) {
            float Bv[KN];
            if constexpr (VEC) {
                load_kn_t<KN>(Bv, rB + t * NB + gl * NP + lane * KN);
            } else {
                load_kn<KN>(Bv, sB + t * NB + gl * NP + lane * KN);
            }
#pragma unroll
            for (int ci = 0; ci < CPT; ++ci) {
                const float2 q = sDT2[t * CH + c + ci];
#pragma unroll
                for (int k = 0; k < KN; ++k) {
                    if (live_state(k)) h[ci][k] = fmaf(ex2(q.x * A2[ci][k]), h[ci][k], q.y * Bv[k]);
                }
            }
        }
#pragma unroll
        for (int ci = 0; ci < CPT; ++ci) {
#pragma unroll
            for (int k = 0; k < KN; ++k) carry[ci][k] = h[ci][k];
        }
    }
    if (a.final_state && w == 0) store_final(carry);
}

}  // namespace mambac::cuda::detail
