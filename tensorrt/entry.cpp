// The library's exported entry points, and nothing else is exported (exports.map):
//
// * getCreators: what TensorRT's IPluginRegistry::loadLibrary (trtexec --dynamicPlugins) reads.
// * setLoggerFinder: how such a library is handed TensorRT's logger.
// * Load-time registration: loaders that only dlopen the library (trtexec --staticPlugins, ONNX
//   Runtime's TensorRT EP with trt_extra_plugin_lib_paths) expect it to register its creators
//   itself, which REGISTER_TENSORRT_PLUGIN would do by linking libnvinfer. Instead the constructor
//   below looks getPluginRegistry up in the process (dlsym) and registers only when TensorRT is
//   already loaded, so the library needs no TensorRT symbol at link or load time.
#include <dlfcn.h>

#include <atomic>

#include "plugin_impl.h"

namespace mambac::trt {

extern std::atomic<ILoggerFinder*> g_logger_finder;
IPluginCreatorInterface* selective_scan_creator();
IPluginCreatorInterface* ssd_scan_creator();
IPluginCreatorInterface* mamba2_layer_step_creator();
IPluginCreatorInterface* causal_conv1d_creator();
IPluginCreatorInterface* layer_step_creator();
IPluginCreatorInterface* add_rms_norm_creator();
IPluginCreatorInterface* gated_rms_norm_creator();

IPluginCreatorInterface* const* creators(int32_t& count) noexcept {
  static IPluginCreatorInterface* const list[] = {selective_scan_creator(), causal_conv1d_creator(),
                                                  layer_step_creator(), ssd_scan_creator(),
                                                  mamba2_layer_step_creator(), add_rms_norm_creator(),
                                                  gated_rms_norm_creator()};
  count = static_cast<int32_t>(sizeof list / sizeof list[0]);
  return list;
}

namespace {

// The registry the constructor registered with, if any.
IPluginRegistry* g_registered_with = nullptr;

IPluginRegistry* loaded_registry() noexcept {
  using Fn = IPluginRegistry* (*)() noexcept;
  auto fn = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "getPluginRegistry"));
  return fn ? fn() : nullptr;
}

__attribute__((constructor)) void register_with_loaded_tensorrt() noexcept {
  IPluginRegistry* reg = loaded_registry();
  if (!reg) return;
  int32_t n = 0;
  IPluginCreatorInterface* const* list = creators(n);
  for (int32_t i = 0; i < n; ++i) reg->registerCreator(*list[i], kNamespace);
  g_registered_with = reg;
}

}  // namespace
}  // namespace mambac::trt

extern "C" {

__attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept {
  mambac::trt::g_logger_finder.store(finder);
}

__attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(
    int32_t& nbCreators) noexcept {
  using namespace mambac::trt;
  int32_t n = 0;
  IPluginCreatorInterface* const* list = creators(n);
  // loadLibrary registers what this returns under its library handle: undo the load-time
  // registration first, or the second one fails as a duplicate.
  if (g_registered_with) {
    for (int32_t i = 0; i < n; ++i) g_registered_with->deregisterCreator(*list[i]);
    g_registered_with = nullptr;
  }
  nbCreators = n;
  return list;
}

}  // extern "C"
