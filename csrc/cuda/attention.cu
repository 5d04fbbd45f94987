// Attention on the GPU (CUDA, and HIP through the same source). Forward and
// dq: one thread per (query row, query head) running the core's block
// functions over its visible keys in rank order; dk/dv: one thread per (valid
// key, kv head) summing over the group's heads and query rows in order, as
// the CPU does. Simple and exact, not yet tuned (keys are read straight from
// global memory). All arithmetic is in csrc/core/ops/attention.h.
#include "../core/ops/attention.h"
#include "../core/reduce.h"
#include "gpu_runtime.h"
#include "kernels.h"

namespace golden::gpu {
namespace {

constexpr int kThreads = 128;
constexpr std::int64_t kBlock = kAttentionKeyBlock;
constexpr std::int64_t kMaxD = kAttentionMaxHeadDim;

template <class T>
__device__ const T* input_row(const AttentionInput& t, std::int64_t b, std::int64_t token, std::int64_t head) {
  return static_cast<const T*>(t.data) + b * t.seq_stride + token * t.token_stride + head * t.head_stride;
}

template <class T>
__device__ T* output_row(const AttentionOutput& t, std::int64_t b, std::int64_t token, std::int64_t head) {
  return static_cast<T*>(t.data) + b * t.seq_stride + token * t.token_stride + head * t.head_stride;
}

// The sequence that owns global row `row` of `per_seq` rows each (padded) or
// of the packed offsets `cu` (binary search).
__device__ std::int64_t owner(const std::int64_t* cu, std::int64_t num_seqs, std::int64_t per_seq,
                              std::int64_t row) {
  if (cu == nullptr) return row / per_seq;
  std::int64_t lo = 0, hi = num_seqs - 1;  // last b with cu[b] <= row
  while (lo < hi) {
    const std::int64_t mid = (lo + hi + 1) / 2;
    if (cu[mid] <= row) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// Key ranks [start, start + count) of kv head g, read from global memory:
// transposed (d, j) for the dot products, rows (j, d) for the sums; zero
// past count, like the CPU's staged blocks.
template <class T>
struct KeyBlock {
  const AttentionLayout* layout;
  const AttentionInput* src;
  std::int64_t b;
  std::int64_t k_begin;
  std::int64_t g;
  std::int64_t start;
  std::int64_t count;

  __device__ float at(std::int64_t j, std::int64_t d) const {
    if (j >= count) return 0.0f;
    const std::int64_t token = k_begin + core::attention_key_token(*layout, b, start + j);
    return core::to_float(input_row<T>(*src, b, token, g)[d]);
  }
};

template <class T>
struct Transposed {
  KeyBlock<T> block;
  __device__ float operator()(std::int64_t d, std::int64_t j) const { return block.at(j, d); }
};

template <class T>
struct Rows {
  KeyBlock<T> block;
  __device__ float operator()(std::int64_t j, std::int64_t d) const { return block.at(j, d); }
};

struct QueryRow {
  std::int64_t b;
  std::int64_t i;
  std::int64_t h;
  core::AttentionSeq seq;
};

__device__ bool query_row(const AttentionLayout& l, QueryRow& r) {
  const std::int64_t id = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const std::int64_t rows = core::attention_total_query_rows(l);
  if (id >= rows * l.num_q_heads) return false;
  const std::int64_t row = id / l.num_q_heads;
  r.h = id % l.num_q_heads;
  r.b = owner(l.cu_q, l.num_seqs, l.q_len, row);
  r.seq = core::attention_seq(l, r.b);
  r.i = row - r.seq.row_base;
  return true;
}

// One row's online softmax over its visible keys; returns that count.
template <class T>
__device__ std::int64_t forward_row(const AttentionLayout& l, const AttentionInput& k, const AttentionInput& v,
                                    const QueryRow& r, const float* q, float* acc, core::AttentionRowState& st) {
  const std::int64_t visible = core::attention_visible_keys(l, r.b, r.seq, r.i);
  const std::int64_t g = r.h / (l.num_q_heads / l.num_kv_heads);
  st = core::attention_row_start(acc, l.head_dim);
  float scores[kBlock];
  float probs[kBlock];
  for (std::int64_t start = 0; start < visible; start += kBlock) {
    const std::int64_t count = visible - start < kBlock ? visible - start : kBlock;
    const KeyBlock<T> keys{&l, &k, r.b, r.seq.k_begin, g, start, count};
    const KeyBlock<T> values{&l, &v, r.b, r.seq.k_begin, g, start, count};
    core::attention_block_scores(q, l.head_dim, l.scale, Transposed<T>{keys}, scores);
    core::attention_fold_block(st, acc, l.head_dim, scores, count, Rows<T>{values}, probs);
  }
  return visible;
}

template <class T>
__device__ void load_row(const T* src, float* dst, std::int64_t n) {
  for (std::int64_t d = 0; d < n; ++d) dst[d] = core::to_float(src[d]);
}

template <class T, class TOut>
__global__ void forward_kernel(AttentionForwardProblem p) {
  const AttentionLayout& l = p.layout;
  QueryRow r;
  if (!query_row(l, r)) return;
  const std::int64_t token = r.seq.q_begin + r.i;
  float q[kMaxD];
  float acc[kMaxD];
  load_row(input_row<T>(p.q, r.b, token, r.h), q, l.head_dim);
  core::AttentionRowState st;
  const std::int64_t visible = forward_row<T>(l, p.k, p.v, r, q, acc, st);
  TOut* out = output_row<TOut>(p.out, r.b, token, r.h);
  for (std::int64_t d = 0; d < l.head_dim; ++d) {
    out[d] = core::from_float<TOut>(core::attention_output(st, acc, d, visible));
  }
  if (p.lse.data != nullptr) *output_row<float>(p.lse, r.b, token, r.h) = core::attention_lse(st, visible);
}

// Pass 1 of the backward: LSE and Di of the row (from the saved forward, or the
// forward recomputed), then dq over its visible keys.
template <class T, class TOut>
__global__ void backward_rows_kernel(AttentionBackwardProblem p) {
  const AttentionLayout& l = p.layout;
  QueryRow r;
  if (!query_row(l, r)) return;
  const std::int64_t token = r.seq.q_begin + r.i;
  const std::int64_t d_len = l.head_dim;
  float q[kMaxD];
  float acc[kMaxD];
  float grad[kMaxD];
  load_row(input_row<T>(p.q, r.b, token, r.h), q, d_len);
  load_row(input_row<T>(p.grad_out, r.b, token, r.h), grad, d_len);
  std::int64_t visible;
  float lse;
  if (p.saved_out.data != nullptr) {
    visible = core::attention_visible_keys(l, r.b, r.seq, r.i);
    load_row(input_row<float>(p.saved_out, r.b, token, r.h), acc, d_len);
    lse = *input_row<float>(p.saved_lse, r.b, token, r.h);
  } else {
    core::AttentionRowState st;
    visible = forward_row<T>(l, p.k, p.v, r, q, acc, st);
    for (std::int64_t d = 0; d < d_len; ++d) acc[d] = core::attention_output(st, acc, d, visible);
    lse = core::attention_lse(st, visible);
  }
  const float delta = core::attention_delta(grad, acc, d_len);
  const std::int64_t rows = core::attention_total_query_rows(l);
  p.workspace[(r.seq.row_base + r.i) * l.num_q_heads + r.h] = lse;
  p.workspace[(rows + r.seq.row_base + r.i) * l.num_q_heads + r.h] = delta;
  for (std::int64_t d = 0; d < d_len; ++d) acc[d] = 0.0f;
  const std::int64_t g = r.h / (l.num_q_heads / l.num_kv_heads);
  float scores[kBlock];
  float dps[kBlock];
  for (std::int64_t start = 0; start < visible; start += kBlock) {
    const std::int64_t count = visible - start < kBlock ? visible - start : kBlock;
    const KeyBlock<T> keys{&l, &p.k, r.b, r.seq.k_begin, g, start, count};
    const KeyBlock<T> values{&l, &p.v, r.b, r.seq.k_begin, g, start, count};
    core::attention_block_scores(q, d_len, l.scale, Transposed<T>{keys}, scores);
    core::attention_block_dots(grad, d_len, Transposed<T>{values}, dps);
    for (std::int64_t j = 0; j < count; ++j) {
      dps[j] = core::attention_score_grad(core::attention_probability(scores[j], lse), dps[j], delta);
    }
    core::attention_block_accumulate(acc, d_len, dps, count, Rows<T>{keys});
  }
  TOut* dq = output_row<TOut>(p.dq, r.b, token, r.h);
  for (std::int64_t d = 0; d < d_len; ++d) dq[d] = core::from_float<TOut>(core::attention_grad_output(acc[d], l.scale));
}

// Pass 2: one thread per (valid key, kv head). The key's score and dP against
// each query come from the same 64-lane block functions as pass 1 (the
// key's own lane), so P and dS have the bits the CPU computes.
template <class T, class TOut>
__global__ void backward_keys_kernel(AttentionBackwardProblem p, std::int64_t key_rows) {
  const AttentionLayout& l = p.layout;
  const std::int64_t id = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (id >= key_rows * l.num_kv_heads) return;
  const std::int64_t g = id % l.num_kv_heads;
  const std::int64_t key_row = id / l.num_kv_heads;
  const std::int64_t b = owner(l.cu_k, l.num_seqs, l.k_len, key_row);
  const core::AttentionSeq seq = core::attention_seq(l, b);
  const std::int64_t rank = key_row - (l.cu_k == nullptr ? b * l.k_len : seq.k_begin);
  if (rank >= core::attention_valid_key_total(l, b, seq.k_len)) return;
  const std::int64_t d_len = l.head_dim;
  const std::int64_t group = l.num_q_heads / l.num_kv_heads;
  const std::int64_t rows = core::attention_total_query_rows(l);
  const std::int64_t start = rank / kBlock * kBlock;
  const std::int64_t lane = rank - start;
  const KeyBlock<T> keys{&l, &p.k, b, seq.k_begin, g, start, lane + 1};
  const KeyBlock<T> values{&l, &p.v, b, seq.k_begin, g, start, lane + 1};
  float dk[kMaxD];
  float dv[kMaxD];
  float q[kMaxD];
  float grad[kMaxD];
  float scores[kBlock];
  float dps[kBlock];
  for (std::int64_t d = 0; d < d_len; ++d) dk[d] = dv[d] = 0.0f;
  for (std::int64_t h = g * group; h < (g + 1) * group; ++h) {
    for (std::int64_t i = 0; i < seq.q_len; ++i) {
      if (core::attention_visible_keys(l, b, seq, i) <= rank) continue;
      load_row(input_row<T>(p.q, b, seq.q_begin + i, h), q, d_len);
      load_row(input_row<T>(p.grad_out, b, seq.q_begin + i, h), grad, d_len);
      const float lse = p.workspace[(seq.row_base + i) * l.num_q_heads + h];
      const float delta = p.workspace[(rows + seq.row_base + i) * l.num_q_heads + h];
      core::attention_block_scores(q, d_len, l.scale, Transposed<T>{keys}, scores);
      core::attention_block_dots(grad, d_len, Transposed<T>{values}, dps);
      const float prob = core::attention_probability(scores[lane], lse);
      const float ds = core::attention_score_grad(prob, dps[lane], delta);
      core::attention_accumulate(dv, prob, grad, d_len);
      core::attention_accumulate(dk, ds, q, d_len);
    }
  }
  const std::int64_t token = seq.k_begin + core::attention_key_token(l, b, rank);
  TOut* dk_out = output_row<TOut>(p.dk, b, token, g);
  TOut* dv_out = output_row<TOut>(p.dv, b, token, g);
  for (std::int64_t d = 0; d < d_len; ++d) {
    dk_out[d] = core::from_float<TOut>(core::attention_grad_output(dk[d], l.scale));
    dv_out[d] = core::from_float<TOut>(core::attention_grad_output(dv[d], 1.0f));
  }
}

}  // namespace

void attention_forward(const AttentionForwardProblem& p, std::uintptr_t stream) {
  const std::int64_t threads = core::attention_total_query_rows(p.layout) * p.layout.num_q_heads;
  if (threads == 0) return;
  visit_in_out(p.dtype, p.out_dtype, [&](auto in, auto out) {
    forward_kernel<decltype(in), decltype(out)><<<grid_for(threads, kThreads), kThreads, 0, as_stream(stream)>>>(p);
  });
  check_launch("attention_forward");
}

void attention_backward(const AttentionBackwardProblem& p, std::uintptr_t stream) {
  const AttentionLayout& l = p.layout;
  const std::int64_t query_threads = core::attention_total_query_rows(l) * l.num_q_heads;
  const std::int64_t key_rows = l.cu_k == nullptr ? l.num_seqs * l.k_len : l.k_len;  // packed: k_len = tokens
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    if (query_threads > 0) {
      backward_rows_kernel<T, TOut><<<grid_for(query_threads, kThreads), kThreads, 0, as_stream(stream)>>>(p);
      check_launch("attention_backward (rows)");
    }
    if (key_rows * l.num_kv_heads > 0) {
      backward_keys_kernel<T, TOut><<<grid_for(key_rows * l.num_kv_heads, kThreads), kThreads, 0,
                                      as_stream(stream)>>>(p, key_rows);
      check_launch("attention_backward (keys)");
    }
  });
}

}  // namespace golden::gpu
