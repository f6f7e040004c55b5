// SelectiveScan, warp-split kernel: the small-batch path for dstate 16 (see cpp/cuda/README.md).
// Included by selective_scan_launch.cuh; shares ScanArgs and the helpers of selective_scan_impl.cuh.
//
// A block owns CH (8, or 4 where that balances the multiprocessors better) consecutive channels of
// one batch row (one group) and walks the sequence in tiles of W * S steps. A warp holds
// CPW = 8 / W of those channels, all W sub-chunks of S steps of the tile, and the 16 states of
// each channel on 4 lanes (4 states a lane):
//     lane = sub * (4 * CPW) + channel * 4 + state lane.
// Each lane scans its sub-chunk from a zero state (sub-chunk 0 from the carried state), keeping
// the S x 4 decays in registers; the sub-chunk end states are then folded by a shuffle scan over
// the W sub-chunks of the warp (h_in(w+1) = P_w h_in(w) + H_w, P_w = 2^(A log2e sum dt)), and each
// lane adds C_t . (prod dA) h_in with FMAs only. Every exp is computed once, as in the block split
// of selective_scan_impl.cuh, but the fold needs no shared memory and no block barrier: warps of a
// block meet only at the two tile barriers (staging/prep, and prep/scan), blocks are small (32 W
// threads) and several share a multiprocessor, so their phases overlap.
//
// Per tile: u, delta, z, B, C of the next tile are staged with cp.async one tile ahead; prep
// computes softplus(delta + bias), delta * u, D * u and silu(z) once per (step, channel) and
// converts B and C to float once per block (not once per lane); y goes out through shared memory
// in 16-byte (8-byte for 4 float16 channels) stores, one tile late (after the next tile's first
// barrier). Shared-memory rows are padded per sub-chunk so that, with 8-channel blocks, the W
// sub-chunks a warp reads at one step fall in distinct banks (4-channel blocks share banks in
// pairs in the y sum: correct, one extra wavefront there).
#pragma once

#include "selective_scan_impl.cuh"

