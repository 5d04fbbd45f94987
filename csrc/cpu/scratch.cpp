#include "scratch.h"

#include "pages.h"

#include <cstdlib>
#include <new>

namespace golden::cpu {

namespace {
// One cache line: packed panels start on a line and SIMD loads never split one.
constexpr std::size_t kAlignment = 64;
}  // namespace

ScratchBuffer::ScratchBuffer(std::size_t floats, PageAdvice advice) : data_(nullptr) {
  const std::size_t bytes = (floats * sizeof(float) + kAlignment - 1) / kAlignment * kAlignment;
  if (bytes == 0) return;
  data_ = static_cast<float*>(std::aligned_alloc(kAlignment, bytes));
  if (data_ == nullptr) throw std::bad_alloc();
  if (advice == PageAdvice::kHugePages) advise_huge_pages(data_, bytes);  // large packed panels are fresh pages too
}

ScratchBuffer::~ScratchBuffer() { std::free(data_); }

}  // namespace golden::cpu
