// SelectiveScan as a TensorRT plugin (docs/op-contract.md): inputs u, delta, A, B, C, D, z,
// delta_bias, initial_state; outputs y [batch, seqlen, dim] T and final_state [batch, dim, dstate]
// float32; attributes delta_softplus and B_offset, C_offset, z_offset (inputs read as slices of a
// packed last axis: docs/op-contract.md "Sliced inputs").
#include <algorithm>
#include <array>
#include <cstring>

#include "plugin_impl.h"

namespace mambac::trt {

struct SelectiveScanOp {
  static constexpr const char* kName = "SelectiveScan";
  static constexpr size_t kSlots = kSelectiveScanInputs;
  static constexpr int kOutputs = 2;
  enum { U, DELTA, A, B, C, D, Z, DELTA_BIAS, INITIAL_STATE };
  using Params = SelectiveScanParams;

  // The sliceable slots, their fields, and the offsets set (kWhole: read whole).
  static constexpr std::array<size_t, 3> kSliceable = {B, C, Z};
  static constexpr std::array<const char*, 3> kOffsetFields = {"B_offset", "C_offset", "z_offset"};

  int32_t delta_softplus = 1;
  std::array<int32_t, 3> offsets = {kWhole, kWhole, kWhole};

  static const std::vector<FieldSpec>& fields() {
    static const std::vector<FieldSpec> f = {{"delta_softplus", FieldKind::Int},
                                             {kOffsetFields[0], FieldKind::Int},
                                             {kOffsetFields[1], FieldKind::Int},
                                             {kOffsetFields[2], FieldKind::Int}};
    return f;
  }
  void set_field(const char* name, const FieldValue& v) {
    for (size_t k = 0; k < kSliceable.size(); ++k) {
      if (!std::strcmp(name, kOffsetFields[k])) {
        offsets[k] = v.i;
        return;
      }
    }
    delta_softplus = flag_field(kName, name, v);
  }
  void validate() const {}
  FieldValue get_field(const char* name) const {
    FieldValue v;
    v.i = delta_softplus;
    for (size_t k = 0; k < kSliceable.size(); ++k) {
      if (!std::strcmp(name, kOffsetFields[k])) {
        v.i = offsets[k];
        v.absent = offsets[k] == kWhole;
      }
    }
    return v;
  }

  Params check(const TensorDesc* slots) const {
    std::array<TensorDesc, kSlots> d;
    std::copy(slots, slots + kSlots, d.begin());
    for (size_t k = 0; k < kSliceable.size(); ++k) mark_slice(d[kSliceable[k]], offsets[k]);
    return check_selective_scan(d.data(), kSlots);
  }
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

  int enqueue(Params& p, const void* const* in, void* const* out, void*, cudaStream_t stream) const {
    auto addr = [](const void* ptr) { return reinterpret_cast<size_t>(ptr); };
    p.u = addr(in[U]);
    p.delta = addr(in[DELTA]);
    p.a = addr(in[A]);
    p.b = slice_addr(in[B], offsets[0], p.elem);
    p.c = slice_addr(in[C], offsets[1], p.elem);
    p.d = addr(in[D]);
    p.z = slice_addr(in[Z], offsets[2], p.elem);
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
