// Bindings of linear / lm_head: validate every array, then launch. The reference
// backend runs the canonical order one output at a time (csrc/cpu/linear.cpp).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <utility>
#include <vector>

#include "launch.h"

namespace golden::bindings {
namespace {

// reference: the per-output evaluation of the core's definition; cpu and gpu:
// the tiled kernels, through GOLDEN_LAUNCH.
#define GOLDEN_LAUNCH_LINEAR(choice, kernel, problem)       \
  do {                                                      \
    if ((choice).backend == Backend::reference) {           \
      py::gil_scoped_release golden_no_gil_;                \
      cpu::DefaultFloatEnvironment golden_environment_;     \
      ::golden::cpu::scalar::kernel##_reference(problem);   \
    } else {                                                \
      GOLDEN_LAUNCH(choice, kernel, problem);               \
    }                                                       \
  } while (false)

std::optional<TensorView> view_optional(const py::object& capsule, const char* name) {
  if (capsule.is_none()) return std::nullopt;
  return view_capsule(capsule, name);
}

void check_output_type(const TensorView& input, const TensorView& output) {
  if (output.type != input.type && output.type != ElementType::f32) {
    fail_type(output.name + ": expected " + element_type_name(input.type) + " or float32, got " +
              element_type_name(output.type));
  }
}

// weight [out_features, in_features] matching x [..., in_features].
void check_weight(const TensorView& x, const TensorView& weight) {
  require_float(x);
  require_min_ndim(x, 1);
  require_same_type(x, weight);
  if (weight.ndim() != 2) {
    fail_value("weight: expected 2 dimensions [out_features, in_features], got shape " + weight.shape_string());
  }
  if (weight.dim(1) != x.dim(-1)) {
    fail_value("inner dimensions differ: x has in_features " + std::to_string(x.dim(-1)) + " but weight " +
               weight.shape_string() + " has " + std::to_string(weight.dim(1)));
  }
  require_contiguous(x);
  require_contiguous(weight);
}

void check_bias(const TensorView& weight, const std::optional<TensorView>& bias) {
  if (!bias) return;
  require_same_type(weight, *bias);
  require_shape(*bias, {weight.dim(0)});
  require_contiguous(*bias);
}

std::vector<std::int64_t> with_last(std::vector<std::int64_t> shape, std::int64_t last) {
  shape.back() = last;
  return shape;
}

std::vector<const TensorView*> present(std::initializer_list<const TensorView*> all) {
  std::vector<const TensorView*> out;
  for (const TensorView* t : all) {
    if (t != nullptr) out.push_back(t);
  }
  return out;
}

void check_outputs(const std::vector<const TensorView*>& outputs, const std::vector<const TensorView*>& inputs) {
  for (const TensorView* output : outputs) {
    require_contiguous(*output);
    for (const TensorView* input : inputs) require_no_overlap(*output, *input);
    for (const TensorView* other : outputs) {
      if (other != output) require_no_overlap(*output, *other);
    }
  }
}

// Rows of x [..., in_features]: the product of the leading dimensions.
std::int64_t leading_rows(const TensorView& x) {
  std::int64_t rows = 1;
  for (int i = 0; i + 1 < x.ndim(); ++i) rows *= x.dim(i);
  return rows;
}

const TensorView* pointer(const std::optional<TensorView>& t) { return t ? &*t : nullptr; }
void* data_or_null(const std::optional<TensorView>& t) { return t ? t->data : nullptr; }

void linear_forward(const std::string& backend, std::uintptr_t stream, const py::object& x_capsule,
                    const py::object& weight_capsule, const py::object& bias_capsule,
                    const py::object& out_capsule) {
  const TensorView x = view_capsule(x_capsule, "x");
  const TensorView weight = view_capsule(weight_capsule, "weight");
  const std::optional<TensorView> bias = view_optional(bias_capsule, "bias");
  const TensorView out = view_capsule(out_capsule, "out");
  check_weight(x, weight);
  check_bias(weight, bias);
  check_output_type(x, out);
  require_shape(out, with_last(x.shape, weight.dim(0)));
  check_outputs({&out}, present({&x, &weight, pointer(bias)}));
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, present({&x, &weight, pointer(bias), &out}));

