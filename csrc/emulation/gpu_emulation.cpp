// The CPU scheduler behind gpu_emulation.h. A launch runs its blocks one after
// another; a block's threads are fibers that the scheduler resumes in turn,
// each until it waits (at __syncthreads, or at a warp exchange) or returns.
// When every running fiber waits, a wait releases: a warp whose running lanes
// all wait at an exchange, else the block barrier when every running fiber
// waits there (threads that have returned count as arrived, as on NVIDIA GPUs
// since Volta). Anything else (lanes of a warp split between a shuffle and
// the barrier) can never release, would hang a GPU, and fails the launch.
// Fibers are kept per OS thread and run one thread body after another; a
// switch saves the callee-saved registers and swaps stack pointers (x86-64
// only; ucontext's switches make a system call each, and the GPU tests took
// 194 s with them against 80 s).
#include "gpu_emulation.h"

#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#error "the GPU emulation's fiber switch is written for x86-64"
#endif

// switch_stacks(save, load): pushes the callee-saved registers, stores the
// stack pointer to *save, loads `load` and pops the registers saved there,
// returning into the fiber (or scheduler) that was switched away from.
extern "C" void golden_emulation_switch_stacks(void** save, void* load);
asm(R"(
  .text
  .globl golden_emulation_switch_stacks
  .hidden golden_emulation_switch_stacks
  .type golden_emulation_switch_stacks, @function
golden_emulation_switch_stacks:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size golden_emulation_switch_stacks, .-golden_emulation_switch_stacks
)");

