// Fused lm_head + token logprob (+ entropy) on the CPU, forward and backward,
// without the full logits: the vocabulary streams in chunks (core kRowBlock)
// whose fp32 logits come from this instruction set's linear kernel (the bits of
// lm_head.forward_fp32). Forward: each row folds a chunk into its chunk partial,
// partials merge by the canonical tree; the logits are left in a caller's buffer
// when asked. Backward: each row's lse is the forward's (when given) or a
// statistics pass's; the logits are the forward's (when given) or recomputed
// (once, and kept, when they fit), turned into their gradient element by element, and
// contracted by the linear backward kernel one K-block at a time, the block
// partials folded into the linear op's own tree. All arithmetic is in
// csrc/core/ops/linear.h and csrc/core/ops/logprob.h.
#include "../core/ops/linear.h"
#include "../core/ops/logprob.h"
#include "kernels.h"
#include "scratch.h"
#include "target.h"

GOLDEN_CPU_BEGIN
namespace {

using Index = std::int64_t;

// Rows per tile: the tile's logits for one chunk (kTokenTile x kRowBlock fp32,
// 4 MiB) are all the fused op holds of the logits. It is also one K-block of the
// weight gradient's contraction over tokens, so a tile's weight-gradient term
// is exactly one block partial of linear backward's tree.
constexpr Index kTokenTile = 256;
static_assert(kTokenTile == kLinearKBlock, "a token tile must be one K-block of the weight gradient");

// Vocabulary rows per step of the weight-gradient pass (bounds its tree stacks,
// 16 MiB per level at hidden 4096). Changes no bit.
constexpr Index kWeightSlice = 1024;

// When the weight gradient's tree stacks over the whole vocabulary take at most
// this many floats (32 MiB), the hidden pass also folds each token tile's weight
// gradient from the logits it recomputes anyway, and the weight pass (a second
// recomputation of every logit) is skipped. Changes no bit.
constexpr Index kMaxWeightStackFloats = Index{1} << 23;

// When all rows' logits take at most this many floats (32 MiB), the backward
// keeps the ones its row statistics computed and reads them back instead of
// recomputing them (the same linear forward, hence the same bits). Changes no bit.
constexpr Index kMaxCachedLogits = Index{1} << 23;

// Where a vocabulary stream gets and leaves all rows' logits ([rows, vocab]
// row-major, each nullable): `saved` is read instead of computing them (the
// forward's: the same bits), `keep` receives them.
struct LogitStore {
  const float* saved;
  float* keep;
};

Index min_index(Index a, Index b) { return a < b ? a : b; }

void copy_floats(const float* src, Index count, float* dst) {
  for (Index i = 0; i < count; ++i) dst[i] = src[i];
}

// Runs row_body(r) for r in [0, rows), rows grouped into tasks over the threads.
template <class RowBody>
void for_each_tile_row(Index rows, int num_threads, const RowBody& row_body) {
  const Index per_task = items_per_task(rows, num_threads, 1);
  auto body = [&](Index task) {
    const Index end = min_index((task + 1) * per_task, rows);
    for (Index r = task * per_task; r < end; ++r) row_body(r);
  };
  parallel_tasks(core::ceil_div(rows, per_task), num_threads, body);
}

// Runs body(i) for i in [0, count), in fixed slices over the threads (elementwise work).
template <class Body>
void for_each_element(Index count, int num_threads, const Body& element) {
  const Index per_task = items_per_task(count, num_threads, 1 << 15);
  auto body = [&](Index task) {
    const Index end = min_index((task + 1) * per_task, count);
    for (Index i = task * per_task; i < end; ++i) element(i);
  };
  parallel_tasks(core::ceil_div(count, per_task), num_threads, body);
}

// Select<b, A, B>::type is A if b else B (no <type_traits> here: see target.h).
template <bool kFirst, class A, class B>
struct Select {
  using type = A;
};
template <class A, class B>
struct Select<false, A, B> {
  using type = B;
};

template <bool kWithEntropy>
using PartialOf = typename Select<kWithEntropy, core::EntropyPartial, core::LsePartial>::type;

template <bool kWithEntropy>
using MergeOf = typename Select<kWithEntropy, core::MergeEntropy, core::MergeLse>::type;

// The per-chunk partial, as token_logprob (or entropy) computes it for that chunk.
template <bool kWithEntropy, class Load>
PartialOf<kWithEntropy> chunk_partial(const Load& load, Index begin, Index end) {
  if constexpr (kWithEntropy) {
    return core::entropy_chunk_partial(load, begin, end, core::SerialRow{});
  } else {
    return core::lse_chunk_partial(load, begin, end, core::SerialRow{});
  }
}

// The linear kernels a fused call runs on: this instruction set's fast ones over
// the threads, or the scalar reference on one thread.
struct FastLinear {
  int num_threads;
  void forward(const LinearForwardProblem& p) const { linear_forward(p, num_threads); }
  void backward(const LinearBackwardProblem& p) const { linear_backward(p, num_threads); }
};
struct ReferenceLinear {
  int num_threads = 1;
  void forward(const LinearForwardProblem& p) const { linear_forward_reference(p); }
  void backward(const LinearBackwardProblem& p) const { linear_backward_reference(p); }
};

// out[n, width] = fp32 logits of rows [row0, row0 + n) for vocabulary [begin, begin + width).
template <class T, class Linear>
void chunk_logits(const LinearLogprobOperands& p, const Linear& linear, Index row0, Index n, Index begin, Index width,
                  float* out) {
  const T* hidden = static_cast<const T*>(p.hidden) + row0 * p.hidden_size;
  const T* weight = static_cast<const T*>(p.weight) + begin * p.hidden_size;
  linear.forward(LinearForwardProblem{hidden, weight, nullptr, out, p.dtype, DType::f32, n, p.hidden_size, width});
}

// ---- Forward: every row's merged partial over the whole vocabulary. ----

// Calls finish(row, merged partial, target logit) once per row, the logits
// taken from and left in `store` (see LogitStore).
template <class T, bool kWithEntropy, class Linear, class Finish>
void stream_row_partials(const LinearLogprobOperands& p, const Linear& linear, const Finish& finish,
                         LogitStore store) {
  using Partial = PartialOf<kWithEntropy>;
  const Index chunks = core::ceil_div(p.vocab, core::kRowBlock);
  const Index tile = min_index(p.rows, kTokenTile);
  ScratchBuffer logits(store.saved != nullptr ? 0 : static_cast<std::size_t>(tile * core::kRowBlock));
  ScratchBuffer partial_floats(static_cast<std::size_t>(tile * chunks) * sizeof(Partial) / sizeof(float));
  ScratchBuffer target_logits(static_cast<std::size_t>(tile));
  Partial* partials = reinterpret_cast<Partial*>(partial_floats.data());

  for (Index row0 = 0; row0 < p.rows; row0 += tile) {
    const Index rows = min_index(p.rows - row0, tile);
    for (Index r = 0; r < rows; ++r) target_logits.data()[r] = 0.0f;  // ignored targets read no logit
    for (Index c = 0; c < chunks; ++c) {
      const Index begin = c * core::kRowBlock;
      const Index end = core::chunk_end(c, p.vocab);
      const float* chunk = logits.data();  // [rows, stride]
      Index stride = end - begin;
      if (store.saved != nullptr) {
        chunk = store.saved + row0 * p.vocab + begin;
        stride = p.vocab;
      } else {
        chunk_logits<T>(p, linear, row0, rows, begin, end - begin, logits.data());
      }
      auto fold_chunk = [&](Index r) {
        const float* row = chunk + r * stride;
        if (store.keep != nullptr) copy_floats(row, end - begin, store.keep + (row0 + r) * p.vocab + begin);
        auto load = [row, begin](Index i) { return row[i - begin]; };
        partials[r * chunks + c] = chunk_partial<kWithEntropy>(load, begin, end);
        const std::int64_t target = p.target_ids[row0 + r];
        if (target >= begin && target < end) target_logits.data()[r] = row[target - begin];
      };
      for_each_tile_row(rows, linear.num_threads, fold_chunk);
    }
    auto finish_row = [&](Index r) {
      const Partial merged = core::tree_reduce_partials<Partial>(
          0, chunks, [&](Index c) { return partials[r * chunks + c]; }, MergeOf<kWithEntropy>{});
      finish(row0 + r, merged, target_logits.data()[r]);
    };
    for_each_tile_row(rows, linear.num_threads, finish_row);
  }
}

template <class T, bool kWithEntropy, class Linear>
void fused_forward(const LinearLogprobForwardProblem& p, const Linear& linear) {
  auto finish = [&](Index row, const PartialOf<kWithEntropy>& merged, float target_logit) {
    core::linear_logprob_outputs(p, row, merged, target_logit);
  };
  const LogitStore keep_logits{nullptr, p.logits};
  stream_row_partials<T, kWithEntropy>(core::linear_logprob_operands(p), linear, finish, keep_logits);
}

template <class Linear>
void dispatch_forward(const LinearLogprobForwardProblem& p, const Linear& linear) {
  if (p.rows == 0) return;
  visit_dtype(p.dtype, [&](auto in) {
    using T = decltype(in);
    if (core::linear_logprob_streams_entropy(p)) {
      fused_forward<T, true>(p, linear);
    } else {
      fused_forward<T, false>(p, linear);
    }
  });
}

// ---- Backward ----

// A stack of pending tree values per output element (the streaming fold of
// core::tree_fold_leaf, for whole arrays): leaf values are written into
// next_leaf() in leaf order, fold_leaf() completes the tree nodes that leaf
// ends (left + right), and after the last leaf root() holds the tree's value.
class TreeStacks {
 public:
  TreeStacks(Index leaves, Index floats)
      : leaves_(leaves), floats_(floats), buffer_(static_cast<std::size_t>(core::tree_stack_slots(leaves) * floats)) {}

