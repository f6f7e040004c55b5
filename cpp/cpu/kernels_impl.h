// SelectiveScan and CausalConv1d on the CPU, written once over simd.h and instantiated per ISA
// by isa_*.cpp. Layouts are docs/op-contract.md's token-major ones, so the VW channels of one vector are
// contiguous in u, delta, z, y and x. z, B, C and x may be slices of a packed last axis
// (docs/op-contract.md "Sliced inputs"): their rows are p.*_stride elements apart.
//
// Work split: one task = one batch row x one block of VW channels (of one group, for the scan),
// for the whole sequence. Tasks share nothing but read-only inputs, so any thread may run any.
#pragma once

#include <algorithm>
#include <cmath>
#include <memory>
#include <type_traits>
#include <vector>

#include "mambac-ops/custom-ops/src/kernel_abi.rs.h"
#include "simd.h"

namespace mambac {
namespace MAMBAC_ISA {

// ---- SelectiveScan ----------------------------------------------------------------------------
//
//   dt_t = softplus(delta_t + delta_bias)
//   h_t  = exp(dt_t * A[d, :]) * h_{t-1} + dt_t * B_t[g, :] * u_t
//   y_t  = <C_t[g, :], h_t> + D[d] * u_t,   then  y_t *= silu(z_t)

// The scan's buffers as typed pointers: T for the sequence tensors, float32 for A, D,
// delta_bias and the states (docs/op-contract.md). Null where an optional input or output is absent.
template <class T>
struct ScanBuffers {
  const T *u, *delta, *B, *C, *z;
  T* y;
  const float *A, *D, *delta_bias, *h0;
  float* h_out;
  explicit ScanBuffers(const SelectiveScanParams& p)
      : u(reinterpret_cast<const T*>(p.u)),
        delta(reinterpret_cast<const T*>(p.delta)),
        B(reinterpret_cast<const T*>(p.b)),
        C(reinterpret_cast<const T*>(p.c)),
        z(reinterpret_cast<const T*>(p.z)),
        y(reinterpret_cast<T*>(p.y)),
        A(reinterpret_cast<const float*>(p.a)),
        D(reinterpret_cast<const float*>(p.d)),
        delta_bias(reinterpret_cast<const float*>(p.delta_bias)),
        h0(reinterpret_cast<const float*>(p.initial_state)),
        h_out(reinterpret_cast<float*>(p.final_state)) {}
};

// True when every lane is 0 (a NaN lane is not).
static inline bool all_zero(vf v) {
  bool zero = true;
  for (int l = 0; l < VW; ++l) zero = zero && v[l] == 0.0f;
  return zero;
}

struct ScanBlock {
  size_t b, g, d0;  // batch row, group, first channel
  int nd;           // channels in this block (VW but at a group's tail)
};

static inline size_t scan_blocks_per_group(const SelectiveScanParams& p) {
  return (p.dim / p.ngroups + VW - 1) / VW;
}

static inline ScanBlock scan_block_of(const SelectiveScanParams& p, size_t task) {
  const size_t per_group = scan_blocks_per_group(p);
  const size_t dpg = p.dim / p.ngroups;
  ScanBlock blk;
  blk.b = task / (p.ngroups * per_group);
  const size_t rest = task % (p.ngroups * per_group);
  blk.g = rest / per_group;
  const size_t in_group = (rest % per_group) * VW;
  blk.d0 = blk.g * dpg + in_group;
  blk.nd = static_cast<int>(std::min<size_t>(VW, dpg - in_group));
  return blk;
}

// Rows a tile will read (or write) that the scan loop touches in cache ahead of time. The prep
// and gate loops read one vector of a [seqlen, dim] row per step: a new cache line every step,
// and at dim >= 1024 a new 4 KB page, which the hardware prefetchers do not follow. Left alone,
// those loops wait on memory once per step (measured with perf: a fifth of the scan's time at
// dim 1536, one thread); prefetching a few rows ahead of them did not help, as their bodies are
// long enough that few iterations are in flight. The scan loop over the previous tile runs for
// thousands of cycles without touching those arrays, so it issues the prefetches, one row of
// each array per step. (scan_chunk copies the pointers into locals first: GCC 12 drops
// prefetches whose addresses it reloads from memory inside the loop.)
struct RowPrefetch {
  const char* read[3] = {nullptr, nullptr, nullptr};
  const char* write = nullptr;
  size_t stride = 0;   // bytes between consecutive rows
  size_t stride2 = 0;  // the same for read[2] (z, whose rows may be a packed tensor's)
  size_t count = 0;    // rows to touch
};

// The sequence is cut into tiles of kTile steps. Per tile: (1) dt = softplus(delta + bias),
// dt * u and D * u for every step into small buffers; (2) for each chunk of kChunk states, the
// recurrence over the tile's steps with that chunk's state in registers, adding <C, h> into y;
// (3) the z gate and the store. Chunking the state keeps it in registers for any dstate (16
// states of one vector do not fit in AVX2's 16 registers beside the temporaries), and the
// buffers (about 40 KB) stay in L1/L2. Nothing is allocated per step.
constexpr size_t kTile = 2048 / VW;           // steps per tile: 3 buffers of kTile vectors = 24 KB
constexpr int kChunk = VW == 16 ? 16 : 8;     // states per register-resident chunk

// Steps [0, tl) for states [0, NC) of one chunk; NCH is NC at compile time, or 0 for any count
// with the state left in memory. b[t * stride + n], c[t * cstride + n]: the chunk's B and C as float32.
// kExact: vexp2_exact for tiles whose dt or A hold a NaN or an infinity (vexp2's clamps would
// turn exp(NaN) into a number and exp(-inf) into 2^-126, so that 0 * inf states lose their NaN).
template <int NCH, bool kClampHigh, bool kExact = false>
static inline void scan_chunk(size_t tl, int nc_rt, const vf* dtb, const vf* dub, vf* yb, const float* b,
                              const float* c, size_t stride, size_t cstride, const vf* a2, vf* state,
                              const RowPrefetch& pf) {
  const int NC = NCH ? NCH : nc_rt;
  vf regs[NCH ? NCH : 1];
  vf* h = NCH ? regs : state;
  if (NCH) {
    for (int n = 0; n < NC; ++n) regs[n] = state[n];
  }
  const char *pf_r0 = pf.read[0], *pf_r1 = pf.read[1], *pf_r2 = pf.read[2], *pf_w = pf.write;
  const size_t pf_stride = pf.stride, pf_stride2 = pf.stride2, pf_count = pf.count;
  for (size_t t = 0; t < tl; ++t) {
    if (t < pf_count) {
      const size_t o = t * pf_stride;
      if (pf_r0) __builtin_prefetch(pf_r0 + o, 0, 3);
      if (pf_r1) __builtin_prefetch(pf_r1 + o, 0, 3);
      if (pf_r2) __builtin_prefetch(pf_r2 + t * pf_stride2, 0, 3);
      if (pf_w) __builtin_prefetch(pf_w + o, 1, 3);
    }
    const vf dt = dtb[t], du = dub[t];
    const auto ex = [](vf x) { return kExact ? vexp2_exact(x) : vexp2<kClampHigh>(x); };
    const float* bt = b + t * stride;
    const float* ct = c + t * cstride;
    // Two accumulators halve the add chain through y.
    vf y0 = yb[t], y1 = splat(0.0f);
    int n = 0;
#pragma GCC unroll 16
    for (; n + 1 < NC; n += 2) {
      h[n] = ex(dt * a2[n]) * h[n] + du * bt[n];
      h[n + 1] = ex(dt * a2[n + 1]) * h[n + 1] + du * bt[n + 1];
      y0 += h[n] * ct[n];
      y1 += h[n + 1] * ct[n + 1];
    }
    if (n < NC) {
      h[n] = ex(dt * a2[n]) * h[n] + du * bt[n];
      y0 += h[n] * ct[n];
    }
    yb[t] = y0 + y1;
  }
  if (NCH) {
    for (int n = 0; n < NC; ++n) state[n] = regs[n];
  }
}

template <class E>
static void scan_block(const SelectiveScanParams& p, const ScanBlock& blk) {
  using T = typename E::T;
  constexpr bool kF32 = std::is_same<E, F32>::value;
  const size_t N = p.dstate, L = p.seqlen, dim = p.dim, G = p.ngroups;
  const size_t zs = p.z_stride, bs = p.b_stride, cs = p.c_stride;
  const int nd = blk.nd;
  const auto [u, delta, B, C, z, y, A, D, delta_bias, h0, h_out] = ScanBuffers<T>(p);

  // One allocation per task: A * log2(e) and the state per channel lane (2N vectors), the three
  // step buffers, and B/C as float32 for one chunk when T is not float32.
  const size_t bc_floats = kF32 ? 0 : 2 * kTile * kChunk;
  std::unique_ptr<vf[]> mem(new vf[2 * N + 3 * kTile + (bc_floats + VW - 1) / VW]);
  vf* a2 = mem.get();       // a2[n] lane l = A[d0 + l, n] * log2(e): exp(dt A) = 2^(dt a2)
  vf* state = a2 + N;       // state[n] lane l = h of channel d0 + l
  vf* dtb = state + N;
  vf* dub = dtb + kTile;
  vf* yb = dub + kTile;
  float* bcb = reinterpret_cast<float*>(yb + kTile);

  for (size_t n = 0; n < N; ++n) {
    a2[n] = gather_n<F32>(A + blk.d0 * N + n, N, nd) * kLog2e;
    state[n] = h0 ? gather_n<F32>(h0 + (blk.b * dim + blk.d0) * N + n, N, nd) : splat(0.0f);
  }
  const vf d_skip = D ? load_n<F32>(D + blk.d0, nd) : splat(0.0f);
  const vf bias = delta_bias ? load_n<F32>(delta_bias + blk.d0, nd) : splat(0.0f);
  const bool softplus = p.delta_softplus;
  // The usual case, softplus on (dt >= 0) and A <= 0 (docs/op-contract.md: already negative), makes every
  // exponent dt * A <= 0 and lets exp skip its upper clamp. Anything else takes the general path.
  bool x_nonpositive = softplus, a_finite = true;
  for (size_t i = 0; i < size_t(nd) * N; ++i) {
    const float a = A[blk.d0 * N + i];
    x_nonpositive = x_nonpositive && a <= 0.0f;
    a_finite = a_finite && std::isfinite(a);
  }

  for (size_t t0 = 0; t0 < L; t0 += kTile) {
    const size_t tl = std::min(kTile, L - t0);
    const size_t row0 = blk.b * L + t0;  // row of step t0 in [batch * seqlen]
    vf dt_check = splat(0.0f);             // dt - dt summed: 0 unless some dt is NaN or infinite
    for (size_t t = 0; t < tl; ++t) {
      const size_t off = (row0 + t) * dim + blk.d0;
      const vf uv = load_n<E>(u + off, nd);
      vf dt = load_n<E>(delta + off, nd) + bias;
      if (softplus) dt = vsoftplus(dt);
      dt_check += dt - dt;
      dtb[t] = dt;
      dub[t] = dt * uv;
      yb[t] = d_skip * uv;
    }
    const bool exact = !a_finite || !all_zero(dt_check);
    // First state chunk: bring in the next tile's u, delta and z rows. Last chunk: this tile's
    // y rows, about to be written by the gate loop.
    const size_t next0 = t0 + kTile;
    const size_t next_rows = next0 < L ? std::min(kTile, L - next0) : 0;
    for (size_t n0 = 0; n0 < N; n0 += kChunk) {
      const int nc = static_cast<int>(std::min<size_t>(kChunk, N - n0));
      RowPrefetch pf;
      pf.stride = dim * sizeof(T);
      pf.stride2 = zs * sizeof(T);
      if (n0 == 0 && next_rows > 0) {
        const size_t off = (row0 + kTile) * dim + blk.d0;
        pf.read[0] = reinterpret_cast<const char*>(u + off);
        pf.read[1] = reinterpret_cast<const char*>(delta + off);
        pf.read[2] = z ? reinterpret_cast<const char*>(z + (row0 + kTile) * zs + blk.d0) : nullptr;
        pf.count = next_rows;
      } else if (n0 + kChunk >= N) {
        pf.write = reinterpret_cast<const char*>(y + row0 * dim + blk.d0);
        pf.count = tl;
      }
      const float *bp, *cp;
      size_t stride, cstride;
      if constexpr (kF32) {
        // Read in place, packed or not: a row of the chunk's B (C) is G * bs (G * cs) floats on.
        bp = reinterpret_cast<const float*>(B) + (row0 * G + blk.g) * bs + n0;
        cp = reinterpret_cast<const float*>(C) + (row0 * G + blk.g) * cs + n0;
        stride = G * bs;
        cstride = G * cs;
      } else {
        float* bw = bcb;
        float* cw = bcb + kTile * kChunk;
        for (size_t t = 0; t < tl; ++t) {
          const size_t row = (row0 + t) * G + blk.g;
          for (int n = 0; n < nc; ++n) {
            bw[t * kChunk + n] = E::to_f32(B[row * bs + n0 + n]);
            cw[t * kChunk + n] = E::to_f32(C[row * cs + n0 + n]);
          }
        }
        bp = bw;
        cp = cw;
        stride = cstride = kChunk;
      }
      if (exact) {
        scan_chunk<0, true, true>(tl, nc, dtb, dub, yb, bp, cp, stride, cstride, a2 + n0, state + n0, pf);
      } else if (!x_nonpositive) {
        scan_chunk<0, true>(tl, nc, dtb, dub, yb, bp, cp, stride, cstride, a2 + n0, state + n0, pf);
      } else if (nc == kChunk) {
        scan_chunk<kChunk, false>(tl, nc, dtb, dub, yb, bp, cp, stride, cstride, a2 + n0, state + n0, pf);
      } else if (nc == 4) {
        scan_chunk<4, false>(tl, nc, dtb, dub, yb, bp, cp, stride, cstride, a2 + n0, state + n0, pf);
      } else {
        scan_chunk<0, false>(tl, nc, dtb, dub, yb, bp, cp, stride, cstride, a2 + n0, state + n0, pf);
      }
    }
    for (size_t t = 0; t < tl; ++t) {
      const size_t off = (row0 + t) * dim + blk.d0;
      vf yv = yb[t];
      if (z) yv *= vsilu(load_n<E>(z + (row0 + t) * zs + blk.d0, nd));
      store_n<E>(y + off, yv, nd);
    }
  }

  if (h_out) {
    for (size_t n = 0; n < N; ++n) scatter_n<F32>(h_out + (blk.b * dim + blk.d0) * N + n, N, state[n], nd);
  }
}

// ---- SelectiveScan, short sequences (decode steps) ----------------------------------------------
//
// With a handful of steps the channel-vectorised path above spends its time on set-up: gathering
// A and the state across channels (stride dstate), a per-task buffer, and one task per VW
// channels. For seqlen < kShortSeq each channel instead runs on its own, vectorised over its
// dstate states, which are contiguous in A, B, C and the state: no gathers, no scratch, and a
// task covers kShortChannels channels.
constexpr size_t kShortSeq = 8;
constexpr size_t kShortChannels = 64;

static inline float hsum(vf v) {
  float s = 0.0f;
  for (int l = 0; l < VW; ++l) s += v[l];
  return s;
}


// dstate up to this many vectors runs here (256 states with AVX-512, 128 with AVX2); a larger
// dstate takes the channel-vectorised path, which handles any.
constexpr size_t kShortMaxVecs = 16;

template <class E>
static void scan_short_channels(const SelectiveScanParams& p, size_t b, size_t d_begin, size_t d_end) {
  using T = typename E::T;
  const size_t N = p.dstate, L = p.seqlen, dim = p.dim, G = p.ngroups, dpg = dim / G;
  const size_t zs = p.z_stride, bs = p.b_stride, cs = p.c_stride;
  const auto [u, delta, B, C, z, y, A, D, delta_bias, h0, h_out] = ScanBuffers<T>(p);
  const size_t nd = d_end - d_begin;

  // Per (step, channel) terms, vectorised across the block's channels first: the softplus and
  // the SiLU gate cost more than a channel's whole state update if done one channel at a time.
  float dt_s[kShortSeq][kShortChannels], du_s[kShortSeq][kShortChannels];
  float skip_s[kShortSeq][kShortChannels], gate_s[kShortSeq][kShortChannels];
  for (size_t t = 0; t < L; ++t) {
    for (size_t c = 0; c < nd; c += VW) {
      const int cnt = static_cast<int>(std::min<size_t>(VW, nd - c));
      const size_t off = (b * L + t) * dim + d_begin + c;
      const vf uv = load_n<E>(u + off, cnt);
      vf dt = load_n<E>(delta + off, cnt) + (delta_bias ? load_n<F32>(delta_bias + d_begin + c, cnt) : splat(0.0f));
      if (p.delta_softplus) dt = vsoftplus(dt);
      store_n<F32>(&dt_s[t][c], dt, cnt);
      store_n<F32>(&du_s[t][c], dt * uv, cnt);
      store_n<F32>(&skip_s[t][c], D ? load_n<F32>(D + d_begin + c, cnt) * uv : splat(0.0f), cnt);
      store_n<F32>(&gate_s[t][c], z ? vsilu(load_n<E>(z + (b * L + t) * zs + d_begin + c, cnt)) : splat(1.0f), cnt);
    }
  }

  const size_t nv = (N + VW - 1) / VW;
  // Lanes of the last vector past dstate load A = B = C = 0; `live` zeroes their h after each
  // update, before the sum, so that an infinite du (0 * inf = NaN there) cannot reach it.
  auto lanes = [&](size_t v) { return static_cast<int>(std::min<size_t>(VW, N - v * VW)); };
  vi live;
  for (int l = 0; l < VW; ++l) live[l] = l < lanes(nv - 1) ? -1 : 0;
  vf a2[kShortMaxVecs], h[kShortMaxVecs];
  // One channel's steps; kExact as in scan_chunk, for a channel whose dt or A is not finite.
  auto steps = [&](auto exact, size_t c, size_t d, size_t g) {
    for (size_t t = 0; t < L; ++t) {
      const float dt = dt_s[t][c], du = du_s[t][c];
      const size_t row = (b * L + t) * G + g;
      const T* bt = B + row * bs;
      const T* ct = C + row * cs;
      vf acc = splat(0.0f);
      for (size_t v = 0; v < nv; ++v) {
        const vf x = a2[v] * dt;
        h[v] = (decltype(exact)::value ? vexp2_exact(x) : vexp2<true>(x)) * h[v] +
               load_n<E>(bt + v * VW, lanes(v)) * du;
        if (v + 1 == nv) h[v] = (vf)((vi)h[v] & live);
        acc += h[v] * load_n<E>(ct + v * VW, lanes(v));
      }
      y[(b * L + t) * dim + d] = E::from_f32((hsum(acc) + skip_s[t][c]) * gate_s[t][c]);
    }
  };
  for (size_t c = 0; c < nd; ++c) {
    const size_t d = d_begin + c, g = d / dpg;
    vf check = splat(0.0f);  // x - x summed over dt and A: 0 unless one is NaN or infinite
    for (size_t v = 0; v < nv; ++v) {
      a2[v] = load_n<F32>(A + d * N + v * VW, lanes(v)) * kLog2e;
      h[v] = h0 ? load_n<F32>(h0 + (b * dim + d) * N + v * VW, lanes(v)) : splat(0.0f);
      check += a2[v] - a2[v];
    }
    for (size_t t = 0; t < L; ++t) check += splat(dt_s[t][c] - dt_s[t][c]);
    if (all_zero(check)) {
      steps(std::false_type{}, c, d, g);
    } else {
      steps(std::true_type{}, c, d, g);
    }
    if (h_out) {
      for (size_t v = 0; v < nv; ++v) store_n<F32>(h_out + (b * dim + d) * N + v * VW, h[v], lanes(v));
    }
  }
}

static inline bool scan_is_short(const SelectiveScanParams& p) {
  return p.seqlen < kShortSeq && p.dstate <= kShortMaxVecs * VW;
}

static inline size_t scan_short_tasks_per_row(const SelectiveScanParams& p) {
  return (p.dim + kShortChannels - 1) / kShortChannels;
}

template <class E>
static void scan_task(const SelectiveScanParams& p, size_t task) {
  if (scan_is_short(p)) {
    const size_t per_row = scan_short_tasks_per_row(p);
    const size_t b = task / per_row, d0 = (task % per_row) * kShortChannels;
    return scan_short_channels<E>(p, b, d0, std::min(p.dim, d0 + kShortChannels));
  }
  scan_block<E>(p, scan_block_of(p, task));
}

// No steps and no final state to write: nothing to do, however large the batch.
size_t scan_tasks(const SelectiveScanParams& p) {
  if (p.ngroups == 0 || (p.seqlen == 0 && !p.final_state)) return 0;
  if (scan_is_short(p)) return p.batch * scan_short_tasks_per_row(p);
  return p.batch * p.ngroups * scan_blocks_per_group(p);
}

void scan_run(const SelectiveScanParams& p, size_t task) {
  switch (p.elem) {
    case ElemType::F16: return scan_task<F16>(p, task);
    case ElemType::BF16: return scan_task<BF16>(p, task);
    default: return scan_task<F32>(p, task);
  }
}

// ---- CausalConv1d -------------------------------------------------------------------------------
//
//   y[t, d] = act(bias[d] + sum_k weight[d, k] * x[t - (width - 1) + k, d])
//   with x at negative times taken from initial_state (the last width-1 inputs seen), else 0.

template <class E, int KS>
static void conv_block(const CausalConv1dParams& p, size_t b, size_t d0, int nd, vf* scratch) {
  using T = typename E::T;
  const size_t K = KS ? KS : p.width;
  const size_t L = p.seqlen, dim = p.dim, S = K - 1;
  const T* x = reinterpret_cast<const T*>(p.x);
  const T* weight = reinterpret_cast<const T*>(p.weight);
  const T* bias = reinterpret_cast<const T*>(p.bias);
  const T* s0 = reinterpret_cast<const T*>(p.initial_state);
  T* y = reinterpret_cast<T*>(p.y);
  T* s_out = reinterpret_cast<T*>(p.final_state);

  vf w_regs[KS ? KS : 1], win_regs[KS ? KS : 1];
  vf* w = KS ? w_regs : scratch;      // w[k] lane l = weight[d0 + l, k]
  vf* win = KS ? win_regs : scratch + K;  // win[k]: the input k - (K-1) steps back

  for (size_t k = 0; k < K; ++k) w[k] = gather_n<E>(weight + d0 * K + k, K, nd);
  for (size_t k = 0; k < S; ++k) {
    win[k] = s0 ? gather_n<E>(s0 + (b * dim + d0) * S + k, S, nd) : splat(0.0f);
  }
  const vf bv = bias ? load_n<E>(bias + d0, nd) : splat(0.0f);
  const bool silu = p.silu;

  for (size_t t = 0; t < L; ++t) {
    const size_t off = (b * L + t) * dim + d0;
    win[S] = load_n<E>(x + (b * L + t) * p.x_stride + d0, nd);
    vf acc = bv;
#pragma GCC unroll 8
    for (size_t k = 0; k < K; ++k) acc += w[k] * win[k];
    if (silu) acc = vsilu(acc);
    store_n<E>(y + off, acc, nd);
#pragma GCC unroll 8
    for (size_t k = 0; k < S; ++k) win[k] = win[k + 1];
  }

  if (s_out) {
    for (size_t k = 0; k < S; ++k) scatter_n<E>(s_out + (b * dim + d0) * S + k, S, win[k], nd);
  }
}

template <class E>
static void conv_task(const CausalConv1dParams& p, size_t task) {
  const size_t per_row = (p.dim + VW - 1) / VW;
  const size_t b = task / per_row;
  const size_t d0 = (task % per_row) * VW;
  const int nd = static_cast<int>(std::min<size_t>(VW, p.dim - d0));
  switch (p.width) {
    case 2: return conv_block<E, 2>(p, b, d0, nd, nullptr);
    case 3: return conv_block<E, 3>(p, b, d0, nd, nullptr);
    case 4: return conv_block<E, 4>(p, b, d0, nd, nullptr);
    default: break;
  }
  std::unique_ptr<vf[]> scratch(new vf[2 * p.width]);
  conv_block<E, 0>(p, b, d0, nd, scratch.get());
}

size_t conv_tasks(const CausalConv1dParams& p) {
  if (p.seqlen == 0 && (!p.final_state || p.width == 1)) return 0;
  return p.batch * ((p.dim + VW - 1) / VW);
}

void conv_run(const CausalConv1dParams& p, size_t task) {
  switch (p.elem) {
    case ElemType::F16: return conv_task<F16>(p, task);
    case ElemType::BF16: return conv_task<BF16>(p, task);
    default: return conv_task<F32>(p, task);
  }
}

}  // namespace MAMBAC_ISA
}  // namespace mambac
