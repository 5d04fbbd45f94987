// log_softmax, token logprob, entropy and the vocab-parallel pieces on the
// CPU: rows spread over threads, each row computed by the core's *_row
// functions (csrc/core/ops/logprob.h), whose lane loops the compiler
// vectorises for this file's instruction set. No arithmetic here.
#include <type_traits>

#include "../core/ops/logprob.h"
#include "rows.h"
#include "scratch.h"
#include "target.h"

GOLDEN_CPU_BEGIN
namespace {

constexpr std::int64_t kMinRowsPerTask = 1;

// Runs body(row) for every row, rows grouped into tasks over the threads.
template <class RowBody>
void for_each_row(std::int64_t rows, int num_threads, const RowBody& row_body) {
  const std::int64_t rows_per_task = items_per_task(rows, num_threads, kMinRowsPerTask);
  auto body = [&](std::int64_t task) {
    const std::int64_t begin = task * rows_per_task;
    const std::int64_t end = begin + rows_per_task < rows ? begin + rows_per_task : rows;
    for (std::int64_t row = begin; row < end; ++row) row_body(row);
  };
  parallel_tasks(core::ceil_div(rows, rows_per_task), num_threads, body);
}

// Calls row_body(row, its logits) for every row. fp16 rows that reads(row)
// says the core will read are handed over widened to fp32 by F16C (rows.h),
// one task's row at a time in scratch: the same bits (the core reads logits
// only as values and emits only the canonical NaN) without the core's
// several instructions per fp16 element. Other rows pass through. Extra
// memory: one fp32 row per task (at most 4 tasks per thread and one per row,
// so at most twice the fp16 logits).
template <class T, class Reads, class RowBody>
void for_each_logits_row(const T* logits, std::int64_t rows, std::int64_t vocab, int num_threads, const Reads& reads,
                         const RowBody& row_body) {
  if constexpr (std::is_same_v<T, f16>) {
    const std::int64_t rows_per_task = items_per_task(rows, num_threads, kMinRowsPerTask);
    const ScratchBuffer scratch(static_cast<std::size_t>(core::ceil_div(rows, rows_per_task) * vocab),
                                PageAdvice::kNone);
    auto body = [&](std::int64_t task) {
      float* wide = scratch.data() + task * vocab;
      const std::int64_t begin = task * rows_per_task;
      const std::int64_t end = begin + rows_per_task < rows ? begin + rows_per_task : rows;
      for (std::int64_t row = begin; row < end; ++row) {
        if (reads(row)) {
          widen_row(logits + row * vocab, wide, vocab);
          row_body(row, static_cast<const float*>(wide));
        } else {
          row_body(row, logits + row * vocab);
        }
      }
    };
    parallel_tasks(core::ceil_div(rows, rows_per_task), num_threads, body);
  } else {
    (void)reads;
    for_each_row(rows, num_threads, [&](std::int64_t row) { row_body(row, logits + row * vocab); });
  }
}

template <class T, class G, class TOut>
void log_softmax_backward_rows(const LogSoftmaxBackwardProblem& p, int num_threads) {
  const G* grad_out = static_cast<const G*>(p.grad_out);
  const T* logits = static_cast<const T*>(p.logits);
  TOut* grad_logits = static_cast<TOut*>(p.grad_logits);
  for_each_row(p.rows, num_threads, [&](std::int64_t row) {
    const std::int64_t offset = row * p.vocab;
    core::log_softmax_backward_row(grad_out + offset, logits + offset, grad_logits + offset, p.vocab);
  });
}

}  // namespace

void log_softmax_forward(const LogSoftmaxForwardProblem& p, int num_threads) {
  visit_in_out(p.dtype, p.out_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    const T* logits = static_cast<const T*>(p.logits);
    TOut* y = static_cast<TOut*>(p.out);
    auto every_row = [](std::int64_t) { return true; };
    for_each_logits_row(logits, p.rows, p.vocab, num_threads, every_row, [&](std::int64_t row, const auto* row_logits) {
      TOut* y_row = y + row * p.vocab;
      if constexpr (std::is_same_v<T, f16> && std::is_same_v<TOut, f16>) {
        const float lse = core::row_lse(row_logits, p.vocab);
        narrow_in_pieces(y_row, p.vocab, [&](std::int64_t c, std::int64_t n, float* piece) {
          core::log_softmax_forward_span(row_logits + c, piece, n, lse);
        });
      } else {
        core::log_softmax_forward_row(row_logits, y_row, p.vocab);
      }
    });
  });
}

void log_softmax_backward(const LogSoftmaxBackwardProblem& p, int num_threads) {
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    if (p.grad_out_dtype == DType::f32) {
      log_softmax_backward_rows<T, float, TOut>(p, num_threads);
    } else {
      log_softmax_backward_rows<T, T, TOut>(p, num_threads);
    }
  });
}

