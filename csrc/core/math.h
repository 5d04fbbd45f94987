// Deterministic fp32 elementary functions of the shared core (CONTRACT.md,
// Axis-C rule 2): exp, log, sigmoid, rsqrt, sin, cos.
//
// Every function is built only from IEEE-754 correctly rounded operations
// (+, -, *, div_rn, sqrt_rn, fma_rn), exact int32 <-> fp32 conversions and
// integer/bit manipulation. No libm, no double, no long double, no hardware
// approximations, no data-dependent loops. Hence the result is a pure
// function of the input bits: g++ (any ISA), nvcc -fmad=false and
// hipcc -ffp-contract=off give identical bits, provided the build keeps
// contraction off and denormals on (no FTZ/DAZ, no fast-math).
//
// NaN policy (same spirit as dtype.h): a NaN input is returned with its sign
// and payload kept and the quiet bit set; a NaN created by an invalid
// operation (log(-1), rsqrt(-1), sin(inf)) is the positive quiet NaN
// 0x7FC00000. Never the platform's "default NaN", which differs between x86
// (0xFFC00000) and GPUs (0x7FFFFFFF).
//
// Methods, error bounds and the measured table: docs/math.md. Measured max
// errors (tests/core/math_ulp.cpp, against float64 libm, > 10^7 inputs each,
// whole domain: sin/cos over ALL finite inputs, exp/log down to subnormals):
//   exp 0.77 ulp (0.63 where the result is normal), log 0.62 ulp,
//   sigmoid 1.47 ulp, rsqrt 0.50 ulp, sin 0.71 ulp, cos 0.71 ulp.
// Polynomial coefficients are our own minimax fits (Lawson / iteratively
// reweighted least squares, float64, then rounded to fp32).
#pragma once

#include <cstdint>

#include "platform.h"

GOLDEN_CORE_BEGIN

