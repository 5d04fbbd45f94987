// SiLU and SwiGLU on the GPU: a grid-stride loop over packs of 16 bytes of
// input (4 fp32 or 8 bf16 / fp16 elements a thread, read and written with
// vector accesses where every array is aligned to its pack, one element a
// thread otherwise). Each element is the core's *_output function
// (csrc/core/ops/swiglu.h) of silu_non_nan / silu_derivative_non_nan of its
// input: computed for fp32, looked up for 16-bit inputs in a table of the
// core's values over all 65536 bit patterns (as the CPU backend does), built
// on the device once per device and type. Elements are independent, so
// neither the launch shape nor the lookup can change any bit.
#include <cstdint>
#include <mutex>
#include <set>
#include <type_traits>

#include "../core/ops/swiglu.h"
#include "gpu_runtime.h"
#include "kernels.h"

namespace golden::gpu {
namespace {

constexpr int kThreads = 256;
constexpr std::int64_t kMaxBlocks = 1 << 16;
constexpr std::int64_t kTableSize = 1 << 16;

// silu_non_nan(x) and silu_derivative_non_nan(x) of one input value.
struct SiluValues {
  float silu;
  float derivative;
};

__device__ SiluValues bf16_silu_values[kTableSize];
__device__ SiluValues f16_silu_values[kTableSize];

template <class T>
__device__ SiluValues* silu_table() {
  if constexpr (std::is_same_v<T, bf16>) {
    return bf16_silu_values;
  } else {
    return f16_silu_values;
  }
}

template <class T>
__global__ void build_silu_table_kernel() {
  const std::int64_t bits = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (bits >= kTableSize) return;
  const float x = core::to_float(T{static_cast<std::uint16_t>(bits)});
  silu_table<T>()[bits] = SiluValues{core::silu_non_nan(x), core::silu_derivative_non_nan(x)};
}

// Builds T's table on the current device before its first use there; the
// stream is synchronised once, so that kernels on any stream may read it.
template <class T>
void ensure_silu_table(cudaStream_t stream) {
  if constexpr (!std::is_same_v<T, float>) {
    static std::mutex mutex;
    static std::set<int> built;  // devices
    int device = 0;
    check(cudaGetDevice(&device), "silu table (device)");
    const std::lock_guard<std::mutex> lock(mutex);
    if (built.count(device) != 0) return;
    launch(build_silu_table_kernel<T>, static_cast<unsigned>(kTableSize / kThreads), kThreads, 0, stream);
    check_launch("silu table");
    check(cudaStreamSynchronize(stream), "silu table");
    built.insert(device);
  }
}

template <class T>
__device__ SiluValues silu_values(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return SiluValues{core::silu_non_nan(x), core::silu_derivative_non_nan(x)};
  } else {
    return silu_table<T>()[x.bits];
  }
}

// N consecutive elements, accessed as one (N * sizeof(T) must be a power of two).
template <class T, int N>
struct alignas(N * sizeof(T)) Pack {
  T v[N];
};

template <class T>
constexpr int kPackOf = static_cast<int>(16 / sizeof(T));

template <int N, class T>
__device__ Pack<T, N> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, N>*>(p);
}

template <int N, class T>
__device__ void store_pack(T* p, const Pack<T, N>& pack) {
  *reinterpret_cast<Pack<T, N>*>(p) = pack;
}

// pack(i) for the whole packs of N elements, element(i) for the last partial
// one, spread over the grid.
template <int N, class PackBody, class ElementBody>
__device__ void for_each_pack(std::int64_t count, PackBody&& pack, ElementBody&& element) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x * N;
  for (std::int64_t i = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * N; i < count;
       i += stride) {
    if (i + N <= count) {
      pack(i);
    } else {
      for (std::int64_t j = i; j < count; ++j) element(j);
    }
  }
}

template <class T, class TOut>
__device__ TOut silu_forward_element(T x) {
  return core::silu_forward_output<TOut>(silu_values(x).silu, core::to_float(x));
}

template <class T, class TOut>
__device__ TOut silu_backward_element(T g, T x) {
  return core::silu_backward_output<TOut>(core::to_float(g), silu_values(x).derivative, core::to_float(x));
}

template <class T, class TOut>
__device__ TOut swiglu_forward_element(T gate, T up) {
  return core::swiglu_forward_output<TOut>(silu_values(gate).silu, core::to_float(gate), core::to_float(up));
}

template <class T, class TOut>
__device__ void swiglu_backward_element(T g, T gate, T up, TOut& dgate, TOut& dup) {
  const SiluValues v = silu_values(gate);
  core::swiglu_backward_outputs<TOut>(core::to_float(g), v.silu, v.derivative, core::to_float(gate),
                                      core::to_float(up), dgate, dup);
}

// out[k] = element(in[k]...) for each element k of one pack.
template <int N, class TOut, class Element, class... Packs>
__device__ Pack<TOut, N> map_pack(Element&& element, const Packs&... in) {
  Pack<TOut, N> out;
  for (int k = 0; k < N; ++k) out.v[k] = element(in.v[k]...);
  return out;
}

// out[i] = element(in[i]...) for i < count, in packs of N elements.
template <int N, class TOut, class Element, class... T>
__device__ void map_packs(TOut* out, std::int64_t count, Element&& element, const T*... in) {
  for_each_pack<N>(
      count, [&](std::int64_t i) { store_pack<N>(out + i, map_pack<N, TOut>(element, load_pack<N>(in + i)...)); },
      [&](std::int64_t i) { out[i] = element(in[i]...); });
}

