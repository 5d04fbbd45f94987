// advise_huge_pages (pages.h): madvise(MADV_HUGEPAGE) on the whole pages of
// a fresh output; a no-op off Linux. Touches no value.
#include "pages.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace golden::cpu {

namespace {
// Below this an output spans few huge pages and sits inside the allocator's
// heap rather than its own mapping: not worth a system call.
constexpr std::int64_t kMinHugePageBytes = std::int64_t{8} << 20;
constexpr std::uintptr_t kPageBytes = 4096;
}  // namespace

void advise_huge_pages(void* data, std::int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (data == nullptr || bytes < kMinHugePageBytes) return;
  // madvise wants page-aligned bounds: only whole pages inside the buffer.
  const std::uintptr_t begin = (reinterpret_cast<std::uintptr_t>(data) + kPageBytes - 1) & ~(kPageBytes - 1);
  const std::uintptr_t end = (reinterpret_cast<std::uintptr_t>(data) + static_cast<std::uintptr_t>(bytes)) &
                             ~(kPageBytes - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

}  // namespace golden::cpu
