// One engine-wide thread pool, created on first use. Size: set_num_threads() before or after
// that (the Python package applies ENGINE_NUM_THREADS at import), default the CPU count.
// Workers spin briefly after a job, then sleep on a condition variable: an idle engine
// uses no CPU. The calling thread always takes part in the work; a job of one task runs
// inline with no wake-up at all. Nested calls (from inside a task) run inline.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

namespace engine {

// A non-owning reference to a callable, so parallel_for allocates nothing.
template <class Fn>
class FunctionRef;
template <class R, class... Args>
class FunctionRef<R(Args...)> {
 public:
  template <class F>
  FunctionRef(F&& f)  // NOLINT: implicit by design
      : obj_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* o, Args... a) -> R { return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<Args>(a)...); }) {}
  R operator()(Args... a) const { return call_(obj_, std::forward<Args>(a)...); }

 private:
  void* obj_;
  R (*call_)(void*, Args...);
};

int num_threads();
void set_num_threads(int n);  // resizes the pool (waits for a running job)
int cpu_count();              // CPUs this process may use (affinity mask)
// The calling thread runs its kernels inline, never on the pool (per thread; default off).
void set_thread_serial(bool serial);
bool thread_serial();
void release_worker_scratch(); // each pool worker frees its kernel scratch (engine/scratch.h)

// Runs fn(task) for task in [0, ntasks), spread over the pool; returns when all are done.
void parallel_tasks(std::int64_t ntasks, FunctionRef<void(std::int64_t)> fn);

// Splits [0, n) into at most num_threads() contiguous chunks of at least `grain` items and
// runs fn(begin, end) on each. n <= grain runs inline on the caller.
void parallel_for(std::int64_t n, std::int64_t grain, FunctionRef<void(std::int64_t, std::int64_t)> fn);

}  // namespace engine
