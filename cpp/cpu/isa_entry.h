// The entry points each ISA build of kernels_impl.h defines, declared for dispatch.cpp.
#pragma once

#include <cstddef>

namespace mambac {

struct SelectiveScanParams;
struct CausalConv1dParams;
struct AddRmsNormParams;
struct GatedRmsNormParams;

#define MAMBAC_DECLARE_ISA(ns)                                    \
  namespace ns {                                                  \
  size_t scan_tasks(const SelectiveScanParams& p);                \
  void scan_run(const SelectiveScanParams& p, size_t task);       \
  size_t conv_tasks(const CausalConv1dParams& p);                 \
  void conv_run(const CausalConv1dParams& p, size_t task);        \
  size_t add_rms_norm_tasks(const AddRmsNormParams& p);           \
  void add_rms_norm_run(const AddRmsNormParams& p, size_t task);  \
  size_t gated_rms_norm_tasks(const GatedRmsNormParams& p);       \
  void gated_rms_norm_run(const GatedRmsNormParams& p, size_t task); \
  }

MAMBAC_DECLARE_ISA(generic)
#if MAMBAC_HAVE_X86_ISAS
MAMBAC_DECLARE_ISA(avx2)
MAMBAC_DECLARE_ISA(avx512)
#endif

#undef MAMBAC_DECLARE_ISA

}  // namespace mambac
