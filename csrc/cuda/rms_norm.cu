// RMSNorm on the GPU. Forward: one warp per row running core::rms_norm_forward_row
// with the WarpRow worker. Backward: each row's coefficients (one warp per
// row), then one thread block per (kRmsNormGradRowBlock rows, 256 columns)
// folding its rows in order per column, as the CPU does, then a per-column
// core::tree_reduce. All arithmetic is in csrc/core/ops/rms_norm.h.
#include "../core/ops/rms_norm.h"
#include "gpu_runtime.h"
#include "kernels.h"
#include "warp_row.cuh"

namespace golden::gpu {
namespace {

constexpr int kForwardWarpsPerBlock = 4;
constexpr int kGradThreads = 256;
constexpr int kMergeThreads = 256;

__device__ WarpRow this_lane() { return WarpRow{static_cast<int>(threadIdx.x % core::kLanes)}; }
__device__ int this_warp() { return static_cast<int>(threadIdx.x / core::kLanes); }

template <class T, class TOut>
__global__ void forward_kernel(const T* x, const T* weight, TOut* y, std::int64_t rows,
                               std::int64_t cols, float eps, RmsNormRounding rounding) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kForwardWarpsPerBlock + this_warp();
  if (row >= rows) return;  // whole warps leave together: shuffles stay full
  core::rms_norm_forward_row(x + row * cols, weight, y + row * cols, cols, eps, rounding,
                             this_lane());
}

// Each row's (r, c) gradient coefficients: one warp per row, as the forward.
template <class T>
__global__ void grad_coefficients_kernel(const T* grad_out, const T* x, const T* weight,
                                         core::RmsNormGradCoefficients* coefficients, std::int64_t rows,
                                         std::int64_t cols, float eps) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kForwardWarpsPerBlock + this_warp();
  if (row >= rows) return;
  const std::int64_t offset = row * cols;
  const WarpRow worker = this_lane();
  const core::RmsNormGradCoefficients k =
      core::rms_norm_grad_coefficients(grad_out + offset, x + offset, weight, cols, eps, worker);
  if (worker.lane == 0) coefficients[row] = k;
}

// Block (b, chunk) owns rows [b * kRmsNormGradRowBlock, ...) and kGradThreads
// columns from chunk * kGradThreads: thread t writes its column's dx and folds
// the column's weight-gradient terms row by row in index order into row b of
// the partials (the CPU's blocks and order; the grid only spreads the columns).
template <class T, class TOut>
__global__ void backward_block_kernel(const T* grad_out, const T* x, const T* weight,
                                      const core::RmsNormGradCoefficients* coefficients, TOut* dx,
                                      float* partials, std::int64_t rows, std::int64_t cols) {
  const std::int64_t col = static_cast<std::int64_t>(blockIdx.y) * kGradThreads + threadIdx.x;
  if (col >= cols) return;
  const std::int64_t begin = static_cast<std::int64_t>(blockIdx.x) * kRmsNormGradRowBlock;
  const std::int64_t end = begin + kRmsNormGradRowBlock < rows ? begin + kRmsNormGradRowBlock : rows;
  const float w = core::to_float(weight[col]);
  float acc = 0.0f;
  for (std::int64_t row = begin; row < end; ++row) {
    const float g = core::to_float(grad_out[row * cols + col]);
    const float xi = core::to_float(x[row * cols + col]);
    const core::RmsNormGradCoefficients k = coefficients[row];
    dx[row * cols + col] = core::from_float<TOut>(core::rms_norm_dx(g, xi, w, k));
    acc = core::rms_norm_fold_dweight(acc, g, xi, k.r);
  }
  partials[static_cast<std::int64_t>(blockIdx.x) * cols + col] = acc;
}

template <class TOut>
__global__ void merge_dweight_kernel(const float* partials, TOut* dweight, std::int64_t blocks,
                                     std::int64_t cols) {
  const std::int64_t col = static_cast<std::int64_t>(blockIdx.x) * kMergeThreads + threadIdx.x;
  if (col >= cols) return;
  dweight[col] = core::rms_norm_merge_dweight<TOut>(partials, blocks, cols, col);
}

}  // namespace

void rms_norm_forward(const RmsNormForwardProblem& p, std::uintptr_t stream) {
  if (p.rows == 0) return;
  visit_in_out(p.dtype, p.out_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    launch(forward_kernel<T, TOut>, grid_for(p.rows, kForwardWarpsPerBlock), kForwardWarpsPerBlock * core::kLanes, 0,
           as_stream(stream), static_cast<const T*>(p.x), static_cast<const T*>(p.weight), static_cast<TOut*>(p.y),
           p.rows, p.cols, p.eps, p.rounding);
  });
  check_launch("rms_norm_forward");
}

void rms_norm_backward(const RmsNormBackwardProblem& p, std::uintptr_t stream) {
  const std::int64_t blocks = core::ceil_div(p.rows, kRmsNormGradRowBlock);
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    if (blocks > 0 && p.cols > 0) {
      const cudaStream_t s = as_stream(stream);
      DeviceBuffer coefficients(static_cast<std::size_t>(p.rows) * sizeof(core::RmsNormGradCoefficients), s,
                                "rms_norm_backward scratch (alloc)");
      auto* k = coefficients.as<core::RmsNormGradCoefficients>();
      launch(grad_coefficients_kernel<T>, grid_for(p.rows, kForwardWarpsPerBlock), kForwardWarpsPerBlock * core::kLanes,
             0, s, static_cast<const T*>(p.grad_out), static_cast<const T*>(p.x), static_cast<const T*>(p.weight), k,
             p.rows, p.cols, p.eps);
      check_launch("rms_norm_backward (row coefficients)");
      const dim3 grid(grid_for(blocks, 1), grid_for(p.cols, kGradThreads, kMaxGridY));
      launch(backward_block_kernel<T, TOut>, grid, kGradThreads, 0, s, static_cast<const T*>(p.grad_out),
             static_cast<const T*>(p.x), static_cast<const T*>(p.weight), k, static_cast<TOut*>(p.dx),
             p.dweight_partials, p.rows, p.cols);
      check_launch("rms_norm_backward (row blocks)");
    }
    launch(merge_dweight_kernel<TOut>, grid_for(p.cols, kMergeThreads), kMergeThreads, 0, as_stream(stream),
           p.dweight_partials, static_cast<TOut*>(p.dweight), blocks, p.cols);
    check_launch("rms_norm_backward (dweight merge)");
  });
}

}  // namespace golden::gpu
