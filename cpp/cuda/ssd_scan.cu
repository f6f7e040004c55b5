// SsdScan launcher: dispatch on the element type to the per-dtype translation units.
#include "abi.h"
#include "ssd_scan.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace mambac::cuda {
namespace detail {
template <typename T>
cudaError_t launch_ssd_typed(const SsdScanParams&, cudaStream_t);
}

cudaError_t ssd_scan(const SsdScanParams& p, cudaStream_t stream) {
    switch (p.elem) {
        case ElemType::F32: return detail::launch_ssd_typed<float>(p, stream);
        case ElemType::F16: return detail::launch_ssd_typed<__half>(p, stream);
        case ElemType::BF16: return detail::launch_ssd_typed<__nv_bfloat16>(p, stream);
    }
    return cudaErrorInvalidValue;
}

}  // namespace mambac::cuda
