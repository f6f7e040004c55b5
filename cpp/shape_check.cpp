// The shape and type checks of docs/op-contract.md's fused ops; see mambac/shape_check.h.
#include "mambac/shape_check.h"

#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "mambac-ops/custom-ops/src/kernel_abi.rs.h"

namespace mambac {

std::string onnx_type_name(int32_t code) {
  switch (code) {
    case 1: return "float32";
    case 2: return "uint8";
    case 3: return "int8";
    case 4: return "uint16";
    case 5: return "int16";
    case 6: return "int32";
    case 7: return "int64";
    case 8: return "string";
    case 9: return "bool";
    case 10: return "float16";
    case 11: return "float64";
    case 12: return "uint32";
    case 13: return "uint64";
    case 16: return "bfloat16";
    default: return "type code " + std::to_string(code);
  }
}

namespace {

// Bytes of one element of the float types the ops take (4 for anything else, the largest).
uint64_t elem_bytes(int32_t onnx) { return onnx == kOnnxFloat16 || onnx == kOnnxBFloat16 ? 2 : 4; }

// An expected dim: a number, or a name for a size the input itself defines.
struct Dim {
  int64_t value;     // used when name is empty
  const char* name;  // e.g. "ngroups"
  Dim(int64_t v) : value(v), name("") {}   // NOLINT: implicit on purpose, reads like the doc
  Dim(const char* n) : value(-1), name(n) {}  // NOLINT
};

std::string shape_str(const TensorDesc& t) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < t.rank; ++i) {
    if (i) s << ", ";
    if (i < t.dims.size()) s << t.dims[i]; else s << "...";
  }
  s << ']';
  return s.str();
}

std::string dims_str(const std::vector<Dim>& dims) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s << ", ";
    if (dims[i].name[0]) s << dims[i].name; else s << dims[i].value;
  }
  s << ']';
  return s.str();
}

// Checks one op's inputs in order; every failure is one std::invalid_argument naming the input.
class Checker {
 public:
  Checker(const char* op, const TensorDesc* inputs, size_t given, const char* const* names, size_t count)
      : op_(op), inputs_(inputs), names_(names) {
    if (given != count) {
      fail(std::to_string(count) + " input slots expected, got " + std::to_string(given));
    }
  }

  [[noreturn]] void fail(const std::string& msg) const {
    throw std::invalid_argument(std::string(op_) + ": " + msg);
  }

  const TensorDesc& at(size_t i) const { return inputs_[i]; }
  bool present(size_t i) const { return inputs_[i].present; }
  std::string name(size_t i) const { return std::string("'") + names_[i] + "'"; }

  void require(size_t i) const {
    if (!present(i)) fail("required input " + name(i) + " is missing");
  }

  // The op's T: float32, float16 or bfloat16.
  int32_t float_type(size_t i) const {
    int32_t e = at(i).elem;
    if (e != kOnnxFloat && e != kOnnxFloat16 && e != kOnnxBFloat16) {
      fail("input " + name(i) + " has element type " + onnx_type_name(e) +
           ", expected float32, float16 or bfloat16");
    }
    return e;
  }

  void type_is(size_t i, int32_t expected, const char* why) const {
    if (at(i).elem != expected) {
      fail("input " + name(i) + " has element type " + onnx_type_name(at(i).elem) + ", expected " +
           onnx_type_name(expected) + why);
    }
  }

  // Rank and every numbered dim must match; named dims are free (the caller checks them).
  void shape_is(size_t i, const std::vector<Dim>& expected, const std::string& why) const {
    const TensorDesc& t = at(i);
    bool ok = t.rank == expected.size() && t.rank <= t.dims.size();
    for (size_t k = 0; ok && k < expected.size(); ++k) {
      if (t.dims[k] < 0) ok = false;
      if (!expected[k].name[0] && t.dims[k] != expected[k].value) ok = false;
    }
    if (!ok) shape_fail(i, expected, why);
    bytes_fit(i);
  }

  // type_is, then shape_is: the check of most inputs, `type_why` and `why` saying where the
  // expected type and dims come from.
  void tensor_is(size_t i, int32_t type, const char* type_why, const std::vector<Dim>& expected,
                 const std::string& why) const {
    type_is(i, type, type_why);
    shape_is(i, expected, why);
  }

  // The same for an optional input, when the node gives it.
  void optional_is(size_t i, int32_t type, const char* type_why, const std::vector<Dim>& expected,
                   const std::string& why) const {
    if (present(i)) tensor_is(i, type, type_why, expected, why);
  }