  void reset() { height_ = 0; }
  float* next_leaf() const { return slot(height_); }
  const float* root() const { return slot(0); }

  void fold_leaf(Index leaf, int num_threads) {
    int top = height_;
    for (int m = core::tree_merges_after_leaf(leaf, leaves_); m > 0; --m, --top) {
      float* left = slot(top - 1);
      const float* right = slot(top);
      for_each_element(floats_, num_threads, [&](Index i) { left[i] = left[i] + right[i]; });
    }
    height_ = top + 1;
  }

 private:
  float* slot(int level) const { return buffer_.data() + level * floats_; }

  Index leaves_;
  Index floats_;
  ScratchBuffer buffer_;
  int height_ = 0;
};

template <class TOut>
void store_zeros(TOut* out, Index count, int num_threads) {
  for_each_element(count, num_threads, [&](Index i) { out[i] = core::from_float<TOut>(0.0f); });
}

template <class TOut>
void store_rounded(const float* values, TOut* out, Index count, int num_threads) {
  for_each_element(count, num_threads, [&](Index i) { out[i] = core::linear_logprob_grad_output<TOut>(values[i]); });
}

// What turns a row's recomputed logits into their gradient: the row's lse (and
// entropy statistics when the entropy output is differentiated).
struct GradRows {
  const LinearLogprobBackwardProblem* p;
  const float* lse;                          // [rows]
  const core::EntropyGradRow* entropy_rows;  // [rows], or nullptr
};

// logits[n, width] (rows from row0, vocabulary from begin) become, in place,
// d = token_logprob_grad (+ entropy_grad): token_logprob backward (+ entropy backward,
// added in fp32) with fp32 output, element for element.
// The row loops below are functions of their own, each one core expression per
// element with no branch, so that the compiler vectorises them (exp_f32 is
// branch-free and always inlined).

// x[i] = token_logprob_grad of a non-target element (the target is patched after).
void non_target_grads(float grad, float lse, float* __restrict x, Index width) {
  for (Index i = 0; i < width; ++i) x[i] = core::token_logprob_grad(grad, x[i], lse, false);
}

// d[i] = the core's add_entropy_grad of d[i] and logit x[i].
void add_entropy_grads(const float* __restrict x, const core::EntropyGradRow row, float* __restrict d,
                       Index width) {
  for (Index i = 0; i < width; ++i) d[i] = core::add_entropy_grad(d[i], x[i], row);
}

// One row of logits_to_grad; `logits` for the entropy term (x itself when there is none).
void row_grad(const GradRows& g, Index row, Index begin, Index width, float* x, float* logits) {
  const LinearLogprobBackwardProblem& p = *g.p;
  const std::int64_t target = p.target_ids[row];
  const bool has_target = target >= begin && target < begin + width;
  const float target_logit = has_target ? x[target - begin] : 0.0f;
  if (target == p.ignore_index) {
    for (Index i = 0; i < width; ++i) x[i] = 0.0f;
  } else {
    non_target_grads(p.grad_logprob[row], g.lse[row], x, width);
    if (has_target) x[target - begin] = core::token_logprob_grad(p.grad_logprob[row], target_logit, g.lse[row], true);
  }
  if (g.entropy_rows != nullptr) add_entropy_grads(logits, g.entropy_rows[row], x, width);
}

void logits_to_grad(const GradRows& g, float* logits, Index row0, Index n, Index begin, Index width,
                    int num_threads) {
  const bool with_entropy = g.entropy_rows != nullptr;
  // The entropy term reads the logits after the token term overwrote them: a row's copy.
  ScratchBuffer copies(with_entropy ? static_cast<std::size_t>(n * width) : 0);
  for_each_tile_row(n, num_threads, [&](Index r) {
    float* x = logits + r * width;
    float* kept = x;
    if (with_entropy) {
      kept = copies.data() + r * width;
      for (Index i = 0; i < width; ++i) kept[i] = x[i];
    }
    row_grad(g, row0 + r, begin, width, x, kept);
  });
}

template <class T, class TOut, class Linear>
struct FusedBackward {
  const LinearLogprobBackwardProblem& p;
  const Linear& linear;
  LinearLogprobOperands operands;
  GradRows grad_rows;
  const float* hidden_f32;  // hidden widened to fp32 (exact): the weight gradient's operand
  const float* saved_logits;  // all rows' logits ([rows, vocab]), or nullptr: recomputed

