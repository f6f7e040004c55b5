// AddRmsNorm on the CPU (docs/op-contract.md "AddRmsNorm"), written once over simd.h and
// instantiated per ISA by isa_*.cpp beside kernels_impl.h:
//
//   s            = residual + float32(x)        (float32(x) when residual is absent)
//   residual_out = s                            float32
//   y            = T(s / sqrt(mean(s^2) + eps) * weight)
//
// Work split: one task = a block of whole rows (about kAddRmsNormTaskElems elements, at least one
// row), so a task's rows are summed in one place and tasks share nothing but read-only inputs.
// Each row is read twice: the first pass sums s^2 and writes residual_out, the second rescales;
// the second reads residual_out back (a row of the 2.8b model is 10 KiB, still in L1) when it was
// written, else recomputes s from x and residual.
#pragma once

#include <algorithm>
#include <cmath>

#include "mambac-ops/custom-ops/src/kernel_abi.rs.h"
#include "simd.h"

namespace mambac {
namespace MAMBAC_ISA {

constexpr size_t kAddRmsNormTaskElems = 1 << 15;

static inline size_t add_rms_norm_rows_per_task(const AddRmsNormParams& p) {
  return std::max<size_t>(1, kAddRmsNormTaskElems / std::max<size_t>(1, p.hidden));
}

// s for the VW (or n) channels from h of one row.
template <class E>
static inline vf add_rms_norm_sum(const typename E::T* x, const float* r, size_t h, int n) {
  const vf xv = load_n<E>(x + h, n);
  return r ? load_n<F32>(r + h, n) + xv : xv;
}

template <class E>
static void add_rms_norm_row(const AddRmsNormParams& p, size_t row) {
  using T = typename E::T;
  const size_t H = p.hidden;
  const T* x = reinterpret_cast<const T*>(p.x) + row * H;
  const float* r = p.residual ? reinterpret_cast<const float*>(p.residual) + row * H : nullptr;
  const float* w = reinterpret_cast<const float*>(p.weight);
  T* y = reinterpret_cast<T*>(p.y) + row * H;
  float* r_out = p.residual_out ? reinterpret_cast<float*>(p.residual_out) + row * H : nullptr;

  // Two accumulators: the add chain of one would bound the pass by its latency.
  vf acc0 = splat(0.0f), acc1 = splat(0.0f);
  size_t h = 0;
  for (; h + 2 * VW <= H; h += 2 * VW) {
    const vf s0 = add_rms_norm_sum<E>(x, r, h, VW), s1 = add_rms_norm_sum<E>(x, r, h + VW, VW);
    if (r_out) {
      store_n<F32>(r_out + h, s0, VW);
      store_n<F32>(r_out + h + VW, s1, VW);
    }
    acc0 += s0 * s0;
    acc1 += s1 * s1;
  }
  for (; h < H; h += VW) {
    const int n = static_cast<int>(std::min<size_t>(VW, H - h));
    const vf s = add_rms_norm_sum<E>(x, r, h, n);  // lanes past n are 0
    if (r_out) store_n<F32>(r_out + h, s, n);
    acc0 += s * s;
  }
  float sum = 0.0f;
  const vf acc = acc0 + acc1;
  for (int l = 0; l < VW; ++l) sum += acc[l];
  const vf inv = splat(1.0f / std::sqrt(sum / static_cast<float>(H) + p.eps));

  for (h = 0; h < H; h += VW) {
    const int n = static_cast<int>(std::min<size_t>(VW, H - h));
    const vf s = r_out ? load_n<F32>(r_out + h, n) : add_rms_norm_sum<E>(x, r, h, n);
    store_n<E>(y + h, s * inv * load_n<F32>(w + h, n), n);
  }
}

template <class E>
static void add_rms_norm_task(const AddRmsNormParams& p, size_t task) {
  const size_t per = add_rms_norm_rows_per_task(p);
  const size_t end = std::min(p.rows, (task + 1) * per);
  for (size_t row = task * per; row < end; ++row) add_rms_norm_row<E>(p, row);
}

size_t add_rms_norm_tasks(const AddRmsNormParams& p) {
  if (p.rows == 0 || p.hidden == 0) return 0;
  const size_t per = add_rms_norm_rows_per_task(p);
  return (p.rows + per - 1) / per;
}

void add_rms_norm_run(const AddRmsNormParams& p, size_t task) {
  switch (p.elem) {
    case ElemType::F16: return add_rms_norm_task<F16>(p, task);
    case ElemType::BF16: return add_rms_norm_task<BF16>(p, task);
    default: return add_rms_norm_task<F32>(p, task);
  }
}

}  // namespace MAMBAC_ISA
}  // namespace mambac
