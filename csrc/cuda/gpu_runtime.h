// The one place the GPU sources meet the vendor runtime: CUDA's own header
// under nvcc, csrc/hip/hip_compat.h (cuda* names mapped to hip*) under hipcc,
// csrc/emulation/gpu_emulation.h in the CPU-emulated testing build. Also the
// small launch helpers every .cu file shares. No numerics here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#if defined(__HIPCC__)
#include "../hip/hip_compat.h"
#elif defined(GOLDEN_GPU_EMULATION)
#include "../emulation/gpu_emulation.h"
#else
#include <cuda_runtime.h>
#endif

namespace golden::gpu {

// Throws std::runtime_error naming `what` and the runtime's error string.
void check(cudaError_t status, const char* what);

// Throws if the kernel launch just issued by `what` failed.
inline void check_launch(const char* what) { check(cudaGetLastError(), what); }

// kernel<<<grid, block, shared_bytes, stream>>>(args...), the one spelling of
// a launch, so that the emulated build can run it on the CPU.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t stream,
            Args&&... args) {
#if defined(GOLDEN_GPU_EMULATION)
  static_cast<void>(stream);
  gpu_emulation::run_grid(reinterpret_cast<const void*>(kernel), grid, block, shared_bytes,
                          [&] { kernel(args...); });  // every thread gets a copy
#else
  kernel<<<grid, block, shared_bytes, stream>>>(std::forward<Args>(args)...);
#endif
}

// The type T itself, so that an array type can be one macro argument.
template <class T>
using TypeOf = T;

// A static shared variable of type T (an array: GOLDEN_SHARED(float[64], x)).
// The emulation fills it with NaN bytes before every block, as it does the
// dynamic shared memory, so that a block that reads what it never wrote sees
// garbage there as it would on a GPU (plain statics keep the previous
// block's values).
#if defined(GOLDEN_GPU_EMULATION)
#define GOLDEN_SHARED(T, name)                                     \
  static ::golden::gpu::TypeOf<T> name;                            \
  [[maybe_unused]] static const bool name##_poisoned_per_block =   \
      ::golden::gpu_emulation::poison_per_block(&name, sizeof(name))
#else
#define GOLDEN_SHARED(T, name) __shared__ ::golden::gpu::TypeOf<T> name
#endif

// The block's dynamic shared memory (the launch's shared_bytes) as T[].
#if defined(GOLDEN_GPU_EMULATION)
#define GOLDEN_DYNAMIC_SHARED(T, name) T* const name = static_cast<T*>(::golden::gpu_emulation::dynamic_shared())
#else
#define GOLDEN_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

inline cudaStream_t as_stream(std::uintptr_t stream) {
  return reinterpret_cast<cudaStream_t>(stream);
}

// The runtime's grid limits. A larger grid would fail to launch or, cast to
// unsigned, silently cover only part of the problem: grid_for refuses it.
inline constexpr std::int64_t kMaxGridX = 2147483647;
inline constexpr std::int64_t kMaxGridY = 65535;

// Grid size for `items` work items at `per_block` items per thread block;
// std::invalid_argument (ValueError) past `max_blocks`.
inline unsigned grid_for(std::int64_t items, std::int64_t per_block, std::int64_t max_blocks = kMaxGridX) {
  const std::int64_t blocks = (items + per_block - 1) / per_block;
  if (blocks > max_blocks) {
    throw std::invalid_argument("too large for one GPU launch: " + std::to_string(items) + " items need " +
                                std::to_string(blocks) + " thread blocks, the grid limit is " +
                                std::to_string(max_blocks));
  }
  return static_cast<unsigned>(blocks);
}

// Device scratch for one launcher call, allocated and released on its stream.
class DeviceBuffer {
 public:
  DeviceBuffer(std::size_t bytes, cudaStream_t stream, const char* what) : stream_(stream) {
    check(cudaMallocAsync(&data_, bytes == 0 ? 1 : bytes, stream), what);
  }
  // A destructor must not throw: a failed free is left to the next checked call.
  ~DeviceBuffer() { static_cast<void>(cudaFreeAsync(data_, stream_)); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void* data_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace golden::gpu
