// RMSNorm on the CPU: rows spread over threads, each row computed by the
// core's rms_norm_*_row (csrc/core/ops/rms_norm.h), whose lane loops the
// compiler vectorises for this file's instruction set. No arithmetic here.
#include <type_traits>

#include "../core/ops/rms_norm.h"
#include "prefetch.h"
#include "rows.h"
#include "scratch.h"
#include "target.h"

GOLDEN_CPU_BEGIN
namespace {

constexpr std::int64_t kMinRowsPerTask = 4;

// fp16 rows run the core on fp32: the weight widened once and each row
// widened by F16C (rows.h), then the row's outputs made from the widened
// values, fp16 ones in pieces narrowed by F16C (narrow_in_pieces). The same
// bits: the core reads x and w only as values (HF mode still rounds to fp16,
// the span's TRound), an HF output is already an fp16 value, and the
// narrowing is from_float's.
template <class T, class TOut>
void forward_rows(const RmsNormForwardProblem& p, int num_threads) {
  const T* x = static_cast<const T*>(p.x);
  const T* weight = static_cast<const T*>(p.weight);
  TOut* y = static_cast<TOut*>(p.y);
  const std::int64_t cols = p.cols;
  const std::int64_t rows_per_task = items_per_task(p.rows, num_threads, kMinRowsPerTask);
  const std::int64_t tasks = core::ceil_div(p.rows, rows_per_task);
  constexpr bool kWidened = std::is_same_v<T, f16>;
  // The widened weight, then each task's x row.
  const ScratchBuffer scratch(kWidened ? static_cast<std::size_t>((tasks + 1) * cols) : 0, PageAdvice::kNone);
  float* wide_weight = scratch.data();
  if constexpr (kWidened) widen_row(weight, wide_weight, cols);
  auto body = [&](std::int64_t task) {
    float* x_row = scratch.data() + (task + 1) * cols;
    const std::int64_t begin = task * rows_per_task;
    const std::int64_t end = begin + rows_per_task < p.rows ? begin + rows_per_task : p.rows;
    for (std::int64_t row = begin; row < end; ++row) {
      TOut* y_row = y + row * cols;
      if constexpr (kWidened) {
        widen_row(x + row * cols, x_row, cols);
        const float r = core::rms_norm_inverse_rms(x_row, cols, p.eps);
        if constexpr (std::is_same_v<TOut, float>) {
          core::rms_norm_forward_span<T>(x_row, wide_weight, y_row, cols, r, p.rounding);
        } else {
          narrow_in_pieces(y_row, cols, [&](std::int64_t c, std::int64_t n, float* piece) {
            // The next row's output piece (prefetch.h): 10.1 -> 9.2 ms at [8192, 4096]. The bf16
            // and fp32 forwards did not gain from it (piece by piece, or the whole row at once).
            if (row + 1 < end) prefetch_lines(y_row + cols + c, n);
            core::rms_norm_forward_span<T>(x_row + c, wide_weight + c, piece, n, r, p.rounding);
          });
        }
      } else {
        core::rms_norm_forward_row(x + row * cols, weight, y_row, cols, p.eps, p.rounding);
      }
    }
  };
  parallel_tasks(tasks, num_threads, body);
}

// Each task owns one block of kRmsNormGradRowBlock rows: it writes their dx
// and folds their weight-gradient terms, rows in order, into the block's
// partial. A second pass merges the partials of each column by the tree.
template <class T, class TOut>
void backward_rows(const RmsNormBackwardProblem& p, int num_threads) {
  const T* grad_out = static_cast<const T*>(p.grad_out);
  const T* x = static_cast<const T*>(p.x);
  const T* weight = static_cast<const T*>(p.weight);
  TOut* dx = static_cast<TOut*>(p.dx);
  TOut* dweight = static_cast<TOut*>(p.dweight);
  const std::int64_t cols = p.cols;
  const std::int64_t blocks = core::ceil_div(p.rows, kRmsNormGradRowBlock);
  // fp16: the core's row function on fp32 rows, as in forward_rows (the
  // backward reads its inputs only as values): the weight widened once, then
  // each block's grad_out, x and dx rows in a slice of scratch.
  constexpr bool kWidened = std::is_same_v<T, f16>;
  const ScratchBuffer scratch(kWidened ? static_cast<std::size_t>((3 * blocks + 1) * cols) : 0, PageAdvice::kNone);
  float* wide_weight = scratch.data();
  if constexpr (kWidened) widen_row(weight, wide_weight, cols);

  auto block_body = [&](std::int64_t block) {
    float* partial = p.dweight_partials + block * cols;
    for (std::int64_t i = 0; i < cols; ++i) partial[i] = 0.0f;
    const std::int64_t begin = block * kRmsNormGradRowBlock;
    const std::int64_t end =
        begin + kRmsNormGradRowBlock < p.rows ? begin + kRmsNormGradRowBlock : p.rows;
    for (std::int64_t row = begin; row < end; ++row) {
      const std::int64_t offset = row * cols;
      if constexpr (kWidened) {
        float* g_row = scratch.data() + (3 * block + 1) * cols;
        float* x_row = g_row + cols;
        float* dx_row = x_row + cols;
        widen_row(grad_out + offset, g_row, cols);
        widen_row(x + offset, x_row, cols);
        if constexpr (std::is_same_v<TOut, float>) {
          core::rms_norm_backward_row(g_row, x_row, wide_weight, dx + offset, partial, cols, p.eps);
        } else {
          core::rms_norm_backward_row(g_row, x_row, wide_weight, dx_row, partial, cols, p.eps);
          narrow_row(dx_row, dx + offset, cols);
        }
      } else {
        core::rms_norm_backward_row(grad_out + offset, x + offset, weight, dx + offset, partial,
                                    cols, p.eps);
      }
    }
  };
  parallel_tasks(blocks, num_threads, block_body);

  constexpr std::int64_t kMinColsPerTask = 256;
  const std::int64_t cols_per_task = items_per_task(cols, num_threads, kMinColsPerTask);
  auto merge_body = [&](std::int64_t task) {
    const std::int64_t begin = task * cols_per_task;
    const std::int64_t end = begin + cols_per_task < cols ? begin + cols_per_task : cols;
    for (std::int64_t col = begin; col < end; ++col) {
      dweight[col] = core::rms_norm_merge_dweight<TOut>(p.dweight_partials, blocks, cols, col);
    }
  };
  parallel_tasks(core::ceil_div(cols, cols_per_task), num_threads, merge_body);
}

}  // namespace

void rms_norm_forward(const RmsNormForwardProblem& problem, int num_threads) {
  visit_in_out(problem.dtype, problem.out_dtype, [&](auto in, auto out) {
    forward_rows<decltype(in), decltype(out)>(problem, num_threads);
  });
}

void rms_norm_backward(const RmsNormBackwardProblem& problem, int num_threads) {
  visit_in_out(problem.dtype, problem.grad_dtype, [&](auto in, auto out) {
    backward_rows<decltype(in), decltype(out)>(problem, num_threads);
  });
}

GOLDEN_CPU_END
