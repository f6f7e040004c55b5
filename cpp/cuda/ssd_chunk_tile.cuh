// A warp's 32 x 32 float32 accumulator tile for the chunked SSD kernels (ssd_chunk_impl.cuh), and
// its products of shared-memory operands: on tensor cores (WMMA, 16 x 16 x 16, float32
// accumulate) for float16 / bfloat16 operands, on CUDA cores for float32 ones. TF32 tensor cores
// would miss the float32 tier (10-bit mantissas: ~5e-4 relative error a product against 1e-5),
// and the 3xTF32 split turns an infinite operand into NaN (inf * its zero low part).
//
// Operands live in shared memory as the element type T. A is 32 x K, B is K x 32, each row- or
// column-major with a leading dimension in elements: RowMajor a(r, k) = a[r * ld + k], ColMajor
// a(r, k) = a[k * ld + r] (likewise b(k, c)). K is a multiple of 16.
#pragma once

#include <mma.h>
#include <type_traits>

#include "common.cuh"

namespace mambac::cuda::detail {

struct RowMajor {};
struct ColMajor {};

template <typename L> __device__ __forceinline__ int at(int r, int c, int ld) {
    return std::is_same_v<L, RowMajor> ? r * ld + c : c * ld + r;
}

// Tensor cores: 2 x 2 fragments of 16 x 16. Pointers and leading dimensions must suit WMMA
// (32-byte aligned fragment origins, ld a multiple of 8 elements; the kernels' tiles do).
template <typename T> struct WarpTileTC {
    using Acc = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>;
    template <typename L>
    using Wl = std::conditional_t<std::is_same_v<L, RowMajor>, nvcuda::wmma::row_major, nvcuda::wmma::col_major>;
    Acc f[2][2];

    __device__ void zero() {
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j) nvcuda::wmma::fill_fragment(f[i][j], 0.f);
    }

    template <typename LA, typename LB> __device__ void mma(const T* a, int lda, const T* b, int ldb, int K) {
        using namespace nvcuda;
        for (int k = 0; k < K; k += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, Wl<LA>> fa[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, Wl<LB>> fb[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], a + at<LA>(16 * i, k, lda), lda);
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], b + at<LB>(k, 16 * j, ldb), ldb);
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 2; ++j) wmma::mma_sync(f[i][j], fa[i], fb[j], f[i][j]);
        }
    }

    // To / from a row-major float tile (ld a multiple of 4, 32-byte aligned origins).
    __device__ void store(float* y, int ld) const {
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j)
                nvcuda::wmma::store_matrix_sync(y + 16 * i * ld + 16 * j, f[i][j], ld, nvcuda::wmma::mem_row_major);
    }
    __device__ void load(const float* y, int ld) {
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j)
                nvcuda::wmma::load_matrix_sync(f[i][j], y + 16 * i * ld + 16 * j, ld, nvcuda::wmma::mem_row_major);
    }
};

// CUDA cores, float32 throughout: lane c owns column c, 32 rows. A's values are read by all lanes
// at once (a shared-memory broadcast), B's along the lanes.
struct WarpTileF32 {
    float f[32];

    __device__ void zero() {
#pragma unroll
        for (int r = 0; r < 32; ++r) f[r] = 0.f;
    }

    template <typename LA, typename LB> __device__ void mma(const float* a, int lda, const float* b, int ldb, int K) {
        const int c = threadIdx.x % 32;
        for (int k = 0; k < K; ++k) {
            const float bv = b[at<LB>(k, c, ldb)];
#pragma unroll
            for (int r = 0; r < 32; ++r) f[r] = fmaf(a[at<LA>(r, k, lda)], bv, f[r]);
        }
    }

    __device__ void store(float* y, int ld) const {
        const int c = threadIdx.x % 32;
#pragma unroll
        for (int r = 0; r < 32; ++r) y[r * ld + c] = f[r];
    }
    __device__ void load(const float* y, int ld) {
        const int c = threadIdx.x % 32;
#pragma unroll
        for (int r = 0; r < 32; ++r) f[r] = y[r * ld + c];
    }
};

template <typename T> using WarpTile = std::conditional_t<std::is_same_v<T, float>, WarpTileF32, WarpTileTC<T>>;

}  // namespace mambac::cuda::detail
