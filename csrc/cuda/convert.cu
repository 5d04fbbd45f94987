// Elementwise dtype conversion on the GPU with the core's one rounding rule
// (csrc/core/dtype.h): each element is independent, so the launch shape
// (a grid-stride loop over a fixed grid) cannot change any bit.
#include "../core/dtype.h"
#include "gpu_runtime.h"
#include "kernels.h"

namespace golden::gpu {
namespace {

constexpr int kConvertThreads = 256;
constexpr std::int64_t kMaxConvertBlocks = 1 << 16;

template <class TIn, class TOut>
__global__ void convert_kernel(const TIn* src, TOut* dst, std::int64_t count) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    dst[i] = core::from_float<TOut>(core::to_float(src[i]));
  }
}

}  // namespace

void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, std::int64_t count,
             std::uintptr_t stream) {
  if (count == 0) return;
  const std::int64_t wanted = (count + kConvertThreads - 1) / kConvertThreads;
  const unsigned blocks = static_cast<unsigned>(wanted < kMaxConvertBlocks ? wanted : kMaxConvertBlocks);
  visit_dtype(src_dtype, [&](auto in) {
    visit_dtype(dst_dtype, [&](auto out) {
      using TIn = decltype(in);
      using TOut = decltype(out);
      launch(convert_kernel<TIn, TOut>, blocks, kConvertThreads, 0, as_stream(stream), static_cast<const TIn*>(src),
             static_cast<TOut*>(dst), count);
    });
  });
  check_launch("convert");
}

}  // namespace golden::gpu
