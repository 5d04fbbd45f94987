// Softmax attention, O = softmax(Q K^T * scale + masks) V, forward and backward,
// for padded [B, H, S, D] and packed (varlen) layouts with GQA.
// Canonical order (docs/ops/attention.md): a query row's result depends only
// on its q row, its valid keys in rank order and the scale. Valid keys are
// counted by rank n = 0, 1, ... and cut into blocks of kAttentionKeyBlock
// ranks; scores are fma chains over d; the online softmax rescales once per
// block and then folds the block's keys in rank order. All numerics are here.
#pragma once

#include <cstdint>

#include "../dtype.h"
#include "../math.h"
#include "../nan_policy.h"
#include "../types.h"

namespace golden {

// Keys per online-softmax block (ranks among the row's valid keys).
inline constexpr std::int64_t kAttentionKeyBlock = 64;
// Largest head_dim the kernels accept (per-row buffers are sized by it).
inline constexpr std::int64_t kAttentionMaxHeadDim = 256;

// A [seq, token, head, d] view: element (b, t, h, d) is at
// data + b * seq_stride + t * token_stride + h * head_stride + d (elements).
struct AttentionInput {
  const void* data;
  std::int64_t seq_stride;
  std::int64_t token_stride;
  std::int64_t head_stride;
};
struct AttentionOutput {
  void* data;
  std::int64_t seq_stride;
  std::int64_t token_stride;
  std::int64_t head_stride;
};

// Where each sequence's queries and keys are, and which keys are valid.
// Padded layout: cu_q == cu_k == nullptr, every sequence has q_len queries and
// k_len keys starting at token 0. Packed layout: sequence b owns tokens
// [cu_q[b], cu_q[b+1]) and [cu_k[b], cu_k[b+1]) (seq_stride 0), and q_len,
// k_len are the total token counts.
struct AttentionLayout {
  std::int64_t num_seqs;
  std::int64_t num_q_heads;
  std::int64_t num_kv_heads;
  std::int64_t head_dim;
  std::int64_t q_len;
  std::int64_t k_len;
  const std::int64_t* cu_q;
  const std::int64_t* cu_k;
  // The most queries and keys of any one sequence: q_len and k_len (padded);
  // packed, read from the offsets (GPU launches size scratch by them).
  std::int64_t longest_q;
  std::int64_t longest_k;
  // Optional (padded layout only): key_index[b * key_stride + n] is the token
  // of sequence b's n-th valid key, ascending, for n < key_count[b]; key_keep
  // [b * key_stride + t] != 0 says token t is valid. nullptr: every key is valid.
  std::int64_t key_stride;
  const std::int32_t* key_index;
  const std::int32_t* key_count;
  const std::uint8_t* key_keep;
  bool causal;
  float scale;
};

struct AttentionForwardProblem {
  AttentionLayout layout;
  AttentionInput q;  // [seq, token, Hq, D]
  AttentionInput k;  // [seq, token, Hkv, D]
  AttentionInput v;
  AttentionOutput out;  // of out_dtype, [seq, token, Hq, D]
  AttentionOutput lse;  // float, nullptr data: not wanted (head_dim ignored)
  DType dtype;          // of q, k, v
  DType out_dtype;      // dtype or f32
};

struct AttentionBackwardProblem {
  AttentionLayout layout;
  AttentionInput grad_out;
  AttentionInput q;
  AttentionInput k;
  AttentionInput v;
  // Optional, from the forward with the same inputs: its output in fp32 and its
  // LSE (float, head_dim ignored). With them pass 1 reads each row's LSE and Di
  // instead of recomputing the forward (the same bits: they are the values the
  // recomputation gives). saved_out.data == nullptr: recompute.
  AttentionInput saved_out;
  AttentionInput saved_lse;
  AttentionOutput dq;
  AttentionOutput dk;
  AttentionOutput dv;
  float* workspace;  // [2, query rows, Hq]: each row's LSE and Di
  DType dtype;       // of grad_out, q, k, v
  DType grad_dtype;  // of dq, dk, dv: dtype or f32
};

}  // namespace golden

GOLDEN_CORE_BEGIN

// ---- Sequence geometry --------------------------------------------------------------

struct AttentionSeq {
  std::int64_t q_begin;  // first query token
  std::int64_t q_len;
  std::int64_t k_begin;
  std::int64_t k_len;
  std::int64_t row_base;  // global query-row index of the first query (workspace rows)
};

