// SiLU and SwiGLU on the CPU: the flat element range cut into contiguous
// spans spread over threads, each span computed by the core's *_span loops
// (csrc/core/ops/swiglu.h), vectorised for this file's instruction set.
#include "../core/ops/swiglu.h"
#include "../core/reduce.h"
#include "target.h"

GOLDEN_CPU_BEGIN
namespace {

constexpr std::int64_t kMinElementsPerTask = 1 << 14;

// Calls span(begin, n) over [0, count) in parallel spans. Elementwise: where
// a span starts cannot change any element's bits.
template <class Span>
void for_each_span(std::int64_t count, int num_threads, Span&& span) {
  const std::int64_t per_task = items_per_task(count, num_threads, kMinElementsPerTask);
  auto body = [&](std::int64_t task) {
    const std::int64_t begin = task * per_task;
    const std::int64_t end = begin + per_task < count ? begin + per_task : count;
    span(begin, end - begin);
  };
  parallel_tasks(core::ceil_div(count, per_task), num_threads, body);
}

}  // namespace

void silu_forward(const SiluForwardProblem& p, int num_threads) {
  visit_in_out(p.dtype, p.out_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    const T* x = static_cast<const T*>(p.x);
    TOut* y = static_cast<TOut*>(p.y);
    for_each_span(p.count, num_threads,
                  [&](std::int64_t b, std::int64_t n) { core::silu_forward_span(x + b, y + b, n); });
  });
}

void silu_backward(const SiluBackwardProblem& p, int num_threads) {
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    const T* g = static_cast<const T*>(p.grad_out);
    const T* x = static_cast<const T*>(p.x);
    TOut* dx = static_cast<TOut*>(p.dx);
    for_each_span(p.count, num_threads, [&](std::int64_t b, std::int64_t n) {
      core::silu_backward_span(g + b, x + b, dx + b, n);
    });
  });
}

void swiglu_forward(const SwigluForwardProblem& p, int num_threads) {
  visit_in_out(p.dtype, p.out_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    const T* gate = static_cast<const T*>(p.gate);
    const T* up = static_cast<const T*>(p.up);
    TOut* y = static_cast<TOut*>(p.y);
    for_each_span(p.count, num_threads, [&](std::int64_t b, std::int64_t n) {
      core::swiglu_forward_span(gate + b, up + b, y + b, n);
    });
  });
}

void swiglu_backward(const SwigluBackwardProblem& p, int num_threads) {
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    const T* g = static_cast<const T*>(p.grad_out);
    const T* gate = static_cast<const T*>(p.gate);
    const T* up = static_cast<const T*>(p.up);
    TOut* dgate = static_cast<TOut*>(p.dgate);
    TOut* dup = static_cast<TOut*>(p.dup);
    for_each_span(p.count, num_threads, [&](std::int64_t b, std::int64_t n) {
      core::swiglu_backward_span(g + b, gate + b, up + b, dgate + b, dup + b, n);
    });
  });
}

GOLDEN_CPU_END
