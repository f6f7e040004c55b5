// The IPluginV3 class template and its creator, instantiated once per op (see plugin.h for what
// an `Op` provides). Every virtual below is a TensorRT entry point: each catches everything, logs
// the message and returns TensorRT's failure value.
#pragma once

#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "plugin.h"

namespace mambac::trt {

// Runs `f`; on any exception logs it and returns `fail`.
template <class F, class R>
R guarded(F&& f, R fail) noexcept {
  try {
    return f();
  } catch (const std::exception& e) {
    log_error(e.what());
  } catch (...) {
    log_error("mambac TensorRT plugin: unknown error");
  }
  return fail;
}

template <class Op>
class Plugin final : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild, public IPluginV3OneRuntime {
 public:
  Plugin(Op op, int64_t present) : op_(std::move(op)), present_(present) {}

  // --- IPluginV3 ------------------------------------------------------------------------------
  IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
    switch (type) {
      case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
      case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
      case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
  }
  IPluginV3* clone() noexcept override {
    return guarded([&]() -> IPluginV3* { return new Plugin(op_, present_); }, static_cast<IPluginV3*>(nullptr));
  }

  // --- IPluginV3OneCore -----------------------------------------------------------------------
  AsciiChar const* getPluginName() const noexcept override { return Op::kName; }
  AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
  AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }

  // --- IPluginV3OneBuild ----------------------------------------------------------------------
  int32_t getNbOutputs() const noexcept override { return Op::kOutputs; }

  int32_t getOutputDataTypes(DataType* out, int32_t nb_out, DataType const* in, int32_t nb_in) const noexcept override {
    return guarded([&]() -> int32_t {
      counts(nb_in, nb_out);
      // T is the first input's type (slot 0 is always required); supportsFormatCombination
      // keeps it to float32 / float16 / bfloat16.
      for (int k = 0; k < nb_out; ++k) out[k] = Op::f32_output(k) ? DataType::kFLOAT : in[0];
      return 0;
    }, -1);
  }

  int32_t getOutputShapes(DimsExprs const* in, int32_t nb_in, DimsExprs const*, int32_t, DimsExprs* out,
                          int32_t nb_out, IExprBuilder& b) noexcept override {
    return guarded([&]() -> int32_t {
      std::vector<size_t> slots = counts(nb_in, nb_out);
      std::array<const DimsExprs*, Op::kSlots> by_slot{};
      for (size_t i = 0; i < slots.size(); ++i) by_slot[slots[i]] = &in[i];
      // Only the ranks the output shapes index are checked here (dims may be symbolic); the full
      // check runs on concrete shapes in configurePlugin, onShapeChange and enqueue.
      for (auto [slot, rank] : op_.indexed_ranks()) {
        const DimsExprs* d = by_slot[slot];
        if (!d) throw std::invalid_argument(std::string(Op::kName) + ": input slot " + std::to_string(slot) + " is required");
        if (d->nbDims != rank) {
          throw std::invalid_argument(std::string(Op::kName) + ": input slot " + std::to_string(slot) + " has " +
                                      std::to_string(d->nbDims) + " dims, expected " + std::to_string(rank));
        }
      }
      op_.output_shapes(by_slot.data(), out, b);
      return 0;
    }, -1);
  }

  bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* io, int32_t nb_in,
                                 int32_t nb_out) noexcept override {
    return guarded([&]() -> bool {
      std::vector<size_t> slots = counts(nb_in, nb_out);
      const PluginTensorDesc& d = io[pos].desc;
      if (d.format != TensorFormat::kLINEAR) return false;
      const DataType t = io[0].desc.type;
      if (pos == 0) return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16;
      const bool f32 = pos < nb_in ? Op::f32_input(slots[pos]) : Op::f32_output(pos - nb_in);
      return d.type == (f32 ? DataType::kFLOAT : t);
    }, false);
  }

  int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nb_in, DynamicPluginTensorDesc const*,
                          int32_t nb_out) noexcept override {
    return guarded([&]() -> int32_t {
      std::vector<size_t> slots = counts(nb_in, nb_out);
      // The profile's bounds are concrete shapes: each must pass the op's check.
      for (Dims DynamicPluginTensorDesc::*bound :
           {&DynamicPluginTensorDesc::min, &DynamicPluginTensorDesc::opt, &DynamicPluginTensorDesc::max}) {
        std::array<TensorDesc, Op::kSlots> descs{};
        for (size_t i = 0; i < slots.size(); ++i) descs[slots[i]] = desc_of(in[i].desc.type, in[i].*bound);
        params(descs);
      }
      return 0;
    }, -1);
  }

  size_t getWorkspaceSize(DynamicPluginTensorDesc const* in, int32_t nb_in, DynamicPluginTensorDesc const*,
                          int32_t nb_out) const noexcept override {
    return guarded([&]() -> size_t {
      std::vector<size_t> slots = counts(nb_in, nb_out);
      std::array<TensorDesc, Op::kSlots> lo{}, hi{};
      for (size_t i = 0; i < slots.size(); ++i) {
        lo[slots[i]] = desc_of(in[i].desc.type, in[i].min);
        hi[slots[i]] = desc_of(in[i].desc.type, in[i].max);
      }
      return Op::workspace(params(lo), params(hi));
    }, size_t{0});
  }

  // --- IPluginV3OneRuntime --------------------------------------------------------------------
  int32_t onShapeChange(PluginTensorDesc const* in, int32_t nb_in, PluginTensorDesc const*, int32_t nb_out) noexcept override {
    return guarded([&]() -> int32_t {
      run_params(in, nb_in, nb_out);
      return 0;
    }, -1);
  }

  int32_t enqueue(PluginTensorDesc const* in, PluginTensorDesc const*, void const* const* inputs, void* const* outputs,
                  void* workspace, cudaStream_t stream) noexcept override {
    return guarded([&]() -> int32_t {
      // Checked again here (cheap) so a launch never depends on onShapeChange having run.
      typename Op::Params p = run_params(in, nb_in_, Op::kOutputs);
      std::array<const void*, Op::kSlots> ptrs{};
      for (size_t i = 0; i < slots_.size(); ++i) ptrs[slots_[i]] = inputs[i];
      int err = op_.enqueue(p, ptrs.data(), outputs, workspace, stream);
      if (err != 0) {
        throw std::runtime_error(std::string(Op::kName) + ": CUDA error " + std::to_string(err) + " (" +
                                 mambac_cuda_error_string(err) + ")");
      }
      return 0;
    }, -1);
  }

  IPluginV3* attachToContext(IPluginResourceContext*) noexcept override { return clone(); }

  PluginFieldCollection const* getFieldsToSerialize() noexcept override {
    return guarded([&]() -> PluginFieldCollection const* {
      values_.clear();
      fields_.clear();
      values_.reserve(Op::fields().size() + 1);
      for (const FieldSpec& f : Op::fields()) values_.push_back(op_.get_field(f.name));
      for (size_t k = 0; k < Op::fields().size(); ++k) {
        const FieldSpec& f = Op::fields()[k];
        const FieldValue& v = values_[k];
        if (v.absent) continue;
        switch (f.kind) {
          case FieldKind::Int: fields_.emplace_back(f.name, &v.i, PluginFieldType::kINT32, 1); break;
          case FieldKind::Float: fields_.emplace_back(f.name, &v.f, PluginFieldType::kFLOAT32, 1); break;
          case FieldKind::String:
            fields_.emplace_back(f.name, v.s.c_str(), PluginFieldType::kCHAR, static_cast<int32_t>(v.s.size()));
            break;
        }
      }
      if (present_ >= 0) {
        values_.emplace_back();
        values_.back().i = static_cast<int32_t>(present_);
        fields_.emplace_back(kPresentInputs, &values_.back().i, PluginFieldType::kINT32, 1);
      }
      collection_.nbFields = static_cast<int32_t>(fields_.size());
      collection_.fields = fields_.data();
      return &collection_;
    }, static_cast<PluginFieldCollection const*>(nullptr));
  }

 private:
  // The input count must fit the op, the output count be the op's; returns the slot of each input.
  std::vector<size_t> counts(int32_t nb_in, int32_t nb_out) const {
    if (nb_out != Op::kOutputs) {
      throw std::invalid_argument(std::string(Op::kName) + ": " + std::to_string(nb_out) + " outputs, expected " +
                                  std::to_string(Op::kOutputs));
    }
    return slot_map(Op::kName, Op::kSlots, present_, nb_in);
  }

  static TensorDesc desc_of(DataType t, const Dims& d) {
    TensorDesc desc{};
    desc.present = true;
    desc.elem = onnx_code(t);
    desc.rank = d.nbDims < 0 ? 0 : static_cast<size_t>(d.nbDims);
    for (int k = 0; k < d.nbDims && k < 8; ++k) desc.dims[k] = d.d[k];
    return desc;
  }

  typename Op::Params params(const std::array<TensorDesc, Op::kSlots>& descs) const {
    typename Op::Params p = op_.check(descs.data());
    op_.finish(p);
    return p;
  }

  typename Op::Params run_params(PluginTensorDesc const* in, int32_t nb_in, int32_t nb_out) {
    slots_ = counts(nb_in, nb_out);
    nb_in_ = nb_in;
    std::array<TensorDesc, Op::kSlots> descs{};
    for (size_t i = 0; i < slots_.size(); ++i) descs[slots_[i]] = desc_of(in[i].type, in[i].dims);
    return params(descs);
  }

  Op op_;
  int64_t present_;  // present_inputs, or -1 when not given
  std::vector<size_t> slots_;
  int32_t nb_in_ = 0;
  std::vector<FieldValue> values_;
  std::vector<PluginField> fields_;
  PluginFieldCollection collection_{};
};

