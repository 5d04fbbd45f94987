// The GPU backend's sources (csrc/cuda/*.cu) compiled as plain C++ and run on
// the CPU, for testing builds (CMake GOLDEN_GPU_EMULATION). This header stands
// in for the CUDA runtime: the launch configuration, thread and block indices,
// __syncthreads, warp shuffles, integer atomics, device memory and the few
// runtime calls the launchers make. Every thread of a thread block is a fiber;
// one block runs at a time, its fibers in turn, each until it reaches a
// barrier (see gpu_emulation.cpp; self_check.h checks the emulation itself).
// What this checks: the kernels' indexing, staging and barriers, bit for bit
// against the CPU backend, under the sanitizers (out-of-bounds global or
// shared accesses), and with the threads of each phase run in reverse order
// (GOLDEN_GPU_EMULATION_SCHEDULE=reverse) so that a missing barrier changes
// results. Shared memory, dynamic and static (GOLDEN_SHARED), starts every
// block as NaN bytes, so that reading what the block never wrote shows. What
// it cannot check: timing, the device compilers' code (register limits such
// as __launch_bounds__ included), and warps that run in lockstep.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>

#define __global__
#define __device__
#define __host__
#define __launch_bounds__(...)
// Static shared variables are declared with GOLDEN_SHARED (gpu_runtime.h),
// which the emulation resets before every block.
#define __shared__ static_assert(false, "declare static shared memory with GOLDEN_SHARED(T, name)");

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The running fiber's indices (set by the scheduler on every switch).
extern thread_local dim3 threadIdx;
extern thread_local dim3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};

struct EmulatedStream;
using cudaStream_t = EmulatedStream*;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
};

enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

const char* cudaGetErrorString(cudaError_t error);
cudaError_t cudaGetLastError();
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaMallocAsync(void** ptr, std::size_t bytes, cudaStream_t stream);
cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream);
cudaError_t cudaMemsetAsync(void* ptr, int value, std::size_t bytes, cudaStream_t stream);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind, cudaStream_t stream);
cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaFuncSetAttribute(const void* kernel, cudaFuncAttribute attribute, int value);

void __syncthreads();

namespace golden::gpu_emulation {

// Runs body() as every thread of every block of the grid; a bad configuration
// (or one that deadlocks) sets the error cudaGetLastError returns, as a failed
// launch does on a GPU.
void run_grid(const void* kernel, dim3 grid, dim3 block, std::size_t shared_bytes, const std::function<void()>& body);

// This block's dynamic shared memory (shared_bytes of the launch).
void* dynamic_shared();

// Fills the static shared variable at [address, address + bytes) with NaN
// bytes now and before every later block (GOLDEN_SHARED); returns true.
bool poison_per_block(void* address, std::size_t bytes);

// Lane `source` of this thread's warp's `bits`, once every running lane of the
// warp has offered its own.
std::uint64_t warp_exchange(std::uint64_t bits, int source);

// The warp lane of the running thread (32-lane warps, as CUDA's).
int lane_id();

template <class T>
std::uint64_t to_bits(T value) {
  static_assert(sizeof(T) <= sizeof(std::uint64_t), "a register's value");
  std::uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  return bits;
}

template <class T>
T from_bits(std::uint64_t bits) {
  T value;
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

}  // namespace golden::gpu_emulation

// The emulated shuffles of csrc/cuda: every lane of the warp takes part.
template <class T>
T __shfl_xor_sync(unsigned, T value, int lane_mask, int width) {
  namespace emu = golden::gpu_emulation;
  const int lane = emu::lane_id();
  const int source = (lane ^ lane_mask) < (lane / width + 1) * width ? lane ^ lane_mask : lane;
  return emu::from_bits<T>(emu::warp_exchange(emu::to_bits(value), source));
}

template <class T>
T __shfl_sync(unsigned, T value, int source_lane, int width) {
  namespace emu = golden::gpu_emulation;
  const int lane = emu::lane_id();
  return emu::from_bits<T>(emu::warp_exchange(emu::to_bits(value), lane / width * width + source_lane % width));
}

// Atomics: the fibers of a block never preempt each other and one block runs
// at a time, so a read-modify-write is atomic as written.
template <class T>
T atomicMax(T* address, T value) {
  const T old = *address;
  if (value > old) *address = value;
  return old;
}

template <class T>
T atomicMin(T* address, T value) {
  const T old = *address;
  if (value < old) *address = value;
  return old;
}

template <class T>
T atomicOr(T* address, T value) {
  const T old = *address;
  *address = old | value;
  return old;
}
