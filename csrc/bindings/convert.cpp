// Bindings of convert: elementwise dtype conversion by the core's rounding rule.
#include <pybind11/pybind11.h>

#include "launch.h"

namespace golden::bindings {
namespace {

void convert(const std::string& backend, std::uintptr_t stream, const py::object& src_capsule,
             const py::object& dst_capsule) {
  const TensorView src = view_capsule(src_capsule, "src");
  const TensorView dst = view_capsule(dst_capsule, "dst");
  require_float(src);
  require_float(dst);
  require_same_shape(src, dst);
  require_contiguous(src);
  require_contiguous(dst);
  require_no_overlap(dst, src);
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&src, &dst});
  GOLDEN_LAUNCH(choice, convert, src.data, to_dtype(src.type), dst.data, to_dtype(dst.type), src.numel());
}

}  // namespace

void register_convert(py::module_& m) {
  m.def("convert", &convert, py::arg("backend"), py::arg("stream"), py::arg("src"), py::arg("dst"));
}

}  // namespace golden::bindings