  // The input's size in bytes must be a number: callers other than ORT (the TensorRT plugin,
  // direct calls) hand over shapes no buffer was made for, and every offset is computed from them.
  void bytes_fit(size_t i) const {
    const TensorDesc& t = at(i);
    uint64_t bytes = elem_bytes(t.elem);
    bool overflow = false;
    for (size_t k = 0; k < t.rank; ++k) {
      if (t.dims[k] == 0) return;  // empty: no bytes, however large the other dims
      overflow = overflow || __builtin_mul_overflow(bytes, static_cast<uint64_t>(t.dims[k]), &bytes);
    }
    if (overflow || bytes > static_cast<uint64_t>(INT64_MAX)) {
      fail("input " + name(i) + " has shape " + shape_str(t) + ", whose size in bytes exceeds 2^63 - 1");
    }
  }

  // A size input `i` defines must fit a 32-bit int: the kernels index with them, and the
  // expected sizes computed from them must not overflow even for an empty batch with absurd dims.
  void fits_int(size_t i, int64_t v, const char* what) const {
    if (v > INT32_MAX) fail("input " + name(i) + " gives " + what + " = " + std::to_string(v) + ", more than 2^31 - 1");
  }

  // Input i read whole, as shape_is; or, when the node slices it (its `<name>_offset`
  // attribute, docs/op-contract.md "Sliced inputs"), as channels [offset, offset + count) of a
  // longer last axis, count = expected's last dim (a number). Returns the row stride in elements:
  // the last dim of the tensor read.
  int64_t view_is(size_t i, std::vector<Dim> expected, const std::string& why) const {
    const TensorDesc& t = at(i);
    if (!t.sliced) {
      shape_is(i, expected, why);
      return expected.back().value;
    }
    offset_sign(i);
    const int64_t count = expected.back().value;
    expected.back() = Dim("row");
    shape_is(i, expected, why);
    const int64_t row = t.dims[t.rank - 1];
    if (t.offset > row - count) {
      fail("attribute " + attr(i) + " = " + std::to_string(t.offset) + " reads channels [" +
           std::to_string(t.offset) + ", " + std::to_string(t.offset + count) + ") of input " + name(i) +
           " of shape " + shape_str(t) + ", whose last dim is " + std::to_string(row));
    }
    return row;
  }

  void offset_sign(size_t i) const {
    if (at(i).offset < 0) fail("attribute " + attr(i) + " is " + std::to_string(at(i).offset) + ", expected >= 0");
  }

  // Inputs the op cannot read as a slice: only a direct caller (not the ORT op, not the TensorRT
  // plugin, which slice only the inputs the op lists) can ask for it.
  void not_sliced(std::initializer_list<size_t> slots) const {
    for (size_t i : slots) {
      if (at(i).sliced) fail("input " + name(i) + " cannot be read as a slice (the op has no attribute " + attr(i) + ")");
    }
  }

  std::string attr(size_t i) const { return std::string("'") + names_[i] + "_offset'"; }

  [[noreturn]] void shape_fail(size_t i, const std::vector<Dim>& expected, const std::string& why) const {
    fail("input " + name(i) + " has shape " + shape_str(at(i)) + ", expected " + dims_str(expected) + why);
  }

 private:
  const char* op_;
  const TensorDesc* inputs_;
  const char* const* names_;
};

ElemType elem_of(int32_t onnx) {
  switch (onnx) {
    case kOnnxFloat16: return ElemType::F16;
    case kOnnxBFloat16: return ElemType::BF16;
    default: return ElemType::F32;
  }
}

}  // namespace

