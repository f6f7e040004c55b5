// SelectiveScan's one-token kernel: seqlen 1, the decode step of a Mamba-1 general graph (every
// batch the fused decode layer does not take, batch 64 of BENCHMARKS.md included). The per-step
// kernel (selective_scan_step.cuh) reads a lane's states as strided 4-byte loads, one channel a
// lane group, and reads the channel's A [dstate] again for every batch row: at the 2.8b shape's
// batch 64 it streamed 2.1 TB/s of states (20 us a layer, CUPTI).
//
// Here a channel's dstate states are LN = dstate / 4 lanes' float4s (A's likewise), and a lane
// group takes one channel d of R batch rows: A, D and the delta bias are read once for the R
// rows, and all R rows' states are loaded before any arithmetic (16 R bytes in flight a thread).
// Groups are d-major, so a warp's state loads stay contiguous. Taken when dstate / 4 is a power
// of two up to 32 and the states and A are 16-byte aligned (else the per-step kernel).
#pragma once

#include <cstdint>

#include "selective_scan_impl.cuh"

namespace mambac::cuda::detail {

constexpr int kTokenThreads = 128;

inline bool scan_token_fits(const ScanArgs& a) {
    const auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
    const int ln = a.dstate / 4;
    return a.seqlen == 1 && a.dstate % 4 == 0 && ln >= 1 && ln <= 32 && (ln & (ln - 1)) == 0 && aligned(a.A) &&
           aligned(a.init) && aligned(a.final_state);
}

template <typename T, int LN, int R>
__global__ void __launch_bounds__(kTokenThreads) selective_scan_token_kernel(const ScanArgs a) {
    const long long group = (static_cast<long long>(blockIdx.x) * kTokenThreads + threadIdx.x) / LN;
    const int lane = threadIdx.x % LN;
    const int n0 = 4 * lane;  // this lane's states n0 .. n0 + 3
    const int Dm = a.dim;
    const long long bgroups = (static_cast<long long>(a.batch) + R - 1) / R;
    // Every lane stays to the end (the shuffles need all 32), rows past the end skip their
    // loads and stores.
    const bool live_group = group < bgroups * Dm;
    const int d = live_group ? static_cast<int>(group % Dm) : 0;
    const int b0 = live_group ? static_cast<int>(group / Dm) * R : a.batch;
    const float4 A4 = *reinterpret_cast<const float4*>(a.A + static_cast<size_t>(d) * 4 * LN + n0);
    const float A2[4] = {A4.x * kLog2e, A4.y * kLog2e, A4.z * kLog2e, A4.w * kLog2e};
    float4 h[R];
#pragma unroll
    for (int j = 0; j < R; ++j) {
        const size_t row = static_cast<size_t>(b0 + j) * Dm + d;
        h[j] = b0 + j < a.batch && a.init ? *reinterpret_cast<const float4*>(a.init + row * 4 * LN + n0)
                                          : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    const float Dv = a.D ? a.D[d] : 0.f;
    const float bias = a.delta_bias ? a.delta_bias[d] : 0.f;
    const size_t g = static_cast<size_t>(d / a.group_size);
    const T* u = static_cast<const T*>(a.u);
    const T* dl = static_cast<const T*>(a.delta);
    const T* z = static_cast<const T*>(a.z);
    T* y = static_cast<T*>(a.y);
#pragma unroll
    for (int j = 0; j < R; ++j) {
        const int b = b0 + j;
        const bool live = b < a.batch;
        const size_t at = static_cast<size_t>(live ? b : 0) * Dm + d;  // token b, channel d
        const float uv = to_f32(u[at]);
        float dt = to_f32(dl[at]) + bias;
        if (a.softplus) dt = softplus(dt);
        const size_t bc_row = static_cast<size_t>(live ? b : 0) * a.ngroups + g;
        const T* Bt = static_cast<const T*>(a.B) + bc_row * a.b_stride + n0;
        const T* Ct = static_cast<const T*>(a.C) + bc_row * a.c_stride + n0;
        const float du = dt * uv;
        float* hs = &h[j].x;
        float acc = 0.f;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            hs[k] = fmaf(ex2(dt * A2[k]), hs[k], du * to_f32(Bt[k]));
            acc = fmaf(to_f32(Ct[k]), hs[k], acc);
        }
#pragma unroll
        for (int off = LN / 2; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
        if (!live) continue;
        if (lane == 0) {
            float out = fmaf(Dv, uv, acc);
            if (z) out *= silu(to_f32(z[static_cast<size_t>(b) * a.z_stride + d]));
            y[at] = from_f32<T>(out);
        }
        if (a.final_state) *reinterpret_cast<float4*>(a.final_state + at * 4 * LN + n0) = h[j];
    }
}

// Batch rows a lane group takes: 4 where channels x batch fill the GPU anyway, else 1.
constexpr long long kTokenManyRows = 8192;

template <typename T, int LN>
cudaError_t launch_scan_token_rows(const ScanArgs& a, cudaStream_t stream) {
    const long long rows = static_cast<long long>(a.batch) * a.dim;
    const int R = rows >= kTokenManyRows && a.batch >= 4 ? 4 : 1;
    const long long threads = (static_cast<long long>(a.batch) + R - 1) / R * a.dim * LN;
    const long long blocks = (threads + kTokenThreads - 1) / kTokenThreads;
    if (blocks > 0x7fffffffLL) return cudaErrorInvalidValue;
    if (R == 4)
        selective_scan_token_kernel<T, LN, 4><<<static_cast<unsigned>(blocks), kTokenThreads, 0, stream>>>(a);
    else
        selective_scan_token_kernel<T, LN, 1><<<static_cast<unsigned>(blocks), kTokenThreads, 0, stream>>>(a);
    return cudaGetLastError();
}

// Queues the one-token kernel; the caller has checked scan_token_fits.
template <typename T>
cudaError_t launch_scan_token(const ScanArgs& a, cudaStream_t stream) {
    return with_lane_count(a.dstate / 4,
                           [&](auto ln) { return launch_scan_token_rows<T, decltype(ln)::value>(a, stream); });
}

}  // namespace mambac::cuda::detail
