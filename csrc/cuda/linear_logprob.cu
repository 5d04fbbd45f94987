// Fused lm_head + token logprob (+ entropy) on the GPU, forward and backward,
// without the full logits. Forward: per token tile and vocabulary chunk (core
// kRowBlock) the chunk's fp32 logits come from the GPU linear kernel (linear.cu:
// the bits of lm_head.forward_fp32); one warp per row folds them into the row's
// chunk partial (WarpRow worker); after the last chunk one thread per row merges
// the partials by the canonical tree; the logits are copied out to a caller's
// buffer when asked, and read from it by the backward. Backward: the CPU driver's steps
// (csrc/cpu/linear_logprob.cpp) as launches of the GPU linear kernels and of
// elementwise kernels on the core's functions. All arithmetic is in
// csrc/core/ops/logprob.h and linear.h, the same functions the CPU path calls.
#include <cstddef>
#include <type_traits>

#include "../core/ops/linear.h"
#include "../core/ops/logprob.h"
#include "gpu_runtime.h"
#include "kernels.h"
#include "warp_row.cuh"

namespace golden::gpu {
namespace {

using Index = std::int64_t;

// Rows per tile: the tile's chunk of logits (1024 x 4096 fp32, 16 MiB) is all
// the op holds of the logits. Changes no bit.
constexpr Index kTokenTile = 1024;
constexpr int kWarpsPerBlock = 4;
constexpr int kRowThreads = kWarpsPerBlock * core::kLanes;
constexpr int kPerRowThreads = 256;
constexpr char kScratch[] = "linear_logprob scratch (alloc)";

template <bool kWithEntropy>
using PartialOf = std::conditional_t<kWithEntropy, core::EntropyPartial, core::LsePartial>;

template <bool kWithEntropy>
using MergeOf = std::conditional_t<kWithEntropy, core::MergeEntropy, core::MergeLse>;

// Where a vocabulary stream gets and leaves all rows' logits ([rows, vocab]
// row-major, each nullable): `saved` is read instead of computing them (the
// forward's: the same bits), `keep` receives them.
struct LogitStore {
  const float* saved;
  float* keep;
};

// dst[r * dst_stride + i] = src[r * src_stride + i] for r < rows, i < width.
__global__ void copy_rows_kernel(const float* src, Index src_stride, float* dst, Index dst_stride, Index rows,
                                 Index width) {
  const Index e = static_cast<Index>(blockIdx.x) * kPerRowThreads + threadIdx.x;
  if (e >= rows * width) return;
  const Index r = e / width;
  const Index i = e % width;
  dst[r * dst_stride + i] = src[r * src_stride + i];
}

void copy_rows(const float* src, Index src_stride, float* dst, Index dst_stride, Index rows, Index width,
               cudaStream_t stream) {
  launch(copy_rows_kernel, grid_for(rows * width, kPerRowThreads), kPerRowThreads, 0, stream, src, src_stride, dst,
         dst_stride, rows, width);
  check_launch("linear_logprob (copy logits)");
}

struct ChunkFold {
  const float* logits;  // [rows, stride]: this chunk's logits in the first end - begin columns
  Index stride;
  Index rows;
  Index begin;
  Index end;
  Index chunk;
  Index chunks;
  Index row0;  // of the tile, for the target ids
  TargetIds target_ids;
  float* target_logits;  // [rows]
};

// One warp per row: the row's partial of this chunk, as token_logprob (or entropy) computes it.
template <bool kWithEntropy>
__global__ void fold_chunk_kernel(ChunkFold f, PartialOf<kWithEntropy>* partials) {
  const Index row = static_cast<Index>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / core::kLanes;
  if (row >= f.rows) return;
  const WarpRow worker{static_cast<int>(threadIdx.x % core::kLanes)};
  const float* x = f.logits + row * f.stride;
  const Index begin = f.begin;
  auto load = [x, begin](Index i) { return x[i - begin]; };
  PartialOf<kWithEntropy> partial;
  if constexpr (kWithEntropy) {
    partial = core::entropy_chunk_partial(load, f.begin, f.end, worker);
  } else {
    partial = core::lse_chunk_partial(load, f.begin, f.end, worker);
  }
  if (worker.lane != 0) return;
  partials[row * f.chunks + f.chunk] = partial;
  const std::int64_t target = f.target_ids[f.row0 + row];
  if (target >= f.begin && target < f.end) f.target_logits[row] = x[target - f.begin];
}

// One thread per row: the chunk partials merged by the canonical tree, handed
// to finish(row, merged partial, target logit).
template <bool kWithEntropy, class Finish>
__global__ void finish_rows_kernel(Finish finish, Index row0, Index rows, Index chunks,
                                   const PartialOf<kWithEntropy>* partials, const float* target_logits) {
  const Index r = static_cast<Index>(blockIdx.x) * kPerRowThreads + threadIdx.x;
  if (r >= rows) return;
  const PartialOf<kWithEntropy>* row_partials = partials + r * chunks;
  const auto merged = core::tree_reduce_partials<PartialOf<kWithEntropy>>(
      0, chunks, [row_partials](Index c) { return row_partials[c]; }, MergeOf<kWithEntropy>{});
  finish(row0 + r, merged, target_logits[r]);
}

// out[n, width] = fp32 logits of rows [row0, row0 + n) for vocabulary [begin, begin + width).
template <class T>
void chunk_logits(const LinearLogprobOperands& p, Index row0, Index n, Index begin, Index width, float* out,
                  cudaStream_t stream) {
  const T* hidden = static_cast<const T*>(p.hidden) + row0 * p.hidden_size;
  const T* weight = static_cast<const T*>(p.weight) + begin * p.hidden_size;
  linear_forward(LinearForwardProblem{hidden, weight, nullptr, out, p.dtype, DType::f32, n, p.hidden_size, width},
                 reinterpret_cast<std::uintptr_t>(stream));
}

// Streams the vocabulary for every row; finish (a device functor) gets each
// row's merged partial. The logits are taken from and left in `store`.
template <class T, bool kWithEntropy, class Finish>
void stream_row_partials(const LinearLogprobOperands& p, Finish finish, LogitStore store, cudaStream_t stream) {
  using Partial = PartialOf<kWithEntropy>;
  const Index chunks = core::ceil_div(p.vocab, core::kRowBlock);
  const Index tile = p.rows < kTokenTile ? p.rows : kTokenTile;
  const Index scratch = store.saved != nullptr ? 1 : tile * core::kRowBlock;
  DeviceBuffer logits(static_cast<std::size_t>(scratch) * sizeof(float), stream, kScratch);
  DeviceBuffer partials(static_cast<std::size_t>(tile * chunks) * sizeof(Partial), stream, kScratch);
  DeviceBuffer target_logits(static_cast<std::size_t>(tile) * sizeof(float), stream, kScratch);
  for (Index row0 = 0; row0 < p.rows; row0 += tile) {
    const Index rows = p.rows - row0 < tile ? p.rows - row0 : tile;
    // Ignored targets read no logit; +0 keeps the buffer defined.
    check(cudaMemsetAsync(target_logits.as<float>(), 0, rows * sizeof(float), stream), "linear_logprob (memset)");
    for (Index c = 0; c < chunks; ++c) {
      const Index begin = c * core::kRowBlock;
      const Index end = core::chunk_end(c, p.vocab);
      const float* chunk = logits.as<float>();  // [rows, stride]
      Index stride = end - begin;
      if (store.saved != nullptr) {
        chunk = store.saved + row0 * p.vocab + begin;
        stride = p.vocab;
      } else {
        chunk_logits<T>(p, row0, rows, begin, end - begin, logits.as<float>(), stream);
      }
      if (store.keep != nullptr) {
        copy_rows(chunk, stride, store.keep + row0 * p.vocab + begin, p.vocab, rows, end - begin, stream);
      }
      const ChunkFold fold{chunk, stride, rows, begin, end, c, chunks, row0, p.target_ids, target_logits.as<float>()};
      launch(fold_chunk_kernel<kWithEntropy>, grid_for(rows, kWarpsPerBlock), kRowThreads, 0, stream, fold,
             partials.as<Partial>());
      check_launch("linear_logprob (fold)");
    }
    launch(finish_rows_kernel<kWithEntropy, Finish>, grid_for(rows, kPerRowThreads), kPerRowThreads, 0, stream, finish,
           row0, rows, chunks, partials.as<Partial>(), target_logits.as<float>());
    check_launch("linear_logprob (finish)");
  }
}

template <bool kWithEntropy>
struct WriteOutputs {
  LinearLogprobForwardProblem p;
  __device__ void operator()(Index row, const PartialOf<kWithEntropy>& merged, float target_logit) const {
    core::linear_logprob_outputs(p, row, merged, target_logit);
  }
};

// ---- Backward: the CPU driver's steps (csrc/cpu/linear_logprob.cpp), as launches. ----

// Rows per backward tile: one K-block of the weight gradient's contraction over tokens.
constexpr Index kGradTile = kLinearKBlock;
// Vocabulary rows per step of the weight-gradient pass. Changes no bit.
constexpr Index kWeightSlice = 1024;
constexpr int kElementThreads = 256;

template <bool kWithEntropy>
struct WriteRowStats {
  const float* grad_entropy;
  float* lse;
  core::EntropyGradRow* entropy_rows;
  __device__ void operator()(Index row, const PartialOf<kWithEntropy>& merged, float) const {
    core::linear_logprob_row_stats(grad_entropy, row, merged, lse, entropy_rows);
  }
};

// Each row's statistics from the forward's entropy_partial (instead of the pass).
__global__ void saved_row_stats_kernel(LinearLogprobBackwardProblem p, float* lse, core::EntropyGradRow* entropy_rows) {
  const Index row = static_cast<Index>(blockIdx.x) * kPerRowThreads + threadIdx.x;
  if (row < p.rows) core::linear_logprob_saved_row_stats(p, row, lse, entropy_rows);
}

struct GradRows {
  const float* grad_logprob;
  TargetIds target_ids;
  std::int64_t ignore_index;
  const float* lse;
  const core::EntropyGradRow* entropy_rows;  // or nullptr
};

// logits[n, width] become d = token_logprob_grad (+ entropy_grad) in place, one thread per element.
__global__ void logits_to_grad_kernel(GradRows g, float* logits, Index row0, Index n, Index begin, Index width) {
  const Index e = static_cast<Index>(blockIdx.x) * kElementThreads + threadIdx.x;
  if (e >= n * width) return;
  const Index row = row0 + e / width;
  const Index i = begin + e % width;
  const std::int64_t target = g.target_ids[row];
  const float x = logits[e];
  float d = target == g.ignore_index ? 0.0f
                                     : core::token_logprob_grad(g.grad_logprob[row], x, g.lse[row], i == target);
  if (g.entropy_rows != nullptr) d = core::add_entropy_grad(d, x, g.entropy_rows[row]);
  logits[e] = d;
}

// left[i] = left[i] + right[i]: one tree node of core::tree_fold_leaf, for every element.
__global__ void add_into_kernel(float* left, const float* right, Index count) {
  const Index i = static_cast<Index>(blockIdx.x) * kElementThreads + threadIdx.x;
  if (i < count) left[i] = left[i] + right[i];
}

template <class TOut>
__global__ void store_rounded_kernel(const float* values, TOut* out, Index count) {
  const Index i = static_cast<Index>(blockIdx.x) * kElementThreads + threadIdx.x;
  if (i < count) out[i] = core::linear_logprob_grad_output<TOut>(values[i]);
}

// The CPU's TreeStacks in device memory: leaf values are written into
// next_leaf() in order, fold_leaf() completes the tree nodes the leaf ends
// (left + right), and root() holds the tree's value after the last leaf.
class TreeStacks {
 public:
  TreeStacks(Index leaves, Index floats, cudaStream_t stream)
      : leaves_(leaves),
        floats_(floats),
        stream_(stream),
        buffer_(static_cast<std::size_t>(core::tree_stack_slots(leaves) * floats + 1) * sizeof(float), stream,
                kScratch) {}
  void reset() { height_ = 0; }
  float* next_leaf() const { return slot(height_); }
  const float* root() const { return slot(0); }
  void fold_leaf(Index leaf) {
    int top = height_;
    for (int m = core::tree_merges_after_leaf(leaf, leaves_); m > 0; --m, --top) {
      launch(add_into_kernel, grid_for(floats_, kElementThreads), kElementThreads, 0, stream_, slot(top - 1), slot(top),
             floats_);
      check_launch("linear_logprob_backward (tree)");
    }
    height_ = top + 1;
  }

