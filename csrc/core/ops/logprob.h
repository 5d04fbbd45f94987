// Log-probabilities over a vocabulary row: log_softmax, the log-probability
// of target tokens, entropy, their gradients, and the vocab-parallel pieces.
// Canonical order: the row is cut into chunks of kRowBlock logits (reduce.h);
// a chunk's partial is (max, sum of exp(x - max)), the max and the sum each
// reduced in the 32-lane order; chunk partials merge by the balanced tree with
// merge_lse_partials. Every backend and every shard gets its numerics here.
//
// Non-finite policy (a row's values never leak into another row):
//  - a -inf logit is a masked entry: probability 0, log_softmax -inf;
//  - a row of only -inf has no distribution: lse = -inf, and log_softmax,
//    token logprob, entropy and their gradients are NaN (as in PyTorch);
//  - a NaN or +inf logit makes the row's lse, outputs and gradients NaN;
//  - every NaN written is the positive quiet NaN 0x7FC00000 (payloads are not
//    propagated: GPU arithmetic does not keep them, so bits could not agree).
#pragma once

#include <cstdint>

#include "../dtype.h"
#include "../math.h"
#include "../nan_policy.h"
#include "../reduce.h"
#include "../types.h"

namespace golden {

inline constexpr std::int64_t kDefaultIgnoreIndex = -100;

// Target ids as the caller stores them, int64 or int32, read as int64.
struct TargetIds {
  const void* data;
  bool is_int32;
  GOLDEN_INLINE std::int64_t operator[](std::int64_t i) const {
    return is_int32 ? static_cast<const std::int32_t*>(data)[i] : static_cast<const std::int64_t*>(data)[i];
  }
};

// Problems as every backend receives them: dense row-major logits
// [rows, vocab], one target id (int64 or int32) and one fp32 gradient per row,
// already validated by the bindings (ids in range or equal to ignore_index).
struct LogSoftmaxForwardProblem {
  const void* logits;
  void* out;
  DType dtype;      // of logits
  DType out_dtype;  // dtype or f32
  std::int64_t rows;
  std::int64_t vocab;
};

struct LogSoftmaxBackwardProblem {
  const void* grad_out;
  const void* logits;
  void* grad_logits;
  DType dtype;           // of logits
  DType grad_out_dtype;  // dtype or f32
  DType grad_dtype;      // of grad_logits: dtype or f32
  std::int64_t rows;
  std::int64_t vocab;
};

struct TokenLogprobForwardProblem {
  const void* logits;
  TargetIds target_ids;
  float* logprob;
  DType dtype;
  std::int64_t rows;
  std::int64_t vocab;
  std::int64_t ignore_index;
};

struct TokenLogprobBackwardProblem {
  const float* grad_out;
  const void* logits;
  TargetIds target_ids;
  void* grad_logits;
  DType dtype;
  DType grad_dtype;  // dtype or f32
  std::int64_t rows;
  std::int64_t vocab;
  std::int64_t ignore_index;
};

struct EntropyForwardProblem {
  const void* logits;
  float* entropy;
  DType dtype;
  std::int64_t rows;
  std::int64_t vocab;
};

struct EntropyBackwardProblem {
  const float* grad_out;
  const void* logits;
  void* grad_logits;
  DType dtype;
  DType grad_dtype;  // dtype or f32
  std::int64_t rows;
  std::int64_t vocab;
};

// Vocab parallelism: each shard holds logits [rows, shard_vocab] for global
// ids [vocab_start, vocab_start + shard_vocab).
struct LsePartialsProblem {
  const void* logits;
  float* partials;  // [rows, 2]: (max, sum)
  DType dtype;
  std::int64_t rows;
  std::int64_t vocab;
};

struct MergeLsePartialsProblem {
  const float* partials;  // [shards, rows, 2], shards in vocabulary order
  float* merged;          // [rows, 2]
  std::int64_t shards;
  std::int64_t rows;
};

// The entropy's shard partials: (max, sum, shifted) per row, merged by the same tree.
struct EntropyPartialsProblem {
  const void* logits;
  float* partials;  // [rows, 3]: (max, sum, shifted)
  DType dtype;
  std::int64_t rows;
  std::int64_t vocab;
};

struct MergeEntropyPartialsProblem {
  const float* partials;  // [shards, rows, 3], shards in vocabulary order
  float* merged;          // [rows, 3], or nullptr: not wanted
  float* entropy;         // [rows], or nullptr: not wanted
  std::int64_t shards;
  std::int64_t rows;
};

struct TargetLogitsProblem {
  const void* logits;  // the shard's [rows, shard_vocab]
  TargetIds target_ids;
  float* target_logits;  // the logit, or -0.0 where the shard does not hold the target
  DType dtype;
  std::int64_t rows;
  std::int64_t shard_vocab;
  std::int64_t vocab_start;
  std::int64_t vocab_size;  // of the whole vocabulary: ids are validated against it
  std::int64_t ignore_index;
};

struct LogprobFromPartialsProblem {
  const float* target_logits;
  const float* partials;  // [rows, 2], merged over all shards
  TargetIds target_ids;
  float* logprob;
  std::int64_t rows;
  std::int64_t ignore_index;
};

// Fused lm_head + token logprob: logprob[r] = log softmax(hidden[r] @ weight^T)[target[r]]
// (and optionally the entropy of that softmax) without the full logits. The
// logits of one vocabulary chunk come from the linear kernels (linear.h order),
// so the result is token_logprob(lm_head.forward_fp32(hidden, weight)) bit for bit.
struct LinearLogprobForwardProblem {
  const void* hidden;  // [rows, hidden_size]
  const void* weight;  // [vocab, hidden_size]
  TargetIds target_ids;
  float* logprob;  // [rows]
  float* entropy;  // [rows], or nullptr: not wanted
  float* lse;      // [rows], or nullptr: not wanted (the backward may take it back)
  // [rows, 3]: each row's merged (max, sum, shifted), the entropy_partials
  // format, for the backward to take back; or nullptr: not wanted.
  float* entropy_partial;
  // [rows, vocab] row-major: the fp32 logits (lm_head.forward_fp32's bits), for
  // the backward to take back; or nullptr: not wanted (never held whole).
  float* logits;
  DType dtype;     // of hidden and weight
  std::int64_t rows;
  std::int64_t hidden_size;
  std::int64_t vocab;
  std::int64_t ignore_index;
};

// Its backward, streamed the same way (the logits are recomputed chunk by
// chunk, or read from the forward's when given): with d = grad_logprob * (onehot - softmax)
// (+ grad_entropy * dH/dlogits), grad_hidden = d @ weight and
// grad_weight = d^T @ hidden, each in the linear op's canonical order, so the
// result is bitwise token_logprob (+ entropy) backward then linear backward.
struct LinearLogprobBackwardProblem {
  const float* grad_logprob;  // [rows]
  const float* grad_entropy;  // [rows], or nullptr: the entropy is not differentiated
  // [rows]: the forward's lse (the same lse_of of the same merged partials the
  // statistics pass computes, hence its bits), or nullptr. [rows, 3]: the
  // forward's entropy_partial (the very merged partials of that pass), or
  // nullptr. Which one replaces the pass: row_stats_source below.
  const float* lse;
  const float* entropy_partial;
  // [rows, vocab]: the forward's fp32 logits (the very bits a recomputation
  // gives), read instead of recomputing them; or nullptr: recomputed.
  const float* logits;
  const void* hidden;  // [rows, hidden_size]
  const void* weight;  // [vocab, hidden_size]
  TargetIds target_ids;
  void* grad_hidden;  // [rows, hidden_size], or nullptr: not wanted
  void* grad_weight;  // [vocab, hidden_size], or nullptr: not wanted
  DType dtype;        // of hidden and weight
  DType grad_dtype;   // of grad_hidden and grad_weight: dtype or f32
  std::int64_t rows;
  std::int64_t hidden_size;
  std::int64_t vocab;
  std::int64_t ignore_index;
};

// What the fused forward and backward share: the operands a backend
// recomputes one vocabulary chunk's logits from.
struct LinearLogprobOperands {
  const void* hidden;
  const void* weight;
  TargetIds target_ids;
  DType dtype;
  std::int64_t rows;
  std::int64_t hidden_size;
  std::int64_t vocab;
};

}  // namespace golden

