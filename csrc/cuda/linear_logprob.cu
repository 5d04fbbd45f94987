// Fused lm_head + token logprob (+ entropy) forward on the GPU without the full
// logits. Per token tile and vocabulary chunk (core kRowBlock) the chunk's fp32
// logits come from the GPU linear kernel (linear.cu: the bits of
// lm_head.forward_fp32); one warp per row folds them into the row's chunk
// partial with the WarpRow worker; after the last chunk one thread per row merges
// the partials by the canonical tree. All arithmetic is in csrc/core/ops/logprob.h
// and linear.h, the same functions the CPU path calls.
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

template <bool kWithEntropy>
using PartialOf = std::conditional_t<kWithEntropy, core::EntropyPartial, core::LsePartial>;

template <bool kWithEntropy>
using MergeOf = std::conditional_t<kWithEntropy, core::MergeEntropy, core::MergeLse>;

// Device scratch owned by a scope, released on the stream.
class DeviceBuffer {
 public:
  DeviceBuffer(std::size_t bytes, cudaStream_t stream) : stream_(stream) {
    check(cudaMallocAsync(&data_, bytes, stream), "linear_logprob scratch (alloc)");
  }
  ~DeviceBuffer() { cudaFreeAsync(data_, stream_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void* data_ = nullptr;
  cudaStream_t stream_;
};

struct ChunkFold {
  const float* logits;  // [rows, end - begin] of this chunk
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
  const float* x = f.logits + row * (f.end - f.begin);
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

// One thread per row: the chunk partials merged by the canonical tree.
template <bool kWithEntropy>
__global__ void finish_rows_kernel(LinearLogprobForwardProblem p, Index row0, Index rows, Index chunks,
                                   const PartialOf<kWithEntropy>* partials, const float* target_logits) {
  const Index r = static_cast<Index>(blockIdx.x) * kPerRowThreads + threadIdx.x;
  if (r >= rows) return;
  const PartialOf<kWithEntropy>* row_partials = partials + r * chunks;
  const auto merged = core::tree_reduce_partials<PartialOf<kWithEntropy>>(
      0, chunks, [row_partials](Index c) { return row_partials[c]; }, MergeOf<kWithEntropy>{});
  p.logprob[row0 + r] = core::logprob_from_partial(target_logits[r], core::LsePartial{merged.max, merged.sum},
                                                   p.target_ids[row0 + r], p.ignore_index);
  if constexpr (kWithEntropy) p.entropy[row0 + r] = core::entropy_of(merged);
}

template <class T, bool kWithEntropy>
void fused_forward(const LinearLogprobForwardProblem& p, cudaStream_t stream) {
  using Partial = PartialOf<kWithEntropy>;
  const Index chunks = core::ceil_div(p.vocab, core::kRowBlock);
  const Index tile = p.rows < kTokenTile ? p.rows : kTokenTile;
  DeviceBuffer logits(static_cast<std::size_t>(tile * core::kRowBlock) * sizeof(float), stream);
  DeviceBuffer partials(static_cast<std::size_t>(tile * chunks) * sizeof(Partial), stream);
  DeviceBuffer target_logits(static_cast<std::size_t>(tile) * sizeof(float), stream);
  const T* hidden = static_cast<const T*>(p.hidden);
  const T* weight = static_cast<const T*>(p.weight);
  const auto raw_stream = reinterpret_cast<std::uintptr_t>(stream);
  for (Index row0 = 0; row0 < p.rows; row0 += tile) {
    const Index rows = p.rows - row0 < tile ? p.rows - row0 : tile;
    // Ignored targets read no logit; +0 keeps the buffer defined.
    check(cudaMemsetAsync(target_logits.as<float>(), 0, rows * sizeof(float), stream), "linear_logprob (memset)");
    for (Index c = 0; c < chunks; ++c) {
      const Index begin = c * core::kRowBlock;
      const Index end = core::chunk_end(c, p.vocab);
      linear_forward(LinearForwardProblem{hidden + row0 * p.hidden_size, weight + begin * p.hidden_size, nullptr,
                                          logits.as<float>(), p.dtype, DType::f32, rows, p.hidden_size, end - begin},
                     raw_stream);
      const ChunkFold fold{logits.as<float>(), rows, begin, end, c, chunks, row0, p.target_ids,
                           target_logits.as<float>()};
      fold_chunk_kernel<kWithEntropy>
          <<<grid_for(rows, kWarpsPerBlock), kRowThreads, 0, stream>>>(fold, partials.as<Partial>());
      check_launch("linear_logprob_forward (fold)");
    }
    finish_rows_kernel<kWithEntropy><<<grid_for(rows, kPerRowThreads), kPerRowThreads, 0, stream>>>(
        p, row0, rows, chunks, partials.as<Partial>(), target_logits.as<float>());
    check_launch("linear_logprob_forward (finish)");
  }
}

}  // namespace

void linear_logprob_forward(const LinearLogprobForwardProblem& p, std::uintptr_t stream) {
  require_valid_target_ids(p.target_ids, p.rows, p.vocab, p.ignore_index, stream);
  if (p.rows == 0) return;
  visit_dtype(p.dtype, [&](auto in) {
    using T = decltype(in);
    if (p.entropy != nullptr) {
      fused_forward<T, true>(p, as_stream(stream));
    } else {
      fused_forward<T, false>(p, as_stream(stream));
    }
  });
}

}  // namespace golden::gpu