  Index hidden_size() const { return p.hidden_size; }
  int threads() const { return linear.num_threads; }

  // fp32 gradient of the logits of rows [row0, row0 + n) x vocabulary [begin, begin + width).
  void grad_logits(Index row0, Index n, Index begin, Index width, float* out) const {
    if (saved_logits != nullptr) {
      copy_saved_logits(row0, n, begin, width, out);
    } else {
      chunk_logits<T>(operands, linear, row0, n, begin, width, out);
    }
    logits_to_grad(grad_rows, out, row0, n, begin, width, threads());
  }

  // Weight rows [begin, begin + len) in fp32: the pointer itself for fp32 weights.
  const float* weight_f32(Index begin, Index len, float* buffer) const {
    const T* rows = static_cast<const T*>(p.weight) + begin * p.hidden_size;
    if constexpr (DTypeOf<T>::value == DType::f32) {
      return rows;
    } else {
      convert(rows, p.dtype, buffer, DType::f32, len * p.hidden_size, threads());
      return buffer;
    }
  }

  // out[n, H] = the K-block partial sum_{k in block} d[:, k] weight[k, :] (linear backward's dx).
  void hidden_block(const float* d, const float* weight, Index n, Index len, float* out) const {
    linear.backward(LinearBackwardProblem{d, nullptr, weight, out, nullptr, nullptr, DType::f32, DType::f32, n,
                                          p.hidden_size, len});
  }

