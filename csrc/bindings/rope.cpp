// Bindings of rope: validate every array, fill the inverse-frequency table
// on the backend's device (core::rope_inverse_frequency), then launch.
#include <pybind11/pybind11.h>

#include "launch.h"

namespace golden::bindings {
namespace {

// The bound under which rope_power's bit extraction is exact (rope.h).
constexpr std::int64_t kMaxHeadDim = 1 << 15;

void check_theta(float theta) {
  require_finite(theta, "theta");
  if (!(theta > 0.0f)) fail_value("theta must be > 0");
}

void check_head_dim(std::int64_t head_dim) {
  if (head_dim <= 0 || head_dim % 2 != 0 || head_dim > kMaxHeadDim) {
    fail_value("x: head_dim (the last dimension) must be even and in [2, " + std::to_string(kMaxHeadDim) +
               "], got " + std::to_string(head_dim));
  }
}

void check_inv_freq(const TensorView& inv_freq, std::int64_t head_dim) {
  require_type(inv_freq, ElementType::f32);
  require_shape(inv_freq, {head_dim / 2});
  require_contiguous(inv_freq);
}

void rope_inverse_frequencies(const std::string& backend, std::uintptr_t stream,
                              const py::object& inv_freq_capsule, std::int64_t head_dim, float theta) {
  const TensorView inv_freq = view_capsule(inv_freq_capsule, "inv_freq");
  check_head_dim(head_dim);
  check_theta(theta);
  check_inv_freq(inv_freq, head_dim);
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&inv_freq});
  GOLDEN_LAUNCH(choice, rope_inverse_frequencies, static_cast<float*>(inv_freq.data), head_dim, theta);
}

// x [..., heads, head_dim] with positions [...] (x's leading dimensions).
void check_x_and_positions(const TensorView& x, const TensorView& positions) {
  require_float(x);
  if (x.ndim() < 3) {
    fail_value(x.name + ": expected [batch, seq, heads, head_dim] or [tokens, heads, head_dim], got shape " +
               x.shape_string());
  }
  check_head_dim(x.dim(-1));
  require_contiguous(x);
  if (positions.type != ElementType::i32 && positions.type != ElementType::i64) {
    fail_type("positions: expected int32 or int64 position ids, got " + std::string(element_type_name(positions.type)));
  }
  require_shape(positions, std::vector<std::int64_t>(x.shape.begin(), x.shape.end() - 2));
  require_contiguous(positions);
}

void rope_apply(const std::string& backend, std::uintptr_t stream, const py::object& x_capsule,
                const py::object& positions_capsule, const py::object& inv_freq_capsule,
                const py::object& out_capsule, float theta, bool transpose) {
  const char* x_name = transpose ? "grad_out" : "x";
  const TensorView x = view_capsule(x_capsule, x_name);
  const TensorView positions = view_capsule(positions_capsule, "positions");
  const TensorView inv_freq = view_capsule(inv_freq_capsule, "inv_freq");
  const TensorView out = view_capsule(out_capsule, "out");
  check_x_and_positions(x, positions);
  check_theta(theta);
  const std::int64_t head_dim = x.dim(-1);
  check_inv_freq(inv_freq, head_dim);
  if (out.type != x.type && out.type != ElementType::f32) {
    fail_type("out: expected " + std::string(element_type_name(x.type)) + " or float32, got " +
              element_type_name(out.type));
  }
  require_same_shape(x, out);
  require_contiguous(out);
  for (const TensorView* input : {&x, &positions, &inv_freq}) require_no_overlap(out, *input);
  require_no_overlap(inv_freq, x);
  require_no_overlap(inv_freq, positions);
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&x, &positions, &inv_freq, &out});

  float* table = static_cast<float*>(inv_freq.data);
  GOLDEN_LAUNCH(choice, rope_inverse_frequencies, table, head_dim, theta);
  const RopeProblem problem{x.data,           positions.data, positions.type == ElementType::i64,
                            table,            out.data,       to_dtype(x.type),
                            to_dtype(out.type), positions.numel(), x.dim(-2),
                            head_dim,         transpose};
  GOLDEN_LAUNCH(choice, rope_apply, problem);
}

}  // namespace

void register_rope(py::module_& m) {
  m.def("rope_inverse_frequencies", &rope_inverse_frequencies, py::arg("backend"), py::arg("stream"),
        py::arg("inv_freq"), py::arg("head_dim"), py::arg("theta"));
  m.def("rope_apply", &rope_apply, py::arg("backend"), py::arg("stream"), py::arg("x"), py::arg("positions"),
        py::arg("inv_freq"), py::arg("out"), py::arg("theta"), py::arg("transpose"));
}

}  // namespace golden::bindings
