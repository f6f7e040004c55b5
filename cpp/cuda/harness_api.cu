// Entry points of the benchmark harness (tools/gpu/*.py, through ctypes), compiled only into
// .device/gpu/libmambac_cuda_harness.so by tools/gpu/build_harness.sh, never into the shipped
// libmambac_ops.so: forced work splits, the decode GEMVs' tuning, and the layout of the kernel
// ABI structs, from which the Python side builds its ctypes structs instead of copying them.
#include <cstddef>
#include <cstdio>
#include <string>

#include "abi.h"
#include "add_rms_norm.h"
#include "causal_conv1d.h"
#include "decode_layer.h"
#include "gated_rms_norm.h"
#include "mamba2_decode_layer.h"
#include "selective_scan.h"
#include "ssd_scan.h"

namespace {

// "name:offset:size;..." for each field, then "sizeof:N". offsetof of a field the struct lacks
// does not compile, so these lists cannot drift from custom-ops/src/kernel_abi.rs.
template <typename S>
struct Layout {
    std::string text;
    void field(const char* name, size_t offset, size_t size) {
        text += std::string(name) + ":" + std::to_string(offset) + ":" + std::to_string(size) + ";";
    }
    const char* done() {
        text += "sizeof:" + std::to_string(sizeof(S));
        return text.c_str();
    }
};

#define MAMBAC_FIELD(S, f) l.field(#f, offsetof(S, f), sizeof(S::f));

const char* scan_layout() {
    using S = mambac::SelectiveScanParams;
    static Layout<S> l;
    if (l.text.empty()) {
        MAMBAC_FIELD(S, batch) MAMBAC_FIELD(S, seqlen) MAMBAC_FIELD(S, dim) MAMBAC_FIELD(S, dstate)
        MAMBAC_FIELD(S, ngroups) MAMBAC_FIELD(S, elem) MAMBAC_FIELD(S, delta_softplus) MAMBAC_FIELD(S, u)
        MAMBAC_FIELD(S, delta) MAMBAC_FIELD(S, a) MAMBAC_FIELD(S, b) MAMBAC_FIELD(S, c) MAMBAC_FIELD(S, d)
        MAMBAC_FIELD(S, z) MAMBAC_FIELD(S, delta_bias) MAMBAC_FIELD(S, initial_state) MAMBAC_FIELD(S, y)
        MAMBAC_FIELD(S, final_state) MAMBAC_FIELD(S, z_stride) MAMBAC_FIELD(S, b_stride) MAMBAC_FIELD(S, c_stride)
        return l.done();
    }
    return l.text.c_str();
}

const char* ssd_layout() {
    using S = mambac::SsdScanParams;
    static Layout<S> l;
    if (l.text.empty()) {
        MAMBAC_FIELD(S, batch) MAMBAC_FIELD(S, seqlen) MAMBAC_FIELD(S, heads) MAMBAC_FIELD(S, head_dim)
        MAMBAC_FIELD(S, ngroups) MAMBAC_FIELD(S, dstate) MAMBAC_FIELD(S, elem) MAMBAC_FIELD(S, dt_softplus)
        MAMBAC_FIELD(S, dt_min) MAMBAC_FIELD(S, dt_max) MAMBAC_FIELD(S, x) MAMBAC_FIELD(S, dt) MAMBAC_FIELD(S, a)
        MAMBAC_FIELD(S, b) MAMBAC_FIELD(S, c) MAMBAC_FIELD(S, d) MAMBAC_FIELD(S, dt_bias)
        MAMBAC_FIELD(S, initial_state) MAMBAC_FIELD(S, y) MAMBAC_FIELD(S, final_state) MAMBAC_FIELD(S, scratch)
        MAMBAC_FIELD(S, dt_stride) MAMBAC_FIELD(S, x_stride) MAMBAC_FIELD(S, b_stride) MAMBAC_FIELD(S, c_stride)
        return l.done();
    }
    return l.text.c_str();
}

const char* conv_layout() {
    using S = mambac::CausalConv1dParams;
    static Layout<S> l;
    if (l.text.empty()) {
        MAMBAC_FIELD(S, batch) MAMBAC_FIELD(S, seqlen) MAMBAC_FIELD(S, dim) MAMBAC_FIELD(S, width)
        MAMBAC_FIELD(S, elem) MAMBAC_FIELD(S, silu) MAMBAC_FIELD(S, x) MAMBAC_FIELD(S, weight)
        MAMBAC_FIELD(S, bias) MAMBAC_FIELD(S, initial_state) MAMBAC_FIELD(S, y) MAMBAC_FIELD(S, final_state)
        MAMBAC_FIELD(S, x_stride)
        return l.done();
    }
    return l.text.c_str();
}

const char* layer_step_layout() {
    using S = mambac::MambaLayerStepParams;
    static Layout<S> l;
    if (l.text.empty()) {
        MAMBAC_FIELD(S, batch) MAMBAC_FIELD(S, hidden) MAMBAC_FIELD(S, inner) MAMBAC_FIELD(S, dstate)
        MAMBAC_FIELD(S, dt_rank) MAMBAC_FIELD(S, width) MAMBAC_FIELD(S, elem) MAMBAC_FIELD(S, eps)
        MAMBAC_FIELD(S, residual_in) MAMBAC_FIELD(S, residual_out) MAMBAC_FIELD(S, conv_state_in)
        MAMBAC_FIELD(S, conv_state_out) MAMBAC_FIELD(S, ssm_state_in) MAMBAC_FIELD(S, ssm_state_out)
        MAMBAC_FIELD(S, norm_weight) MAMBAC_FIELD(S, in_proj_weight) MAMBAC_FIELD(S, in_proj_bias)
        MAMBAC_FIELD(S, conv_weight) MAMBAC_FIELD(S, conv_bias) MAMBAC_FIELD(S, x_proj_weight)
        MAMBAC_FIELD(S, dt_proj_weight) MAMBAC_FIELD(S, dt_bias) MAMBAC_FIELD(S, a) MAMBAC_FIELD(S, d)
        MAMBAC_FIELD(S, out_proj_weight) MAMBAC_FIELD(S, out_proj_bias) MAMBAC_FIELD(S, scratch)
        return l.done();
    }
    return l.text.c_str();
}

const char* mamba2_step_layout() {
    using S = mambac::Mamba2LayerStepParams;
    static Layout<S> l;
    if (l.text.empty()) {
        MAMBAC_FIELD(S, batch) MAMBAC_FIELD(S, hidden) MAMBAC_FIELD(S, heads) MAMBAC_FIELD(S, head_dim)
        MAMBAC_FIELD(S, ngroups) MAMBAC_FIELD(S, dstate) MAMBAC_FIELD(S, width) MAMBAC_FIELD(S, elem)
        MAMBAC_FIELD(S, eps) MAMBAC_FIELD(S, dt_min) MAMBAC_FIELD(S, dt_max) MAMBAC_FIELD(S, norm_before_gate)
        MAMBAC_FIELD(S, residual_in) MAMBAC_FIELD(S, residual_out) MAMBAC_FIELD(S, conv_state_in)
        MAMBAC_FIELD(S, conv_state_out) MAMBAC_FIELD(S, ssm_state_in) MAMBAC_FIELD(S, ssm_state_out)
        MAMBAC_FIELD(S, norm_weight) MAMBAC_FIELD(S, in_proj_weight) MAMBAC_FIELD(S, in_proj_bias)
        MAMBAC_FIELD(S, conv_weight) MAMBAC_FIELD(S, conv_bias) MAMBAC_FIELD(S, dt_bias) MAMBAC_FIELD(S, a)
        MAMBAC_FIELD(S, d) MAMBAC_FIELD(S, gate_norm_weight) MAMBAC_FIELD(S, out_proj_weight)
        MAMBAC_FIELD(S, out_proj_bias) MAMBAC_FIELD(S, scratch)
        return l.done();
    }
    return l.text.c_str();
}

const char* add_norm_layout() {
    using S = mambac::AddRmsNormParams;
    static Layout<S> l;
    if (l.text.empty()) {
        MAMBAC_FIELD(S, rows) MAMBAC_FIELD(S, hidden) MAMBAC_FIELD(S, elem) MAMBAC_FIELD(S, eps) MAMBAC_FIELD(S, x)
        MAMBAC_FIELD(S, residual) MAMBAC_FIELD(S, weight) MAMBAC_FIELD(S, y) MAMBAC_FIELD(S, residual_out)
        return l.done();
    }
    return l.text.c_str();
}

const char* gated_norm_layout() {
    using S = mambac::GatedRmsNormParams;
    static Layout<S> l;
    if (l.text.empty()) {
        MAMBAC_FIELD(S, rows) MAMBAC_FIELD(S, d) MAMBAC_FIELD(S, group_size) MAMBAC_FIELD(S, z_stride)
        MAMBAC_FIELD(S, elem) MAMBAC_FIELD(S, eps) MAMBAC_FIELD(S, norm_before_gate) MAMBAC_FIELD(S, y)
        MAMBAC_FIELD(S, z) MAMBAC_FIELD(S, weight) MAMBAC_FIELD(S, out)
        return l.done();
    }
    return l.text.c_str();
}

// "F32:0;F16:1;BF16:2": the element codes of the ABI's ElemType, from the enum itself.
const char* elem_codes() {
    static const std::string text = "F32:" + std::to_string(int(mambac::ElemType::F32)) +
                                    ";F16:" + std::to_string(int(mambac::ElemType::F16)) +
                                    ";BF16:" + std::to_string(int(mambac::ElemType::BF16));
    return text.c_str();
}

mambac::cuda::DecodeTuning tuning(int rows_per_pass, int k_tile_max, int blocks_per_sm, int tensor_cores,
                                  int dependent_launch, int loads_ahead) {
    mambac::cuda::DecodeTuning t;
    t.dependent_launch = dependent_launch;
    t.loads_ahead = loads_ahead;
    t.rows_per_pass = rows_per_pass;
    t.k_tile_max = k_tile_max;
    t.blocks_per_sm = blocks_per_sm;
    t.tensor_cores = tensor_cores;
    return t;
}

}  // namespace