  // out[len, H] = the K-block partial sum_{rows r of the tile} d[r, :]^T hidden[r, :] (linear backward's dweight).
  void weight_block(const float* d, Index row0, Index n, Index len, float* out) const {
    linear.backward(LinearBackwardProblem{d, hidden_f32 + row0 * p.hidden_size, nullptr, nullptr, out, nullptr,
                                          DType::f32, DType::f32, n, p.hidden_size, len});
  }

  // Token tiles: the leaves of grad_weight's tree (its contraction over rows).
  Index token_tiles() const { return core::ceil_div(p.rows, kTokenTile); }

  // Whether the hidden pass can hold grad_weight's tree stacks for the whole
  // vocabulary (see kMaxWeightStackFloats); one tile needs none.
  bool weight_fits_hidden_pass() const {
    const Index stack_floats = core::tree_stack_slots(token_tiles()) * p.vocab * p.hidden_size;
    return token_tiles() == 1 || stack_floats <= kMaxWeightStackFloats;
  }

  // Tile by tile: grad_hidden over the vocabulary's K-blocks and, with_weight,
  // grad_weight block by block from the same recomputed logits: stored as it is
  // when all rows are one tile, else each tile's blocks are one leaf of its tree.
  void hidden_pass(bool with_weight) const {
    const Index tile = min_index(p.rows, kTokenTile);
    const Index blocks = core::linear_block_count(p.vocab);
    const bool with_hidden = p.grad_hidden != nullptr;
    const bool weight_tree = with_weight && token_tiles() > 1;
    TreeStacks dw(weight_tree ? token_tiles() : 1, weight_tree ? p.vocab * p.hidden_size : 0);
    TreeStacks dx(with_hidden ? blocks : 1, with_hidden ? tile * p.hidden_size : 0);
    ScratchBuffer d(static_cast<std::size_t>(tile * core::kRowBlock));
    ScratchBuffer d_block(static_cast<std::size_t>(tile * kLinearKBlock));
    const bool widen = DTypeOf<T>::value != DType::f32;
    ScratchBuffer w_block(static_cast<std::size_t>(widen ? kLinearKBlock * p.hidden_size : 0));
    ScratchBuffer dw_block(static_cast<std::size_t>(with_weight && !weight_tree ? kLinearKBlock * p.hidden_size : 0));
    for (Index row0 = 0; row0 < p.rows; row0 += tile) {
      const Index n = min_index(p.rows - row0, tile);
      dx.reset();
      float* dw_leaf = weight_tree ? dw.next_leaf() : nullptr;
      for (Index begin = 0; begin < p.vocab; begin += core::kRowBlock) {
        const Index width = min_index(p.vocab - begin, core::kRowBlock);
        grad_logits(row0, n, begin, width, d.data());
        for (Index k0 = begin; k0 < begin + width; k0 += kLinearKBlock) {
          const Index len = min_index(begin + width - k0, kLinearKBlock);
          copy_columns(d.data(), width, k0 - begin, n, len, d_block.data());
          if (with_hidden) {
            hidden_block(d_block.data(), weight_f32(k0, len, w_block.data()), n, len, dx.next_leaf());
            dx.fold_leaf(k0 / kLinearKBlock, threads());
          }
          if (weight_tree) {
            weight_block(d_block.data(), row0, n, len, dw_leaf + k0 * p.hidden_size);
          } else if (with_weight) {
            weight_block(d_block.data(), row0, n, len, dw_block.data());
            store_rounded(dw_block.data(), static_cast<TOut*>(p.grad_weight) + k0 * p.hidden_size,
                          len * p.hidden_size, threads());
          }
        }
      }
      if (weight_tree) dw.fold_leaf(row0 / tile, threads());
      if (with_hidden) {
        store_rounded(dx.root(), static_cast<TOut*>(p.grad_hidden) + row0 * p.hidden_size, n * p.hidden_size,
                      threads());
      }
    }
    if (weight_tree) {
      store_rounded(dw.root(), static_cast<TOut*>(p.grad_weight), p.vocab * p.hidden_size, threads());
    }
  }

