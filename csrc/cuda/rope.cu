// RoPE on the GPU: one thread block per token. For each chunk of
// kRopeFrequencyChunk frequencies the block's threads compute the cos/sin
// (core::rope_cos_sin, one frequency each) into shared memory, then rotate
// every (head, frequency) pair of the chunk (core::rope_rotate_pair, the
// step of the CPU's rope_rotate_head), each thread keeping one frequency
// across heads. Numerics: csrc/core/ops/rope.h.
#include "../core/ops/rope.h"
#include "gpu_runtime.h"
#include "kernels.h"

namespace golden::gpu {
namespace {

constexpr int kThreads = 256;
static_assert(kThreads % kRopeFrequencyChunk == 0, "each thread keeps one frequency of a chunk");
// Each pass rotates this many heads' pairs of the chunk: thread t owns frequency
// t % kRopeFrequencyChunk of heads t / kRopeFrequencyChunk, + kHeadsPerPass, ...
// (no index division per pair).
constexpr int kHeadsPerPass = kThreads / kRopeFrequencyChunk;
// A thread loads the pairs of this many of its heads before it rotates and
// stores them, so that their loads are in flight together (one pair at a time,
// each waiting on memory, left bf16 and fp32 equally slow on an H200, stop 19).
constexpr int kHeadsInFlight = 8;

__global__ void inverse_frequencies_kernel(float* inv_freq, std::int64_t head_dim, float theta) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < head_dim / 2) inv_freq[i] = core::rope_inverse_frequency(i, head_dim, theta);
}

template <class T, class TOut>
__global__ void rotate_token_kernel(RopeProblem p) {
  GOLDEN_SHARED(float[kRopeFrequencyChunk], c);
  GOLDEN_SHARED(float[kRopeFrequencyChunk], s);
  const std::int64_t t = blockIdx.x;
  const std::int64_t half = p.head_dim / 2;
  const int k = static_cast<int>(threadIdx.x % kRopeFrequencyChunk);
  const std::int64_t position = core::load_position(p.positions, p.positions_int64, t);
  const T* x = static_cast<const T*>(p.x) + t * p.heads * p.head_dim;
  TOut* out = static_cast<TOut*>(p.out) + t * p.heads * p.head_dim;
  for (std::int64_t first = 0; first < half; first += kRopeFrequencyChunk) {
    const std::int64_t n = half - first < kRopeFrequencyChunk ? half - first : kRopeFrequencyChunk;
    if (threadIdx.x < n) {
      core::rope_cos_sin(position, p.inv_freq, first + threadIdx.x, 1, p.transpose, c + threadIdx.x,
                         s + threadIdx.x);
    }
    __syncthreads();
    if (k < n) {
      const std::int64_t i = first + k;
      const std::int64_t first_head = threadIdx.x / kRopeFrequencyChunk;
      for (std::int64_t h0 = first_head; h0 < p.heads; h0 += kHeadsPerPass * kHeadsInFlight) {
        float x1[kHeadsInFlight];
        float x2[kHeadsInFlight];
        for (int j = 0; j < kHeadsInFlight; ++j) {
          const std::int64_t h = h0 + j * kHeadsPerPass;
          if (h < p.heads) {
            x1[j] = core::to_float(x[h * p.head_dim + i]);
            x2[j] = core::to_float(x[h * p.head_dim + half + i]);
          }
        }
        for (int j = 0; j < kHeadsInFlight; ++j) {
          const std::int64_t h = h0 + j * kHeadsPerPass;
          if (h < p.heads) {
            core::rope_rotate_pair(x1[j], x2[j], c[k], s[k], out[h * p.head_dim + i], out[h * p.head_dim + half + i]);
          }
        }
      }
    }
    __syncthreads();
  }
}

}  // namespace

void rope_inverse_frequencies(float* inv_freq, std::int64_t head_dim, float theta, std::uintptr_t stream) {
  if (head_dim < 2) return;
  launch(inverse_frequencies_kernel, grid_for(head_dim / 2, kThreads), kThreads, 0, as_stream(stream), inv_freq,
         head_dim, theta);
  check_launch("rope_inverse_frequencies");
}

void rope_apply(const RopeProblem& p, std::uintptr_t stream) {
  if (p.tokens == 0 || p.heads == 0) return;
  visit_in_out(p.dtype, p.out_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    launch(rotate_token_kernel<T, TOut>, grid_for(p.tokens, 1), kThreads, 0, as_stream(stream), p);
  });
  check_launch("rope_apply");
}

}  // namespace golden::gpu
