// RMSNorm, y = x / sqrt(mean(x^2) + eps) * w, per row of `cols` elements.
// Canonical order: sum of squares by the row reduction of reduce.h with
// lane fold acc = fma(x, x, acc); r = 1 / sqrt(ss / cols + eps) with each
// operation correctly rounded; y = (x * r) * w, rounded once to the output
// type (or, in HF mode, rounded to the input type after x * r and again
// after the weight multiply, as Hugging Face's Qwen3RMSNorm does).
// NaN bits (nan_policy.h): a NaN anywhere in a row reaches every output of
// the row through the reduction, where hardware picks the payload, so every
// NaN output (dx and dweight too) is the canonical 0x7FC00000.
#pragma once

#include <cstdint>

#include "../dtype.h"
#include "../nan_policy.h"
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

// The row functions take a row worker (reduce.h): SerialRow on the CPU, one
// warp per row on a GPU. Either way each element and each reduction below
// is computed by the same expression in the same order.

template <class T, class Worker = SerialRow>
GOLDEN_INLINE float rms_norm_inverse_rms(const T* x, std::int64_t cols, float eps,
                                         Worker worker = {}) {
  const float sum_squares = canonical_row_sum(
      cols,
      [x](float acc, std::int64_t i) {
        const float v = to_float(x[i]);
        return fma_rn(v, v, acc);
      },
      worker);
  const float mean_square = div_rn(sum_squares, static_cast<float>(cols));
  return div_rn(1.0f, sqrt_rn(mean_square + eps));
}

// One output element: round once, (x * r) * w.
GOLDEN_INLINE float rms_norm_scaled(float x, float w, float r) { return x * r * w; }

template <class TOut>
GOLDEN_INLINE TOut rms_norm_output_once(float x, float w, float r) {
  return from_float<TOut>(canonical_nan(rms_norm_scaled(x, w, r)));
}

// One output element in Hugging Face rounding: round(x * r) to T, times w,
// rounded to T (then stored as TOut).
template <class T, class TOut>
GOLDEN_INLINE TOut rms_norm_output_hf(float x, float w, float r) {
  const float normalized = round_through<T>(x * r);
  return from_float<TOut>(canonical_nan(round_through<T>(normalized * w)));
}

// The worker's share of n outputs of a row whose inverse rms is r: elements
// first(), first() + kStep, ... of x, weight and y. TRound is the row's input
// type, to which HF mode rounds; x and weight hold its values (as TRound, or
// widened exactly to fp32 by a backend), so any n-element piece of a row gives
// the same bits as the whole row.
template <class TRound, class TIn, class TOut, class Worker = SerialRow>
GOLDEN_INLINE void rms_norm_forward_span(const TIn* x, const TIn* weight, TOut* y, std::int64_t n, float r,
                                         RmsNormRounding rounding, Worker worker = {}) {
  if (rounding == RmsNormRounding::hf) {
    for (std::int64_t i = worker.first(); i < n; i += Worker::kStep) {
      y[i] = rms_norm_output_hf<TRound, TOut>(to_float(x[i]), to_float(weight[i]), r);
    }
    return;
  }
  // A lean pass first: the products rounded as numbers (from_number), a NaN
  // noted. Without a NaN result, canonical_nan changes nothing and these are
  // rms_norm_output_once's bits; with one, the share is written again.
  std::uint32_t nan_seen = 0;
  for (std::int64_t i = worker.first(); i < n; i += Worker::kStep) {
    const float v = rms_norm_scaled(to_float(x[i]), to_float(weight[i]), r);
    nan_seen |= static_cast<std::uint32_t>(v != v);
    y[i] = from_number<TOut>(v);
  }
  if (nan_seen == 0) return;
  for (std::int64_t i = worker.first(); i < n; i += Worker::kStep) {
    y[i] = rms_norm_output_once<TOut>(to_float(x[i]), to_float(weight[i]), r);
  }
}

