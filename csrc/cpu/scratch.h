// Aligned scratch memory for CPU kernels, owned by a scope. Allocated on the
// calling thread before work is handed to the pool (failure throws
// std::bad_alloc there, never inside a worker). No templates: safe to include
// from the per-instruction-set kernel files (see target.h).
#pragma once

#include <cstddef>

namespace golden::cpu {

// Whether a large buffer is advised transparent huge pages (pages.h).
enum class PageAdvice { kHugePages, kNone };

class ScratchBuffer {
 public:
  explicit ScratchBuffer(std::size_t floats, PageAdvice advice = PageAdvice::kHugePages);
  ~ScratchBuffer();
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;

  float* data() const { return data_; }

 private:
  float* data_;
};

}  // namespace golden::cpu