SelectiveScanParams check_selective_scan(const TensorDesc* inputs, size_t count) {
  enum { U, DELTA, A, B, C, D, Z, DELTA_BIAS, INITIAL_STATE };
  static const char* const names[kSelectiveScanInputs] = {
      "u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"};
  Checker ck("SelectiveScan", inputs, count, names, kSelectiveScanInputs);

  for (size_t i : {U, DELTA, A, B, C}) ck.require(i);
  ck.not_sliced({U, DELTA, A, D, DELTA_BIAS, INITIAL_STATE});

  const int32_t t = ck.float_type(U);
  ck.shape_is(U, {"batch", "seqlen", "dim"}, "");
  const int64_t batch = ck.at(U).dims[0], seqlen = ck.at(U).dims[1], dim = ck.at(U).dims[2];
  const char* same_as_u = " (same as 'u')";

  ck.tensor_is(DELTA, t, same_as_u, {batch, seqlen, dim}, same_as_u);

  ck.tensor_is(A, kOnnxFloat, "", {dim, "dstate"}, " (dim from 'u')");
  const int64_t dstate = ck.at(A).dims[1];
  if (dstate < 1) ck.shape_fail(A, {dim, "dstate"}, " with dstate >= 1");

  ck.type_is(B, t, same_as_u);
  const std::vector<Dim> bc = {batch, seqlen, "ngroups", dstate};
  const std::string bc_why = " with dim " + std::to_string(dim) + " divisible by ngroups";
  const int64_t b_stride = ck.view_is(B, bc, bc_why);
  const int64_t ngroups = ck.at(B).dims[2];
  if (ngroups < 1 || dim % ngroups != 0) ck.shape_fail(B, bc, bc_why);

  ck.type_is(C, t, same_as_u);
  const int64_t c_stride = ck.view_is(C, {batch, seqlen, ngroups, dstate},
                                      ck.at(C).sliced ? " ([batch, seqlen, ngroups] as 'B')" : " (same as 'B')");

  ck.optional_is(D, kOnnxFloat, "", {dim}, " (dim from 'u')");
  int64_t z_stride = dim;
  if (ck.present(Z)) {
    ck.type_is(Z, t, same_as_u);
    z_stride = ck.view_is(Z, {batch, seqlen, dim}, same_as_u);
  }
  ck.optional_is(DELTA_BIAS, kOnnxFloat, "", {dim}, " (dim from 'u')");
  ck.optional_is(INITIAL_STATE, kOnnxFloat, "", {batch, dim, dstate}, " ([batch, dim, dstate] from 'u' and 'A')");

  SelectiveScanParams p{};
  p.batch = static_cast<size_t>(batch);
  p.seqlen = static_cast<size_t>(seqlen);
  p.dim = static_cast<size_t>(dim);
  p.dstate = static_cast<size_t>(dstate);
  p.ngroups = static_cast<size_t>(ngroups);
  p.elem = elem_of(t);
  p.delta_softplus = true;
  p.z_stride = static_cast<size_t>(z_stride);
  p.b_stride = static_cast<size_t>(b_stride);
  p.c_stride = static_cast<size_t>(c_stride);
  return p;
}

namespace {

// One of SsdScan's dim attributes (head_dim, ngroups, dstate): kUnsetDim, or a dim the kernels
// can index with.
int64_t dim_attr(const Checker& ck, const char* name, int64_t v) {
  if (v != kUnsetDim && (v < 1 || v > INT32_MAX)) {
    ck.fail(std::string("attribute '") + name + "' is " + std::to_string(v) + ", expected 1 to 2^31 - 1");
  }
  return v;
}

}  // namespace

std::string ssd_scan_missing_dim(bool x_packed, bool b_packed, const SsdScanDims& dims) {
  const auto missing = [](const char* input, const char* attr) {
    return std::string("attribute '") + input + "_offset' needs attribute '" + attr + "': input '" + input +
           "' read packed as [batch, seqlen, row] has no " + attr + " axis";
  };
  if (x_packed && dims.head_dim == kUnsetDim) return missing("x", "head_dim");
  if (b_packed && dims.ngroups == kUnsetDim) return missing("B", "ngroups");
  if (b_packed && dims.dstate == kUnsetDim) return missing("B", "dstate");
  return "";
}