namespace math_detail {

// Positive quiet NaN returned for invalid operations.
constexpr std::uint32_t kInvalidNaNBits = 0x7FC00000u;
constexpr std::uint32_t kQuietBit = 0x00400000u;
constexpr std::uint32_t kSignBit = 0x80000000u;
constexpr std::uint32_t kAbsMask = 0x7FFFFFFFu;
constexpr std::uint32_t kInfBits = 0x7F800000u;

// Only a NaN is unordered with itself (no fast-math anywhere: CONTRACT.md). One
// vector compare, where the bit test costs x86 three instructions.
GOLDEN_INLINE bool is_nan(float x) { return x != x; }
GOLDEN_INLINE float quiet(float x) { return bits_float(float_bits(x) | kQuietBit); }
GOLDEN_INLINE float invalid_nan() { return bits_float(kInvalidNaNBits); }
GOLDEN_INLINE float abs_bits(float x) { return bits_float(float_bits(x) & kAbsMask); }
GOLDEN_INLINE float inf() { return bits_float(kInfBits); }

// c ? a : b as a bitwise blend. A float ternary lets GCC sink the unused
// side's arithmetic into a conditional block, which it then refuses to
// if-convert under -ftrapping-math, and the loop is not vectorised. The
// blend keeps every function straight-line code.
GOLDEN_INLINE float select(bool c, float a, float b) {
  const std::uint32_t mask = 0u - static_cast<std::uint32_t>(c);
  return bits_float((float_bits(a) & mask) | (float_bits(b) & ~mask));
}

// 2^n for n in [-126, 127], built from the exponent field (no ldexp).
GOLDEN_INLINE float pow2i(std::int32_t n) {
  return bits_float(static_cast<std::uint32_t>(n + 127) << 23);
}

// ---------------------------------------------------------------- exp ----
// 1.5 * 2^23: adding it rounds any |v| < 2^22 to an integer (ties to even)
// and leaves that integer in the low mantissa bits.
constexpr float kRoundMagic = 0x1.8p23f;
constexpr float kLog2e = 0x1.715476p+0f;
// ln2 = kExpLn2Hi + kExpLn2Lo (+ 9e-17). kExpLn2Hi = RN(ln2), so for
// |n| <= 150 the first reduction step x - n*kExpLn2Hi is exact (see exp_f32).
constexpr float kExpLn2Hi = 0x1.62e430p-1f;
constexpr float kExpLn2Lo = -0x1.05c610p-29f;
// Clamps: exp(89) overflows, exp(-104) < 2^-150 underflows to +0; clamping
// keeps the integer n in [-150, 128] without changing those results.
constexpr float kExpClampHi = 89.0f;
constexpr float kExpClampLo = -104.0f;
// e^r = 1 + r + r^2 * Q(r), |r| <= 0.347; Q minimax for the relative error
// of e^r (fit error 2^-28.3).
constexpr float kExpQ0 = 0x1.fffffcp-2f;
constexpr float kExpQ1 = 0x1.555492p-3f;
constexpr float kExpQ2 = 0x1.5558b8p-5f;
constexpr float kExpQ3 = 0x1.1239aap-7f;
constexpr float kExpQ4 = 0x1.6a452cp-10f;

// --------------------------------------------------------------- log ----
constexpr std::uint32_t kSqrtHalfBits = 0x3F3504F3u;  // RN(sqrt(2)/2)
// ln2 = kLogLn2Hi + kLogLn2Lo (+ 5e-14); kLogLn2Hi has 16 significant bits so
// e * kLogLn2Hi is exact for every exponent |e| <= 149.
constexpr float kLogLn2Hi = 0x1.62e4p-1f;
constexpr float kLogLn2Lo = 0x1.7f7d1cp-20f;
// log(1+f) = f + f^2 * Q(f), f in [sqrt(2)/2 - 1, sqrt(2) - 1]; Q has degree
// 9, minimax for the relative error of log(1+f) (fit error 2^-30.3). The fit
// kept Q(0) = -1/2 exactly, so log(1+f) = f - f^2/2 + f^3 R(f) with R(f) =
// (Q(f) + 1/2) / f, the polynomial kLogQ1..kLogQ9.
constexpr float kLogQ1 = 0x1.555548p-2f;
constexpr float kLogQ2 = -0x1.000006p-2f;
constexpr float kLogQ3 = 0x1.99a476p-3f;
constexpr float kLogQ4 = -0x1.555c44p-3f;
constexpr float kLogQ5 = 0x1.233ba2p-3f;
constexpr float kLogQ6 = -0x1.fc28cap-4f;
constexpr float kLogQ7 = 0x1.e6c00ap-4f;
constexpr float kLogQ8 = -0x1.de01dcp-4f;
constexpr float kLogQ9 = 0x1.14733ep-4f;

// --------------------------------------------------------- sin / cos ----
constexpr float kPiOver4 = 0x1.921fb6p-1f;  // RN(pi/4), just above pi/4
// pi/2 = kPiOver2Hi + kPiOver2Lo (+ 1.7e-15): multiplies the reduced
// fraction (a float pair) into radians.
constexpr float kPiOver2Hi = 0x1.921fb6p+0f;
constexpr float kPiOver2Lo = -0x1.777a5cp-25f;
// The first 224 bits of 2/pi, most significant first (bit 1 of word 1 has
// weight 2^-1), preceded by one zero word so that arguments below 1 need no
// special case. Only 8 words: every finite fp32 needs at most 96 window bits
// starting at bit E-120 of this string (E = biased exponent <= 255).
constexpr std::uint32_t kTwoOverPi0 = 0x00000000u;
constexpr std::uint32_t kTwoOverPi1 = 0xA2F9836Eu;
constexpr std::uint32_t kTwoOverPi2 = 0x4E441529u;
constexpr std::uint32_t kTwoOverPi3 = 0xFC2757D1u;
constexpr std::uint32_t kTwoOverPi4 = 0xF534DDC0u;
constexpr std::uint32_t kTwoOverPi5 = 0xDB629599u;
constexpr std::uint32_t kTwoOverPi6 = 0x3C439041u;
constexpr std::uint32_t kTwoOverPi7 = 0xFE5163ABu;
// sin(r) = r + r^3 * S(r^2), |r| <= pi/4, minimax relative (fit 2^-32.5).
constexpr float kSinS0 = -0x1.555556p-3f;
constexpr float kSinS1 = 0x1.111174p-7f;
constexpr float kSinS2 = -0x1.a05956p-13f;
constexpr float kSinS3 = 0x1.7c2d52p-19f;
// cos(r) = 1 - r^2/2 + r^4 * C(r^2), |r| <= pi/4, minimax (fit 2^-33.0).
constexpr float kCosC0 = 0x1.55554ap-5f;
constexpr float kCosC1 = -0x1.6c0c28p-10f;
constexpr float kCosC2 = 0x1.99e80cp-16f;

// e^(hi + lo) for the reduced argument (|hi| <= 0.347 exact, |lo| < 2^-21),
// in [0.70, 1.42]. 1 + hi is an exact pair (Fast2Sum) and hi^2 an exact
// pair (fma), so only small terms (< 0.07 of the result) carry rounding
// errors and the final addition is the one full-size rounding.
// e^(hi+lo) = e^hi (1 + lo) + O(2^-43), with e^hi ~ u + poly in the lo term.
// Lanes: ScalarLanes (every backend's float) or a CPU vector (see exp_reduce).
template <class Lanes>
GOLDEN_INLINE_ALWAYS typename Lanes::T exp_reduced(typename Lanes::T hi, typename Lanes::T lo) {
  using T = typename Lanes::T;
  T q = Lanes::fma(Lanes::splat(kExpQ4), hi, Lanes::splat(kExpQ3));
  q = Lanes::fma(q, hi, Lanes::splat(kExpQ2));
  q = Lanes::fma(q, hi, Lanes::splat(kExpQ1));
  q = Lanes::fma(q, hi, Lanes::splat(kExpQ0));
  const T one = Lanes::splat(1.0f);
  const T u = one + hi;
  const T u_err = hi - (u - one);
  const T h2 = hi * hi;
  const T h2_err = Lanes::fma(hi, hi, -h2);
  const T poly = Lanes::fma(h2, q, h2_err * q);  // hi^2 Q(hi)
  const T small = Lanes::fma(lo, u + poly, u_err);
  return u + (small + poly);
}

// R(f) of log(1+f) = f - f^2/2 + f^3 R(f).
GOLDEN_INLINE float log1p_r(float f) {
  float q = fma_rn(kLogQ9, f, kLogQ8);
  q = fma_rn(q, f, kLogQ7);
  q = fma_rn(q, f, kLogQ6);
  q = fma_rn(q, f, kLogQ5);
  q = fma_rn(q, f, kLogQ4);
  q = fma_rn(q, f, kLogQ3);
  q = fma_rn(q, f, kLogQ2);
  return fma_rn(q, f, kLogQ1);
}

// Word i (0..7) of the padded 2/pi bit string. A masked OR instead of an
// indexed table or a ternary chain (which GCC turns into a branch tree that
// it cannot if-convert): branch-free, vectorisable, no device constant memory.
GOLDEN_INLINE std::uint32_t word_if(std::uint32_t i, std::uint32_t k, std::uint32_t word) {
  return word & (0u - static_cast<std::uint32_t>(i == k));
}
GOLDEN_INLINE std::uint32_t two_over_pi_word(std::uint32_t i) {
  return word_if(i, 1u, kTwoOverPi1) | word_if(i, 2u, kTwoOverPi2) | word_if(i, 3u, kTwoOverPi3) |
         word_if(i, 4u, kTwoOverPi4) | word_if(i, 5u, kTwoOverPi5) | word_if(i, 6u, kTwoOverPi6) |
         word_if(i, 7u, kTwoOverPi7);  // word 0 is zero
}

// 32 bits of the padded 2/pi string starting at bit 32*i + sh, sh in [0, 31].
// (b >> 1) >> (31 - sh) instead of b >> (32 - sh): no shift by 32 when sh = 0.
GOLDEN_INLINE std::uint32_t funnel(std::uint32_t a, std::uint32_t b, std::uint32_t sh) {
  return (a << sh) | ((b >> 1) >> (31u - sh));
}

// Argument reduced to [-pi/4, pi/4] as a float pair (hi + lo, |lo| <=
// 2^-23 |hi|), plus the quadrant q (mod 4).
struct TrigReduced {
  float hi;
  float lo;
  std::uint32_t q;
};

// Payne-Hanek reduction of a = |x| >= pi/4 (any finite value), in integer
// arithmetic: a = m * 2^(E-150) with m a 24-bit integer. Bits of 2/pi with
// weight >= 2^2 / (m * 2^(E-150)) only add multiples of 4 to a * 2/pi, so a
// 96-bit window starting at string bit E-120 gives a * 2/pi mod 4 as a 64-bit
// fixed-point number A (2 integer bits, 62 fraction bits) with error < 2^-61.
// The fraction is then turned into a float pair exactly and multiplied by
// pi/2 in pair arithmetic. Cost is independent of the magnitude of x.
GOLDEN_INLINE TrigReduced trig_reduce_large(float a) {
  const std::uint32_t u = float_bits(a);
  std::uint32_t e = u >> 23;
  e = e < 126u ? 126u : e;  // |x| < 1/2 never uses this path; keep shifts sane
  const std::uint64_t m = (u & 0x007FFFFFu) | 0x00800000u;
  const std::uint32_t p0 = e - 120u;  // first window bit, 6..135
  const std::uint32_t idx = p0 >> 5;
  const std::uint32_t sh = p0 & 31u;
  const std::uint32_t q0 = two_over_pi_word(idx);
  const std::uint32_t q1 = two_over_pi_word(idx + 1u);
  const std::uint32_t q2 = two_over_pi_word(idx + 2u);
  const std::uint32_t q3 = two_over_pi_word(idx + 3u);
  const std::uint32_t w0 = funnel(q0, q1, sh);
  const std::uint32_t w1 = funnel(q1, q2, sh);
  const std::uint32_t w2 = funnel(q2, q3, sh);
  // a * 2/pi = m * (w0 2^64 + w1 2^32 + w2) * 2^-94 + O(2^-70); in units of
  // 2^-62 and modulo 4 (= 2^64 units), everything wraps naturally.
  const std::uint64_t A = (static_cast<std::uint64_t>(static_cast<std::uint32_t>(m * w0)) << 32) +
                          m * w1 + ((m * w2) >> 32);
  TrigReduced out;
  // Round to the nearest quadrant; the signed fraction keeps 64 bits.
  out.q = static_cast<std::uint32_t>((A + (std::uint64_t{1} << 61)) >> 62);
  const std::int64_t fr = static_cast<std::int64_t>(A << 2);  // frac * 2^64, [-1/2, 1/2)
  // Exact split into three pieces of <= 24 bits, each exactly a float.
  const float c2 = static_cast<float>(static_cast<std::int32_t>(fr >> 40)) * 0x1p-24f;
  const float c1 =
      static_cast<float>(static_cast<std::int32_t>((static_cast<std::uint64_t>(fr) >> 16) & 0xFFFFFFu)) *
      0x1p-48f;
  const float c0 = static_cast<float>(static_cast<std::int32_t>(fr & 0xFFFF)) * 0x1p-64f;
  // Fast2Sum twice (|c2| >= |c1| unless c2 == 0; |s| >= |t| unless s == 0):
  // (h, l) is the fraction to ~2^-48 relative, also after cancellation.
  const float s = c2 + c1;
  const float t = (c1 - (s - c2)) + c0;
  const float h = s + t;
  const float l = t - (h - s);
  // (h + l) * pi/2 as a pair.
  out.hi = h * kPiOver2Hi;
  float lo = fma_rn(h, kPiOver2Hi, -out.hi);
  lo = fma_rn(h, kPiOver2Lo, lo);
  out.lo = fma_rn(l, kPiOver2Hi, lo);
  return out;
}

GOLDEN_INLINE TrigReduced trig_reduce(float a) {
  const TrigReduced big = trig_reduce_large(a);
  const bool small = a <= kPiOver4;  // no reduction needed: r = a exactly
  TrigReduced out;
  out.hi = select(small, a, big.hi);
  out.lo = select(small, 0.0f, big.lo);
  out.q = small ? 0u : big.q;
  return out;
}

// sin(hi + lo) for |hi| <= pi/4: sin(hi) + lo * cos(hi), with cos(hi) ~
// 1 - hi^2/2 (the dropped hi^4/24 lo term is < 2^-27 ulp). Everything but hi
// is a small correction, so the result has one dominant rounding.
GOLDEN_INLINE float sin_kernel(float hi, float lo) {
  const float r2 = hi * hi;
  float s = fma_rn(kSinS3, r2, kSinS2);
  s = fma_rn(s, r2, kSinS1);
  s = fma_rn(s, r2, kSinS0);
  const float lo_term = fma_rn(-0.5f * r2, lo, lo);
  return hi + fma_rn(hi * r2, s, lo_term);
}

// cos(hi + lo) for |hi| <= pi/4: 1 - hi^2/2 + hi^4 C(hi^2) - lo * hi.
// hi^2/2 is split exactly (fma) and 1 - hi^2/2 is a Fast2Sum, so the only
// large rounding is the final addition.
GOLDEN_INLINE float cos_kernel(float hi, float lo) {
  const float r2 = hi * hi;
  const float half_hi = 0.5f * hi;
  const float h = hi * half_hi;
  const float h_err = fma_rn(hi, half_hi, -h);
  const float w = 1.0f - h;
  const float w_err = (1.0f - w) - h;
  float c = fma_rn(kCosC2, r2, kCosC1);
  c = fma_rn(c, r2, kCosC0);
  const float tail = fma_rn(r2 * r2, c, w_err - h_err);
  return w + fma_rn(-hi, lo, tail);
}

// exp_non_nan in two steps: the argument reduction, then e^r scaled by 2^n.
// exp_non_nan(x) is exactly exp_from_reduced(exp_reduce(x)). CPU kernels may
// run the steps as separate loops over a block of elements: one element's
// whole chain of dependent operations is longer than an out-of-order core
// overlaps across iterations, two halves of it are not (same operations,
// same bits).
//
// The steps are templates over the lanes they run on. ScalarLanes is one
// float, as every backend calls them; a CPU build may pass a vector of fp32
// lanes (csrc/cpu/simd.h: VecLanes) whose operators are the same IEEE
// operations lane by lane and whose members do the steps ScalarLanes marks
// in the one vector instruction that gives each lane the same bits.
template <class T>
struct ExpReduced {
  T r_hi;  // x - n*ln2_hi, exact
  T r_lo;  // -n*ln2_lo
  T n;     // round(x log2 e), an integer in [-150, 128]
};

struct ScalarLanes {
  using T = float;
  GOLDEN_INLINE_ALWAYS static float splat(float c) { return c; }
  GOLDEN_INLINE_ALWAYS static float fma(float a, float b, float c) { return fma_rn(a, b, c); }
  // x clamped to [lo, hi] as select(x > hi, hi, x), then select(x < lo, lo,
  // x): a NaN stays. (AVX: max(lo, min(hi, x)).)
  GOLDEN_INLINE_ALWAYS static float clamp(float x, float lo, float hi) {
    const float below_hi = select(x > hi, hi, x);
    return select(below_hi < lo, lo, below_hi);
  }
  // y * 2^n rounded once, for an integer n in [-150, 128] and y in [0.70,
  // 1.42]: as two power-of-two factors 2^n1 * 2^(n - n1), each normal, so the
  // first product is exact and the second the one rounding. (AVX-512: scalef.)
  GOLDEN_INLINE_ALWAYS static float scale_pow2(float y, float n) {
    const std::int32_t k = static_cast<std::int32_t>(n);
    const std::int32_t k1 = k >> 1;  // k1, k - k1 in [-75, 64]
    return (y * pow2i(k1)) * pow2i(k - k1);
  }
  // is_nan(x) ? quiet(x) : r, the NaN policy of exp_f32. (AVX-512: one masked or.)
  GOLDEN_INLINE_ALWAYS static float quiet_nan_or(float x, float r) { return select(is_nan(x), quiet(x), r); }
};

template <class Lanes = ScalarLanes>
GOLDEN_INLINE_ALWAYS ExpReduced<typename Lanes::T> exp_reduce(typename Lanes::T x) {
  using T = typename Lanes::T;
  const T xc = Lanes::clamp(x, kExpClampLo, kExpClampHi);
  const T t = Lanes::fma(xc, Lanes::splat(kLog2e), Lanes::splat(kRoundMagic));
  const T n = t - Lanes::splat(kRoundMagic);
  const T r_hi = Lanes::fma(-n, Lanes::splat(kExpLn2Hi), xc);  // exact
  const T r_lo = -n * Lanes::splat(kExpLn2Lo);
  return {r_hi, r_lo, n};
}

template <class Lanes = ScalarLanes>
GOLDEN_INLINE_ALWAYS typename Lanes::T exp_from_reduced(const ExpReduced<typename Lanes::T>& a) {
  return Lanes::scale_pow2(exp_reduced<Lanes>(a.r_hi, a.r_lo), a.n);
}

// exp_f32 for a non-NaN x (any NaN in gives some NaN out): for callers that
// apply their own NaN policy, so vector code does not pay for it twice.
template <class Lanes = ScalarLanes>
GOLDEN_INLINE_ALWAYS typename Lanes::T exp_non_nan(typename Lanes::T x) {
  return exp_from_reduced<Lanes>(exp_reduce<Lanes>(x));
}

// sigmoid(x) and sigmoid(-x) of a non-NaN x share e = e^-|x| and 1 + e: each
// is num / (1 + e) with num = 1 or e, so nothing cancels and e never
// overflows. 1 + e is kept as an exact pair (Fast2Sum) and the quotient gets
// one Newton correction with an exact fma residual: the result is the
// correctly rounded num / (1 + e) up to ~2^-22 ulp.
struct SigmoidDenominator {
  float e;      // e^-|x|, in (0, 1]
  float d;      // RN(1 + e)
  float d_err;  // 1 + e - d, exact
  float inv;    // RN(1 / d)
};

// -|x|: sigmoid's one exponential is e = sigmoid_exp(x) = exp_non_nan(-|x|).
GOLDEN_INLINE float sigmoid_exp_argument(float x) { return bits_float(float_bits(x) | kSignBit); }

// The denominator from e = e^-|x| computed elsewhere (CPU kernels compute the
// exponentials of a block of elements first; see exp_reduce).
GOLDEN_INLINE SigmoidDenominator sigmoid_denominator_from_exp(float e) {
  SigmoidDenominator s;
  s.e = e;
  s.d = 1.0f + s.e;
  s.d_err = s.e - (s.d - 1.0f);
  s.inv = div_rn(1.0f, s.d);
  return s;
}

GOLDEN_INLINE float sigmoid_exp(float x) { return exp_non_nan(sigmoid_exp_argument(x)); }

GOLDEN_INLINE SigmoidDenominator sigmoid_denominator(float x) { return sigmoid_denominator_from_exp(sigmoid_exp(x)); }

GOLDEN_INLINE float sigmoid_quotient(const SigmoidDenominator& s, float num) {
  const float q = num * s.inv;
  float rem = fma_rn(-q, s.d, num);
  rem = fma_rn(-q, s.d_err, rem);
  return fma_rn(rem, s.inv, q);
}

// sigmoid_f32 for a non-NaN x (a NaN in gives some NaN out).
GOLDEN_INLINE float sigmoid_non_nan(float x) {
  const SigmoidDenominator s = sigmoid_denominator(x);
  return sigmoid_quotient(s, select(x >= 0.0f, 1.0f, s.e));
}

// sigmoid(-x) from the same denominator (for derivatives that need both).
GOLDEN_INLINE float sigmoid_neg_non_nan(const SigmoidDenominator& s, float x) {
  return sigmoid_quotient(s, select(x > 0.0f, s.e, 1.0f));
}

}  // namespace math_detail

