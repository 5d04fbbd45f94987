// Portability layer of the shared core: host/device qualifiers, the namespace
// every core symbol lives in, and the only spellings of the correctly rounded
// IEEE operations (fma, sqrt, div) that the canonical orders may use.
#pragma once

#include <cstdint>

// nvcc includes its runtime header (the device intrinsics used below) in every
// .cu file by itself; hipcc does not, so the HIP build includes it here.
#if defined(__HIPCC__)
#include <hip/hip_runtime.h>
#endif

#if defined(__CUDACC__) || defined(__HIPCC__)
#define GOLDEN_HOST_DEVICE __host__ __device__
#define GOLDEN_DEVICE_COMPILE 1
#else
#define GOLDEN_HOST_DEVICE
#define GOLDEN_DEVICE_COMPILE 0
#endif

#define GOLDEN_INLINE GOLDEN_HOST_DEVICE inline

// For element functions that CPU loops must inline to vectorise: GCC's
// heuristics leave a long one (exp_f32) out of line in some loops, which
// then run one call per element.
#if defined(__GNUC__) && !GOLDEN_DEVICE_COMPILE
#define GOLDEN_INLINE_ALWAYS GOLDEN_HOST_DEVICE inline __attribute__((always_inline))
#else
#define GOLDEN_INLINE_ALWAYS GOLDEN_INLINE
#endif

// The CPU backend compiles the core once per instruction set (scalar, avx2,
// avx512). Each build gets its own inline namespace so the linker can never
// merge an AVX-512 instantiation into the scalar path (an ODR trap that would
// fault on CPUs without AVX-512).
#ifndef GOLDEN_TARGET
#define GOLDEN_TARGET portable
#endif

#define GOLDEN_CORE_BEGIN      \
  namespace golden {           \
  namespace core {             \
  inline namespace GOLDEN_TARGET {
#define GOLDEN_CORE_END \
  }                     \
  }                     \
  }

GOLDEN_CORE_BEGIN

// Fused multiply-add with a single rounding. The canonical orders say where an
// fma is used; everywhere else contraction is off (-ffp-contract=off, -fmad=false).
GOLDEN_INLINE float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return __fmaf_rn(a, b, c);
#else
  return __builtin_fmaf(a, b, c);
#endif
}

GOLDEN_INLINE float sqrt_rn(float a) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return __fsqrt_rn(a);
#else
  return __builtin_sqrtf(a);
#endif
}

GOLDEN_INLINE float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// Bit casts that are legal in C++ and in device code.
GOLDEN_INLINE std::uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return __float_as_uint(f);
#else
  return __builtin_bit_cast(std::uint32_t, f);
#endif
}

GOLDEN_INLINE float bits_float(std::uint32_t u) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return __uint_as_float(u);
#else
  return __builtin_bit_cast(float, u);
#endif
}

GOLDEN_CORE_END