SsdScanParams check_ssd_scan(const TensorDesc* inputs, size_t count, const SsdScanDims& dims) {
  enum { X, DT, A, B, C, D, DT_BIAS, INITIAL_STATE };
  static const char* const names[kSsdScanInputs] = {"x", "dt", "A", "B", "C", "D", "dt_bias", "initial_state"};
  Checker ck("SsdScan", inputs, count, names, kSsdScanInputs);

  for (size_t i : {X, DT, A, B, C}) ck.require(i);
  ck.not_sliced({A, D, DT_BIAS, INITIAL_STATE});
  const int64_t head_dim_attr = dim_attr(ck, "head_dim", dims.head_dim);
  const int64_t ngroups_attr = dim_attr(ck, "ngroups", dims.ngroups);
  const int64_t dstate_attr = dim_attr(ck, "dstate", dims.dstate);
  const std::string missing = ssd_scan_missing_dim(ck.at(X).sliced, ck.at(B).sliced, dims);
  if (!missing.empty()) ck.fail(missing);

  // x whole [batch, seqlen, heads, head_dim], or packed [batch, seqlen, row] (x_offset): then
  // heads comes from A and head_dim from its attribute (docs/op-contract.md "Sliced inputs").
  const int32_t t = ck.float_type(X);
  const bool x_packed = ck.at(X).sliced;
  int64_t batch, seqlen, heads, head_dim, x_stride;
  if (x_packed) {
    ck.offset_sign(X);
    ck.shape_is(X, {"batch", "seqlen", "row"}, " (x read packed: 'x_offset' is set)");
    batch = ck.at(X).dims[0], seqlen = ck.at(X).dims[1];
    head_dim = head_dim_attr;
    ck.tensor_is(A, kOnnxFloat, "", {"heads"}, "");
    heads = ck.at(A).dims[0];
    ck.fits_int(A, heads, "heads");
    x_stride = ck.view_is(X, {batch, seqlen, heads * head_dim}, " (heads from 'A', head_dim from attribute 'head_dim')");
  } else {
    const bool given = head_dim_attr != kUnsetDim;
    ck.shape_is(X, {"batch", "seqlen", "heads", given ? Dim(head_dim_attr) : Dim("head_dim")},
                given ? " (head_dim from attribute 'head_dim')" : "");
    batch = ck.at(X).dims[0], seqlen = ck.at(X).dims[1];
    heads = ck.at(X).dims[2], head_dim = ck.at(X).dims[3];
    // Bounded before the product: an empty x may carry any dims (bytes_fit skips it).
    ck.fits_int(X, heads, "heads");
    ck.fits_int(X, head_dim, "head_dim");
    x_stride = heads * head_dim;
  }
  const char* same_as_x = " (same as 'x')";
  const char* heads_from = x_packed ? " (heads from 'A')" : " (heads from 'x')";

  ck.type_is(DT, t, same_as_x);
  const int64_t dt_stride = ck.view_is(DT, {batch, seqlen, heads},
                                       x_packed ? " ([batch, seqlen] from 'x', heads from 'A')"
                                                : " ([batch, seqlen, heads] from 'x')");

  if (!x_packed) ck.tensor_is(A, kOnnxFloat, "", {heads}, heads_from);

  // B whole [batch, seqlen, ngroups, dstate] (which it defines, or the attributes when set), or
  // packed [batch, seqlen, row] (B_offset): then both attributes give them.
  ck.type_is(B, t, same_as_x);
  const bool b_packed = ck.at(B).sliced;
  int64_t ngroups = ngroups_attr, dstate = dstate_attr, b_stride;
  if (b_packed) {
    b_stride = ck.view_is(B, {batch, seqlen, ngroups * dstate}, " (ngroups * dstate from attributes 'ngroups', 'dstate')");
    if (heads % ngroups != 0) {
      ck.fail("input 'B' has ngroups " + std::to_string(ngroups) + " (attribute 'ngroups'), which does not divide heads " +
              std::to_string(heads));
    }
  } else {
    const std::vector<Dim> bc = {batch, seqlen, ngroups != kUnsetDim ? Dim(ngroups) : Dim("ngroups"),
                                 dstate != kUnsetDim ? Dim(dstate) : Dim("dstate")};
    const std::string bc_why = " with heads " + std::to_string(heads) + " divisible by ngroups";
    ck.shape_is(B, bc, bc_why);
    ngroups = ck.at(B).dims[2], dstate = ck.at(B).dims[3];
    if (ngroups < 1 || heads % ngroups != 0) ck.shape_fail(B, bc, bc_why);
    ck.fits_int(B, ngroups, "ngroups");
    ck.fits_int(B, dstate, "dstate");
    b_stride = ngroups * dstate;
  }

  ck.type_is(C, t, same_as_x);
  const char* c_why = b_packed ? " (ngroups, dstate from attributes 'ngroups', 'dstate')" : " (same as 'B')";
  const int64_t c_stride = ck.at(C).sliced ? ck.view_is(C, {batch, seqlen, ngroups * dstate}, c_why)
                                           : (ck.shape_is(C, {batch, seqlen, ngroups, dstate}, c_why), ngroups * dstate);

  for (size_t i : {D, DT_BIAS}) ck.optional_is(i, kOnnxFloat, "", {heads}, heads_from);
  ck.optional_is(INITIAL_STATE, kOnnxFloat, "", {batch, heads, head_dim, dstate},
                 " ([batch, heads, head_dim, dstate] from 'x' and 'B')");

  SsdScanParams p{};
  p.batch = static_cast<size_t>(batch);
  p.seqlen = static_cast<size_t>(seqlen);
  p.heads = static_cast<size_t>(heads);
  p.head_dim = static_cast<size_t>(head_dim);
  p.ngroups = static_cast<size_t>(ngroups);
  p.dstate = static_cast<size_t>(dstate);
  p.elem = elem_of(t);
  p.dt_stride = static_cast<size_t>(dt_stride);
  p.x_stride = static_cast<size_t>(x_stride);
  p.b_stride = static_cast<size_t>(b_stride);
  p.c_stride = static_cast<size_t>(c_stride);
  return p;
}

