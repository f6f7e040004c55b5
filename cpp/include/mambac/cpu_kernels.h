// CPU kernels of the fused ops. They know nothing about ONNX Runtime: a caller splits the work
// into `*_tasks(p)` independent items and runs each with `*_run(p, i)`, on whatever threads it
// has (the ORT op uses the session's intra-op pool). Params must have passed the shape check.
#pragma once

#include <cstddef>

#include "rust/cxx.h"

namespace mambac {

struct SelectiveScanParams;
struct SsdScanParams;
struct CausalConv1dParams;
struct AddRmsNormParams;
struct GatedRmsNormParams;

size_t selective_scan_cpu_tasks(const SelectiveScanParams& p);
// Throws std::bad_alloc only (large dstate needs heap scratch).
void selective_scan_cpu_run(const SelectiveScanParams& p, size_t task);

// One task per (batch row, head); the step-by-step recurrence in float32 (cpp/cpu/ssd_scan.cpp).
size_t ssd_scan_cpu_tasks(const SsdScanParams& p);
// Throws std::bad_alloc only (the task's [head_dim, dstate] state).
void ssd_scan_cpu_run(const SsdScanParams& p, size_t task);

size_t causal_conv1d_cpu_tasks(const CausalConv1dParams& p);
void causal_conv1d_cpu_run(const CausalConv1dParams& p, size_t task);

// One task per block of whole rows (cpp/cpu/add_rms_norm_impl.h); float32 sums.
size_t add_rms_norm_cpu_tasks(const AddRmsNormParams& p);
void add_rms_norm_cpu_run(const AddRmsNormParams& p, size_t task);

// One task per block of whole rows (cpp/cpu/gated_rms_norm_impl.h); float32 sums.
size_t gated_rms_norm_cpu_tasks(const GatedRmsNormParams& p);
void gated_rms_norm_cpu_run(const GatedRmsNormParams& p, size_t task);

// Which build of the kernels runs: "avx512", "avx2" or "generic".
rust::Str cpu_isa_name();

}  // namespace mambac