GOLDEN_CORE_BEGIN

template <class Problem>
GOLDEN_INLINE LinearLogprobOperands linear_logprob_operands(const Problem& p) {
  return {p.hidden, p.weight, p.target_ids, p.dtype, p.rows, p.hidden_size, p.vocab};
}

// A chunk's (or merged chunks') softmax denominator relative to its max.
struct LsePartial {
  float max;
  float sum;  // sum of exp(x - max)
};

// The LsePartial plus what entropy needs; max and sum are bitwise those of
// the LsePartial of the same logits.
struct EntropyPartial {
  float max;
  float sum;
  float shifted;  // sum of exp(x - max) * (x - max), <= 0
};

GOLDEN_INLINE float negative_infinity() { return -math_detail::inf(); }

// The value subtracted before exp: the max, or 0 for an all -inf chunk, whose
// terms are then exp(-inf) = 0 instead of exp(-inf - -inf) = NaN.
GOLDEN_INLINE float exp_shift(float max) { return max == negative_infinity() ? 0.0f : max; }

// Max that skips NaN (a NaN row is caught by its sum instead); identity -inf.
struct MaxSkippingNaN {
  GOLDEN_INLINE float operator()(float acc, float v) const { return v > acc ? v : acc; }
};

// Logit i of a row stored as T.
template <class T>
struct RowLoader {
  const T* row;
  GOLDEN_INLINE float operator()(std::int64_t i) const { return to_float(row[i]); }
};

