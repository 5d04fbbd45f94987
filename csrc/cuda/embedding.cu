// Embedding on the GPU. Ids are checked first (a kernel finds the first
// out-of-range position with an integer atomicMin, the host reads it back and
// the bindings raise). Forward: one block per token copies its row with
// core::embedding_gather_row. Backward: token positions are sorted by id with
// CUB's stable radix sort (positions stay in token order inside an id), then
// one block per vocabulary row, one thread per column, adds that row's tokens
// in order with core::embedding_grad_add: the CPU's sums, bit for bit.
// No floating-point atomics.
#if defined(__HIPCC__)
#include <rocprim/device/device_radix_sort.hpp>
#elif defined(GOLDEN_GPU_EMULATION)
#include <algorithm>
#include <numeric>
#include <vector>
#else
#include <cub/device/device_radix_sort.cuh>
#endif

#include "../core/ops/embedding.h"
#include "gpu_runtime.h"
#include "kernels.h"

namespace golden::gpu {
namespace {

constexpr int kThreads = 256;
constexpr unsigned long long kNoInvalidId = ~0ull;
constexpr char kScratch[] = "embedding scratch (alloc)";

__global__ void find_invalid_kernel(EmbeddingIds ids, std::int64_t vocab, unsigned long long* first) {
  const std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= ids.count) return;
  if (!core::id_in_range(core::load_id(ids, t), vocab)) atomicMin(first, static_cast<unsigned long long>(t));
}

template <class T, class TOut>
__global__ void gather_kernel(EmbeddingIds ids, const T* weight, TOut* out, std::int64_t dim) {
  const std::int64_t t = blockIdx.x;
  const T* row = weight + core::load_id(ids, t) * dim;
  for (std::int64_t c = threadIdx.x; c < dim; c += kThreads) {
    core::embedding_gather_row(row + c, out + t * dim + c, 1);
  }
}

template <class Id>
__global__ void keys_and_positions_kernel(const Id* ids, std::int64_t count, Id* keys, std::int64_t* positions) {
  const std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= count) return;
  keys[t] = ids[t];
  positions[t] = t;
}

// bucket_begin[v] = first k with sorted_ids[k] >= v, for v in [0, vocab].
template <class Id>
__global__ void bucket_begin_kernel(const Id* sorted_ids, std::int64_t count, std::int64_t vocab,
                                    std::int64_t* bucket_begin) {
  const std::int64_t v = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (v > vocab) return;
  std::int64_t lo = 0;
  std::int64_t hi = count;
  while (lo < hi) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    if (static_cast<std::int64_t>(sorted_ids[mid]) < v) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  bucket_begin[v] = lo;
}

template <class T, class TOut>
__global__ void sum_rows_kernel(const T* grad, const std::int64_t* bucket_begin, const std::int64_t* order,
                                TOut* dweight, std::int64_t dim) {
  const std::int64_t v = blockIdx.x;
  for (std::int64_t c = threadIdx.x; c < dim; c += kThreads) {
    float acc = 0.0f;
    for (std::int64_t k = bucket_begin[v]; k < bucket_begin[v + 1]; ++k) {
      acc = core::embedding_grad_add(acc, core::to_float(grad[order[k] * dim + c]));
    }
    dweight[v * dim + c] = core::from_float<TOut>(acc);
  }
}

int bits_for(std::int64_t vocab) {
  int bits = 1;
  while (bits < 63 && (std::int64_t{1} << bits) < vocab) ++bits;
  return bits;
}

// Stable radix sort of (key, position) pairs on bits [0, end_bit): CUB on
// CUDA, rocPRIM (same argument order) on HIP, a stable sort on the host in the
// emulated build. A null temp only sizes it.
template <class Key>
cudaError_t stable_sort_pairs(void* temp, std::size_t& temp_bytes, const Key* keys_in, Key* keys_out,
                              const std::int64_t* values_in, std::int64_t* values_out, std::int64_t count,
                              int end_bit, cudaStream_t stream) {
#if defined(__HIPCC__)
  return rocprim::radix_sort_pairs(temp, temp_bytes, keys_in, keys_out, values_in, values_out,
                                   static_cast<std::size_t>(count), 0, static_cast<unsigned>(end_bit), stream);
#elif defined(GOLDEN_GPU_EMULATION)
  if (temp == nullptr) {
    temp_bytes = 1;
    return cudaSuccess;
  }
  // The keys are checked ids in [0, vocab), below 2^end_bit: whole keys sort the same.
  static_cast<void>(end_bit);
  std::vector<std::int64_t> order(static_cast<std::size_t>(count));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return keys_in[a] < keys_in[b]; });
  for (std::int64_t i = 0; i < count; ++i) {
    keys_out[i] = keys_in[order[static_cast<std::size_t>(i)]];
    values_out[i] = values_in[order[static_cast<std::size_t>(i)]];
  }
  static_cast<void>(stream);
  return cudaSuccess;