// e^x. n = round(x log2 e), r = x - n ln2 (Cody-Waite: the first fma step is
// exact because x - n*RN(ln2) is a multiple of 2^-25 below 1/2), e^r by a
// degree-6 polynomial, then 2^n applied as two power-of-two factors
// 2^(n/2) * 2^(n - n/2) (each a normal number): exact for a normal result; a
// subnormal result gets one more IEEE rounding onto the subnormal grid (no
// flush to zero), which is why its bound is a little larger.
// Measured: 0.63 ulp (normal results), 0.77 ulp (subnormal results).
// Lanes: see math_detail::exp_reduce.
template <class Lanes = math_detail::ScalarLanes>
GOLDEN_INLINE_ALWAYS typename Lanes::T exp_f32(typename Lanes::T x) {
  return Lanes::quiet_nan_or(x, math_detail::exp_non_nan<Lanes>(x));
}

// Natural log. x = 2^e * m with m in [sqrt(2)/2, sqrt(2)) (subnormals are
// first scaled by 2^23), f = m - 1 exactly, log(1+f) = f - f^2/2 + f^3 R(f)
// (degree-11 polynomial). e*ln2_hi + f - f^2/2 is summed as exact pairs
// (exact products, Fast2Sum), so only f^3 R(f) (< 7% of the result) and the
// final addition are rounded at full magnitude. Measured: 0.62 ulp.
GOLDEN_INLINE float log_f32(float x) {
  using namespace math_detail;
  const bool subnormal = x < 0x1p-126f;
  const float xs = select(subnormal, x * 0x1p23f, x);
  const std::uint32_t ix = float_bits(xs) - kSqrtHalfBits;
  const std::int32_t e = (static_cast<std::int32_t>(ix) >> 23) - (subnormal ? 23 : 0);
  const float f = bits_float((ix & 0x007FFFFFu) + kSqrtHalfBits) - 1.0f;
  const float ef = static_cast<float>(e);
  // f^2/2 = half + half_err exactly.
  const float f2 = f * f;
  const float half = 0.5f * f2;
  const float half_err = 0.5f * fma_rn(f, f, -f2);
  const float tail = f2 * (f * log1p_r(f));  // f^3 R(f)
  // ef*ln2_hi is exact; Fast2Sum with |ef*ln2_hi| >= |f| or ef == 0.
  const float big = ef * kLogLn2Hi;
  const float s = big + f;
  const float s_err = f - (s - big);
  // Fast2Sum again: |s| >= 0.279 > half when ef != 0, and |f| > f^2/2.
  const float s2 = s - half;
  const float s2_err = (s - s2) - half;
  const float lo = ((fma_rn(ef, kLogLn2Lo, s_err) + s2_err) - half_err) + tail;
  float result = s2 + lo;
  result = select(x == 0.0f, -inf(), result);
  result = select(x < 0.0f, invalid_nan(), result);
  result = select(x == inf(), x, result);
  return select(is_nan(x), quiet(x), result);
}

