// A stand-in for TensorRT that drives libmambac_trt.so through its exported entry points, for the
// tests (tests/python/test_tensorrt_plugin.py on the CPU, tests/python/gpu/test_tensorrt_enqueue.py
// on a GPU). It implements what TensorRT gives a plugin: the expression builder and dimension
// expressions (symbolic dims print as names, arithmetic as text), field collections built from
// node attributes, a logger (every message is printed), and device buffers for enqueue.
//
//   trt_harness LIB SCRIPT      one command a line; see tests/python/trt_harness.py for the format
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace {

// --- the logger ---------------------------------------------------------------------------------
struct Logger : ILogger {
  void log(Severity s, AsciiChar const* msg) noexcept override {
    std::printf("log %s: %s\n", s == Severity::kERROR ? "error" : "info", msg);
  }
};
struct Finder : ILoggerFinder {
  Logger logger;
  ILogger* findLogger() override { return &logger; }
};

// --- dimension expressions ----------------------------------------------------------------------
struct ExprImpl : apiv::VDimensionExpr {
  bool constant = false;
  int64_t value = 0;
  bool isConstant() const override { return constant; }
  int64_t getConstantValue() const override { return constant ? value : -1; }
  bool isSizeTensor() const override { return false; }
};

struct Expr : IDimensionExpr {
  ExprImpl impl;
  std::string text;
  Expr(bool c, int64_t v, std::string t) : text(std::move(t)) {
    impl.constant = c;
    impl.value = v;
    mImpl = &impl;
  }
};

struct BuilderImpl : apiv::VExprBuilder {
  std::deque<Expr> exprs;
  const Expr* make(bool c, int64_t v, std::string t) {
    exprs.emplace_back(c, v, std::move(t));
    return &exprs.back();
  }
  const Expr* named(const std::string& s) {
    char* end = nullptr;
    long long v = std::strtoll(s.c_str(), &end, 10);
    return *end == 0 && !s.empty() ? make(true, v, s) : make(false, -1, s);
  }
  IDimensionExpr const* constant(int64_t v) override { return make(true, v, std::to_string(v)); }
  IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& a, IDimensionExpr const& b) override {
    const auto& x = static_cast<const Expr&>(a);
    const auto& y = static_cast<const Expr&>(b);
    static const char* sym[] = {"+", "*", "max", "min", "-", "==", "<", "floordiv", "ceildiv"};
    if (x.isConstant() && y.isConstant()) {
      int64_t p = x.getConstantValue(), q = y.getConstantValue(), r = 0;
      switch (op) {
        case DimensionOperation::kSUM: r = p + q; break;
        case DimensionOperation::kPROD: r = p * q; break;
        case DimensionOperation::kSUB: r = p - q; break;
        case DimensionOperation::kMAX: r = p > q ? p : q; break;
        case DimensionOperation::kMIN: r = p < q ? p : q; break;
        default: r = -999; break;
      }
      return make(true, r, std::to_string(r));
    }
    return make(false, -1, "(" + x.text + " " + sym[static_cast<int>(op)] + " " + y.text + ")");
  }
  IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override {
    return nullptr;
  }
};

struct Builder : IExprBuilder {
  BuilderImpl impl;
  Builder() { mImpl = &impl; }
};

// --- the script ---------------------------------------------------------------------------------
DataType parse_type(const std::string& s) {
  if (s == "float32") return DataType::kFLOAT;
  if (s == "float16") return DataType::kHALF;
  if (s == "bfloat16") return DataType::kBF16;
  if (s == "int32") return DataType::kINT32;
  if (s == "int64") return DataType::kINT64;
  throw std::runtime_error("unknown type " + s);
}
const char* type_name(DataType t) {
  switch (t) {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kBF16: return "bfloat16";
    case DataType::kINT32: return "int32";
    case DataType::kINT64: return "int64";
    default: return "other";
  }
}
size_t type_bytes(DataType t) { return t == DataType::kHALF || t == DataType::kBF16 ? 2 : t == DataType::kINT64 ? 8 : 4; }

struct Input {
  DataType type;
  std::vector<std::string> dims;  // numbers or names
  std::vector<std::string> min, max;  // the profile's bounds; empty = dims
};

struct Field {
  std::string name, kind;
  std::vector<char> bytes;  // the value as the field's data points at it
  int32_t length = 1;
};

