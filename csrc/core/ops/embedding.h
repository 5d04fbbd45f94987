// Embedding lookup, out[t] = weight[ids[t]], and its weight gradient.
// Forward is a gather: the row's bits are copied when the output type is the
// table's, widened exactly to fp32 otherwise; the table is never converted.
// Backward canonical order: dweight[v][c] = sum of grad[t][c] over the tokens
// t with ids[t] == v, as sequential fp32 additions in increasing t starting
// from +0 (rows no token indexes stay +0), then rounded once. No atomics.
// NaN bits (nan_policy.h): a sum keeps the first NaN in token order, quieted.
#pragma once

#include <cstdint>

#include "../dtype.h"
#include "../nan_policy.h"
#include "../types.h"

namespace golden {

// Token ids as the bindings received them: int32 or int64, `count` of them.
struct EmbeddingIds {
  const void* data;
  bool is_int64;
  std::int64_t count;
};

// The first id outside [0, vocab) in token order; position -1 if none.
struct InvalidId {
  std::int64_t position;
  std::int64_t value;
};

struct EmbeddingForwardProblem {
  EmbeddingIds ids;
  const void* weight;  // [vocab, dim]
  void* out;           // [ids.count, dim]
  DType dtype;         // of weight
  DType out_dtype;     // dtype (exact copy) or f32
  std::int64_t vocab;
  std::int64_t dim;
};

// The tokens are grouped by id with a stable counting sort kept in
// `workspace` (int64 [vocab + 1 + ids.count]): bucket_begin[v] for v in
// [0, vocab] followed by the token positions ordered by (id, position).
struct EmbeddingBackwardProblem {
  EmbeddingIds ids;
  const void* grad_out;  // [ids.count, dim]
  void* dweight;         // [vocab, dim]
  std::int64_t* workspace;
  DType dtype;       // of grad_out
  DType grad_dtype;  // of dweight: dtype or f32
  std::int64_t vocab;
  std::int64_t dim;
};

}  // namespace golden

GOLDEN_CORE_BEGIN

template <class A, class B>
struct IsSameType {
  static constexpr bool value = false;
};
template <class A>
struct IsSameType<A, A> {
  static constexpr bool value = true;
};

GOLDEN_INLINE std::int64_t load_id(const EmbeddingIds& ids, std::int64_t t) {
  return ids.is_int64 ? static_cast<const std::int64_t*>(ids.data)[t]
                      : static_cast<const std::int32_t*>(ids.data)[t];
}

GOLDEN_INLINE bool id_in_range(std::int64_t id, std::int64_t vocab) { return id >= 0 && id < vocab; }

// One element of a gathered row: a bit copy, or the exact fp32 widening.
template <class T, class TOut>
GOLDEN_INLINE TOut embedding_element(T v) {
  if constexpr (IsSameType<T, TOut>::value) {
    return v;
  } else {
    return to_float(v);
  }
}

template <class T, class TOut>
GOLDEN_INLINE void embedding_gather_row(const T* weight_row, TOut* out_row, std::int64_t dim) {
  for (std::int64_t c = 0; c < dim; ++c) out_row[c] = embedding_element<T, TOut>(weight_row[c]);
}

// The canonical gradient step: the next token (in token order) of a bucket
// added to the running fp32 sums of columns [0, n) of one vocabulary row.
GOLDEN_INLINE float embedding_grad_add(float acc, float g) { return apply_nan_policy(acc + g, acc, g); }

template <class T>
GOLDEN_INLINE void embedding_grad_add_token(const T* grad_row, float* acc, std::int64_t n) {
  for (std::int64_t c = 0; c < n; ++c) acc[c] = embedding_grad_add(acc[c], to_float(grad_row[c]));
}

GOLDEN_CORE_END
