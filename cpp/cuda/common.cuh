// Device helpers shared by the mambac CUDA kernels: element conversions, fast exp2, cp.async,
// programmatic dependent launch. Nothing here knows about ONNX Runtime or Rust.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace mambac::cuda::detail {

template <typename T> __device__ __forceinline__ float to_f32(T v);
template <> __device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) {
    return __bfloat162float(v);
}

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

// Elements of T in one 16-byte vector.
template <typename T> constexpr int kVec = 16 / static_cast<int>(sizeof(T));

// 16 bytes viewed as kVec<T> elements.
template <typename T> union Vec16 {
    uint4 raw;
    T e[kVec<T>];
};

// 2^x on the multi-function unit (one MUFU.EX2; flushes results below 2^-126 to 0, which the
// scan's decays tolerate: a state multiplied by < 1e-38 is gone either way).
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float lg2(float x) {
    float y;
    asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// softplus(x) = log(1 + e^x), and x itself past 20 (docs/op-contract.md). Two multi-function-unit ops:
// e = 2^(x log2 e), then log2(1 + e); below e = 2^-10 the series e - e^2/2 replaces the log,
// whose absolute error would otherwise dominate a tiny result. Relative error < 1e-6. Both forms
// are computed and one selected: a branch per element cost more than the lg2 it skips.
__device__ __forceinline__ float softplus(float x) {
    const float e = ex2(x * kLog2e);
    const float series = e * fmaf(-0.5f, e, 1.f);
    const float logf1p = lg2(1.f + e) * 0.6931471805599453f;
    const float l = e < 9.765625e-4f ? series : logf1p;
    return x <= 20.f ? l : x;
}

// x * sigmoid(x) to float32 accuracy: two multi-function-unit ops (2^x, reciprocal).
__device__ __forceinline__ float silu(float x) { return __fdividef(x, 1.f + ex2(-x * kLog2e)); }

__device__ __forceinline__ float tanh_approx(float x) {
    float y;
    asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// x * sigmoid(x) in three instructions, one on the multi-function unit: sigmoid(x) =
// (1 + tanh(x / 2)) / 2, so silu(x) = h + h tanh(h) with h = x / 2. tanh.approx is good to about
// 2^-11, which bounds the error by |x| 2^-12: half a float16 ulp where silu(x) ~ x. Only for
// 16-bit outputs of a kernel whose arithmetic, not its memory, sets the pace (CausalConv1d at
// batch 1: cpp/cuda/README.md, "CausalConv1d").
__device__ __forceinline__ float silu_fast(float x) {
    const float h = 0.5f * x;
    return fmaf(h, tanh_approx(h), h);
}

// Asynchronous 16-byte global -> shared copy (sm_80+), bypassing L1.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
    unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
// Same, writing zeros instead when !valid (src is not read then, but must be a mapped address).
__device__ __forceinline__ void cp_async16_zfill(void* smem, const void* gmem, bool valid) {
    unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    const int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
// Asynchronous 8-byte global -> shared copy (through L1: .cg takes only 16 bytes).
__device__ __forceinline__ void cp_async8(void* smem, const void* gmem) {
    unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Programmatic dependent launch (sm_90). A kernel queued by launch_kernel(..., dependent = true)
// may start while the kernel before it on the stream is still running, so its launch latency and
// ramp overlap that kernel's tail: a decode step is hundreds of short kernels in a row, each a few
// microseconds (cpp/cuda/README.md, "Decode steps"). Rules for such a kernel, every block:
//   - before wait_for_prior_grids(), read only what no kernel writes (the layer's weights) and
//     write nothing: the kernel before may still be reading or writing any buffer, and so may the
//     ones before it, which may also have started early;
//   - call wait_for_prior_grids() on every path, early returns included: it returns once the
//     kernel before has completed and its writes are visible, and a kernel that completes
//     without waiting would break that chain for the kernels after it.
// allow_dependent_grids() lets the next kernel start as soon as every block of this one has
// called it (or exited). Both are no-ops for a kernel launched without the attribute.
__device__ __forceinline__ void wait_for_prior_grids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_dependent_grids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Queues kernel<<<grid, block, smem, stream>>>(args...), as a programmatic dependent launch of
// the kernel before it when `dependent` (the kernel must then follow the rules above).
template <typename... Params, typename... Args>
cudaError_t launch_kernel(bool dependent, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                          cudaStream_t stream, Args&&... args) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cfg.attrs = attr;
    cfg.numAttrs = dependent ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

// launch(T{}) for T the element code names (ElemType: 0 float32, 1 float16, 2 bfloat16);
// cudaErrorInvalidValue for another code. Every launcher's one switch on the element type.
template <typename Launch>
cudaError_t with_elem_type(int elem, Launch&& launch) {
    switch (elem) {
        case 0: return launch(float{});
        case 1: return launch(__half{});
        case 2: return launch(__nv_bfloat16{});
        default: return cudaErrorInvalidValue;
    }
}

// launch(std::integral_constant<int, L>{}) for L = `lanes`, a power of two from 1 to 32 (lanes a
// row of a kernel templated on them); cudaErrorInvalidValue for another count.
template <typename Launch>
cudaError_t with_lane_count(int lanes, Launch&& launch) {
    switch (lanes) {
        case 1: return launch(std::integral_constant<int, 1>{});
        case 2: return launch(std::integral_constant<int, 2>{});
        case 4: return launch(std::integral_constant<int, 4>{});
        case 8: return launch(std::integral_constant<int, 8>{});
        case 16: return launch(std::integral_constant<int, 16>{});
        case 32: return launch(std::integral_constant<int, 32>{});
        default: return cudaErrorInvalidValue;
    }
}

}  // namespace mambac::cuda::detail
