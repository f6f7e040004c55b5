// SsdScan's one-token kernel: seqlen 1, what every decode step of a Mamba-2 general graph runs
// (the stateful export's SsdScan at one token a sequence). The step kernel (ssd_scan_impl.cuh)
// does it too, but reads each lane's four states as four strided 4-byte loads and holds one row a
// lane group: at mamba2-2.7b's batch 64 (336 MB of float32 states read and written a layer) it
// streamed 1.9 TB/s, 176 us a layer of a 222 us step (CUPTI, BENCHMARKS.md "GPU end to end").
//
// Here a row's dstate states are LN = dstate / 4 lanes' float4s, and a lane group does R rows,
// all R rows' states loaded before any arithmetic: 16 R bytes in flight a thread instead of 16
// in four requests. Rows are (b, h, p)-major, so a group's rows share a head's dt, B and C but
// where a row group crosses a head. Taken when dstate / 4 is a power of two up to 32 and the
// states are 16-byte aligned (launch_ssd_typed checks; else the step kernel runs).
#pragma once

#include <cstdint>

#include "ssd_scan_impl.cuh"

namespace mambac::cuda::detail {

// Whether the one-token kernel takes `dstate`: a float4 a lane, a power-of-two lane count.
inline bool ssd_token_dstate_fits(size_t dstate) {
    const size_t ln = dstate / 4;
    return dstate % 4 == 0 && ln >= 1 && ln <= 32 && (ln & (ln - 1)) == 0;
}

template <typename T, int LN, int R>
__global__ void __launch_bounds__(kSsdThreads) ssd_token_kernel(const SsdArgs a) {
    const long long group = (static_cast<long long>(blockIdx.x) * kSsdThreads + threadIdx.x) / LN;
    const int lane = threadIdx.x % LN;
    const int n0 = 4 * lane;  // this lane's states n0 .. n0 + 3
    const long long row0 = group * R;
    float4 s[R];
#pragma unroll
    for (int j = 0; j < R; ++j) {
        const long long row = row0 + j;
        s[j] = row < a.rows && a.init ? *reinterpret_cast<const float4*>(a.init + row * 4 * LN + n0)
                                      : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    const T* __restrict__ x = static_cast<const T*>(a.x);
    const T* __restrict__ dt = static_cast<const T*>(a.dt);
    const T* __restrict__ Bm = static_cast<const T*>(a.B);
    const T* __restrict__ Cm = static_cast<const T*>(a.C);
    T* __restrict__ y = static_cast<T*>(a.y);
#pragma unroll
    for (int j = 0; j < R; ++j) {
        const long long row = row0 + j;
        const bool live = row < a.rows;
        const long long r = live ? row : 0;
        const int p = static_cast<int>(r % a.head_dim);
        const long long bh = r / a.head_dim;
        const int h = static_cast<int>(bh % a.heads);
        const size_t b = static_cast<size_t>(bh / a.heads);  // the token: seqlen is 1
        const size_t g = static_cast<size_t>(h / a.heads_per_group) * a.dstate + n0;
        const float xv = to_f32(x[b * a.x_stride + static_cast<size_t>(h) * a.head_dim + p]);
        // As the step kernel: softplus, then the clamp; a NaN passes both tests.
        float d = to_f32(dt[b * a.dt_stride + h]) + (a.dt_bias ? a.dt_bias[h] : 0.f);
        if (a.softplus) d = softplus(d);
        if (d < a.dt_min) d = a.dt_min;
        if (d > a.dt_max) d = a.dt_max;
        const float decay = ex2(d * a.A[h] * kLog2e);
        const float dx = d * xv;
        const T* bt = Bm + b * a.b_stride + g;
        const T* ct = Cm + b * a.c_stride + g;
        float* st = &s[j].x;
        float acc = 0.f;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            st[k] = fmaf(decay, st[k], dx * to_f32(bt[k]));
            acc = fmaf(to_f32(ct[k]), st[k], acc);
        }
#pragma unroll
        for (int off = LN / 2; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
        if (!live) continue;
        if (lane == 0) y[row] = from_f32<T>(a.D ? fmaf(a.D[h], xv, acc) : acc);  // y[b, 0, h, p]
        if (a.final_state) *reinterpret_cast<float4*>(a.final_state + row * 4 * LN + n0) = s[j];
    }
}

// Rows a lane group takes: 4 where there are rows enough to fill the GPU anyway, else 1 (a
// small batch wants every row on its own lanes).
constexpr long long kSsdTokenManyRows = 8192;

template <typename T, int LN>
cudaError_t launch_ssd_token_rows(const SsdArgs& a, cudaStream_t stream) {
    const int R = a.rows >= kSsdTokenManyRows ? 4 : 1;
    const long long threads = (a.rows + R - 1) / R * LN;
    const long long blocks = (threads + kSsdThreads - 1) / kSsdThreads;
    if (blocks > 0x7fffffffLL) return cudaErrorInvalidValue;
    if (R == 4)
        ssd_token_kernel<T, LN, 4><<<static_cast<unsigned>(blocks), kSsdThreads, 0, stream>>>(a);
    else
        ssd_token_kernel<T, LN, 1><<<static_cast<unsigned>(blocks), kSsdThreads, 0, stream>>>(a);
    return cudaGetLastError();
}

// Queues the one-token kernel, or returns cudaErrorNotSupported (nothing queued) where it does
// not apply: another seqlen or dstate, or states off a 16-byte boundary.
template <typename T>
cudaError_t launch_ssd_token(const SsdArgs& a, cudaStream_t stream) {
    const auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
    if (a.seqlen != 1 || !ssd_token_dstate_fits(a.dstate) || !aligned(a.init) || !aligned(a.final_state))
        return cudaErrorNotSupported;
    return with_lane_count(a.dstate / 4,
                           [&](auto ln) { return launch_ssd_token_rows<T, decltype(ln)::value>(a, stream); });
}

}  // namespace mambac::cuda::detail