// RowLoader of a row whose element type is deduced (a backend's row may be
// the stored logits or an fp32 copy of them).
template <class T>
GOLDEN_INLINE RowLoader<T> row_loader(const T* row) {
  return {row};
}

// The row functions take a row worker (reduce.h): SerialRow on the CPU, one
// warp per row on a GPU; every lane of a worker gets the same bits.

template <class Load, class Worker>
GOLDEN_INLINE LsePartial lse_chunk_partial(const Load& load, std::int64_t begin, std::int64_t end,
                                           Worker worker) {
  const float max = worker.reduce_block(
      begin, end, negative_infinity(),
      [&](float acc, std::int64_t i) { return MaxSkippingNaN{}(acc, load(i)); }, MaxSkippingNaN{});
  const float shift = exp_shift(max);
  const float sum = worker.reduce_block(
      begin, end, 0.0f, [&](float acc, std::int64_t i) { return acc + exp_f32(load(i) - shift); },
      AddCombine{});
  return {max, sum};
}

// m = max(m1, m2); s = s_high + s_low * exp(m_low - m). Symmetric in its
// arguments (exp(0) = 1 exactly), and (-inf, 0) is its identity.
struct MergeLse {
  GOLDEN_INLINE LsePartial operator()(LsePartial a, LsePartial b) const {
    const bool a_high = a.max >= b.max;
    const LsePartial high = a_high ? a : b;
    const LsePartial low = a_high ? b : a;
    return {high.max, high.sum + low.sum * exp_f32(low.max - exp_shift(high.max))};
  }
};

template <class Load, class Worker>
GOLDEN_INLINE EntropyPartial entropy_chunk_partial(const Load& load, std::int64_t begin,
                                                   std::int64_t end, Worker worker) {
  const LsePartial lse = lse_chunk_partial(load, begin, end, worker);
  const float shift = exp_shift(lse.max);
  const float shifted = worker.reduce_block(
      begin, end, 0.0f,
      [&](float acc, std::int64_t i) {
        const float d = load(i) - shift;
        const float e = exp_f32(d);
        return e > 0.0f ? fma_rn(e, d, acc) : acc;  // skips masked terms (0 * -inf)
      },
      AddCombine{});
  return {lse.max, lse.sum, shifted};
}

// As MergeLse for (max, sum); the low side's shifted sum is re-based to the
// new max: sum e^(x-m_low) (x - m) = shifted_low + (m_low - m) * sum_low.
struct MergeEntropy {
  GOLDEN_INLINE EntropyPartial operator()(EntropyPartial a, EntropyPartial b) const {
    const bool a_high = a.max >= b.max;
    const EntropyPartial high = a_high ? a : b;
    const EntropyPartial low = a_high ? b : a;
    const float d = low.max - exp_shift(high.max);
    const float scale = exp_f32(d);
    const float low_shifted = scale > 0.0f ? scale * fma_rn(d, low.sum, low.shifted) : 0.0f;
    return {high.max, high.sum + low.sum * scale, high.shifted + low_shifted};
  }
};

GOLDEN_INLINE std::int64_t chunk_end(std::int64_t chunk, std::int64_t n) {
  const std::int64_t end = (chunk + 1) * kRowBlock;
  return end < n ? end : n;
}

