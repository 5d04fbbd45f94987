// The canonical reduction orders of the contract, written once for every
// backend. A reduction's order depends only on the problem shape, never on
// batch size, thread count, SIMD width, warp size or grid.
//
// Row reductions: the row is cut into blocks of kRowBlock elements. Inside a
// block, lane j (0..31) folds elements j, j+32, j+64, ... in index order, and
// the 32 lane partials combine by the fixed tree j+16, j+8, j+4, j+2, j+1
// (a warp butterfly on a GPU, two AVX-512 or four AVX2 registers on a CPU).
// Block partials combine by the balanced tree: n partials split into
// ceil(n/2) | floor(n/2), recursively.
#pragma once

#include <cstdint>

#include "platform.h"

GOLDEN_CORE_BEGIN

inline constexpr int kLanes = 32;
inline constexpr std::int64_t kRowBlock = 4096;

GOLDEN_INLINE std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

struct AddCombine {
  GOLDEN_INLINE float operator()(float a, float b) const { return a + b; }
};

// Combines the 32 lane partials of one block: j with j+16, then j+8, ... j+1.
// (A GPU warp runs the same widths as a shuffle butterfly: see csrc/cuda/warp_row.cuh.)
template <class Combine>
GOLDEN_INLINE float combine_lanes(float (&lanes)[kLanes], Combine combine) {
  for (int width = kLanes / 2; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) lanes[j] = combine(lanes[j], lanes[j + width]);
  }
  return lanes[0];
}

// The lane fold of one block [begin, end) (end - begin <= kRowBlock) for the
// kHeld consecutive lanes first_lane, first_lane + 1, ... that one caller holds:
// lane j folds elements begin + j, begin + j + 32, ... in index order via
// `fold(acc, i)`. A CPU thread holds all 32 lanes (the inner j loop is what
// the compiler vectorises: lanes are independent, so no addition is
// reordered); a GPU thread holds one lane. Both run this same function.
template <int kHeld, class Fold>
GOLDEN_INLINE void fold_lanes(float (&acc)[kHeld], int first_lane, std::int64_t begin,
                              std::int64_t end, Fold fold) {
  const std::int64_t full_end = begin + (end - begin) / kLanes * kLanes;
  for (std::int64_t i = begin + first_lane; i < full_end; i += kLanes) {
    for (int j = 0; j < kHeld; ++j) acc[j] = fold(acc[j], i + j);
  }
  for (int j = 0; j < kHeld; ++j) {
    const std::int64_t i = full_end + first_lane + j;
    if (i < end) acc[j] = fold(acc[j], i);
  }
}

// One lane's partial of a block: `identity` folded with the lane's elements.
template <class Fold>
GOLDEN_INLINE float lane_partial(int lane, std::int64_t begin, std::int64_t end, float identity,
                                 Fold fold) {
  float acc[1] = {identity};
  fold_lanes(acc, lane, begin, end, fold);
  return acc[0];
}

// Reduces elements [begin, end) of one block in the lane order on one thread.
// Lanes that receive no element keep `identity` and are combined all the same.
template <class Fold, class Combine>
GOLDEN_INLINE float reduce_block(std::int64_t begin, std::int64_t end, float identity, Fold fold,
                                 Combine combine) {
  float lanes[kLanes];
  for (int j = 0; j < kLanes; ++j) lanes[j] = identity;
  fold_lanes(lanes, 0, begin, end, fold);
  return combine_lanes(lanes, combine);
}

// A row worker says who computes a row: which of its elements the caller
// writes (first(), first() + kStep, ...) and how a block's lane partials are
// formed and combined (reduce_block). SerialRow is one thread doing the whole
// row (the CPU); csrc/cuda/warp_row.cuh defines WarpRow (32 GPU threads, one
// lane each). Every worker gives every lane the same bits.
struct SerialRow {
  static constexpr std::int64_t kStep = 1;
  GOLDEN_INLINE std::int64_t first() const { return 0; }
  template <class Fold, class Combine>
  GOLDEN_INLINE float reduce_block(std::int64_t begin, std::int64_t end, float identity, Fold fold,
                                   Combine combine) const {
    return core::reduce_block(begin, end, identity, fold, combine);
  }
};

// The balanced tree over partials[0], partials[stride], ... (count of them).
template <class Combine>
GOLDEN_INLINE float tree_reduce(const float* partials, std::int64_t count, std::int64_t stride,
                                Combine combine) {
  if (count == 1) return partials[0];
  const std::int64_t left = (count + 1) / 2;
  return combine(tree_reduce(partials, left, stride, combine),
                 tree_reduce(partials + left * stride, count - left, stride, combine));
}

// The balanced tree over blocks [first, first + count) of a row of n elements,
// evaluating each block as the tree reaches it (no storage for partials).
template <class Fold, class Combine, class Worker>
GOLDEN_INLINE float tree_reduce_blocks(std::int64_t first, std::int64_t count, std::int64_t n,
                                       float identity, Fold fold, Combine combine, Worker worker) {
  if (count == 1) {
    const std::int64_t begin = first * kRowBlock;
    const std::int64_t end = begin + kRowBlock < n ? begin + kRowBlock : n;
    return worker.reduce_block(begin, end, identity, fold, combine);
  }
  const std::int64_t left = (count + 1) / 2;
  return combine(tree_reduce_blocks(first, left, n, identity, fold, combine, worker),
                 tree_reduce_blocks(first + left, count - left, n, identity, fold, combine, worker));
}

// The canonical reduction of a whole row of n >= 1 elements.
template <class Fold, class Combine, class Worker = SerialRow>
GOLDEN_INLINE float canonical_row_reduce(std::int64_t n, float identity, Fold fold,
                                         Combine combine, Worker worker = {}) {
  return tree_reduce_blocks(0, ceil_div(n, kRowBlock), n, identity, fold, combine, worker);
}

// The canonical sum. Every lane starts at +0 and all 32 lanes are combined
// whether or not they received an element, on every backend alike.
template <class Fold, class Worker = SerialRow>
GOLDEN_INLINE float canonical_row_sum(std::int64_t n, Fold fold, Worker worker = {}) {
  return canonical_row_reduce(n, 0.0f, fold, AddCombine{}, worker);
}

GOLDEN_CORE_END