CausalConv1dParams check_causal_conv1d(const TensorDesc* inputs, size_t count) {
  enum { X, WEIGHT, BIAS, INITIAL_STATE };
  static const char* const names[kCausalConv1dInputs] = {"x", "weight", "bias", "initial_state"};
  Checker ck("CausalConv1d", inputs, count, names, kCausalConv1dInputs);

  for (size_t i : {X, WEIGHT}) ck.require(i);
  ck.not_sliced({WEIGHT, BIAS, INITIAL_STATE});

  const int32_t t = ck.float_type(X);
  const char* same_as_x = " (same as 'x')";
  // A sliced x has no dim of its own: 'weight' gives it, and x is checked against it.
  const bool sliced = ck.at(X).sliced;
  if (sliced) ck.offset_sign(X);
  ck.shape_is(X, {"batch", "seqlen", sliced ? "row" : "dim"}, "");
  const int64_t batch = ck.at(X).dims[0], seqlen = ck.at(X).dims[1];
  int64_t dim = ck.at(X).dims[2];

  ck.type_is(WEIGHT, t, same_as_x);
  if (sliced) {
    ck.shape_is(WEIGHT, {"dim", "width"}, "");
    dim = ck.at(WEIGHT).dims[0];
  } else {
    ck.shape_is(WEIGHT, {dim, "width"}, " (dim from 'x')");
  }
  const int64_t width = ck.at(WEIGHT).dims[1];
  if (width < 1) ck.shape_fail(WEIGHT, {dim, "width"}, " with width >= 1");
  const int64_t x_stride = sliced ? ck.view_is(X, {batch, seqlen, dim}, "") : dim;
  const char* dim_from = sliced ? " (dim from 'weight')" : " (dim from 'x')";

  ck.optional_is(BIAS, t, same_as_x, {dim}, dim_from);
  ck.optional_is(INITIAL_STATE, t, same_as_x, {batch, dim, width - 1},
                 " ([batch, dim, width - 1] from 'x' and 'weight')");

  CausalConv1dParams p{};
  p.batch = static_cast<size_t>(batch);
  p.seqlen = static_cast<size_t>(seqlen);
  p.dim = static_cast<size_t>(dim);
  p.width = static_cast<size_t>(width);
  p.elem = elem_of(t);
  p.silu = true;
  p.x_stride = static_cast<size_t>(x_stride);
  return p;
}

AddRmsNormParams check_add_rms_norm(const TensorDesc* inputs, size_t count) {
  enum { X, RESIDUAL, WEIGHT };
  static const char* const names[kAddRmsNormInputs] = {"x", "residual", "weight"};
  Checker ck("AddRmsNorm", inputs, count, names, kAddRmsNormInputs);

  for (size_t i : {X, WEIGHT}) ck.require(i);
  ck.not_sliced({X, RESIDUAL, WEIGHT});

  // x defines the sizes; the stream (residual) and the weight are float32 whatever T is, as the
  // exports keep them (compiler/src/lower.rs `stream`, `rms_norm`).
  const int32_t t = ck.float_type(X);
  ck.shape_is(X, {"batch", "seqlen", "hidden"}, "");
  const int64_t batch = ck.at(X).dims[0], seqlen = ck.at(X).dims[1], hidden = ck.at(X).dims[2];
  // The kernels index a row with 32-bit ints.
  ck.fits_int(X, hidden, "hidden");
  ck.optional_is(RESIDUAL, kOnnxFloat, "", {batch, seqlen, hidden}, " (same as 'x')");
  ck.tensor_is(WEIGHT, kOnnxFloat, "", {hidden}, " (hidden from 'x')");

  AddRmsNormParams p{};
  // x's size in bytes fits in 63 bits (shape_is), so batch * seqlen does too unless hidden is 0:
  // then there is no work, whatever the other dims.
  p.rows = hidden == 0 ? 0 : static_cast<size_t>(batch) * static_cast<size_t>(seqlen);
  p.hidden = static_cast<size_t>(hidden);
  p.elem = elem_of(t);
  return p;
}

GatedRmsNormParams check_gated_rms_norm(const TensorDesc* inputs, size_t count, int64_t group_size) {
  enum { Y, Z, WEIGHT };
  static const char* const names[kGatedRmsNormInputs] = {"y", "z", "weight"};
  Checker ck("GatedRmsNorm", inputs, count, names, kGatedRmsNormInputs);

  for (size_t i : {Y, Z, WEIGHT}) ck.require(i);
  ck.not_sliced({Y, WEIGHT});

  // y defines the sizes; z is T like y (read whole or as channels [z_offset, z_offset + d) of a
  // packed row: Mamba-2's in_proj output), the weight float32 as the exports store norm weights.
  const int32_t t = ck.float_type(Y);
  ck.shape_is(Y, {"batch", "seqlen", "d"}, "");
  const int64_t batch = ck.at(Y).dims[0], seqlen = ck.at(Y).dims[1], d = ck.at(Y).dims[2];
  // The kernels index a row with 32-bit ints.
  ck.fits_int(Y, d, "d");
  const char* same_as_y = " (same as 'y')";
  ck.type_is(Z, t, same_as_y);
  const int64_t z_stride = ck.view_is(Z, {batch, seqlen, d}, ck.at(Z).sliced ? " ([batch, seqlen] as 'y')" : same_as_y);
  ck.tensor_is(WEIGHT, kOnnxFloat, "", {d}, " (d from 'y')");
  if (group_size < 1 || (d > 0 && d % group_size != 0)) {
    ck.fail("attribute 'group_size' is " + std::to_string(group_size) + ", expected a positive divisor of d = " +
            std::to_string(d) + " (from input 'y')");
  }

  GatedRmsNormParams p{};
  // y's size in bytes fits in 63 bits (shape_is), so batch * seqlen does too unless d is 0: then
  // there is no work, whatever the other dims.
  p.rows = d == 0 ? 0 : static_cast<size_t>(batch) * static_cast<size_t>(seqlen);
  p.d = static_cast<size_t>(d);
  p.group_size = static_cast<size_t>(group_size);
  p.z_stride = static_cast<size_t>(z_stride);
  p.elem = elem_of(t);
  return p;
}

