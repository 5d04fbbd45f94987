// Page-level hints for the large outputs CPU kernels write from scratch. A
// fresh output is untouched memory: with the kernel's transparent huge pages
// in `madvise` mode every 4 KiB first write is a page fault, and for a
// 100 MB+ output those faults cost more than computing it. No effect on any
// value. No templates: safe to include from the per-ISA kernel files.
#pragma once

#include <cstdint>

namespace golden::cpu {

// Asks the OS to back [data, data + bytes) with huge pages, for an output the
// caller is about to write in full. Small buffers and systems without the
// hint are left alone; a refusal is ignored (it only costs speed).
void advise_huge_pages(void* data, std::int64_t bytes);

}  // namespace golden::cpu
