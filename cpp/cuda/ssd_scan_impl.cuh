// SsdScan (docs/op-contract.md "SsdScan"): the step-by-step kernel, one template per element type
// (instantiated in ssd_scan_{f32,f16,bf16}.cu). Correctness first; cpp/cuda/README.md "SsdScan"
// says what the chunked tensor-core kernel would change.
//
// One row = one (batch, head, p) channel of head_dim; its dstate states are spread over LN
// consecutive lanes, KN each, in registers (state n = lane + LN k, so a warp's B, C and state
// loads are contiguous). Rows are (b, h, p)-major, so the rows of a block share a head and their
// dt, B and C loads hit the same addresses. Per step a lane computes the head's dt and its one
// decay exp(dt A) (the decay is a scalar per head, unlike SelectiveScan's per state), updates its
// states, and the y partial sums meet in a log2(LN)-step butterfly of shuffles. The next step's
// inputs are loaded before the current step's arithmetic, so a long scan waits on one load
// latency a step, not two. Every shape runs in this one launch, decode (seqlen 1) included.
#pragma once

#include <cstddef>

#include "abi.h"
#include "common.cuh"
#include "ssd_scan.h"

namespace mambac::cuda::detail {

constexpr int kSsdThreads = 128;

struct SsdArgs {
    const void* x;
    const void* dt;
    const void* B;
    const void* C;
    const float* A;
    const float* D;
    const float* dt_bias;
    const float* init;
    void* y;
    float* final_state;
    long long rows;  // batch * heads * head_dim
    size_t seqlen;
    int heads, head_dim, ngroups, dstate, heads_per_group;
    // Elements between consecutive tokens' dt, x, B and C rows: heads, heads * head_dim,
    // ngroups * dstate, or a packed tensor's row (docs/op-contract.md "Sliced inputs"). y is
    // always contiguous.
    size_t dt_stride, x_stride, b_stride, c_stride;
    bool softplus;
    float dt_min, dt_max;
};

// One step's inputs for one lane: x of its row, the head's raw dt, its B and C values.
template <typename T, int KN>
struct SsdStepIn {
    float x, dt, b[KN], c[KN];
};

template <typename T, int LN, int KN>
__device__ __forceinline__ void ssd_load(SsdStepIn<T, KN>& in, const SsdArgs& a, size_t tok, int h, int p, int g,
                                         int lane) {
    const T* __restrict__ x = static_cast<const T*>(a.x);
    const T* __restrict__ dt = static_cast<const T*>(a.dt);
    const T* __restrict__ Bm = static_cast<const T*>(a.B);
    const T* __restrict__ Cm = static_cast<const T*>(a.C);
    in.x = to_f32(x[tok * a.x_stride + static_cast<size_t>(h) * a.head_dim + p]);
    in.dt = to_f32(dt[tok * a.dt_stride + h]);
    const size_t group = static_cast<size_t>(g) * a.dstate;
    const T* __restrict__ bt = Bm + tok * a.b_stride + group;
    const T* __restrict__ ct = Cm + tok * a.c_stride + group;
#pragma unroll
    for (int k = 0; k < KN; ++k) {
        const int n = lane + LN * k;
        in.b[k] = n < a.dstate ? to_f32(bt[n]) : 0.f;
        in.c[k] = n < a.dstate ? to_f32(ct[n]) : 0.f;
    }
}

template <typename T, int LN, int KN>
__global__ void __launch_bounds__(kSsdThreads) ssd_scan_kernel(const SsdArgs a) {
    static_assert(LN >= 1 && LN <= 32 && (LN & (LN - 1)) == 0, "LN: a power of two within a warp");
    const long long row = (static_cast<long long>(blockIdx.x) * kSsdThreads + threadIdx.x) / LN;
    const int lane = threadIdx.x % LN;
    // Every lane stays to the end (the shuffles need the whole warp); rows past the end skip
    // their loads and stores only.
    const bool live = row < a.rows;
    const long long r = live ? row : 0;
    const int p = static_cast<int>(r % a.head_dim);
    const long long bh = r / a.head_dim;
    const int h = static_cast<int>(bh % a.heads);
    const size_t b = static_cast<size_t>(bh / a.heads);
    const int g = h / a.heads_per_group;
    const int N = a.dstate;
    const float A2 = a.A[h] * kLog2e;
    const float Dv = a.D ? a.D[h] : 0.f;
    const float bias = a.dt_bias ? a.dt_bias[h] : 0.f;
    const size_t state_at = (static_cast<size_t>(bh) * a.head_dim + p) * N;

    float s[KN];
#pragma unroll
    for (int k = 0; k < KN; ++k) {
        const int n = lane + LN * k;
        s[k] = live && a.init && n < N ? a.init[state_at + n] : 0.f;
    }
    T* __restrict__ y = static_cast<T*>(a.y);
    const size_t L = a.seqlen;
    SsdStepIn<T, KN> next{};
    if (live && L > 0) ssd_load<T, LN, KN>(next, a, b * L, h, p, g, lane);
    for (size_t t = 0; t < L; ++t) {
        const SsdStepIn<T, KN> in = next;
        if (live && t + 1 < L) ssd_load<T, LN, KN>(next, a, b * L + t + 1, h, p, g, lane);
        // As the reference: softplus (x past 20 kept), then the clamp; a NaN passes both tests.
        float dt = in.dt + bias;
        if (a.softplus) dt = softplus(dt);
        if (dt < a.dt_min) dt = a.dt_min;
        if (dt > a.dt_max) dt = a.dt_max;
        const float decay = ex2(dt * A2);
        const float dx = dt * in.x;
        float acc = 0.f;
#pragma unroll
        for (int k = 0; k < KN; ++k) {
            // States past dstate are skipped, not fed zeros: an infinite x would make their
            // 0 * inf a NaN in y where the equations give +-inf.
            if (lane + LN * k < N) {
                s[k] = fmaf(decay, s[k], dx * in.b[k]);
                acc = fmaf(in.c[k], s[k], acc);
            }
        }
#pragma unroll
        for (int off = LN / 2; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
        if (live && lane == 0) {
            // D is optional: an absent D adds nothing, not 0 * x (NaN for an infinite x).
            const float out = a.D ? fmaf(Dv, in.x, acc) : acc;
            y[((b * L + t) * a.heads + h) * a.head_dim + p] = from_f32<T>(out);
        }
    }
    if (live && a.final_state) {
#pragma unroll
        for (int k = 0; k < KN; ++k) {
            const int n = lane + LN * k;
            if (n < N) a.final_state[state_at + n] = s[k];
        }
    }
}

template <typename T, int LN, int KN>
cudaError_t launch_ssd(const SsdArgs& a, cudaStream_t stream) {
    const long long threads = a.rows * LN;
    const long long blocks = (threads + kSsdThreads - 1) / kSsdThreads;
    if (blocks > 0x7fffffffLL) return cudaErrorInvalidValue;
    ssd_scan_kernel<T, LN, KN><<<static_cast<unsigned>(blocks), kSsdThreads, 0, stream>>>(a);
    return cudaGetLastError();
}

template <typename T>
cudaError_t launch_ssd_chunked(const SsdArgs& a, const SsdPlan& plan, char* scratch, cudaStream_t stream);

// ssd_token_impl.cuh: cudaErrorNotSupported, nothing queued, where the one-token kernel does not apply.
template <typename T>
cudaError_t launch_ssd_token(const SsdArgs& a, cudaStream_t stream);

// Checks `p`, then queues the plan's path (ssd_scan.cu ssd_plan).
template <typename T>
cudaError_t launch_ssd_typed(const SsdScanParams& p, const SsdPlan& plan, cudaStream_t stream) {
    // No output element to write: nothing to launch, whatever the other sizes.
    if (p.batch == 0 || p.heads == 0 || p.head_dim == 0 || (p.seqlen == 0 && !p.final_state)) return cudaSuccess;
    if (p.dstate > kSsdMaxDstate || p.ngroups == 0 || p.heads % p.ngroups != 0) return cudaErrorInvalidValue;
    if (p.heads > 0x7fffffffull || p.head_dim > 0x7fffffffull || p.ngroups > 0x7fffffffull) return cudaErrorInvalidValue;
    // An empty sequence's tensors may have no buffer at all; only A and the states are read then,
    // and B and C are not read when dstate is 0.
    const bool steps = p.seqlen > 0;
    if (!p.a || (steps && (!p.x || !p.dt || !p.y || (p.dstate > 0 && (!p.b || !p.c))))) return cudaErrorInvalidValue;
    const unsigned long long rows = static_cast<unsigned long long>(p.batch) * p.heads * p.head_dim;
    if (p.batch > 0x7fffffffull || rows / p.heads / p.head_dim != p.batch || rows > (1ull << 40))
        return cudaErrorInvalidValue;
    SsdArgs a{};
    a.x = reinterpret_cast<const void*>(p.x);
    a.dt = reinterpret_cast<const void*>(p.dt);
    a.B = reinterpret_cast<const void*>(p.b);
    a.C = reinterpret_cast<const void*>(p.c);
    a.A = reinterpret_cast<const float*>(p.a);
    a.D = reinterpret_cast<const float*>(p.d);
    a.dt_bias = reinterpret_cast<const float*>(p.dt_bias);
    a.init = reinterpret_cast<const float*>(p.initial_state);
    a.y = reinterpret_cast<void*>(p.y);
    a.final_state = reinterpret_cast<float*>(p.final_state);
    a.rows = static_cast<long long>(rows);
    a.seqlen = p.seqlen;
    a.heads = static_cast<int>(p.heads);
    a.head_dim = static_cast<int>(p.head_dim);
    a.ngroups = static_cast<int>(p.ngroups);
    a.dstate = static_cast<int>(p.dstate);
    a.heads_per_group = a.heads / a.ngroups;
    // 0 from a caller that predates the strides: contiguous.
    a.dt_stride = p.dt_stride ? p.dt_stride : p.heads;
    a.x_stride = p.x_stride ? p.x_stride : p.heads * p.head_dim;
    a.b_stride = p.b_stride ? p.b_stride : p.ngroups * p.dstate;
    a.c_stride = p.c_stride ? p.c_stride : p.ngroups * p.dstate;
    a.softplus = p.dt_softplus;
    a.dt_min = p.dt_min;
    a.dt_max = p.dt_max;
    if (plan.chunked) return launch_ssd_chunked<T>(a, plan, reinterpret_cast<char*>(p.scratch), stream);
    if (plan.token) {
        const cudaError_t e = launch_ssd_token<T>(a, stream);
        if (e != cudaErrorNotSupported) return e;
    }
    // (LN lanes a row, KN states a lane): at most 4 states a lane up to dstate 128, so a row's
    // y needs a short shuffle tree and the registers stay few; a warp a row from dstate 128 on.
    const int N = a.dstate;
    if (N <= 8) return launch_ssd<T, 4, 2>(a, stream);
    if (N <= 16) return launch_ssd<T, 4, 4>(a, stream);
    if (N <= 32) return launch_ssd<T, 8, 4>(a, stream);
    if (N <= 64) return launch_ssd<T, 16, 4>(a, stream);
    if (N <= 128) return launch_ssd<T, 32, 4>(a, stream);
    if (N <= 256) return launch_ssd<T, 32, 8>(a, stream);
    return launch_ssd<T, 32, 16>(a, stream);
}

}  // namespace mambac::cuda::detail

// One explicit instantiation per element type, in its own translation unit.
#define MAMBAC_INSTANTIATE_SSD(T)                                                                 \
    namespace mambac::cuda::detail {                                                              \
    template cudaError_t launch_ssd_typed<T>(const SsdScanParams&, const SsdPlan&, cudaStream_t);  \
    }
