// Fused decode step of one Mamba-2 layer (mamba2_decode_layer.h): five kernels.
//
//   1. stats:    per batch row, 1 / rms(residual); residual_out = residual_in; zero the split-K
//                accumulators and the gated norm's sums (decode_gemv.cuh, as Mamba-1's)
//   2. in_proj:  proj += W_in^T . T(norm(residual) * w)      split-K GEMV, norm in the prologue
//   3. conv:     xBC' = T(silu(conv(state, T(xBC)))), one thread a (row, channel); writes
//                conv_state_out
//   4. scan:     dt = clamp(softplus(T(dt) + dt_bias)), the SSD step on 8 lanes a channel,
//                y = T(C . h + D x), g = y silu(T(z)) (or y with norm_before_gate); sums g^2
//                per (row, norm group) into the scratch with one atomic a block and group
//   5. out_proj: residual_out += W_out^T . T(g / rms_group(g) * w (* silu(T(z))))
//                split-K GEMV, the gated norm in the prologue
//
// The GEMVs are Mamba-1's (decode_gemv.cuh: split-K FMA kernels at small batch, tensor-core
// mma.sync ones from batch 4 for 16-bit weights). The conv is its own kernel rather than a GEMV
// prologue as in Mamba-1: every head of a group reads the group's B and C, so the whole conv
// must be done before any head's scan starts. The roundings to T sit where the unfused graph
// stores a T tensor (the CPU kernel's E::round), so both agree to T's precision.
#include <algorithm>
#include <cstdint>

#include "common.cuh"
#include "decode_gemv.cuh"
#include "mamba2_decode_layer.h"

