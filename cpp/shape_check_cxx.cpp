// The cxx bridge's entry points of the shape checks (custom-ops/src/kernel_abi.rs): they forward
// a rust::Slice to the plain-array checks of shape_check.cpp. Kept apart because rust::Slice's
// accessors live in the Rust runtime, which the TensorRT plugin (built without cargo) lacks.
#include "mambac/shape_check.h"

#include "mambac-ops/custom-ops/src/kernel_abi.rs.h"

namespace mambac {

SelectiveScanParams check_selective_scan(rust::Slice<const TensorDesc> inputs) {
  return check_selective_scan(inputs.data(), inputs.size());
}

SsdScanParams check_ssd_scan(rust::Slice<const TensorDesc> inputs, const SsdScanDims& dims) {
  return check_ssd_scan(inputs.data(), inputs.size(), dims);
}

CausalConv1dParams check_causal_conv1d(rust::Slice<const TensorDesc> inputs) {
  return check_causal_conv1d(inputs.data(), inputs.size());
}

AddRmsNormParams check_add_rms_norm(rust::Slice<const TensorDesc> inputs) {
  return check_add_rms_norm(inputs.data(), inputs.size());
}

GatedRmsNormParams check_gated_rms_norm(rust::Slice<const TensorDesc> inputs, int64_t group_size) {
  return check_gated_rms_norm(inputs.data(), inputs.size(), group_size);
}

MambaLayerStepParams check_mamba_layer_step(rust::Slice<const TensorDesc> inputs) {
  return check_mamba_layer_step(inputs.data(), inputs.size());
}

Mamba2LayerStepParams check_mamba2_layer_step(rust::Slice<const TensorDesc> inputs) {
  return check_mamba2_layer_step(inputs.data(), inputs.size());
}

}  // namespace mambac
