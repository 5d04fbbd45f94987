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

// Runs body(row, scratch) for every row, rows grouped into tasks over the
// threads; scratch is the row's task's scratch_floats floats (nullptr for 0).
template <class RowBody>
void for_each_row(std::int64_t rows, std::int64_t scratch_floats, int num_threads, const RowBody& row_body) {
  const std::int64_t rows_per_task = items_per_task(rows, num_threads, kMinRowsPerTask);
  const std::int64_t tasks = core::ceil_div(rows, rows_per_task);
  const ScratchBuffer scratch(static_cast<std::size_t>(tasks * scratch_floats), PageAdvice::kNone);
  auto body = [&](std::int64_t task) {
    float* task_scratch = scratch_floats > 0 ? scratch.data() + task * scratch_floats : nullptr;
    const std::int64_t begin = task * rows_per_task;
    const std::int64_t end = begin + rows_per_task < rows ? begin + rows_per_task : rows;
    for (std::int64_t row = begin; row < end; ++row) row_body(row, task_scratch);
  };
  parallel_tasks(tasks, num_threads, body);
}

template <class RowBody>
void for_each_row(std::int64_t rows, int num_threads, const RowBody& row_body) {
  for_each_row(rows, 0, num_threads, [&](std::int64_t row, float*) { row_body(row); });
}

// fp16 rows the core reads are handed to it widened to fp32 by F16C (rows.h):
// the same bits (the core reads logits and gradients only as values and
// emits only the canonical NaN) without the core's several instructions per
// fp16 element. The widened row lives in the task's scratch: extra memory one
// fp32 row per widened input and task (at most 4 tasks per thread and one
// per row, so at most twice each fp16 input).
template <class T>
constexpr std::int64_t widened_floats(std::int64_t vocab) {
  return std::is_same_v<T, f16> ? vocab : 0;
}

// Whether any of the row's inputs or outputs is fp16. Rows without one run
// the core's *_row functions themselves, the ones the GPU runs, so the CPU
// tests exercise them; fp16 rows run the same steps (the row statistics, then
// the *_span function) on widened rows and narrowed pieces.
template <class... Ts>
constexpr bool kAnyF16 = (std::is_same_v<Ts, f16> || ...);

// A row as the core reads it: fp16 widened into wide, other types as they are.
template <class T>
auto readable_row(const T* row, std::int64_t vocab, float* wide) {
  if constexpr (std::is_same_v<T, f16>) {
    widen_row(row, wide, vocab);
    return static_cast<const float*>(wide);
  } else {
    (void)vocab;
    (void)wide;
    return row;
  }
}

// Writes out[0, vocab) by write(begin, count, dst), dst standing for
// out + begin: fp16 outputs are made in fp32 pieces and narrowed by F16C
// (rows.h narrow_in_pieces), others in one span.
template <class TOut, class Write>
void write_row(TOut* out, std::int64_t vocab, const Write& write) {
  if constexpr (std::is_same_v<TOut, f16>) {
    narrow_in_pieces(out, vocab, write);
  } else {
    write(std::int64_t{0}, vocab, out);
  }
}

template <class T, class G, class TOut>
void log_softmax_backward_rows(const LogSoftmaxBackwardProblem& p, int num_threads) {
  const G* grad_out = static_cast<const G*>(p.grad_out);
  const T* logits = static_cast<const T*>(p.logits);
  TOut* grad_logits = static_cast<TOut*>(p.grad_logits);
  const std::int64_t logits_floats = widened_floats<T>(p.vocab);
  for_each_row(p.rows, logits_floats + widened_floats<G>(p.vocab), num_threads,
               [&](std::int64_t row, float* scratch) {
                 const std::int64_t offset = row * p.vocab;
                 if constexpr (!kAnyF16<T, G, TOut>) {
                   core::log_softmax_backward_row(grad_out + offset, logits + offset, grad_logits + offset, p.vocab);
                 } else {
                   const auto* x = readable_row(logits + offset, p.vocab, scratch);
                   const auto* g = readable_row(grad_out + offset, p.vocab, scratch + logits_floats);
                   const float lse = core::row_lse(x, p.vocab);
                   const float grad_sum = core::row_grad_sum(g, p.vocab);
                   write_row(grad_logits + offset, p.vocab, [&](std::int64_t c, std::int64_t n, auto* dst) {
                     core::log_softmax_backward_span(g + c, x + c, dst, n, lse, grad_sum);
                   });
                 }
               });
}

}  // namespace