 private:
  float* slot(int level) const { return buffer_.as<float>() + level * floats_; }
  Index leaves_;
  Index floats_;
  cudaStream_t stream_;
  DeviceBuffer buffer_;
  int height_ = 0;
};

template <class T, class TOut>
struct FusedBackward {
  const LinearLogprobBackwardProblem& p;
  LinearLogprobOperands operands;
  GradRows grad_rows;
  const float* hidden_f32;  // hidden widened (exact): the weight gradient's operand
  const float* saved_logits;  // the forward's [rows, vocab], or nullptr: recomputed
  cudaStream_t stream;

  std::uintptr_t raw_stream() const { return reinterpret_cast<std::uintptr_t>(stream); }

  // fp32 gradient of the logits of rows [row0, row0 + n) x vocabulary [begin, begin + width).
  void grad_logits(Index row0, Index n, Index begin, Index width, float* out) const {
    if (saved_logits != nullptr) {
      copy_rows(saved_logits + row0 * p.vocab + begin, p.vocab, out, width, n, width, stream);
    } else {
      chunk_logits<T>(operands, row0, n, begin, width, out, stream);
    }
    launch(logits_to_grad_kernel, grid_for(n * width, kElementThreads), kElementThreads, 0, stream, grad_rows, out,
           row0, n, begin, width);
    check_launch("linear_logprob_backward (grad)");
  }

