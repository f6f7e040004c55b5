// SelectiveScan launcher: dispatch on the element type to the per-dtype translation units.
#include "abi.h"
#include "selective_scan.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace mambac::cuda {
namespace detail {
template <typename T>
cudaError_t launch_scan_typed(const SelectiveScanParams&, cudaStream_t, const ScanConfig&);
}

cudaError_t selective_scan(const SelectiveScanParams& p, cudaStream_t stream, const ScanConfig& cfg) {
    switch (p.elem) {
        case ElemType::F32: return detail::launch_scan_typed<float>(p, stream, cfg);
        case ElemType::F16: return detail::launch_scan_typed<__half>(p, stream, cfg);
        case ElemType::BF16: return detail::launch_scan_typed<__nv_bfloat16>(p, stream, cfg);
    }
    return cudaErrorInvalidValue;
}

cudaError_t selective_scan(const SelectiveScanParams& p, cudaStream_t stream) {
    return selective_scan(p, stream, ScanConfig{});
}

}  // namespace mambac::cuda
