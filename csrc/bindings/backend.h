// Which backend runs a call, and the checks that tie tensors to it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tensor_view.h"

namespace golden::bindings {

enum class Backend { reference, cpu, gpu };

// A parsed backend choice: "reference" (scalar, one thread), "cpu" (the
// active instruction set, the configured threads), or the GPU backend this
// module was built with ("cuda" or "hip").
struct BackendChoice {
  Backend backend;
  std::uintptr_t stream;  // GPU stream handle; 0 = the default stream
};

BackendChoice parse_backend(const std::string& name, std::uintptr_t stream);
std::vector<std::string> compiled_backends();
std::vector<std::string> available_backends();

// Every tensor must live where the backend runs (one device for the GPU).
void require_backend_device(const BackendChoice& choice, const std::vector<const TensorView*>& tensors);

}  // namespace golden::bindings