namespace {

// Both layer steps' residual stream: float32 [batch, 1, hidden], one token a sequence, batch from
// 'conv_state'. It defines hidden, which is returned.
int64_t step_hidden(const Checker& ck, size_t residual, int64_t batch) {
  ck.tensor_is(residual, kOnnxFloat, "", {batch, 1, "hidden"}, " (one token a sequence; batch from 'conv_state')");
  const int64_t hidden = ck.at(residual).dims[2];
  if (hidden < 1) ck.shape_fail(residual, {batch, 1, "hidden"}, " with hidden >= 1");
  ck.fits_int(residual, hidden, "hidden");
  return hidden;
}

}  // namespace

MambaLayerStepParams check_mamba_layer_step(const TensorDesc* inputs, size_t count) {
  enum {
    CONV_STATE, SSM_STATE, RESIDUAL, NORM_WEIGHT, IN_PROJ_WEIGHT, IN_PROJ_BIAS, CONV_WEIGHT, CONV_BIAS,
    X_PROJ_WEIGHT, DT_PROJ_WEIGHT, DT_BIAS, A, D, OUT_PROJ_WEIGHT, OUT_PROJ_BIAS
  };
  static const char* const names[kMambaLayerStepInputs] = {
      "conv_state", "ssm_state", "residual", "norm_weight", "in_proj_weight", "in_proj_bias", "conv_weight",
      "conv_bias", "x_proj_weight", "dt_proj_weight", "dt_bias", "A", "D", "out_proj_weight", "out_proj_bias"};
  Checker ck("MambaLayerStep", inputs, count, names, kMambaLayerStepInputs);

  for (size_t i : {CONV_STATE, SSM_STATE, RESIDUAL, NORM_WEIGHT, IN_PROJ_WEIGHT, CONV_WEIGHT, X_PROJ_WEIGHT,
                   DT_PROJ_WEIGHT, A, OUT_PROJ_WEIGHT})
    ck.require(i);

  // The sizes come from the inputs that define them (conv_state: batch, inner, width; ssm_state:
  // dstate; residual: hidden; dt_proj_weight: dt_rank); every other input is checked against them.
  const int32_t t = ck.float_type(CONV_STATE);
  ck.shape_is(CONV_STATE, {"batch", "inner", "width - 1"}, "");
  const int64_t batch = ck.at(CONV_STATE).dims[0], inner = ck.at(CONV_STATE).dims[1];
  const int64_t width = ck.at(CONV_STATE).dims[2] + 1;
  if (inner < 1) ck.shape_fail(CONV_STATE, {"batch", "inner", "width - 1"}, " with inner >= 1");
  // The kernels index with 32-bit ints, and the expected sizes below (2 * inner, ...) must not
  // overflow even for an empty batch with absurd dims.
  ck.fits_int(CONV_STATE, batch, "batch");
  ck.fits_int(CONV_STATE, inner, "inner");
  ck.fits_int(CONV_STATE, width, "width");
  const char* same_as_conv_state = " (same as 'conv_state')";
  const char* state_dims = " ([batch, inner] from 'conv_state')";

  ck.tensor_is(SSM_STATE, kOnnxFloat, "", {batch, inner, "dstate"}, state_dims);
  const int64_t dstate = ck.at(SSM_STATE).dims[2];
  if (dstate < 1) ck.shape_fail(SSM_STATE, {batch, inner, "dstate"}, " with dstate >= 1");
  ck.fits_int(SSM_STATE, dstate, "dstate");

  const int64_t hidden = step_hidden(ck, RESIDUAL, batch);
  const std::string hidden_from = " (hidden from 'residual')";

  ck.tensor_is(NORM_WEIGHT, kOnnxFloat, "", {hidden}, hidden_from);
  ck.tensor_is(IN_PROJ_WEIGHT, t, same_as_conv_state, {hidden, 2 * inner}, " ([hidden, 2 * inner])");
  ck.tensor_is(CONV_WEIGHT, t, same_as_conv_state, {inner, width}, " ([inner, width] from 'conv_state')");

  ck.tensor_is(DT_PROJ_WEIGHT, t, same_as_conv_state, {"dt_rank", inner}, " (inner from 'conv_state')");
  const int64_t dt_rank = ck.at(DT_PROJ_WEIGHT).dims[0];
  if (dt_rank < 1) ck.shape_fail(DT_PROJ_WEIGHT, {"dt_rank", inner}, " with dt_rank >= 1");
  ck.fits_int(DT_PROJ_WEIGHT, dt_rank, "dt_rank");
  ck.tensor_is(X_PROJ_WEIGHT, t, same_as_conv_state, {inner, dt_rank + 2 * dstate},
               " ([inner, dt_rank + 2 * dstate] = [" + std::to_string(inner) + ", " + std::to_string(dt_rank) +
                   " + 2 * " + std::to_string(dstate) + "])");

  ck.tensor_is(A, kOnnxFloat, "", {inner, dstate}, " ([inner, dstate] from the states)");
  ck.tensor_is(OUT_PROJ_WEIGHT, t, same_as_conv_state, {inner, hidden}, " ([inner, hidden])");

  ck.optional_is(IN_PROJ_BIAS, t, same_as_conv_state, {2 * inner}, " ([2 * inner])");
  ck.optional_is(CONV_BIAS, t, same_as_conv_state, {inner}, " (inner from 'conv_state')");
  for (size_t i : {DT_BIAS, D}) ck.optional_is(i, kOnnxFloat, "", {inner}, " (inner from 'conv_state')");
  ck.optional_is(OUT_PROJ_BIAS, t, same_as_conv_state, {hidden}, hidden_from);

  MambaLayerStepParams p{};
  p.batch = static_cast<size_t>(batch);
  p.hidden = static_cast<size_t>(hidden);
  p.inner = static_cast<size_t>(inner);
  p.dstate = static_cast<size_t>(dstate);
  p.dt_rank = static_cast<size_t>(dt_rank);
  p.width = static_cast<size_t>(width);
  p.elem = elem_of(t);
  return p;
}