// The worker's share of one row's outputs.
template <class T, class TOut, class Worker = SerialRow>
GOLDEN_INLINE void rms_norm_forward_row(const T* x, const T* weight, TOut* y, std::int64_t cols,
                                        float eps, RmsNormRounding rounding, Worker worker = {}) {
  const float r = rms_norm_inverse_rms(x, cols, eps, worker);
  rms_norm_forward_span<T>(x, weight, y, cols, r, rounding, worker);
}

// Backward of the round-once forward. With gw_i = g_i * w_i:
//   dx_i = gw_i * r - x_i * c,  c = (dot / cols) * (r * r * r),
//   dot  = sum_i gw_i * x_i       (row reduction, fold acc = fma(gw, x, acc))
// and the row's weight-gradient term g_i * (x_i * r) is folded into the
// column's accumulator with one fma. Walking the rows of a block in order
// builds that block's partial; the blocks then merge by the tree.
struct RmsNormGradCoefficients {
  float r;  // 1 / rms of the row
  float c;  // (dot / cols) * r^3
};

template <class T, class Worker = SerialRow>
GOLDEN_INLINE RmsNormGradCoefficients rms_norm_grad_coefficients(const T* grad_out, const T* x,
                                                                  const T* weight,
                                                                  std::int64_t cols, float eps,
                                                                  Worker worker = {}) {
  const float r = rms_norm_inverse_rms(x, cols, eps, worker);
  const float dot = canonical_row_sum(
      cols,
      [=](float acc, std::int64_t i) {
        const float gw = to_float(grad_out[i]) * to_float(weight[i]);
        return fma_rn(gw, to_float(x[i]), acc);
      },
      worker);
  return {r, div_rn(dot, static_cast<float>(cols)) * (r * r * r)};
}

GOLDEN_INLINE float rms_norm_dx_value(float g, float x, float w, RmsNormGradCoefficients k) {
  return g * w * k.r - x * k.c;
}

GOLDEN_INLINE float rms_norm_dx(float g, float x, float w, RmsNormGradCoefficients k) {
  return canonical_nan(rms_norm_dx_value(g, x, w, k));
}

GOLDEN_INLINE float rms_norm_fold_dweight(float acc, float g, float x, float r) {
  return fma_rn(g, x * r, acc);
}

// One row on one thread: dx, and the row's terms folded into dweight_acc.
template <class T, class TOut>
GOLDEN_INLINE void rms_norm_backward_row(const T* grad_out, const T* x, const T* weight, TOut* dx,
                                         float* dweight_acc, std::int64_t cols, float eps) {
  const RmsNormGradCoefficients k = rms_norm_grad_coefficients(grad_out, x, weight, cols, eps);
  // dx in a lean pass as in the forward: rewritten with canonical_nan only
  // when a value was a NaN (dweight's terms are folded once, in this pass).
  std::uint32_t nan_seen = 0;
  for (std::int64_t i = 0; i < cols; ++i) {
    const float xi = to_float(x[i]);
    const float gi = to_float(grad_out[i]);
    const float v = rms_norm_dx_value(gi, xi, to_float(weight[i]), k);
    nan_seen |= static_cast<std::uint32_t>(v != v);
    dx[i] = from_number<TOut>(v);
    dweight_acc[i] = rms_norm_fold_dweight(dweight_acc[i], gi, xi, k.r);
  }
  if (nan_seen == 0) return;
  for (std::int64_t i = 0; i < cols; ++i) {
    dx[i] = from_float<TOut>(rms_norm_dx(to_float(grad_out[i]), to_float(x[i]), to_float(weight[i]), k));
  }
}

// dweight[col]: the column's block partials (partials[b * cols + col]) merged
// by the balanced tree; zero when there are no rows.
template <class TOut>
GOLDEN_INLINE TOut rms_norm_merge_dweight(const float* partials, std::int64_t blocks,
                                          std::int64_t cols, std::int64_t col) {
  if (blocks == 0) return from_float<TOut>(0.0f);
  return from_float<TOut>(canonical_nan(tree_reduce(partials + col, blocks, cols, AddCombine{})));
}

GOLDEN_CORE_END