// The canonical partial of a row (or of one shard's slice of it) of n >= 1 logits.
template <class Load, class Worker = SerialRow>
GOLDEN_INLINE LsePartial lse_row_partial(const Load& load, std::int64_t n, Worker worker = {}) {
  return tree_reduce_partials<LsePartial>(
      0, ceil_div(n, kRowBlock),
      [&](std::int64_t c) { return lse_chunk_partial(load, c * kRowBlock, chunk_end(c, n), worker); },
      MergeLse{});
}

template <class Load, class Worker = SerialRow>
GOLDEN_INLINE EntropyPartial entropy_row_partial(const Load& load, std::int64_t n, Worker worker = {}) {
  return tree_reduce_partials<EntropyPartial>(
      0, ceil_div(n, kRowBlock),
      [&](std::int64_t c) {
        return entropy_chunk_partial(load, c * kRowBlock, chunk_end(c, n), worker);
      },
      MergeEntropy{});
}

// Shard partials [shards] (vocabulary order) merged by the balanced tree: the
// single-device partial when the shards are whole subtrees of the chunk tree.
GOLDEN_INLINE LsePartial merge_shard_partials(const float* partials, std::int64_t shards,
                                              std::int64_t shard_stride) {
  return tree_reduce_partials<LsePartial>(
      0, shards,
      [&](std::int64_t s) {
        const float* p = partials + s * shard_stride;
        return LsePartial{p[0], p[1]};
      },
      MergeLse{});
}

// As merge_shard_partials, for the entropy's (max, sum, shifted) partials.
GOLDEN_INLINE EntropyPartial merge_shard_entropy_partials(const float* partials, std::int64_t shards,
                                                          std::int64_t shard_stride) {
  return tree_reduce_partials<EntropyPartial>(
      0, shards,
      [&](std::int64_t s) {
        const float* p = partials + s * shard_stride;
        return EntropyPartial{p[0], p[1], p[2]};
      },
      MergeEntropy{});
}

GOLDEN_INLINE float lse_of(LsePartial p) { return p.max + log_f32(p.sum); }

// H = -sum p log p = log(sum) - shifted / sum: both terms >= 0, no cancellation.
GOLDEN_INLINE float entropy_of(EntropyPartial p) {
  return canonical_nan(log_f32(p.sum) - div_rn(p.shifted, p.sum));
}

// Row `row` of a [rows, 3] array of (max, sum, shifted) partials. They are
// outputs: a NaN is stored canonical (a GPU's arithmetic NaN has other bits
// than a CPU's).
GOLDEN_INLINE void store_entropy_partial(float* partials, std::int64_t row, EntropyPartial p) {
  partials[3 * row] = canonical_nan(p.max);
  partials[3 * row + 1] = canonical_nan(p.sum);
  partials[3 * row + 2] = canonical_nan(p.shifted);
}

GOLDEN_INLINE EntropyPartial load_entropy_partial(const float* partials, std::int64_t row) {
  return {partials[3 * row], partials[3 * row + 1], partials[3 * row + 2]};
}

// One row of merge_entropy_partials: the merged (max, sum, shifted) triple
// and the entropy, each where the problem asks for it.
GOLDEN_INLINE void merge_entropy_partials_row(const MergeEntropyPartialsProblem& p, std::int64_t row) {
  const EntropyPartial merged = merge_shard_entropy_partials(p.partials + 3 * row, p.shards, 3 * p.rows);
  if (p.merged != nullptr) store_entropy_partial(p.merged, row, merged);
  if (p.entropy != nullptr) p.entropy[row] = entropy_of(merged);
}

// log p(target) = x_target - lse; 0 for an ignored target. Shared by the
// single-device and the vocab-parallel paths, which therefore agree.
GOLDEN_INLINE float logprob_from_partial(float target_logit, LsePartial p, std::int64_t target,
                                         std::int64_t ignore_index) {
  if (target == ignore_index) return 0.0f;
  return canonical_nan(target_logit - lse_of(p));
}

// ---- Rows, as the backends call them --------------------------------------------------

// Row functions write the worker's share of the row: elements first(),
// first() + kStep, ...
template <class T, class Worker = SerialRow>
GOLDEN_INLINE float row_lse(const T* logits, std::int64_t vocab, Worker worker = {}) {
  return lse_of(lse_row_partial(RowLoader<T>{logits}, vocab, worker));
}

