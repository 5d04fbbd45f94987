// Rotary position embedding, rotate-half layout (GPT-NeoX / Hugging Face
// Qwen3), on tokens of `heads` heads of head_dim D (even). For frequency
// i < D/2, with h = D/2:
//   inv_freq[i] = RN(1 / RN(theta^e)),  e = RN(2i / D)     (HF's fp32 formula;
//                 theta^e correctly rounded, see rope_power below)
//   angle       = RN(float(position) * inv_freq[i])      (HF: inv_freq @ pos.float())
//   c, s        = cos_f32(angle), sin_f32(angle)
//   out[i]      = x[i] * c - x[i + h] * s                 (= x*cos + rotate_half(x)*sin)
//   out[i + h]  = x[i + h] * c + x[i] * s
// each product and sum rounded to fp32 (no fma), the result rounded once to
// the output type. Backward is the transposed rotation: the same with -s.
// NaN bits (nan_policy.h): both outputs of a pair take the first NaN of
// (x[i], x[i + h]).
#pragma once

#include <cstdint>

#include "../dtype.h"
#include "../math.h"
#include "../nan_policy.h"
#include "../types.h"

namespace golden {

// Frequencies whose cos/sin a CPU task keeps at once (a stack buffer).
inline constexpr std::int64_t kRopeFrequencyChunk = 64;

// x and out are dense [tokens, heads, head_dim]; positions has one int32 or
// int64 id per token; inv_freq holds head_dim / 2 values already filled by
// rope_inverse_frequencies. `transpose` selects the backward rotation.
struct RopeProblem {
  const void* x;
  const void* positions;
  bool positions_int64;
  const float* inv_freq;
  void* out;
  DType dtype;
  DType out_dtype;
  std::int64_t tokens;
  std::int64_t heads;
  std::int64_t head_dim;
  bool transpose;
};

}  // namespace golden

GOLDEN_CORE_BEGIN

namespace rope_detail {

// An unevaluated sum hi + lo with |lo| <= ulp(hi) / 2 (a "float-float").
struct FloatPair {
  float hi;
  float lo;
};

GOLDEN_INLINE FloatPair fast_two_sum(float big, float small) {
  const float hi = big + small;
  return FloatPair{hi, small - (hi - big)};
}

// sqrt of a positive pair: s = sqrt_rn(hi), exact residual hi - s^2 by fma,
// one Newton correction. Relative error ~2^-46.
GOLDEN_INLINE FloatPair pair_sqrt(FloatPair a) {
  const float s = sqrt_rn(a.hi);
  const float residual = fma_rn(-s, s, a.hi) + a.lo;
  return fast_two_sum(s, div_rn(residual, 2.0f * s));
}

// Product of two positive pairs, relative error ~2^-45.
GOLDEN_INLINE FloatPair pair_mul(FloatPair a, FloatPair b) {
  const float p = a.hi * b.hi;
  const float tail = fma_rn(a.hi, b.hi, -p) + (a.hi * b.lo + a.lo * b.hi);
  return fast_two_sum(p, tail);
}

}  // namespace rope_detail

// theta^e for fp32 theta > 0 and fp32 e in [0, 1), as a pair accurate to
// ~2^-40 relative, so its hi part is RN(theta^e) except when theta^e lies
// within ~2^-16 ulp of a rounding boundary. Method: e's bits, e = sum of
// 2^-j over its set bits j (1..48), and theta^(2^-j) by j repeated pair
// square roots; the factors of the set bits are multiplied in increasing j.
// Only correctly rounded operations: every device gives the same bits.
GOLDEN_INLINE float rope_power(float theta, float e) {
  using rope_detail::FloatPair;
  // e * 2^48 is an exact integer: e is 0 or >= 2/D > 2^-23 (the bindings
  // keep D < 2^16), so e's last significant bit weighs at least 2^-46.
  const std::uint64_t bits = static_cast<std::uint64_t>(e * 0x1p48f);
  FloatPair root{theta, 0.0f};
  FloatPair power{1.0f, 0.0f};
  for (int j = 1; j <= 48; ++j) {
    root = rope_detail::pair_sqrt(root);
    if ((bits >> (48 - j)) & 1u) power = rope_detail::pair_mul(power, root);
  }
  return power.hi;  // = RN(hi + lo): the pair is normalised
}

GOLDEN_INLINE float rope_inverse_frequency(std::int64_t i, std::int64_t head_dim, float theta) {
  const float e = div_rn(static_cast<float>(2 * i), static_cast<float>(head_dim));
  return div_rn(1.0f, rope_power(theta, e));
}

