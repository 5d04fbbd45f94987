// Embedding on the CPU. Forward: tokens spread over threads, each row
// gathered by core::embedding_gather_row. Backward: a stable counting sort of
// token positions by id (one thread, O(tokens + vocab)), then vocabulary rows
// spread over threads, each summed in token order by the core's
// embedding_grad_add_token (csrc/core/ops/embedding.h). No atomics.
#include <cstring>
#include <type_traits>

#include "../core/ops/embedding.h"
#include "../core/reduce.h"
#include "prefetch.h"
#include "target.h"

GOLDEN_CPU_BEGIN
namespace {

constexpr std::int64_t kMinTokensPerTask = 16;
constexpr std::int64_t kMinVocabRowsPerTask = 64;
// Columns of one vocabulary row whose fp32 sums are kept at once.
constexpr std::int64_t kGradColumnChunk = 512;

template <class T, class TOut>
void gather_rows(const EmbeddingForwardProblem& p, int num_threads) {
  const T* weight = static_cast<const T*>(p.weight);
  TOut* out = static_cast<TOut*>(p.out);
  if (p.dim == 0) return;  // no columns (and the arrays may be null, which memcpy must not see)
  const std::int64_t per_task = items_per_task(p.ids.count, num_threads, kMinTokensPerTask);
  auto body = [&](std::int64_t task) {
    const std::int64_t begin = task * per_task;
    const std::int64_t end = begin + per_task < p.ids.count ? begin + per_task : p.ids.count;
    for (std::int64_t t = begin; t < end; ++t) {
      const T* row = weight + core::load_id(p.ids, t) * p.dim;
      // A same-type row is a bit copy (core::embedding_element), so memcpy
      // gives the same bits; glibc copies rows over ~2 KiB with rep movsb,
      // whose full-line stores skip reading the output lines first: bf16
      // [151936, 4096] table, 4096 tokens, out=, 2 threads 0.91x -> 0.99x
      // torch.index_select(out=) (benchmarks/RESULTS.md, stop 30).
      if constexpr (std::is_same_v<T, TOut>) {
        std::memcpy(out + t * p.dim, row, static_cast<std::size_t>(p.dim) * sizeof(T));
      } else {
        core::embedding_gather_row(row, out + t * p.dim, p.dim);
      }
    }
  };
  parallel_tasks(core::ceil_div(p.ids.count, per_task), num_threads, body);
}

// After this, bucket v holds order[bucket_begin[v] .. bucket_begin[v + 1])
// with its token positions increasing: counts are accumulated into
// inclusive prefix sums (bucket ends), then tokens are placed walking
// backwards, which leaves each bucket_begin[v] at its bucket's start.
void sort_tokens_by_id(const EmbeddingIds& ids, std::int64_t vocab, std::int64_t* bucket_begin,
                       std::int64_t* order) {
  for (std::int64_t v = 0; v <= vocab; ++v) bucket_begin[v] = 0;
  for (std::int64_t t = 0; t < ids.count; ++t) ++bucket_begin[core::load_id(ids, t)];
  for (std::int64_t v = 1; v < vocab; ++v) bucket_begin[v] += bucket_begin[v - 1];
  bucket_begin[vocab] = ids.count;
  for (std::int64_t t = ids.count - 1; t >= 0; --t) order[--bucket_begin[core::load_id(ids, t)]] = t;
}

template <class T, class TOut>
void sum_vocab_row(const EmbeddingBackwardProblem& p, const std::int64_t* bucket_begin,
                   const std::int64_t* order, std::int64_t v) {
  const T* grad = static_cast<const T*>(p.grad_out);
  TOut* row = static_cast<TOut*>(p.dweight) + v * p.dim;
  if (bucket_begin[v] == bucket_begin[v + 1]) {
    // No token: the sum is +0, whose bits are all zero in every type.
    for (std::int64_t c = 0; c < p.dim; ++c) row[c] = TOut{};
    return;
  }
  float acc[kGradColumnChunk];
  for (std::int64_t c0 = 0; c0 < p.dim; c0 += kGradColumnChunk) {
    const std::int64_t n = p.dim - c0 < kGradColumnChunk ? p.dim - c0 : kGradColumnChunk;
    for (std::int64_t c = 0; c < n; ++c) acc[c] = 0.0f;
    for (std::int64_t k = bucket_begin[v]; k < bucket_begin[v + 1]; ++k) {
      core::embedding_grad_add_token(grad + order[k] * p.dim + c0, acc, n);
    }
    for (std::int64_t c = 0; c < n; ++c) row[c0 + c] = core::from_float<TOut>(acc[c]);
  }
}

template <class T, class TOut>
void scatter_add_rows(const EmbeddingBackwardProblem& p, int num_threads) {
  std::int64_t* bucket_begin = p.workspace;
  std::int64_t* order = p.workspace + p.vocab + 1;
  sort_tokens_by_id(p.ids, p.vocab, bucket_begin, order);
  const std::int64_t per_task = items_per_task(p.vocab, num_threads, kMinVocabRowsPerTask);
  auto body = [&](std::int64_t task) {
    const std::int64_t begin = task * per_task;
    const std::int64_t end = begin + per_task < p.vocab ? begin + per_task : p.vocab;
    for (std::int64_t v = begin; v < end; ++v) {
      // The next row's lines (prefetch.h): [151936, 4096] bf16 out= 72 -> 58-63 ms.
      if (v + 1 < end) prefetch_lines(static_cast<TOut*>(p.dweight) + (v + 1) * p.dim, p.dim);
      sum_vocab_row<T, TOut>(p, bucket_begin, order, v);
    }
  };
  parallel_tasks(core::ceil_div(p.vocab, per_task), num_threads, body);
}

}  // namespace

void embedding_find_invalid_id(const EmbeddingIds& ids, std::int64_t vocab, InvalidId* result,
                               int /*num_threads*/) {
  *result = InvalidId{-1, 0};
  for (std::int64_t t = 0; t < ids.count; ++t) {
    const std::int64_t id = core::load_id(ids, t);
    if (!core::id_in_range(id, vocab)) {
      *result = InvalidId{t, id};
      return;
    }
  }
}

void embedding_forward(const EmbeddingForwardProblem& problem, int num_threads) {
  visit_in_out(problem.dtype, problem.out_dtype, [&](auto in, auto out) {
    gather_rows<decltype(in), decltype(out)>(problem, num_threads);
  });
}

void embedding_backward(const EmbeddingBackwardProblem& problem, int num_threads) {
  visit_in_out(problem.dtype, problem.grad_dtype, [&](auto in, auto out) {
    scatter_add_rows<decltype(in), decltype(out)>(problem, num_threads);
  });
}

GOLDEN_CPU_END
