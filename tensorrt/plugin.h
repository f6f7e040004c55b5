// The TensorRT side of the fused ops: one IPluginV3 class template (IPluginV3OneCore / OneBuild /
// OneRuntime) over a small per-op description (selective_scan_plugin.cpp, ssd_scan_plugin.cpp,
// causal_conv1d_plugin.cpp, layer_step_plugin.cpp, mamba2_layer_step_plugin.cpp,
// add_rms_norm_plugin.cpp, gated_rms_norm_plugin.cpp; the two layer steps' shared part in
// layer_step_common.h), and one IPluginCreatorV3One per op (entry.cpp).
//
// The shape and type rules are cpp/shape_check.cpp's, the kernels cpp/cuda's c_api.cu: this layer
// only maps TensorRT's tensors onto the op's input slots, parses the node attributes (plugin
// fields), and turns every failure into a logged message and a failing return code. Every
// virtual entry point is noexcept and catches everything: nothing unwinds into TensorRT.
#pragma once

#include <NvInferRuntime.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "mambac-ops/custom-ops/src/kernel_abi.rs.h"
#include "mambac/shape_check.h"

// The CUDA kernels' C entry points (cpp/cuda/c_api.cu), linked in statically.
extern "C" {
int mambac_cuda_selective_scan(const mambac::SelectiveScanParams* p, void* stream) noexcept;
int mambac_cuda_ssd_scan(const mambac::SsdScanParams* p, void* stream) noexcept;
size_t mambac_cuda_ssd_scan_scratch_bytes_bound(const mambac::SsdScanParams* p, size_t min_seqlen) noexcept;
int mambac_cuda_causal_conv1d(const mambac::CausalConv1dParams* p, void* stream) noexcept;
int mambac_cuda_add_rms_norm(const mambac::AddRmsNormParams* p, void* stream) noexcept;
int mambac_cuda_gated_rms_norm(const mambac::GatedRmsNormParams* p, void* stream) noexcept;
int mambac_cuda_decode_layer(const mambac::MambaLayerStepParams* p, void* stream) noexcept;
size_t mambac_cuda_decode_layer_scratch_bytes(const mambac::MambaLayerStepParams* p) noexcept;
int mambac_cuda_mamba2_decode_layer(const mambac::Mamba2LayerStepParams* p, void* stream) noexcept;
size_t mambac_cuda_mamba2_decode_layer_scratch_bytes(const mambac::Mamba2LayerStepParams* p) noexcept;
const char* mambac_cuda_error_string(int err) noexcept;
}

