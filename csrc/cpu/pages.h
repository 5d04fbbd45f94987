// Memory-page advice for large CPU buffers. A fresh output or scratch buffer
// is usually fresh anonymous memory, and on Linux writing it first takes one
// page fault per 4 KiB page: for a [4096, 12288] bf16 output that is 24k
// faults, several times the cost of the kernel's own writes. Advising
// transparent huge pages turns them into one fault per 2 MiB. Results never
// depend on it.
#pragma once

#include <cstddef>

namespace golden::cpu {

// Buffers smaller than this are left alone: the few 2 MiB pages they could
// hold do not pay for the system call.
constexpr std::size_t kHugePageAdviceMinBytes = std::size_t{8} << 20;

// On by default; GOLDEN_KERNELS_HUGE_PAGES=0 in the environment turns it off.
bool huge_page_advice_enabled();
void set_huge_page_advice(bool enabled);

// When enabled and bytes >= kHugePageAdviceMinBytes, asks the kernel to back
// the whole 2 MiB pages inside [data, data + bytes) with transparent huge
// pages (madvise MADV_HUGEPAGE), leaving the partial pages at either end alone
// so that no memory outside the buffer changes its policy. Returns whether the
// advice was taken: false when disabled or small, off Linux, when the range
// holds no whole 2 MiB page, or when the kernel refuses (THP disabled).
bool advise_huge_pages(void* data, std::size_t bytes) noexcept;

}  // namespace golden::cpu
