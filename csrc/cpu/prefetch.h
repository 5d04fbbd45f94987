// Cache lines requested ahead of a streaming loop. An element-wise pass over
// arrays larger than the caches waits on memory twice per output line: once
// for its inputs and once for the line it writes, which the core reads
// before the store can complete (write-allocate). The hardware prefetcher
// runs ahead of the reads but not of the stores, so a loop that computes a
// chunk and then writes it stalls on the writes. Requesting a chunk's output
// lines a few chunks before it is computed overlaps that wait with the
// computation (benchmarks/RESULTS.md, stop 26: silu fp32 out= on AVX2, 2
// threads, 33 -> 27 ms). A prefetch is only a hint: it never faults and
// changes no value, so no bit depends on it.
#pragma once

#include <cstdint>

#include "target.h"

GOLDEN_CPU_BEGIN
namespace {

constexpr std::int64_t kCacheLineBytes = 64;

// Requests the cache lines holding a[0..n).
template <class T>
void prefetch_lines(const T* a, std::int64_t n) {
  const char* bytes = reinterpret_cast<const char*>(a);
  const std::int64_t size = n * static_cast<std::int64_t>(sizeof(T));
  for (std::int64_t b = 0; b < size; b += kCacheLineBytes) __builtin_prefetch(bytes + b);
}

}  // namespace
GOLDEN_CPU_END
