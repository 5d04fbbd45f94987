// The storage types of the library and the one rounding rule for every
// narrowing conversion: fp32 -> bf16 / fp16, round to nearest, ties to even,
// done with integer operations so the result never depends on the caller's
// floating-point environment (rounding mode, FTZ/DAZ) or on the device.
//
// NaN policy (both 16-bit types): the sign and the leading payload bits are
// kept and the quiet bit is set, as x86 and IEEE 754 recommend; a NaN never
// becomes an infinity.
#pragma once

#include <cstdint>

#include "platform.h"
#include "types.h"

GOLDEN_CORE_BEGIN

GOLDEN_INLINE float to_float(float x) { return x; }

GOLDEN_INLINE float to_float(bf16 x) {
  return bits_float(static_cast<std::uint32_t>(x.bits) << 16);
}

GOLDEN_INLINE float to_float(f16 x) {
  const std::uint32_t h = x.bits;
  const std::uint32_t sign = (h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1Fu;
  const std::uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1Fu) return bits_float(sign | 0x7F800000u | (mantissa << 13));
  if (exponent != 0) return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  // Zero or subnormal: mantissa * 2^-24 is exact in fp32 (a normal number).
  const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
  return bits_float(sign | float_bits(magnitude));
}

// bf16_from_float of a number (not a NaN): adding 0x7FFF plus the lowest kept
// bit rounds to nearest even; a carry into the exponent is the correct
// rounding up (to infinity at the top).
GOLDEN_INLINE std::uint32_t bf16_bits_of_number(float f) {
  const std::uint32_t u = float_bits(f);
  return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}

GOLDEN_INLINE bf16 bf16_from_float(float f) {
  // Only a NaN is unordered with itself, whatever the rounding mode or
  // FTZ/DAZ; one vector compare, where the bit test costs x86 three
  // instructions. The choice is a bitwise blend in 32 bits: GCC vectorises a
  // ternary here by narrowing both sides to 16 bits first, twice the work.
  const std::uint32_t nan_mask = 0u - static_cast<std::uint32_t>(f != f);
  const std::uint32_t rounded = bf16_bits_of_number(f);
  const std::uint32_t quiet_nan = (float_bits(f) >> 16) | 0x0040u;
  return bf16{static_cast<std::uint16_t>((quiet_nan & nan_mask) | (rounded & ~nan_mask))};
}

// The steps fp32 -> fp16 rounding shares with round_through<f16>.
namespace f16_detail {
constexpr std::uint32_t kInfinity = 0x7F800000u;
constexpr std::uint32_t kRoundsToInfinity = 0x477FF000u;  // 65520.0f
constexpr std::uint32_t kSmallestNormal = 0x38800000u;    // 2^-14

// A magnitude of at least 2^-14 (fp32 bits) with its 13 low mantissa bits
// rounded off to nearest even, in place; the carry of a round-up moves into
// the exponent, which is the right answer.
GOLDEN_INLINE std::uint32_t normal_rounded(std::uint32_t magnitude) {
  return (magnitude + 0xFFFu + ((magnitude >> 13) & 1u)) & ~0x1FFFu;
}

// A magnitude below 2^-14, plus 0.5: fp16's subnormals count units of 2^-24,
// the spacing of fp32 numbers in [0.5, 1), so the addition rounds the
// magnitude onto that grid (to nearest even: the sum's last mantissa bit is
// the count's) and the sum's mantissa is the count (1024, the smallest
// normal's bits, when it rounds up to 2^-14). Exact in every mode: an fp32
// subnormal that DAZ reads as 0 rounds to 0 either way. Three vector
// operations where shifting the significand by hand took about fifteen.
GOLDEN_INLINE float subnormal_plus_half(std::uint32_t magnitude) { return bits_float(magnitude) + 0.5f; }
}  // namespace f16_detail

GOLDEN_INLINE f16 f16_from_float(float f) {
  using namespace f16_detail;
  const std::uint32_t u = float_bits(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t magnitude = u & 0x7FFFFFFFu;
  constexpr std::uint32_t kExponentRebias = (127u - 15u) << 23;
  const std::uint32_t nan = 0x7E00u | ((magnitude >> 13) & 0x3FFu);
  const std::uint32_t normal = (normal_rounded(magnitude) - kExponentRebias) >> 13;
  const std::uint32_t subnormal = float_bits(subnormal_plus_half(magnitude)) - float_bits(0.5f);
  std::uint32_t result = magnitude >= kSmallestNormal ? normal : subnormal;
  result = magnitude >= kRoundsToInfinity ? 0x7C00u : result;
  result = magnitude > kInfinity ? nan : result;
  return f16{static_cast<std::uint16_t>(sign | result)};
}

// from_float<T>: the narrowing conversion for each storage type.
template <class T>
GOLDEN_INLINE T from_float(float f);
template <>
GOLDEN_INLINE float from_float<float>(float f) {
  return f;
}
template <>
GOLDEN_INLINE bf16 from_float<bf16>(float f) {
  return bf16_from_float(f);
}
template <>
GOLDEN_INLINE f16 from_float<f16>(float f) {
  return f16_from_float(f);
}

// from_float<T>(f) for an f that is not a NaN: bf16 skips the NaN case, so a
// NaN gives some bf16 bits that are not the NaN policy's. The lean passes
// (csrc/core/ops/swiglu.h) call it on every value and write again, with
// from_float, any span in which a value was a NaN.
template <class T>
GOLDEN_INLINE T from_number(float f) {
  return from_float<T>(f);
}
template <>
GOLDEN_INLINE bf16 from_number<bf16>(float f) {
  return bf16{static_cast<std::uint16_t>(bf16_bits_of_number(f))};
}

// Rounds an fp32 value to T's precision and back (the value a T store keeps).
template <class T>
GOLDEN_INLINE float round_through(float f) {
  return to_float(from_float<T>(f));
}

// fp16 without the round trip through 16 bits: f16_from_float's steps kept
// in fp32's layout (the same bits for every input; measured 2.2x faster in
// rms_norm's HF-rounding fp16 forward). Below 2^-14, (|f| + 0.5) - 0.5 is
// exact (Sterbenz); a NaN is quieted with its top ten payload bits kept.
template <>
GOLDEN_INLINE float round_through<f16>(float f) {
  using namespace f16_detail;
  const std::uint32_t u = float_bits(f);
  const std::uint32_t sign = u & 0x80000000u;
  const std::uint32_t magnitude = u & 0x7FFFFFFFu;
  const std::uint32_t subnormal = float_bits(subnormal_plus_half(magnitude) - 0.5f);
  std::uint32_t result = magnitude >= kSmallestNormal ? normal_rounded(magnitude) : subnormal;
  result = magnitude >= kRoundsToInfinity ? kInfinity : result;
  result = magnitude > kInfinity ? (magnitude & 0x7FFFE000u) | 0x7FC00000u : result;
  return bits_float(sign | result);
}

GOLDEN_CORE_END
