// Picks the CPU kernel build once per process: the widest ISA the CPU has, lowered (never
// raised) by env MAMBAC_CPU_ISA=generic|avx2|avx512 so tests and benchmarks can reach every build.
#include <cstdlib>
#include <cstring>

#include "isa_entry.h"
#include "mambac-ops/custom-ops/src/kernel_abi.rs.h"
#include "mambac/cpu_kernels.h"

namespace mambac {
namespace {

enum class Isa { Generic = 0, Avx2 = 1, Avx512 = 2 };

Isa detect() {
  Isa best = Isa::Generic;
#if MAMBAC_HAVE_X86_ISAS
  __builtin_cpu_init();
  // Every CPU with AVX-512F or with AVX2+FMA also has F16C (Haswell, Zen and later).
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) {
    best = Isa::Avx512;
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    best = Isa::Avx2;
  }
#endif
  if (const char* want = std::getenv("MAMBAC_CPU_ISA")) {
    Isa w = best;
    if (std::strcmp(want, "generic") == 0) w = Isa::Generic;
    if (std::strcmp(want, "avx2") == 0) w = Isa::Avx2;
    if (std::strcmp(want, "avx512") == 0) w = Isa::Avx512;
    if (static_cast<int>(w) < static_cast<int>(best)) best = w;
  }
  return best;
}

Isa isa() {
  static const Isa chosen = detect();  // thread-safe one-time init
  return chosen;
}

}  // namespace

#if MAMBAC_HAVE_X86_ISAS
#define MAMBAC_DISPATCH(fn, ...)                                 \
  switch (isa()) {                                               \
    case Isa::Avx512: return avx512::fn(__VA_ARGS__);            \
    case Isa::Avx2: return avx2::fn(__VA_ARGS__);                \
    default: return generic::fn(__VA_ARGS__);                    \
  }
#else
#define MAMBAC_DISPATCH(fn, ...) return generic::fn(__VA_ARGS__);
#endif

size_t selective_scan_cpu_tasks(const SelectiveScanParams& p) { MAMBAC_DISPATCH(scan_tasks, p) }
void selective_scan_cpu_run(const SelectiveScanParams& p, size_t task) { MAMBAC_DISPATCH(scan_run, p, task) }
size_t causal_conv1d_cpu_tasks(const CausalConv1dParams& p) { MAMBAC_DISPATCH(conv_tasks, p) }
void causal_conv1d_cpu_run(const CausalConv1dParams& p, size_t task) { MAMBAC_DISPATCH(conv_run, p, task) }
size_t add_rms_norm_cpu_tasks(const AddRmsNormParams& p) { MAMBAC_DISPATCH(add_rms_norm_tasks, p) }
void add_rms_norm_cpu_run(const AddRmsNormParams& p, size_t task) { MAMBAC_DISPATCH(add_rms_norm_run, p, task) }
size_t gated_rms_norm_cpu_tasks(const GatedRmsNormParams& p) { MAMBAC_DISPATCH(gated_rms_norm_tasks, p) }
void gated_rms_norm_cpu_run(const GatedRmsNormParams& p, size_t task) { MAMBAC_DISPATCH(gated_rms_norm_run, p, task) }

rust::Str cpu_isa_name() {
  switch (isa()) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "generic";
  }
}

}  // namespace mambac