  void store(const float* values, TOut* out, Index count) const {
    launch(store_rounded_kernel<TOut>, grid_for(count, kElementThreads), kElementThreads, 0, stream, values, out,
           count);
    check_launch("linear_logprob_backward (store)");
  }

  // Weight rows [begin, begin + len) in fp32: the pointer itself for fp32 weights.
  const float* weight_f32(Index begin, Index len, float* buffer) const {
    const T* rows = static_cast<const T*>(p.weight) + begin * p.hidden_size;
    if constexpr (std::is_same_v<T, float>) {
      return rows;
    } else {
      convert(rows, p.dtype, buffer, DType::f32, len * p.hidden_size, raw_stream());
      return buffer;
    }
  }

  // out[n, H]: the K-block partial of linear backward's dx over these vocabulary entries.
  void hidden_block(const float* d, const float* weight, Index n, Index len, float* out) const {
    linear_backward(LinearBackwardProblem{d, nullptr, weight, out, nullptr, nullptr, DType::f32, DType::f32, n,
                                          p.hidden_size, len},
                    raw_stream());
  }

  // out[len, H]: the K-block partial of linear backward's dweight over this tile's rows.
  void weight_block(const float* d, Index row0, Index n, Index len, float* out) const {
    linear_backward(LinearBackwardProblem{d, hidden_f32 + row0 * p.hidden_size, nullptr, nullptr, out, nullptr,
                                          DType::f32, DType::f32, n, p.hidden_size, len},
                    raw_stream());
  }

