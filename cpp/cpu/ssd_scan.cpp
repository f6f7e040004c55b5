// SsdScan on the CPU (docs/op-contract.md "SsdScan"): the step-by-step recurrence in float32,
// one task per (batch row, head). Correctness first: the chunked SSD algorithm (chunk-local
// matmuls and state passing) is the next step for speed.
//
//   dt_t = clamp(softplus(dt_t + dt_bias), dt_min, dt_max)
//   h_t[p, :] = exp(dt_t * A) * h_{t-1}[p, :] + dt_t * x_t[p] * B_t[g, :]
//   y_t[p]    = <C_t[g, :], h_t[p, :]> + D * x_t[p]
#define MAMBAC_ISA ssd_scalar
#define MAMBAC_VW 4
#include <cmath>
#include <vector>

#include "mambac-ops/custom-ops/src/kernel_abi.rs.h"
#include "mambac/cpu_kernels.h"
#include "simd.h"

namespace mambac {
namespace {

using ssd_scalar::BF16;
using ssd_scalar::F16;
using ssd_scalar::F32;

constexpr size_t kLanes = 8;

// As the reference: torch's softplus threshold, then the clamp; a NaN passes both comparisons.
float step_dt(float raw, float bias, const SsdScanParams& p) {
  float dt = raw + bias;
  if (p.dt_softplus) dt = dt > 20.0f ? dt : std::log1p(std::exp(dt));
  if (dt < p.dt_min) dt = p.dt_min;
  if (dt > p.dt_max) dt = p.dt_max;
  return dt;
}

template <class E>
void run(const SsdScanParams& p, size_t task) {
  using T = typename E::T;
  const size_t b = task / p.heads, h = task % p.heads;
  const size_t nh = p.heads, hd = p.head_dim, n = p.dstate, g = p.ngroups;
  const size_t grp = h / (nh / g);
  const T* x = reinterpret_cast<const T*>(p.x);
  const T* dtp = reinterpret_cast<const T*>(p.dt);
  const T* B = reinterpret_cast<const T*>(p.b);
  const T* C = reinterpret_cast<const T*>(p.c);
  T* y = reinterpret_cast<T*>(p.y);
  const float a = reinterpret_cast<const float*>(p.a)[h];
  const float d = p.d ? reinterpret_cast<const float*>(p.d)[h] : 0.0f;
  const float bias = p.dt_bias ? reinterpret_cast<const float*>(p.dt_bias)[h] : 0.0f;
  const size_t state_at = (b * nh + h) * hd * n;

  std::vector<float> s(hd * n, 0.0f);
  if (p.initial_state) {
    const float* h0 = reinterpret_cast<const float*>(p.initial_state) + state_at;
    s.assign(h0, h0 + hd * n);
  }
  std::vector<float> bt(n), ct(n);
  for (size_t t = 0; t < p.seqlen; ++t) {
    const size_t row = b * p.seqlen + t;
    const float dt = step_dt(E::to_f32(dtp[row * p.dt_stride + h]), bias, p);
    const float decay = std::exp(dt * a);
    // Token rows are *_stride elements apart (more than the row when sliced from a packed axis).
    for (size_t k = 0; k < n; ++k) {
      bt[k] = E::to_f32(B[row * p.b_stride + grp * n + k]);
      ct[k] = E::to_f32(C[row * p.c_stride + grp * n + k]);
    }
    for (size_t q = 0; q < hd; ++q) {
      const size_t xi = (row * nh + h) * hd + q;
      const float xv = E::to_f32(x[row * p.x_stride + h * hd + q]);
      const float dx = dt * xv;
      float* sq = s.data() + q * n;
      // kLanes independent partial sums: the compiler vectorises the loop (one sum would be a
      // strict sequential reduction), and the lanes are added in a fixed order.
      float lane[kLanes] = {};
      size_t k = 0;
      for (; k + kLanes <= n; k += kLanes) {
        for (size_t l = 0; l < kLanes; ++l) {
          sq[k + l] = decay * sq[k + l] + dx * bt[k + l];
          lane[l] += ct[k + l] * sq[k + l];
        }
      }
      for (; k < n; ++k) {
        sq[k] = decay * sq[k] + dx * bt[k];
        lane[0] += ct[k] * sq[k];
      }
      float acc = 0.0f;
      for (size_t l = 0; l < kLanes; ++l) acc += lane[l];
      // D is optional: an absent D adds nothing, not 0 * x (which is NaN for an infinite x).
      y[xi] = E::from_f32(p.d ? acc + d * xv : acc);
    }
  }
  if (p.final_state) {
    float* out = reinterpret_cast<float*>(p.final_state) + state_at;
    std::copy(s.begin(), s.end(), out);
  }
}

}  // namespace

size_t ssd_scan_cpu_tasks(const SsdScanParams& p) { return p.batch * p.heads; }

void ssd_scan_cpu_run(const SsdScanParams& p, size_t task) {
  switch (p.elem) {
    case ElemType::F16: return run<F16>(p, task);
    case ElemType::BF16: return run<BF16>(p, task);
    default: return run<F32>(p, task);
  }
}

}  // namespace mambac
