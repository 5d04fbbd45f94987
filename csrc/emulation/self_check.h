// Kernels that check the GPU emulation itself (tests/test_gpu_emulation.py):
// in the emulating build only, bound as golden_kernels._C._gpu_emulation_self_check.
#pragma once

#include <string>
#include <vector>

namespace golden::gpu_emulation {

// Runs the named check's kernel and returns what it wrote; a launch that the
// emulation refuses (as a GPU would) raises std::runtime_error.
//   "barrier_and_shuffle": half a warp at a barrier, half at a shuffle (a hang on a GPU)
//   "shared_over_default": 48 KiB + 4 bytes of dynamic shared memory without the opt-in
//   "too_many_threads": a block of 1025 threads
//   "unsynchronised_read" / "synchronised_read": thread 1 reads shared memory
//     that thread 0 writes, without / with a barrier between: [value read]
//   "warp_shuffle_xor": lane i's __shfl_xor_sync(i, 1) for 64 threads
//   "partial_warp_shuffle": lane i's __shfl_xor_sync(i, 16) for 40 threads
//     (threads 40..63 of the second warp do not exist: their value is -1)
//   "fresh_device_memory": the bits of a fresh cudaMallocAsync int
//   "static_shared_per_block": two blocks of one thread, each reading a
//     static shared int (GOLDEN_SHARED) before writing 7 to it: [value read by block]
std::vector<int> run_self_check(const std::string& name);

}  // namespace golden::gpu_emulation