// 1 / (1 + e^-x) as num / (1 + e^-|x|), num = 1 (x >= 0) or e^-|x| (x < 0);
// method in math_detail::sigmoid_denominator. The error is that of e (x < 0).
// Measured: 1.47 ulp (x < 0: exp's error, in a result binade up to 2x finer).
GOLDEN_INLINE float sigmoid_f32(float x) {
  using namespace math_detail;
  return select(is_nan(x), quiet(x), sigmoid_non_nan(x));
}

// 1 / sqrt(x). s = sqrt_rn(x) and y = 1/s are each correctly rounded; their
// exact residuals e1 = 1 - s*y and d = x - s*s (both exact fmas) give
// 1/sqrt(x) = y * (1 + e1 - d/(2x)) + O(2^-46): one correction makes the
// result correctly rounded except in rare near-halfway cases. x < 2^-64 is
// scaled by 2^64 first so that d is not itself subnormal (and exact).
// Measured: 0.50 ulp (correctly rounded on every tested input).
GOLDEN_INLINE float rsqrt_f32(float x) {
  using namespace math_detail;
  const bool tiny = x < 0x1p-64f;
  const float xs = select(tiny, x * 0x1p64f, x);
  const float s = sqrt_rn(xs);
  const float y = div_rn(1.0f, s);
  const float e1 = fma_rn(-s, y, 1.0f);
  const float d = fma_rn(-s, s, xs);
  const float c = fma_rn(-0.5f * (d * y), y, e1);
  float result = fma_rn(y, c, y);
  result = select(tiny, result * 0x1p32f, result);
  result = select(x == 0.0f, bits_float(float_bits(x) | kInfBits), result);  // +-0 -> +-inf
  result = select(x < 0.0f, invalid_nan(), result);
  result = select(x == inf(), 0.0f, result);
  return select(is_nan(x), quiet(x), result);
}