  // Tile by tile, one vocabulary K-block at a time (the block's logits recomputed
  // as an [n, 256] problem: a logit's bits do not depend on the problem's width).
  void hidden_pass(bool with_weight) const {
    const Index tile = p.rows < kGradTile ? p.rows : kGradTile;
    const bool with_hidden = p.grad_hidden != nullptr;
    TreeStacks dx(with_hidden ? core::linear_block_count(p.vocab) : 1, with_hidden ? tile * p.hidden_size : 0,
                  stream);
    DeviceBuffer d(static_cast<std::size_t>(tile * kLinearKBlock) * sizeof(float), stream, kScratch);
    const bool widen = !std::is_same_v<T, float>;
    DeviceBuffer w_block(static_cast<std::size_t>(widen ? kLinearKBlock * p.hidden_size : 1) * sizeof(float),
                         stream, kScratch);
    DeviceBuffer dw_block(static_cast<std::size_t>(with_weight ? kLinearKBlock * p.hidden_size : 1) * sizeof(float),
                          stream, kScratch);
    for (Index row0 = 0; row0 < p.rows; row0 += tile) {
      const Index n = p.rows - row0 < tile ? p.rows - row0 : tile;
      dx.reset();
      for (Index k0 = 0; k0 < p.vocab; k0 += kLinearKBlock) {
        const Index len = p.vocab - k0 < kLinearKBlock ? p.vocab - k0 : kLinearKBlock;
        grad_logits(row0, n, k0, len, d.as<float>());
        if (with_hidden) {
          hidden_block(d.as<float>(), weight_f32(k0, len, w_block.as<float>()), n, len, dx.next_leaf());
          dx.fold_leaf(k0 / kLinearKBlock);
        }
        if (with_weight) {
          weight_block(d.as<float>(), row0, n, len, dw_block.as<float>());
          store(dw_block.as<float>(), static_cast<TOut*>(p.grad_weight) + k0 * p.hidden_size, len * p.hidden_size);
        }
      }
      if (with_hidden) store(dx.root(), static_cast<TOut*>(p.grad_hidden) + row0 * p.hidden_size, n * p.hidden_size);
    }
  }