namespace mambac::cuda {
namespace detail {
namespace {

// Where the float32 scratch lives (in floats from the start); what must start at zero comes
// first, so one range is zeroed.
struct Mamba2Scratch {
    size_t proj, ss, zero_end, stats, xbc, g, total;
};

__host__ __device__ inline Mamba2Scratch mamba2_scratch(const Mamba2DecodeParams& p) {
    Mamba2Scratch s{};
    const size_t B = p.batch;
    s.proj = 0;                                               // [B, in_dim] in_proj's outputs
    s.ss = align4(s.proj + B * p.in_dim);                     // [B, ngroups] sum of g^2
    s.zero_end = align4(s.ss + B * p.ngroups);
    s.stats = s.zero_end;                                     // [B] 1 / rms(residual)
    s.xbc = align4(s.stats + B);                              // [B, conv_dim] the conv's outputs
    s.g = align4(s.xbc + B * p.conv_dim);                     // [B, inner] the gated y
    s.total = align4(s.g + B * p.inner);
    return s;
}

// The conv step of every (row, channel) of xBC: window = the width - 1 stored inputs, then
// x = T(proj[row, inner + c]).
template <typename T>
__global__ void __launch_bounds__(kThreads) mamba2_conv_kernel(const Mamba2DecodeParams p) {
    // A dependent launch (common.cuh): it waits before its early return too.
    allow_dependent_grids();
    wait_for_prior_grids();
    const Mamba2Scratch L = mamba2_scratch(p);
    float* scratch = static_cast<float*>(p.scratch);
    const size_t j = size_t(blockIdx.x) * kThreads + threadIdx.x;
    if (j >= size_t(p.batch) * p.conv_dim) return;
    const size_t row = j / p.conv_dim;
    const int c = static_cast<int>(j % p.conv_dim);
    const int K1 = p.width - 1;
    const T* st = static_cast<const T*>(p.conv_state_in) + j * K1;
    const T* w = static_cast<const T*>(p.conv_w) + size_t(c) * p.width;
    const T xk = from_f32<T>(scratch[L.proj + row * p.in_dim + p.inner + c]);
    float acc = p.conv_b ? to_f32(static_cast<const T*>(p.conv_b)[c]) : 0.f;
    for (int q = 0; q < K1; ++q) acc = fmaf(to_f32(w[q]), to_f32(st[q]), acc);
    acc = fmaf(to_f32(w[K1]), to_f32(xk), acc);
    scratch[L.xbc + j] = round_t<T>(silu(acc));
    if (K1 > 0) {
        T* so = static_cast<T*>(p.conv_state_out) + j * K1;
        for (int q = 0; q + 1 < K1; ++q) so[q] = st[q + 1];
        so[K1 - 1] = xk;
    }
}

// The SSD step for 32 channels (head, p) of one batch row: 8 lanes a channel (states l, l + 8,
// ...), y summed by three shuffles. The lane's NPL states are loaded before dt is known, so the
// loads overlap its arithmetic; NPL = 0 loops over any dstate instead. Channel d is head
// d / head_dim, which reads group head / (heads / ngroups)'s B and C (the same few values for
// every channel of a block, so L1 serves them).
constexpr int kScanCh = 32;
constexpr int kScanLanes = kThreads / kScanCh;  // 8

template <typename T, int NPL>
__global__ void __launch_bounds__(kThreads) mamba2_scan_kernel(const Mamba2DecodeParams p) {
    __shared__ float sq[kScanCh];
    // A dependent launch (common.cuh): the states and activations it reads are written by the
    // kernels before (the states by the previous step's).
    allow_dependent_grids();
    wait_for_prior_grids();
    const Mamba2Scratch L = mamba2_scratch(p);
    float* scratch = static_cast<float*>(p.scratch);
    const int I = p.inner, N = p.dstate;
    const int c = threadIdx.x / kScanLanes, l = threadIdx.x % kScanLanes;
    const int d = blockIdx.x * kScanCh + c;
    const bool live = d < I;
    const size_t b = blockIdx.y;
    const size_t s0 = (b * I + (live ? d : 0)) * N;
    float h0[NPL > 0 ? NPL : 1];
    if (live) {
#pragma unroll
        for (int q = 0; q < NPL; ++q) {
            const int n = l + kScanLanes * q;
            h0[q] = n < N ? p.ssm_state_in[s0 + n] : 0.f;
        }
    }
    const int h = live ? d / p.head_dim : 0;
    const int grp = h / (p.heads / p.ngroups);
    const float* proj = scratch + L.proj + b * p.in_dim;
    const float* xbc = scratch + L.xbc + b * p.conv_dim;
    const float* Bg = xbc + I + size_t(grp) * N;
    const float* Cg = xbc + I + size_t(p.ngroups) * N + size_t(grp) * N;
    float acc = 0.f, x = 0.f;
    if (live) {
        x = xbc[d];
        float dt = round_t<T>(proj[I + p.conv_dim + h]) + (p.dt_bias ? p.dt_bias[h] : 0.f);
        // As SsdScan and the CPU kernel: a NaN passes both comparisons and stays NaN.
        dt = softplus(dt);
        if (dt < p.dt_min) dt = p.dt_min;
        if (dt > p.dt_max) dt = p.dt_max;
        const float decay = ex2(dt * p.A[h] * kLog2e);
        const float dx = dt * x;
        if constexpr (NPL > 0) {
            // B and C are read before the first state store: the compiler cannot move a load
            // above a store it cannot prove apart, and one at a time each costs a round trip
            // (the kernel took 11.9 us at mamba2-2.7b's batch 1, ~2.6 MB of states).
            float bn[NPL], cn[NPL];
#pragma unroll
            for (int q = 0; q < NPL; ++q) {
                const int n = l + kScanLanes * q;
                bn[q] = n < N ? Bg[n] : 0.f;
                cn[q] = n < N ? Cg[n] : 0.f;
            }
#pragma unroll
            for (int q = 0; q < NPL; ++q) {
                const int n = l + kScanLanes * q;
                if (n < N) {
                    const float hn = fmaf(decay, h0[q], dx * bn[q]);
                    p.ssm_state_out[s0 + n] = hn;
                    acc = fmaf(cn[q], hn, acc);
                }
            }
        } else {
            for (int n = l; n < N; n += kScanLanes) {
                const float hn = fmaf(decay, p.ssm_state_in[s0 + n], dx * Bg[n]);
                p.ssm_state_out[s0 + n] = hn;
                acc = fmaf(Cg[n], hn, acc);
            }
        }
    }
#pragma unroll
    for (int m = 1; m < kScanLanes; m *= 2) acc += __shfl_xor_sync(0xffffffffu, acc, m);
    if (l == 0) {
        float g = 0.f;
        if (live) {
            const float y = round_t<T>(p.D ? fmaf(p.D[h], x, acc) : acc);
            // The unfused graph casts y and z up to float32 for the gated norm.
            g = p.norm_before_gate ? y : y * silu(round_t<T>(proj[d]));
            scratch[L.g + b * I + d] = g;
        }
        sq[c] = g * g;
    }
    __syncthreads();
    // One atomic per norm group the block's channels touch (groups are inner / ngroups >= 1
    // channels, so a block's 32 channels may span several).
    if (threadIdx.x == 0) {
        const int gs = I / p.ngroups;
        float* ss = scratch + L.ss + b * p.ngroups;
        const int d0 = blockIdx.x * kScanCh;
        float run = 0.f;
        for (int i = 0; i < kScanCh && d0 + i < I; ++i) {
            run += sq[i];
            const int dn = d0 + i + 1;
            if (dn == I || i + 1 == kScanCh || dn / gs != (d0 + i) / gs) {
                atomicAdd(ss + (d0 + i) / gs, run);
                run = 0.f;
            }
        }
    }
}

// out_proj's prologue, the gated RMSNorm: x[b][k] = T(g * inv * w[k]) (norm_before_gate 0,
// g = y silu(z) already) or T(g * inv * w[k] * silu(T(z))) (1, g = y), with inv =
// 1 / sqrt(sum of g^2 over k's group / group size + eps).
struct GatedNormPrologue {
    const float* g;     // [B, inner]
    const float* z;     // [B, ldz], z in columns 0..inner
    const float* ss;    // [B, ngroups]
    const float* w;     // [inner]
    int inner, ldz, ngroups;
    float eps;
    bool norm_before_gate;
    template <typename T, int BB, typename X, int LD>
    __device__ __forceinline__ void fill(X (*xs)[LD], int b0, int nb, int k0, int kt, bool) const {
        const int gs = inner / ngroups;
        for (int i = threadIdx.x; i < kt; i += kThreads) {
            const int k = k0 + i, grp = k / gs;
            const float wk = w[k];
#pragma unroll
            for (int b = 0; b < BB; ++b) {
                float v = 0.f;
                if (b < nb) {
                    const size_t row = size_t(b0 + b);
                    const float inv = 1.f / sqrtf(ss[row * ngroups + grp] / gs + eps);
                    v = g[row * inner + k] * inv * wk;
                    if (norm_before_gate) v *= silu(round_t<T>(z[row * ldz + k]));
                    v = round_t<T>(v);
                }
                xs[b][i] = from_f32<X>(v);
            }
        }
    }
};

template <typename T>
cudaError_t launch_typed(const Mamba2DecodeParams& p, cudaStream_t s) {
    int dev = 0, sms = 132;
    if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    const Mamba2Scratch L = mamba2_scratch(p);
    float* scratch = static_cast<float*>(p.scratch);
    const int B = p.batch, H = p.hidden, I = p.inner;
    // Checked before anything is queued, so a refused call writes nothing.
    if ((size_t(B) * p.conv_dim + kThreads - 1) / kThreads > 0x7fffffff) return cudaErrorInvalidValue;

    const StatsArgs stats{p.residual_in, p.residual_out, scratch + L.stats, scratch, L.zero_end, H, p.eps};
    cudaError_t e = launch_stats(stats, B, p.tuning, s);
    if (e != cudaSuccess) return e;
    const NormPrologue norm{p.residual_in, scratch + L.stats, p.norm_w, H};
    e = launch_gemv<T>(norm, GemvArgs{p.in_proj_t, p.in_proj_b, scratch + L.proj, H, p.in_dim, p.in_dim, 0, B},
                       p.tuning, s, sms);
    if (e != cudaSuccess) return e;
    const size_t conv_blocks = (size_t(B) * p.conv_dim + kThreads - 1) / kThreads;
    const bool dep = p.tuning.dependent();
    e = launch_kernel(dep, mamba2_conv_kernel<T>, unsigned(conv_blocks), kThreads, 0, s, p);
    if (e != cudaSuccess) return e;
    const dim3 sgrid((I + kScanCh - 1) / kScanCh, B);
    const auto scan = p.dstate <= 16    ? mamba2_scan_kernel<T, 2>
                      : p.dstate <= 32  ? mamba2_scan_kernel<T, 4>
                      : p.dstate <= 64  ? mamba2_scan_kernel<T, 8>
                      : p.dstate <= 128 ? mamba2_scan_kernel<T, 16>
                                        : mamba2_scan_kernel<T, 0>;
    e = launch_kernel(dep, scan, sgrid, kThreads, 0, s, p);
    if (e != cudaSuccess) return e;
    const GatedNormPrologue gated{scratch + L.g, scratch + L.proj, scratch + L.ss, p.gate_norm_w, I, p.in_dim,
                                  p.ngroups, p.eps, p.norm_before_gate};
    return launch_gemv<T>(gated, GemvArgs{p.out_proj_t, p.out_proj_b, p.residual_out, I, H, H, 0, B}, p.tuning, s,
                          sms);
}

}  // namespace
}  // namespace detail

namespace {

// The ABI struct as the kernels take it; false if a size does not fit their 32-bit ints (the
// shape check refuses those it can see; in_dim is a sum of three).
bool kernel_params(const Mamba2LayerStepParams& a, const DecodeTuning& tuning, Mamba2DecodeParams* k) {
    for (size_t v : {a.batch, a.hidden, a.heads, a.head_dim, a.ngroups, a.dstate, a.width})
        if (v > 0x7fffffff) return false;
    const size_t inner = a.heads * a.head_dim, conv_dim = inner + 2 * a.ngroups * a.dstate;
    const size_t in_dim = inner + conv_dim + a.heads;
    if (in_dim > 0x7fffffff || a.ngroups == 0 || a.heads % a.ngroups != 0) return false;
    detail::copy_common_params(a, tuning, k);
    k->heads = static_cast<int>(a.heads);
    k->head_dim = static_cast<int>(a.head_dim);
    k->ngroups = static_cast<int>(a.ngroups);
    k->inner = static_cast<int>(inner);
    k->conv_dim = static_cast<int>(conv_dim);
    k->in_dim = static_cast<int>(in_dim);
    k->dt_min = a.dt_min;
    k->dt_max = a.dt_max;
    k->norm_before_gate = a.norm_before_gate;
    k->gate_norm_w = reinterpret_cast<const float*>(a.gate_norm_weight);
    return true;
}

}  // namespace

size_t mamba2_decode_layer_scratch_bytes(const Mamba2LayerStepParams& a) {
    Mamba2DecodeParams p{};
    if (!kernel_params(a, DecodeTuning{}, &p) || p.batch <= 0 || p.inner <= 0) return 0;
    return detail::mamba2_scratch(p).total * sizeof(float);
}

cudaError_t mamba2_decode_layer(const Mamba2LayerStepParams& a, cudaStream_t stream, const DecodeTuning& tuning) {
    Mamba2DecodeParams p{};
    if (!kernel_params(a, tuning, &p)) return cudaErrorInvalidValue;
    if (p.batch == 0) return cudaSuccess;
    if (!detail::common_params_ok(p) || p.inner <= 0 || !p.gate_norm_w) return cudaErrorInvalidValue;
    return detail::with_elem_type(p.elem, [&](auto t) { return detail::launch_typed<decltype(t)>(p, stream); });
}

}  // namespace mambac::cuda
