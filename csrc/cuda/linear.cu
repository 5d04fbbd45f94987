// Linear on the GPU: a CUDA-core tiled GEMM. Each thread owns a 4 x 4 set of
// outputs and runs their fma chains over each K-block in index order from shared
// memory tiles, then folds the block partial into the output's tree stack with
// core::tree_fold_leaf. Operands, order and rounding: csrc/core/ops/linear.h.
#include "../core/ops/linear.h"
#include "gpu_runtime.h"
#include "kernels.h"

#include <stdexcept>

namespace golden::gpu {
namespace {

constexpr int kTileRows = 64;  // outputs per block: kTileRows x kTileCols
constexpr int kTileCols = 64;
constexpr int kTileK = 16;     // contraction indices per shared-memory stage; divides kLinearKBlock
constexpr int kThreadsPerSide = 16;
constexpr int kThreads = kThreadsPerSide * kThreadsPerSide;
constexpr int kPerThread = kTileRows / kThreadsPerSide;  // 4 x 4 outputs per thread
constexpr int kStackSlots = 32;                           // tree stacks up to 2^31 K-blocks
constexpr int kMergeThreads = 256;
static_assert(kLinearKBlock % kTileK == 0, "a shared-memory stage never straddles K-blocks");

// Thread (ty, tx) owns rows ty + 16 i and columns tx + 16 j of the block's tile,
// so neighbouring threads write neighbouring columns.
template <class T, class TOut>
__global__ void contraction_kernel(core::LinearContraction<T> c, TOut* out, const T* bias) {
  GOLDEN_SHARED(float[kTileK][kTileRows], a_tile);
  GOLDEN_SHARED(float[kTileK][kTileCols], b_tile);
  const int tx = static_cast<int>(threadIdx.x) % kThreadsPerSide;
  const int ty = static_cast<int>(threadIdx.x) / kThreadsPerSide;
  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.y) * kTileRows;
  const std::int64_t col0 = static_cast<std::int64_t>(blockIdx.x) * kTileCols;
  const std::int64_t blocks = core::linear_block_count(c.k_len);

  float stack[kPerThread][kPerThread][kStackSlots];
  int height = 0;
  for (std::int64_t block = 0; block < blocks; ++block) {
    const std::int64_t end = core::linear_block_end(block, c.k_len);
    float acc[kPerThread][kPerThread] = {};
    for (std::int64_t k0 = block * kLinearKBlock; k0 < end; k0 += kTileK) {
      for (int e = static_cast<int>(threadIdx.x); e < kTileK * kTileRows; e += kThreads) {
        const int kk = e / kTileRows;
        const int i = e % kTileRows;
        const bool inside_k = k0 + kk < end;
        a_tile[kk][i] = inside_k && row0 + i < c.rows ? core::linear_a_at(c, row0 + i, k0 + kk) : 0.0f;
        b_tile[kk][i] = inside_k && col0 + i < c.cols ? core::linear_b_at(c, k0 + kk, col0 + i) : 0.0f;
      }
      __syncthreads();
      // Only real contraction indices enter a chain: fma(0, 0, -0) would turn -0 into +0.
      const int len = end - k0 < kTileK ? static_cast<int>(end - k0) : kTileK;
      for (int kk = 0; kk < len; ++kk) {
        for (int i = 0; i < kPerThread; ++i) {
          const float a = a_tile[kk][ty + kThreadsPerSide * i];
          for (int j = 0; j < kPerThread; ++j) {
            acc[i][j] = core::fma_rn(a, b_tile[kk][tx + kThreadsPerSide * j], acc[i][j]);
          }
        }
      }
      __syncthreads();
    }
    const int merges = core::tree_merges_after_leaf(block, blocks);
    for (int i = 0; i < kPerThread; ++i) {
      for (int j = 0; j < kPerThread; ++j) core::tree_fold_leaf(stack[i][j], height, acc[i][j], merges);
    }
    height = height - merges + 1;
  }
  for (int i = 0; i < kPerThread; ++i) {
    const std::int64_t m = row0 + ty + kThreadsPerSide * i;
    for (int j = 0; j < kPerThread; ++j) {
      const std::int64_t n = col0 + tx + kThreadsPerSide * j;
      if (m < c.rows && n < c.cols) out[m * c.cols + n] = core::linear_output<TOut>(stack[i][j][0], bias, n);
    }
  }
}

template <class T, class TOut>
__global__ void merge_kernel(const float* partials, const T* bias, TOut* y, std::int64_t shards, std::int64_t count,
                             std::int64_t out_features) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kMergeThreads + threadIdx.x;
  if (i >= count) return;
  const float sum = core::tree_reduce(partials + i, shards, count, core::AddCombine{});
  y[i] = core::linear_output<TOut>(sum, bias, i % out_features);
}

template <class T, class TOut>
void launch_contraction(const core::LinearContraction<T>& c, TOut* out, const T* bias, std::uintptr_t stream,
                        const char* what) {
  if (c.rows == 0 || c.cols == 0) return;
  if (core::tree_stack_slots(core::linear_block_count(c.k_len)) > kStackSlots) {
    throw std::runtime_error(std::string(what) + ": contraction too long for the GPU tree stack");
  }
  const dim3 grid(grid_for(c.cols, kTileCols), grid_for(c.rows, kTileRows, kMaxGridY));
  launch(contraction_kernel<T, TOut>, grid, kThreads, 0, as_stream(stream), c, out, bias);
  check_launch(what);
}

}  // namespace

void linear_forward(const LinearForwardProblem& p, std::uintptr_t stream) {
  visit_in_out(p.dtype, p.out_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    launch_contraction(core::linear_forward_contraction<T>(p), static_cast<decltype(out)*>(p.y),
                       static_cast<const T*>(p.bias), stream, "linear_forward");
  });
}

void linear_backward(const LinearBackwardProblem& p, std::uintptr_t stream) {
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    const T* no_bias = nullptr;
    if (p.dx != nullptr) {
      launch_contraction(core::linear_dx_contraction<T>(p), static_cast<TOut*>(p.dx), no_bias, stream,
                         "linear_backward (dx)");
    }
    if (p.dweight != nullptr) {
      launch_contraction(core::linear_dweight_contraction<T>(p), static_cast<TOut*>(p.dweight), no_bias, stream,
                         "linear_backward (dweight)");
    }
    if (p.dbias != nullptr) {
      launch_contraction(core::linear_dbias_contraction<T>(p), static_cast<TOut*>(p.dbias), no_bias, stream,
                         "linear_backward (dbias)");
    }
  });
}

void linear_merge(const LinearMergeProblem& p, std::uintptr_t stream) {
  if (p.count == 0) return;
  visit_in_out(p.bias_dtype, p.out_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    launch(merge_kernel<T, decltype(out)>, grid_for(p.count, kMergeThreads), kMergeThreads, 0, as_stream(stream),
           p.partials, static_cast<const T*>(p.bias), static_cast<decltype(out)*>(p.y), p.shards, p.count,
           p.out_features);
  });
  check_launch("linear_merge");
}

}  // namespace golden::gpu
