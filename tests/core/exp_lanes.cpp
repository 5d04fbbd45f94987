// Bit-identity check of the CPU's vector exp (csrc/cpu/simd.h: VecLanes) with
// the core's scalar exp_f32, over every one of the 2^32 fp32 inputs.
//
// The core's exp steps are templates over their lanes; a vector build hands
// them vectors whose members do some steps in one instruction (AVX-512:
// vminps/vmaxps clamps, vscalefps, a masked or for the NaN policy; AVX2: the
// clamps and the NaN blend). Build for each instruction set, e.g.
//   g++ -O2 -std=c++17 -ffp-contract=off -march=x86-64-v4 -DGOLDEN_TARGET=avx512 tests/core/exp_lanes.cpp
//   g++ -O2 -std=c++17 -ffp-contract=off -march=x86-64-v3 -DGOLDEN_TARGET=avx2 tests/core/exp_lanes.cpp
//   (and -march=x86-64-v3 -DGOLDEN_EMULATE_AVX512 -DGOLDEN_TARGET=avx512: the
//   16-lane vectors made of two AVX2 halves)
// It prints the first mismatching inputs, the count, and PASS or FAIL.
// Option: `--stride N` checks every N-th pattern only (a quick run).
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "../../csrc/cpu/simd.h"

namespace {

using golden::cpu::GOLDEN_TARGET::kVecLanes;
using golden::cpu::GOLDEN_TARGET::Vec;
using golden::cpu::GOLDEN_TARGET::VecLanes;
using golden::cpu::GOLDEN_TARGET::vec_load;
using golden::cpu::GOLDEN_TARGET::vec_store;

constexpr std::uint64_t kChunk = 1u << 16;

// The scalar core over a chunk (the compiler may vectorise this loop: the
// core's own tests prove that gives the scalar bits).
__attribute__((noinline)) void scalar_exps(const float* in, float* out) {
  for (std::uint64_t i = 0; i < kChunk; ++i) out[i] = golden::core::exp_f32(in[i]);
}

__attribute__((noinline)) void vector_exps(const float* in, float* out) {
  for (std::uint64_t i = 0; i < kChunk; i += kVecLanes) {
    vec_store(out + i, golden::core::exp_f32<VecLanes>(vec_load(in + i)));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t stride = 1;
  if (argc == 3 && std::strcmp(argv[1], "--stride") == 0) stride = std::strtoull(argv[2], nullptr, 10);
  if (stride == 0) return 2;
  static float in[kChunk], want[kChunk], got[kChunk];
  std::uint64_t checked = 0, mismatches = 0, next = 0;
  while (next < (std::uint64_t{1} << 32)) {
    for (std::uint64_t i = 0; i < kChunk; ++i, next += stride) {
      const std::uint32_t bits = static_cast<std::uint32_t>(next < (std::uint64_t{1} << 32) ? next : 0);
      std::memcpy(&in[i], &bits, sizeof bits);
    }
    scalar_exps(in, want);
    vector_exps(in, got);
    for (std::uint64_t i = 0; i < kChunk; ++i) {
      if (std::memcmp(&want[i], &got[i], sizeof(float)) != 0) {
        std::uint32_t x, w, g;
        std::memcpy(&x, &in[i], 4);
        std::memcpy(&w, &want[i], 4);
        std::memcpy(&g, &got[i], 4);
        if (mismatches < 10) std::printf("exp(0x%08" PRIx32 "): scalar 0x%08" PRIx32 ", vector 0x%08" PRIx32 "\n", x, w, g);
        ++mismatches;
      }
    }
    checked += kChunk;
  }
  std::printf("checked %" PRIu64 " inputs (stride %" PRIu64 "), %" PRIu64 " mismatches\n%s\n", checked, stride,
              mismatches, mismatches == 0 ? "PASS" : "FAIL");
  return mismatches == 0 ? 0 : 1;
}
