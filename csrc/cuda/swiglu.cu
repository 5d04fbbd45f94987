// SiLU and SwiGLU on the GPU: one thread per element in a grid-stride loop
// over a fixed grid, each element computed by the core's *_span loops with
// n = 1 (csrc/core/ops/swiglu.h). Elements are independent, so the launch
// shape cannot change any bit.
#include "../core/ops/swiglu.h"
#include "gpu_runtime.h"
#include "kernels.h"

namespace golden::gpu {
namespace {

constexpr int kThreads = 256;
constexpr std::int64_t kMaxBlocks = 1 << 16;

unsigned blocks_for(std::int64_t count) {
  const std::int64_t wanted = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned>(wanted < kMaxBlocks ? wanted : kMaxBlocks);
}

__device__ std::int64_t first_index() { return static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ std::int64_t grid_stride() { return static_cast<std::int64_t>(gridDim.x) * blockDim.x; }

template <class T, class TOut>
__global__ void silu_forward_kernel(const T* x, TOut* y, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) core::silu_forward_span(x + i, y + i, 1);
}

template <class T, class TOut>
__global__ void silu_backward_kernel(const T* g, const T* x, TOut* dx, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    core::silu_backward_span(g + i, x + i, dx + i, 1);
  }
}

template <class T, class TOut>
__global__ void swiglu_forward_kernel(const T* gate, const T* up, TOut* y, std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    core::swiglu_forward_span(gate + i, up + i, y + i, 1);
  }
}

template <class T, class TOut>
__global__ void swiglu_backward_kernel(const T* g, const T* gate, const T* up, TOut* dgate, TOut* dup,
                                       std::int64_t count) {
  for (std::int64_t i = first_index(); i < count; i += grid_stride()) {
    core::swiglu_backward_span(g + i, gate + i, up + i, dgate + i, dup + i, 1);
  }
}

}  // namespace

void silu_forward(const SiluForwardProblem& p, std::uintptr_t stream) {
  if (p.count == 0) return;
  visit_in_out(p.dtype, p.out_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    launch(silu_forward_kernel<T, TOut>, blocks_for(p.count), kThreads, 0, as_stream(stream),
           static_cast<const T*>(p.x), static_cast<TOut*>(p.y), p.count);
  });
  check_launch("silu_forward");
}

void silu_backward(const SiluBackwardProblem& p, std::uintptr_t stream) {
  if (p.count == 0) return;
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    launch(silu_backward_kernel<T, TOut>, blocks_for(p.count), kThreads, 0, as_stream(stream),
           static_cast<const T*>(p.grad_out), static_cast<const T*>(p.x), static_cast<TOut*>(p.dx), p.count);
  });
  check_launch("silu_backward");
}

void swiglu_forward(const SwigluForwardProblem& p, std::uintptr_t stream) {
  if (p.count == 0) return;
  visit_in_out(p.dtype, p.out_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    launch(swiglu_forward_kernel<T, TOut>, blocks_for(p.count), kThreads, 0, as_stream(stream),
           static_cast<const T*>(p.gate), static_cast<const T*>(p.up), static_cast<TOut*>(p.y), p.count);
  });
  check_launch("swiglu_forward");
}

void swiglu_backward(const SwigluBackwardProblem& p, std::uintptr_t stream) {
  if (p.count == 0) return;
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    launch(swiglu_backward_kernel<T, TOut>, blocks_for(p.count), kThreads, 0, as_stream(stream),
           static_cast<const T*>(p.grad_out), static_cast<const T*>(p.gate), static_cast<const T*>(p.up),
           static_cast<TOut*>(p.dgate), static_cast<TOut*>(p.dup), p.count);
  });
  check_launch("swiglu_backward");
}

}  // namespace golden::gpu
