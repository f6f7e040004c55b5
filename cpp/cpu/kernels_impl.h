// SelectiveScan and CausalConv1d on the CPU, written once over simd.h and instantiated per ISA
// by isa_*.cpp. Layouts are DESIGN.md's token-major ones, so the VW channels of one vector are
// contiguous in u, delta, z, y and x.
//
// Work split: one task = one batch row x one block of VW channels (of one group, for the scan),
// for the whole sequence. Tasks share nothing but read-only inputs, so any thread may run any.
#pragma once

#include <algorithm>
#include <memory>
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

// NS: dstate known at compile time (the state then lives in registers), or 0 for any dstate
// with the state in `scratch` (2 * dstate vectors).
template <class E, int NS>
static void scan_block(const SelectiveScanParams& p, const ScanBlock& blk, vf* scratch) {
  using T = typename E::T;
  const size_t N = NS ? NS : p.dstate;
  const size_t L = p.seqlen, dim = p.dim, G = p.ngroups;
  const int nd = blk.nd;
  const T* u = reinterpret_cast<const T*>(p.u);
  const T* delta = reinterpret_cast<const T*>(p.delta);
  const T* B = reinterpret_cast<const T*>(p.b);
  const T* C = reinterpret_cast<const T*>(p.c);
  const T* z = reinterpret_cast<const T*>(p.z);
  T* y = reinterpret_cast<T*>(p.y);
  const float* A = reinterpret_cast<const float*>(p.a);
  const float* D = reinterpret_cast<const float*>(p.d);
  const float* delta_bias = reinterpret_cast<const float*>(p.delta_bias);
  const float* h0 = reinterpret_cast<const float*>(p.initial_state);
  float* h_out = reinterpret_cast<float*>(p.final_state);

  vf at_regs[NS ? NS : 1], h_regs[NS ? NS : 1];
  vf* at = NS ? at_regs : scratch;      // at[n] lane l = A[d0 + l, n]
  vf* h = NS ? h_regs : scratch + N;    // h[n] lane l = state of channel d0 + l

  for (size_t n = 0; n < N; ++n) {
    at[n] = gather_n<F32>(A + blk.d0 * N + n, N, nd);
    h[n] = h0 ? gather_n<F32>(h0 + (blk.b * dim + blk.d0) * N + n, N, nd) : splat(0.0f);
  }
  const vf d_skip = D ? load_n<F32>(D + blk.d0, nd) : splat(0.0f);
  const vf bias = delta_bias ? load_n<F32>(delta_bias + blk.d0, nd) : splat(0.0f);
  const bool softplus = p.delta_softplus;

  for (size_t t = 0; t < L; ++t) {
    const size_t row = blk.b * L + t;
    const size_t off = row * dim + blk.d0;
    const vf uv = load_n<E>(u + off, nd);
    vf dt = load_n<E>(delta + off, nd) + bias;
    if (softplus) dt = vsoftplus(dt);
    const vf du = dt * uv;
    const T* Bt = B + (row * G + blk.g) * N;
    const T* Ct = C + (row * G + blk.g) * N;
    // Two accumulators halve the add chain through y.
    vf y0 = d_skip * uv, y1 = splat(0.0f);
#pragma GCC unroll 16
    for (size_t n = 0; n + 1 < N; n += 2) {
      const vf da0 = vexp(dt * at[n]);
      const vf da1 = vexp(dt * at[n + 1]);
      h[n] = da0 * h[n] + du * E::to_f32(Bt[n]);
      h[n + 1] = da1 * h[n + 1] + du * E::to_f32(Bt[n + 1]);
      y0 += h[n] * E::to_f32(Ct[n]);
      y1 += h[n + 1] * E::to_f32(Ct[n + 1]);
    }
    if (N & 1) {
      const size_t n = N - 1;
      h[n] = vexp(dt * at[n]) * h[n] + du * E::to_f32(Bt[n]);
      y0 += h[n] * E::to_f32(Ct[n]);
    }
    vf yv = y0 + y1;
    if (z) yv *= vsilu(load_n<E>(z + off, nd));
    store_n<E>(y + off, yv, nd);
  }

  if (h_out) {
    for (size_t n = 0; n < N; ++n) scatter_n<F32>(h_out + (blk.b * dim + blk.d0) * N + n, N, h[n], nd);
  }
}

template <class E>
static void scan_task(const SelectiveScanParams& p, size_t task) {
  const ScanBlock blk = scan_block_of(p, task);
  switch (p.dstate) {
    case 16: return scan_block<E, 16>(p, blk, nullptr);
    case 8: return scan_block<E, 8>(p, blk, nullptr);
    case 4: return scan_block<E, 4>(p, blk, nullptr);
    default: break;
  }
  // Any other dstate: state in memory; on the stack while small, else on the heap (once per task).
  constexpr size_t kStackStates = 64;
  if (p.dstate <= kStackStates) {
    vf scratch[2 * kStackStates];
    return scan_block<E, 0>(p, blk, scratch);
  }
  std::unique_ptr<vf[]> scratch(new vf[2 * p.dstate]);
  scan_block<E, 0>(p, blk, scratch.get());
}

size_t scan_tasks(const SelectiveScanParams& p) {
  if (p.ngroups == 0) return 0;
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
    win[S] = load_n<E>(x + off, nd);
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

size_t conv_tasks(const CausalConv1dParams& p) { return p.batch * ((p.dim + VW - 1) / VW); }

void conv_run(const CausalConv1dParams& p, size_t task) {
  switch (p.elem) {
    case ElemType::F16: return conv_task<F16>(p, task);
    case ElemType::BF16: return conv_task<BF16>(p, task);
    default: return conv_task<F32>(p, task);
  }
}

}  // namespace MAMBAC_ISA
}  // namespace mambac
