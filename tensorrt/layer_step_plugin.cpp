// MambaLayerStep as a TensorRT plugin (docs/decode-graph.md): one layer's decode step. Outputs
// residual_out [B, 1, H] float32, conv_state_out [B, I, K-1] T, ssm_state_out [B, I, N] float32;
// attribute epsilon. The kernels' float32 scratch is TensorRT's workspace. What it shares with
// Mamba2LayerStep is layer_step_common.h's.
#include "layer_step_common.h"
#include "plugin_impl.h"

namespace mambac::trt {

struct LayerStepOp : EpsilonField<LayerStepOp>, LayerStepShared<LayerStepOp> {
  static constexpr const char* kName = "MambaLayerStep";
  static constexpr size_t kSlots = kMambaLayerStepInputs;
  static constexpr int kSsmStateRank = 3;
  enum {
    CONV_STATE, SSM_STATE, RESIDUAL, NORM_WEIGHT, IN_PROJ_WEIGHT, IN_PROJ_BIAS, CONV_WEIGHT, CONV_BIAS,
    X_PROJ_WEIGHT, DT_PROJ_WEIGHT, DT_BIAS, A, D, OUT_PROJ_WEIGHT, OUT_PROJ_BIAS
  };
  using Params = MambaLayerStepParams;

  static Params check(const TensorDesc* slots) { return check_mamba_layer_step(slots, kSlots); }
  void finish(Params& p) const {
    p.eps = epsilon;
    check_mamba_layer_step_cuda_limits(p);  // throws std::invalid_argument, as the checks do
  }

  static bool f32_input(size_t s) { return shared_f32_input(s); }

  static size_t workspace(const Params&, const Params& max) { return mambac_cuda_decode_layer_scratch_bytes(&max); }

  static int enqueue(Params& p, const void* const* in, void* const* out, void* ws, cudaStream_t stream) {
    if (p.batch == 0) return 0;
    wire_shared(p, in, out, ws);
    p.x_proj_weight = addr(in[X_PROJ_WEIGHT]);
    p.dt_proj_weight = addr(in[DT_PROJ_WEIGHT]);
    return mambac_cuda_decode_layer(&p, stream);
  }
};

IPluginCreatorInterface* layer_step_creator() {
  static Creator<LayerStepOp> creator;
  return &creator;
}

}  // namespace mambac::trt
