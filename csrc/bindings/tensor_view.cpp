#include "tensor_view.h"

#include <cmath>
#include <sstream>

#include "dlpack_abi.h"

namespace golden::bindings {
namespace {

ElementType element_type_of(const dlpack::DataType& dtype) {
  if (dtype.lanes != 1) return ElementType::unsupported;
  switch (dtype.code) {
    case dlpack::kFloat:
      if (dtype.bits == 32) return ElementType::f32;
      if (dtype.bits == 16) return ElementType::f16;
      break;
    case dlpack::kBfloat:
      if (dtype.bits == 16) return ElementType::bf16;
      break;
    case dlpack::kInt:
      if (dtype.bits == 32) return ElementType::i32;
      if (dtype.bits == 64) return ElementType::i64;
      break;
    case dlpack::kBool:
      if (dtype.bits == 8) return ElementType::boolean;
      break;
    default:
      break;
  }
  return ElementType::unsupported;
}

DeviceKind device_kind_of(std::int32_t device_type) {
  switch (device_type) {
    case dlpack::kCPU:
    case dlpack::kCUDAHost:
      return DeviceKind::cpu;
    case dlpack::kCUDA:
      return DeviceKind::cuda;
    case dlpack::kROCM:
      return DeviceKind::rocm;
    default:
      return DeviceKind::other;
  }
}

std::int64_t element_size(ElementType type) {
  switch (type) {
    case ElementType::f32:
    case ElementType::i32:
      return 4;
    case ElementType::i64:
      return 8;
    case ElementType::bf16:
    case ElementType::f16:
      return 2;
    case ElementType::boolean:
      return 1;
    case ElementType::unsupported:
      break;
  }
  return 0;
}

}  // namespace

std::int64_t TensorView::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

bool TensorView::is_contiguous() const {
  if (numel() == 0) return true;  // nothing to lay out; strides of an empty array are arbitrary
  std::int64_t expected = 1;
  for (int i = ndim() - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

std::string TensorView::shape_string() const {
  std::ostringstream out;
  out << "(";
  for (int i = 0; i < ndim(); ++i) out << (i ? ", " : "") << shape[i];
  out << (ndim() == 1 ? ",)" : ")");
  return out.str();
}

TensorView view_capsule(const py::object& capsule, const char* name) {
  if (!PyCapsule_IsValid(capsule.ptr(), dlpack::kCapsuleName)) {
    fail_type(std::string(name) + ": expected a DLPack capsule (call x.__dlpack__())");
  }
  auto* managed =
      static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), dlpack::kCapsuleName));
  const dlpack::Tensor& t = managed->dl_tensor;
  TensorView view;
  view.name = name;
  view.data = static_cast<char*>(t.data) + t.byte_offset;
  view.type = element_type_of(t.dtype);
  view.device = device_kind_of(t.device.device_type);
  view.device_id = t.device.device_id;
  view.shape.assign(t.shape, t.shape + t.ndim);
  view.strides.resize(t.ndim);
  std::int64_t compact = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    view.strides[i] = t.strides != nullptr ? t.strides[i] : compact;
    compact *= t.shape[i];
  }
  if (view.type == ElementType::unsupported) {
    static const char* const kCodeNames[] = {"int", "uint", "float", "opaque", "bfloat", "complex", "bool"};
    const char* code = t.dtype.code < 7 ? kCodeNames[t.dtype.code] : "type";
    fail_type(std::string(name) + ": unsupported dtype " + code + std::to_string(t.dtype.bits) +
              "; golden_kernels takes float32, bfloat16, float16, int32, int64 and bool arrays");
  }
  return view;
}

const char* element_type_name(ElementType type) {
  switch (type) {
    case ElementType::f32:
      return "float32";
    case ElementType::bf16:
      return "bfloat16";
    case ElementType::f16:
      return "float16";
    case ElementType::i32:
      return "int32";
    case ElementType::i64:
      return "int64";
    case ElementType::boolean:
      return "bool";
    case ElementType::unsupported:
      break;
  }
  return "unsupported";
}

bool is_float(ElementType type) {
  return type == ElementType::f32 || type == ElementType::bf16 || type == ElementType::f16;
}

DType to_dtype(ElementType type) {
  switch (type) {
    case ElementType::bf16:
      return DType::bf16;
    case ElementType::f16:
      return DType::f16;
    default:
      return DType::f32;
  }
}

void fail_value(const std::string& message) { throw py::value_error(message); }
void fail_type(const std::string& message) { throw py::type_error(message); }

void require_float(const TensorView& t) {
  if (!is_float(t.type)) {
    fail_type(t.name + ": expected float32, bfloat16 or float16, got " +
              element_type_name(t.type));
  }
}

void require_type(const TensorView& t, ElementType type) {
  if (t.type != type) {
    fail_type(t.name + ": expected " + element_type_name(type) + ", got " +
              element_type_name(t.type));
  }
}

void require_same_type(const TensorView& a, const TensorView& b) {
  if (a.type != b.type) {
    fail_type(b.name + " must have the dtype of " + a.name + " (" + element_type_name(a.type) +
              "), got " + element_type_name(b.type));
  }
}

void require_contiguous(const TensorView& t) {
  if (!t.is_contiguous()) {
    fail_value(t.name + ": expected a contiguous (row-major, dense) array; call .contiguous() first");
  }
}

void require_shape(const TensorView& t, const std::vector<std::int64_t>& shape) {
  if (t.shape != shape) {
    TensorView expected;
    expected.shape = shape;
    fail_value(t.name + ": expected shape " + expected.shape_string() + ", got " + t.shape_string());
  }
}

void require_same_shape(const TensorView& a, const TensorView& b) {
  if (a.shape != b.shape) {
    fail_value(b.name + " must have the shape of " + a.name + " " + a.shape_string() + ", got " +
               b.shape_string());
  }
}

void require_min_ndim(const TensorView& t, int ndim) {
  if (t.ndim() < ndim) {
    fail_value(t.name + ": expected at least " + std::to_string(ndim) + " dimension(s), got " +
               std::to_string(t.ndim()));
  }
}

namespace {

// [begin, end) of the bytes an array may touch: for a strided view, from its
// lowest to its highest element (a conservative range: interleaved views of
// one buffer count as overlapping).
struct ByteRange {
  std::uintptr_t begin;
  std::uintptr_t end;
};

ByteRange byte_range(const TensorView& t) {
  std::int64_t low = 0;
  std::int64_t high = 0;
  for (int i = 0; i < t.ndim(); ++i) {
    const std::int64_t reach = (t.shape[i] - 1) * t.strides[i];
    (reach < 0 ? low : high) += reach;
  }
  const std::int64_t size = element_size(t.type);
  const auto base = reinterpret_cast<std::uintptr_t>(t.data);
  return {base + static_cast<std::uintptr_t>(low * size), base + static_cast<std::uintptr_t>((high + 1) * size)};
}

}  // namespace

void require_no_overlap(const TensorView& output, const TensorView& input) {
  if (output.numel() == 0 || input.numel() == 0) return;
  const ByteRange out = byte_range(output);
  const ByteRange in = byte_range(input);
  if (out.begin < in.end && in.begin < out.end) {
    fail_value(output.name + " overlaps " + input.name + "; outputs must not alias inputs");
  }
}

void require_finite(float value, const char* name) {
  if (!std::isfinite(value)) fail_value(std::string(name) + " must be finite");
}

}  // namespace golden::bindings
