// Elementwise dtype conversion with the core's one rounding rule
// (csrc/core/dtype.h), spread over threads in fixed chunks.
#include <type_traits>

#include "../core/dtype.h"
#include "../core/reduce.h"
#include "rows.h"
#include "target.h"

GOLDEN_CPU_BEGIN
namespace {

constexpr std::int64_t kMinElementsPerTask = 1 << 16;

template <class TIn, class TOut>
void convert_elements(const TIn* src, TOut* dst, std::int64_t count, int num_threads) {
  const std::int64_t per_task = items_per_task(count, num_threads, kMinElementsPerTask);
  auto body = [&](std::int64_t task) {
    const std::int64_t begin = task * per_task;
    const std::int64_t end = begin + per_task < count ? begin + per_task : count;
    if constexpr (std::is_same_v<TIn, float>) {
      narrow_row(src + begin, dst + begin, end - begin);  // F16C for fp16: the exhaustive test checks it
    } else {
      for (std::int64_t i = begin; i < end; ++i) dst[i] = core::from_float<TOut>(core::to_float(src[i]));
    }
  };
  parallel_tasks(core::ceil_div(count, per_task), num_threads, body);
}

}  // namespace

void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, std::int64_t count,
             int num_threads) {
  visit_dtype(src_dtype, [&](auto in) {
    visit_dtype(dst_dtype, [&](auto out) {
      using TIn = decltype(in);
      using TOut = decltype(out);
      convert_elements(static_cast<const TIn*>(src), static_cast<TOut*>(dst), count, num_threads);
    });
  });
}

GOLDEN_CPU_END
