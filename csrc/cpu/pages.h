// Memory-page advice for large CPU outputs. A freshly allocated output is
// usually fresh anonymous memory, and on Linux writing it first takes one page
// fault per 4 KiB page: for a [4096, 12288] bf16 output that is 24k faults,
// several times the cost of the kernel's own writes. Advising transparent huge
// pages for the buffer turns them into one fault per 2 MiB. Results never
// depend on it.
#pragma once

#include <cstddef>

namespace golden::cpu {

// Asks the kernel to back the whole 2 MiB pages inside [data, data + bytes)
// with transparent huge pages (madvise MADV_HUGEPAGE), leaving the partial
// pages at either end alone so that no memory outside the buffer changes its
// policy. Returns whether the advice was taken: false off Linux, when the
// range holds no whole 2 MiB page, or when the kernel refuses (THP disabled).
bool advise_huge_pages(void* data, std::size_t bytes) noexcept;

}  // namespace golden::cpu