  // Slice by slice of the vocabulary: grad_weight over the token tiles (its K-blocks).
  void weight_pass() const {
    const Index tiles = token_tiles();
    const Index slice = min_index(p.vocab, kWeightSlice);
    TreeStacks dw(tiles, slice * p.hidden_size);
    ScratchBuffer d(static_cast<std::size_t>(kTokenTile * slice));
    for (Index v0 = 0; v0 < p.vocab; v0 += slice) {
      const Index width = min_index(p.vocab - v0, slice);
      dw.reset();
      for (Index t = 0; t < tiles; ++t) {
        const Index row0 = t * kTokenTile;
        const Index n = min_index(p.rows - row0, kTokenTile);
        grad_logits(row0, n, v0, width, d.data());
        weight_block(d.data(), row0, n, width, dw.next_leaf());
        dw.fold_leaf(t, threads());
      }
      store_rounded(dw.root(), static_cast<TOut*>(p.grad_weight) + v0 * p.hidden_size, width * p.hidden_size,
                    threads());
    }
  }

  // out[n, width] = the saved logits of rows [row0, row0 + n) x vocabulary [begin, begin + width).
  void copy_saved_logits(Index row0, Index n, Index begin, Index width, float* out) const {
    for_each_tile_row(n, threads(), [&](Index r) {
      copy_floats(saved_logits + (row0 + r) * p.vocab + begin, width, out + r * width);
    });
  }

  // dst[n, len] = columns [col0, col0 + len) of src[n, width] (a dense grad_out for linear backward).
  static void copy_columns(const float* src, Index width, Index col0, Index n, Index len, float* dst) {
    for (Index r = 0; r < n; ++r) {
      for (Index j = 0; j < len; ++j) dst[r * len + j] = src[r * width + col0 + j];
    }
  }