PluginField as_plugin_field(const Field& f) {
  PluginFieldType t = f.kind == "i32"   ? PluginFieldType::kINT32
                      : f.kind == "i64" ? PluginFieldType::kINT64
                      : f.kind == "f32" ? PluginFieldType::kFLOAT32
                      : f.kind == "f64" ? PluginFieldType::kFLOAT64
                                        : PluginFieldType::kCHAR;
  return PluginField(f.name.c_str(), f.bytes.data(), t, f.length);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) out.push_back(item);
  return out;
}

Dims concrete(const std::vector<std::string>& dims) {
  Dims d{};
  d.nbDims = static_cast<int32_t>(dims.size());
  for (size_t k = 0; k < dims.size(); ++k) d.d[k] = std::stoll(dims[k]);
  return d;
}
Dims concrete(const Input& in) { return concrete(in.dims); }

void print_fields(const char* what, const PluginFieldCollection* fc) {
  std::printf("%s:", what);
  if (!fc) {
    std::printf(" null\n");
    return;
  }
  for (int32_t k = 0; k < fc->nbFields; ++k) {
    const PluginField& f = fc->fields[k];
    std::printf(" %s=", f.name);
    if (!f.data) {
      std::printf("<%d>", static_cast<int>(f.type));
    } else if (f.type == PluginFieldType::kINT32) {
      std::printf("%d", *static_cast<const int32_t*>(f.data));
    } else if (f.type == PluginFieldType::kFLOAT32) {
      std::printf("%g", *static_cast<const float*>(f.data));
    } else if (f.type == PluginFieldType::kCHAR) {
      std::printf("\"%.*s\"", f.length, static_cast<const char*>(f.data));
    }
  }
  std::printf("\n");
}

struct Session {
  IPluginCreatorV3One* creator = nullptr;
  IPluginV3* plugin = nullptr;
  std::vector<Field> fields;
  std::vector<Input> inputs;

  IPluginV3OneBuild* build() const {
    return static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
  }
  IPluginV3OneRuntime* runtime() const {
    return static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
  }
  std::vector<DataType> output_types() const {
    int n = build()->getNbOutputs();
    std::vector<DataType> in, out(n, DataType::kFLOAT);
    for (auto& i : inputs) in.push_back(i.type);
    int rc = build()->getOutputDataTypes(out.data(), n, in.data(), static_cast<int32_t>(in.size()));
    if (rc != 0) throw std::runtime_error("getOutputDataTypes rc=" + std::to_string(rc));
    return out;
  }
  // Inputs and outputs as TensorRT describes them at build time (opt = the dims; min and max the
  // profile's bounds where the input gives them, else the dims).
  std::vector<DynamicPluginTensorDesc> io(const std::vector<std::vector<int64_t>>& out_dims) const {
    std::vector<DynamicPluginTensorDesc> v;
    for (auto& i : inputs) {
      DynamicPluginTensorDesc d{};
      d.desc.dims = concrete(i);
      d.desc.type = i.type;
      d.desc.format = TensorFormat::kLINEAR;
      d.min = d.opt = d.max = d.desc.dims;
      if (!i.min.empty()) d.min = concrete(i.min);
      if (!i.max.empty()) d.max = concrete(i.max);
      v.push_back(d);
    }
    std::vector<DataType> ot = output_types();
    for (size_t k = 0; k < ot.size(); ++k) {
      DynamicPluginTensorDesc d{};
      d.desc.type = ot[k];
      d.desc.format = TensorFormat::kLINEAR;
      d.desc.dims.nbDims = static_cast<int32_t>(out_dims[k].size());
      for (size_t j = 0; j < out_dims[k].size(); ++j) d.desc.dims.d[j] = out_dims[k][j];
      d.min = d.opt = d.max = d.desc.dims;
      v.push_back(d);
    }
    return v;
  }
  // Output shapes; numbers when every input dim is a number.
  std::vector<std::vector<std::string>> shapes(int* rc_out) const {
    Builder b;
    std::vector<DimsExprs> in(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i) {
      in[i].nbDims = static_cast<int32_t>(inputs[i].dims.size());
      for (size_t k = 0; k < inputs[i].dims.size(); ++k) in[i].d[k] = b.impl.named(inputs[i].dims[k]);
    }
    int n = build()->getNbOutputs();
    std::vector<DimsExprs> out(n);
    int rc = build()->getOutputShapes(in.data(), static_cast<int32_t>(in.size()), nullptr, 0, out.data(), n, b);
    *rc_out = rc;
    std::vector<std::vector<std::string>> s;
    if (rc != 0) return s;
    for (auto& o : out) {
      s.emplace_back();
      for (int k = 0; k < o.nbDims; ++k) s.back().push_back(static_cast<const Expr*>(o.d[k])->text);
    }
    return s;
  }
  std::vector<std::vector<int64_t>> concrete_out_dims() const {
    int rc = 0;
    auto s = shapes(&rc);
    if (rc != 0) throw std::runtime_error("getOutputShapes failed");
    std::vector<std::vector<int64_t>> d;
    for (auto& o : s) {
      d.emplace_back();
      for (auto& x : o) d.back().push_back(std::stoll(x));
    }
    return d;
  }
};

