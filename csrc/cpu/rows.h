// Rows of storage elements widened to fp32 and fp32 rows narrowed back, with
// the core's values (csrc/core/dtype.h: to_float, from_float) and without its
// per-element cost on AVX2 / AVX-512, where fp16 is converted by F16C:
// - vcvtph2ps widens exactly; a signalling NaN comes back quiet, so widen_row
//   serves inputs that feed arithmetic (which would quiet it anyway), never a
//   value copied out as it is.
// - vcvtps2ph with an explicit round-to-nearest-even immediate narrows to the
//   core's f16_from_float bits for every fp32 pattern, NaNs included (quieted,
//   sign and top payload bits kept), also under FTZ / DAZ: cast's fp32 ->
//   fp16 runs through narrow_row, and tests/core/test_dtype.py checks it on all
//   2^32 patterns and against the scalar reference on every instruction set.
// AVX-512 converts 16 fp16 elements per instruction. bf16 widens by a shift;
// bf16 narrowing and fp32 go through the core's functions, which the compiler
// vectorises.
#pragma once

#include <cstdint>
#include <type_traits>

#include "../core/dtype.h"
#include "target.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

GOLDEN_CPU_BEGIN
namespace {

#if defined(__AVX2__) && defined(__F16C__)
// 8 consecutive elements as fp32.
[[maybe_unused]] inline __m256 load_8_as_float(const float* p) { return _mm256_loadu_ps(p); }

[[maybe_unused]] inline __m256 load_8_as_float(const bf16* p) {
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}

[[maybe_unused]] inline __m256 load_8_as_float(const f16* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
#endif

// dst[i] = to_float(src[i]) for i in [0, n).
template <class T>
void widen_row(const T* __restrict src, float* __restrict dst, std::int64_t n) {
  std::int64_t i = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, f16>) {
    for (; i + 16 <= n; i += 16) {
      const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
      _mm512_storeu_ps(dst + i, _mm512_maskz_cvtph_ps(0xFFFF, bits));  // mask form: see narrow_row
    }
  }
#endif
#if defined(__AVX2__) && defined(__F16C__)
  if constexpr (sizeof(T) == 2) {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_8_as_float(src + i));
  }
#endif
  for (; i < n; ++i) dst[i] = core::to_float(src[i]);
}

// dst[i] = from_float<T>(src[i]) for i in [0, n).
template <class T>
void narrow_row(const float* __restrict src, T* __restrict dst, std::int64_t n) {
  std::int64_t i = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, f16>) {
    for (; i + 16 <= n; i += 16) {
      // The all-lanes mask form: GCC 12 warns of an uninitialised operand in the plain one.
      const __m256i bits = _mm512_maskz_cvtps_ph(0xFFFF, _mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), bits);
    }
  }
#endif
#if defined(__AVX2__) && defined(__F16C__)
  if constexpr (std::is_same_v<T, f16>) {
    for (; i + 8 <= n; i += 8) {
      const __m128i bits = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), bits);
    }
  }
#endif
  for (; i < n; ++i) dst[i] = core::from_float<T>(src[i]);
}

// Writes out[0, n) by pieces: make(begin, count, piece) fills an fp32 piece
// with the values of out[begin, begin + count), which narrow_row then rounds
// into out. A row's fp32 results never exist whole: beside the inputs a row
// function keeps in cache (rms_norm: a 4096-column fp32 row and its weight,
// 32 KiB of L1; logprob: a widened vocabulary row) a whole fp32 output row
// would not stay there.
constexpr std::int64_t kNarrowPiece = 512;

template <class T, class Make>
void narrow_in_pieces(T* out, std::int64_t n, Make&& make) {
  for (std::int64_t begin = 0; begin < n; begin += kNarrowPiece) {
    const std::int64_t count = n - begin < kNarrowPiece ? n - begin : kNarrowPiece;
    float piece[kNarrowPiece];
    make(begin, count, piece);
    narrow_row(piece, out + begin, count);
  }
}

}  // namespace
GOLDEN_CPU_END
