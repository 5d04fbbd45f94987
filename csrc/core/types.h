// Storage types shared by every layer. Plain data only (no code), so these
// live outside the per-target core namespace and mean the same thing in every
// backend and in the bindings.
#pragma once

#include <cstdint>

namespace golden {

enum class DType : std::int32_t { f32 = 0, bf16 = 1, f16 = 2 };

// Distinct 16-bit storage types so overloads and templates can tell them apart.
struct bf16 {
  std::uint16_t bits;
};
struct f16 {
  std::uint16_t bits;
};

template <class T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::f32;
};
template <>
struct DTypeOf<bf16> {
  static constexpr DType value = DType::bf16;
};
template <>
struct DTypeOf<f16> {
  static constexpr DType value = DType::f16;
};

// Calls visit(T{}) with the storage type named by `dtype`.
template <class Visit>
inline void visit_dtype(DType dtype, Visit&& visit) {
  switch (dtype) {
    case DType::f32:
      visit(float{});
      return;
    case DType::bf16:
      visit(bf16{});
      return;
    case DType::f16:
      visit(f16{});
      return;
  }
}

// Calls run(T{}, TOut{}) for an op's input type and its output type, which
// is either the input type itself or fp32.
template <class Run>
inline void visit_in_out(DType dtype, DType out_dtype, Run&& run) {
  visit_dtype(dtype, [&](auto in) {
    if (out_dtype == DType::f32) {
      run(in, float{});
    } else {
      run(in, in);
    }
  });
}

}  // namespace golden
