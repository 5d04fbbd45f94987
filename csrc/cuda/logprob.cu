// log_softmax, token logprob, entropy and the vocab-parallel pieces on the
// GPU: one warp per row running the core's *_row functions with the WarpRow
// worker (lane j folds lane j of every vocabulary chunk; the chunk tree is
// walked by every lane alike). All arithmetic is in csrc/core/ops/logprob.h.
#include <stdexcept>
#include <string>

#include "../core/ops/logprob.h"
#include "gpu_runtime.h"
#include "kernels.h"
#include "warp_row.cuh"

namespace golden::gpu {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kRowThreads = kWarpsPerBlock * core::kLanes;
constexpr int kPerRowThreads = 256;  // kernels with one independent thread per row

__device__ WarpRow this_lane() { return WarpRow{static_cast<int>(threadIdx.x % core::kLanes)}; }

// The row of this warp; whole warps leave together, so shuffles stay full.
__device__ std::int64_t this_row() {
  return static_cast<std::int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / core::kLanes;
}

__device__ std::int64_t this_thread() {
  return static_cast<std::int64_t>(blockIdx.x) * kPerRowThreads + threadIdx.x;
}

template <class T, class TOut>
__global__ void log_softmax_forward_kernel(const T* logits, TOut* out, std::int64_t rows,
                                           std::int64_t vocab) {
  const std::int64_t row = this_row();
  if (row >= rows) return;
  core::log_softmax_forward_row(logits + row * vocab, out + row * vocab, vocab, this_lane());
}

template <class T, class G, class TOut>
__global__ void log_softmax_backward_kernel(const G* grad_out, const T* logits, TOut* grad_logits,
                                            std::int64_t rows, std::int64_t vocab) {
  const std::int64_t row = this_row();
  if (row >= rows) return;
  const std::int64_t offset = row * vocab;
  core::log_softmax_backward_row(grad_out + offset, logits + offset, grad_logits + offset, vocab,
                                 this_lane());
}

template <class T>
__global__ void token_logprob_forward_kernel(TokenLogprobForwardProblem p) {
  const std::int64_t row = this_row();
  if (row >= p.rows) return;
  const WarpRow worker = this_lane();
  const float value = core::token_logprob_row(static_cast<const T*>(p.logits) + row * p.vocab, p.vocab,
                                              p.target_ids[row], p.ignore_index, worker);
  if (worker.lane == 0) p.logprob[row] = value;
}

template <class T, class TOut>
__global__ void token_logprob_backward_kernel(TokenLogprobBackwardProblem p) {
  const std::int64_t row = this_row();
  if (row >= p.rows) return;
  const std::int64_t offset = row * p.vocab;
  core::token_logprob_backward_row(p.grad_out[row], static_cast<const T*>(p.logits) + offset,
                                   static_cast<TOut*>(p.grad_logits) + offset, p.vocab,
                                   p.target_ids[row], p.ignore_index, this_lane());
}

template <class T>
__global__ void entropy_forward_kernel(EntropyForwardProblem p) {
  const std::int64_t row = this_row();
  if (row >= p.rows) return;
  const WarpRow worker = this_lane();
  const float value = core::entropy_row(static_cast<const T*>(p.logits) + row * p.vocab, p.vocab, worker);
  if (worker.lane == 0) p.entropy[row] = value;
}

template <class T, class TOut>
__global__ void entropy_backward_kernel(EntropyBackwardProblem p) {
  const std::int64_t row = this_row();
  if (row >= p.rows) return;
  const std::int64_t offset = row * p.vocab;
  core::entropy_backward_row(p.grad_out[row], static_cast<const T*>(p.logits) + offset,
                             static_cast<TOut*>(p.grad_logits) + offset, p.vocab, this_lane());
}

template <class T>
__global__ void lse_partials_kernel(LsePartialsProblem p) {
  const std::int64_t row = this_row();
  if (row >= p.rows) return;
  const WarpRow worker = this_lane();
  const core::LsePartial partial =
      core::lse_row_partial(core::RowLoader<T>{static_cast<const T*>(p.logits) + row * p.vocab}, p.vocab,
                            worker);
  if (worker.lane == 0) {
    p.partials[2 * row] = partial.max;
    p.partials[2 * row + 1] = partial.sum;
  }
}

__global__ void merge_lse_partials_kernel(MergeLsePartialsProblem p) {
  const std::int64_t row = this_thread();
  if (row >= p.rows) return;
  const core::LsePartial merged = core::merge_shard_partials(p.partials + 2 * row, p.shards, 2 * p.rows);
  p.merged[2 * row] = merged.max;
  p.merged[2 * row + 1] = merged.sum;
}

template <class T>
__global__ void entropy_partials_kernel(EntropyPartialsProblem p) {
  const std::int64_t row = this_row();
  if (row >= p.rows) return;
  const WarpRow worker = this_lane();
  const core::EntropyPartial partial =
      core::entropy_row_partial(core::RowLoader<T>{static_cast<const T*>(p.logits) + row * p.vocab}, p.vocab, worker);
  if (worker.lane == 0) {
    core::store_entropy_partial(p.partials, row, partial);
  }
}

__global__ void merge_entropy_partials_kernel(MergeEntropyPartialsProblem p) {
  const std::int64_t row = this_thread();
  if (row < p.rows) core::merge_entropy_partials_row(p, row);
}

template <class T>
__global__ void target_logits_kernel(TargetLogitsProblem p) {
  const std::int64_t row = this_thread();
  if (row >= p.rows) return;
  p.target_logits[row] =
      core::shard_target_logit(static_cast<const T*>(p.logits) + row * p.shard_vocab, p.shard_vocab,
                               p.vocab_start, p.target_ids[row], p.ignore_index);
}

__global__ void logprob_from_partials_kernel(LogprobFromPartialsProblem p) {
  const std::int64_t row = this_thread();
  if (row >= p.rows) return;
  const core::LsePartial partial{p.partials[2 * row], p.partials[2 * row + 1]};
  p.logprob[row] = core::logprob_from_partial(p.target_logits[row], partial, p.target_ids[row], p.ignore_index);
}

// Sets *bad to 1 if an id is outside [0, vocab) and is not ignore_index
// (an integer flag: no floating-point atomics).
__global__ void find_bad_target_kernel(TargetIds ids, std::int64_t rows, std::int64_t vocab,
                                       std::int64_t ignore_index, int* bad) {
  const std::int64_t row = this_thread();
  if (row >= rows) return;
  const std::int64_t id = ids[row];
  if (id != ignore_index && !core::target_in_range(id, vocab)) atomicOr(bad, 1);
}

// Device ids are checked before any kernel reads logits through them; this
// waits for the stream (one int copied back) and throws std::invalid_argument
// (a ValueError in Python), as the host check of the bindings does.
void require_valid_targets(TargetIds ids, std::int64_t rows, std::int64_t vocab,
                           std::int64_t ignore_index, cudaStream_t stream) {
  if (rows == 0) return;
  int* bad = nullptr;
  check(cudaMallocAsync(reinterpret_cast<void**>(&bad), sizeof(int), stream), "target id check (alloc)");
  check(cudaMemsetAsync(bad, 0, sizeof(int), stream), "target id check (memset)");
  launch(find_bad_target_kernel, grid_for(rows, kPerRowThreads), kPerRowThreads, 0, stream, ids, rows, vocab,
         ignore_index, bad);
  check_launch("target id check");
  int found = 0;
  check(cudaMemcpyAsync(&found, bad, sizeof(int), cudaMemcpyDeviceToHost, stream), "target id check (copy)");
  check(cudaFreeAsync(bad, stream), "target id check (free)");
  check(cudaStreamSynchronize(stream), "target id check (sync)");
  if (found != 0) {
    throw std::invalid_argument("target_ids: an id is outside [0, " + std::to_string(vocab) +
                                ") and is not ignore_index (" + std::to_string(ignore_index) + ")");
  }
}

unsigned row_blocks(std::int64_t rows) { return grid_for(rows, kWarpsPerBlock); }
unsigned thread_blocks(std::int64_t rows) { return grid_for(rows, kPerRowThreads); }

}  // namespace