// The worker's share of n log_softmax outputs of a row whose lse is known:
// any piece of a row gives the bits of the whole row's loop.
template <class T, class TOut, class Worker = SerialRow>
GOLDEN_INLINE void log_softmax_forward_span(const T* logits, TOut* out, std::int64_t n, float lse,
                                            Worker worker = {}) {
  for (std::int64_t i = worker.first(); i < n; i += Worker::kStep) {
    out[i] = from_float<TOut>(canonical_nan(to_float(logits[i]) - lse));
  }
}

template <class T, class TOut, class Worker = SerialRow>
GOLDEN_INLINE void log_softmax_forward_row(const T* logits, TOut* out, std::int64_t vocab,
                                           Worker worker = {}) {
  log_softmax_forward_span(logits, out, vocab, row_lse(logits, vocab, worker), worker);
}

// sum_j g_j of a row's incoming gradients, in the canonical order.
template <class G, class Worker = SerialRow>
GOLDEN_INLINE float row_grad_sum(const G* grad_out, std::int64_t vocab, Worker worker = {}) {
  return canonical_row_sum(
      vocab, [&](float acc, std::int64_t i) { return acc + to_float(grad_out[i]); }, worker);
}

// The worker's share of n log_softmax gradients of a row whose lse and
// gradient sum G are known: dx_i = g_i - p_i * G, p_i = exp(x_i - lse), as
// fma(-p_i, G, g_i). Any piece of a row gives the bits of the whole row's loop.
template <class T, class G, class TOut, class Worker = SerialRow>
GOLDEN_INLINE void log_softmax_backward_span(const G* grad_out, const T* logits, TOut* grad_logits,
                                             std::int64_t n, float lse, float grad_sum, Worker worker = {}) {
  for (std::int64_t i = worker.first(); i < n; i += Worker::kStep) {
    const float p = exp_f32(to_float(logits[i]) - lse);
    grad_logits[i] = from_float<TOut>(canonical_nan(fma_rn(-p, grad_sum, to_float(grad_out[i]))));
  }
}

template <class T, class G, class TOut, class Worker = SerialRow>
GOLDEN_INLINE void log_softmax_backward_row(const G* grad_out, const T* logits, TOut* grad_logits,
                                            std::int64_t vocab, Worker worker = {}) {
  log_softmax_backward_span(grad_out, logits, grad_logits, vocab, row_lse(logits, vocab, worker),
                            row_grad_sum(grad_out, vocab, worker), worker);
}

GOLDEN_INLINE bool target_in_range(std::int64_t target, std::int64_t vocab) {
  return target >= 0 && target < vocab;
}

template <class T, class Worker = SerialRow>
GOLDEN_INLINE float token_logprob_row(const T* logits, std::int64_t vocab, std::int64_t target,
                                      std::int64_t ignore_index, Worker worker = {}) {
  if (target == ignore_index) return 0.0f;
  if (!target_in_range(target, vocab)) return math_detail::invalid_nan();  // rejected earlier
  const LsePartial p = lse_row_partial(RowLoader<T>{logits}, vocab, worker);
  return logprob_from_partial(to_float(logits[target]), p, target, ignore_index);
}

// One element of the token logprob gradient, g * ([i == target] - p_i): shared
// by token_logprob_backward_row and the fused linear_logprob backward.
GOLDEN_INLINE_ALWAYS float token_logprob_grad(float grad, float x, float lse, bool is_target) {
  const float p = exp_f32(x - lse);
  return canonical_nan(grad * ((is_target ? 1.0f : 0.0f) - p));
}

// Whether a row has a token logprob gradient: not for an ignored target (all
// zero) nor an out-of-range one (all NaN; rejected before the kernels run).
GOLDEN_INLINE bool token_logprob_has_grad(std::int64_t target, std::int64_t vocab, std::int64_t ignore_index) {
  return target != ignore_index && target_in_range(target, vocab);
}

// The worker's share of a row's gradient without one (see token_logprob_has_grad).
template <class TOut, class Worker = SerialRow>
GOLDEN_INLINE void token_logprob_fill_row(TOut* grad_logits, std::int64_t vocab, std::int64_t target,
                                          std::int64_t ignore_index, Worker worker = {}) {
  const TOut fill = from_float<TOut>(target == ignore_index ? 0.0f : math_detail::invalid_nan());
  for (std::int64_t i = worker.first(); i < vocab; i += Worker::kStep) grad_logits[i] = fill;
}