thread_local dim3 threadIdx;
thread_local dim3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace golden::gpu_emulation {
namespace {

constexpr int kWarpSize = 32;
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxGridYZ = 65535;
constexpr std::size_t kDefaultSharedLimit = 48 * 1024;  // without the opt-in attribute
constexpr std::size_t kMaxSharedBytes = 227 * 1024;     // H100's opt-in limit
constexpr std::size_t kFiberStackBytes = 256 * 1024;

thread_local cudaError_t last_error = cudaSuccess;

void fail_launch(cudaError_t error, const std::string& why) {
  std::fprintf(stderr, "golden_kernels GPU emulation: %s\n", why.c_str());
  last_error = error;
}

enum class Wait { none, block_barrier, warp_exchange, done };

struct Fiber {
  void* stack_pointer = nullptr;  // where its registers were saved
  char* stack = nullptr;
  dim3 index;
  Wait wait = Wait::done;
  void* fake_stack = nullptr;  // AddressSanitizer's bookkeeping of a switched-out stack
};

// The launch running on this OS thread.
struct Block {
  std::size_t threads = 0;
  std::vector<std::uint64_t> exchange;  // one warp-exchange slot per thread
  std::vector<unsigned char> shared;    // dynamic shared memory
  const std::function<void()>* body = nullptr;
  std::size_t running = 0;  // the fiber switched to
};

[[noreturn]] void fiber_main();

// The fibers of this OS thread and the scheduler's saved stack. Stacks are
// mapped once and lazily (untouched pages cost nothing).
class Fibers {
 public:
  ~Fibers() {
    for (Fiber& fiber : fibers_) munmap(fiber.stack, kFiberStackBytes);
  }

  // Fiber i, made if new; nullptr if no stack could be mapped.
  Fiber* get(std::size_t i) {
    while (fibers_.size() <= i) {
      void* p = mmap(nullptr, kFiberStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
      if (p == MAP_FAILED) return nullptr;
      fibers_.emplace_back();
      fibers_.back().stack = static_cast<char*>(p);
      restart(fibers_.back());
    }
    return &fibers_[i];
  }

  // Makes the fiber start afresh at fiber_main (new, or abandoned in a deadlock).
  static void restart(Fiber& fiber) {
#if defined(__SANITIZE_ADDRESS__)
    ASAN_UNPOISON_MEMORY_REGION(fiber.stack, kFiberStackBytes);
#endif
    // Six saved registers, then the return address: fiber_main is entered
    // as if called, with the stack 8 past a 16-byte boundary.
    const auto top = reinterpret_cast<std::uintptr_t>(fiber.stack + kFiberStackBytes) & ~std::uintptr_t{15};
    void** frame = reinterpret_cast<void**>(top) - 8;
    for (int k = 0; k < 6; ++k) frame[k] = nullptr;
    frame[6] = reinterpret_cast<void*>(&fiber_main);
    frame[7] = nullptr;
    fiber.stack_pointer = frame;
    fiber.fake_stack = nullptr;
    fiber.wait = Wait::done;
  }

  void* scheduler_stack_pointer = nullptr;
  const void* scheduler_stack = nullptr;
  std::size_t scheduler_stack_size = 0;

 private:
  std::deque<Fiber> fibers_;  // a suspended fiber's references to itself stay valid as more are made
};

thread_local Block* current = nullptr;
thread_local Fibers fibers;

// AddressSanitizer must be told of every switch between stacks.
void start_switch(void** fake_stack, const void* bottom, std::size_t size) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(fake_stack, bottom, size);
#else
  (void)fake_stack, (void)bottom, (void)size;
#endif
}

void finish_switch(void* fake_stack, const void** old_bottom, std::size_t* old_size) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(fake_stack, old_bottom, old_size);
#else
  (void)fake_stack, (void)old_bottom, (void)old_size;
#endif
}

// From the running fiber back to the scheduler, after setting its wait.
void yield(Wait wait) {
  Fiber& fiber = *fibers.get(current->running);
  fiber.wait = wait;
  start_switch(&fiber.fake_stack, fibers.scheduler_stack, fibers.scheduler_stack_size);
  golden_emulation_switch_stacks(&fiber.stack_pointer, fibers.scheduler_stack_pointer);
  finish_switch(fiber.fake_stack, nullptr, nullptr);
}

// Runs one thread's body per resumption after a finished one.
void fiber_main() {
  finish_switch(nullptr, &fibers.scheduler_stack, &fibers.scheduler_stack_size);
  for (;;) {
    (*current->body)();
    yield(Wait::done);
  }
}

// Resumes fiber i until it waits or returns.
void resume(Block& block, std::size_t i) {
  Fiber& fiber = *fibers.get(i);
  block.running = i;
  threadIdx = fiber.index;
  fiber.wait = Wait::none;
  void* scheduler_fake_stack = nullptr;
  start_switch(&scheduler_fake_stack, fiber.stack, kFiberStackBytes);
  golden_emulation_switch_stacks(&fibers.scheduler_stack_pointer, fiber.stack_pointer);
  finish_switch(scheduler_fake_stack, nullptr, nullptr);
}

bool reverse_schedule() {
  const char* schedule = std::getenv("GOLDEN_GPU_EMULATION_SCHEDULE");
  return schedule != nullptr && std::string(schedule) == "reverse";
}

// Marks the waits that can release as runnable; false if none can (all done,
// or a deadlock).
bool release(Block& block) {
  const std::size_t n = block.threads;
  bool released = false;
  for (std::size_t first = 0; first < n; first += kWarpSize) {
    const std::size_t end = first + kWarpSize < n ? first + kWarpSize : n;
    bool all_exchanging = true, any_exchanging = false;
    for (std::size_t i = first; i < end; ++i) {
      const Wait w = fibers.get(i)->wait;
      if (w == Wait::warp_exchange) any_exchanging = true;
      if (w != Wait::warp_exchange && w != Wait::done) all_exchanging = false;
    }
    if (any_exchanging && all_exchanging) {
      for (std::size_t i = first; i < end; ++i) {
        if (fibers.get(i)->wait == Wait::warp_exchange) fibers.get(i)->wait = Wait::none;
      }
      released = true;
    }
  }
  if (released) return true;
  bool all_at_barrier = true, any_at_barrier = false;
  for (std::size_t i = 0; i < n; ++i) {
    const Wait w = fibers.get(i)->wait;
    if (w == Wait::block_barrier) any_at_barrier = true;
    if (w != Wait::block_barrier && w != Wait::done) all_at_barrier = false;
  }
  if (!(any_at_barrier && all_at_barrier)) return false;
  for (std::size_t i = 0; i < n; ++i) {
    if (fibers.get(i)->wait == Wait::block_barrier) fibers.get(i)->wait = Wait::none;
  }
  return true;
}

// Runs one thread block to completion; false on a deadlock (its fibers are
// restarted, their bodies abandoned).
bool run_block(Block& block, bool reverse) {
  const std::size_t n = block.threads;
  for (std::size_t i = 0; i < n; ++i) fibers.get(i)->wait = Wait::none;
  for (;;) {
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = reverse ? n - 1 - k : k;
      if (fibers.get(i)->wait == Wait::none) resume(block, i);
    }
    if (!release(block)) break;
  }
  bool finished = true;
  for (std::size_t i = 0; i < n; ++i) {
    if (fibers.get(i)->wait != Wait::done) {
      Fibers::restart(*fibers.get(i));
      finished = false;
    }
  }
  return finished;
}

std::mutex& launch_mutex() {
  static std::mutex mutex;
  return mutex;
}

std::map<const void*, std::size_t>& shared_limits() {
  static std::map<const void*, std::size_t> limits;
  return limits;
}

std::size_t shared_limit(const void* kernel) {
  const auto it = shared_limits().find(kernel);
  return it == shared_limits().end() ? kDefaultSharedLimit : it->second;
}

// The static shared variables seen so far (GOLDEN_SHARED registers each on
// its first use, from inside a launch, so under the launch mutex).
struct SharedVariable {
  void* address;
  std::size_t bytes;
};

std::vector<SharedVariable>& static_shared() {
  static std::vector<SharedVariable> variables;
  return variables;
}

}  // namespace

