// SsdScan, Mamba-2's scan, as a TensorRT plugin (docs/op-contract.md "SsdScan"): inputs x, dt, A,
// B, C, D, dt_bias, initial_state; outputs y [batch, seqlen, heads, head_dim] T and final_state
// [batch, heads, head_dim, dstate] float32; attributes dt_softplus, dt_min, dt_max, and the
// sliced reads' x_offset, dt_offset, B_offset, C_offset with the dims a packed x, B or C does not
// carry, head_dim, ngroups, dstate (docs/op-contract.md "Sliced inputs"). The chunked prefill's
// scratch (cpp/cuda/ssd_scan.h) is TensorRT's workspace.
#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "plugin_impl.h"

namespace mambac::trt {

struct SsdScanOp {
  static constexpr const char* kName = "SsdScan";
  static constexpr size_t kSlots = kSsdScanInputs;
  static constexpr int kOutputs = 2;
  enum { X, DT, A, B, C, D, DT_BIAS, INITIAL_STATE };
  using Params = SsdScanParams;

  // The int fields past dt_softplus: the sliceable slots' offsets, then the dims a packed input
  // does not carry; kWhole = not set (an input read whole, a dim its input gives).
  static constexpr std::array<size_t, 4> kSliceable = {DT, X, B, C};
  static constexpr std::array<const char*, 7> kIntFields = {"dt_offset", "x_offset", "B_offset", "C_offset",
                                                            "head_dim",  "ngroups",  "dstate"};
  enum { HEAD_DIM = 4, NGROUPS, DSTATE };

  int32_t dt_softplus = 1;
  float dt_min = 0;
  float dt_max = std::numeric_limits<float>::infinity();
  std::array<int32_t, 7> ints = {kWhole, kWhole, kWhole, kWhole, kWhole, kWhole, kWhole};

  static const std::vector<FieldSpec>& fields() {
    static const std::vector<FieldSpec> f = [] {
      std::vector<FieldSpec> v = {{"dt_softplus", FieldKind::Int}, {"dt_min", FieldKind::Float},
                                  {"dt_max", FieldKind::Float}};
      for (const char* name : kIntFields) v.push_back({name, FieldKind::Int});
      return v;
    }();
    return f;
  }
  // The index of int field `name` in kIntFields, or -1.
  static int int_field(const char* name) {
    for (size_t k = 0; k < kIntFields.size(); ++k)
      if (!std::strcmp(name, kIntFields[k])) return static_cast<int>(k);
    return -1;
  }
  void set_field(const char* name, const FieldValue& v) {
    if (const int k = int_field(name); k >= 0) {
      ints[k] = v.i;
    } else if (!std::strcmp(name, "dt_softplus")) {
      dt_softplus = flag_field(kName, name, v);
    } else if (!std::strcmp(name, "dt_min")) {
      dt_min = v.f;
    } else {
      dt_max = v.f;
    }
  }
  // The dim fields are range-checked here, at createPlugin: getOutputShapes hands them to
  // TensorRT as constants before any shape check could refuse a 0 or a negative one.
  void validate() const {
    check_dt_limit(kName, dt_min, dt_max);
    for (int k = HEAD_DIM; k <= DSTATE; ++k) {
      if (ints[k] != kWhole && ints[k] < 1) {
        throw std::invalid_argument(std::string(kName) + ": attribute '" + kIntFields[k] + "' is " +
                                    std::to_string(ints[k]) + ", expected 1 to 2^31 - 1");
      }
    }
  }
  FieldValue get_field(const char* name) const {
    FieldValue v;
    if (const int k = int_field(name); k >= 0) {
      v.i = ints[k];
      v.absent = ints[k] == kWhole;
    } else if (!std::strcmp(name, "dt_softplus")) {
      v.i = dt_softplus;
    } else {
      v.f = !std::strcmp(name, "dt_min") ? dt_min : dt_max;
    }
    return v;
  }

  int32_t offset(size_t slot) const {
    return ints[std::find(kSliceable.begin(), kSliceable.end(), slot) - kSliceable.begin()];
  }
  bool packed(size_t slot) const { return offset(slot) != kWhole; }
  SsdScanDims dim_attrs() const {
    const auto v = [](int32_t d) { return d == kWhole ? kUnsetDim : static_cast<int64_t>(d); };
    return SsdScanDims{v(ints[HEAD_DIM]), v(ints[NGROUPS]), v(ints[DSTATE])};
  }

  Params check(const TensorDesc* slots) const {
    std::array<TensorDesc, kSlots> d;
    std::copy(slots, slots + kSlots, d.begin());
    for (size_t slot : kSliceable) mark_slice(d[slot], offset(slot));
    return check_ssd_scan(d.data(), kSlots, dim_attrs());
  }
  void finish(Params& p) const {
    p.dt_softplus = dt_softplus == 1;
    p.dt_min = dt_min;
    p.dt_max = dt_max;
    check_ssd_scan_cuda_limits(p);  // throws std::invalid_argument, as the checks do
  }

  static bool f32_input(size_t s) { return s == A || s == D || s == DT_BIAS || s == INITIAL_STATE; }
  static bool f32_output(int k) { return k == 1; }

  // A packed x is [batch, seqlen, row] (heads from A, head_dim from its field); a packed B is
  // [batch, seqlen, row] (dstate from its field).
  // Called first (getOutputShapes): a packed input's missing dim field is the error to report,
  // before the ranks it would make look wrong.
  std::vector<std::pair<size_t, int>> indexed_ranks() const {
    const std::string missing = ssd_scan_missing_dim(packed(X), packed(B), dim_attrs());
    if (!missing.empty()) throw std::invalid_argument(std::string(kName) + ": " + missing);
    if (packed(X)) return {{X, 3}, {A, 1}, {B, packed(B) ? 3 : 4}};
    return {{X, 4}, {B, packed(B) ? 3 : 4}};
  }
  void output_shapes(const DimsExprs* const* in, DimsExprs* out, IExprBuilder& b) const {
    const IDimensionExpr* heads = packed(X) ? in[A]->d[0] : in[X]->d[2];
    const IDimensionExpr* head_dim = packed(X) ? b.constant(ints[HEAD_DIM]) : in[X]->d[3];
    const IDimensionExpr* dstate = packed(B) ? b.constant(ints[DSTATE]) : in[B]->d[3];
    out[0].nbDims = 4;
    out[0].d[0] = in[X]->d[0];
    out[0].d[1] = in[X]->d[1];
    out[0].d[2] = heads;
    out[0].d[3] = head_dim;
    out[1].nbDims = 4;
    out[1].d[0] = in[X]->d[0];
    out[1].d[1] = heads;
    out[1].d[2] = head_dim;
    out[1].d[3] = dstate;
  }

  // Enough for every seqlen of the profile: the chunk length, hence the scratch, depends on it.
  static size_t workspace(const Params& min, const Params& max) {
    return mambac_cuda_ssd_scan_scratch_bytes_bound(&max, min.seqlen);
  }

  int enqueue(Params& p, const void* const* in, void* const* out, void* ws, cudaStream_t stream) const {
    auto addr = [](const void* ptr) { return reinterpret_cast<size_t>(ptr); };
    p.x = slice_addr(in[X], offset(X), p.elem);
    p.dt = slice_addr(in[DT], offset(DT), p.elem);
    p.a = addr(in[A]);
    p.b = slice_addr(in[B], offset(B), p.elem);
    p.c = slice_addr(in[C], offset(C), p.elem);
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
