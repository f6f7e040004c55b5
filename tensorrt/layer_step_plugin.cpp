// MambaLayerStep as a TensorRT plugin (docs/decode-graph.md): one layer's decode step. Outputs
// residual_out [B, 1, H] float32, conv_state_out [B, I, K-1] T, ssm_state_out [B, I, N] float32;
// attribute epsilon. The kernels' float32 scratch is TensorRT's workspace.
#include "plugin_impl.h"

namespace mambac::trt {

struct LayerStepOp : EpsilonField<LayerStepOp> {
  static constexpr const char* kName = "MambaLayerStep";
  static constexpr size_t kSlots = kMambaLayerStepInputs;
  static constexpr int kOutputs = 3;
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

  static bool f32_input(size_t s) {
    return s == SSM_STATE || s == RESIDUAL || s == NORM_WEIGHT || s == DT_BIAS || s == A || s == D;
  }
  static bool f32_output(int k) { return k != 1; }

  static const std::vector<std::pair<size_t, int>>& indexed_ranks() {
    static const std::vector<std::pair<size_t, int>> r = {{CONV_STATE, 3}, {SSM_STATE, 3}, {RESIDUAL, 3}};
    return r;
  }
  static void output_shapes(const DimsExprs* const* in, DimsExprs* out, IExprBuilder&) {
    out[0] = *in[RESIDUAL];
    out[1] = *in[CONV_STATE];
    out[2] = *in[SSM_STATE];
  }

  static size_t workspace(const Params&, const Params& max) { return mambac_cuda_decode_layer_scratch_bytes(&max); }

  static int enqueue(Params& p, const void* const* in, void* const* out, void* ws, cudaStream_t stream) {
    if (p.batch == 0) return 0;
    auto addr = [](const void* ptr) { return reinterpret_cast<size_t>(ptr); };
    p.conv_state_in = addr(in[CONV_STATE]);
    p.ssm_state_in = addr(in[SSM_STATE]);
    p.residual_in = addr(in[RESIDUAL]);
    p.norm_weight = addr(in[NORM_WEIGHT]);
    p.in_proj_weight = addr(in[IN_PROJ_WEIGHT]);
    p.in_proj_bias = addr(in[IN_PROJ_BIAS]);
    p.conv_weight = addr(in[CONV_WEIGHT]);
    p.conv_bias = addr(in[CONV_BIAS]);
    p.x_proj_weight = addr(in[X_PROJ_WEIGHT]);
    p.dt_proj_weight = addr(in[DT_PROJ_WEIGHT]);
    p.dt_bias = addr(in[DT_BIAS]);
    p.a = addr(in[A]);
    p.d = addr(in[D]);
    p.out_proj_weight = addr(in[OUT_PROJ_WEIGHT]);
    p.out_proj_bias = addr(in[OUT_PROJ_BIAS]);
    p.residual_out = addr(out[0]);
    p.conv_state_out = addr(out[1]);
    p.ssm_state_out = addr(out[2]);
    p.scratch = addr(ws);
    return mambac_cuda_decode_layer(&p, stream);
  }
};

IPluginCreatorInterface* layer_step_creator() {
  static Creator<LayerStepOp> creator;
  return &creator;
}

}  // namespace mambac::trt