namespace mambac::cuda::detail {

template <typename T, int S, int W, int CH_ = 8>
struct WsKernel {
    static constexpr int CH = CH_;          // channels per block
    static constexpr int CPW = 8 / W;       // channels per warp
    static constexpr int NW = CH / CPW;     // warps per block
    static constexpr int THREADS = 32 * NW;
    static_assert(CH % CPW == 0, "a block is whole warps");
    // A u / delta / z / y row of the block: CH elements, copied in UB-byte units (8 bytes for
    // 4 float16 channels, else 16) of EU elements, CPR units a row.
    static constexpr int RB = CH * static_cast<int>(sizeof(T));
    static constexpr int UB = RB < 16 ? RB : 16;
    static constexpr int EU = UB / static_cast<int>(sizeof(T));
    static constexpr int CPR = RB / UB;
    static_assert(UB == 8 || UB == 16, "rows of 8 or 16-byte units");
    static constexpr int TT = W * S;        // steps per tile
    static constexpr int V = kVec<T>;
    static_assert(4 * CPW * W == 32, "a warp is W sub-chunks x CPW channels x 4 lanes");
    static_assert(S % 4 == 0, "the y reduce-scatter takes 4 steps at a time");
    // Word strides of one sub-chunk's rows, padded so that consecutive sub-chunks shift banks:
    // dt2 rows by 2 * CPW words, one-float rows by CPW, B / C rows by 16.
    static constexpr int pad_to(int x, int r) { return x + (((r - x) % 32) + 32) % 32; }
    static constexpr int SD2 = pad_to(S * CH * 2, 2 * CPW);
    static constexpr int SD1 = pad_to(S * CH, CPW);
    static constexpr int SB = pad_to(S * 16, 16);
    // Shared memory, in floats, then the raw staging (two buffers) in bytes.
    static constexpr int OFF_DT2 = 0;
    static constexpr int OFF_DU = OFF_DT2 + W * SD2;
    static constexpr int OFF_ZG = OFF_DU + W * SD1;
    static constexpr int OFF_Y = OFF_ZG + W * SD1;
    static constexpr int OFF_B = (OFF_Y + W * SD1 + 3) & ~3;
    static constexpr int OFF_C = OFF_B + W * SB;
    static constexpr int PREP_BYTES = ((OFF_C + W * SB) * 4 + 15) & ~15;
    static constexpr int RAW_ELEMS = 3 * TT * CH + 2 * TT * 16;
    static constexpr int RAW_BYTES = (RAW_ELEMS * static_cast<int>(sizeof(T)) + 15) & ~15;
    static constexpr int SMEM = PREP_BYTES + 2 * RAW_BYTES;
    // Registers: S x 4 decays per lane, and the unrolled loops hoist their loads: S = 8 fits ~96
    // registers (640 threads a multiprocessor), S = 12 needs 128 (512 threads).
    // W = 8 folds over three shuffle levels and needs 128 registers even at S = 8 (512 threads).
    static constexpr int SM_THREADS = (S <= 8 && W < 8) ? 640 : 512;
    static constexpr int MIN_BLOCKS = SM_THREADS / THREADS > 0 ? SM_THREADS / THREADS : 1;
};

template <typename T, int S, int W, int CH_>
__global__ void __launch_bounds__(WsKernel<T, S, W, CH_>::THREADS, WsKernel<T, S, W, CH_>::MIN_BLOCKS)
    selective_scan_ws_kernel(const ScanArgs a) {
    using K = WsKernel<T, S, W, CH_>;
    constexpr int CH = K::CH, CPW = K::CPW, TT = K::TT, V = K::V, NT = K::THREADS;
    constexpr int CPR = K::CPR, EU = K::EU;
    using Unit = typename std::conditional<K::UB == 16, uint4, uint2>::type;
    extern __shared__ __align__(16) unsigned char smem[];
    float* sF = reinterpret_cast<float*>(smem);
    float2* sDT2 = reinterpret_cast<float2*>(sF + K::OFF_DT2);
    float* sDU = sF + K::OFF_DU;
    float* sZG = sF + K::OFF_ZG;
    float* sY = sF + K::OFF_Y;
    float* sB = sF + K::OFF_B;
    float* sC = sF + K::OFF_C;

    const int tid = threadIdx.x;
    const int L = a.seqlen, D = a.dim, G = a.ngroups;
    const int b = blockIdx.x / a.ncg;
    const int d0 = (blockIdx.x - b * a.ncg) * CH;
    const int g = d0 / a.group_size;  // the host checks group_size % CH == 0
    const size_t row0 = static_cast<size_t>(b) * L;

    const T* gU = static_cast<const T*>(a.u);
    const T* gDelta = static_cast<const T*>(a.delta);
    const T* gZ = static_cast<const T*>(a.z);
    const T* gB = static_cast<const T*>(a.B);
    const T* gC = static_cast<const T*>(a.C);
    T* gY = static_cast<T*>(a.y);
    const bool has_z = gZ != nullptr;

    // Scan role of this thread.
    const int lane = tid & 31;
    const int l = lane & 3;
    const int sub = lane / (4 * CPW);
    const int c = (tid >> 5) * CPW + ((lane >> 2) & (CPW - 1));
    const int d = d0 + c;
    float A2[4], carry[4];
    bool a_neg_inf = false;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const int n = l * 4 + k;
        A2[k] = a.A[static_cast<size_t>(d) * 16 + n] * kLog2e;
        carry[k] = a.init ? a.init[(static_cast<size_t>(b) * D + d) * 16 + n] : 0.f;
        a_neg_inf |= isinf(A2[k]) && A2[k] < 0.f;
    }
    // This lane's 4 states of the final state (computed where used: no register held across the scan).
    auto final_at = [&]() { return a.final_state + (static_cast<size_t>(b) * D + d) * 16 + l * 4; };
    // Prep role: one channel, every (NT / CH)-th step of the tile.
    const int pc = tid % CH;
    const int pt0 = tid / CH;
    const float pbias = a.delta_bias ? a.delta_bias[d0 + pc] : 0.f;
    const float pdc = a.D ? a.D[d0 + pc] : 0.f;

    const int ntiles = (L + TT - 1) / TT;
    auto raw_at = [&](int buf) { return reinterpret_cast<T*>(smem + K::PREP_BYTES + buf * K::RAW_BYTES); };

