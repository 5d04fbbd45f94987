// Linear / lm_head, y[m, n] = sum_k x[m, k] * w[n, k] (+ b[n]), and its backward.
// Canonical order of every contraction here (y, dx, dweight, dbias): per output, an
// fp32 fma chain over the contraction index in K-blocks of kLinearKBlock (acc = +0,
// index ascending), block partials merged by the balanced tree of reduce.h, then
// + bias in fp32, rounded once to the output type. The numerics live only here.
// NaN bits: every NaN output is the canonical 0x7FC00000 (nan_policy.h), since
// which payload an fma chain keeps differs between CPU and GPU.
#pragma once

#include <cstdint>

#include "../dtype.h"
#include "../nan_policy.h"
#include "../reduce.h"
#include "../types.h"

namespace golden {

// Length of one K-block: the fma chain of an output restarts every kLinearKBlock
// contraction indices (counted from index 0 of the contraction).
inline constexpr std::int64_t kLinearKBlock = 256;

// Stack slots the streaming tree fold needs for any block count below 2^62.
inline constexpr int kLinearMaxTreeStack = 64;

// y[rows, out] = x[rows, in] @ weight[out, in]^T (+ bias[out]); dense row-major.
struct LinearForwardProblem {
  const void* x;
  const void* weight;
  const void* bias;  // nullptr: no bias
  void* y;
  DType dtype;      // of x, weight and bias
  DType out_dtype;  // dtype or f32
  std::int64_t rows;
  std::int64_t in_features;
  std::int64_t out_features;
};

// Gradients of the forward; a null output pointer skips that gradient.
//   dx[rows, in]      = grad_out @ weight      (contraction over out)
//   dweight[out, in]  = grad_out^T @ x         (contraction over rows)
//   dbias[out]        = sum over rows of grad_out
struct LinearBackwardProblem {
  const void* grad_out;
  const void* x;
  const void* weight;
  void* dx;
  void* dweight;
  void* dbias;
  DType dtype;       // of grad_out, x and weight
  DType grad_dtype;  // of dx, dweight and dbias: dtype or f32
  std::int64_t rows;
  std::int64_t in_features;
  std::int64_t out_features;
};

// y[i] = tree over shards s of partials[s][i] (+ bias[i % out_features]): the merge of
// shard partials of a contraction split on tree nodes (see linear_shard_begin).
struct LinearMergeProblem {
  const float* partials;  // [shards, count]
  const void* bias;       // nullptr or [out_features] of bias_dtype
  void* y;                // [count] of out_dtype
  DType bias_dtype;
  DType out_dtype;
  std::int64_t shards;
  std::int64_t count;
  std::int64_t out_features;
};

}  // namespace golden

GOLDEN_CORE_BEGIN

// K-blocks of a contraction of length k_len; an empty contraction is one empty block (+0).
GOLDEN_INLINE std::int64_t linear_block_count(std::int64_t k_len) {
  return k_len > 0 ? ceil_div(k_len, kLinearKBlock) : 1;
}

GOLDEN_INLINE std::int64_t linear_block_end(std::int64_t block, std::int64_t k_len) {
  const std::int64_t end = (block + 1) * kLinearKBlock;
  return end < k_len ? end : k_len;
}

// One K-block's partial: acc = fma(a(k), b(k), acc) for k ascending in [begin, end).
template <class AAt, class BAt>
GOLDEN_INLINE float linear_block_partial(AAt a, BAt b, std::int64_t begin, std::int64_t end) {
  float acc = 0.0f;
  for (std::int64_t k = begin; k < end; ++k) acc = fma_rn(a(k), b(k), acc);
  return acc;
}

// The balanced tree over blocks [first, first + count), each leaf a block partial.
template <class AAt, class BAt>
GOLDEN_INLINE float linear_tree(AAt a, BAt b, std::int64_t first, std::int64_t count, std::int64_t k_len) {
  if (count == 1) return linear_block_partial(a, b, first * kLinearKBlock, linear_block_end(first, k_len));
  const std::int64_t left = (count + 1) / 2;
  return linear_tree(a, b, first, left, k_len) + linear_tree(a, b, first + left, count - left, k_len);
}

// The canonical contraction sum_k a(k) b(k), k in [0, k_len): the definition the
// scalar reference evaluates directly, one output at a time.
template <class AAt, class BAt>
GOLDEN_INLINE float linear_contraction(AAt a, BAt b, std::int64_t k_len) {
  return linear_tree(a, b, 0, linear_block_count(k_len), k_len);
}

// ---- Streaming the same tree: block partials arrive in order (fast paths). ----
// Visiting the tree's leaves left to right and evaluating each internal node as
// soon as its last leaf is done (post-order) needs a stack of pending left-subtree
// values. After leaf `leaf` the number of nodes completed is the number of
// internal nodes whose last leaf is `leaf`; each pops the stack: v = top + v
// (left + right, as in the tree). Equal, value for value, to linear_tree.
GOLDEN_INLINE int tree_merges_after_leaf(std::int64_t leaf, std::int64_t count) {
  int merges = 0;
  std::int64_t first = 0;
  while (count > 1) {
    if (leaf == first + count - 1) ++merges;
    const std::int64_t left = (count + 1) / 2;
    if (leaf < first + left) {
      count = left;
    } else {
      first += left;
      count -= left;
    }
  }
  return merges;
}

