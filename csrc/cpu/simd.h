// A minimal SIMD vocabulary for the per-instruction-set kernel files: a vector
// of independent fp32 lanes with load, store, broadcast, add, fma (one
// rounding per lane, exactly core::fma_rn) and the core's select-greater max,
// for AVX-512, AVX2+FMA or plain scalar loops; the vector builds add an fma
// confined to a vector's first n lanes (vec_fma_in: the other lanes keep their
// value bit for bit, a skipped term). Lanes never interact, so a vectorised
// loop computes each lane's value in the same order as the scalar core, and
// every build gives the same bits. The vector builds also give the core's exp
// steps their lanes (VecLanes, see core::math_detail::exp_reduce).
// A GOLDEN_EMULATE_AVX512 build (testing, CMakeLists.txt) gives the avx512
// kernels 16-lane vectors made of two AVX2 halves, so that their code runs on
// a CPU without AVX-512; GOLDEN_SIMD_16_LANES names both 16-lane builds.
#pragma once

#include "../core/platform.h"
#include "target.h"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#include <immintrin.h>
#endif

#include "../core/math.h"

GOLDEN_CPU_BEGIN
namespace {

#if defined(__AVX512F__) || defined(GOLDEN_EMULATE_AVX512)
#define GOLDEN_SIMD_16_LANES 1
#endif

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && !defined(__AVX512F__)

// The core's exp steps on 8 lanes (core::math_detail::ScalarLanes says what
// each member does): vminps(hi, x) is hi < x ? hi : x and vmaxps(lo, y) is
// lo > y ? lo : y, so a NaN x stays; the scaling is ScalarLanes's two
// power-of-two factors.
struct Avx2Lanes {
  using T = __m256;
  static __m256 splat(float c) { return _mm256_set1_ps(c); }
  static __m256 fma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
  static __m256 clamp(__m256 x, float lo, float hi) { return _mm256_max_ps(splat(lo), _mm256_min_ps(splat(hi), x)); }
  static __m256 pow2i(__m256i k) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
  }
  static __m256 scale_pow2(__m256 y, __m256 n) {
    const __m256i k = _mm256_cvttps_epi32(n);
    const __m256i k1 = _mm256_srai_epi32(k, 1);
    return _mm256_mul_ps(_mm256_mul_ps(y, pow2i(k1)), pow2i(_mm256_sub_epi32(k, k1)));
  }
  static __m256 quiet_nan_or(__m256 x, __m256 r) {
    const __m256 quiet = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(core::math_detail::kQuietBit)));
    return _mm256_blendv_ps(r, _mm256_or_ps(x, quiet), _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  }
};

#endif

#if defined(__AVX512F__)

using Vec = __m512;
constexpr int kVecLanes = 16;
inline Vec vec_zero() { return _mm512_setzero_ps(); }
inline Vec vec_load(const float* p) { return _mm512_loadu_ps(p); }
inline void vec_store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec vec_broadcast(float s) { return _mm512_set1_ps(s); }
inline Vec vec_add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec vec_fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
// b where b > a, else a: the core's select(b > a, b, a) (a NaN b never wins).
// (max_ps(b, a) is that; the all-lanes mask form avoids GCC 12's false
// -Wuninitialized on _mm512_max_ps.)
inline Vec vec_select_greater(Vec a, Vec b) { return _mm512_maskz_max_ps(0xFFFF, b, a); }
using LaneMask = __mmask16;
inline LaneMask lanes_below(int n) {
  if (n <= 0) return 0;
  return n >= kVecLanes ? LaneMask{0xFFFF} : static_cast<LaneMask>((1u << n) - 1u);
}
inline Vec vec_fma_in(LaneMask m, Vec a, Vec b, Vec c) { return _mm512_mask3_fmadd_ps(a, b, c, m); }

// The core's exp steps on 16 lanes (core::math_detail::ScalarLanes says what
// each member does), each in the instruction that gives every lane its bits:
// vminps(hi, x) is hi < x ? hi : x and vmaxps(lo, y) is lo > y ? lo : y (a
// NaN x stays); vscalefps is y * 2^n rounded once; a NaN lane gets x's bits
// with the quiet bit by one masked or.
struct VecLanes {
  using T = Vec;
  static Vec splat(float c) { return _mm512_set1_ps(c); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static Vec clamp(Vec x, float lo, float hi) {
    return _mm512_maskz_max_ps(0xFFFF, splat(lo), _mm512_maskz_min_ps(0xFFFF, splat(hi), x));
  }
  static Vec scale_pow2(Vec y, Vec n) { return _mm512_maskz_scalef_ps(0xFFFF, y, n); }
  static Vec quiet_nan_or(Vec x, Vec r) {
    const Vec quiet = _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(core::math_detail::kQuietBit)));
    return _mm512_mask_or_ps(r, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x, quiet);
  }
};

#elif defined(GOLDEN_EMULATE_AVX512) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

