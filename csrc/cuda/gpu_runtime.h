// The one place the GPU sources meet the vendor runtime: CUDA's own header
// under nvcc, csrc/hip/hip_compat.h (cuda* names mapped to hip*) under hipcc.
// Also the small launch helpers every .cu file shares. No numerics here.
#pragma once

#include <cstdint>

#if defined(__HIPCC__)
#include "../hip/hip_compat.h"
#else
#include <cuda_runtime.h>
#endif

namespace golden::gpu {

// Throws std::runtime_error naming `what` and the runtime's error string.
void check(cudaError_t status, const char* what);

// Throws if the kernel launch just issued by `what` failed.
inline void check_launch(const char* what) { check(cudaGetLastError(), what); }

inline cudaStream_t as_stream(std::uintptr_t stream) {
  return reinterpret_cast<cudaStream_t>(stream);
}

// Grid size for `items` work items at `per_block` items per thread block.
inline unsigned grid_for(std::int64_t items, std::int64_t per_block) {
  return static_cast<unsigned>((items + per_block - 1) / per_block);
}

}  // namespace golden::gpu