void token_logprob_forward(const TokenLogprobForwardProblem& p, int num_threads) {
  visit_dtype(p.dtype, [&](auto in) {
    using T = decltype(in);
    const T* logits = static_cast<const T*>(p.logits);
    auto reads = [&](std::int64_t row) { return p.target_ids[row] != p.ignore_index; };
    for_each_logits_row(logits, p.rows, p.vocab, num_threads, reads, [&](std::int64_t row, const auto* row_logits) {
      p.logprob[row] = core::token_logprob_row(row_logits, p.vocab, p.target_ids[row], p.ignore_index);
    });
  });
}

void token_logprob_backward(const TokenLogprobBackwardProblem& p, int num_threads) {
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    const T* logits = static_cast<const T*>(p.logits);
    TOut* grad_logits = static_cast<TOut*>(p.grad_logits);
    for_each_row(p.rows, num_threads, [&](std::int64_t row) {
      const std::int64_t offset = row * p.vocab;
      core::token_logprob_backward_row(p.grad_out[row], logits + offset, grad_logits + offset, p.vocab,
                                       p.target_ids[row], p.ignore_index);
    });
  });
}

void entropy_forward(const EntropyForwardProblem& p, int num_threads) {
  visit_dtype(p.dtype, [&](auto in) {
    using T = decltype(in);
    const T* logits = static_cast<const T*>(p.logits);
    auto every_row = [](std::int64_t) { return true; };
    for_each_logits_row(logits, p.rows, p.vocab, num_threads, every_row, [&](std::int64_t row, const auto* row_logits) {
      p.entropy[row] = core::entropy_row(row_logits, p.vocab);
    });
  });
}

void entropy_backward(const EntropyBackwardProblem& p, int num_threads) {
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    const T* logits = static_cast<const T*>(p.logits);
    TOut* grad_logits = static_cast<TOut*>(p.grad_logits);
    for_each_row(p.rows, num_threads, [&](std::int64_t row) {
      const std::int64_t offset = row * p.vocab;
      core::entropy_backward_row(p.grad_out[row], logits + offset, grad_logits + offset, p.vocab);
    });
  });
}

void lse_partials(const LsePartialsProblem& p, int num_threads) {
  visit_dtype(p.dtype, [&](auto in) {
    using T = decltype(in);
    const T* logits = static_cast<const T*>(p.logits);
    for_each_row(p.rows, num_threads, [&](std::int64_t row) {
      const core::LsePartial partial =
          core::lse_row_partial(core::RowLoader<T>{logits + row * p.vocab}, p.vocab);
      p.partials[2 * row] = partial.max;
      p.partials[2 * row + 1] = partial.sum;
    });
  });
}

void merge_lse_partials(const MergeLsePartialsProblem& p, int num_threads) {
  for_each_row(p.rows, num_threads, [&](std::int64_t row) {
    const core::LsePartial merged = core::merge_shard_partials(p.partials + 2 * row, p.shards, 2 * p.rows);
    p.merged[2 * row] = merged.max;
    p.merged[2 * row + 1] = merged.sum;
  });
}

void entropy_partials(const EntropyPartialsProblem& p, int num_threads) {
  visit_dtype(p.dtype, [&](auto in) {
    using T = decltype(in);
    const T* logits = static_cast<const T*>(p.logits);
    for_each_row(p.rows, num_threads, [&](std::int64_t row) {
      const core::EntropyPartial partial =
          core::entropy_row_partial(core::RowLoader<T>{logits + row * p.vocab}, p.vocab);
      core::store_entropy_partial(p.partials, row, partial);
    });
  });
}

void merge_entropy_partials(const MergeEntropyPartialsProblem& p, int num_threads) {
  for_each_row(p.rows, num_threads, [&](std::int64_t row) { core::merge_entropy_partials_row(p, row); });
}

void target_logits(const TargetLogitsProblem& p, int num_threads) {
  visit_dtype(p.dtype, [&](auto in) {
    using T = decltype(in);
    const T* logits = static_cast<const T*>(p.logits);
    for_each_row(p.rows, num_threads, [&](std::int64_t row) {
      p.target_logits[row] = core::shard_target_logit(logits + row * p.shard_vocab, p.shard_vocab,
                                                      p.vocab_start, p.target_ids[row], p.ignore_index);
    });
  });
}

void logprob_from_partials(const LogprobFromPartialsProblem& p, int num_threads) {
  for_each_row(p.rows, num_threads, [&](std::int64_t row) {
    const core::LsePartial partial{p.partials[2 * row], p.partials[2 * row + 1]};
    p.logprob[row] =
        core::logprob_from_partial(p.target_logits[row], partial, p.target_ids[row], p.ignore_index);
  });
}

GOLDEN_CPU_END
