// The threads behind run_tasks(): the library's own pool (persistent workers,
// one job at a time) or the team of the process's OpenMP runtime; either way
// tasks are handed out by an atomic counter.
#include "parallel.h"

#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace golden::cpu {
namespace {

using Clock = std::chrono::steady_clock;

struct Job {
  TaskFn fn = nullptr;
  void* context = nullptr;
  std::int64_t task_count = 0;
  std::atomic<std::int64_t> next_task{0};
  Clock::time_point start{};           // OpenMP team only: when the region began
  std::atomic<bool> straggler{false};  // a member arrived late with nothing left to do
};

void drain(Job& job) {
  DefaultFloatEnvironment environment;
  for (;;) {
    const std::int64_t task = job.next_task.fetch_add(1, std::memory_order_relaxed);
    if (task >= job.task_count) return;
    job.fn(job.context, task);
  }
}

// An OpenMP region ends when every team member has run: a member that gets no
// core (an oversubscribed machine) makes the caller wait for it, which the own
// pool never does. A member that arrives this late, after every task was taken,
// marks the job.
constexpr Clock::duration kStragglerDelay = std::chrono::milliseconds(1);

void drain_team_member(void* context) {
  Job& job = *static_cast<Job*>(context);
  const bool nothing_left = job.next_task.load(std::memory_order_relaxed) >= job.task_count;
  if (nothing_left && Clock::now() - job.start > kStragglerDelay) job.straggler.store(true);
  drain(job);
}

// Never destroyed: workers block on a condition variable until process exit.
// The caller drains the job too and then closes it: it waits only for the
// helpers that joined (they may hold a claimed task), never for ones not yet
// scheduled, so a small job on a busy machine costs a wake-up call, not the
// time until every helper thread gets a CPU.
class ThreadPool {
 public:
  void run(Job& job, int num_threads) {
    std::lock_guard<std::mutex> one_job_at_a_time(job_mutex_);
    const int helpers = num_threads - 1;
    grow(helpers);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &job;
      helpers_wanted_ = helpers;
      ++generation_;
    }
    wake_.notify_all();
    drain(job);
    std::unique_lock<std::mutex> lock(mutex_);
    job_ = nullptr;  // helpers waking from now on find no job and go back to sleep
    done_.wait(lock, [this] { return helpers_in_job_ == 0; });
  }

 private:
  void grow(int helpers) {
    while (static_cast<int>(workers_.size()) < helpers) {
      const int index = static_cast<int>(workers_.size());
      workers_.emplace_back([this, index] { work(index); });
    }
  }

  void work(int index) {
    std::uint64_t seen = 0;
    for (;;) {
      Job* job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen && index < helpers_wanted_; });
        seen = generation_;
        job = job_;
        if (job == nullptr) continue;  // closed before this helper got to run
        ++helpers_in_job_;
      }
      drain(*job);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--helpers_in_job_ == 0) done_.notify_one();
    }
  }

  std::mutex job_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::vector<std::thread> workers_;
  Job* job_ = nullptr;
  std::uint64_t generation_ = 0;
  int helpers_wanted_ = 0;
  int helpers_in_job_ = 0;
};

std::atomic<ThreadPool*> pool{nullptr};
std::once_flag atfork_registered;
std::atomic<int> configured_threads{0};

// The libgomp ABI's entry for `#pragma omp parallel` (LLVM's and Intel's OpenMP
// runtimes export it too): runs fn(data) on a team of num_threads, the caller
// included, and returns when every member has.
using OpenmpParallel = void (*)(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags);

std::atomic<OpenmpParallel> openmp_parallel{nullptr};
std::atomic<bool> in_forked_child{false};
std::atomic<ThreadPoolChoice> pool_choice{ThreadPoolChoice::automatic};

// A forked child has none of the parent's worker threads; it leaks the old
// pool (its mutexes may be held by threads that no longer exist) and builds
// a new one on first use. It never uses an OpenMP runtime, whose team has the
// same problem.
void forget_pool_in_child() {
  pool.store(nullptr);
  in_forked_child.store(true);
}

void register_fork_handler() {
  std::call_once(atfork_registered, [] { pthread_atfork(nullptr, nullptr, forget_pool_in_child); });
}