    auto issue = [&](int tile, int buf) {
        T* rU = raw_at(buf);
        T* rDl = rU + TT * CH;
        T* rZ = rDl + TT * CH;
        T* rB = rZ + TT * CH;
        T* rC = rB + TT * 16;
        const int t0 = tile * TT;
        auto copy_unit = [](T* dst, const T* src) {
            if constexpr (K::UB == 16) {
                cp_async16(dst, src);
            } else {
                cp_async8(dst, src);
            }
        };
        for (int i = tid; i < TT * CPR; i += NT) {
            const int t = i / CPR, v = i % CPR;
            if (t0 + t < L) {
                const size_t off = (row0 + t0 + t) * D + d0 + v * EU;
                copy_unit(rU + t * CH + v * EU, gU + off);
                copy_unit(rDl + t * CH + v * EU, gDelta + off);
                if (has_z) copy_unit(rZ + t * CH + v * EU, gZ + (row0 + t0 + t) * a.z_stride + d0 + v * EU);
            }
        }
        constexpr int BPR = 16 / V;  // 16-byte vectors of a B / C row (16 states)
        for (int i = tid; i < TT * BPR; i += NT) {
            const int t = i / BPR, v = i % BPR;
            const bool ok = t0 + t < L;
            const size_t row = ok ? (row0 + t0 + t) * G + g : 0;
            cp_async16_zfill(rB + t * 16 + v * V, gB + (ok ? row * a.b_stride + v * V : 0), ok);
            cp_async16_zfill(rC + t * 16 + v * V, gC + (ok ? row * a.c_stride + v * V : 0), ok);
        }
    };

    auto write_out = [&](int tile) {
        const int t0 = tile * TT;
        for (int i = tid; i < TT * CPR; i += NT) {
            const int t = i / CPR, v = i % CPR;
            if (t0 + t < L) {
                const int sb = t / S, s = t - sb * S;
                const float* src = sY + sb * K::SD1 + s * CH + v * EU;
                union {
                    Unit raw;
                    T e[EU];
                } o;
#pragma unroll
                for (int j = 0; j < EU; ++j) o.e[j] = from_f32<T>(src[j]);
                *reinterpret_cast<Unit*>(gY + (row0 + t0 + t) * D + d0 + v * EU) = o.raw;
            }
        }
    };

    // Steps past the sequence in the last tile take dt = 0, which leaves a state alone unless
    // A = -inf (0 * -inf = NaN). The final state of a lane with such an A is then rebuilt from the
    // state entering that tile (parked in final_state) over the tile's real steps only.
    const bool redo_last = a.final_state && sub == 0 && a_neg_inf && L % TT != 0;

    if (ntiles > 0) issue(0, 0);
    cp_async_commit();

