// Vendor header of the HIP build: the csrc/cuda/*.cu sources are compiled
// as HIP unchanged, and this maps the cuda* names they use to hip*. Shuffles
// keep an explicit width of 32, so wave64 GPUs still run the 32-lane order.
#pragma once

#include <hip/hip_runtime.h>

#define cudaError_t hipError_t
#define cudaSuccess hipSuccess
#define cudaStream_t hipStream_t
#define cudaGetErrorString hipGetErrorString
#define cudaGetDevice hipGetDevice
#define cudaGetDeviceCount hipGetDeviceCount
#define cudaGetLastError hipGetLastError
#define cudaMallocAsync hipMallocAsync
#define cudaFreeAsync hipFreeAsync
#define cudaMemsetAsync hipMemsetAsync
#define cudaMemcpy hipMemcpy
#define cudaMemcpyAsync hipMemcpyAsync
#define cudaMemcpyDeviceToHost hipMemcpyDeviceToHost
#define cudaStreamSynchronize hipStreamSynchronize
#define cudaFuncSetAttribute hipFuncSetAttribute
#define cudaFuncAttributeMaxDynamicSharedMemorySize hipFuncAttributeMaxDynamicSharedMemorySize

// HIP's shuffles take no mask (every lane of the group takes part). The
// callers always pass the width, 32, which splits a wave64 into two
// independent 32-lane groups.
#define __shfl_xor_sync(mask, value, lane_mask, width) __shfl_xor(value, lane_mask, width)
#define __shfl_sync(mask, value, src_lane, width) __shfl(value, src_lane, width)
