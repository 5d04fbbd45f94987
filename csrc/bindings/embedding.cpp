// Bindings of embedding: validate every array, check every token id on the
// backend's device before any row is read (an out-of-range id raises
// ValueError, never a fault), then launch.
#include <pybind11/pybind11.h>

#include "launch.h"

namespace golden::bindings {
namespace {

EmbeddingIds check_ids(const TensorView& ids) {
  if (ids.type != ElementType::i32 && ids.type != ElementType::i64) {
    fail_type(ids.name + ": expected int32 or int64 token ids, got " + element_type_name(ids.type));
  }
  require_contiguous(ids);
  return EmbeddingIds{ids.data, ids.type == ElementType::i64, ids.numel()};
}

void check_table(const TensorView& table) {
  require_float(table);
  if (table.ndim() != 2) {
    fail_value(table.name + ": expected a 2-D [num_embeddings, embedding_dim] table, got shape " +
               table.shape_string());
  }
  require_contiguous(table);
}

// `rows` must be [*ids.shape, dim].
void check_token_rows(const TensorView& ids, const TensorView& rows, std::int64_t dim) {
  std::vector<std::int64_t> shape = ids.shape;
  shape.push_back(dim);
  require_shape(rows, shape);
  require_contiguous(rows);
}

void check_output_type(const TensorView& input, const TensorView& output) {
  if (output.type != input.type && output.type != ElementType::f32) {
    fail_type(output.name + ": expected " + element_type_name(input.type) + " or float32, got " +
              element_type_name(output.type));
  }
}

void require_valid_ids(const BackendChoice& choice, const EmbeddingIds& ids, std::int64_t vocab) {
  InvalidId invalid{-1, 0};
  GOLDEN_LAUNCH(choice, embedding_find_invalid_id, ids, vocab, &invalid);
  if (invalid.position >= 0) {
    fail_value("token_ids: id " + std::to_string(invalid.value) + " at flat position " +
               std::to_string(invalid.position) + " is out of range for a table of " +
               std::to_string(vocab) + " rows (valid ids: 0.." + std::to_string(vocab - 1) + ")");
  }
}

void embedding_forward(const std::string& backend, std::uintptr_t stream, const py::object& ids_capsule,
                       const py::object& weight_capsule, const py::object& out_capsule) {
  const TensorView ids = view_capsule(ids_capsule, "token_ids");
  const TensorView weight = view_capsule(weight_capsule, "weight");
  const TensorView out = view_capsule(out_capsule, "out");
  const EmbeddingIds id_view = check_ids(ids);
  check_table(weight);
  check_output_type(weight, out);
  check_token_rows(ids, out, weight.dim(1));
  require_no_overlap(out, ids);
  require_no_overlap(out, weight);
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&ids, &weight, &out});
  require_valid_ids(choice, id_view, weight.dim(0));

  const EmbeddingForwardProblem problem{id_view,          weight.data,    out.data,      to_dtype(weight.type),
                                        to_dtype(out.type), weight.dim(0), weight.dim(1)};
  GOLDEN_LAUNCH(choice, embedding_forward, problem);
}

void embedding_backward(const std::string& backend, std::uintptr_t stream, const py::object& grad_capsule,
                        const py::object& ids_capsule, const py::object& weight_capsule,
                        const py::object& dweight_capsule, const py::object& workspace_capsule) {
  const TensorView grad = view_capsule(grad_capsule, "grad_out");
  const TensorView ids = view_capsule(ids_capsule, "token_ids");
  const TensorView weight = view_capsule(weight_capsule, "weight");
  const TensorView dweight = view_capsule(dweight_capsule, "dweight");
  const TensorView workspace = view_capsule(workspace_capsule, "workspace");
  const EmbeddingIds id_view = check_ids(ids);
  check_table(weight);
  require_same_type(weight, grad);
  check_token_rows(ids, grad, weight.dim(1));
  check_output_type(weight, dweight);
  require_same_shape(weight, dweight);
  require_contiguous(dweight);
  require_type(workspace, ElementType::i64);
  require_shape(workspace, {weight.dim(0) + 1 + id_view.count});
  require_contiguous(workspace);
  for (const TensorView* output : {&dweight, &workspace}) {
    for (const TensorView* input : {&grad, &ids, &weight}) require_no_overlap(*output, *input);
  }
  require_no_overlap(dweight, workspace);
  const BackendChoice choice = parse_backend(backend, stream);
  require_backend_device(choice, {&grad, &ids, &weight, &dweight, &workspace});
  require_valid_ids(choice, id_view, weight.dim(0));

  const EmbeddingBackwardProblem problem{id_view,
                                         grad.data,
                                         dweight.data,
                                         static_cast<std::int64_t*>(workspace.data),
                                         to_dtype(grad.type),
                                         to_dtype(dweight.type),
                                         weight.dim(0),
                                         weight.dim(1)};
  GOLDEN_LAUNCH(choice, embedding_backward, problem);
}

}  // namespace

void register_embedding(py::module_& m) {
  m.def("embedding_forward", &embedding_forward, py::arg("backend"), py::arg("stream"), py::arg("token_ids"),
        py::arg("weight"), py::arg("out"));
  m.def("embedding_backward", &embedding_backward, py::arg("backend"), py::arg("stream"),
        py::arg("grad_out"), py::arg("token_ids"), py::arg("weight"), py::arg("dweight"),
        py::arg("workspace"));
}

}  // namespace golden::bindings