std::vector<char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// Uploads DIR/in{i}.bin, runs onShapeChange and enqueue on a stream of its own, writes DIR/out{k}.bin.
void run_on_device(Session& s, const std::string& dir) {
  auto out_dims = s.concrete_out_dims();
  auto types = s.output_types();
  std::vector<void*> dev_in, dev_out;
  std::vector<PluginTensorDesc> in_desc, out_desc;
  for (size_t i = 0; i < s.inputs.size(); ++i) {
    std::vector<char> host = read_file(dir + "/in" + std::to_string(i) + ".bin");
    void* p = nullptr;
    cuda_ok(cudaMalloc(&p, host.size() + 16), "cudaMalloc");
    cuda_ok(cudaMemcpy(p, host.data(), host.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
    dev_in.push_back(p);
    PluginTensorDesc d{};
    d.dims = concrete(s.inputs[i]);
    d.type = s.inputs[i].type;
    d.format = TensorFormat::kLINEAR;
    in_desc.push_back(d);
  }
  std::vector<size_t> out_bytes;
  for (size_t k = 0; k < out_dims.size(); ++k) {
    size_t n = type_bytes(types[k]);
    PluginTensorDesc d{};
    d.dims.nbDims = static_cast<int32_t>(out_dims[k].size());
    for (size_t j = 0; j < out_dims[k].size(); ++j) {
      d.dims.d[j] = out_dims[k][j];
      n *= static_cast<size_t>(out_dims[k][j]);
    }
    d.type = types[k];
    d.format = TensorFormat::kLINEAR;
    out_desc.push_back(d);
    void* p = nullptr;
    cuda_ok(cudaMalloc(&p, n + 16), "cudaMalloc");
    // NaN bytes: an output the plugin forgot to write cannot pass the comparison.
    cuda_ok(cudaMemset(p, 0xff, n + 16), "cudaMemset");
    dev_out.push_back(p);
    out_bytes.push_back(n);
  }
  auto io = s.io(out_dims);
  int32_t nin = static_cast<int32_t>(s.inputs.size()), nout = static_cast<int32_t>(out_dims.size());
  if (s.build()->configurePlugin(io.data(), nin, io.data() + nin, nout) != 0) throw std::runtime_error("configurePlugin failed");
  size_t ws_bytes = s.build()->getWorkspaceSize(io.data(), nin, io.data() + nin, nout);
  void* ws = nullptr;
  if (ws_bytes) {
    cuda_ok(cudaMalloc(&ws, ws_bytes), "cudaMalloc workspace");
    // NaN bytes too: scratch read before the plugin's kernels write it shows in the outputs.
    cuda_ok(cudaMemset(ws, 0xff, ws_bytes), "cudaMemset workspace");
  }
  // As TensorRT does: the runtime plugin is a clone attached to a context.
  IPluginV3* attached = s.runtime()->attachToContext(nullptr);
  auto* rt = static_cast<IPluginV3OneRuntime*>(attached->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
  if (rt->onShapeChange(in_desc.data(), nin, out_desc.data(), nout) != 0) throw std::runtime_error("onShapeChange failed");
  cudaStream_t stream;
  cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  int rc = rt->enqueue(in_desc.data(), out_desc.data(), const_cast<const void* const*>(dev_in.data()), dev_out.data(), ws,
                       stream);
  std::printf("enqueue rc=%d workspace=%zu\n", rc, ws_bytes);
  cuda_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  for (size_t k = 0; k < dev_out.size(); ++k) {
    std::vector<char> host(out_bytes[k]);
    cuda_ok(cudaMemcpy(host.data(), dev_out[k], host.size(), cudaMemcpyDeviceToHost), "cudaMemcpy");
    std::ofstream f(dir + "/out" + std::to_string(k) + ".bin", std::ios::binary);
    f.write(host.data(), static_cast<std::streamsize>(host.size()));
  }
  for (void* p : dev_in) cudaFree(p);
  for (void* p : dev_out) cudaFree(p);
  if (ws) cudaFree(ws);
  cudaStreamDestroy(stream);
  delete attached;
}

void command(Session& s, IPluginCreatorInterface* const* list, int32_t count, const std::vector<std::string>& w) {
  const std::string& c = w[0];
  if (c == "op") {  // op NAME: pick the creator
    s = Session{};
    for (int32_t i = 0; i < count; ++i) {
      auto* cr = static_cast<IPluginCreatorV3One*>(list[i]);
      if (w[1] == cr->getPluginName()) s.creator = cr;
    }
    if (!s.creator) throw std::runtime_error("no creator " + w[1]);
    std::printf("creator %s version %s namespace %s\n", s.creator->getPluginName(), s.creator->getPluginVersion(),
                s.creator->getPluginNamespace());
    print_fields("field names", s.creator->getFieldNames());
  } else if (c == "field") {  // field NAME KIND VALUE (KIND: i32 i64 f32 f64 str)
    Field f{w[1], w[2], {}, 1};
    std::string v = w.size() > 3 ? w[3] : "";
    if (f.kind == "i32") { int32_t x = std::stoi(v); f.bytes.assign(reinterpret_cast<char*>(&x), reinterpret_cast<char*>(&x) + 4); }
    else if (f.kind == "i64") { int64_t x = std::stoll(v); f.bytes.assign(reinterpret_cast<char*>(&x), reinterpret_cast<char*>(&x) + 8); }
    else if (f.kind == "f32") { float x = std::stof(v); f.bytes.assign(reinterpret_cast<char*>(&x), reinterpret_cast<char*>(&x) + 4); }
    else if (f.kind == "f64") { double x = std::stod(v); f.bytes.assign(reinterpret_cast<char*>(&x), reinterpret_cast<char*>(&x) + 8); }
    else { f.bytes.assign(v.begin(), v.end()); f.length = static_cast<int32_t>(v.size()); }
    s.fields.push_back(f);
  } else if (c == "create") {  // createPlugin(kBUILD) from the fields given so far
    std::vector<PluginField> pf;
    for (auto& f : s.fields) pf.push_back(as_plugin_field(f));
    PluginFieldCollection fc{static_cast<int32_t>(pf.size()), pf.data()};
    s.plugin = s.creator->createPlugin("node", &fc, TensorRTPhase::kBUILD);
    std::printf("create %s\n", s.plugin ? "ok" : "null");
  } else if (c == "in") {  // in TYPE d0,d1,... [MIN:MAX] (names are symbolic dims; MIN, MAX: the profile's)
    Input in{parse_type(w[1]), w.size() > 2 ? split(w[2], ',') : std::vector<std::string>{}, {}, {}};
    if (w.size() > 3) {
      auto bounds = split(w[3], ':');
      if (bounds.size() != 2) throw std::runtime_error("profile bounds are MIN:MAX, got " + w[3]);
      in.min = split(bounds[0], ',');
      in.max = split(bounds[1], ',');
    }
    s.inputs.push_back(in);
  } else if (c == "types") {
    std::printf("types:");
    for (DataType t : s.output_types()) std::printf(" %s", type_name(t));
    std::printf("\n");
  } else if (c == "shapes") {
    int rc = 0;
    auto sh = s.shapes(&rc);
    std::printf("shapes rc=%d", rc);
    for (auto& o : sh) {
      std::printf(" [");
      for (size_t k = 0; k < o.size(); ++k) std::printf("%s%s", k ? ", " : "", o[k].c_str());
      std::printf("]");
    }
    std::printf("\n");
  } else if (c == "formats") {  // per position, the linear types accepted with the others as given
    auto types = s.output_types();
    int32_t nin = static_cast<int32_t>(s.inputs.size()), nout = static_cast<int32_t>(types.size());
    std::vector<DynamicPluginTensorDesc> io(nin + nout);
    for (int32_t i = 0; i < nin + nout; ++i) {
      io[i].desc.type = i < nin ? s.inputs[i].type : types[i - nin];
      io[i].desc.format = TensorFormat::kLINEAR;
    }
    for (int32_t pos = 0; pos < nin + nout; ++pos) {
      std::printf("pos %d:", pos);
      DynamicPluginTensorDesc keep = io[pos];
      for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16, DataType::kINT32}) {
        io[pos].desc.type = t;
        if (s.build()->supportsFormatCombination(pos, io.data(), nin, nout)) std::printf(" %s", type_name(t));
      }
      io[pos] = keep;
      io[pos].desc.format = TensorFormat::kCHW32;
      if (s.build()->supportsFormatCombination(pos, io.data(), nin, nout)) std::printf(" CHW32!");
      io[pos] = keep;
      std::printf("\n");
    }
  } else if (c == "configure") {  // configurePlugin + getWorkspaceSize + onShapeChange on the given dims
    auto out_dims = s.concrete_out_dims();
    auto io = s.io(out_dims);
    int32_t nin = static_cast<int32_t>(s.inputs.size()), nout = static_cast<int32_t>(out_dims.size());
    int rc = s.build()->configurePlugin(io.data(), nin, io.data() + nin, nout);
    size_t ws = s.build()->getWorkspaceSize(io.data(), nin, io.data() + nin, nout);
    std::vector<PluginTensorDesc> d;
    for (auto& x : io) d.push_back(x.desc);
    int rc2 = s.runtime()->onShapeChange(d.data(), nin, d.data() + nin, nout);
    std::printf("configure rc=%d workspace=%zu onShapeChange rc=%d\n", rc, ws, rc2);
  } else if (c == "configure_raw") {  // configurePlugin with the inputs' dims and no shape inference
    std::vector<DynamicPluginTensorDesc> io;
    for (auto& i : s.inputs) {
      DynamicPluginTensorDesc d{};
      d.desc.dims = concrete(i);
      d.desc.type = i.type;
      d.min = d.opt = d.max = d.desc.dims;
      io.push_back(d);
    }
    int32_t nout = s.build()->getNbOutputs();
    std::vector<DynamicPluginTensorDesc> out(nout);
    std::vector<PluginTensorDesc> in_d, out_d(nout);
    for (auto& x : io) in_d.push_back(x.desc);
    int rc = s.build()->configurePlugin(io.data(), static_cast<int32_t>(io.size()), out.data(), nout);
    int rc2 = s.runtime()->onShapeChange(in_d.data(), static_cast<int32_t>(in_d.size()), out_d.data(), nout);
    int rc3 = s.runtime()->enqueue(in_d.data(), out_d.data(), nullptr, nullptr, nullptr, nullptr);
    std::printf("configure rc=%d onShapeChange rc=%d enqueue rc=%d\n", rc, rc2, rc3);
  } else if (c == "serialize") {  // fields out, a runtime plugin back from them, its fields out
    const PluginFieldCollection* fc = s.runtime()->getFieldsToSerialize();
    print_fields("serialized", fc);
    IPluginV3* back = s.creator->createPlugin("node", fc, TensorRTPhase::kRUNTIME);
    if (!back) {
      std::printf("deserialize null\n");
      return;
    }
    auto* rt = static_cast<IPluginV3OneRuntime*>(back->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    print_fields("deserialized", rt->getFieldsToSerialize());
    delete back;
  } else if (c == "clone") {
    IPluginV3* k = s.plugin->clone();
    auto* core = static_cast<IPluginV3OneCore*>(k->getCapabilityInterface(PluginCapabilityType::kCORE));
    std::printf("clone %s %s %s\n", core->getPluginName(), core->getPluginVersion(), core->getPluginNamespace());
    auto* rt = static_cast<IPluginV3OneRuntime*>(k->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    print_fields("clone fields", rt->getFieldsToSerialize());
    delete k;
  } else if (c == "run") {  // run DIR
    run_on_device(s, w[1]);
  } else {
    throw std::runtime_error("unknown command " + c);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: trt_harness LIB SCRIPT\n");
    return 2;
  }
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    std::fprintf(stderr, "dlopen: %s\n", dlerror());
    return 2;
  }
  using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
  using SetLoggerFinder = void (*)(ILoggerFinder*);
  auto get_creators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
  auto set_finder = reinterpret_cast<SetLoggerFinder>(dlsym(lib, "setLoggerFinder"));
  if (!get_creators || !set_finder) {
    std::fprintf(stderr, "missing entry points\n");
    return 2;
  }
  static Finder finder;
  set_finder(&finder);
  int32_t count = 0;
  IPluginCreatorInterface* const* list = get_creators(count);
  std::printf("creators %d\n", count);
  std::ifstream script(argv[2]);
  Session s;
  std::string line;
  int status = 0;
  while (std::getline(script, line)) {
    auto w = split(line, ' ');
    if (w.empty() || w[0].empty() || w[0][0] == '#') continue;
    try {
      command(s, list, count, w);
    } catch (const std::exception& e) {
      std::printf("harness error: %s\n", e.what());
      status = 1;
    }
    std::fflush(stdout);
  }
  delete s.plugin;
  return status;
}