void require_valid_target_ids(TargetIds ids, std::int64_t rows, std::int64_t vocab, std::int64_t ignore_index,
                              std::uintptr_t stream) {
  require_valid_targets(ids, rows, vocab, ignore_index, as_stream(stream));
}

void log_softmax_forward(const LogSoftmaxForwardProblem& p, std::uintptr_t stream) {
  if (p.rows == 0) return;
  visit_in_out(p.dtype, p.out_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    launch(log_softmax_forward_kernel<T, TOut>, row_blocks(p.rows), kRowThreads, 0, as_stream(stream),
           static_cast<const T*>(p.logits), static_cast<TOut*>(p.out), p.rows, p.vocab);
  });
  check_launch("log_softmax_forward");
}

void log_softmax_backward(const LogSoftmaxBackwardProblem& p, std::uintptr_t stream) {
  if (p.rows == 0) return;
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    const auto run = [&](auto grad) {
      using G = decltype(grad);
      launch(log_softmax_backward_kernel<T, G, TOut>, row_blocks(p.rows), kRowThreads, 0, as_stream(stream),
             static_cast<const G*>(p.grad_out), static_cast<const T*>(p.logits), static_cast<TOut*>(p.grad_logits),
             p.rows, p.vocab);
    };
    if (p.grad_out_dtype == DType::f32) {
      run(float{});
    } else {
      run(T{});
    }
  });
  check_launch("log_softmax_backward");
}

