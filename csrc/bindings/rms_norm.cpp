// Bindings of rms_norm: validate every array, then launch.
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

void check_eps(float eps) {
  require_finite(eps, "eps");
  if (eps < 0.0f) fail_value("eps must be >= 0");
}

// x [..., cols] with weight [cols]; returns cols.
std::int64_t check_rows_and_weight(const TensorView& x, const TensorView& weight) {
  require_float(x);
  require_min_ndim(x, 1);
  require_same_type(x, weight);
  require_shape(weight, {x.dim(-1)});
  if (x.dim(-1) == 0) fail_value("x: the normalized (last) dimension must not be empty");
  require_contiguous(x);
  require_contiguous(weight);
  return x.dim(-1);
}

void rms_norm_forward(const std::string& backend, std::uintptr_t stream, const py::object& x_capsule,
                      const py::object& weight_capsule, const py::object& out_capsule, float eps,
                      bool hf_rounding) {
  const TensorView x = view_capsule(x_capsule, "x");
  const TensorView weight = view_capsule(weight_capsule, "weight");
  const TensorView out = view_capsule(out_capsule, "out");
  const std::int64_t cols = check_rows_and_weight(x, weight);
  check_eps(eps);
  check_output_type(x, out);
  require_same_shape(x, out);
  require_contiguous(out);
  require_no_overlap(out, x);
  require_no_overlap(out, weight);
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&x, &weight, &out});

  const RmsNormForwardProblem problem{
      x.data, weight.data, out.data, to_dtype(x.type), to_dtype(out.type), x.numel() / cols, cols, eps,
      hf_rounding ? RmsNormRounding::hf : RmsNormRounding::once};
  GOLDEN_LAUNCH(choice, rms_norm_forward, problem);
}

void rms_norm_backward(const std::string& backend, std::uintptr_t stream, const py::object& grad_capsule,
                       const py::object& x_capsule, const py::object& weight_capsule,
                       const py::object& dx_capsule, const py::object& dweight_capsule,
                       const py::object& workspace_capsule, float eps) {
  const TensorView grad = view_capsule(grad_capsule, "grad_out");
  const TensorView x = view_capsule(x_capsule, "x");
  const TensorView weight = view_capsule(weight_capsule, "weight");
  const TensorView dx = view_capsule(dx_capsule, "dx");
  const TensorView dweight = view_capsule(dweight_capsule, "dweight");
  const TensorView workspace = view_capsule(workspace_capsule, "workspace");
  const std::int64_t cols = check_rows_and_weight(x, weight);
  check_eps(eps);
  require_same_type(x, grad);
  require_same_shape(x, grad);
  require_contiguous(grad);
  check_output_type(x, dx);
  require_same_type(dx, dweight);
  require_same_shape(x, dx);
  require_same_shape(weight, dweight);
  const std::int64_t rows = x.numel() / cols;
  require_type(workspace, ElementType::f32);
  require_shape(workspace, {(rows + kRmsNormGradRowBlock - 1) / kRmsNormGradRowBlock, cols});
  for (const TensorView* t : {&dx, &dweight, &workspace}) require_contiguous(*t);
  for (const TensorView* output : {&dx, &dweight, &workspace}) {
    for (const TensorView* input : {&grad, &x, &weight}) require_no_overlap(*output, *input);
  }
  require_no_overlap(dx, dweight);
  require_no_overlap(dx, workspace);
  require_no_overlap(dweight, workspace);
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&grad, &x, &weight, &dx, &dweight, &workspace});

  const RmsNormBackwardProblem problem{grad.data,          x.data,           weight.data,
                                       dx.data,            dweight.data,     static_cast<float*>(workspace.data),
                                       to_dtype(x.type),   to_dtype(dx.type), rows,
                                       cols,               eps};
  GOLDEN_LAUNCH(choice, rms_norm_backward, problem);
}

}  // namespace

void register_rms_norm(py::module_& m) {
  m.attr("RMS_NORM_GRAD_ROW_BLOCK") = kRmsNormGradRowBlock;
  m.def("rms_norm_forward", &rms_norm_forward, py::arg("backend"), py::arg("stream"), py::arg("x"),
        py::arg("weight"), py::arg("out"), py::arg("eps"), py::arg("hf_rounding"));
  m.def("rms_norm_backward", &rms_norm_backward, py::arg("backend"), py::arg("stream"),
        py::arg("grad_out"), py::arg("x"), py::arg("weight"), py::arg("dx"), py::arg("dweight"),
        py::arg("workspace"), py::arg("eps"));
}

}  // namespace golden::bindings
