#include "pages.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace golden::cpu {

namespace {

bool enabled_from_environment() {
  const char* value = std::getenv("GOLDEN_KERNELS_HUGE_PAGES");
  return value == nullptr || std::strcmp(value, "0") != 0;
}

std::atomic<bool>& advice_enabled() {
  static std::atomic<bool> enabled{enabled_from_environment()};
  return enabled;
}

}  // namespace

bool huge_page_advice_enabled() { return advice_enabled().load(std::memory_order_relaxed); }

void set_huge_page_advice(bool enabled) { advice_enabled().store(enabled, std::memory_order_relaxed); }

bool advise_huge_pages(void* data, std::size_t bytes) noexcept {
  if (bytes < kHugePageAdviceMinBytes || !huge_page_advice_enabled()) return false;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::uintptr_t huge_page = std::uintptr_t{1} << 21;
  const auto begin = reinterpret_cast<std::uintptr_t>(data);
  if (bytes > UINTPTR_MAX - begin) return false;
  const std::uintptr_t first = (begin + huge_page - 1) & ~(huge_page - 1);
  const std::uintptr_t last = (begin + bytes) & ~(huge_page - 1);
  if (first >= last) return false;
  return madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE) == 0;
#else
  (void)data;
  return false;
#endif
}

}  // namespace golden::cpu
