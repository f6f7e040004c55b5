// Shape and type checks of the fused ops: the one C++ place that decides whether a set of inputs
// is valid (docs/op-contract.md). The ORT op (through cxx) and the TensorRT plugin both call
// these before running a kernel; the Rust compiler has its own twin, tested to agree.
//
// Each check takes the op's inputs in docs/op-contract.md order (absent optional inputs: present = false),
// throws std::invalid_argument naming the input, the expected and the actual shape or type, and
// otherwise returns the kernel params with the sizes and element type filled and every pointer 0.
// The checks take a plain array (shape_check.cpp); the rust::Slice overloads (shape_check_cxx.cpp,
// for the cxx bridge) forward to them, so C++ callers outside cargo (the TensorRT plugin) need no
// Rust runtime.
#pragma once

#include <cstdint>
#include <string>

#include "rust/cxx.h"

namespace mambac {

struct TensorDesc;
struct SelectiveScanParams;
struct SsdScanParams;
struct SsdScanDims;
struct CausalConv1dParams;
struct AddRmsNormParams;
struct GatedRmsNormParams;
struct MambaLayerStepParams;
struct Mamba2LayerStepParams;

// ONNX TensorProto.DataType codes the ops use.
constexpr int32_t kOnnxFloat = 1;
constexpr int32_t kOnnxFloat16 = 10;
constexpr int32_t kOnnxBFloat16 = 16;

// SsdScanDims' value of an attribute the node does not set (Rust: SsdScanDims::UNSET).
constexpr int64_t kUnsetDim = INT64_MIN;

constexpr size_t kSelectiveScanInputs = 9;
constexpr size_t kSsdScanInputs = 8;
constexpr size_t kCausalConv1dInputs = 4;
constexpr size_t kAddRmsNormInputs = 3;
constexpr size_t kGatedRmsNormInputs = 3;
constexpr size_t kMambaLayerStepInputs = 15;
constexpr size_t kMamba2LayerStepInputs = 14;

SelectiveScanParams check_selective_scan(const TensorDesc* inputs, size_t count);
// `dims`: SsdScan's head_dim / ngroups / dstate attributes (kUnsetDim: not set).
SsdScanParams check_ssd_scan(const TensorDesc* inputs, size_t count, const SsdScanDims& dims);
CausalConv1dParams check_causal_conv1d(const TensorDesc* inputs, size_t count);
AddRmsNormParams check_add_rms_norm(const TensorDesc* inputs, size_t count);
// group_size: the node's attribute (d / ngroups); it must divide y's last dim.
GatedRmsNormParams check_gated_rms_norm(const TensorDesc* inputs, size_t count, int64_t group_size);
MambaLayerStepParams check_mamba_layer_step(const TensorDesc* inputs, size_t count);
Mamba2LayerStepParams check_mamba2_layer_step(const TensorDesc* inputs, size_t count);

SelectiveScanParams check_selective_scan(rust::Slice<const TensorDesc> inputs);
SsdScanParams check_ssd_scan(rust::Slice<const TensorDesc> inputs, const SsdScanDims& dims);
CausalConv1dParams check_causal_conv1d(rust::Slice<const TensorDesc> inputs);
AddRmsNormParams check_add_rms_norm(rust::Slice<const TensorDesc> inputs);
GatedRmsNormParams check_gated_rms_norm(rust::Slice<const TensorDesc> inputs, int64_t group_size);
MambaLayerStepParams check_mamba_layer_step(rust::Slice<const TensorDesc> inputs);
Mamba2LayerStepParams check_mamba2_layer_step(rust::Slice<const TensorDesc> inputs);

// The CUDA decode layer's own limits (the CPU kernel has none), on checked params: the ORT op's
// CUDA kernel and the TensorRT plugin both call it, so both refuse with the same message.
void check_mamba_layer_step_cuda_limits(const MambaLayerStepParams& p);
// Same for the CUDA Mamba-2 decode layer (mamba2_decode_layer.h).
void check_mamba2_layer_step_cuda_limits(const Mamba2LayerStepParams& p);
// SsdScan's CUDA limit (dstate up to 512; the CPU kernel has none), likewise shared.
void check_ssd_scan_cuda_limits(const SsdScanParams& p);

// SsdScan's message (without the op's name) for a packed x or B (its `<input>_offset` set)
// whose dim attributes are not all set; "" when none is missing. check_ssd_scan refuses with
// it, and the TensorRT plugin's output shapes too.
std::string ssd_scan_missing_dim(bool x_packed, bool b_packed, const SsdScanDims& dims);

// "float32", "float16", ... for messages; "type code N" for codes it does not know.
std::string onnx_type_name(int32_t code);

}  // namespace mambac
