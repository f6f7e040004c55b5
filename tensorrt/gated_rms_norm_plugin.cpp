// GatedRmsNorm as a TensorRT plugin (docs/op-contract.md "GatedRmsNorm"): inputs y (T), z (T,
// whole or read at z_offset of a packed last axis), weight (float32); output out [batch, seqlen, d]
// T; attributes group_size (required), epsilon, norm_before_gate, z_offset.
#include <algorithm>
#include <array>
#include <cstring>
#include <stdexcept>

#include "plugin_impl.h"

namespace mambac::trt {

struct GatedRmsNormOp {
  static constexpr const char* kName = "GatedRmsNorm";
  static constexpr size_t kSlots = kGatedRmsNormInputs;
  static constexpr int kOutputs = 1;
  enum { Y, Z, WEIGHT };
  using Params = GatedRmsNormParams;

  int32_t group_size = 0;  // 0: not set (the ORT op has no default either)
  float epsilon = 1e-5f;
  int32_t norm_before_gate = 0;
  int32_t z_offset = kWhole;

  static const std::vector<FieldSpec>& fields() {
    static const std::vector<FieldSpec> f = {{"group_size", FieldKind::Int},
                                             {"epsilon", FieldKind::Float},
                                             {"norm_before_gate", FieldKind::Int},
                                             {"z_offset", FieldKind::Int}};
    return f;
  }
  void set_field(const char* name, const FieldValue& v) {
    if (!std::strcmp(name, "group_size")) {
      if (v.i < 1) {
        throw std::invalid_argument(std::string(kName) + ": attribute 'group_size' is " + std::to_string(v.i) +
                                    ", expected a positive number");
      }
      group_size = v.i;
    } else if (!std::strcmp(name, "epsilon")) {
      check_epsilon(kName, v.f);
      epsilon = v.f;
    } else if (!std::strcmp(name, "z_offset")) {
      z_offset = v.i;
    } else {
      norm_before_gate = flag_field(kName, name, v);
    }
  }
  void validate() const {
    if (group_size == 0) {
      throw std::invalid_argument(std::string(kName) +
                                  ": attribute 'group_size' is missing (channels a group: d / ngroups)");
    }
  }
  FieldValue get_field(const char* name) const {
    FieldValue v;
    if (!std::strcmp(name, "group_size")) {
      v.i = group_size;
    } else if (!std::strcmp(name, "epsilon")) {
      v.f = epsilon;
    } else if (!std::strcmp(name, "z_offset")) {
      v.i = z_offset;
      v.absent = z_offset == kWhole;
    } else {
      v.i = norm_before_gate;
    }
    return v;
  }

  Params check(const TensorDesc* slots) const {
    std::array<TensorDesc, kSlots> d;
    std::copy(slots, slots + kSlots, d.begin());
    mark_slice(d[Z], z_offset);
    return check_gated_rms_norm(d.data(), kSlots, group_size);
  }
  void finish(Params& p) const {
    p.eps = epsilon;
    p.norm_before_gate = norm_before_gate != 0;
  }

  static bool f32_input(size_t s) { return s == WEIGHT; }
  static bool f32_output(int) { return false; }

  static const std::vector<std::pair<size_t, int>>& indexed_ranks() {
    static const std::vector<std::pair<size_t, int>> r = {{Y, 3}};
    return r;
  }
  // y's shape: a sliced z's last axis is longer.
  static void output_shapes(const DimsExprs* const* in, DimsExprs* out, IExprBuilder&) { out[0] = *in[Y]; }

  static size_t workspace(const Params&, const Params&) { return 0; }

  int enqueue(Params& p, const void* const* in, void* const* out, void*, cudaStream_t stream) const {
    if (p.rows == 0) return 0;
    auto addr = [](const void* ptr) { return reinterpret_cast<size_t>(ptr); };
    p.y = addr(in[Y]);
    p.z = slice_addr(in[Z], z_offset, p.elem);
    p.weight = addr(in[WEIGHT]);
    p.out = addr(out[0]);
    return mambac_cuda_gated_rms_norm(&p, stream);
  }
};

IPluginCreatorInterface* gated_rms_norm_creator() {
  static Creator<GatedRmsNormOp> creator;
  return &creator;
}

}  // namespace mambac::trt
