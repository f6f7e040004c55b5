// SelectiveScan as a TensorRT plugin (docs/op-contract.md): inputs u, delta, A, B, C, D, z,
// delta_bias, initial_state; outputs y [batch, seqlen, dim] T and final_state [batch, dim, dstate]
// float32; attribute delta_softplus.
#include "plugin_impl.h"

namespace mambac::trt {

struct SelectiveScanOp {
  static constexpr const char* kName = "SelectiveScan";
  static constexpr size_t kSlots = kSelectiveScanInputs;
  static constexpr int kOutputs = 2;
  enum { U, DELTA, A, B, C, D, Z, DELTA_BIAS, INITIAL_STATE };
  using Params = SelectiveScanParams;

  int32_t delta_softplus = 1;

  static const std::vector<FieldSpec>& fields() {
    static const std::vector<FieldSpec> f = {{"delta_softplus", FieldKind::Int}};
    return f;
  }
  void set_field(const char* name, const FieldValue& v) { delta_softplus = flag_field(kName, name, v); }
  void validate() const {}
  FieldValue get_field(const char*) const {
    FieldValue v;
    v.i = delta_softplus;
    return v;
  }

  static Params check(const TensorDesc* slots) { return check_selective_scan(slots, kSlots); }
  void finish(Params& p) const { p.delta_softplus = delta_softplus == 1; }

  static bool f32_input(size_t s) { return s == A || s == D || s == DELTA_BIAS || s == INITIAL_STATE; }
  static bool f32_output(int k) { return k == 1; }

  static const std::vector<std::pair<size_t, int>>& indexed_ranks() {
    static const std::vector<std::pair<size_t, int>> r = {{U, 3}, {A, 2}};
    return r;
  }
  static void output_shapes(const DimsExprs* const* in, DimsExprs* out, IExprBuilder&) {
    out[0] = *in[U];
    out[1].nbDims = 3;
    out[1].d[0] = in[U]->d[0];
    out[1].d[1] = in[U]->d[2];
    out[1].d[2] = in[A]->d[1];
  }

  static size_t workspace(const Params&, const Params&) { return 0; }

  static int enqueue(Params& p, const void* const* in, void* const* out, void*, cudaStream_t stream) {
    auto addr = [](const void* ptr) { return reinterpret_cast<size_t>(ptr); };
    p.u = addr(in[U]);
    p.delta = addr(in[DELTA]);
    p.a = addr(in[A]);
    p.b = addr(in[B]);
    p.c = addr(in[C]);
    p.d = addr(in[D]);
    p.z = addr(in[Z]);
    p.delta_bias = addr(in[DELTA_BIAS]);
    p.initial_state = addr(in[INITIAL_STATE]);
    p.y = addr(out[0]);
    p.final_state = addr(out[1]);
    return mambac_cuda_selective_scan(&p, stream);
  }
};

IPluginCreatorInterface* selective_scan_creator() {
  static Creator<SelectiveScanOp> creator;
  return &creator;
}

}  // namespace mambac::trt