void token_logprob_forward(const TokenLogprobForwardProblem& p, std::uintptr_t stream) {
  require_valid_targets(p.target_ids, p.rows, p.vocab, p.ignore_index, as_stream(stream));
  if (p.rows == 0) return;
  visit_dtype(p.dtype, [&](auto in) {
    launch(token_logprob_forward_kernel<decltype(in)>, row_blocks(p.rows), kRowThreads, 0, as_stream(stream), p);
  });
  check_launch("token_logprob_forward");
}

void token_logprob_backward(const TokenLogprobBackwardProblem& p, std::uintptr_t stream) {
  require_valid_targets(p.target_ids, p.rows, p.vocab, p.ignore_index, as_stream(stream));
  if (p.rows == 0) return;
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    launch(token_logprob_backward_kernel<decltype(in), decltype(out)>, row_blocks(p.rows), kRowThreads, 0,
           as_stream(stream), p);
  });
  check_launch("token_logprob_backward");
}

void entropy_forward(const EntropyForwardProblem& p, std::uintptr_t stream) {
  if (p.rows == 0) return;
  visit_dtype(p.dtype, [&](auto in) {
    launch(entropy_forward_kernel<decltype(in)>, row_blocks(p.rows), kRowThreads, 0, as_stream(stream), p);
  });
  check_launch("entropy_forward");
}

void entropy_backward(const EntropyBackwardProblem& p, std::uintptr_t stream) {
  if (p.rows == 0) return;
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    launch(entropy_backward_kernel<decltype(in), decltype(out)>, row_blocks(p.rows), kRowThreads, 0, as_stream(stream),
           p);
  });
  check_launch("entropy_backward");
}

void lse_partials(const LsePartialsProblem& p, std::uintptr_t stream) {
  if (p.rows == 0) return;
  visit_dtype(p.dtype, [&](auto in) {
    launch(lse_partials_kernel<decltype(in)>, row_blocks(p.rows), kRowThreads, 0, as_stream(stream), p);
  });
  check_launch("lse_partials");
}

void merge_lse_partials(const MergeLsePartialsProblem& p, std::uintptr_t stream) {
  if (p.rows == 0) return;
  launch(merge_lse_partials_kernel, thread_blocks(p.rows), kPerRowThreads, 0, as_stream(stream), p);
  check_launch("merge_lse_partials");
}

void entropy_partials(const EntropyPartialsProblem& p, std::uintptr_t stream) {
  if (p.rows == 0) return;
  visit_dtype(p.dtype, [&](auto in) {
    launch(entropy_partials_kernel<decltype(in)>, row_blocks(p.rows), kRowThreads, 0, as_stream(stream), p);
  });
  check_launch("entropy_partials");
}

void merge_entropy_partials(const MergeEntropyPartialsProblem& p, std::uintptr_t stream) {
  if (p.rows == 0) return;
  launch(merge_entropy_partials_kernel, thread_blocks(p.rows), kPerRowThreads, 0, as_stream(stream), p);
  check_launch("merge_entropy_partials");
}

void target_logits(const TargetLogitsProblem& p, std::uintptr_t stream) {
  require_valid_targets(p.target_ids, p.rows, p.vocab_size, p.ignore_index, as_stream(stream));
  if (p.rows == 0) return;
  visit_dtype(p.dtype, [&](auto in) {
    launch(target_logits_kernel<decltype(in)>, thread_blocks(p.rows), kPerRowThreads, 0, as_stream(stream), p);
  });
  check_launch("target_logits");
}

void logprob_from_partials(const LogprobFromPartialsProblem& p, std::uintptr_t stream) {
  if (p.rows == 0) return;
  launch(logprob_from_partials_kernel, thread_blocks(p.rows), kPerRowThreads, 0, as_stream(stream), p);
  check_launch("logprob_from_partials");
}

}  // namespace golden::gpu
