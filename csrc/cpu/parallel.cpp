// Thread pool behind run_tasks(): persistent workers, one job at a time, tasks
// handed out by an atomic counter.
#include "parallel.h"

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace golden::cpu {
namespace {

// Puts the SSE control register in its power-on state for the scope: round
// to nearest, all exceptions masked, denormals kept (no FTZ, no DAZ).
class DefaultFloatEnvironment {
 public:
#if defined(__x86_64__) || defined(__i386__)
  DefaultFloatEnvironment() : saved_(_mm_getcsr()) { _mm_setcsr(kDefaultMxcsr); }
  ~DefaultFloatEnvironment() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned kDefaultMxcsr = 0x1F80;
  unsigned saved_;
#endif
};

struct Job {
  TaskFn fn = nullptr;
  void* context = nullptr;
  std::int64_t task_count = 0;
  std::atomic<std::int64_t> next_task{0};
};

void drain(Job& job) {
  DefaultFloatEnvironment environment;
  for (;;) {
    const std::int64_t task = job.next_task.fetch_add(1, std::memory_order_relaxed);
    if (task >= job.task_count) return;
    job.fn(job.context, task);
  }
}

// Never destroyed: workers block on a condition variable until process exit.
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
      helpers_running_ = 0;
      ++generation_;
    }
    wake_.notify_all();
    drain(job);
    // Close the job: a helper the scheduler has not run yet (a loaded machine)
    // stays out of it, so the caller never waits for a thread that would only
    // find the task counter exhausted. Only helpers that joined are waited for.
    std::unique_lock<std::mutex> lock(mutex_);
    job_ = nullptr;
    done_.wait(lock, [this] { return helpers_running_ == 0; });
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
        if (job == nullptr) continue;  // closed before this helper ran
        ++helpers_running_;
      }
      drain(*job);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--helpers_running_ == 0) done_.notify_one();
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
  int helpers_running_ = 0;
};

std::atomic<ThreadPool*> pool{nullptr};
std::once_flag atfork_registered;
std::atomic<int> configured_threads{0};

// A forked child has none of the parent's worker threads; it leaks the old
// pool (its mutexes may be held by threads that no longer exist) and builds
// a new one on first use.
void forget_pool_in_child() { pool.store(nullptr); }

ThreadPool& the_pool() {
  std::call_once(atfork_registered, [] { pthread_atfork(nullptr, nullptr, forget_pool_in_child); });
  ThreadPool* current = pool.load();
  if (current != nullptr) return *current;
  static std::mutex creation;
  std::lock_guard<std::mutex> lock(creation);
  if (pool.load() == nullptr) pool.store(new ThreadPool());
  return *pool.load();
}

}  // namespace

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
  the_pool().run(job, static_cast<int>(useful));
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
  return n > 0 ? n : default_num_threads();
}

void set_num_threads(int n) { configured_threads.store(n); }

}  // namespace golden::cpu