namespace mambac::trt {

using namespace nvinfer1;

constexpr const char* kNamespace = "mambac";
constexpr const char* kVersion = "1";
// Not an op attribute: which input slots the node fills, for nodes with an absent optional input
// before a present one (an ONNX empty input name); see docs/tensorrt.md.
constexpr const char* kPresentInputs = "present_inputs";

// Logs an error through the logger TensorRT handed to setLoggerFinder (stderr without one).
void log_error(const std::string& msg) noexcept;

// ONNX TensorProto element code of a TensorRT type (what the shape checks speak).
int32_t onnx_code(DataType t) noexcept;

enum class FieldKind { Int, Float, String };

// One node attribute as a plugin field.
struct FieldSpec {
  const char* name;
  FieldKind kind;
};

// A parsed field value (only the member of its kind is used).
struct FieldValue {
  int32_t i = 0;
  float f = 0;
  std::string s;
  bool absent = false;  // an optional field the node does not set: not serialized
};

// The op-specific part of a plugin. `Op` (a plain struct) provides:
//   static constexpr const char* kName; static constexpr size_t kSlots; static constexpr int kOutputs;
//   using Params = ...Params;
//   static const std::vector<FieldSpec>& fields();
//   void set_field(const char* name, const FieldValue& v);   // throws std::invalid_argument
//   void validate() const;                                   // checks between fields, once all are set
//   FieldValue get_field(const char* name) const;
//   Params check(const TensorDesc* slots) const;             // the shared shape check (may be static)
//   void finish(Params& p) const;                            // attributes into the params; limits
//   static bool f32_input(size_t slot); static bool f32_output(int k);
//   static void output_shapes(const DimsExprs* const* slot_dims, DimsExprs* out, IExprBuilder& b);  // or const
//   static const std::vector<std::pair<size_t,int>>& indexed_ranks();  // (slot, rank) read by output_shapes; or const
//   static size_t workspace(const Params& min, const Params& max);  // at the profile's min and max shapes
//   int enqueue(Params& p, void const* const* slot_ptrs, void* const* outs, void* ws, cudaStream_t s) const;  // or static
// The plugin class template is instantiated in each op's file (plugin_impl.h).

// A 0/1 int field's value as a bool; any other value is refused as the ORT op's flags are
// (custom-ops/src/attributes.rs `flag_or`).
bool flag_field(const char* op, const char* name, const FieldValue& v);

// The `epsilon` field (the layer steps', AddRmsNorm's): finite and positive, as the ORT ops check it.
void check_epsilon(const char* op, float eps);

// The fields of an op whose one attribute is `epsilon` (MambaLayerStep, AddRmsNorm): the Op
// description's fields, set_field, validate and get_field, for `struct XOp : EpsilonField<XOp>`.
template <class Op>
struct EpsilonField {
  float epsilon = 1e-5f;

  static const std::vector<FieldSpec>& fields() {
    static const std::vector<FieldSpec> f = {{"epsilon", FieldKind::Float}};
    return f;
  }
  void set_field(const char*, const FieldValue& v) {
    check_epsilon(Op::kName, v.f);
    epsilon = v.f;
  }
  void validate() const {}
  FieldValue get_field(const char*) const {
    FieldValue v;
    v.f = epsilon;
    return v;
  }
};

// The dt clamp's fields `dt_min` (below +inf) and `dt_max` (at least dt_min), checked as the ORT
// ops check them (custom-ops/src/ssd_scan.rs `dt_limit`; SsdScan and Mamba2LayerStep).
void check_dt_limit(const char* op, float dt_min, float dt_max);

// A float as Rust's `{}` shows an f32 (the ORT op's attribute messages): the shortest digits that
// read back the same, never an exponent ("0.00001", "100000000000000000000"), "NaN", "inf", "-inf".
std::string float_text(float v);

// The `<input>_offset` fields of SelectiveScan, SsdScan, CausalConv1d and GatedRmsNorm (docs/op-contract.md "Sliced
// inputs"). A plugin serializes every field it declares, so an input read whole is stored as
// kWhole (INT32_MIN, never a valid offset); the ORT op's "attribute absent".
constexpr int32_t kWhole = INT32_MIN;

// Marks slot `d` as read from channel `offset` of its last axis (unless kWhole), for the shape
// check, which validates the offset.
inline void mark_slice(TensorDesc& d, int32_t offset) {
  if (offset == kWhole) return;
  d.sliced = true;
  d.offset = offset;
}

// The address of the first element the op reads of a (checked) input: the buffer's, moved on
// by the offset. Null stays null (an absent input).
inline size_t slice_addr(const void* ptr, int32_t offset, ElemType e) {
  const size_t addr = reinterpret_cast<size_t>(ptr);
  if (!ptr || offset == kWhole) return addr;
  return addr + static_cast<size_t>(offset) * (e == ElemType::F32 ? 4 : 2);
}

// Maps TensorRT's input positions onto the op's slots: with `present_inputs` given, its set bits
// in order; else the first `given` slots. Throws with a message naming the op.
std::vector<size_t> slot_map(const char* op, size_t slots, int64_t present_mask, int32_t given);

// The creators of this library, in a fixed order (entry.cpp).
IPluginCreatorInterface* const* creators(int32_t& count) noexcept;

}  // namespace mambac::trt
