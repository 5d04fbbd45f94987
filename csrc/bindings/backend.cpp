#include "backend.h"

#include "../cuda/kernels.h"

namespace golden::bindings {
namespace {

// The emulated build runs the GPU sources on the CPU, on CPU arrays
// (csrc/emulation/gpu_emulation.h).
const char* gpu_backend_name() {
#if defined(GOLDEN_WITH_HIP)
  return "hip";
#elif defined(GOLDEN_GPU_EMULATION)
  return "emulated";
#else
  return "cuda";
#endif
}

DeviceKind gpu_device_kind() {
#if defined(GOLDEN_WITH_HIP)
  return DeviceKind::rocm;
#elif defined(GOLDEN_GPU_EMULATION)
  return DeviceKind::cpu;
#else
  return DeviceKind::cuda;
#endif
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
}

}  // namespace

std::vector<std::string> compiled_backends() {
  std::vector<std::string> names{"reference", "cpu"};
  if (gpu::compiled()) names.emplace_back(gpu_backend_name());
  return names;
}

std::vector<std::string> available_backends() {
  std::vector<std::string> names{"reference", "cpu"};
  if (gpu::compiled() && gpu::device_count() > 0) names.emplace_back(gpu_backend_name());
  return names;
}

BackendChoice parse_backend(const std::string& name, std::uintptr_t stream) {
  if (name == "reference") return {Backend::reference, 0};
  if (name == "cpu") return {Backend::cpu, 0};
  const auto available = available_backends();
  if (name == gpu_backend_name() && available.size() > 2) return {Backend::gpu, stream};
  fail_value("backend '" + name + "' is not available; available backends: " + join(available));
}

void require_backend_device(const BackendChoice& choice, const std::vector<const TensorView*>& tensors) {
  const DeviceKind wanted = choice.backend == Backend::gpu ? gpu_device_kind() : DeviceKind::cpu;
  const char* where = choice.backend == Backend::gpu ? gpu_backend_name() : "cpu";
  for (const TensorView* t : tensors) {
    if (t->device != wanted) {
      fail_value(t->name + ": expected a " + where + " array for this backend; all arguments must be on one device");
    }
    if (t->device_id != tensors.front()->device_id) {
      fail_value(t->name + ": on device " + std::to_string(t->device_id) + " but " + tensors.front()->name +
                 " is on device " + std::to_string(tensors.front()->device_id));
    }
  }
}

}  // namespace golden::bindings