  const LinearForwardProblem problem{x.data,           weight.data,        data_or_null(bias),
                                     out.data,         to_dtype(x.type),   to_dtype(out.type),
                                     leading_rows(x),  x.dim(-1),          weight.dim(0)};
  GOLDEN_LAUNCH_LINEAR(choice, linear_forward, problem);
}

void linear_backward(const std::string& backend, std::uintptr_t stream, const py::object& grad_capsule,
                     const py::object& x_capsule, const py::object& weight_capsule, const py::object& dx_capsule,
                     const py::object& dweight_capsule, const py::object& dbias_capsule) {
  const TensorView grad = view_capsule(grad_capsule, "grad_out");
  const TensorView x = view_capsule(x_capsule, "x");
  const TensorView weight = view_capsule(weight_capsule, "weight");
  const std::optional<TensorView> dx = view_optional(dx_capsule, "dx");
  const std::optional<TensorView> dweight = view_optional(dweight_capsule, "dweight");
  const std::optional<TensorView> dbias = view_optional(dbias_capsule, "dbias");
  check_weight(x, weight);
  require_same_type(x, grad);
  require_shape(grad, with_last(x.shape, weight.dim(0)));
  require_contiguous(grad);
  const TensorView* first_output = dx ? &*dx : dweight ? &*dweight : pointer(dbias);
  for (const TensorView* t : present({pointer(dx), pointer(dweight), pointer(dbias)})) {
    check_output_type(x, *t);
    require_same_type(*first_output, *t);
  }
  if (dx) require_same_shape(x, *dx);
  if (dweight) require_same_shape(weight, *dweight);
  if (dbias) require_shape(*dbias, {weight.dim(0)});
  check_outputs(present({pointer(dx), pointer(dweight), pointer(dbias)}), {&grad, &x, &weight});
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, present({&grad, &x, &weight, pointer(dx), pointer(dweight), pointer(dbias)}));
  if (first_output == nullptr) return;

  const LinearBackwardProblem problem{grad.data, x.data, weight.data, data_or_null(dx), data_or_null(dweight),
                                      data_or_null(dbias), to_dtype(x.type), to_dtype(first_output->type),
                                      leading_rows(x), x.dim(-1), weight.dim(0)};
  GOLDEN_LAUNCH_LINEAR(choice, linear_backward, problem);
}

// partials [shards, ..., out_features] float32 -> out [..., out_features].
void linear_merge(const std::string& backend, std::uintptr_t stream, const py::object& partials_capsule,
                  const py::object& bias_capsule, const py::object& out_capsule) {
  const TensorView partials = view_capsule(partials_capsule, "partials");
  const std::optional<TensorView> bias = view_optional(bias_capsule, "bias");
  const TensorView out = view_capsule(out_capsule, "out");
  require_type(partials, ElementType::f32);
  require_min_ndim(partials, 2);
  if (partials.dim(0) == 0) fail_value("partials: expected at least one shard");
  require_contiguous(partials);
  require_float(out);
  require_shape(out, std::vector<std::int64_t>(partials.shape.begin() + 1, partials.shape.end()));
  if (bias) {
    require_float(*bias);
    if (out.type != bias->type && out.type != ElementType::f32) {
      fail_type("out: expected the dtype of bias (" + std::string(element_type_name(bias->type)) +
                ") or float32, got " + element_type_name(out.type));
    }
    require_shape(*bias, {out.dim(-1)});
    require_contiguous(*bias);
  }
  check_outputs({&out}, present({&partials, pointer(bias)}));
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, present({&partials, pointer(bias), &out}));

  const LinearMergeProblem problem{static_cast<const float*>(partials.data), data_or_null(bias), out.data,
                                   to_dtype(bias ? bias->type : out.type), to_dtype(out.type),
                                   partials.dim(0), out.numel(), out.dim(-1)};
  GOLDEN_LAUNCH(choice, linear_merge, problem);
}

// [begin, end) of each shard's contraction range (see core::linear_shard_first_block).
std::vector<std::pair<std::int64_t, std::int64_t>> linear_shard_bounds(std::int64_t in_features,
                                                                       std::int64_t shards) {
  if (in_features < 0 || in_features > (std::int64_t{1} << 62)) fail_value("in_features must be in [0, 2^62]");
  const std::int64_t blocks = core::linear_block_count(in_features);
  if (shards < 1 || shards > blocks) {
    fail_value("shards must be between 1 and the number of K-blocks (" + std::to_string(blocks) + " for in_features " +
               std::to_string(in_features) + ")");
  }
  std::vector<std::pair<std::int64_t, std::int64_t>> bounds;
  for (std::int64_t s = 0; s < shards; ++s) {
    const std::int64_t begin = core::linear_shard_first_block(s, shards, blocks) * kLinearKBlock;
    const std::int64_t end =
        s + 1 < shards ? core::linear_shard_first_block(s + 1, shards, blocks) * kLinearKBlock : in_features;
    bounds.emplace_back(std::min(begin, in_features), std::min(end, in_features));
  }
  return bounds;
}

}  // namespace

void register_linear(py::module_& m) {
  m.attr("LINEAR_K_BLOCK") = kLinearKBlock;
  m.def("linear_forward", &linear_forward, py::arg("backend"), py::arg("stream"), py::arg("x"), py::arg("weight"),
        py::arg("bias"), py::arg("out"));
  m.def("linear_backward", &linear_backward, py::arg("backend"), py::arg("stream"), py::arg("grad_out"),
        py::arg("x"), py::arg("weight"), py::arg("dx"), py::arg("dweight"), py::arg("dbias"));
  m.def("linear_merge", &linear_merge, py::arg("backend"), py::arg("stream"), py::arg("partials"), py::arg("bias"),
        py::arg("out"));
  m.def("linear_shard_bounds", &linear_shard_bounds, py::arg("in_features"), py::arg("shards"));
}

}  // namespace golden::bindings