GOLDEN_INLINE AttentionSeq attention_seq(const AttentionLayout& l, std::int64_t b) {
  if (l.cu_q == nullptr) return {0, l.q_len, 0, l.k_len, b * l.q_len};
  return {l.cu_q[b], l.cu_q[b + 1] - l.cu_q[b], l.cu_k[b], l.cu_k[b + 1] - l.cu_k[b], l.cu_q[b]};
}

GOLDEN_INLINE std::int64_t attention_total_query_rows(const AttentionLayout& l) {
  return l.cu_q == nullptr ? l.num_seqs * l.q_len : l.q_len;
}

// The token (within the sequence) of sequence b's valid key of rank n.
GOLDEN_INLINE std::int64_t attention_key_token(const AttentionLayout& l, std::int64_t b,
                                               std::int64_t n) {
  return l.key_index == nullptr ? n : l.key_index[b * l.key_stride + n];
}

GOLDEN_INLINE std::int64_t attention_valid_key_total(const AttentionLayout& l, std::int64_t b,
                                                     std::int64_t k_len) {
  return l.key_index == nullptr ? k_len : l.key_count[b];
}

// A causal query row whose own token (i + k_len - q_len) is a masked key is
// padding: it sees no key and contributes nothing to dk, dv.
GOLDEN_INLINE bool attention_query_is_padding(const AttentionLayout& l, std::int64_t b,
                                              const AttentionSeq& s, std::int64_t i) {
  if (!l.causal || l.key_keep == nullptr) return false;
  const std::int64_t own = i + s.k_len - s.q_len;
  return own >= 0 && own < s.k_len && l.key_keep[b * l.key_stride + own] == 0;
}

