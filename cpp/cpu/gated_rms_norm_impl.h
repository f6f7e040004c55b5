// GatedRmsNorm on the CPU (docs/op-contract.md "GatedRmsNorm"), written once over simd.h and
// instantiated per ISA by isa_*.cpp beside kernels_impl.h. Per row, per group of group_size
// channels, in float32:
//
//   norm_before_gate = 0:  v = y * silu(z);  out = T(v / sqrt(mean_g(v^2) + eps) * weight)
//   norm_before_gate = 1:  v = y;            out = T(v / sqrt(mean_g(v^2) + eps) * weight * silu(z))
//
// Work split: one task = a block of whole rows (about kGatedRmsNormTaskElems elements, at least
// one row), so a group is summed in one place and tasks share nothing but read-only inputs.
// Each group is read twice (sum of squares, then rescale); v is recomputed in the second pass
// rather than kept, so the kernel needs no scratch whatever group_size is (a group of the 2.7b
// model is 5120 channels, still in L1 for the second read).
#pragma once

#include <algorithm>
#include <cmath>

#include "mambac-ops/custom-ops/src/kernel_abi.rs.h"
#include "simd.h"

namespace mambac {
namespace MAMBAC_ISA {

constexpr size_t kGatedRmsNormTaskElems = 1 << 15;

static inline size_t gated_rms_norm_rows_per_task(const GatedRmsNormParams& p) {
  return std::max<size_t>(1, kGatedRmsNormTaskElems / std::max<size_t>(1, p.d));
}

// The value normalised, for n <= VW channels from c (lanes past n are 0: y and silu(0) are).
template <class E, bool kNormBeforeGate>
static inline vf gated_rms_norm_value(const typename E::T* y, const typename E::T* z, size_t c, int n) {
  const vf yv = load_n<E>(y + c, n);
  return kNormBeforeGate ? yv : yv * vsilu(load_n<E>(z + c, n));
}

template <class E, bool kNormBeforeGate>
static void gated_rms_norm_row(const GatedRmsNormParams& p, size_t row) {
  using T = typename E::T;
  const T* y = reinterpret_cast<const T*>(p.y) + row * p.d;
  const T* z = reinterpret_cast<const T*>(p.z) + row * p.z_stride;
  const float* w = reinterpret_cast<const float*>(p.weight);
  T* out = reinterpret_cast<T*>(p.out) + row * p.d;
  const size_t G = p.group_size;

  for (size_t g0 = 0; g0 < p.d; g0 += G) {
    const size_t g1 = g0 + G;
    // Two accumulators: the add chain of one would bound the pass by its latency.
    vf acc0 = splat(0.0f), acc1 = splat(0.0f);
    size_t c = g0;
    for (; c + 2 * VW <= g1; c += 2 * VW) {
      const vf v0 = gated_rms_norm_value<E, kNormBeforeGate>(y, z, c, VW);
      const vf v1 = gated_rms_norm_value<E, kNormBeforeGate>(y, z, c + VW, VW);
      acc0 += v0 * v0;
      acc1 += v1 * v1;
    }
    for (; c < g1; c += VW) {
      const vf v = gated_rms_norm_value<E, kNormBeforeGate>(y, z, c, static_cast<int>(std::min<size_t>(VW, g1 - c)));
      acc0 += v * v;
    }
    float sum = 0.0f;
    const vf acc = acc0 + acc1;
    for (int l = 0; l < VW; ++l) sum += acc[l];
    const vf inv = splat(1.0f / std::sqrt(sum / static_cast<float>(G) + p.eps));

    for (c = g0; c < g1; c += VW) {
      const int n = static_cast<int>(std::min<size_t>(VW, g1 - c));
      vf o = gated_rms_norm_value<E, kNormBeforeGate>(y, z, c, n) * inv * load_n<F32>(w + c, n);
      if (kNormBeforeGate) o *= vsilu(load_n<E>(z + c, n));
      store_n<E>(out + c, o, n);
    }
  }
}

template <class E>
static void gated_rms_norm_task(const GatedRmsNormParams& p, size_t task) {
  const size_t per = gated_rms_norm_rows_per_task(p);
  const size_t end = std::min(p.rows, (task + 1) * per);
  for (size_t row = task * per; row < end; ++row) {
    if (p.norm_before_gate) {
      gated_rms_norm_row<E, true>(p, row);
    } else {
      gated_rms_norm_row<E, false>(p, row);
    }
  }
}

size_t gated_rms_norm_tasks(const GatedRmsNormParams& p) {
  if (p.rows == 0 || p.d == 0 || p.group_size == 0) return 0;
  const size_t per = gated_rms_norm_rows_per_task(p);
  return (p.rows + per - 1) / per;
}

void gated_rms_norm_run(const GatedRmsNormParams& p, size_t task) {
  switch (p.elem) {
    case ElemType::F16: return gated_rms_norm_task<F16>(p, task);
    case ElemType::BF16: return gated_rms_norm_task<BF16>(p, task);
    default: return gated_rms_norm_task<F32>(p, task);
  }
}

}  // namespace MAMBAC_ISA
}  // namespace mambac
