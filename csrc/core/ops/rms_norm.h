// RMSNorm, y = x / sqrt(mean(x^2) + eps) * w, per row of `cols` elements.
// Canonical order: sum of squares by the row reduction of reduce.h with
// lane fold acc = fma(x, x, acc); r = 1 / sqrt(ss / cols + eps) with each
// operation correctly rounded; y = (x * r) * w, rounded once to the output
// type (or, in HF mode, rounded to the input type after x * r and again
// after the weight multiply, as Hugging Face's Qwen3RMSNorm does).
#pragma once

#include <cstdint>

#include "../dtype.h"
#include "../reduce.h"
#include "../types.h"

namespace golden {

enum class RmsNormRounding : std::int32_t {
  once = 0,  // fp32 all the way, one rounding at the output
  hf = 1,    // Hugging Face Qwen3: round(x * r) to the input type, then * w
};

// Weight-gradient partials are summed over blocks of this many rows (rows in
// order inside a block, blocks merged by the balanced tree).
inline constexpr std::int64_t kRmsNormGradRowBlock = 64;

// One call's worth of work, as every backend receives it: dense row-major
// [rows, cols] tensors, already validated by the bindings.
struct RmsNormForwardProblem {
  const void* x;
  const void* weight;
  void* y;
  DType dtype;      // of x and weight
  DType out_dtype;  // dtype or f32
  std::int64_t rows;
  std::int64_t cols;
  float eps;
  RmsNormRounding rounding;
};

struct RmsNormBackwardProblem {
  const void* grad_out;
  const void* x;
  const void* weight;
  void* dx;
  void* dweight;
  float* dweight_partials;  // workspace [ceil(rows / kRmsNormGradRowBlock), cols]
  DType dtype;              // of grad_out, x and weight
  DType grad_dtype;         // of dx and dweight: dtype or f32
  std::int64_t rows;
  std::int64_t cols;
  float eps;
};

}  // namespace golden

GOLDEN_CORE_BEGIN

template <class T>
GOLDEN_INLINE float rms_norm_inverse_rms(const T* x, std::int64_t cols, float eps) {
  const float sum_squares = canonical_row_sum(cols, [x](float acc, std::int64_t i) {
    const float v = to_float(x[i]);
    return fma_rn(v, v, acc);
  });
  const float mean_square = div_rn(sum_squares, static_cast<float>(cols));
  return div_rn(1.0f, sqrt_rn(mean_square + eps));
}

template <class T, class TOut>
GOLDEN_INLINE void rms_norm_forward_row(const T* x, const T* weight, TOut* y, std::int64_t cols,
                                        float eps, RmsNormRounding rounding) {
  const float r = rms_norm_inverse_rms(x, cols, eps);
  if (rounding == RmsNormRounding::hf) {
    for (std::int64_t i = 0; i < cols; ++i) {
      const float normalized = round_through<T>(to_float(x[i]) * r);
      y[i] = from_float<TOut>(round_through<T>(normalized * to_float(weight[i])));
    }
    return;
  }
  for (std::int64_t i = 0; i < cols; ++i) {
    y[i] = from_float<TOut>(to_float(x[i]) * r * to_float(weight[i]));
  }
}

// Backward of the round-once forward for one row. With gw_i = g_i * w_i:
//   dx_i = gw_i * r - x_i * c,  c = (dot / cols) * (r * r * r),
//   dot  = sum_i gw_i * x_i       (row reduction, fold acc = fma(gw, x, acc))
// and the row's weight-gradient term g_i * (x_i * r) is folded into
// dweight_acc[i] with one fma, so a caller that walks the rows of a block in
// order builds that block's partial.
template <class T, class TOut>
GOLDEN_INLINE void rms_norm_backward_row(const T* grad_out, const T* x, const T* weight, TOut* dx,
                                         float* dweight_acc, std::int64_t cols, float eps) {
  const float r = rms_norm_inverse_rms(x, cols, eps);
  const float dot = canonical_row_sum(cols, [=](float acc, std::int64_t i) {
    const float gw = to_float(grad_out[i]) * to_float(weight[i]);
    return fma_rn(gw, to_float(x[i]), acc);
  });
  const float c = div_rn(dot, static_cast<float>(cols)) * (r * r * r);
  for (std::int64_t i = 0; i < cols; ++i) {
    const float xi = to_float(x[i]);
    const float gi = to_float(grad_out[i]);
    dx[i] = from_float<TOut>(gi * to_float(weight[i]) * r - xi * c);
    dweight_acc[i] = fma_rn(gi, xi * r, dweight_acc[i]);
  }
}

GOLDEN_CORE_END
