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
// The GEMVs, their launchers and the stats kernel are decode_gemv.cuh's (shared with the Mamba-2
// layer, mamba2_decode_layer.cu); this file adds the x_proj prologue (the conv), the scan and
// the Mamba-1 scratch layout. The roundings to T sit where the unfused graph stores a T tensor,
// so both agree to T's precision.
#include <algorithm>
#include <cstdint>

#include "common.cuh"
#include "decode_gemv.cuh"
#include "decode_layer.h"

namespace mambac::cuda {
namespace detail {
namespace {

// Where the float32 scratch lives (in floats from the start); the accumulators come first so one
// range is zeroed.
struct ScratchLayout {
    size_t xz, dbc, stats, xc, y, zero_end, total;
};

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

// x_proj's prologue: x[b][i] = T(silu(conv(state, T(xz[b, k])))) for channel k = k0 + i,
// writing conv_state_out and xc (the scan's u) from the first column block.
struct ConvPrologue {
    DecodeLayerParams p;
    template <typename T, int BB, typename X, int LD>
    __device__ __forceinline__ void fill(X (*xs)[LD], int b0, int nb, int k0, int kt, bool first_col_block) const {
        const ScratchLayout L = scratch_layout(p);
        float* scratch = static_cast<float*>(p.scratch);
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
    }
};

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
    allow_dependent_grids();
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
    // A dependent launch (common.cuh): A and the dt_proj weights above are read before waiting
    // for the kernel before, the states and activations below after.
    wait_for_prior_grids();
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

    const StatsArgs stats{p.residual_in, p.residual_out, scratch + L.stats, scratch, L.zero_end, H, p.eps};
    cudaError_t e = launch_stats(stats, p.batch, p.tuning, s);
    if (e != cudaSuccess) return e;
    const NormPrologue norm{p.residual_in, scratch + L.stats, p.norm_w, H};
    const int B = p.batch;
    e = launch_gemv<T>(norm, GemvArgs{p.in_proj_t, p.in_proj_b, scratch + L.xz, H, 2 * I, 2 * I, 0, B}, p.tuning, s, sms);
    if (e != cudaSuccess) return e;
    e = launch_gemv<T>(ConvPrologue{p}, GemvArgs{p.x_proj_t, nullptr, scratch + L.dbc, I, E, E, 0, B}, p.tuning, s, sms);
    if (e != cudaSuccess) return e;
    // Batch rows a scan block: enough blocks to fill the GPU about four times, at most 8 rows.
    const int ch_blocks = (I + kScanCh - 1) / kScanCh;
    const int rpb = std::clamp((p.batch * ch_blocks + 4 * sms - 1) / (4 * sms), 1, 8);
    const dim3 sgrid(ch_blocks, (p.batch + rpb - 1) / rpb);
    const auto scan = p.dstate <= 16 ? decode_scan_kernel<T, 2> : p.dstate <= 32 ? decode_scan_kernel<T, 4>
                                                                                 : decode_scan_kernel<T, 0>;
    e = launch_kernel(p.tuning.dependent(), scan, sgrid, kThreads, smem, s, p, rpb);
    if (e != cudaSuccess) return e;
    const PlainPrologue y{scratch + L.y, I};
    return launch_gemv<T>(y, GemvArgs{p.out_proj_t, p.out_proj_b, p.residual_out, I, H, H, 0, B}, p.tuning, s, sms);
}

}  // namespace
}  // namespace detail

namespace {

// The ABI struct as the kernels take it; false if a size does not fit their 32-bit ints (the
// shape check already refuses those).
bool kernel_params(const MambaLayerStepParams& a, const DecodeTuning& tuning, DecodeLayerParams* k) {
    for (size_t v : {a.batch, a.hidden, a.inner, a.dstate, a.dt_rank, a.width})
        if (v > 0x7fffffff) return false;
    detail::copy_common_params(a, tuning, k);
    k->inner = static_cast<int>(a.inner);
    k->dt_rank = static_cast<int>(a.dt_rank);
    k->x_proj_t = reinterpret_cast<const void*>(a.x_proj_weight);
    k->dt_proj_t = reinterpret_cast<const void*>(a.dt_proj_weight);
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
    if (!detail::common_params_ok(p) || p.inner <= 0 || p.dt_rank <= 0 || !p.x_proj_t || !p.dt_proj_t)
        return cudaErrorInvalidValue;
    return detail::with_elem_type(p.elem, [&](auto t) { return detail::launch_typed<decltype(t)>(p, stream); });
}

}  // namespace mambac::cuda