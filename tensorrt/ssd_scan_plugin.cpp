// SsdScan, Mamba-2's scan, as a TensorRT plugin (docs/op-contract.md "SsdScan"): inputs x, dt, A,
// B, C, D, dt_bias, initial_state; outputs y [batch, seqlen, heads, head_dim] T and final_state
// [batch, heads, head_dim, dstate] float32; attributes dt_softplus, dt_min, dt_max. The chunked
// prefill's scratch (cpp/cuda/ssd_scan.h) is TensorRT's workspace.
#include <algorithm>
#include <array>
#include <cstring>
#include <limits>

#include "plugin_impl.h"

namespace mambac::trt {

struct SsdScanOp {
  static constexpr const char* kName = "SsdScan";
  static constexpr size_t kSlots = kSsdScanInputs;
  static constexpr int kOutputs = 2;
  enum { X, DT, A, B, C, D, DT_BIAS, INITIAL_STATE };
  using Params = SsdScanParams;

  int32_t dt_softplus = 1;
  float dt_min = 0;
  float dt_max = std::numeric_limits<float>::infinity();
  int32_t dt_offset = kWhole;  // docs/op-contract.md "Sliced inputs"

  static const std::vector<FieldSpec>& fields() {
    static const std::vector<FieldSpec> f = {{"dt_softplus", FieldKind::Int},
                                             {"dt_min", FieldKind::Float},
                                             {"dt_max", FieldKind::Float},
                                             {"dt_offset", FieldKind::Int}};
    return f;
  }
  void set_field(const char* name, const FieldValue& v) {
    if (!std::strcmp(name, "dt_offset")) {
      dt_offset = v.i;
    } else if (!std::strcmp(name, "dt_softplus")) {
      dt_softplus = flag_field(kName, name, v);
    } else if (!std::strcmp(name, "dt_min")) {
      dt_min = v.f;
    } else {
      dt_max = v.f;
    }
  }
  void validate() const { check_dt_limit(kName, dt_min, dt_max); }
  FieldValue get_field(const char* name) const {
    FieldValue v;
    if (!std::strcmp(name, "dt_offset")) {
      v.i = dt_offset;
      v.absent = dt_offset == kWhole;
    } else if (!std::strcmp(name, "dt_softplus")) {
      v.i = dt_softplus;
    } else {
      v.f = !std::strcmp(name, "dt_min") ? dt_min : dt_max;
    }
    return v;
  }

  Params check(const TensorDesc* slots) const {
    std::array<TensorDesc, kSlots> d;
    std::copy(slots, slots + kSlots, d.begin());
    mark_slice(d[DT], dt_offset);
    return check_ssd_scan(d.data(), kSlots);
  }
  void finish(Params& p) const {
    p.dt_softplus = dt_softplus == 1;
    p.dt_min = dt_min;
    p.dt_max = dt_max;
    check_ssd_scan_cuda_limits(p);  // throws std::invalid_argument, as the checks do
  }

  static bool f32_input(size_t s) { return s == A || s == D || s == DT_BIAS || s == INITIAL_STATE; }
  static bool f32_output(int k) { return k == 1; }

  static const std::vector<std::pair<size_t, int>>& indexed_ranks() {
    static const std::vector<std::pair<size_t, int>> r = {{X, 4}, {B, 4}};
    return r;
  }
  static void output_shapes(const DimsExprs* const* in, DimsExprs* out, IExprBuilder&) {
    out[0] = *in[X];
    out[1].nbDims = 4;
    out[1].d[0] = in[X]->d[0];
    out[1].d[1] = in[X]->d[2];
    out[1].d[2] = in[X]->d[3];
    out[1].d[3] = in[B]->d[3];
  }

  // Enough for every seqlen of the profile: the chunk length, hence the scratch, depends on it.
  static size_t workspace(const Params& min, const Params& max) {
    return mambac_cuda_ssd_scan_scratch_bytes_bound(&max, min.seqlen);
  }

  int enqueue(Params& p, const void* const* in, void* const* out, void* ws, cudaStream_t stream) const {
    auto addr = [](const void* ptr) { return reinterpret_cast<size_t>(ptr); };
    p.x = addr(in[X]);
    p.dt = slice_addr(in[DT], dt_offset, p.elem);
    p.a = addr(in[A]);
    p.b = addr(in[B]);
    p.c = addr(in[C]);
    p.d = addr(in[D]);
    p.dt_bias = addr(in[DT_BIAS]);
    p.initial_state = addr(in[INITIAL_STATE]);
    p.y = addr(out[0]);
    p.final_state = addr(out[1]);
    // The workspace holds the bound over the profile (getWorkspaceSize); none (a profile of short
    // sequences only) leaves the launcher on its step kernel.
    p.scratch = addr(ws);
    return mambac_cuda_ssd_scan(&p, stream);
  }
};

IPluginCreatorInterface* ssd_scan_creator() {
  static Creator<SsdScanOp> creator;
  return &creator;
}

}  // namespace mambac::trt