  // Slice by slice of the vocabulary: grad_weight over the token tiles (its K-blocks).
  void weight_pass() const {
    const Index tiles = core::ceil_div(p.rows, kGradTile);
    const Index slice = p.vocab < kWeightSlice ? p.vocab : kWeightSlice;
    TreeStacks dw(tiles, slice * p.hidden_size, stream);
    DeviceBuffer d(static_cast<std::size_t>(kGradTile * slice) * sizeof(float), stream, kScratch);
    for (Index v0 = 0; v0 < p.vocab; v0 += slice) {
      const Index width = p.vocab - v0 < slice ? p.vocab - v0 : slice;
      dw.reset();
      for (Index t = 0; t < tiles; ++t) {
        const Index row0 = t * kGradTile;
        const Index n = p.rows - row0 < kGradTile ? p.rows - row0 : kGradTile;
        grad_logits(row0, n, v0, width, d.as<float>());
        weight_block(d.as<float>(), row0, n, width, dw.next_leaf());
        dw.fold_leaf(t);
      }
      store(dw.root(), static_cast<TOut*>(p.grad_weight) + v0 * p.hidden_size, width * p.hidden_size);
    }
  }

  void run() const {
    const bool one_tile = p.rows <= kGradTile;
    const bool with_weight = p.grad_weight != nullptr;
    if (p.grad_hidden != nullptr || (with_weight && one_tile)) hidden_pass(with_weight && one_tile);
    if (with_weight && !one_tile) weight_pass();
  }
};

template <class T, class TOut>
void fused_backward(const LinearLogprobBackwardProblem& p, cudaStream_t stream) {
  const bool with_entropy = p.grad_entropy != nullptr;
  // The forward's statistics (bitwise the statistics pass's) skip that pass.
  const core::RowStatsSource source = core::row_stats_source(p);
  const bool forward_lse = source == core::RowStatsSource::forward_lse;
  DeviceBuffer lse(static_cast<std::size_t>(forward_lse ? 1 : p.rows) * sizeof(float), stream, kScratch);
  DeviceBuffer entropy_rows(static_cast<std::size_t>(with_entropy ? p.rows : 1) * sizeof(core::EntropyGradRow),
                            stream, kScratch);
  auto* rows = entropy_rows.as<core::EntropyGradRow>();
  const LinearLogprobOperands operands = core::linear_logprob_operands(p);
  const LogitStore store{p.logits, nullptr};
  switch (source) {
    case core::RowStatsSource::forward_partial:
      launch(saved_row_stats_kernel, grid_for(p.rows, kPerRowThreads), kPerRowThreads, 0, stream, p, lse.as<float>(),
             rows);
      check_launch("linear_logprob_backward (saved statistics)");
      break;
    case core::RowStatsSource::entropy_pass:
      stream_row_partials<T, true>(operands, WriteRowStats<true>{p.grad_entropy, lse.as<float>(), rows}, store,
                                   stream);
      break;
    case core::RowStatsSource::lse_pass:
      stream_row_partials<T, false>(operands, WriteRowStats<false>{nullptr, lse.as<float>(), nullptr}, store, stream);
      break;
    case core::RowStatsSource::forward_lse:
      break;
  }
  const bool widen = !std::is_same_v<T, float> && p.grad_weight != nullptr;
  DeviceBuffer hidden_wide(static_cast<std::size_t>(widen ? p.rows * p.hidden_size : 1) * sizeof(float), stream,
                           kScratch);
  if (widen) {
    convert(p.hidden, p.dtype, hidden_wide.as<float>(), DType::f32, p.rows * p.hidden_size,
            reinterpret_cast<std::uintptr_t>(stream));
  }
  // Read only when grad_weight is wanted (then it is fp32 data).
  const float* hidden_f32 = widen ? hidden_wide.as<float>() : static_cast<const float*>(p.hidden);
  const GradRows grad_rows{p.grad_logprob, p.target_ids, p.ignore_index, forward_lse ? p.lse : lse.as<float>(),
                           with_entropy ? rows : nullptr};
  FusedBackward<T, TOut>{p, core::linear_logprob_operands(p), grad_rows, hidden_f32, p.logits, stream}.run();
}

}  // namespace

void linear_logprob_forward(const LinearLogprobForwardProblem& p, std::uintptr_t stream) {
  require_valid_target_ids(p.target_ids, p.rows, p.vocab, p.ignore_index, stream);
  if (p.rows == 0) return;
  visit_dtype(p.dtype, [&](auto in) {
    using T = decltype(in);
    const LinearLogprobOperands operands = core::linear_logprob_operands(p);
    const LogitStore store{nullptr, p.logits};
    if (core::linear_logprob_streams_entropy(p)) {
      stream_row_partials<T, true>(operands, WriteOutputs<true>{p}, store, as_stream(stream));
    } else {
      stream_row_partials<T, false>(operands, WriteOutputs<false>{p}, store, as_stream(stream));
    }
  });
}

void linear_logprob_backward(const LinearLogprobBackwardProblem& p, std::uintptr_t stream) {
  require_valid_target_ids(p.target_ids, p.rows, p.vocab, p.ignore_index, stream);
  if (p.rows == 0) {
    if (p.grad_weight == nullptr) return;
    const std::size_t element_bytes = p.grad_dtype == DType::f32 ? sizeof(float) : sizeof(std::uint16_t);
    const std::size_t bytes = static_cast<std::size_t>(p.vocab * p.hidden_size) * element_bytes;
    check(cudaMemsetAsync(p.grad_weight, 0, bytes, as_stream(stream)), "linear_logprob_backward (zero)");  // +0
    return;
  }
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    fused_backward<decltype(in), decltype(out)>(p, as_stream(stream));
  });
}

}  // namespace golden::gpu
