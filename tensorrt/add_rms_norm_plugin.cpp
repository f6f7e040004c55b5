// AddRmsNorm as a TensorRT plugin (docs/op-contract.md "AddRmsNorm"): inputs x (T), residual
// (float32, optional), weight (float32); outputs y [batch, seqlen, hidden] T and residual_out
// [batch, seqlen, hidden] float32; attribute epsilon. The first layer's node has no residual
// (present_inputs 0b101).
#include "plugin_impl.h"

namespace mambac::trt {

struct AddRmsNormOp : EpsilonField<AddRmsNormOp> {
  static constexpr const char* kName = "AddRmsNorm";
  static constexpr size_t kSlots = kAddRmsNormInputs;
  static constexpr int kOutputs = 2;
  enum { X, RESIDUAL, WEIGHT };
  using Params = AddRmsNormParams;

  static Params check(const TensorDesc* slots) { return check_add_rms_norm(slots, kSlots); }
  void finish(Params& p) const { p.eps = epsilon; }

  static bool f32_input(size_t s) { return s == RESIDUAL || s == WEIGHT; }
  static bool f32_output(int k) { return k == 1; }

  static const std::vector<std::pair<size_t, int>>& indexed_ranks() {
    static const std::vector<std::pair<size_t, int>> r = {{X, 3}};
    return r;
  }
  static void output_shapes(const DimsExprs* const* in, DimsExprs* out, IExprBuilder&) {
    out[0] = *in[X];
    out[1] = *in[X];
  }

  static size_t workspace(const Params&, const Params&) { return 0; }

  static int enqueue(Params& p, const void* const* in, void* const* out, void*, cudaStream_t stream) {
    if (p.rows == 0) return 0;
    auto addr = [](const void* ptr) { return reinterpret_cast<size_t>(ptr); };
    p.x = addr(in[X]);
    p.residual = addr(in[RESIDUAL]);
    p.weight = addr(in[WEIGHT]);
    p.y = addr(out[0]);
    p.residual_out = addr(out[1]);
    return mambac_cuda_add_rms_norm(&p, stream);
  }
};

IPluginCreatorInterface* add_rms_norm_creator() {
  static Creator<AddRmsNormOp> creator;
  return &creator;
}

}  // namespace mambac::trt