template <class T, class TOut, int N>
__global__ void silu_forward_kernel(const T* x, TOut* y, std::int64_t count) {
  map_packs<N>(y, count, [](T a) { return silu_forward_element<T, TOut>(a); }, x);
}

template <class T, class TOut, int N>
__global__ void silu_backward_kernel(const T* g, const T* x, TOut* dx, std::int64_t count) {
  map_packs<N>(dx, count, [](T a, T b) { return silu_backward_element<T, TOut>(a, b); }, g, x);
}

template <class T, class TOut, int N>
__global__ void swiglu_forward_kernel(const T* gate, const T* up, TOut* y, std::int64_t count) {
  map_packs<N>(y, count, [](T a, T b) { return swiglu_forward_element<T, TOut>(a, b); }, gate, up);
}

template <class T, class TOut, int N>
__global__ void swiglu_backward_kernel(const T* g, const T* gate, const T* up, TOut* dgate, TOut* dup,
                                       std::int64_t count) {
  for_each_pack<N>(
      count,
      [&](std::int64_t i) {
        const Pack<T, N> gp = load_pack<N>(g + i);
        const Pack<T, N> a = load_pack<N>(gate + i);
        const Pack<T, N> b = load_pack<N>(up + i);
        Pack<TOut, N> da;
        Pack<TOut, N> db;
        for (int k = 0; k < N; ++k) swiglu_backward_element<T, TOut>(gp.v[k], a.v[k], b.v[k], da.v[k], db.v[k]);
        store_pack<N>(dgate + i, da);
        store_pack<N>(dup + i, db);
      },
      [&](std::int64_t i) { swiglu_backward_element<T, TOut>(g[i], gate[i], up[i], dgate[i], dup[i]); });
}

template <class T, int N>
bool pack_aligned(const T* p) {
  return reinterpret_cast<std::uintptr_t>(p) % sizeof(Pack<T, N>) == 0;
}

// Launches `packed` (packs of kPackOf<T> elements) on (arrays..., count) if
// every array is aligned to its pack, else `single` (one element a thread),
// after building T's silu table on this device if it has none yet.
template <class T, class... Arrays>
void launch_packed(const char* what, std::int64_t count, cudaStream_t stream, void (*packed)(Arrays..., std::int64_t),
                   void (*single)(Arrays..., std::int64_t), Arrays... arrays) {
  ensure_silu_table<T>(stream);
  constexpr int N = kPackOf<T>;
  const bool aligned = (pack_aligned<std::remove_const_t<std::remove_pointer_t<Arrays>>, N>(arrays) && ...);
  const std::int64_t items = aligned ? (count + N - 1) / N : count;
  const std::int64_t wanted = (items + kThreads - 1) / kThreads;
  const unsigned blocks = static_cast<unsigned>(wanted < kMaxBlocks ? wanted : kMaxBlocks);
  launch(aligned ? packed : single, blocks, kThreads, 0, stream, arrays..., count);
  check_launch(what);
}

}  // namespace

void silu_forward(const SiluForwardProblem& p, std::uintptr_t stream) {
  if (p.count == 0) return;
  visit_in_out(p.dtype, p.out_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    launch_packed<T, const T*, TOut*>(
        "silu_forward", p.count, as_stream(stream), silu_forward_kernel<T, TOut, kPackOf<T>>,
        silu_forward_kernel<T, TOut, 1>, static_cast<const T*>(p.x), static_cast<TOut*>(p.y));
  });
}

void silu_backward(const SiluBackwardProblem& p, std::uintptr_t stream) {
  if (p.count == 0) return;
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    launch_packed<T, const T*, const T*, TOut*>(
        "silu_backward", p.count, as_stream(stream), silu_backward_kernel<T, TOut, kPackOf<T>>,
        silu_backward_kernel<T, TOut, 1>, static_cast<const T*>(p.grad_out), static_cast<const T*>(p.x),
        static_cast<TOut*>(p.dx));
  });
}

void swiglu_forward(const SwigluForwardProblem& p, std::uintptr_t stream) {
  if (p.count == 0) return;
  visit_in_out(p.dtype, p.out_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    launch_packed<T, const T*, const T*, TOut*>(
        "swiglu_forward", p.count, as_stream(stream), swiglu_forward_kernel<T, TOut, kPackOf<T>>,
        swiglu_forward_kernel<T, TOut, 1>, static_cast<const T*>(p.gate), static_cast<const T*>(p.up),
        static_cast<TOut*>(p.y));
  });
}

void swiglu_backward(const SwigluBackwardProblem& p, std::uintptr_t stream) {
  if (p.count == 0) return;
  visit_in_out(p.dtype, p.grad_dtype, [&](auto in, auto out) {
    using T = decltype(in);
    using TOut = decltype(out);
    launch_packed<T, const T*, const T*, const T*, TOut*, TOut*>(
        "swiglu_backward", p.count, as_stream(stream), swiglu_backward_kernel<T, TOut, kPackOf<T>>,
        swiglu_backward_kernel<T, TOut, 1>, static_cast<const T*>(p.grad_out), static_cast<const T*>(p.gate),
        static_cast<const T*>(p.up), static_cast<TOut*>(p.dgate), static_cast<TOut*>(p.dup));
  });
}

}  // namespace golden::gpu
