// The NaN policy of elementwise results, so NaN bits are the same on every
// device: hardware differs in which operand's payload a NaN operation keeps
// (x86: the first source; compilers may swap operands) and in the NaN an
// invalid operation makes (x86 0xFFC00000, CUDA 0x7FFFFFFF). Rule: the first
// NaN input in the op's argument order, quieted, sign and payload kept;
// otherwise a NaN made by the arithmetic (inf - inf, 0 * inf) becomes the
// positive quiet NaN 0x7FC00000 (as in math.h); otherwise the value itself.
#pragma once

#include <cstdint>

#include "platform.h"

GOLDEN_CORE_BEGIN

// Only a NaN is unordered with itself (fast-math is banned: CONTRACT.md). One
// vector compare, where the bit test (|bits| > inf) costs x86 three instructions.
GOLDEN_INLINE bool bits_is_nan(float x) { return x != x; }
GOLDEN_INLINE float quieted_nan(float x) { return bits_float(float_bits(x) | 0x00400000u); }

// `result` computed from inputs that were not NaN.
GOLDEN_INLINE float canonical_nan(float result) {
  return bits_is_nan(result) ? bits_float(0x7FC00000u) : result;
}

GOLDEN_INLINE float apply_nan_policy(float result, float a) {
  const float r = canonical_nan(result);
  return bits_is_nan(a) ? quieted_nan(a) : r;
}

GOLDEN_INLINE float apply_nan_policy(float result, float a, float b) {
  const float r = apply_nan_policy(result, b);
  return bits_is_nan(a) ? quieted_nan(a) : r;
}

GOLDEN_INLINE float apply_nan_policy(float result, float a, float b, float c) {
  const float r = apply_nan_policy(result, b, c);
  return bits_is_nan(a) ? quieted_nan(a) : r;
}

GOLDEN_CORE_END
