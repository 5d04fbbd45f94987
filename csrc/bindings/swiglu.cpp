// Bindings of silu and swiglu: validate every array, then launch.
#include <pybind11/pybind11.h>

#include "launch.h"

namespace golden::bindings {
namespace {

void check_output_type(const TensorView& input, const TensorView& output) {
  if (output.type != input.type && output.type != ElementType::f32) {
    fail_type(output.name + ": expected " + element_type_name(input.type) + " or float32, got " +
              element_type_name(output.type));
  }
}

// An input of the op's float dtype and shape (that of `first`), dense.
void check_input(const TensorView& first, const TensorView& t) {
  require_float(t);
  require_same_type(first, t);
  require_same_shape(first, t);
  require_contiguous(t);
}

// An output of the input's shape, of its dtype or fp32, dense, aliasing no input.
void check_output(const TensorView& first, const TensorView& out,
                  std::initializer_list<const TensorView*> inputs) {
  check_output_type(first, out);
  require_same_shape(first, out);
  require_contiguous(out);
  for (const TensorView* input : inputs) require_no_overlap(out, *input);
}

void silu_forward(const std::string& backend, std::uintptr_t stream, const py::object& x_capsule,
                  const py::object& y_capsule) {
  const TensorView x = view_capsule(x_capsule, "x");
  const TensorView y = view_capsule(y_capsule, "out");
  check_input(x, x);
  check_output(x, y, {&x});
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&x, &y});
  const SiluForwardProblem problem{x.data, y.data, to_dtype(x.type), to_dtype(y.type), x.numel()};
  GOLDEN_LAUNCH(choice, silu_forward, problem);
}

void silu_backward(const std::string& backend, std::uintptr_t stream, const py::object& grad_capsule,
                   const py::object& x_capsule, const py::object& dx_capsule) {
  const TensorView x = view_capsule(x_capsule, "x");
  const TensorView grad = view_capsule(grad_capsule, "grad_out");
  const TensorView dx = view_capsule(dx_capsule, "dx");
  check_input(x, x);
  check_input(x, grad);
  check_output(x, dx, {&x, &grad});
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&grad, &x, &dx});
  const SiluBackwardProblem problem{grad.data, x.data, dx.data, to_dtype(x.type), to_dtype(dx.type),
                                    x.numel()};
  GOLDEN_LAUNCH(choice, silu_backward, problem);
}

void swiglu_forward(const std::string& backend, std::uintptr_t stream, const py::object& gate_capsule,
                    const py::object& up_capsule, const py::object& y_capsule) {
  const TensorView gate = view_capsule(gate_capsule, "gate");
  const TensorView up = view_capsule(up_capsule, "up");
  const TensorView y = view_capsule(y_capsule, "out");
  check_input(gate, gate);
  check_input(gate, up);
  check_output(gate, y, {&gate, &up});
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&gate, &up, &y});
  const SwigluForwardProblem problem{gate.data, up.data, y.data, to_dtype(gate.type), to_dtype(y.type),
                                     gate.numel()};
  GOLDEN_LAUNCH(choice, swiglu_forward, problem);
}

void swiglu_backward(const std::string& backend, std::uintptr_t stream, const py::object& grad_capsule,
                     const py::object& gate_capsule, const py::object& up_capsule,
                     const py::object& dgate_capsule, const py::object& dup_capsule) {
  const TensorView gate = view_capsule(gate_capsule, "gate");
  const TensorView up = view_capsule(up_capsule, "up");
  const TensorView grad = view_capsule(grad_capsule, "grad_out");
  const TensorView dgate = view_capsule(dgate_capsule, "dgate");
  const TensorView dup = view_capsule(dup_capsule, "dup");
  check_input(gate, gate);
  check_input(gate, up);
  check_input(gate, grad);
  check_output(gate, dgate, {&gate, &up, &grad});
  check_output(gate, dup, {&gate, &up, &grad, &dgate});
  require_same_type(dgate, dup);
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&grad, &gate, &up, &dgate, &dup});
  const SwigluBackwardProblem problem{grad.data,           gate.data,          up.data,
                                      dgate.data,          dup.data,           to_dtype(gate.type),
                                      to_dtype(dgate.type), gate.numel()};
  GOLDEN_LAUNCH(choice, swiglu_backward, problem);
}

}  // namespace

void register_swiglu(py::module_& m) {
  m.def("silu_forward", &silu_forward, py::arg("backend"), py::arg("stream"), py::arg("x"), py::arg("out"));
  m.def("silu_backward", &silu_backward, py::arg("backend"), py::arg("stream"), py::arg("grad_out"),
        py::arg("x"), py::arg("dx"));
  m.def("swiglu_forward", &swiglu_forward, py::arg("backend"), py::arg("stream"), py::arg("gate"),
        py::arg("up"), py::arg("out"));
  m.def("swiglu_backward", &swiglu_backward, py::arg("backend"), py::arg("stream"), py::arg("grad_out"),
        py::arg("gate"), py::arg("up"), py::arg("dgate"), py::arg("dup"));
}

}  // namespace golden::bindings