// The worker's share of n gradients g * ([i == target] - p_i) of a row whose
// lse is known; target counts from the span's first element (it may lie
// outside the span). Any piece of a row gives the bits of the whole row's loop.
template <class T, class TOut, class Worker = SerialRow>
GOLDEN_INLINE void token_logprob_backward_span(float grad, const T* logits, TOut* grad_logits, std::int64_t n,
                                               float lse, std::int64_t target, Worker worker = {}) {
  for (std::int64_t i = worker.first(); i < n; i += Worker::kStep) {
    grad_logits[i] = from_float<TOut>(token_logprob_grad(grad, to_float(logits[i]), lse, i == target));
  }
}

// dx_i = g * ([i == target] - p_i); all zero for an ignored target.
template <class T, class TOut, class Worker = SerialRow>
GOLDEN_INLINE void token_logprob_backward_row(float grad, const T* logits, TOut* grad_logits,
                                              std::int64_t vocab, std::int64_t target,
                                              std::int64_t ignore_index, Worker worker = {}) {
  if (!token_logprob_has_grad(target, vocab, ignore_index)) {
    token_logprob_fill_row(grad_logits, vocab, target, ignore_index, worker);
    return;
  }
  token_logprob_backward_span(grad, logits, grad_logits, vocab, row_lse(logits, vocab, worker), target, worker);
}

template <class T, class Worker = SerialRow>
GOLDEN_INLINE float entropy_row(const T* logits, std::int64_t vocab, Worker worker = {}) {
  return entropy_of(entropy_row_partial(RowLoader<T>{logits}, vocab, worker));
}

// What a row's entropy gradient needs besides its logits (see entropy_backward_row).
struct EntropyGradRow {
  float grad;
  float lse;
  float mean;   // shifted / sum: the p-weighted mean of x - shift
  float shift;
  bool row_nan;  // the entropy or its incoming gradient is NaN
};

GOLDEN_INLINE EntropyGradRow entropy_grad_row(EntropyPartial e, float grad) {
  const bool row_nan = math_detail::is_nan(entropy_of(e)) || math_detail::is_nan(grad);
  return {grad, lse_of({e.max, e.sum}), div_rn(e.shifted, e.sum), exp_shift(e.max), row_nan};
}

// One element of the entropy gradient: shared by entropy_backward_row and the
// fused linear_logprob backward.
GOLDEN_INLINE_ALWAYS float entropy_grad(float x, const EntropyGradRow& row) {
  const float p = exp_f32(x - row.lse);
  float dx = x == negative_infinity() ? 0.0f : row.grad * (p * (row.mean - (x - row.shift)));
  dx = row.row_nan ? math_detail::invalid_nan() : dx;
  return canonical_nan(dx);
}

// The fused linear_logprob forward streams EntropyPartials (max, sum, shifted)
// when it is asked for the entropy or the entropy partial, else LsePartials.
GOLDEN_INLINE bool linear_logprob_streams_entropy(const LinearLogprobForwardProblem& p) {
  return p.entropy != nullptr || p.entropy_partial != nullptr;
}

GOLDEN_INLINE void write_entropy_outputs(const LinearLogprobForwardProblem&, std::int64_t, const LsePartial&) {}

GOLDEN_INLINE void write_entropy_outputs(const LinearLogprobForwardProblem& p, std::int64_t row,
                                         const EntropyPartial& merged) {
  if (p.entropy != nullptr) p.entropy[row] = entropy_of(merged);
  if (p.entropy_partial != nullptr) store_entropy_partial(p.entropy_partial, row, merged);
}

// One row of the fused forward's outputs from the row's merged partial over
// the vocabulary and its target logit.
template <class Partial>
GOLDEN_INLINE void linear_logprob_outputs(const LinearLogprobForwardProblem& p, std::int64_t row,
                                          const Partial& merged, float target_logit) {
  p.logprob[row] = logprob_from_partial(target_logit, LsePartial{merged.max, merged.sum}, p.target_ids[row],
                                        p.ignore_index);
  write_entropy_outputs(p, row, merged);
  if (p.lse != nullptr) p.lse[row] = canonical_nan(lse_of({merged.max, merged.sum}));
}

// An element of the fused backward's grad_hidden or grad_weight from its fp32
// tree sum, in the output dtype. The NaN is made canonical here: the tree's
// additions return another NaN on a GPU (0x7FFFFFFF) than on x86.
template <class TOut>
GOLDEN_INLINE TOut linear_logprob_grad_output(float sum) {
  return from_float<TOut>(canonical_nan(sum));
}

