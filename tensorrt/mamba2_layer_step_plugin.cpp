// Mamba2LayerStep as a TensorRT plugin (docs/decode-graph.md "Mamba2LayerStep"): one Mamba-2
// layer's decode step. Outputs residual_out [B, 1, H] float32, conv_state_out [B, conv_dim, K-1]
// T, ssm_state_out [B, heads, head_dim, N] float32; attributes epsilon, dt_min, dt_max,
// norm_before_gate. The kernels' float32 scratch is TensorRT's workspace. What it shares with
// MambaLayerStep is layer_step_common.h's.
#include <cstring>
#include <limits>

#include "layer_step_common.h"
#include "plugin_impl.h"

namespace mambac::trt {

struct Mamba2LayerStepOp : LayerStepShared<Mamba2LayerStepOp> {
  static constexpr const char* kName = "Mamba2LayerStep";
  static constexpr size_t kSlots = kMamba2LayerStepInputs;
  static constexpr int kSsmStateRank = 4;
  enum {
    CONV_STATE, SSM_STATE, RESIDUAL, NORM_WEIGHT, IN_PROJ_WEIGHT, IN_PROJ_BIAS, CONV_WEIGHT, CONV_BIAS, DT_BIAS, A, D,
    GATE_NORM_WEIGHT, OUT_PROJ_WEIGHT, OUT_PROJ_BIAS
  };
  using Params = Mamba2LayerStepParams;

  float epsilon = 1e-5f;
  float dt_min = 0;
  float dt_max = std::numeric_limits<float>::infinity();
  int32_t norm_before_gate = 0;

  static const std::vector<FieldSpec>& fields() {
    static const std::vector<FieldSpec> f = {{"epsilon", FieldKind::Float},
                                             {"dt_min", FieldKind::Float},
                                             {"dt_max", FieldKind::Float},
                                             {"norm_before_gate", FieldKind::Int}};
    return f;
  }
  void set_field(const char* name, const FieldValue& v) {
    if (!std::strcmp(name, "epsilon")) {
      check_epsilon(kName, v.f);
      epsilon = v.f;
    } else if (!std::strcmp(name, "dt_min")) {
      dt_min = v.f;
    } else if (!std::strcmp(name, "dt_max")) {
      dt_max = v.f;
    } else {
      norm_before_gate = flag_field(kName, name, v);
    }
  }
  void validate() const { check_dt_limit(kName, dt_min, dt_max); }
  FieldValue get_field(const char* name) const {
    FieldValue v;
    if (!std::strcmp(name, "norm_before_gate")) {
      v.i = norm_before_gate;
    } else {
      v.f = !std::strcmp(name, "epsilon") ? epsilon : !std::strcmp(name, "dt_min") ? dt_min : dt_max;
    }
    return v;
  }

  static Params check(const TensorDesc* slots) { return check_mamba2_layer_step(slots, kSlots); }
  void finish(Params& p) const {
    p.eps = epsilon;
    p.dt_min = dt_min;
    p.dt_max = dt_max;
    p.norm_before_gate = norm_before_gate == 1;
    check_mamba2_layer_step_cuda_limits(p);  // throws std::invalid_argument, as the checks do
  }

  static bool f32_input(size_t s) { return shared_f32_input(s) || s == GATE_NORM_WEIGHT; }

  static size_t workspace(const Params&, const Params& max) {
    return mambac_cuda_mamba2_decode_layer_scratch_bytes(&max);
  }

  static int enqueue(Params& p, const void* const* in, void* const* out, void* ws, cudaStream_t stream) {
    if (p.batch == 0) return 0;
    wire_shared(p, in, out, ws);
    p.gate_norm_weight = addr(in[GATE_NORM_WEIGHT]);
    return mambac_cuda_mamba2_decode_layer(&p, stream);
  }
};

IPluginCreatorInterface* mamba2_layer_step_creator() {
  static Creator<Mamba2LayerStepOp> creator;
  return &creator;
}

}  // namespace mambac::trt
