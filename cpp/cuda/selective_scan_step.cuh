// SelectiveScan, per-step kernel: the decode path (seqlen 1, one token a sequence), as mamba's
// selective_state_update. Included by selective_scan_launch.cuh; shares ScanArgs and the helpers.
//
// The tiled kernels stage tiles of steps through shared memory and split the sequence over
// warps; for one step all of that is set-up with nothing to amortise it (4.5-5 us a launch
// for 5120 x 16 states of work at batch 1, dim 5120: the largest non-GEMM kernel of a 2.8b decode
// step). Here a channel's states sit on 4 consecutive lanes (states l, l + 4, ...), each lane
// reads its states, u, delta, z and the group's B and C straight from global memory (they are
// read once), and the y partial sums meet in a two-step shuffle. Steps are walked in order, so
// the kernel is correct for any seqlen; the launcher uses it where the tiled kernels lose
// (scan_step_wins).
#pragma once

#include "selective_scan_impl.cuh"

namespace mambac::cuda::detail {

constexpr int kStepLanes = 4;     // lanes per channel
constexpr int kStepThreads = 128; // 32 channels a block
constexpr int kStepMaxN = 256;    // dstate limit of the op; states a lane: dstate / 4

// Whether the per-step kernel beats the tiled ones, from CUDA-graph replays on the H200
// (tools/gpu/bench_kernels.py, decode section; fp16, dim 5120): batch 1 seqlen 1 2.4 vs 4.5 us,
// seqlen 2 3.4 vs 4.6, seqlen 4 5.1 vs 4.7 (loses); batch 8 seqlen 1 3.9 vs 9.3, seqlen 4 6.6
// vs 9.4. The steps run in order, so more steps only pay where rows are many.
inline bool scan_step_wins(long long rows, int seqlen) {
    return seqlen >= 1 && (seqlen <= 2 || (seqlen <= 4 && rows >= 8LL * 4096));
}

template <typename T, int KN>
__global__ void __launch_bounds__(kStepThreads) selective_scan_step_kernel(const ScanArgs a) {
    const long long row = (static_cast<long long>(blockIdx.x) * kStepThreads + threadIdx.x) / kStepLanes;
    const int lane = threadIdx.x % kStepLanes;
    // Every lane of a channel group stays to the end (the shuffles need all 32 lanes), so rows
    // past the end only skip their loads and stores.
    const bool live = row < static_cast<long long>(a.batch) * a.dim;
    const int b = live ? static_cast<int>(row / a.dim) : 0;
    const int d = live ? static_cast<int>(row % a.dim) : 0;
    const int N = a.dstate, L = a.seqlen, Dm = a.dim;
    const int g = d / a.group_size;
    const float* A = a.A + static_cast<size_t>(d) * N;

    // States l, l + 4, ..., up to KN of them; k-th state of this lane is n = lane + 4 k.
    float h[KN], A2[KN];
#pragma unroll
    for (int k = 0; k < KN; ++k) {
        const int n = lane + kStepLanes * k;
        const bool in = live && n < N;
        A2[k] = in ? A[n] * kLog2e : 0.f;
        h[k] = in && a.init ? a.init[(static_cast<size_t>(b) * Dm + d) * N + n] : 0.f;
    }
    const float Dv = a.D && live ? a.D[d] : 0.f;
    const float bias = a.delta_bias && live ? a.delta_bias[d] : 0.f;
    const T* u = static_cast<const T*>(a.u);
    const T* dl = static_cast<const T*>(a.delta);
    const T* z = static_cast<const T*>(a.z);
    const T* Bm = static_cast<const T*>(a.B);
    const T* Cm = static_cast<const T*>(a.C);
    T* y = static_cast<T*>(a.y);

    for (int t = 0; t < L; ++t) {
        const size_t tok = static_cast<size_t>(b) * L + t;
        const size_t at = tok * Dm + d;
        float uv = 0.f, dt = 0.f;
        if (live) {
            uv = to_f32(u[at]);
            dt = to_f32(dl[at]) + bias;
            if (a.softplus) dt = softplus(dt);
        }
        const size_t bc_row = tok * a.ngroups + g;
        const T* Bt = Bm + bc_row * a.b_stride;
        const T* Ct = Cm + bc_row * a.c_stride;
        const float du = dt * uv;
        float acc = 0.f;
#pragma unroll
        for (int k = 0; k < KN; ++k) {
            const int n = lane + kStepLanes * k;
            if (live && n < N) {
                h[k] = fmaf(ex2(dt * A2[k]), h[k], du * to_f32(Bt[n]));
                acc = fmaf(to_f32(Ct[n]), h[k], acc);
            }
        }
        acc += __shfl_xor_sync(0xffffffffu, acc, 1);
        acc += __shfl_xor_sync(0xffffffffu, acc, 2);
        if (live && lane == 0) {
            float out = fmaf(Dv, uv, acc);
            if (z) out *= silu(to_f32(z[tok * a.z_stride + d]));
            y[at] = from_f32<T>(out);
        }
    }
    if (live && a.final_state) {
#pragma unroll
        for (int k = 0; k < KN; ++k) {
            const int n = lane + kStepLanes * k;
            if (n < N) a.final_state[(static_cast<size_t>(b) * Dm + d) * N + n] = h[k];
        }
    }
}

template <typename T>
cudaError_t launch_scan_step(const ScanArgs& a, cudaStream_t stream) {
    const long long threads = static_cast<long long>(a.batch) * a.dim * kStepLanes;
    const long long blocks = (threads + kStepThreads - 1) / kStepThreads;
    if (blocks > 0x7fffffffLL) return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned>(blocks));
    // States a lane, rounded up to an instantiated count (registers: 2 per state).
    const int kn = (a.dstate + kStepLanes - 1) / kStepLanes;
    if (kn <= 1) selective_scan_step_kernel<T, 1><<<grid, kStepThreads, 0, stream>>>(a);
    else if (kn <= 2) selective_scan_step_kernel<T, 2><<<grid, kStepThreads, 0, stream>>>(a);
    else if (kn <= 4) selective_scan_step_kernel<T, 4><<<grid, kStepThreads, 0, stream>>>(a);
    else if (kn <= 8) selective_scan_step_kernel<T, 8><<<grid, kStepThreads, 0, stream>>>(a);
    else if (kn <= 16) selective_scan_step_kernel<T, 16><<<grid, kStepThreads, 0, stream>>>(a);
    else if (kn <= 32) selective_scan_step_kernel<T, 32><<<grid, kStepThreads, 0, stream>>>(a);
    else if (kn <= kStepMaxN / kStepLanes) selective_scan_step_kernel<T, 64><<<grid, kStepThreads, 0, stream>>>(a);
    else return cudaErrorInvalidValue;
    return cudaGetLastError();
}

}  // namespace mambac::cuda::detail
