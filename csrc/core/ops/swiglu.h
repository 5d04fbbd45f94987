// SiLU, silu(x) = x * sigmoid(x), and SwiGLU, swiglu(gate, up) = silu(gate) * up,
// forward and backward, element by element. Canonical order (each step one
// fp32 rounding, contraction only where fma_rn is written):
//   s = sigmoid_f32(x);  silu = x * s;  swiglu = silu(gate) * up
//   silu'(x) = s * fma(x, sigmoid_f32(-x), 1)     (1 - s as sigmoid(-x): no cancellation)
//   silu backward: dx = g * silu'(x)
//   swiglu backward: dgate = (g * up) * silu'(gate),  dup = g * silu(gate)
// Every output is rounded once, from fp32, to the output type. NaN bits follow
// nan_policy.h with the arguments in the order written above (g first).
#pragma once

#include <cstdint>

#include "../dtype.h"
#include "../math.h"
#include "../nan_policy.h"
#include "../types.h"

namespace golden {

// Dense arrays of `count` elements, validated by the bindings. The gradient
// and output types are the input type or fp32.
struct SiluForwardProblem {
  const void* x;
  void* y;
  DType dtype;
  DType out_dtype;
  std::int64_t count;
};

struct SiluBackwardProblem {
  const void* grad_out;
  const void* x;
  void* dx;
  DType dtype;
  DType grad_dtype;
  std::int64_t count;
};

struct SwigluForwardProblem {
  const void* gate;
  const void* up;
  void* y;
  DType dtype;
  DType out_dtype;
  std::int64_t count;
};

struct SwigluBackwardProblem {
  const void* grad_out;
  const void* gate;
  const void* up;
  void* dgate;
  void* dup;
  DType dtype;
  DType grad_dtype;
  std::int64_t count;
};

}  // namespace golden

GOLDEN_CORE_BEGIN

// The NaN policy is applied once, on the final value: a NaN input overrides
// whatever the inner steps produced, so they use the core's non-NaN variants
// (identical values for every other input) and vector code pays once.
//
// silu and silu' from e = math_detail::sigmoid_exp(x) = e^-|x| computed
// elsewhere: the CPU backend computes the exponentials of a block of elements
// in loops of their own (math_detail::exp_reduce says why). sigmoid(x) and
// sigmoid(-x) share e and one division; silu'(x) = s + x*s*(1 - s) =
// s * (1 + x * sigmoid(-x)).
GOLDEN_INLINE float silu_non_nan_from_exp(float x, float e) {
  const math_detail::SigmoidDenominator s = math_detail::sigmoid_denominator_from_exp(e);
  return x * math_detail::sigmoid_quotient(s, math_detail::select(x >= 0.0f, 1.0f, s.e));
}

GOLDEN_INLINE float silu_derivative_non_nan_from_exp(float x, float e) {
  const math_detail::SigmoidDenominator s = math_detail::sigmoid_denominator_from_exp(e);
  const float sig = math_detail::sigmoid_quotient(s, math_detail::select(x >= 0.0f, 1.0f, s.e));
  return sig * fma_rn(x, math_detail::sigmoid_neg_non_nan(s, x), 1.0f);
}

GOLDEN_INLINE float silu_non_nan(float x) { return silu_non_nan_from_exp(x, math_detail::sigmoid_exp(x)); }

GOLDEN_INLINE float silu_derivative_non_nan(float x) {
  return silu_derivative_non_nan_from_exp(x, math_detail::sigmoid_exp(x));
}

// The last steps of each output from silu = silu_non_nan(x) and derivative =
// silu_derivative_non_nan(x) computed elsewhere (the CPU backend looks them up
// in tables over all 16-bit inputs, or computes a block's exponentials first).
GOLDEN_INLINE float silu_from_non_nan(float silu, float x) { return apply_nan_policy(silu, x); }

// The products of each output before its NaN policy (the lean passes below
// use them as they are).
GOLDEN_INLINE float silu_backward_product(float g, float derivative) { return g * derivative; }
GOLDEN_INLINE float swiglu_product(float silu_gate, float up) { return silu_gate * up; }
GOLDEN_INLINE float swiglu_dgate_product(float g, float derivative, float up) { return (g * up) * derivative; }
GOLDEN_INLINE float swiglu_dup_product(float g, float silu_gate) { return g * silu_gate; }

GOLDEN_INLINE float silu_backward_from_derivative(float g, float derivative, float x) {
  return apply_nan_policy(silu_backward_product(g, derivative), g, x);
}

// A NaN made inside silu (silu(-inf) = -inf * 0) stays a NaN through * up and
// becomes the canonical NaN here, as silu_f32 alone would make it.
GOLDEN_INLINE float swiglu_from_silu(float silu_gate, float gate, float up) {
  return apply_nan_policy(swiglu_product(silu_gate, up), gate, up);
}

GOLDEN_INLINE float swiglu_dgate_from_derivative(float g, float derivative, float gate, float up) {
  return apply_nan_policy(swiglu_dgate_product(g, derivative, up), g, gate, up);
}