  void run() const {
    const bool weight_in_hidden_pass = p.grad_weight != nullptr && weight_fits_hidden_pass();
    if (p.grad_hidden != nullptr || weight_in_hidden_pass) hidden_pass(weight_in_hidden_pass);
    if (p.grad_weight != nullptr && !weight_in_hidden_pass) weight_pass();
  }
};

// Each row's lse (and entropy statistics) from one forward stream.
template <class T, bool kWithEntropy, class Linear>
void row_statistics(const LinearLogprobBackwardProblem& p, const Linear& linear, float* lse,
                    core::EntropyGradRow* entropy_rows, LogitStore store) {
  auto finish = [&](Index row, const PartialOf<kWithEntropy>& merged, float) {
    core::linear_logprob_row_stats(p.grad_entropy, row, merged, lse, entropy_rows);
  };
  stream_row_partials<T, kWithEntropy>(core::linear_logprob_operands(p), linear, finish, store);
}

template <class T, class TOut, class Linear>
void fused_backward(const LinearLogprobBackwardProblem& p, const Linear& linear) {
  const bool with_entropy = p.grad_entropy != nullptr;
  // The forward's statistics (bitwise the statistics pass's) skip that pass and its logit cache.
  const core::RowStatsSource source = core::row_stats_source(p);
  const bool forward_lse = source == core::RowStatsSource::forward_lse;
  const bool statistics_pass = source == core::RowStatsSource::entropy_pass || source == core::RowStatsSource::lse_pass;
  ScratchBuffer lse(forward_lse ? 0 : static_cast<std::size_t>(p.rows));
  ScratchBuffer entropy_floats(
      with_entropy ? static_cast<std::size_t>(p.rows) * sizeof(core::EntropyGradRow) / sizeof(float) + 1 : 0);
  auto* entropy_rows = reinterpret_cast<core::EntropyGradRow*>(entropy_floats.data());
  // Without the forward's logits, the statistics pass keeps its own when they fit.
  const bool cache_logits = p.logits == nullptr && statistics_pass && p.rows * p.vocab <= kMaxCachedLogits;
  ScratchBuffer logits(cache_logits ? static_cast<std::size_t>(p.rows * p.vocab) : 0);
  const LogitStore store{p.logits, cache_logits ? logits.data() : nullptr};
  switch (source) {
    case core::RowStatsSource::forward_partial:
      for (Index row = 0; row < p.rows; ++row) core::linear_logprob_saved_row_stats(p, row, lse.data(), entropy_rows);
      break;
    case core::RowStatsSource::entropy_pass:
      row_statistics<T, true>(p, linear, lse.data(), entropy_rows, store);
      break;
    case core::RowStatsSource::lse_pass:
      row_statistics<T, false>(p, linear, lse.data(), entropy_rows, store);
      break;
    case core::RowStatsSource::forward_lse:
      break;
  }
  const float* saved_logits = p.logits != nullptr ? p.logits : store.keep;
  const bool widen = DTypeOf<T>::value != DType::f32 && p.grad_weight != nullptr;
  ScratchBuffer hidden_wide(static_cast<std::size_t>(widen ? p.rows * p.hidden_size : 0));
  if (widen) convert(p.hidden, p.dtype, hidden_wide.data(), DType::f32, p.rows * p.hidden_size, linear.num_threads);
  const float* hidden_f32 = widen ? hidden_wide.data() : static_cast<const float*>(p.hidden);  // read only for grad_weight
  const GradRows grad_rows{&p, forward_lse ? p.lse : lse.data(), with_entropy ? entropy_rows : nullptr};
  const LinearLogprobOperands operands = core::linear_logprob_operands(p);
  FusedBackward<T, TOut, Linear>{p, linear, operands, grad_rows, hidden_f32, saved_logits}.run();
}

template <class Linear>
void dispatch_backward(const LinearLogprobBackwardProblem& p, const Linear& linear) {
  if (p.rows == 0) {
    if (p.grad_weight == nullptr) return;
    visit_in_out(p.dtype, p.grad_dtype, [&](auto, auto out) {  // no tokens: a zero weight gradient
      using TOut = decltype(out);
      store_zeros(static_cast<TOut*>(p.grad_weight), p.vocab * p.hidden_size, linear.num_threads);
    });
    return;
  }
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    fused_backward<decltype(in), decltype(out)>(p, linear);
  });
}

}  // namespace

void linear_logprob_forward(const LinearLogprobForwardProblem& p, int num_threads) {
  dispatch_forward(p, FastLinear{num_threads});
}

void linear_logprob_forward_reference(const LinearLogprobForwardProblem& p) {
  dispatch_forward(p, ReferenceLinear{});
}

void linear_logprob_backward(const LinearLogprobBackwardProblem& p, int num_threads) {
  dispatch_backward(p, FastLinear{num_threads});
}

void linear_logprob_backward_reference(const LinearLogprobBackwardProblem& p) {
  dispatch_backward(p, ReferenceLinear{});
}

GOLDEN_CPU_END
