// SiLU and SwiGLU on the CPU: the flat element range cut into contiguous
// spans spread over threads, each span computed by the core's *_span loops
// (csrc/core/ops/swiglu.h), vectorised for this file's instruction set.
// Forward with 16-bit inputs: silu_non_nan takes only 65536 inputs, so it is
// computed once per value by the core into a table, and each span looks it up
// and finishes with the core's *_span_from loops (same bits, less work); silu
// with an output of its input's type is a table of whole results.
#include "../core/ops/swiglu.h"
#include "../core/reduce.h"
#include "target.h"

GOLDEN_CPU_BEGIN
namespace {

constexpr std::int64_t kMinElementsPerTask = 1 << 14;
// Elements whose looked-up silu values are kept at once (on the stack).
constexpr std::int64_t kLookupChunk = 512;

// core::silu_non_nan of every value of a 16-bit type T, indexed by its bits.
template <class T>
struct SiluTable {
  float value[1 << 16];
  SiluTable() {
    for (std::int32_t b = 0; b < (1 << 16); ++b) {
      value[b] = core::silu_non_nan(core::to_float(T{static_cast<std::uint16_t>(b)}));
    }
  }
};

// Built on first use (thread-safe static initialisation), by the calling
// thread before any work is handed to the pool.
template <class T>
const float* silu_table() {
  static const SiluTable<T> table;
  return table.value;
}

// core::silu_f32 rounded to T, for every value of a 16-bit type T: the whole
// result of silu_forward_span<T, T> for that input.
template <class T>
struct SiluResultTable {
  T value[1 << 16];
  SiluResultTable() {
    for (std::int32_t b = 0; b < (1 << 16); ++b) {
      value[b] = core::from_float<T>(core::silu_f32(core::to_float(T{static_cast<std::uint16_t>(b)})));
    }
  }
};

template <class T>
const T* silu_result_table() {
  static const SiluResultTable<T> table;
  return table.value;
}

template <class T>
void silu_forward_looked_up(const T* table, const T* x, T* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = table[x[i].bits];
}

template <class T>
void look_up_silu(const float* table, const T* x, float* silu, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) silu[i] = table[x[i].bits];
}

template <class T, class TOut>
void silu_forward_tabled(const float* table, const T* x, TOut* y, std::int64_t n) {
  float silu[kLookupChunk];
  for (std::int64_t c = 0; c < n; c += kLookupChunk) {
    const std::int64_t m = n - c < kLookupChunk ? n - c : kLookupChunk;
    look_up_silu(table, x + c, silu, m);
    core::silu_forward_span_from(silu, x + c, y + c, m);
  }
}

template <class T, class TOut>
void swiglu_forward_tabled(const float* table, const T* gate, const T* up, TOut* y, std::int64_t n) {
  float silu_gate[kLookupChunk];
  for (std::int64_t c = 0; c < n; c += kLookupChunk) {
    const std::int64_t m = n - c < kLookupChunk ? n - c : kLookupChunk;
    look_up_silu(table, gate + c, silu_gate, m);
    core::swiglu_forward_span_from(silu_gate, gate + c, up + c, y + c, m);
  }
}

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
    if constexpr (sizeof(TOut) == 2) {  // the output type is the input's (visit_in_out)
      const T* table = silu_result_table<T>();
      for_each_span(p.count, num_threads,
                    [&](std::int64_t b, std::int64_t n) { silu_forward_looked_up(table, x + b, y + b, n); });
    } else if constexpr (sizeof(T) == 2) {
      const float* table = silu_table<T>();
      for_each_span(p.count, num_threads,
                    [&](std::int64_t b, std::int64_t n) { silu_forward_tabled(table, x + b, y + b, n); });
    } else {
      for_each_span(p.count, num_threads,
                    [&](std::int64_t b, std::int64_t n) { core::silu_forward_span(x + b, y + b, n); });
    }
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
    if constexpr (sizeof(T) == 2) {
      const float* table = silu_table<T>();
      for_each_span(p.count, num_threads, [&](std::int64_t b, std::int64_t n) {
        swiglu_forward_tabled(table, gate + b, up + b, y + b, n);
      });
    } else {
      for_each_span(p.count, num_threads, [&](std::int64_t b, std::int64_t n) {
        core::swiglu_forward_span(gate + b, up + b, y + b, n);
      });
    }
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
