// Host side of SelectiveScan: picks the work split for a shape and launches the matching
// instantiation of selective_scan_kernel. Included by the per-dtype selective_scan_*.cu files.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "abi.h"
#include "selective_scan.h"
#include "selective_scan_impl.cuh"
#include "selective_scan_step.cuh"
#include "selective_scan_token.cuh"
#include "selective_scan_ws.cuh"

namespace mambac::cuda::detail {

struct DeviceInfo {
    int sms = 132;
    int max_smem = 227 * 1024;
};

inline DeviceInfo device_info() {
    // Read once per device; the values cannot change while the process runs. Two sessions may
    // launch at once from different threads, so the cache is atomic: a racing first read stores
    // the same values twice, and 0 (never a real count) means "not read yet".
    static std::atomic<int> sms[64];
    static std::atomic<int> max_smem[64];
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return DeviceInfo{};
    DeviceInfo info;
    const int known_sms = sms[dev].load(std::memory_order_acquire);
    if (known_sms > 0) {
        info.sms = known_sms;
        info.max_smem = max_smem[dev].load(std::memory_order_relaxed);
        return info;
    }
    if (cudaDeviceGetAttribute(&info.sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&info.max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess ||
        info.sms <= 0) {
        return DeviceInfo{};
    }
    max_smem[dev].store(info.max_smem, std::memory_order_relaxed);
    sms[dev].store(info.sms, std::memory_order_release);
    return info;
}

template <typename T, int KN, int LANES, int S, bool SPLIT, bool VEC, int CPT = 1>
cudaError_t launch_instance(ScanArgs a, cudaStream_t stream, const DeviceInfo& dev) {
    using K = ScanKernel<T, KN, LANES, S, SPLIT, VEC, CPT>;
    const int w = SPLIT ? a.w : 1;
    a.w = w;
    if (a.ch % CPT != 0 || (CPT > 1 && a.group_size % CPT != 0)) return cudaErrorInvalidValue;
    const int group = a.ch / CPT * LANES;
    const int threads = group * w;
    if (threads > K::kMaxThreads || group % 32 != 0) return cudaErrorInvalidValue;
    const ScanSmem lay = K::layout(a.ch, w, a.ngbm, a.dstate);
    if (lay.total > dev.max_smem) return cudaErrorInvalidValue;
    auto kernel = selective_scan_kernel<T, KN, LANES, S, SPLIT, VEC, CPT>;
    if (lay.total > 48 * 1024) {
        const cudaError_t e =
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, lay.total);
        if (e != cudaSuccess) return e;
    }
    const long long grid = static_cast<long long>(a.batch) * a.ncg;
    if (grid > 0x7fffffffLL) return cudaErrorInvalidValue;
    kernel<<<static_cast<unsigned>(grid), threads, lay.total, stream>>>(a);
    return cudaGetLastError();
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Most groups that one block of `ch` channels starting at a multiple of `ch` can span.
inline int max_groups_spanned(int dim, int gs, int ch, int ngroups) {
    int m = 1;
    for (int d0 = 0; d0 < dim; d0 += ch) {
        const int last = std::min(d0 + ch, dim) - 1;
        m = std::max(m, std::min(ngroups, last / gs + 1) - d0 / gs);
    }
    return m;
}

// Dispatch on (KN, LANES) for a given element type. S_SPLIT / S_ALT: steps per sub-chunk of the
// split instantiations (0 = none); WITH_CPT2: whether the two-channels-per-thread variants exist.
template <typename T, int KN, int LANES, int S_SPLIT, int S_ALT = 0, bool WITH_CPT2 = false>
cudaError_t launch_lanes(ScanArgs a, cudaStream_t stream, const DeviceInfo& dev, bool vec,
                         const mambac::cuda::ScanConfig& cfg) {
    vec = vec && a.dstate == KN * LANES;  // the vector path has no padded states
    const long long rows = static_cast<long long>(a.batch) * a.dim;
    const bool can_split = vec && S_SPLIT > 0;
    int cpt = cfg.cpt > 0 ? cfg.cpt : 1;

    if (cpt == 2 && !(WITH_CPT2 && vec)) return cudaErrorInvalidValue;
    if (cpt != 1 && cpt != 2) return cudaErrorInvalidValue;
    // Channel quantum: whole warps per group, 16-byte rows.
    int chq = std::max(8, 32 * cpt / LANES);
    int thread_cap = cpt == 1 ? 640 : 384;
    int w = 1, ch = 0;
    if (cfg.w > 0) {
        w = cfg.w;
    } else if (can_split && rows * LANES / cpt < static_cast<long long>(dev.sms) * thread_cap * 3 / 4) {
        // Too few (channel, lane) threads to fill the GPU: split each tile's steps over W groups.
        const long long need = (static_cast<long long>(dev.sms) * thread_cap * 3 / 4 + rows * LANES / cpt - 1) / (rows * LANES / cpt);
        w = static_cast<int>(std::min<long long>(8, std::max<long long>(2, need)));
    }
    if (w > 1 && !can_split) return cudaErrorInvalidValue;
    // Two channels a thread halve the shared-memory traffic per state but need twice the
    // registers: a win where the rows alone fill the GPU (no split), a loss in the split scan,
    // whose decays already fill the register file (measured: cpp/cuda/README.md, "Tried and rejected").
    if (cfg.cpt == 0 && WITH_CPT2 && vec && w == 1 && a.group_size % 2 == 0) {
        cpt = 2;
        chq = std::max(8, 32 * cpt / LANES);
        thread_cap = 384;
    }
    const int max_threads = w > 1 ? thread_cap : (cpt == 1 ? 256 : 128);
    const int ch_cap = std::max(chq, (max_threads * cpt / (LANES * w)) / chq * chq);
    if (cfg.ch > 0) {
        ch = cfg.ch;
        if (ch % chq != 0) return cudaErrorInvalidValue;
    } else if (w > 1) {
        // One block per multiprocessor when the channels allow: the least work on the busiest one.
        const long long per_sm = (rows + dev.sms - 1) / dev.sms;
        ch = static_cast<int>(std::min<long long>(ch_cap, (per_sm + chq - 1) / chq * chq));
        // More, smaller blocks when they still fit side by side (one wave).
        while (cfg.w == 0 && ch > chq) {
            const int smaller = (ch - chq) / cpt * LANES * w;
            const long long blocks = static_cast<long long>(a.batch) * ((a.dim + ch - chq - 1) / (ch - chq));
            if (blocks > static_cast<long long>(dev.sms) * (thread_cap / smaller)) break;
            ch -= chq;
            if (static_cast<long long>(a.batch) * ((a.dim + ch - 1) / ch) >= dev.sms) break;
        }
        if (cfg.w == 0) {
            const int group = ch / cpt * LANES;
            while (w > 2 && group * w > max_threads) --w;
            while (w < 8 && group * (w + 1) <= max_threads) ++w;
        }
    } else {
        ch = std::max(chq, ((cpt == 1 ? 128 : 64) * cpt / LANES) / chq * chq);
    }
    ch = std::max(ch, chq);
    for (;;) {
        a.ch = ch;
        a.ncg = (a.dim + ch - 1) / ch;
        a.ngbm = max_groups_spanned(a.dim, a.group_size, ch, a.ngroups);
        a.w = w;
        const int lay = (w > 1) ? ScanKernel<T, KN, LANES, (S_SPLIT > 0 ? S_SPLIT : 16), true, true>::layout(ch, w, a.ngbm, a.dstate).total
                                : ScanKernel<T, KN, LANES, 16, false, true>::layout(ch, 1, a.ngbm, a.dstate).total;
        if (lay <= dev.max_smem) break;
        if (ch > chq && cfg.ch == 0) {
            ch -= chq;
        } else if (w > 2 && cfg.w == 0) {
            --w;  // many small groups: B and C rows take the room
        } else {
            break;  // launch_instance reports it
        }
    }
    if (w > 1) {
        if constexpr (S_SPLIT > 0) {
            if (cpt == 2) {
                if constexpr (WITH_CPT2) {
                    if (cfg.s == 8) return launch_instance<T, KN, LANES, 8, true, true, 2>(a, stream, dev);
                    if (cfg.s == 0 || cfg.s == 12) return launch_instance<T, KN, LANES, 12, true, true, 2>(a, stream, dev);
                }
                return cudaErrorInvalidValue;
            }
            if constexpr (S_ALT > 0) {
                if (cfg.s == S_ALT) return launch_instance<T, KN, LANES, S_ALT, true, true>(a, stream, dev);
            }
            if (cfg.s == 0 || cfg.s == S_SPLIT)
                return launch_instance<T, KN, LANES, S_SPLIT, true, true>(a, stream, dev);
        }
        return cudaErrorInvalidValue;
    }
    if (cpt == 2) {
        if constexpr (WITH_CPT2) return launch_instance<T, KN, LANES, 16, false, true, 2>(a, stream, dev);
        return cudaErrorInvalidValue;
    }
    if (vec) return launch_instance<T, KN, LANES, 16, false, true>(a, stream, dev);
    return launch_instance<T, KN, LANES, 16, false, false>(a, stream, dev);
}

template <typename T>
cudaError_t launch_scan_typed(const SelectiveScanParams& p, cudaStream_t stream,
                              const mambac::cuda::ScanConfig& cfg) {
    // No output elements, or no steps and no final state: nothing to launch, whatever the other
    // sizes (a batch past the grid's reach included).
    if (p.batch == 0 || p.dim == 0 || (p.seqlen == 0 && !p.final_state)) return cudaSuccess;
    if (p.dstate == 0 || p.dstate > 256 || p.ngroups == 0 || p.dim % p.ngroups != 0)
        return cudaErrorInvalidValue;
    if (p.seqlen > 0x7fffffffull || p.dim > 0x7fffffffull || p.batch > 0x7fffffffull)
        return cudaErrorInvalidValue;
    ScanArgs a{};
    a.u = reinterpret_cast<const void*>(p.u);
    a.delta = reinterpret_cast<const void*>(p.delta);
    a.z = reinterpret_cast<const void*>(p.z);
    a.B = reinterpret_cast<const void*>(p.b);
    a.C = reinterpret_cast<const void*>(p.c);
    a.A = reinterpret_cast<const float*>(p.a);
    a.D = reinterpret_cast<const float*>(p.d);
    a.delta_bias = reinterpret_cast<const float*>(p.delta_bias);
    a.init = reinterpret_cast<const float*>(p.initial_state);
    a.y = reinterpret_cast<void*>(p.y);
    a.final_state = reinterpret_cast<float*>(p.final_state);
    a.batch = static_cast<int>(p.batch);
    a.seqlen = static_cast<int>(p.seqlen);
    a.dim = static_cast<int>(p.dim);
    a.dstate = static_cast<int>(p.dstate);
    a.ngroups = static_cast<int>(p.ngroups);
    a.group_size = a.dim / a.ngroups;
    // Row strides (docs/op-contract.md "Sliced inputs"); 0 from a caller that predates them
    // means contiguous.
    if (p.z_stride > 0x7fffffffull || p.b_stride > 0x7fffffffull || p.c_stride > 0x7fffffffull)
        return cudaErrorInvalidValue;
    a.z_stride = p.z_stride ? static_cast<int>(p.z_stride) : a.dim;
    a.b_stride = p.b_stride ? static_cast<int>(p.b_stride) : a.dstate;
    a.c_stride = p.c_stride ? static_cast<int>(p.c_stride) : a.dstate;
    a.softplus = p.delta_softplus;
    a.param_vec = (!a.D || aligned16(a.D)) && (!a.delta_bias || aligned16(a.delta_bias));
    // An empty sequence's tensors may have no buffer at all; only A and the states are read then.
    if (!a.A || (a.seqlen > 0 && (!a.u || !a.delta || !a.B || !a.C || !a.y))) return cudaErrorInvalidValue;

    constexpr int V = kVec<T>;
    // 16-byte vectors need every row 16-byte aligned: a sliced input's offset and row stride
    // must keep it so (Mamba-1's packed xz and x_proj outputs do), else the scalar loads.
    const bool vec = a.dim % V == 0 && a.dstate % V == 0 && aligned16(a.u) && aligned16(a.delta) &&
                     (!a.z || (aligned16(a.z) && a.z_stride % V == 0)) && aligned16(a.B) && aligned16(a.C) &&
                     a.b_stride % V == 0 && a.c_stride % V == 0 && aligned16(a.y);
    // Decode steps: the per-step kernel (no tiles, no split; selective_scan_step.cuh). Measured
    // on the H200 against the tiled kernels (cpp/cuda/README.md, "Decode steps"); cfg.step forces one or the other.
    // An empty sequence with a final state: the per-step kernel, which runs no step and copies
    // the initial state (or 0) out; the tiled kernels assume at least one tile.
    if (a.seqlen == 0) return launch_scan_step<T>(a, stream);
    const bool tiled_forced = cfg.lanes != 0 || cfg.ch != 0 || cfg.w != 0 || cfg.s != 0 || cfg.cpt != 0;
    // One token a sequence: the one-token kernel (selective_scan_token.cuh) where it fits.
    if (cfg.step == 0 && !tiled_forced && scan_token_fits(a)) return launch_scan_token<T>(a, stream);
    if (cfg.step > 0 || (cfg.step == 0 && !tiled_forced && scan_step_wins(static_cast<long long>(a.batch) * a.dim, a.seqlen)))
        return launch_scan_step<T>(a, stream);
    const DeviceInfo dev = device_info();
    // Warp-split kernel (selective_scan_ws.cuh), forced by the harness with w < 0: W = -w
    // sub-chunks a warp, S = s steps each.
    if (cfg.w < 0) {
        if (!ws_fits(a, vec) || (cfg.lanes != 0 && cfg.lanes != 4)) return cudaErrorInvalidValue;
        return launch_ws<T>(a, stream, -cfg.w, cfg.s, cfg.ch, dev.sms);
    }
    // Default for small batches at dstate 16 (measured on the H200: cpp/cuda/README.md): the warp split
    // with S = 8, when its blocks fit in one wave; W = 8 sub-chunks a warp (256-thread blocks, two
    // a multiprocessor) where the rows are few, else W = 4 (128-thread blocks, five a
    // multiprocessor). Between that and the rows that fill the GPU alone, the block split stays.
    if (cfg.w == 0 && cfg.ch == 0 && cfg.s == 0 && cfg.cpt == 0 && (cfg.lanes == 0 || cfg.lanes == 4) &&
        ws_fits(a, vec)) {
        const long long rows = static_cast<long long>(a.batch) * a.dim;
        if (rows >= 1024 && rows <= 8LL * 2 * dev.sms) return launch_ws<T>(a, stream, 8, 8, 0, dev.sms);
        if (rows >= 1024 && rows <= 8LL * 5 * dev.sms) return launch_ws<T>(a, stream, 4, 8, 0, dev.sms);
    }
    const int N = a.dstate;
    int lanes = cfg.lanes;
    if (lanes == 0) lanes = N <= 4 ? 1 : N <= 8 ? 2 : N <= 16 ? 4 : N <= 32 ? 8 : 16;
    // (KN, LANES) pairs; KN * LANES must cover dstate. S of the split variant: 0 = no split.
    if (N <= 4 && lanes == 1) return launch_lanes<T, 4, 1, 12>(a, stream, dev, vec, cfg);
    if (N <= 8 && lanes == 2) return launch_lanes<T, 4, 2, 12>(a, stream, dev, vec, cfg);
    if (N <= 16 && lanes == 4) return launch_lanes<T, 4, 4, 12, 8, true>(a, stream, dev, vec, cfg);
    if (N <= 16 && lanes == 8) return launch_lanes<T, 2, 8, 16>(a, stream, dev, vec, cfg);
    if (N <= 16 && lanes == 16) return launch_lanes<T, 1, 16, 16>(a, stream, dev, vec, cfg);
    if (N <= 32 && lanes == 8) return launch_lanes<T, 4, 8, 8>(a, stream, dev, vec, cfg);
    if (N <= 64 && lanes == 16) return launch_lanes<T, 4, 16, 0>(a, stream, dev, vec, cfg);
    if (N <= 128 && lanes == 16) return launch_lanes<T, 8, 16, 0>(a, stream, dev, vec, cfg);
    if (N <= 256 && lanes == 16) return launch_lanes<T, 16, 16, 0>(a, stream, dev, vec, cfg);
    return cudaErrorInvalidValue;
}

}  // namespace mambac::cuda::detail

// One explicit instantiation per element type, in its own translation unit.
#define MAMBAC_INSTANTIATE_SCAN(T)                                                              \
    namespace mambac::cuda::detail {                                                            \
    template cudaError_t launch_scan_typed<T>(const SelectiveScanParams&, cudaStream_t,         \
                                              const mambac::cuda::ScanConfig&);                 \
    }
