// CausalConv1d launcher: dispatch on the element type to the per-dtype translation units.
#include "abi.h"
#include "causal_conv1d.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace mambac::cuda {
namespace detail {
template <typename T>
cudaError_t launch_conv_typed(const CausalConv1dParams&, cudaStream_t, const ConvConfig&);
}

cudaError_t causal_conv1d(const CausalConv1dParams& p, cudaStream_t stream, const ConvConfig& cfg) {
    switch (p.elem) {
        case ElemType::F32: return detail::launch_conv_typed<float>(p, stream, cfg);
        case ElemType::F16: return detail::launch_conv_typed<__half>(p, stream, cfg);
        case ElemType::BF16: return detail::launch_conv_typed<__nv_bfloat16>(p, stream, cfg);
    }
    return cudaErrorInvalidValue;
}

}  // namespace mambac::cuda