GOLDEN_INLINE float swiglu_dup_from_silu(float g, float silu_gate, float gate) {
  return apply_nan_policy(swiglu_dup_product(g, silu_gate), g, gate);
}

// silu of one fp32 value, the NaN policy applied (the CPU's whole-result table).
GOLDEN_INLINE float silu_f32(float x) { return silu_from_non_nan(silu_non_nan(x), x); }

// One element of each output, rounded once to TOut, from its input's silu
// values (silu = silu_non_nan(x), derivative = silu_derivative_non_nan(x))
// computed or looked up elsewhere: the general pass of the *_span_from loops
// below, and the GPU backend's elements.
template <class TOut>
GOLDEN_INLINE TOut silu_forward_output(float silu, float x) {
  return from_float<TOut>(silu_from_non_nan(silu, x));
}

template <class TOut>
GOLDEN_INLINE TOut silu_backward_output(float g, float derivative, float x) {
  return from_float<TOut>(silu_backward_from_derivative(g, derivative, x));
}

template <class TOut>
GOLDEN_INLINE TOut swiglu_forward_output(float silu_gate, float gate, float up) {
  return from_float<TOut>(swiglu_from_silu(silu_gate, gate, up));
}

template <class TOut>
GOLDEN_INLINE void swiglu_backward_outputs(float g, float silu_gate, float derivative, float gate, float up,
                                           TOut& dgate, TOut& dup) {
  dgate = from_float<TOut>(swiglu_dgate_from_derivative(g, derivative, gate, up));
  dup = from_float<TOut>(swiglu_dup_from_silu(g, silu_gate, gate));
}

// The loops finished from silu_non_nan / silu_derivative_non_nan values of
// their inputs computed elsewhere (silu[i] = silu_non_nan(to_float(x[i])),
// derivative[i] likewise): each element's bits are the *_output function's.
//
// Each first runs a lean pass that computes the products alone, narrows them
// as numbers and notes whether any result was a NaN. A NaN input always makes
// a NaN result there (silu and silu' of a NaN are NaN; the dup of a NaN up is
// not, but its dgate is), so a span without one had no NaN input and no NaN
// made by the arithmetic: the NaN policy leaves every value as it is, and the
// lean pass wrote the general loop's bits. Otherwise the general loop writes
// the span again. The lean pass is about half the vector instructions.
template <class T, class TOut>
GOLDEN_INLINE void silu_forward_span_from(const float* silu, const T* x, TOut* y, std::int64_t n) {
  std::uint32_t nan_seen = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    nan_seen |= static_cast<std::uint32_t>(silu[i] != silu[i]);
    y[i] = from_number<TOut>(silu[i]);
  }
  if (nan_seen == 0) return;
  for (std::int64_t i = 0; i < n; ++i) y[i] = silu_forward_output<TOut>(silu[i], to_float(x[i]));
}

template <class T, class TOut>
GOLDEN_INLINE void swiglu_forward_span_from(const float* silu_gate, const T* gate, const T* up, TOut* y,
                                            std::int64_t n) {
  std::uint32_t nan_seen = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float r = swiglu_product(silu_gate[i], to_float(up[i]));
    nan_seen |= static_cast<std::uint32_t>(r != r);
    y[i] = from_number<TOut>(r);
  }
  if (nan_seen == 0) return;
  for (std::int64_t i = 0; i < n; ++i) {
    y[i] = swiglu_forward_output<TOut>(silu_gate[i], to_float(gate[i]), to_float(up[i]));
  }
}

template <class T, class TOut>
GOLDEN_INLINE void silu_backward_span_from(const float* derivative, const T* grad_out, const T* x, TOut* dx,
                                           std::int64_t n) {
  std::uint32_t nan_seen = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float r = silu_backward_product(to_float(grad_out[i]), derivative[i]);
    nan_seen |= static_cast<std::uint32_t>(r != r);
    dx[i] = from_number<TOut>(r);
  }
  if (nan_seen == 0) return;
  for (std::int64_t i = 0; i < n; ++i) {
    dx[i] = silu_backward_output<TOut>(to_float(grad_out[i]), derivative[i], to_float(x[i]));
  }
}

template <class T, class TOut>
GOLDEN_INLINE void swiglu_backward_span_from(const float* silu_gate, const float* derivative, const T* grad_out,
                                             const T* gate, const T* up, TOut* dgate, TOut* dup, std::int64_t n) {
  std::uint32_t nan_seen = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float g = to_float(grad_out[i]);
    const float dg = swiglu_dgate_product(g, derivative[i], to_float(up[i]));
    const float du = swiglu_dup_product(g, silu_gate[i]);
    nan_seen |= static_cast<std::uint32_t>(dg != dg) | static_cast<std::uint32_t>(du != du);
    dgate[i] = from_number<TOut>(dg);
    dup[i] = from_number<TOut>(du);
  }
  if (nan_seen == 0) return;
  for (std::int64_t i = 0; i < n; ++i) {
    swiglu_backward_outputs<TOut>(to_float(grad_out[i]), silu_gate[i], derivative[i], to_float(gate[i]),
                                  to_float(up[i]), dgate[i], dup[i]);
  }
}

GOLDEN_CORE_END