// How many valid keys query i sees: the valid keys with token <= i + (k_len -
// q_len) when causal, all of them otherwise. The valid keys are ascending, so
// this is a prefix of ranks (found by binary search).
GOLDEN_INLINE std::int64_t attention_visible_keys(const AttentionLayout& l, std::int64_t b,
                                                  const AttentionSeq& s, std::int64_t i) {
  if (attention_query_is_padding(l, b, s, i)) return 0;
  const std::int64_t total = attention_valid_key_total(l, b, s.k_len);
  if (!l.causal) return total;
  const std::int64_t limit = i + s.k_len - s.q_len;
  if (l.key_index == nullptr) return limit < 0 ? 0 : (limit + 1 < total ? limit + 1 : total);
  std::int64_t lo = 0, hi = total;  // first rank whose token exceeds limit
  while (lo < hi) {
    const std::int64_t mid = (lo + hi) / 2;
    if (attention_key_token(l, b, mid) <= limit) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// ---- Forward: one block of keys for one query row ----------------------------------------

// One step of a dot chain: dot + x * y, rounded once. Kernels that hold many
// chains at once (GPU tiles) take them step by step.
GOLDEN_INLINE float attention_dot_step(float dot, float x, float y) { return fma_rn(x, y, dot); }

// A dot chain's start.
inline constexpr float kAttentionDotStart = 0.0f;

// x . column = sum_d x[d] * column(d): a sequential fma chain over
// d = 0..D-1 starting from kAttentionDotStart (+0). One key's lane of
// attention_block_dots.
template <class Column>
GOLDEN_INLINE float attention_dot(const float* x, std::int64_t head_dim, Column column) {
  float dot = kAttentionDotStart;
  for (std::int64_t d = 0; d < head_dim; ++d) dot = attention_dot_step(dot, x[d], column(d));
  return dot;
}

// dots[j] = x . m(., j) for the block's kAttentionKeyBlock lanes. Lanes past
// the block's end read whatever m gives (zeros) and are ignored by the caller.
template <class Matrix>
GOLDEN_INLINE void attention_block_dots(const float* x, std::int64_t head_dim, Matrix m,
                                        float* dots) {
  for (int j = 0; j < kAttentionKeyBlock; ++j) {
    dots[j] = attention_dot(x, head_dim, [&](std::int64_t d) { return m(d, j); });
  }
}

// A score from its dot: one rounded multiply.
// T: float, or a CPU vector of rows (its operators are IEEE's lane by lane).
template <class T>
GOLDEN_INLINE T attention_score(T dot, T scale) {
  return dot * scale;
}

GOLDEN_INLINE void attention_block_scale(float* scores, float scale) {
  for (int j = 0; j < kAttentionKeyBlock; ++j) scores[j] = attention_score(scores[j], scale);
}

// s = dot(q, k) * scale: the fma chain, then one rounded multiply.
template <class KeyT>
GOLDEN_INLINE void attention_block_scores(const float* q, std::int64_t head_dim, float scale,
                                          KeyT key_t, float* scores) {
  attention_block_dots(q, head_dim, key_t, scores);
  attention_block_scale(scores, scale);
}

// Running state of one query row's online softmax.
struct AttentionRowState {
  float max;  // largest score so far (-inf before any key)
  float sum;  // sum of exp(score - max) in rank order
};

// A row's state before its first key, and the start of every accumulator
// chain (the forward's acc[d]; the backward's dq, dk, dv).
GOLDEN_INLINE AttentionRowState attention_initial_state() { return {-math_detail::inf(), 0.0f}; }
inline constexpr float kAttentionAccStart = 0.0f;

GOLDEN_INLINE AttentionRowState attention_row_start(float* acc, std::int64_t head_dim) {
  for (std::int64_t d = 0; d < head_dim; ++d) acc[d] = kAttentionAccStart;
  return attention_initial_state();
}

GOLDEN_INLINE float attention_max(float a, float b) { return math_detail::select(b > a, b, a); }

// The largest of the block's `count` scores, a chain over j in rank order
// (a NaN score never wins; of equal zeros the first is kept).
GOLDEN_INLINE float attention_block_max(const float* scores, std::int64_t count) {
  float block_max = -math_detail::inf();
  for (std::int64_t j = 0; j < count; ++j) block_max = attention_max(block_max, scores[j]);
  return block_max;
}

// The steps of attention_rescale_to (a SIMD kernel runs them for many rows at
// once): the origin of a row whose max is now new_max (all scores -inf so far:
// 0, so that every exp is exp(-inf) = 0, not NaN), the factor alpha, and the
// scaling of sum and of each acc element.
GOLDEN_INLINE float attention_origin(float new_max) {
  return new_max == -math_detail::inf() ? 0.0f : new_max;
}

GOLDEN_INLINE float attention_rescale_factor(float old_max, float origin) {
  return exp_f32(old_max - origin);
}

GOLDEN_INLINE float attention_rescaled(float x, float alpha) { return x * alpha; }

GOLDEN_INLINE void attention_rescale_acc(float* acc, std::int64_t head_dim, float alpha) {
  for (std::int64_t d = 0; d < head_dim; ++d) acc[d] = attention_rescaled(acc[d], alpha);
}

// The origin a block's probabilities are measured from, and the factor the
// row's accumulators are rescaled by.
struct AttentionRescale {
  float origin;
  float alpha;
};

// The origin and factor of a block after which the row's max is new_max, the
// max having been old_max before it (-inf before the first block).
GOLDEN_INLINE AttentionRescale attention_rescale_between(float old_max, float new_max) {
  const float origin = attention_origin(new_max);
  return {origin, attention_rescale_factor(old_max, origin)};
}

// Starts folding a block whose max is block_max into the row's state: the new
// max, and sum rescaled by alpha = exp(old_max - new_max) (always applied; it
// is exactly 1 when the max is unchanged). The caller rescales acc by alpha
// (kernels that spread acc over threads do it where it lives).
GOLDEN_INLINE AttentionRescale attention_rescale_state(AttentionRowState& st, float block_max) {
  const float new_max = attention_max(st.max, block_max);
  const AttentionRescale rescale = attention_rescale_between(st.max, new_max);
  st.sum = attention_rescaled(st.sum, rescale.alpha);
  st.max = new_max;
  return rescale;
}

// attention_rescale_state and the rescale of acc; returns the origin.
GOLDEN_INLINE float attention_rescale_to(AttentionRowState& st, float* acc, std::int64_t head_dim,
                                         float block_max) {
  const AttentionRescale r = attention_rescale_state(st, block_max);
  attention_rescale_acc(acc, head_dim, r.alpha);
  return r.origin;
}

// Both for `count` keys (scores[0..count)).
GOLDEN_INLINE float attention_block_rescale(AttentionRowState& st, float* acc, std::int64_t head_dim,
                                            const float* scores, std::int64_t count) {
  return attention_rescale_to(st, acc, head_dim, attention_block_max(scores, count));
}

// One probability of a block: p = exp(s - origin).
// Lanes: see math_detail::exp_reduce (CPU kernels pass vectors of rows).
template <class Lanes = math_detail::ScalarLanes>
GOLDEN_INLINE typename Lanes::T attention_block_prob(typename Lanes::T score, typename Lanes::T origin) {
  return exp_f32<Lanes>(score - origin);
}

// p for the whole block (kAttentionKeyBlock floats; lanes are independent, so a
// vectorised loop gives the same bits).
GOLDEN_INLINE void attention_block_probs(const float* scores, float origin, float* probs) {
  for (int j = 0; j < kAttentionKeyBlock; ++j) probs[j] = attention_block_prob(scores[j], origin);
}

GOLDEN_INLINE float attention_sum_step(float sum, float p) { return sum + p; }

// sum += p over the block's keys in rank order.
GOLDEN_INLINE void attention_block_sum(AttentionRowState& st, const float* probs, std::int64_t count) {
  for (std::int64_t j = 0; j < count; ++j) st.sum = attention_sum_step(st.sum, probs[j]);
}

// One step of an accumulator chain: acc + w * v, rounded once.
GOLDEN_INLINE float attention_accumulate_step(float acc, float w, float v) { return fma_rn(w, v, acc); }

// The three steps for one row: rescale, probabilities into probs, their sum.
GOLDEN_INLINE void attention_block_softmax(AttentionRowState& st, float* acc, std::int64_t head_dim,
                                           const float* scores, std::int64_t count, float* probs) {
  const float origin = attention_block_rescale(st, acc, head_dim, scores, count);
  attention_block_probs(scores, origin, probs);
  attention_block_sum(st, probs, count);
}

// Then acc[d] = fma(w_j, row_j[d], acc[d]) over the block's keys in rank
// order: w = P, row = v in the forward; w = dS, row = k for dq.
template <class Rows>
GOLDEN_INLINE void attention_block_accumulate(float* acc, std::int64_t head_dim, const float* weights,
                                              std::int64_t count, Rows rows) {
  for (std::int64_t j = 0; j < count; ++j) {
    const float w = weights[j];
    for (std::int64_t d = 0; d < head_dim; ++d) acc[d] = attention_accumulate_step(acc[d], w, rows(j, d));
  }
}

// out[d] = acc[d] / sum (one correctly rounded division); a row with no valid
// key gives +0. A NaN is the canonical one (a reduction keeps no input payload,
// so every device writes the same bits).
GOLDEN_INLINE float attention_normalized(float acc, float sum, std::int64_t visible) {
  return visible == 0 ? 0.0f : canonical_nan(div_rn(acc, sum));
}

GOLDEN_INLINE float attention_output(const AttentionRowState& st, const float* acc,
                                     std::int64_t d, std::int64_t visible) {
  return attention_normalized(acc[d], st.sum, visible);
}

// LSE = max + log(sum); -inf for a row with no valid key.
GOLDEN_INLINE float attention_lse(const AttentionRowState& st, std::int64_t visible) {
  return visible == 0 ? -math_detail::inf() : canonical_nan(st.max + log_f32(st.sum));
}

// ---- Backward ---------------------------------------------------------------------------

// Di = sum_d dO[d] * O[d], a sequential fma chain over d from +0 (O in fp32).
GOLDEN_INLINE float attention_delta(const float* grad_out, const float* out,
                                    std::int64_t head_dim) {
  float delta = 0.0f;
  for (std::int64_t d = 0; d < head_dim; ++d) delta = fma_rn(grad_out[d], out[d], delta);
  return delta;
}

// P = exp(s - lse), recomputed from the score's exact forward bits.
// Lanes: see math_detail::exp_reduce (CPU kernels pass vectors of rows).
template <class Lanes = math_detail::ScalarLanes>
GOLDEN_INLINE typename Lanes::T attention_probability(typename Lanes::T score, typename Lanes::T lse) {
  return exp_f32<Lanes>(score - lse);
}

// dS = P * (dP - Di), dP = dot(dO, v) (an fma chain over d like the score).
// T: float, or a CPU vector of rows (its operators are IEEE's lane by lane).
template <class T>
GOLDEN_INLINE T attention_score_grad(T p, T dp, T delta) {
  return p * (dp - delta);
}

// A finished dq or dk sum times the scale (applied once, at the end), or a dv
// sum with scale 1; NaN canonical like the forward's.
GOLDEN_INLINE float attention_grad_output(float sum, float scale) {
  return canonical_nan(sum * scale);
}

// acc[d] = fma(w, row[d], acc[d]): one term of dq (w = dS, row = k), dk
// (w = dS, row = q) or dv (w = P, row = dO). dq and dk are scaled once at the end.
GOLDEN_INLINE void attention_accumulate(float* acc, float w, const float* row,
                                        std::int64_t head_dim) {
  for (std::int64_t d = 0; d < head_dim; ++d) acc[d] = attention_accumulate_step(acc[d], w, row[d]);
}

GOLDEN_CORE_END