    for (int tile = 0; tile < ntiles; ++tile) {
        const int t0 = tile * TT;
        cp_async_wait<0>();
        __syncthreads();  // raw[tile] complete; the previous scan is done with the prep arrays
        if (tile + 1 < ntiles) {
            issue(tile + 1, (tile + 1) & 1);
        } else if (redo_last) {
#pragma unroll
            for (int k = 0; k < 4; ++k) final_at()[k] = carry[k];  // the state entering the last tile
        }
        cp_async_commit();
        if (tile > 0) write_out(tile - 1);

        // ---- Prep.
        {
            const T* rU = raw_at(tile & 1);
            const T* rDl = rU + TT * CH;
            const T* rZ = rDl + TT * CH;
            const T* rB = rZ + TT * CH;
            const T* rC = rB + TT * 16;
            for (int t = pt0; t < TT; t += NT / CH) {
                const int sb = t / S, s = t - sb * S;
                float2* o2 = sDT2 + (sb * K::SD2) / 2 + s * CH + pc;
                float* od = sDU + sb * K::SD1 + s * CH + pc;
                float* oz = sZG + sb * K::SD1 + s * CH + pc;
                if (t0 + t >= L) {  // past the sequence: dt = 0 leaves the state alone
                    *o2 = make_float2(0.f, 0.f);
                    *od = 0.f;
                    *oz = 1.f;
                    continue;
                }
                const float u = to_f32(rU[t * CH + pc]);
                float x = to_f32(rDl[t * CH + pc]) + pbias;
                if (a.softplus) x = softplus(x);
                *o2 = make_float2(x, x * u);
                *od = pdc * u;
                *oz = has_z ? silu(to_f32(rZ[t * CH + pc])) : 1.f;
            }
            for (int i = tid; i < TT * 4; i += NT) {
                const int t = i >> 2, q = i & 3;
                const int sb = t / S, s = t - sb * S;
                float bv[4], cv[4];
                load_kn_t<4>(bv, rB + t * 16 + q * 4);
                load_kn_t<4>(cv, rC + t * 16 + q * 4);
                *reinterpret_cast<float4*>(sB + sb * K::SB + s * 16 + q * 4) = make_float4(bv[0], bv[1], bv[2], bv[3]);
                *reinterpret_cast<float4*>(sC + sb * K::SB + s * 16 + q * 4) = make_float4(cv[0], cv[1], cv[2], cv[3]);
            }
        }
        __syncthreads();

        // ---- Scan of sub-chunk `sub` from zero (sub-chunk 0: from the carried state).
        float dA[S][4];
        float yp[S];
        float h[4];
        float sumdt = 0.f;
#pragma unroll
        for (int k = 0; k < 4; ++k) h[k] = sub == 0 ? carry[k] : 0.f;
        const float2* rowDT = sDT2 + (sub * K::SD2) / 2 + c;
        const float* rowB = sB + sub * K::SB + l * 4;
        const float* rowC = sC + sub * K::SB + l * 4;
#pragma unroll
        for (int s = 0; s < S; ++s) {
            const float2 q = rowDT[s * CH];
            const float4 Bq = *reinterpret_cast<const float4*>(rowB + s * 16);
            const float4 Cq = *reinterpret_cast<const float4*>(rowC + s * 16);
            const float Bv[4] = {Bq.x, Bq.y, Bq.z, Bq.w};
            const float Cv[4] = {Cq.x, Cq.y, Cq.z, Cq.w};
            sumdt += q.x;
            float acc = 0.f;
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const float e = ex2(q.x * A2[k]);
                dA[s][k] = e;
                h[k] = fmaf(e, h[k], q.y * Bv[k]);
                acc = fmaf(Cv[k], h[k], acc);
            }
            yp[s] = acc;
        }

        // ---- Fold the W sub-chunk end states: inclusive shuffle scan over the sub-chunks.
        constexpr int SUBL = 4 * CPW;  // lanes between consecutive sub-chunks
        float P[4], H[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            P[k] = sub == 0 ? 0.f : ex2(A2[k] * sumdt);
            H[k] = h[k];
        }
#pragma unroll
        for (int off = 1; off < W; off *= 2) {
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const float Hp = __shfl_up_sync(0xffffffffu, H[k], off * SUBL);
                const float Pp = __shfl_up_sync(0xffffffffu, P[k], off * SUBL);
                if (sub >= off) {
                    H[k] = fmaf(P[k], Hp, H[k]);
                    P[k] *= Pp;
                }
            }
        }
        float q[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const float hin = __shfl_up_sync(0xffffffffu, H[k], SUBL);
            q[k] = sub == 0 ? 0.f : hin;
            carry[k] = __shfl_sync(0xffffffffu, H[k], (W - 1) * SUBL + (lane & (SUBL - 1)));
        }
        // y_t += C_t . (prod_{s' <= s} dA_s') h_in. Sub-chunk 0 already holds its y: it adds
        // nothing (not C * 0, which an infinite C would make NaN).
        if (sub != 0) {
#pragma unroll
            for (int s = 0; s < S; ++s) {
                const float4 Cq = *reinterpret_cast<const float4*>(rowC + s * 16);
                const float Cv[4] = {Cq.x, Cq.y, Cq.z, Cq.w};
                float acc = yp[s];
#pragma unroll
                for (int k = 0; k < 4; ++k) {
                    q[k] *= dA[s][k];
                    acc = fmaf(Cv[k], q[k], acc);
                }
                yp[s] = acc;
            }
        }
        // ---- Sum y over the 4 lanes of the channel; lane l owns step 4 j + l.
