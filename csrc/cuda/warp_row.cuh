// WarpRow: the GPU row worker of csrc/core/reduce.h. 32 threads share a row;
// thread j is lane j: it folds its lane with core::lane_partial and the 32
// partials combine j+16, j+8, ... j+1 by shuffles, as core::combine_lanes does.
#pragma once

#include "../core/reduce.h"
#include "gpu_runtime.h"

namespace golden::gpu {

constexpr unsigned kFullWarpMask = 0xFFFFFFFFu;

struct WarpRow {
  int lane;  // 0..31

  static constexpr std::int64_t kStep = core::kLanes;
  __device__ std::int64_t first() const { return lane; }

  // At each width, every lane j < width computes combine(own, lane j + width)
  // = lanes[j] = combine(lanes[j], lanes[j + width]) of core::combine_lanes
  // (the upper lanes' values are never read again), so lane 0 ends with the
  // CPU's bits. Broadcasting lane 0 gives them to every lane, for any Combine.
  template <class Fold, class Combine>
  __device__ float reduce_block(std::int64_t begin, std::int64_t end, float identity, Fold fold,
                                Combine combine) const {
    float value = core::lane_partial(lane, begin, end, identity, fold);
    for (int width = core::kLanes / 2; width >= 1; width /= 2) {
      value = combine(value, __shfl_xor_sync(kFullWarpMask, value, width, core::kLanes));
    }
    return __shfl_sync(kFullWarpMask, value, 0, core::kLanes);
  }
};

}  // namespace golden::gpu