bool poison_per_block(void* address, std::size_t bytes) {
  static_shared().push_back({address, bytes});
  std::memset(address, 0xFF, bytes);
  return true;
}

void run_grid(const void* kernel, dim3 grid, dim3 block_dim, std::size_t shared_bytes,
              const std::function<void()>& body) {
  const std::uint64_t threads = std::uint64_t{block_dim.x} * block_dim.y * block_dim.z;
  if (threads == 0 || threads > kMaxThreadsPerBlock || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.y > kMaxGridYZ || grid.z > kMaxGridYZ) {
    fail_launch(cudaErrorInvalidConfiguration, "invalid launch configuration");
    return;
  }
  std::lock_guard<std::mutex> lock(launch_mutex());
  if (shared_bytes > shared_limit(kernel)) {
    fail_launch(cudaErrorInvalidValue, std::to_string(shared_bytes) + " bytes of dynamic shared memory, over the " +
                                           std::to_string(shared_limit(kernel)) + " this kernel may use");
    return;
  }
  if (fibers.get(threads - 1) == nullptr) {
    fail_launch(cudaErrorMemoryAllocation, "no memory for the thread block's fiber stacks");
    return;
  }
  const bool reverse = reverse_schedule();
  Block block;
  block.threads = threads;
  block.exchange.resize(threads);
  block.body = &body;
  for (std::size_t t = 0; t < threads; ++t) {
    fibers.get(t)->index = dim3(static_cast<unsigned>(t % block_dim.x),
                                static_cast<unsigned>(t / block_dim.x % block_dim.y),
                                static_cast<unsigned>(t / (std::size_t{block_dim.x} * block_dim.y)));
  }
  blockDim = block_dim;
  gridDim = grid;
  current = &block;
  const std::uint64_t blocks = std::uint64_t{grid.x} * grid.y * grid.z;
  for (std::uint64_t k = 0; k < blocks; ++k) {
    const std::uint64_t b = reverse ? blocks - 1 - k : k;
    blockIdx = dim3(static_cast<unsigned>(b % grid.x), static_cast<unsigned>(b / grid.x % grid.y),
                    static_cast<unsigned>(b / (std::uint64_t{grid.x} * grid.y)));
    // Shared memory starts as NaN bytes, as no kernel may rely on its contents.
    block.shared.assign(shared_bytes, 0xFF);
    for (const SharedVariable& variable : static_shared()) std::memset(variable.address, 0xFF, variable.bytes);
    if (!run_block(block, reverse)) {
      fail_launch(cudaErrorLaunchFailure, "a thread block deadlocked (its threads wait at barriers none can pass)");
      break;
    }
  }
  current = nullptr;
}

void* dynamic_shared() { return current->shared.data(); }

int lane_id() { return static_cast<int>(current->running % kWarpSize); }

std::uint64_t warp_exchange(std::uint64_t bits, int source) {
  Block& block = *current;
  const std::size_t thread = block.running;
  const std::size_t from = thread / kWarpSize * kWarpSize + static_cast<std::size_t>(source);
  block.exchange[thread] = bits;
  yield(Wait::warp_exchange);  // every lane has offered its value
  // A lane past the block's last thread (a partial last warp) has no value:
  // all ones, as fresh memory, so that reading it shows.
  const std::uint64_t got = from < block.threads ? block.exchange[from] : ~std::uint64_t{0};
  yield(Wait::warp_exchange);  // every lane has read before any offers again
  return got;
}

}  // namespace golden::gpu_emulation

namespace emu = golden::gpu_emulation;

void __syncthreads() { emu::yield(emu::Wait::block_barrier); }

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}

cudaError_t cudaGetLastError() {
  const cudaError_t error = emu::last_error;
  emu::last_error = cudaSuccess;
  return error;
}

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

// Fresh device memory is NaN bytes: a kernel that reads what it never wrote
// shows in its results.
cudaError_t cudaMallocAsync(void** ptr, std::size_t bytes, cudaStream_t) {
  *ptr = std::malloc(bytes);
  if (*ptr == nullptr) return cudaErrorMemoryAllocation;
  std::memset(*ptr, 0xFF, bytes);
  return cudaSuccess;
}

cudaError_t cudaFreeAsync(void* ptr, cudaStream_t) {
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* ptr, int value, std::size_t bytes, cudaStream_t) {
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind, cudaStream_t) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

cudaError_t cudaFuncSetAttribute(const void* kernel, cudaFuncAttribute attribute, int value) {
  if (attribute != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      static_cast<std::size_t>(value) > emu::kMaxSharedBytes) {
    return cudaErrorInvalidValue;
  }
  std::lock_guard<std::mutex> lock(emu::launch_mutex());
  emu::shared_limits()[kernel] = static_cast<std::size_t>(value);
  return cudaSuccess;
}