// Stack slots the fold of `count` leaves needs: the tree's height plus one.
GOLDEN_INLINE int tree_stack_slots(std::int64_t count) {
  int height = 0;
  while (count > 1) {
    count = (count + 1) / 2;
    ++height;
  }
  return height + 1;
}

// Folds leaf value v into stack[0, height) (height = values held); returns the new
// height. After the last leaf, stack[0] is the tree's value.
GOLDEN_INLINE int tree_fold_leaf(float* stack, int height, float v, int merges) {
  for (int m = 0; m < merges; ++m) v = stack[--height] + v;
  stack[height] = v;
  return height + 1;
}

// ---- Every gradient is the same contraction with other operands. ----
// C[m, n] = sum_k A(m, k) B(k, n) over k in [0, k_len); where A and B live:
enum class LinearALayout : std::int32_t {
  row_major,  // A(m, k) = a[m * lda + k]
  col_major,  // A(m, k) = a[k * lda + m]
  ones,       // A(m, k) = 1 (a is unused): C is the canonical sum of B's column
};
enum class LinearBLayout : std::int32_t {
  output_rows,  // B(k, n) = b[n * ldb + k]  (the weight in the forward)
  k_rows,       // B(k, n) = b[k * ldb + n]
};

template <class T>
struct LinearContraction {
  const T* a;
  std::int64_t lda;
  LinearALayout a_layout;
  const T* b;
  std::int64_t ldb;
  LinearBLayout b_layout;
  std::int64_t rows;  // m
  std::int64_t cols;  // n
  std::int64_t k_len;
};

template <class T>
GOLDEN_INLINE float linear_a_at(const LinearContraction<T>& c, std::int64_t m, std::int64_t k) {
  if (c.a_layout == LinearALayout::ones) return 1.0f;
  return to_float(c.a_layout == LinearALayout::row_major ? c.a[m * c.lda + k] : c.a[k * c.lda + m]);
}

template <class T>
GOLDEN_INLINE float linear_b_at(const LinearContraction<T>& c, std::int64_t k, std::int64_t n) {
  return to_float(c.b_layout == LinearBLayout::output_rows ? c.b[n * c.ldb + k] : c.b[k * c.ldb + n]);
}

// y[m, n] = sum_k x[m, k] w[n, k]
template <class T>
GOLDEN_INLINE LinearContraction<T> linear_forward_contraction(const LinearForwardProblem& p) {
  return {static_cast<const T*>(p.x), p.in_features, LinearALayout::row_major,
          static_cast<const T*>(p.weight), p.in_features, LinearBLayout::output_rows,
          p.rows, p.out_features, p.in_features};
}

// dx[m, k] = sum_n g[m, n] w[n, k]: row-local, contraction over out_features.
template <class T>
GOLDEN_INLINE LinearContraction<T> linear_dx_contraction(const LinearBackwardProblem& p) {
  return {static_cast<const T*>(p.grad_out), p.out_features, LinearALayout::row_major,
          static_cast<const T*>(p.weight), p.in_features, LinearBLayout::k_rows,
          p.rows, p.in_features, p.out_features};
}

// dweight[n, k] = sum_m g[m, n] x[m, k]: contraction over the rows.
template <class T>
GOLDEN_INLINE LinearContraction<T> linear_dweight_contraction(const LinearBackwardProblem& p) {
  return {static_cast<const T*>(p.grad_out), p.out_features, LinearALayout::col_major,
          static_cast<const T*>(p.x), p.in_features, LinearBLayout::k_rows,
          p.out_features, p.in_features, p.rows};
}

// dbias[n] = sum_m 1 * g[m, n]: fma(1, g, acc) is exactly acc + g, so this is the
// column sum in the canonical order.
template <class T>
GOLDEN_INLINE LinearContraction<T> linear_dbias_contraction(const LinearBackwardProblem& p) {
  return {nullptr, 0, LinearALayout::ones, static_cast<const T*>(p.grad_out), p.out_features,
          LinearBLayout::k_rows, 1, p.out_features, p.rows};
}

// The value the forward stores for output column n: the contraction plus the bias
// (one fp32 add), rounded once to TOut.
template <class TOut, class T>
GOLDEN_INLINE TOut linear_output(float sum, const T* bias, std::int64_t n) {
  return from_float<TOut>(canonical_nan(bias != nullptr ? sum + to_float(bias[n]) : sum));
}

// ---- Sharding (T8): which contraction ranges reproduce the single-device tree. ----
// Splitting the blocks and the shards together, each by the tree's rule
// (ceil | floor), makes every shard one node of the tree, so the shards' own
// trees are subtrees and the balanced tree over the shard values is the rest of
// the single-device tree. Shard s of `shards` starts at this block index
// (shards <= block count); equal splits when the block count is a multiple of
// a power-of-two shard count.
GOLDEN_INLINE std::int64_t linear_shard_first_block(std::int64_t shard, std::int64_t shards,
                                                    std::int64_t blocks) {
  std::int64_t first_block = 0;
  while (shards > 1) {
    const std::int64_t left_shards = (shards + 1) / 2;
    const std::int64_t left_blocks = (blocks + 1) / 2;
    if (shard < left_shards) {
      shards = left_shards;
      blocks = left_blocks;
    } else {
      shard -= left_shards;
      shards -= left_shards;
      first_block += left_blocks;
      blocks -= left_blocks;
    }
  }
  return first_block;
}

GOLDEN_CORE_END