// The process's OpenMP runtime, or nullptr. Looked up until found: a runtime
// loaded later (importing torch after golden_kernels) is picked up then.
OpenmpParallel loaded_openmp_runtime() {
  register_fork_handler();
  if (in_forked_child.load()) return nullptr;
  OpenmpParallel parallel = openmp_parallel.load(std::memory_order_relaxed);
  if (parallel == nullptr) {
    parallel = reinterpret_cast<OpenmpParallel>(dlsym(RTLD_DEFAULT, "GOMP_parallel"));
    openmp_parallel.store(parallel, std::memory_order_relaxed);
  }
  return parallel;
}

// After a job with a straggler, the automatic choice uses the own pool for a
// while, then tries the team again (the machine's load changes).
constexpr Clock::duration kOwnPoolAfterStraggler = std::chrono::seconds(1);
std::atomic<Clock::rep> team_avoided_until{0};  // Clock ticks since its epoch

// The OpenMP team to run on, or nullptr for the library's own pool.
OpenmpParallel openmp_team_for_this_call() {
  const ThreadPoolChoice choice = pool_choice.load();
  if (choice == ThreadPoolChoice::golden) return nullptr;
  if (choice == ThreadPoolChoice::automatic &&
      Clock::now().time_since_epoch().count() < team_avoided_until.load(std::memory_order_relaxed)) {
    return nullptr;
  }
  return loaded_openmp_runtime();
}

void run_on_team(OpenmpParallel parallel, Job& job, int num_threads) {
  job.start = Clock::now();
  parallel(drain_team_member, &job, static_cast<unsigned>(num_threads), 0);
  if (job.straggler.load()) {
    team_avoided_until.store((Clock::now() + kOwnPoolAfterStraggler).time_since_epoch().count(),
                             std::memory_order_relaxed);
  }
}

ThreadPool& the_pool() {
  register_fork_handler();
  ThreadPool* current = pool.load();
  if (current != nullptr) return *current;
  static std::mutex creation;
  std::lock_guard<std::mutex> lock(creation);
  if (pool.load() == nullptr) pool.store(new ThreadPool());
  return *pool.load();
}

}  // namespace

#if defined(__x86_64__) || defined(__i386__)
DefaultFloatEnvironment::DefaultFloatEnvironment() : saved_(_mm_getcsr()) { _mm_setcsr(0x1F80u); }
DefaultFloatEnvironment::~DefaultFloatEnvironment() { _mm_setcsr(saved_); }
#else
DefaultFloatEnvironment::DefaultFloatEnvironment() = default;
DefaultFloatEnvironment::~DefaultFloatEnvironment() = default;
#endif

void run_tasks(std::int64_t task_count, int num_threads, TaskFn fn, void* context) {
  if (task_count <= 0) return;
  Job job;
  job.fn = fn;
  job.context = context;
  job.task_count = task_count;
  const std::int64_t useful = task_count < num_threads ? task_count : num_threads;
  if (useful <= 1) {
    drain(job);
    return;
  }
  if (OpenmpParallel parallel = openmp_team_for_this_call()) {
    run_on_team(parallel, job, static_cast<int>(useful));
    return;
  }
  the_pool().run(job, static_cast<int>(useful));
}

void set_thread_pool(ThreadPoolChoice choice) {
  if (choice == ThreadPoolChoice::openmp && loaded_openmp_runtime() == nullptr) {
    throw std::invalid_argument(
        "thread pool 'openmp' needs an OpenMP runtime loaded in this process (import torch first); none is");
  }
  pool_choice.store(choice);
}

ThreadPoolChoice active_thread_pool() {
  return openmp_team_for_this_call() != nullptr ? ThreadPoolChoice::openmp : ThreadPoolChoice::golden;
}

int default_num_threads() {
  if (const char* env = std::getenv("GOLDEN_KERNELS_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  cpu_set_t mask;
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0) return CPU_COUNT(&mask);
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

int num_threads() {
  const int n = configured_threads.load();
  if (n > 0) return n;
  // Every CPU launch asks; the default costs a getenv and a system call, so
  // it is read once, at the first launch that needs it.
  static const int default_threads = default_num_threads();
  return default_threads;
}

void set_num_threads(int n) { configured_threads.store(n); }

}  // namespace golden::cpu
