// Included by the CPU kernel files, which are compiled once per instruction
// set with GOLDEN_TARGET naming it. Everything such a file defines lives in
// golden::cpu::GOLDEN_TARGET or has internal linkage, and it includes no
// standard-library template headers: an inline function compiled with
// AVX-512 enabled must never be merged by the linker into the scalar path.
#pragma once

#include <cstdint>

#include "../core/platform.h"
#include "../core/types.h"
#include "parallel.h"

#define GOLDEN_CPU_BEGIN \
  namespace golden {     \
  namespace cpu {        \
  namespace GOLDEN_TARGET {
#define GOLDEN_CPU_END \
  }                    \
  }                    \
  }

GOLDEN_CPU_BEGIN
namespace {

// run_tasks() with a callable; internal linkage keeps it per instruction set.
template <class Body>
void parallel_tasks(std::int64_t task_count, int num_threads, Body& body) {
  run_tasks(
      task_count, num_threads,
      [](void* context, std::int64_t task) { (*static_cast<Body*>(context))(task); }, &body);
}

// Tasks of at least `min_items` items, about four per thread: enough to
// balance load, few enough to keep per-task overhead small.
[[maybe_unused]] std::int64_t items_per_task(std::int64_t items, int num_threads, std::int64_t min_items) {
  const std::int64_t target_tasks = 4 * static_cast<std::int64_t>(num_threads);
  const std::int64_t per_task = (items + target_tasks - 1) / target_tasks;
  return per_task > min_items ? per_task : min_items;
}

}  // namespace
GOLDEN_CPU_END
