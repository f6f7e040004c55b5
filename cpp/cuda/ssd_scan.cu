// SsdScan launcher: the plan (which path, the chunk size and the scratch layout), then dispatch on
// the element type to the per-dtype translation units.
#include "abi.h"
#include "ssd_scan.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace mambac::cuda {
namespace detail {
template <typename T>
cudaError_t launch_ssd_typed(const SsdScanParams&, const SsdPlan&, cudaStream_t);
}  // namespace detail

namespace {
// a * b, or false when it wraps.
bool mul(size_t a, size_t b, size_t& out) { return !__builtin_mul_overflow(a, b, &out); }

size_t align256(size_t n) { return (n + 255) / 256 * 256; }

// Chunk length: the extra padded steps of a short sequence against the per-chunk state traffic
// of a long one (states are dstate x head_dim floats a head and chunk). Initial guesses, to be
// settled by tools/gpu/bench_ssd.py's sweep. Never decreasing in seqlen
// (ssd_scan_scratch_bytes_bound relies on it).
size_t auto_chunk(size_t seqlen) { return seqlen <= 128 ? 64 : seqlen <= 512 ? 128 : 256; }
}  // namespace

SsdPlan ssd_plan(const SsdScanParams& p, const SsdConfig& cfg) {
    SsdPlan plan;
    const bool forced_chunk = cfg.chunk != 0;
    if (forced_chunk && cfg.chunk != 64 && cfg.chunk != 128 && cfg.chunk != 256) plan.valid = false;
    if (cfg.path == 1 || !plan.valid) return plan;
    plan.token = cfg.path == 0 && p.seqlen == 1;
    // Nothing to chunk: no steps, no state (y = D x), or no rows; the step kernel handles those.
    const bool work = p.seqlen > 0 && p.dstate > 0 && p.batch > 0 && p.heads > 0 && p.head_dim > 0;
    if (!work || (cfg.path == 0 && p.seqlen < kSsdChunkedMinSeqlen)) return plan;
    plan.chunk = forced_chunk ? static_cast<size_t>(cfg.chunk) : auto_chunk(p.seqlen);
    plan.nchunks = (p.seqlen + plan.chunk - 1) / plan.chunk;
    size_t bh = 0, rows = 0, cb = 0, st = 0, hs = 0;
    const size_t elem = p.elem == ElemType::F32 ? 4 : 2;
    bool ok = mul(p.batch, p.heads, bh) && mul(bh, plan.nchunks, rows) && mul(rows, plan.chunk * 4, rows);
    ok = ok && mul(p.batch, plan.nchunks, cb) && mul(cb, p.ngroups, cb) && mul(cb, plan.chunk * plan.chunk * 4, cb);
    ok = ok && mul(bh, plan.nchunks, st) && mul(st, p.head_dim, st) && mul(st, p.dstate, st) && mul(st, elem, hs) &&
         mul(st, 4, st);
    ok = ok && rows < (1ull << 56) && cb < (1ull << 56) && st < (1ull << 56);
    if (!ok) {
        plan.valid = cfg.path == 0;
        plan.chunk = plan.nchunks = 0;
        return plan;
    }
    plan.chunked = true;
    plan.dtp = 0;
    plan.cs = align256(rows);
    plan.cb = plan.cs + align256(rows);
    plan.st = plan.cb + align256(cb);
    plan.hs = plan.st + align256(st);
    plan.bytes = plan.hs + align256(hs);
    return plan;
}

size_t ssd_scan_scratch_bytes(const SsdScanParams& p, const SsdConfig& cfg) {
    const SsdPlan plan = ssd_plan(p, cfg);
    return plan.valid && plan.chunked ? plan.bytes : 0;
}

size_t ssd_scan_scratch_bytes_bound(const SsdScanParams& p, size_t min_seqlen) {
    // For a fixed chunk length the scratch never shrinks as seqlen grows (more chunks or the
    // same), so the most is at the longest seqlen of each chunk length the range reaches: found
    // by bisection on auto_chunk, which never decreases.
    if (min_seqlen > p.seqlen) min_seqlen = p.seqlen;
    size_t most = 0;
    SsdScanParams q = p;
    for (size_t lo = min_seqlen; lo <= p.seqlen;) {
        const size_t chunk = auto_chunk(lo);
        size_t last = lo, hi = p.seqlen;  // the last seqlen in [lo, p.seqlen] with this chunk
        while (last < hi) {
            const size_t mid = last + (hi - last + 1) / 2;
            if (auto_chunk(mid) == chunk) last = mid; else hi = mid - 1;
        }
        q.seqlen = last;
        const size_t bytes = ssd_scan_scratch_bytes(q);
        if (bytes > most) most = bytes;
        if (last == p.seqlen) break;
        lo = last + 1;
    }
    return most;
}

cudaError_t ssd_scan(const SsdScanParams& p, cudaStream_t stream, const SsdConfig& cfg) {
    SsdPlan plan = ssd_plan(p, cfg);
    if (!plan.valid) return cudaErrorInvalidValue;
    if (plan.chunked && !p.scratch) {
        if (cfg.path == -1) return cudaErrorInvalidValue;
        plan = SsdPlan{};  // no scratch given: the step kernel
    }
    // The chunked kernels read the scratch in 16-byte vectors: a misaligned pointer would fault.
    if (plan.chunked && (static_cast<size_t>(p.scratch) & 15) != 0) return cudaErrorInvalidValue;
    switch (p.elem) {
        case ElemType::F32: return detail::launch_ssd_typed<float>(p, plan, stream);
        case ElemType::F16: return detail::launch_ssd_typed<__half>(p, plan, stream);
        case ElemType::BF16: return detail::launch_ssd_typed<__nv_bfloat16>(p, plan, stream);
    }
    return cudaErrorInvalidValue;
}

}  // namespace mambac::cuda