#else
  return cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, values_in, values_out, count, 0,
                                         end_bit, stream);
#endif
}

// Sorts (id, position) pairs by id, stably; fills bucket_begin and order.
template <class Id>
void sort_tokens_by_id(const EmbeddingBackwardProblem& p, cudaStream_t stream) {
  const std::int64_t count = p.ids.count;
  std::int64_t* bucket_begin = p.workspace;
  std::int64_t* order = p.workspace + p.vocab + 1;
  DeviceBuffer keys(2 * count * sizeof(Id), stream, kScratch);
  DeviceBuffer positions(count * sizeof(std::int64_t), stream, kScratch);
  Id* keys_in = keys.as<Id>();
  Id* keys_out = keys_in + count;
  if (count > 0) {
    launch(keys_and_positions_kernel<Id>, grid_for(count, kThreads), kThreads, 0, stream,
           static_cast<const Id*>(p.ids.data), count, keys_in, positions.as<std::int64_t>());
    check_launch("embedding_backward (keys)");
    std::size_t temp_bytes = 0;
    check(stable_sort_pairs<Id>(nullptr, temp_bytes, keys_in, keys_out, positions.as<std::int64_t>(), order, count,
                                bits_for(p.vocab), stream),
          "embedding_backward (sort size)");
    DeviceBuffer temp(temp_bytes, stream, kScratch);
    check(stable_sort_pairs<Id>(temp.as<void>(), temp_bytes, keys_in, keys_out, positions.as<std::int64_t>(), order,
                                count, bits_for(p.vocab), stream),
          "embedding_backward (sort)");
  }
  launch(bucket_begin_kernel<Id>, grid_for(p.vocab + 1, kThreads), kThreads, 0, stream, keys_out, count, p.vocab,
         bucket_begin);
  check_launch("embedding_backward (buckets)");
}

}  // namespace

void embedding_find_invalid_id(const EmbeddingIds& ids, std::int64_t vocab, InvalidId* result,
                               std::uintptr_t stream) {
  *result = InvalidId{-1, 0};
  if (ids.count == 0) return;
  const cudaStream_t s = as_stream(stream);
  DeviceBuffer first(sizeof(unsigned long long), s, kScratch);
  check(cudaMemsetAsync(first.as<void>(), 0xFF, sizeof(unsigned long long), s), "embedding ids (memset)");
  launch(find_invalid_kernel, grid_for(ids.count, kThreads), kThreads, 0, s, ids, vocab,
         first.as<unsigned long long>());
  check_launch("embedding ids");
  unsigned long long position = kNoInvalidId;
  check(cudaMemcpyAsync(&position, first.as<void>(), sizeof(position), cudaMemcpyDeviceToHost, s),
        "embedding ids (copy)");
  check(cudaStreamSynchronize(s), "embedding ids (sync)");
  if (position == kNoInvalidId) return;
  const std::size_t id_size = ids.is_int64 ? sizeof(std::int64_t) : sizeof(std::int32_t);
  std::int64_t value64 = 0;
  std::int32_t value32 = 0;
  void* value = ids.is_int64 ? static_cast<void*>(&value64) : static_cast<void*>(&value32);
  check(cudaMemcpy(value, static_cast<const char*>(ids.data) + position * id_size, id_size,
                   cudaMemcpyDeviceToHost),
        "embedding ids (copy value)");
  *result = InvalidId{static_cast<std::int64_t>(position), ids.is_int64 ? value64 : value32};
}

void embedding_forward(const EmbeddingForwardProblem& p, std::uintptr_t stream) {
  if (p.ids.count == 0 || p.dim == 0) return;
  visit_in_out(p.dtype, p.out_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    launch(gather_kernel<T, TOut>, grid_for(p.ids.count, 1), kThreads, 0, as_stream(stream), p.ids,
           static_cast<const T*>(p.weight), static_cast<TOut*>(p.out), p.dim);
  });
  check_launch("embedding_forward");
}

void embedding_backward(const EmbeddingBackwardProblem& p, std::uintptr_t stream) {
  if (p.vocab == 0) return;
  const cudaStream_t s = as_stream(stream);
  if (p.ids.is_int64) {
    sort_tokens_by_id<std::int64_t>(p, s);
  } else {
    sort_tokens_by_id<std::int32_t>(p, s);
  }
  if (p.dim == 0) return;
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    launch(sum_rows_kernel<T, TOut>, grid_for(p.vocab, 1), kThreads, 0, s, static_cast<const T*>(p.grad_out),
           p.workspace, p.workspace + p.vocab + 1, static_cast<TOut*>(p.dweight), p.dim);
  });
  check_launch("embedding_backward (sums)");
}

}  // namespace golden::gpu
