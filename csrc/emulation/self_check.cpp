// The GPU emulation's self-checks (see self_check.h), written as GPU code and
// launched through the same helpers as the kernels of csrc/cuda.
#include "self_check.h"

#include <stdexcept>

#include "../cuda/gpu_runtime.h"

namespace golden::gpu_emulation {
namespace {

// Half of a warp waits at the block barrier, the other half at a shuffle
// that needs the first half: neither can ever complete.
__global__ void barrier_and_shuffle_kernel(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    out[0] = __shfl_xor_sync(0xFFFFFFFFu, 1, 16, 32);
  }
}

__global__ void empty_kernel() {}

template <bool kSynchronised>
__global__ void shared_read_kernel(int* out) {
  GOLDEN_DYNAMIC_SHARED(int, value);
  if (threadIdx.x == 0) *value = 1;
  if (kSynchronised) __syncthreads();
  if (threadIdx.x == 1) *out = *value;
}

// Each block reads a static shared int before writing kWritten to it (a
// template, as the kernels whose statics a linker section would miss).
template <int kWritten>
__global__ void static_shared_kernel(int* out) {
  GOLDEN_SHARED(int, value);
  out[blockIdx.x] = value;
  value = kWritten;
}

template <int kLaneMask>
__global__ void shuffle_kernel(int* out) {
  out[threadIdx.x] = __shfl_xor_sync(0xFFFFFFFFu, static_cast<int>(threadIdx.x), kLaneMask, 32);
}

// Launches kernel on `blocks` blocks of `threads` threads with `shared_bytes`
// of dynamic shared memory (and, if it takes one, a pointer to `values` fresh
// ints of device memory), then returns those ints.
template <class... Params>
std::vector<int> run(void (*kernel)(Params...), unsigned threads, std::size_t shared_bytes, std::size_t values,
                     unsigned blocks = 1) {
  gpu::DeviceBuffer out(values * sizeof(int), nullptr, "self check (alloc)");
  if constexpr (sizeof...(Params) == 1) {
    gpu::launch(kernel, dim3(blocks), dim3(threads), shared_bytes, nullptr, out.as<int>());
  } else {
    gpu::launch(kernel, dim3(blocks), dim3(threads), shared_bytes, nullptr);
  }
  gpu::check_launch("self check");
  std::vector<int> result(values);
  gpu::check(cudaMemcpy(result.data(), out.as<int>(), values * sizeof(int), cudaMemcpyDeviceToHost), "self check");
  return result;
}

}  // namespace

std::vector<int> run_self_check(const std::string& name) {
  if (name == "barrier_and_shuffle") return run(barrier_and_shuffle_kernel, 32, 0, 1);
  if (name == "shared_over_default") return run(empty_kernel, 32, 48 * 1024 + 4, 0);
  if (name == "too_many_threads") return run(empty_kernel, 1025, 0, 0);
  if (name == "unsynchronised_read") return run(shared_read_kernel<false>, 2, sizeof(int), 1);
  if (name == "synchronised_read") return run(shared_read_kernel<true>, 2, sizeof(int), 1);
  if (name == "warp_shuffle_xor") return run(shuffle_kernel<1>, 64, 0, 64);
  if (name == "partial_warp_shuffle") return run(shuffle_kernel<16>, 40, 0, 40);
  if (name == "fresh_device_memory") return run(empty_kernel, 1, 0, 1);
  if (name == "static_shared_per_block") return run(static_shared_kernel<7>, 1, 0, 2, 2);
  throw std::invalid_argument("unknown GPU emulation self-check: " + name);
}

}  // namespace golden::gpu_emulation
