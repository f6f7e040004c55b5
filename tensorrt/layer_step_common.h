// What the two layer-step plugins (layer_step_plugin.cpp, mamba2_layer_step_plugin.cpp) describe
// alike: three outputs (residual_out float32, conv_state_out T, ssm_state_out float32) shaped as
// their inputs, and the enqueue's wiring of the inputs both ops have, the outputs and the
// kernels' float32 scratch (TensorRT's workspace). Each op keeps its fields, its check, its own
// inputs and its kernels.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include "plugin.h"

namespace mambac::trt {

// For `struct XOp : LayerStepShared<XOp>`. `Op` names its input slots in an enum (CONV_STATE,
// SSM_STATE, RESIDUAL, NORM_WEIGHT, IN_PROJ_WEIGHT, IN_PROJ_BIAS, CONV_WEIGHT, CONV_BIAS, DT_BIAS,
// A, D, OUT_PROJ_WEIGHT, OUT_PROJ_BIAS and its own) and sets kSsmStateRank: ssm_state's rank,
// 3 for Mamba ([B, I, N]), 4 for Mamba-2 ([B, heads, head_dim, N]).
template <class Op>
struct LayerStepShared {
  static constexpr int kOutputs = 3;

  static bool f32_output(int k) { return k != 1; }
  // The float32 inputs both ops have: ssm_state, the residual, the pre-norm's weight, dt_bias, A, D.
  static bool shared_f32_input(size_t s) {
    return s == Op::SSM_STATE || s == Op::RESIDUAL || s == Op::NORM_WEIGHT || s == Op::DT_BIAS || s == Op::A ||
           s == Op::D;
  }

  static const std::vector<std::pair<size_t, int>>& indexed_ranks() {
    static const std::vector<std::pair<size_t, int>> r = {
        {Op::CONV_STATE, 3}, {Op::SSM_STATE, Op::kSsmStateRank}, {Op::RESIDUAL, 3}};
    return r;
  }
  static void output_shapes(const DimsExprs* const* in, DimsExprs* out, IExprBuilder&) {
    out[0] = *in[Op::RESIDUAL];
    out[1] = *in[Op::CONV_STATE];
    out[2] = *in[Op::SSM_STATE];
  }

  static size_t addr(const void* ptr) { return reinterpret_cast<size_t>(ptr); }

  // Points `p` at the inputs both ops have, the three outputs and the workspace.
  template <class Params>
  static void wire_shared(Params& p, const void* const* in, void* const* out, void* ws) {
    p.conv_state_in = addr(in[Op::CONV_STATE]);
    p.ssm_state_in = addr(in[Op::SSM_STATE]);
    p.residual_in = addr(in[Op::RESIDUAL]);
    p.norm_weight = addr(in[Op::NORM_WEIGHT]);
    p.in_proj_weight = addr(in[Op::IN_PROJ_WEIGHT]);
    p.in_proj_bias = addr(in[Op::IN_PROJ_BIAS]);
    p.conv_weight = addr(in[Op::CONV_WEIGHT]);
    p.conv_bias = addr(in[Op::CONV_BIAS]);
    p.dt_bias = addr(in[Op::DT_BIAS]);
    p.a = addr(in[Op::A]);
    p.d = addr(in[Op::D]);
    p.out_proj_weight = addr(in[Op::OUT_PROJ_WEIGHT]);
    p.out_proj_bias = addr(in[Op::OUT_PROJ_BIAS]);
    p.residual_out = addr(out[0]);
    p.conv_state_out = addr(out[1]);
    p.ssm_state_out = addr(out[2]);
    p.scratch = addr(ws);
  }
};

}  // namespace mambac::trt
