// GPU runtime queries and the error check shared by the launchers. A machine
// with no GPU or no driver is normal: device_count() then returns 0 quietly.
// No numerics here.
#include <stdexcept>
#include <string>

#include "gpu_runtime.h"
#include "kernels.h"

namespace golden::gpu {

void check(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

bool compiled() { return true; }

// Counted once per process (as frameworks do); any error (no driver, no
// device) means no usable GPU, and the error is cleared, not reported.
int device_count() {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      (void)cudaGetLastError();  // clear the error: no GPU is not a failure
      return 0;
    }
    return n;
  }();
  return count;
}

}  // namespace golden::gpu
