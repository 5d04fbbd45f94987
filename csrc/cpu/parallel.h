// The CPU backend's threads. Work is split into tasks whose boundaries are
// fixed by the kernel (never by the thread count), so which thread runs a task
// cannot change a result; the pool only decides who runs what.
#pragma once

#include <cstdint>

namespace golden::cpu {

using TaskFn = void (*)(void* context, std::int64_t task);

// Runs fn(context, t) for t in [0, task_count) on up to `num_threads` threads
// (the caller's thread included) and returns when all are done. Every task
// runs under the default floating-point environment (round to nearest, no
// FTZ/DAZ) whatever the caller has set. Safe to call from several threads at
// once and from a child process after fork().
void run_tasks(std::int64_t task_count, int num_threads, TaskFn fn, void* context);

// Whose threads run_tasks() uses. golden: the library's own pool. openmp: the
// team of an OpenMP runtime already loaded in the process (PyTorch's), so that
// the two libraries take turns on the same threads instead of competing for
// cores with each other's idle-spinning workers. automatic: openmp when such a
// runtime is loaded, else golden; and golden for a second after a team member
// was late (over 1 ms, with nothing left to do: the machine is oversubscribed,
// and the team's end-of-region wait would cost more than it saves). A process
// forked from this one always uses golden (an OpenMP team does not survive a
// fork).
enum class ThreadPoolChoice { automatic, golden, openmp };
void set_thread_pool(ThreadPoolChoice choice);  // openmp with no runtime loaded: std::invalid_argument
// The pool a multi-threaded run_tasks() call would use now: golden or openmp.
ThreadPoolChoice active_thread_pool();

// Puts the SSE control register (MXCSR) in its power-on state for the scope:
// round to nearest, exceptions masked, denormals kept (no FTZ, no DAZ); the
// caller's setting comes back at scope exit. run_tasks() holds one per task;
// the bindings hold one around every launch, so work that runs on the
// caller's thread outside run_tasks (the linear references) is covered too.
class DefaultFloatEnvironment {
 public:
  DefaultFloatEnvironment();
  ~DefaultFloatEnvironment();
  DefaultFloatEnvironment(const DefaultFloatEnvironment&) = delete;
  DefaultFloatEnvironment& operator=(const DefaultFloatEnvironment&) = delete;

 private:
  unsigned saved_ = 0;
};

// Threads used when a call does not say: GOLDEN_KERNELS_NUM_THREADS if set,
// else the CPUs this process may run on. num_threads() reads that default once.
int default_num_threads();
int num_threads();
void set_num_threads(int n);

}  // namespace golden::cpu