// sin x: x = (k + f) pi/2 exactly enough (Payne-Hanek for |x| > pi/4, all
// finite x), then +-sin / +-cos of r = f pi/2 by quadrant; odd in x.
// Measured: 0.71 ulp over all finite x (the bound does not degrade with |x|).
GOLDEN_INLINE float sin_f32(float x) {
  using namespace math_detail;
  const float a = abs_bits(x);
  const TrigReduced red = trig_reduce(a);
  const float sv = sin_kernel(red.hi, red.lo);
  const float cv = cos_kernel(red.hi, red.lo);
  const float v = select((red.q & 1u) != 0u, cv, sv);
  const std::uint32_t negate = ((red.q & 2u) << 30) ^ (float_bits(x) & kSignBit);
  float result = bits_float(float_bits(v) ^ negate);
  result = select(a == inf(), invalid_nan(), result);
  return select(is_nan(x), quiet(x), result);
}

// cos x = sin(x + pi/2): same reduction, quadrant shifted by one; even in x.
// Measured: 0.71 ulp over all finite x.
GOLDEN_INLINE float cos_f32(float x) {
  using namespace math_detail;
  const float a = abs_bits(x);
  const TrigReduced red = trig_reduce(a);
  const float sv = sin_kernel(red.hi, red.lo);
  const float cv = cos_kernel(red.hi, red.lo);
  const std::uint32_t q = red.q + 1u;
  const float v = select((q & 1u) != 0u, cv, sv);
  float result = bits_float(float_bits(v) ^ ((q & 2u) << 30));
  result = select(a == inf(), invalid_nan(), result);
  return select(is_nan(x), quiet(x), result);
}

GOLDEN_CORE_END