// Lanes 0-7 in lo, 8-15 in hi; each operation is AVX2's on both halves.
struct Vec {
  __m256 lo;
  __m256 hi;
};
constexpr int kVecLanes = 16;
inline Vec vec_zero() { return Vec{_mm256_setzero_ps(), _mm256_setzero_ps()}; }
inline Vec vec_load(const float* p) { return Vec{_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline void vec_store(float* p, Vec v) {
  _mm256_storeu_ps(p, v.lo);
  _mm256_storeu_ps(p + 8, v.hi);
}
inline Vec vec_broadcast(float s) { return Vec{_mm256_set1_ps(s), _mm256_set1_ps(s)}; }
inline Vec vec_add(Vec a, Vec b) { return Vec{_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
inline Vec vec_fma(Vec a, Vec b, Vec c) {
  return Vec{_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
}
inline Vec vec_select_greater(Vec a, Vec b) { return Vec{_mm256_max_ps(b.lo, a.lo), _mm256_max_ps(b.hi, a.hi)}; }
using LaneMask = Vec;  // all-ones lanes
inline __m256 lanes_below_8(int n, int first) {
  const __m256i lane = _mm256_setr_epi32(first, first + 1, first + 2, first + 3, first + 4, first + 5, first + 6,
                                         first + 7);
  return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane));
}
inline LaneMask lanes_below(int n) { return Vec{lanes_below_8(n, 0), lanes_below_8(n, 8)}; }
inline Vec vec_fma_in(LaneMask m, Vec a, Vec b, Vec c) {
  const Vec f = vec_fma(a, b, c);
  return Vec{_mm256_blendv_ps(c.lo, f.lo, m.lo), _mm256_blendv_ps(c.hi, f.hi, m.hi)};
}
inline Vec operator+(Vec a, Vec b) { return vec_add(a, b); }
inline Vec operator-(Vec a, Vec b) { return Vec{_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)}; }
inline Vec operator*(Vec a, Vec b) { return Vec{_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
inline Vec operator-(Vec a) { return Vec{-a.lo, -a.hi}; }

// The core's exp steps on 16 lanes: Avx2Lanes's on each half.
struct VecLanes {
  using T = Vec;
  static Vec splat(float c) { return vec_broadcast(c); }
  static Vec fma(Vec a, Vec b, Vec c) { return vec_fma(a, b, c); }
  static Vec clamp(Vec x, float lo, float hi) { return Vec{Avx2Lanes::clamp(x.lo, lo, hi), Avx2Lanes::clamp(x.hi, lo, hi)}; }
  static Vec scale_pow2(Vec y, Vec n) { return Vec{Avx2Lanes::scale_pow2(y.lo, n.lo), Avx2Lanes::scale_pow2(y.hi, n.hi)}; }
  static Vec quiet_nan_or(Vec x, Vec r) {
    return Vec{Avx2Lanes::quiet_nan_or(x.lo, r.lo), Avx2Lanes::quiet_nan_or(x.hi, r.hi)};
  }
};

#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

using Vec = __m256;
constexpr int kVecLanes = 8;
inline Vec vec_zero() { return _mm256_setzero_ps(); }
inline Vec vec_load(const float* p) { return _mm256_loadu_ps(p); }
inline void vec_store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec vec_broadcast(float s) { return _mm256_set1_ps(s); }
inline Vec vec_add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec vec_fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec vec_select_greater(Vec a, Vec b) { return _mm256_max_ps(b, a); }
using LaneMask = __m256;  // all-ones lanes
inline LaneMask lanes_below(int n) {
  return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
}
inline Vec vec_fma_in(LaneMask m, Vec a, Vec b, Vec c) { return _mm256_blendv_ps(c, _mm256_fmadd_ps(a, b, c), m); }
using VecLanes = Avx2Lanes;

#else

// Portable lanes: each operation is the core's scalar operation per lane.
struct Vec {
  float lane[4];
};
constexpr int kVecLanes = 4;
inline Vec vec_zero() { return Vec{{0.0f, 0.0f, 0.0f, 0.0f}}; }
inline Vec vec_load(const float* p) { return Vec{{p[0], p[1], p[2], p[3]}}; }
inline void vec_store(float* p, Vec v) {
  for (int j = 0; j < kVecLanes; ++j) p[j] = v.lane[j];
}
inline Vec vec_broadcast(float s) { return Vec{{s, s, s, s}}; }
inline Vec vec_add(Vec a, Vec b) {
  for (int j = 0; j < kVecLanes; ++j) a.lane[j] = a.lane[j] + b.lane[j];
  return a;
}
inline Vec vec_fma(Vec a, Vec b, Vec c) {
  for (int j = 0; j < kVecLanes; ++j) c.lane[j] = core::fma_rn(a.lane[j], b.lane[j], c.lane[j]);
  return c;
}
inline Vec vec_select_greater(Vec a, Vec b) {
  for (int j = 0; j < kVecLanes; ++j) a.lane[j] = b.lane[j] > a.lane[j] ? b.lane[j] : a.lane[j];
  return a;
}

#endif

}  // namespace
GOLDEN_CPU_END