// Reads one field as the kind the op declares; the messages match the ORT op's attribute errors.
FieldValue parse_field(const char* op, const PluginField& f, FieldKind kind);

template <class Op>
class Creator final : public IPluginCreatorV3One {
 public:
  Creator() {
    for (const FieldSpec& f : Op::fields()) {
      PluginFieldType t = f.kind == FieldKind::Int     ? PluginFieldType::kINT32
                          : f.kind == FieldKind::Float ? PluginFieldType::kFLOAT32
                                                       : PluginFieldType::kCHAR;
      names_.emplace_back(f.name, nullptr, t, 1);
    }
    names_.emplace_back(kPresentInputs, nullptr, PluginFieldType::kINT32, 1);
    collection_.nbFields = static_cast<int32_t>(names_.size());
    collection_.fields = names_.data();
  }

  IPluginV3* createPlugin(AsciiChar const*, PluginFieldCollection const* fc, TensorRTPhase) noexcept override {
    return guarded([&]() -> IPluginV3* {
      Op op{};
      int64_t present = -1;
      for (int32_t k = 0; fc && k < fc->nbFields; ++k) {
        const PluginField& f = fc->fields[k];
        if (!f.name) throw std::invalid_argument(std::string(Op::kName) + ": a field has no name");
        // The ONNX parser's own lookup keys; harmless if it passes them on.
        if (!std::strcmp(f.name, "plugin_version") || !std::strcmp(f.name, "plugin_namespace")) continue;
        if (!std::strcmp(f.name, kPresentInputs)) {
          present = parse_field(Op::kName, f, FieldKind::Int).i;
          slot_map(Op::kName, Op::kSlots, present, -1);  // validates the mask alone
          continue;
        }
        const FieldSpec* spec = nullptr;
        for (const FieldSpec& s : Op::fields()) {
          if (!std::strcmp(s.name, f.name)) spec = &s;
        }
        if (!spec) throw std::invalid_argument(std::string(Op::kName) + ": unknown attribute '" + f.name + "'");
        op.set_field(spec->name, parse_field(Op::kName, f, spec->kind));
      }
      op.validate();
      return new Plugin<Op>(std::move(op), present);
    }, static_cast<IPluginV3*>(nullptr));
  }

  PluginFieldCollection const* getFieldNames() noexcept override { return &collection_; }
  AsciiChar const* getPluginName() const noexcept override { return Op::kName; }
  AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
  AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }

 private:
  std::vector<PluginField> names_;
  PluginFieldCollection collection_{};
};

}  // namespace mambac::trt
