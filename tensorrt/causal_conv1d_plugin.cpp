// CausalConv1d as a TensorRT plugin (docs/op-contract.md): inputs x, weight, bias,
// initial_state; outputs y [batch, seqlen, dim] and final_state [batch, dim, width - 1], both T;
// attributes activation and x_offset (x read as a slice of a packed last axis: docs/op-contract.md
// "Sliced inputs").
#include <algorithm>
#include <array>
#include <cstring>
#include <stdexcept>

#include "plugin_impl.h"

namespace mambac::trt {

struct CausalConv1dOp {
  static constexpr const char* kName = "CausalConv1d";
  static constexpr size_t kSlots = kCausalConv1dInputs;
  static constexpr int kOutputs = 2;
  enum { X, WEIGHT, BIAS, INITIAL_STATE };
  using Params = CausalConv1dParams;

  std::string activation = "silu";
  int32_t x_offset = kWhole;

  static const std::vector<FieldSpec>& fields() {
    static const std::vector<FieldSpec> f = {{"activation", FieldKind::String}, {"x_offset", FieldKind::Int}};
    return f;
  }
  void set_field(const char* name, const FieldValue& v) {
    if (!std::strcmp(name, "x_offset")) {
      x_offset = v.i;
      return;
    }
    if (v.s != "silu" && v.s != "none") {
      throw std::invalid_argument(std::string(kName) + ": attribute 'activation' is \"" + v.s +
                                  "\", expected \"silu\" or \"none\"");
    }
    activation = v.s;
  }
  void validate() const {}
  FieldValue get_field(const char* name) const {
    FieldValue v;
    v.s = activation;
    if (!std::strcmp(name, "x_offset")) {
      v.i = x_offset;
      v.absent = x_offset == kWhole;
    }
    return v;
  }

  Params check(const TensorDesc* slots) const {
    std::array<TensorDesc, kSlots> d;
    std::copy(slots, slots + kSlots, d.begin());
    mark_slice(d[X], x_offset);
    return check_causal_conv1d(d.data(), kSlots);
  }
  void finish(Params& p) const { p.silu = activation == "silu"; }

  static bool f32_input(size_t) { return false; }
  static bool f32_output(int) { return false; }

  static const std::vector<std::pair<size_t, int>>& indexed_ranks() {
    static const std::vector<std::pair<size_t, int>> r = {{X, 3}, {WEIGHT, 2}};
    return r;
  }
  static void output_shapes(const DimsExprs* const* in, DimsExprs* out, IExprBuilder& b) {
    // dim from 'weight': a sliced x's last axis is longer.
    out[0] = *in[X];
    out[0].d[2] = in[WEIGHT]->d[0];
    out[1].nbDims = 3;
    out[1].d[0] = in[X]->d[0];
    out[1].d[1] = in[WEIGHT]->d[0];
    out[1].d[2] = b.operation(DimensionOperation::kSUB, *in[WEIGHT]->d[1], *b.constant(1));
  }

  static size_t workspace(const Params&, const Params&) { return 0; }

  int enqueue(Params& p, const void* const* in, void* const* out, void*, cudaStream_t stream) const {
    auto addr = [](const void* ptr) { return reinterpret_cast<size_t>(ptr); };
    p.x = slice_addr(in[X], x_offset, p.elem);
    p.weight = addr(in[WEIGHT]);
    p.bias = addr(in[BIAS]);
    p.initial_state = addr(in[INITIAL_STATE]);
    p.y = addr(out[0]);
    p.final_state = addr(out[1]);
    return mambac_cuda_causal_conv1d(&p, stream);
  }
};

IPluginCreatorInterface* causal_conv1d_creator() {
  static Creator<CausalConv1dOp> creator;
  return &creator;
}

}  // namespace mambac::trt