void log_softmax_forward(const LogSoftmaxForwardProblem& p, int num_threads) {
  visit_in_out(p.dtype, p.out_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    const T* logits = static_cast<const T*>(p.logits);
    TOut* y = static_cast<TOut*>(p.out);
    for_each_row(p.rows, widened_floats<T>(p.vocab), num_threads, [&](std::int64_t row, float* scratch) {
      if constexpr (!kAnyF16<T, TOut>) {
        core::log_softmax_forward_row(logits + row * p.vocab, y + row * p.vocab, p.vocab);
      } else {
        const auto* x = readable_row(logits + row * p.vocab, p.vocab, scratch);
        const float lse = core::row_lse(x, p.vocab);
        write_row(y + row * p.vocab, p.vocab, [&](std::int64_t c, std::int64_t n, auto* dst) {
          core::log_softmax_forward_span(x + c, dst, n, lse);
        });
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
    for_each_row(p.rows, widened_floats<T>(p.vocab), num_threads, [&](std::int64_t row, float* scratch) {
      const std::int64_t target = p.target_ids[row];
      const T* row_logits = logits + row * p.vocab;
      // A row with an ignored target is not read, so not widened.
      p.logprob[row] = target == p.ignore_index
                           ? core::token_logprob_row(row_logits, p.vocab, target, p.ignore_index)
                           : core::token_logprob_row(readable_row(row_logits, p.vocab, scratch), p.vocab, target,
                                                     p.ignore_index);
    });
  });
}

void token_logprob_backward(const TokenLogprobBackwardProblem& p, int num_threads) {
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    const T* logits = static_cast<const T*>(p.logits);
    TOut* grad_logits = static_cast<TOut*>(p.grad_logits);
    for_each_row(p.rows, widened_floats<T>(p.vocab), num_threads, [&](std::int64_t row, float* scratch) {
      const std::int64_t offset = row * p.vocab;
      const std::int64_t target = p.target_ids[row];
      if constexpr (!kAnyF16<T, TOut>) {
        core::token_logprob_backward_row(p.grad_out[row], logits + offset, grad_logits + offset, p.vocab, target,
                                         p.ignore_index);
      } else {
        if (!core::token_logprob_has_grad(target, p.vocab, p.ignore_index)) {
          core::token_logprob_fill_row(grad_logits + offset, p.vocab, target, p.ignore_index);
          return;
        }
        const auto* x = readable_row(logits + offset, p.vocab, scratch);
        const float lse = core::row_lse(x, p.vocab);
        write_row(grad_logits + offset, p.vocab, [&](std::int64_t c, std::int64_t n, auto* dst) {
          core::token_logprob_backward_span(p.grad_out[row], x + c, dst, n, lse, target - c);
        });
      }
    });
  });
}

void entropy_forward(const EntropyForwardProblem& p, int num_threads) {
  visit_dtype(p.dtype, [&](auto in) {
    using T = decltype(in);
    const T* logits = static_cast<const T*>(p.logits);
    for_each_row(p.rows, widened_floats<T>(p.vocab), num_threads, [&](std::int64_t row, float* scratch) {
      p.entropy[row] = core::entropy_row(readable_row(logits + row * p.vocab, p.vocab, scratch), p.vocab);
    });
  });
}

void entropy_backward(const EntropyBackwardProblem& p, int num_threads) {
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    const T* logits = static_cast<const T*>(p.logits);
    TOut* grad_logits = static_cast<TOut*>(p.grad_logits);
    for_each_row(p.rows, widened_floats<T>(p.vocab), num_threads, [&](std::int64_t row, float* scratch) {
      const std::int64_t offset = row * p.vocab;
      if constexpr (!kAnyF16<T, TOut>) {
        core::entropy_backward_row(p.grad_out[row], logits + offset, grad_logits + offset, p.vocab);
      } else {
        const auto* x = readable_row(logits + offset, p.vocab, scratch);
        const core::EntropyGradRow stats = core::row_entropy_grad(x, p.vocab, p.grad_out[row]);
        write_row(grad_logits + offset, p.vocab, [&](std::int64_t c, std::int64_t n, auto* dst) {
          core::entropy_backward_span(x + c, dst, n, stats);
        });
      }
    });
  });
}

void lse_partials(const LsePartialsProblem& p, int num_threads) {
  visit_dtype(p.dtype, [&](auto in) {
    using T = decltype(in);
    const T* logits = static_cast<const T*>(p.logits);
    for_each_row(p.rows, widened_floats<T>(p.vocab), num_threads, [&](std::int64_t row, float* scratch) {
      const auto* x = readable_row(logits + row * p.vocab, p.vocab, scratch);
      const core::LsePartial partial = core::lse_row_partial(core::row_loader(x), p.vocab);
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
    for_each_row(p.rows, widened_floats<T>(p.vocab), num_threads, [&](std::int64_t row, float* scratch) {
      const auto* x = readable_row(logits + row * p.vocab, p.vocab, scratch);
      const core::EntropyPartial partial = core::entropy_row_partial(core::row_loader(x), p.vocab);
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