#pragma unroll
        for (int j = 0; j < S / 4; ++j) {
            float v[4] = {yp[4 * j], yp[4 * j + 1], yp[4 * j + 2], yp[4 * j + 3]};
            const float ys = reduce_scatter<4>(v, l);
            const int i = sub * K::SD1 + (4 * j + l) * CH + c;
            sY[i] = (ys + sDU[i]) * sZG[i];
        }
    }
    if (ntiles > 0) {
        __syncthreads();
        write_out(ntiles - 1);
    }
    if (redo_last) {
        // The last tile's prep rows (every sub-chunk's) are complete since its prep/scan barrier,
        // and nothing rewrites them.
        const float* fs = final_at();
        float h[4] = {fs[0], fs[1], fs[2], fs[3]};
        for (int t = 0; t < L % TT; ++t) {
            const int sb = t / S, s = t - sb * S;
            const float2 q = sDT2[(sb * K::SD2) / 2 + s * CH + c];
            const float4 Bq = *reinterpret_cast<const float4*>(sB + sb * K::SB + s * 16 + l * 4);
            const float Bv[4] = {Bq.x, Bq.y, Bq.z, Bq.w};
#pragma unroll
            for (int k = 0; k < 4; ++k) h[k] = fmaf(ex2(q.x * A2[k]), h[k], q.y * Bv[k]);
        }
#pragma unroll
        for (int k = 0; k < 4; ++k) carry[k] = h[k];
    }
    if (a.final_state && sub == 0) {
#pragma unroll
        for (int k = 0; k < 4; ++k) final_at()[k] = carry[k];
    }
}

// Launches the warp-split kernel. Needs dstate 16, the vector path (16-byte aligned rows), and
// blocks of 8 channels inside one group (ws_fits; the 4-channel blocks are halves of those).
template <typename T, int S, int W, int CH = 8>
cudaError_t launch_ws_instance(ScanArgs a, cudaStream_t stream) {
    using K = WsKernel<T, S, W, CH>;
    auto kernel = selective_scan_ws_kernel<T, S, W, CH>;
    if (K::SMEM > 48 * 1024) {
        const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, K::SMEM);
        if (e != cudaSuccess) return e;
    }
    a.ch = K::CH;
    a.ncg = a.dim / K::CH;
    a.w = W;
    a.ngbm = 1;
    const long long grid = static_cast<long long>(a.batch) * a.ncg;
    if (grid > 0x7fffffffLL) return cudaErrorInvalidValue;
    kernel<<<static_cast<unsigned>(grid), K::THREADS, K::SMEM, stream>>>(a);
    return cudaGetLastError();
}

inline bool ws_fits(const ScanArgs& a, bool vec) {
    return vec && a.dstate == 16 && a.group_size % 8 == 0 && a.dim % 8 == 0;
}

// ch: channels a block, 8 or (W = 8, S = 8 only) 4; 0 = the one that loads the busiest
// multiprocessor least. With 8-channel blocks of 8 warps, dim 1536 at batch 1 is 192 blocks on
// 132 multiprocessors: 60 of them run 16 warps while the rest run 8. 4-channel blocks of 4 warps
// spread the same 1536 warps 12 or 8 a multiprocessor (measured 3-4% faster: cpp/cuda/README.md).
inline int ws_channels(const ScanArgs& a, int w, int s, int sms) {
    if (w != 8 || s != 8) return 8;
    const long long rows = static_cast<long long>(a.batch) * a.dim;
    const long long per_sm8 = (rows / 8 + sms - 1) / sms * 8;  // warps on the busiest SM: 8 a block
    const long long per_sm4 = (rows / 4 + sms - 1) / sms * 4;
    return per_sm4 < per_sm8 ? 4 : 8;
}

template <typename T>
cudaError_t launch_ws(const ScanArgs& a, cudaStream_t stream, int w, int s, int ch, int sms) {
    if (s == 0) s = 12;
    if (ch == 0) ch = ws_channels(a, w, s, sms);
    if (ch == 4) {
        if (w == 8 && s == 8) return launch_ws_instance<T, 8, 8, 4>(a, stream);
        return cudaErrorInvalidValue;
    }
    if (ch != 8) return cudaErrorInvalidValue;
    if (w == 2 && s == 8) return launch_ws_instance<T, 8, 2>(a, stream);
    if (w == 2 && s == 12) return launch_ws_instance<T, 12, 2>(a, stream);
    if (w == 4 && s == 8) return launch_ws_instance<T, 8, 4>(a, stream);
    if (w == 4 && s == 12) return launch_ws_instance<T, 12, 4>(a, stream);
    if (w == 8 && s == 8) return launch_ws_instance<T, 8, 8>(a, stream);
    if (w == 8 && s == 12) return launch_ws_instance<T, 12, 8>(a, stream);
    return cudaErrorInvalidValue;
}

}  // namespace mambac::cuda::detail