Mamba2LayerStepParams check_mamba2_layer_step(const TensorDesc* inputs, size_t count) {
  enum {
    CONV_STATE, SSM_STATE, RESIDUAL, NORM_WEIGHT, IN_PROJ_WEIGHT, IN_PROJ_BIAS, CONV_WEIGHT, CONV_BIAS, DT_BIAS, A, D,
    GATE_NORM_WEIGHT, OUT_PROJ_WEIGHT, OUT_PROJ_BIAS
  };
  static const char* const names[kMamba2LayerStepInputs] = {
      "conv_state", "ssm_state", "residual", "norm_weight", "in_proj_weight", "in_proj_bias", "conv_weight",
      "conv_bias", "dt_bias", "A", "D", "gate_norm_weight", "out_proj_weight", "out_proj_bias"};
  Checker ck("Mamba2LayerStep", inputs, count, names, kMamba2LayerStepInputs);

  for (size_t i : {CONV_STATE, SSM_STATE, RESIDUAL, NORM_WEIGHT, IN_PROJ_WEIGHT, CONV_WEIGHT, A, GATE_NORM_WEIGHT,
                   OUT_PROJ_WEIGHT})
    ck.require(i);

  // The sizes come from the inputs that define them (conv_state: batch, conv_dim, width;
  // ssm_state: heads, head_dim, dstate; the two together: ngroups; residual: hidden); every other
  // input is checked against them.
  const int32_t t = ck.float_type(CONV_STATE);
  const std::vector<Dim> conv_dims = {"batch", "conv_dim", "width - 1"};
  ck.shape_is(CONV_STATE, conv_dims, "");
  const int64_t batch = ck.at(CONV_STATE).dims[0], conv_dim = ck.at(CONV_STATE).dims[1];
  const int64_t width = ck.at(CONV_STATE).dims[2] + 1;
  ck.fits_int(CONV_STATE, batch, "batch");
  ck.fits_int(CONV_STATE, conv_dim, "conv_dim");
  ck.fits_int(CONV_STATE, width, "width");
  const char* same_as_conv_state = " (same as 'conv_state')";

  ck.type_is(SSM_STATE, kOnnxFloat, "");
  const std::vector<Dim> ssm_dims = {batch, "heads", "head_dim", "dstate"};
  ck.shape_is(SSM_STATE, ssm_dims, " (batch from 'conv_state')");
  const int64_t heads = ck.at(SSM_STATE).dims[1], head_dim = ck.at(SSM_STATE).dims[2];
  const int64_t dstate = ck.at(SSM_STATE).dims[3];
  if (heads < 1 || head_dim < 1 || dstate < 1) {
    ck.shape_fail(SSM_STATE, ssm_dims, " with heads, head_dim and dstate >= 1");
  }
  ck.fits_int(SSM_STATE, heads, "heads");
  ck.fits_int(SSM_STATE, head_dim, "head_dim");
  ck.fits_int(SSM_STATE, dstate, "dstate");
  const int64_t inner = heads * head_dim;  // both below 2^31: no overflow
  ck.fits_int(SSM_STATE, inner, "inner = heads * head_dim");

  // conv_dim = inner + 2 * ngroups * dstate, with heads a multiple of ngroups.
  const int64_t bc = conv_dim - inner;
  const int64_t ngroups = bc > 0 && bc % (2 * dstate) == 0 ? bc / (2 * dstate) : 0;
  if (ngroups < 1 || heads % ngroups != 0) {
    ck.shape_fail(CONV_STATE, {batch, "conv_dim", width - 1},
                  " with conv_dim = " + std::to_string(inner) + " + 2 * ngroups * " + std::to_string(dstate) +
                      " and ngroups dividing heads " + std::to_string(heads) + " (inner and dstate from 'ssm_state')");
  }

  const int64_t hidden = step_hidden(ck, RESIDUAL, batch);
  const std::string hidden_from = " (hidden from 'residual')";
  const std::string heads_from = " (heads from 'ssm_state')";
  const int64_t in_dim = inner + conv_dim + heads;
  const std::string in_dim_why = " (inner + conv_dim + heads = " + std::to_string(inner) + " + " +
                                 std::to_string(conv_dim) + " + " + std::to_string(heads) + ")";

  ck.tensor_is(NORM_WEIGHT, kOnnxFloat, "", {hidden}, hidden_from);
  ck.tensor_is(IN_PROJ_WEIGHT, t, same_as_conv_state, {hidden, in_dim}, in_dim_why);
  ck.tensor_is(CONV_WEIGHT, t, same_as_conv_state, {conv_dim, width}, " ([conv_dim, width] from 'conv_state')");
  ck.tensor_is(A, kOnnxFloat, "", {heads}, heads_from);
  ck.tensor_is(GATE_NORM_WEIGHT, kOnnxFloat, "", {inner}, " (inner = heads * head_dim from 'ssm_state')");
  ck.tensor_is(OUT_PROJ_WEIGHT, t, same_as_conv_state, {inner, hidden}, " ([inner, hidden])");

  ck.optional_is(IN_PROJ_BIAS, t, same_as_conv_state, {in_dim}, in_dim_why);
  ck.optional_is(CONV_BIAS, t, same_as_conv_state, {conv_dim}, " (conv_dim from 'conv_state')");
  for (size_t i : {DT_BIAS, D}) ck.optional_is(i, kOnnxFloat, "", {heads}, heads_from);
  ck.optional_is(OUT_PROJ_BIAS, t, same_as_conv_state, {hidden}, hidden_from);

  Mamba2LayerStepParams p{};
  p.batch = static_cast<size_t>(batch);
  p.hidden = static_cast<size_t>(hidden);
  p.heads = static_cast<size_t>(heads);
  p.head_dim = static_cast<size_t>(head_dim);
  p.ngroups = static_cast<size_t>(ngroups);
  p.dstate = static_cast<size_t>(dstate);
  p.width = static_cast<size_t>(width);
  p.elem = elem_of(t);
  return p;
}

