// SiLU and SwiGLU on the CPU: the flat element range cut into contiguous
// spans spread over threads; each span is walked in chunks whose silu (and
// silu') values are obtained first, then finished by the core's *_span_from
// loops (csrc/core/ops/swiglu.h), vectorised for this file's instruction set.
// The values come from tables over all 65536 inputs for 16-bit types (built
// once by the core's element functions), and for fp32 are computed in three
// loops over the chunk: the exponentials' argument reductions, the
// exponentials, the quotients. One element's whole chain is longer than the
// out-of-order core overlaps; three shorter loops keep more elements in
// flight (same operations, same bits). silu with a 16-bit output of its
// input's type is one table of whole results.
#include <type_traits>

#include "../core/ops/swiglu.h"
#include "../core/reduce.h"
#include "prefetch.h"
#include "rows.h"
#include "target.h"

GOLDEN_CPU_BEGIN
namespace {

constexpr std::int64_t kMinElementsPerTask = 1 << 14;
// Elements whose silu values are kept at once (on the stack).
constexpr std::int64_t kChunk = 256;
// How far ahead a chunk's lines are prefetched, in chunks (AVX2 silu fp32,
// one thread: 1 ahead 1.09x, 3 ahead 1.19x, 6 or 12 ahead 1.11x).
constexpr std::int64_t kChunksAhead = 3;

// A table of f(value) for every value of a 16-bit type T, indexed by its bits.
template <class T, class Value>
struct Table16 {
  Value value[1 << 16];
  template <class F>
  explicit Table16(F f) {
    for (std::int32_t b = 0; b < (1 << 16); ++b) value[b] = f(core::to_float(T{static_cast<std::uint16_t>(b)}));
  }
};

// The tables are built on first use (thread-safe static initialisation), by
// the calling thread before any work is handed to the pool.
template <class T>
const float* silu_table() {
  static const Table16<T, float> table([](float x) { return core::silu_non_nan(x); });
  return table.value;
}

template <class T>
const float* silu_derivative_table() {
  static const Table16<T, float> table([](float x) { return core::silu_derivative_non_nan(x); });
  return table.value;
}

// Both values side by side, for the swiglu backward: one lookup per element
// instead of two (fp16's two tables, 256 KiB each, miss L1 for inputs spread
// like activations; benchmarks/RESULTS.md, stop 24).
struct SiluAndDerivative {
  float silu;
  float derivative;
};

template <class T>
const SiluAndDerivative* silu_and_derivative_table() {
  static const Table16<T, SiluAndDerivative> table([](float x) {
    return SiluAndDerivative{core::silu_non_nan(x), core::silu_derivative_non_nan(x)};
  });
  return table.value;
}

// core::silu_f32 rounded to T: the whole result of silu forward with T in and out.
template <class T>
const T* silu_result_table() {
  static const Table16<T, T> table([](float x) { return core::from_float<T>(core::silu_f32(x)); });
  return table.value;
}

// values[i] = table[x[i].bits], unrolled eight times. The loop of one lookup
// is ~22 bytes; placed across a 64-byte boundary, Zen 3 fetches it at one
// iteration per two cycles (0.69 instead of 0.39 ns per element, measured),
// so its speed would depend on where the linker puts it. The empty asm keeps
// the index in a scalar register: GCC 12 otherwise vectorises the loop into
// lane insertions and extractions around scalar loads, ~20% slower (bf16
// swiglu backward at one thread, 65 -> 54 ms).
template <class T, class Value>
void look_up(const Value* table, const T* x, Value* values, std::int64_t n) {
#pragma GCC unroll 8
  for (std::int64_t i = 0; i < n; ++i) {
    std::uint32_t index = x[i].bits;
    asm("" : "+r"(index));
    values[i] = table[index];
  }
}

// e[i] = sigmoid_exp(x[i]) in two loops (n <= kChunk).
void sigmoid_exps(const float* x, float* e, std::int64_t n) {
  float r_hi[kChunk];
  float r_lo[kChunk];
  float k[kChunk];
  for (std::int64_t i = 0; i < n; ++i) {
    const core::math_detail::ExpReduced<float> a =
        core::math_detail::exp_reduce(core::math_detail::sigmoid_exp_argument(x[i]));
    r_hi[i] = a.r_hi;
    r_lo[i] = a.r_lo;
    k[i] = a.n;
  }
  for (std::int64_t i = 0; i < n; ++i) e[i] = core::math_detail::exp_from_reduced({r_hi[i], r_lo[i], k[i]});
}

// silu_non_nan and/or silu_derivative_non_nan of a chunk of n <= kChunk inputs.
void silu_values(const float* x, float* silu, std::int64_t n) {
  float e[kChunk];
  sigmoid_exps(x, e, n);
  for (std::int64_t i = 0; i < n; ++i) silu[i] = core::silu_non_nan_from_exp(x[i], e[i]);
}

void silu_derivative_values(const float* x, float* derivative, std::int64_t n) {
  float e[kChunk];
  sigmoid_exps(x, e, n);
  for (std::int64_t i = 0; i < n; ++i) derivative[i] = core::silu_derivative_non_nan_from_exp(x[i], e[i]);
}

void silu_and_derivative_values(const float* x, float* silu, float* derivative, std::int64_t n) {
  float e[kChunk];
  sigmoid_exps(x, e, n);
  for (std::int64_t i = 0; i < n; ++i) {
    silu[i] = core::silu_non_nan_from_exp(x[i], e[i]);
    derivative[i] = core::silu_derivative_non_nan_from_exp(x[i], e[i]);
  }
}

template <class T>
void silu_values(const T* x, float* silu, std::int64_t n) {
  look_up(silu_table<T>(), x, silu, n);
}

template <class T>
void silu_derivative_values(const T* x, float* derivative, std::int64_t n) {
  look_up(silu_derivative_table<T>(), x, derivative, n);
}

template <class T>
void silu_and_derivative_values(const T* x, float* silu, float* derivative, std::int64_t n) {
  SiluAndDerivative pairs[kChunk];
  look_up(silu_and_derivative_table<T>(), x, pairs, n);
  for (std::int64_t i = 0; i < n; ++i) {
    silu[i] = pairs[i].silu;
    derivative[i] = pairs[i].derivative;
  }
}

// Builds the tables the chunk functions above will use for inputs of type T.
template <class T>
void prepare_tables(bool silu, bool derivative) {
  if constexpr (sizeof(T) == 2) {
    if (silu && derivative) {
      silu_and_derivative_table<T>();
    } else if (silu) {
      silu_table<T>();
    } else if (derivative) {
      silu_derivative_table<T>();
    }
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

// Calls chunk(begin, n) over [0, count): each parallel span in chunks of at
// most kChunk elements. ahead(begin, n) is called for the chunk
// kChunksAhead chunks later in the span, to prefetch its lines (prefetch.h):
// the outputs' lines, and silu forward's input's. The other ops' inputs are
// left to the hardware prefetcher: requesting them too made swiglu and the
// backwards slower than outputs alone (bf16 swiglu backward out= 22.9 ->
// 26.7 ms), where silu forward gained from its input's (bf16 out= 13.7 ->
// 10.1 ms).
template <class Ahead, class Chunk>
void for_each_chunk(std::int64_t count, int num_threads, Ahead&& ahead, Chunk&& chunk) {
  for_each_span(count, num_threads, [&](std::int64_t begin, std::int64_t n) {
    for (std::int64_t c = 0; c < n; c += kChunk) {
      const std::int64_t later = c + kChunksAhead * kChunk;
      if (later < n) ahead(begin + later, n - later < kChunk ? n - later : kChunk);
      chunk(begin + c, n - c < kChunk ? n - c : kChunk);
    }
  });
}

// fp16 chunks run the core's loops on fp32: the inputs they read as values
// widened first and 16-bit results narrowed after, by F16C (rows.h), the same
// bits as the loops on fp16 (widening is exact; narrowing is from_float's)
// for one instruction per 8 or 16 elements each way instead of several per
// element. Other types pass their arrays to the loops as they are.
template <class T>
constexpr bool kWidenedChunks = std::is_same_v<T, f16>;

// An fp32 copy of n <= kChunk inputs, or the inputs themselves.
template <class T>
struct ChunkInput {
  float wide[kChunk];
  const T* x;
  ChunkInput(const T* src, std::int64_t n) : x(src) {
    if constexpr (kWidenedChunks<T>) widen_row(src, wide, n);
  }
  auto get() const {
    if constexpr (kWidenedChunks<T>) {
      return static_cast<const float*>(wide);
    } else {
      return x;
    }
  }
};

// Where a chunk's results go: an fp32 buffer narrowed into out on finish()
// when fp16 inputs produce fp16 results, else out itself.
template <class T, class TOut>
struct ChunkOutput {
  static constexpr bool kNarrowed = kWidenedChunks<T> && !std::is_same_v<TOut, float>;
  float wide[kChunk];  // not initialised: the core's loop writes all n
  TOut* out;
  std::int64_t n;
  ChunkOutput(TOut* destination, std::int64_t count) : out(destination), n(count) {}
  auto get() {
    if constexpr (kNarrowed) {
      return static_cast<float*>(wide);
    } else {
      return out;
    }
  }
  void finish() {
    if constexpr (kNarrowed) narrow_row(wide, out, n);
  }
};

}  // namespace

void silu_forward(const SiluForwardProblem& p, int num_threads) {
  visit_in_out(p.dtype, p.out_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    const T* x = static_cast<const T*>(p.x);
    TOut* y = static_cast<TOut*>(p.y);
    const auto ahead = [&](std::int64_t i, std::int64_t m) {
      prefetch_lines(x + i, m);
      prefetch_lines(y + i, m);
    };
    if constexpr (sizeof(TOut) == 2) {  // the output type is the input's (visit_in_out)
      const T* table = silu_result_table<T>();
      for_each_chunk(p.count, num_threads, ahead,
                     [&](std::int64_t i, std::int64_t m) { look_up(table, x + i, y + i, m); });
      return;
    }
    prepare_tables<T>(true, false);
    for_each_chunk(p.count, num_threads, ahead, [&](std::int64_t i, std::int64_t m) {
      float silu[kChunk];
      silu_values(x + i, silu, m);
      core::silu_forward_span_from(silu, x + i, y + i, m);
    });
  });
}

void silu_backward(const SiluBackwardProblem& p, int num_threads) {
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    const T* g = static_cast<const T*>(p.grad_out);
    const T* x = static_cast<const T*>(p.x);
    TOut* dx = static_cast<TOut*>(p.dx);
    prepare_tables<T>(false, true);
    const auto ahead = [&](std::int64_t i, std::int64_t m) {
      prefetch_lines(dx + i, m);
    };
    for_each_chunk(p.count, num_threads, ahead, [&](std::int64_t i, std::int64_t m) {
      float derivative[kChunk];
      silu_derivative_values(x + i, derivative, m);
      const ChunkInput<T> gi(g + i, m), xi(x + i, m);
      ChunkOutput<T, TOut> dxi(dx + i, m);
      core::silu_backward_span_from(derivative, gi.get(), xi.get(), dxi.get(), m);
      dxi.finish();
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
    prepare_tables<T>(true, false);
    const auto ahead = [&](std::int64_t i, std::int64_t m) {
      prefetch_lines(y + i, m);
    };
    for_each_chunk(p.count, num_threads, ahead, [&](std::int64_t i, std::int64_t m) {
      float silu_gate[kChunk];
      silu_values(gate + i, silu_gate, m);
      const ChunkInput<T> gate_i(gate + i, m), up_i(up + i, m);
      ChunkOutput<T, TOut> yi(y + i, m);
      core::swiglu_forward_span_from(silu_gate, gate_i.get(), up_i.get(), yi.get(), m);
      yi.finish();
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
    prepare_tables<T>(true, true);
    const auto ahead = [&](std::int64_t i, std::int64_t m) {
      prefetch_lines(dgate + i, m);
      prefetch_lines(dup + i, m);
    };
    for_each_chunk(p.count, num_threads, ahead, [&](std::int64_t i, std::int64_t m) {
      float silu_gate[kChunk];
      float derivative[kChunk];
      silu_and_derivative_values(gate + i, silu_gate, derivative, m);
      const ChunkInput<T> gi(g + i, m), gate_i(gate + i, m), up_i(up + i, m);
      ChunkOutput<T, TOut> dgate_i(dgate + i, m), dup_i(dup + i, m);
      core::swiglu_backward_span_from(silu_gate, derivative, gi.get(), gate_i.get(), up_i.get(), dgate_i.get(),
                                      dup_i.get(), m);
      dgate_i.finish();
      dup_i.finish();
    });
  });
}

GOLDEN_CPU_END
