// Portable SIMD for the CPU kernels: GCC/Clang vector extensions of MAMBAC_VW floats, compiled
// once per ISA translation unit (isa_*.cpp) with that unit's -m flags, so one source gives the
// AVX-512, AVX2 and baseline builds. Everything lives in namespace mambac::MAMBAC_ISA: the same
// inline function compiled with different flags must not be merged by the linker.
//
// Element types (E): F32, F16, BF16. Loads widen to float32, stores round to nearest even; all
// arithmetic is float32 (docs/op-contract.md).
#pragma once

#include <cstdint>
#include <cstring>
#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#ifndef MAMBAC_ISA
#error "define MAMBAC_ISA (namespace) and MAMBAC_VW (floats per vector) before including simd.h"
#endif

namespace mambac {
namespace MAMBAC_ISA {

constexpr int VW = MAMBAC_VW;
typedef float vf __attribute__((vector_size(VW * 4)));
typedef int32_t vi __attribute__((vector_size(VW * 4)));
typedef uint32_t vu __attribute__((vector_size(VW * 4)));
typedef uint16_t vh __attribute__((vector_size(VW * 2)));

static inline vf splat(float x) { return vf{} + x; }
// max/min: the intrinsics where there are some (GCC does not turn a vector ?: into maxps, as the
// two differ on NaN), else the portable select. Both return b when either is NaN (maxps takes its
// second operand then), so vmax(bound, x) keeps a NaN x and vmax(x, bound) drops it.
static inline vf vmax(vf a, vf b) {
#if defined(__AVX512F__) && MAMBAC_VW == 16
  return (vf)_mm512_max_ps((__m512)a, (__m512)b);
#elif defined(__AVX__) && MAMBAC_VW == 8
  return (vf)_mm256_max_ps((__m256)a, (__m256)b);
#else
  return a > b ? a : b;
#endif
}
static inline vf vmin(vf a, vf b) {
#if defined(__AVX512F__) && MAMBAC_VW == 16
  return (vf)_mm512_min_ps((__m512)a, (__m512)b);
#elif defined(__AVX__) && MAMBAC_VW == 8
  return (vf)_mm256_min_ps((__m256)a, (__m256)b);
#else
  return a < b ? a : b;
#endif
}

constexpr float kLog2e = 1.44269504088896341f;

// 2^x for float32 vectors: split x = n + r (n integer, |r| <= 1/2), a degree-5 polynomial for
// 2^r, and n added to the exponent bits. The lower clamp keeps 2^n a normal float (the bit trick
// cannot make denormals); 2^-126 ~ 1.2e-38 stands in for smaller results, which in the scan
// multiply a state of order 1 and vanish against any tolerance. The upper clamp is 128, where
// r = 0 and the bits come out exactly +inf, as 2^x is for every x >= 128 (below it the result is
// a normal float). The bounds come first so that a NaN x passes both clamps; the bit trick then
// keeps it NaN when its payload's low 9 bits are 0 (every NaN arithmetic makes from numbers, and
// numpy's); callers for which any NaN must survive check it (vexp2_exact). kUpper = false skips
// the upper clamp for callers that know x <= 0 (the scan's dt * A with dt >= 0 and A <= 0).
template <bool kUpper = true>
static inline vf vexp2(vf x) {
  x = vmax(splat(-126.0f), x);
  if (kUpper) x = vmin(splat(128.0f), x);
  // Adding 1.5 * 2^23 rounds x to an integer held in the low mantissa bits of t.
  const float magic = 12582912.0f;
  const vf t = x + magic;
  const vf r = x - (t - magic);
  // 2^r = 1 + r q(r), q a degree-4 least-squares fit weighted to the relative error of 2^r on
  // [-1/2, 1/2] (made for this file with numpy, iteratively reweighted toward minimax): max
  // relative error 9e-8 exact, 1.9e-7 in float32. The constant 1 is exact so that 2^r for r near
  // 0 (a slowly decaying state, exp(dt A) close to 1) carries no bias that long scans would
  // accumulate.
  vf q = splat(1.3264684985e-3f);
  q = q * r + 9.6715045024e-3f;
  q = q * r + 5.5507337703e-2f;
  q = q * r + 2.4022242213e-1f;
  q = q * r + 6.9314697764e-1f;
  const vf p = q * r + 1.0f;
  // n << 23 is the exponent increment; the magic's own bits vanish in the shift (its low 9 bits
  // are zero), so t's bits can be shifted directly.
  return (vf)((vu)p + ((vu)t << 23));
}

// 2^x for every x, as the float64 reference has it: any NaN stays NaN, x >= 128 (+inf too) gives
// +inf, x < -150 (-inf too) gives 0, and results below 2^-126 come out subnormal: 0 * inf = NaN
// where the reference has it. The range is halved, 2^x = (2^(x/2))^2 with x/2 in vexp2's
// clamp-free range (x clamped to [-252, 252] first), and the square overflows or underflows
// exactly where 2^x does. Relative error twice vexp2's (< 4e-7). For the scan's tiles that hold
// a non-finite dt or A; its finite tiles keep vexp2.
static inline vf vexp2_exact(vf x) {
  const vf k = vmin(splat(252.0f), vmax(splat(-252.0f), x));
  const vf e = vexp2<false>(k * 0.5f);
  const vf r = e * e;
  return x != x ? x : r;
}

// e^x; +inf for x >= 88.7 and +inf, NaN for NaN (what SiLU needs for silu(-inf) = -inf / inf =
// NaN, as in the reference). Below -87.3 (and at -inf) 2^-126 stands in for the result.
static inline vf vexp(vf x) { return vexp2(x * kLog2e); }

// log1p(e) for e in [0, 1]: log(u) of u = fl(1 + e), corrected by e / (u - 1) for the rounding
// of u (Goldberg's trick), so tiny e keep full relative precision.
static inline vf vlog1p_unit(vf e) {
  const vf u = e + 1.0f;
  // u = m * 2^k with m in [sqrt(1/2), sqrt(2)); here k is 0 or 1.
  const vi big = u > 1.41421356f;
  const vf m = big ? u * 0.5f : u;
  const vf k = big ? splat(1.0f) : splat(0.0f);
  const vf f = m - 1.0f;
  // log(m) = 2 atanh(s), s = f / (2 + f), |s| <= 0.172: the series to s^9 is exact to < 1e-9.
  const vf s = f / (f + 2.0f);
  const vf s2 = s * s;
  vf q = splat(1.0f / 9.0f);
  q = q * s2 + (1.0f / 7.0f);
  q = q * s2 + (1.0f / 5.0f);
  q = q * s2 + (1.0f / 3.0f);
  q = q * s2 + 1.0f;
  const vf log_u = k * 0.693147180559945309f + 2.0f * s * q;
  const vf d = u - 1.0f;
  return d == 0.0f ? e : log_u * (e / d);
}

// softplus(x) = log(1 + exp(x)), and x itself above 20 (docs/op-contract.md). Written as
// max(x, 0) + log1p(exp(-|x|)) so exp never overflows.
static inline vf vsoftplus(vf x) {
  const vf ax = x < 0.0f ? -x : x;
  const vf sp = vmax(splat(0.0f), x) + vlog1p_unit(vexp(-ax));  // bound first: NaN stays NaN
  return x > 20.0f ? x : sp;
}

// x * sigmoid(x) = x / (1 + exp(-x)).
static inline vf vsilu(vf x) { return x / (vexp(-x) + 1.0f); }

// ---- scalar conversions --------------------------------------------------------------------

static inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;
  uint32_t bits;
  if (em >= 0x7c00u) {
    bits = 0x7f800000u | ((em & 0x3ffu) << 13);  // inf, nan (payload kept)
  } else if (em >= 0x400u) {
    bits = (em << 13) + ((127u - 15u) << 23);  // normal: rebias the exponent
  } else {
    const float f = static_cast<float>(em) * 5.9604644775390625e-8f;  // subnormal: em * 2^-24
    std::memcpy(&bits, &f, 4);
  }
  bits |= sign;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

static inline uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u);
  if (x >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to inf
  if (x < 0x38800000u) {
    // Below 2^-14: a half subnormal. Adding 0.5 (ulp 2^-24) rounds to the half's grid, nearest even.
    float a;
    std::memcpy(&a, &x, 4);
    a += 0.5f;
    uint32_t b;
    std::memcpy(&b, &a, 4);
    return sign | static_cast<uint16_t>(b - 0x3f000000u);
  }
  const uint32_t odd = (x >> 13) & 1u;
  x += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + odd;
  return sign | static_cast<uint16_t>(x >> 13);
}

static inline float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

static inline uint16_t f32_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet nan
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

// ---- element types ---------------------------------------------------------------------------

struct F32 {
  using T = float;
  static float to_f32(float x) { return x; }
  static float from_f32(float x) { return x; }
  static vf load(const float* p) {
    vf v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
};

struct BF16 {
  using T = uint16_t;
  static float to_f32(uint16_t x) { return bf16_to_f32(x); }
  static uint16_t from_f32(float x) { return f32_to_bf16(x); }
  static vf load(const uint16_t* p) {
    vh h;
    std::memcpy(&h, p, sizeof h);
    return (vf)(__builtin_convertvector(h, vu) << 16);
  }
  static void store(uint16_t* p, vf v) {
    const vu x = (vu)v;
    const vu r = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
    const vu q = (x >> 16) | 0x40u;
    const vh h = __builtin_convertvector(v != v ? q : r, vh);
    std::memcpy(p, &h, sizeof h);
  }
};

struct F16 {
  using T = uint16_t;
  static float to_f32(uint16_t x) { return f16_to_f32(x); }
  static uint16_t from_f32(float x) { return f32_to_f16(x); }
  static vf load(const uint16_t* p) {
#if defined(__AVX512F__) && MAMBAC_VW == 16
    return (vf)_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif defined(__F16C__) && MAMBAC_VW == 8
    return (vf)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
    float tmp[VW];
    for (int l = 0; l < VW; ++l) tmp[l] = f16_to_f32(p[l]);
    vf v;
    std::memcpy(&v, tmp, sizeof v);
    return v;
#endif
  }
  static void store(uint16_t* p, vf v) {
#if defined(__AVX512F__) && MAMBAC_VW == 16
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph((__m512)v, _MM_FROUND_TO_NEAREST_INT));
#elif defined(__F16C__) && MAMBAC_VW == 8
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph((__m256)v, _MM_FROUND_TO_NEAREST_INT));
#else
    float tmp[VW];
    std::memcpy(tmp, &v, sizeof v);
    for (int l = 0; l < VW; ++l) p[l] = f32_to_f16(tmp[l]);
#endif
  }
};