extern "C" {

// The layout of a kernel ABI struct: which = "SelectiveScanParams", "SsdScanParams",
// "CausalConv1dParams", "MambaLayerStepParams", "Mamba2LayerStepParams", "AddRmsNormParams" or
// "GatedRmsNormParams"; or "ElemType", its codes;
// null for another name. Called once at start-up (not thread-safe).
const char* mambac_harness_abi_layout(const char* which) noexcept {
    const std::string w = which ? which : "";
    if (w == "ElemType") return elem_codes();
    if (w == "SelectiveScanParams") return scan_layout();
    if (w == "SsdScanParams") return ssd_layout();
    if (w == "CausalConv1dParams") return conv_layout();
    if (w == "MambaLayerStepParams") return layer_step_layout();
    if (w == "Mamba2LayerStepParams") return mamba2_step_layout();
    if (w == "AddRmsNormParams") return add_norm_layout();
    if (w == "GatedRmsNormParams") return gated_norm_layout();
    return nullptr;
}

// SelectiveScan with the work split forced (0 = automatic; step: 1 = the per-step kernel, -1 =
// never it).
int mambac_cuda_selective_scan_cfg(const mambac::SelectiveScanParams* p, void* stream, int lanes,
                                   int ch, int w, int s, int cpt, int step) noexcept {
    if (!p) return cudaErrorInvalidValue;
    mambac::cuda::ScanConfig cfg;
    cfg.lanes = lanes;
    cfg.ch = ch;
    cfg.w = w;
    cfg.s = s;
    cfg.cpt = cpt;
    cfg.step = step;
    return mambac::cuda::selective_scan(*p, static_cast<cudaStream_t>(stream), cfg);
}

// SsdScan with the path forced (path: 1 = the step kernel, -1 = the chunked prefill, 0 = by shape)
// and the chunk length (64, 128, 256; 0 = by shape); the scratch bytes for the same choice.
int mambac_cuda_ssd_scan_cfg(const mambac::SsdScanParams* p, void* stream, int path, int chunk) noexcept {
    if (!p) return cudaErrorInvalidValue;
    mambac::cuda::SsdConfig cfg;
    cfg.path = path;
    cfg.chunk = chunk;
    return mambac::cuda::ssd_scan(*p, static_cast<cudaStream_t>(stream), cfg);
}

size_t mambac_cuda_ssd_scan_cfg_scratch_bytes(const mambac::SsdScanParams* p, int path, int chunk) noexcept {
    if (!p) return 0;
    mambac::cuda::SsdConfig cfg;
    cfg.path = path;
    cfg.chunk = chunk;
    return mambac::cuda::ssd_scan_scratch_bytes(*p, cfg);
}

// CausalConv1d with the fast kernel's split forced (channels and steps a thread; 0 = default),
// or the per-step kernel forced (step 1) or ruled out (-1).
int mambac_cuda_causal_conv1d_cfg(const mambac::CausalConv1dParams* p, void* stream, int v, int lt,
                                  int step) noexcept {
    if (!p) return cudaErrorInvalidValue;
    mambac::cuda::ConvConfig cfg;
    cfg.v = v;
    cfg.lt = lt;
    cfg.step = step;
    return mambac::cuda::causal_conv1d(*p, static_cast<cudaStream_t>(stream), cfg);
}

// AddRmsNorm with scalar loads forced (scalar 1) or the vector width by alignment (0).
int mambac_cuda_add_rms_norm_cfg(const mambac::AddRmsNormParams* p, void* stream, int scalar) noexcept {
    if (!p) return cudaErrorInvalidValue;
    mambac::cuda::AddRmsNormConfig cfg;
    cfg.scalar = scalar;
    return mambac::cuda::add_rms_norm(*p, static_cast<cudaStream_t>(stream), cfg);
}

// GatedRmsNorm with scalar loads forced (scalar 1) or the vector width by alignment (0).
int mambac_cuda_gated_rms_norm_cfg(const mambac::GatedRmsNormParams* p, void* stream, int scalar) noexcept {
    if (!p) return cudaErrorInvalidValue;
    mambac::cuda::GatedRmsNormConfig cfg;
    cfg.scalar = scalar;
    return mambac::cuda::gated_rms_norm(*p, static_cast<cudaStream_t>(stream), cfg);
}

// The decode step with the GEMVs' work split forced (decode_layer.h DecodeTuning; zeros = the
// defaults).
int mambac_cuda_decode_layer_tuned(const mambac::MambaLayerStepParams* p, void* stream, int rows_per_pass,
                                   int k_tile_max, int blocks_per_sm, int tensor_cores, int dependent_launch,
                                   int loads_ahead) noexcept {
    if (!p) return cudaErrorInvalidValue;
    const auto t = tuning(rows_per_pass, k_tile_max, blocks_per_sm, tensor_cores, dependent_launch, loads_ahead);
    return mambac::cuda::decode_layer(*p, static_cast<cudaStream_t>(stream), t);
}

// The Mamba-2 decode step with the GEMVs' work split forced, as mambac_cuda_decode_layer_tuned.
int mambac_cuda_mamba2_decode_layer_tuned(const mambac::Mamba2LayerStepParams* p, void* stream, int rows_per_pass,
                                          int k_tile_max, int blocks_per_sm, int tensor_cores, int dependent_launch,
                                   int loads_ahead) noexcept {
    if (!p) return cudaErrorInvalidValue;
    const auto t = tuning(rows_per_pass, k_tile_max, blocks_per_sm, tensor_cores, dependent_launch, loads_ahead);
    return mambac::cuda::mamba2_decode_layer(*p, static_cast<cudaStream_t>(stream), t);
}

}  // extern "C"