void check_ssd_scan_cuda_limits(const SsdScanParams& p) {
  // The scan kernel keeps a head's dstate states in one warp's registers: 32 lanes x 16 states
  // (kSsdMaxDstate, cpp/cuda/ssd_scan.h).
  if (p.dstate > 512) {
    throw std::invalid_argument("SsdScan: input 'B' has dstate " + std::to_string(p.dstate) +
                                ", more than the CUDA kernel takes (512)");
  }
}

void check_mamba_layer_step_cuda_limits(const MambaLayerStepParams& p) {
  // A grid dimension holds the batch; one block's shared memory holds dt_low, B and C (rounded
  // up to float4) and the norm's 8 x 32 partial sums, within the 48 KiB a block gets by default.
  if (p.batch > 65535) {
    throw std::invalid_argument("MambaLayerStep: batch " + std::to_string(p.batch) +
                                " is more than the CUDA kernels take (65535)");
  }
  const size_t e = p.dt_rank + 2 * p.dstate;
  if (((e + 3) / 4 * 4 + 8 * 32) * 4 > 48 * 1024) {
    throw std::invalid_argument("MambaLayerStep: dt_rank + 2 * dstate = " + std::to_string(e) +
                                " is more than the CUDA kernels take (12032)");
  }
}

void check_mamba2_layer_step_cuda_limits(const Mamba2LayerStepParams& p) {
  // A grid dimension holds the batch (the scan kernel's rows).
  if (p.batch > 65535) {
    throw std::invalid_argument("Mamba2LayerStep: batch " + std::to_string(p.batch) +
                                " is more than the CUDA kernels take (65535)");
  }
}

}  // namespace mambac