// Loads n <= VW lanes (the rest 0); stores n lanes. Full vectors take the fast path.
template <class E>
static inline vf load_n(const typename E::T* p, int n) {
  if (n == VW) return E::load(p);
  float tmp[VW] = {};
  for (int l = 0; l < n; ++l) tmp[l] = E::to_f32(p[l]);
  vf v;
  std::memcpy(&v, tmp, sizeof v);
  return v;
}

template <class E>
static inline void store_n(typename E::T* p, vf v, int n) {
  if (n == VW) {
    E::store(p, v);
    return;
  }
  float tmp[VW];
  std::memcpy(tmp, &v, sizeof v);
  for (int l = 0; l < n; ++l) p[l] = E::from_f32(tmp[l]);
}

// Lane l of the result is p[l * stride] (0 past n): gathers a column of a channel-major array.
template <class E>
static inline vf gather_n(const typename E::T* p, size_t stride, int n) {
  float tmp[VW] = {};
  for (int l = 0; l < n; ++l) tmp[l] = E::to_f32(p[l * stride]);
  vf v;
  std::memcpy(&v, tmp, sizeof v);
  return v;
}

template <class E>
static inline void scatter_n(typename E::T* p, size_t stride, vf v, int n) {
  float tmp[VW];
  std::memcpy(tmp, &v, sizeof v);
  for (int l = 0; l < n; ++l) p[l * stride] = E::from_f32(tmp[l]);
}

}  // namespace MAMBAC_ISA
}  // namespace mambac