// Where the fused backward gets each row's statistics: the forward's entropy
// partial, the forward's lse (only without grad_entropy, whose gradient needs
// more), or a statistics pass over the vocabulary streaming EntropyPartials
// (with grad_entropy) or LsePartials. Every source gives the same bits.
enum class RowStatsSource { forward_partial, forward_lse, entropy_pass, lse_pass };

GOLDEN_INLINE RowStatsSource row_stats_source(const LinearLogprobBackwardProblem& p) {
  if (p.entropy_partial != nullptr) return RowStatsSource::forward_partial;
  if (p.grad_entropy != nullptr) return RowStatsSource::entropy_pass;
  return p.lse != nullptr ? RowStatsSource::forward_lse : RowStatsSource::lse_pass;
}

// A row's backward statistics from its merged partial over the vocabulary:
// its lse, and with grad_entropy its entropy gradient row.
GOLDEN_INLINE void linear_logprob_row_stats(const float*, std::int64_t row, const LsePartial& merged, float* lse,
                                            EntropyGradRow*) {
  lse[row] = lse_of(merged);
}

GOLDEN_INLINE void linear_logprob_row_stats(const float* grad_entropy, std::int64_t row,
                                            const EntropyPartial& merged, float* lse,
                                            EntropyGradRow* entropy_rows) {
  lse[row] = lse_of({merged.max, merged.sum});
  if (grad_entropy != nullptr) entropy_rows[row] = entropy_grad_row(merged, grad_entropy[row]);
}

// The same from the forward's entropy_partial (the very merged partial the
// statistics pass computes, so the same bits).
GOLDEN_INLINE void linear_logprob_saved_row_stats(const LinearLogprobBackwardProblem& p, std::int64_t row,
                                                  float* lse, EntropyGradRow* entropy_rows) {
  linear_logprob_row_stats(p.grad_entropy, row, load_entropy_partial(p.entropy_partial, row), lse, entropy_rows);
}

// The fused linear_logprob backward's logit gradient with an entropy output:
// the token logprob's gradient token_grad of logit x plus the entropy's, one
// fp32 add (what token_logprob.backward + entropy.backward give, added in fp32).
GOLDEN_INLINE float add_entropy_grad(float token_grad, float x, const EntropyGradRow& row) {
  return token_grad + entropy_grad(x, row);
}

// The worker's share of n entropy gradients of a row whose statistics are
// known. Any piece of a row gives the bits of the whole row's loop. The
// statistics come by value: through a reference the compiler must assume the
// outputs may overwrite them and reloads them per element, unvectorised.
template <class T, class TOut, class Worker = SerialRow>
GOLDEN_INLINE void entropy_backward_span(const T* logits, TOut* grad_logits, std::int64_t n,
                                         EntropyGradRow row, Worker worker = {}) {
  for (std::int64_t i = worker.first(); i < n; i += Worker::kStep) {
    grad_logits[i] = from_float<TOut>(entropy_grad(to_float(logits[i]), row));
  }
}

// A row's entropy gradient statistics from its logits.
template <class T, class Worker = SerialRow>
GOLDEN_INLINE EntropyGradRow row_entropy_grad(const T* logits, std::int64_t vocab, float grad, Worker worker = {}) {
  return entropy_grad_row(entropy_row_partial(RowLoader<T>{logits}, vocab, worker), grad);
}

// dH/dx_i = -p_i (log p_i + H) = p_i (mean - (x_i - m)), mean = shifted / sum
// (the p-weighted mean of x - m); masked (-inf) entries get 0.
template <class T, class TOut, class Worker = SerialRow>
GOLDEN_INLINE void entropy_backward_row(float grad, const T* logits, TOut* grad_logits,
                                        std::int64_t vocab, Worker worker = {}) {
  entropy_backward_span(logits, grad_logits, vocab, row_entropy_grad(logits, vocab, grad, worker), worker);
}

template <class T>
GOLDEN_INLINE float shard_target_logit(const T* shard_row, std::int64_t shard_vocab,
                                       std::int64_t vocab_start, std::int64_t target,
                                       std::int64_t ignore_index) {
  const std::int64_t local = target - vocab_start;
  if (target == ignore_index || !target_in_range(local, shard_vocab)) return -0.0f;
  return to_float(shard_row[local]);
}

GOLDEN_CORE_END
