// Runs a kernel on the chosen backend with the GIL released and, for the CPU
// backends, the default floating-point environment on the calling thread.
#pragma once

#include <pybind11/pybind11.h>

#include <utility>

#include "../cpu/isa.h"
#include "../cpu/kernels.h"
#include "../cpu/parallel.h"
#include "../cuda/kernels.h"
#include "backend.h"

namespace golden::bindings {

// Usage: GOLDEN_LAUNCH(choice, rms_norm_forward, problem);
// reference = scalar instruction set on one thread; cpu = the active set on
// the configured threads; gpu = the CUDA/HIP launcher on the given stream.
#define GOLDEN_LAUNCH(choice, kernel, ...)                                                  \
  do {                                                                                      \
    const ::golden::bindings::BackendChoice golden_choice_ = (choice);                      \
    ::pybind11::gil_scoped_release golden_no_gil_;                                          \
    ::golden::cpu::DefaultFloatEnvironment golden_float_environment_;                       \
    switch (golden_choice_.backend) {                                                       \
      case ::golden::bindings::Backend::reference:                                          \
        ::golden::cpu::scalar::kernel(__VA_ARGS__, 1);                                      \
        break;                                                                              \
      case ::golden::bindings::Backend::cpu:                                                \
        GOLDEN_CPU_DISPATCH(::golden::cpu::active_isa(), kernel, __VA_ARGS__,               \
                            ::golden::cpu::num_threads());                                  \
        break;                                                                              \
      case ::golden::bindings::Backend::gpu:                                                \
        ::golden::gpu::kernel(__VA_ARGS__, golden_choice_.stream);                          \
        break;                                                                              \
    }                                                                                       \
  } while (false)

}  // namespace golden::bindings