GOLDEN_INLINE float rope_angle(std::int64_t position, float inv_freq) {
  return static_cast<float>(position) * inv_freq;
}

GOLDEN_INLINE std::int64_t load_position(const void* positions, bool is_int64, std::int64_t t) {
  return is_int64 ? static_cast<const std::int64_t*>(positions)[t]
                  : static_cast<const std::int32_t*>(positions)[t];
}

// cos and sin (sin negated for the transposed rotation) of the angles of
// frequencies [first, first + n) at one position.
GOLDEN_INLINE void rope_cos_sin(std::int64_t position, const float* inv_freq, std::int64_t first,
                                std::int64_t n, bool transpose, float* cos_out, float* sin_out) {
  // Negation as a sign-bit flip chosen once: a per-element `transpose ? -s : s`
  // keeps GCC from vectorising the loop.
  const std::uint32_t sin_sign = transpose ? 0x80000000u : 0u;
  for (std::int64_t k = 0; k < n; ++k) {
    const float angle = rope_angle(position, inv_freq[first + k]);
    cos_out[k] = cos_f32(angle);
    sin_out[k] = bits_float(float_bits(sin_f32(angle)) ^ sin_sign);
  }
}

// The rotation of one frequency pair (x1 = x[i], x2 = x[i + D/2]).
GOLDEN_INLINE float rope_first_half_value(float x1, float x2, float c, float s) { return x1 * c - x2 * s; }
GOLDEN_INLINE float rope_second_half_value(float x1, float x2, float c, float s) { return x2 * c + x1 * s; }
GOLDEN_INLINE float rope_first_half(float x1, float x2, float c, float s) {
  return apply_nan_policy(rope_first_half_value(x1, x2, c, s), x1, x2);
}
GOLDEN_INLINE float rope_second_half(float x1, float x2, float c, float s) {
  return apply_nan_policy(rope_second_half_value(x1, x2, c, s), x1, x2);
}

// One frequency pair rotated, each result rounded once to TOut.
template <class TOut>
GOLDEN_INLINE void rope_rotate_pair(float x1, float x2, float c, float s, TOut& out1, TOut& out2) {
  out1 = from_float<TOut>(rope_first_half(x1, x2, c, s));
  out2 = from_float<TOut>(rope_second_half(x1, x2, c, s));
}

// Frequencies [first, ...) of one head's two halves (x, out point at the
// head's first element).
template <class T, class TOut>
struct RopeHalves {
  const T* x1;
  const T* x2;
  TOut* out1;
  TOut* out2;
  // (`half_dim`, not `half`: CUDA's cuda_fp16.h declares a global type `half`.)
  GOLDEN_INLINE RopeHalves(const T* x, TOut* out, std::int64_t half_dim, std::int64_t first)
      : x1(x + first), x2(x + half_dim + first), out1(out + first), out2(out + half_dim + first) {}
};

// Rotates frequencies [first, first + n) of one head with their cos/sin.
template <class T, class TOut>
GOLDEN_INLINE void rope_rotate_head(const T* x, TOut* out, std::int64_t half, std::int64_t first,
                                    std::int64_t n, const float* c, const float* s) {
  const RopeHalves<T, TOut> h(x, out, half, first);
  for (std::int64_t k = 0; k < n; ++k) {
    rope_rotate_pair(to_float(h.x1[k]), to_float(h.x2[k]), c[k], s[k], h.out1[k], h.out2[k]);
  }
}

// rope_rotate_head's products and sums without the NaN policy, for the CPU's
// spans (as swiglu.h's lean passes): returns whether no result is a NaN, and
// then the results are exactly rope_rotate_head's (a NaN input always makes a
// NaN result, c and s are never NaN); otherwise the caller runs
// rope_rotate_head over the same frequencies.
GOLDEN_INLINE bool rope_rotate_head_if_numbers(const float* x, float* out, std::int64_t half_dim,
                                               std::int64_t first, std::int64_t n, const float* c, const float* s) {
  const RopeHalves<float, float> h(x, out, half_dim, first);
  std::uint32_t nan_seen = 0;
  for (std::int64_t k = 0; k < n; ++k) {
    const float r1 = rope_first_half_value(h.x1[k], h.x2[k], c[k], s[k]);
    const float r2 = rope_second_half_value(h.x1[k], h.x2[k], c[k], s[k]);
    nan_seen |= static_cast<std::uint32_t>(r1 != r1) | static_cast<std::uint32_t>(r2 != r2);
    h.out1[k] = r1;
    h.out2[k] = r2;
  }
  return nan_seen == 0;
}

GOLDEN_CORE_END
