// RoPE on the CPU: tokens spread over threads; per token the cos/sin of a
// chunk of frequencies are computed once (core::rope_cos_sin) and applied to
// every head (core::rope_rotate_head). Numerics: csrc/core/ops/rope.h.
#include <type_traits>

#include "../core/ops/rope.h"
#include "../core/reduce.h"
#include "prefetch.h"
#include "rows.h"
#include "target.h"

GOLDEN_CPU_BEGIN
namespace {

constexpr std::int64_t kMinTokensPerTask = 4;

template <class T>
constexpr bool kIsFloat = sizeof(T) == sizeof(float);

// out's frequencies [first, first + n) from the rotated pairs (halves of n).
// fp16 narrows by F16C (rows.h: from_float's bits, which are from_number's).
template <class TOut, class Round>
void round_head(const float* rotated, TOut* out, std::int64_t half, std::int64_t first, std::int64_t n,
                Round round) {
  if constexpr (std::is_same_v<TOut, f16>) {
    narrow_row(rotated, out + first, n);
    narrow_row(rotated + n, out + half + first, n);
  } else {
    for (std::int64_t k = 0; k < n; ++k) {
      out[first + k] = round(rotated[k]);
      out[half + first + k] = round(rotated[n + k]);
    }
  }
}

// One head's frequencies [first, first + n): in place for fp32; a 16-bit head is
// widened (rows.h), rotated and rounded in three loops, each of which the compiler
// vectorises well (the one fused loop measured 2x slower than fp32). Widening
// is exact and rounding happens once, after the fp32 rotation: the same bits.
// The rotation runs without the NaN policy first, and with it only when a
// result was a NaN (core::rope_rotate_head_if_numbers); a result known not to
// be a NaN rounds without the NaN case (core::from_number).
template <class T, class TOut>
void rotate_head(const T* x, TOut* out, std::int64_t half, std::int64_t first, std::int64_t n, const float* c,
                 const float* s) {
  if constexpr (kIsFloat<T> && kIsFloat<TOut>) {
    if (!core::rope_rotate_head_if_numbers(x, out, half, first, n, c, s)) {
      core::rope_rotate_head(x, out, half, first, n, c, s);
    }
  } else {
    float wide[2 * kRopeFrequencyChunk];
    float rotated[2 * kRopeFrequencyChunk];
    widen_row(x + first, wide, n);
    widen_row(x + half + first, wide + n, n);
    if (core::rope_rotate_head_if_numbers(wide, rotated, n, 0, n, c, s)) {
      round_head(rotated, out, half, first, n, [](float r) { return core::from_number<TOut>(r); });
    } else {
      core::rope_rotate_head(wide, rotated, n, 0, n, c, s);
      round_head(rotated, out, half, first, n, [](float r) { return core::from_float<TOut>(r); });
    }
  }
}

// Token t's heads; prefetch_next: token t + 1 is this task's next.
template <class T, class TOut>
void rotate_token(const RopeProblem& p, std::int64_t t, bool prefetch_next) {
  const std::int64_t half = p.head_dim / 2;
  const std::int64_t position = core::load_position(p.positions, p.positions_int64, t);
  const T* x = static_cast<const T*>(p.x) + t * p.heads * p.head_dim;
  TOut* out = static_cast<TOut*>(p.out) + t * p.heads * p.head_dim;
  float c[kRopeFrequencyChunk];
  float s[kRopeFrequencyChunk];
  for (std::int64_t first = 0; first < half; first += kRopeFrequencyChunk) {
    const std::int64_t n = half - first < kRopeFrequencyChunk ? half - first : kRopeFrequencyChunk;
    core::rope_cos_sin(position, p.inv_freq, first, n, p.transpose, c, s);
    for (std::int64_t h = 0; h < p.heads; ++h) {
      // The next token's output head (prefetch.h), one head at a time: [4096, 32, 128]
      // out=, medians of 7 alternating pairs, fp32 4.99 -> 4.60 ms, bf16 3.19 -> 2.87.
      if (prefetch_next && first == 0) prefetch_lines(out + (p.heads + h) * p.head_dim, p.head_dim);
      rotate_head(x + h * p.head_dim, out + h * p.head_dim, half, first, n, c, s);
    }
  }
}

template <class T, class TOut>
void rotate_tokens(const RopeProblem& p, int num_threads) {
  const std::int64_t per_task = items_per_task(p.tokens, num_threads, kMinTokensPerTask);
  auto body = [&](std::int64_t task) {
    const std::int64_t begin = task * per_task;
    const std::int64_t end = begin + per_task < p.tokens ? begin + per_task : p.tokens;
    for (std::int64_t t = begin; t < end; ++t) rotate_token<T, TOut>(p, t, t + 1 < end);
  };
  parallel_tasks(core::ceil_div(p.tokens, per_task), num_threads, body);
}

}  // namespace

void rope_inverse_frequencies(float* inv_freq, std::int64_t head_dim, float theta,
                              int /*num_threads*/) {
  for (std::int64_t i = 0; i < head_dim / 2; ++i) {
    inv_freq[i] = core::rope_inverse_frequency(i, head_dim, theta);
  }
}

void rope_apply(const RopeProblem& problem, int num_threads) {
  visit_in_out(problem.dtype, problem.out_dtype, [&](auto in, auto out) {
    rotate_tokens<decltype(in), decltype(out)>(problem, num_threads);
  });
}

GOLDEN_CPU_END
