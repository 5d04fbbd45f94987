// A borrowed, validated view of an array that crossed from Python as a
// DLPack capsule, and the checks every binding applies before any kernel
// touches memory. Failures raise TypeError (dtype) or ValueError (the rest).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../core/types.h"

namespace golden::bindings {

namespace py = pybind11;

enum class ElementType { f32, bf16, f16, i32, i64, boolean, unsupported };
enum class DeviceKind { cpu, cuda, rocm, other };

struct TensorView {
  std::string name;  // the argument's name, for error messages
  void* data = nullptr;
  ElementType type = ElementType::unsupported;
  DeviceKind device = DeviceKind::other;
  int device_id = 0;
  std::vector<std::int64_t> shape;
  std::vector<std::int64_t> strides;

  std::int64_t dim(int i) const { return shape[i < 0 ? shape.size() + i : i]; }
  int ndim() const { return static_cast<int>(shape.size()); }
  std::int64_t numel() const;
  bool is_contiguous() const;
  std::string shape_string() const;
};

// Reads a "dltensor" capsule without consuming it: the capsule keeps
// ownership and frees the producer's bookkeeping when Python drops it.
TensorView view_capsule(const py::object& capsule, const char* name);

const char* element_type_name(ElementType type);
bool is_float(ElementType type);
DType to_dtype(ElementType type);  // for f32, bf16, f16 only

[[noreturn]] void fail_value(const std::string& message);
[[noreturn]] void fail_type(const std::string& message);

void require_float(const TensorView& t);
void require_type(const TensorView& t, ElementType type);
void require_same_type(const TensorView& a, const TensorView& b);
void require_contiguous(const TensorView& t);
void require_shape(const TensorView& t, const std::vector<std::int64_t>& shape);
void require_same_shape(const TensorView& a, const TensorView& b);
void require_min_ndim(const TensorView& t, int ndim);
void require_no_overlap(const TensorView& output, const TensorView& input);
void require_finite(float value, const char* name);

}  // namespace golden::bindings
