// Fused lm_head + token logprob (+ entropy) on the CPU without the full logits.
// Token tiles of kTokenTile rows; for each vocabulary chunk (core kRowBlock) the
// chunk's fp32 logits come from this instruction set's linear kernel (the bits
// of lm_head.forward_fp32), each row folds them into its chunk partial, and after
// the last chunk the partials merge by the canonical tree. All arithmetic is in
// csrc/core/ops/linear.h and csrc/core/ops/logprob.h.
#include "../core/ops/linear.h"
#include "../core/ops/logprob.h"
#include "kernels.h"
#include "scratch.h"
#include "target.h"

GOLDEN_CPU_BEGIN
namespace {

// Rows per tile: the tile's logits for one chunk (kTokenTile x kRowBlock fp32,
// 4 MiB) are all the fused op holds of the logits. Changes no bit.
constexpr std::int64_t kTokenTile = 256;

// Runs row_body(r) for r in [0, rows), rows grouped into tasks over the threads.
template <class RowBody>
void for_each_tile_row(std::int64_t rows, int num_threads, const RowBody& row_body) {
  const std::int64_t per_task = items_per_task(rows, num_threads, 1);
  auto body = [&](std::int64_t task) {
    const std::int64_t end = (task + 1) * per_task < rows ? (task + 1) * per_task : rows;
    for (std::int64_t r = task * per_task; r < end; ++r) row_body(r);
  };
  parallel_tasks(core::ceil_div(rows, per_task), num_threads, body);
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

// The per-chunk partial, as token_logprob (or entropy) computes it for that chunk.
template <bool kWithEntropy, class Load>
PartialOf<kWithEntropy> chunk_partial(const Load& load, std::int64_t begin, std::int64_t end) {
  if constexpr (kWithEntropy) {
    return core::entropy_chunk_partial(load, begin, end, core::SerialRow{});
  } else {
    return core::lse_chunk_partial(load, begin, end, core::SerialRow{});
  }
}

template <bool kWithEntropy>
using MergeOf = typename Select<kWithEntropy, core::MergeEntropy, core::MergeLse>::type;

// compute_logits(problem) writes one chunk's fp32 logits [tile rows, chunk length].
template <class T, bool kWithEntropy, class ComputeLogits>
void fused_forward(const LinearLogprobForwardProblem& p, int num_threads, ComputeLogits compute_logits) {
  using Partial = PartialOf<kWithEntropy>;
  const std::int64_t chunks = core::ceil_div(p.vocab, core::kRowBlock);
  const std::int64_t tile = p.rows < kTokenTile ? p.rows : kTokenTile;
  ScratchBuffer logits(static_cast<std::size_t>(tile * core::kRowBlock));
  ScratchBuffer partial_floats(static_cast<std::size_t>(tile * chunks) * sizeof(Partial) / sizeof(float));
  ScratchBuffer target_logits(static_cast<std::size_t>(tile));
  Partial* partials = reinterpret_cast<Partial*>(partial_floats.data());
  const T* hidden = static_cast<const T*>(p.hidden);
  const T* weight = static_cast<const T*>(p.weight);

  for (std::int64_t row0 = 0; row0 < p.rows; row0 += tile) {
    const std::int64_t rows = p.rows - row0 < tile ? p.rows - row0 : tile;
    const std::int64_t* targets = p.target_ids + row0;
    for (std::int64_t c = 0; c < chunks; ++c) {
      const std::int64_t begin = c * core::kRowBlock;
      const std::int64_t end = core::chunk_end(c, p.vocab);
      compute_logits(LinearForwardProblem{hidden + row0 * p.hidden_size, weight + begin * p.hidden_size, nullptr,
                                          logits.data(), p.dtype, DType::f32, rows, p.hidden_size, end - begin});
      auto fold_chunk = [&](std::int64_t r) {
        const float* row = logits.data() + r * (end - begin);
        auto load = [row, begin](std::int64_t i) { return row[i - begin]; };
        partials[r * chunks + c] = chunk_partial<kWithEntropy>(load, begin, end);
        if (targets[r] >= begin && targets[r] < end) target_logits.data()[r] = row[targets[r] - begin];
      };
      for_each_tile_row(rows, num_threads, fold_chunk);
    }
    auto finish_row = [&](std::int64_t r) {
      const Partial merged = core::tree_reduce_partials<Partial>(
          0, chunks, [&](std::int64_t c) { return partials[r * chunks + c]; }, MergeOf<kWithEntropy>{});
      p.logprob[row0 + r] = core::logprob_from_partial(target_logits.data()[r], core::LsePartial{merged.max, merged.sum},
                                                       targets[r], p.ignore_index);
      if constexpr (kWithEntropy) p.entropy[row0 + r] = core::entropy_of(merged);
    };
    for_each_tile_row(rows, num_threads, finish_row);
  }
}

template <class ComputeLogits>
void dispatch_forward(const LinearLogprobForwardProblem& p, int num_threads, ComputeLogits compute_logits) {
  if (p.rows == 0) return;
  visit_dtype(p.dtype, [&](auto in) {
    using T = decltype(in);
    if (p.entropy != nullptr) {
      fused_forward<T, true>(p, num_threads, compute_logits);
    } else {
      fused_forward<T, false>(p, num_threads, compute_logits);
    }
  });
}

}  // namespace

void linear_logprob_forward(const LinearLogprobForwardProblem& p, int num_threads) {
  dispatch_forward(p, num_threads, [&](const LinearForwardProblem& chunk) { linear_forward(chunk, num_threads); });
}

void linear_logprob_forward_reference(const LinearLogprobForwardProblem& p) {
  dispatch_forward(p, 1, [](const LinearForwardProblem& chunk) { linear_forward_reference(chunk); });
}

GOLDEN_CPU_END
