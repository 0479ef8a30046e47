// The engine-wide pool. A job is (fn, ntasks): task i < threads is pinned to thread i (the
// caller is thread 0), the rest are claimed with an atomic counter, and unstarted pinned
// tasks are stolen by whoever is free. After a job, workers spin for a short while
// (a follow-up job in a plan usually comes within microseconds), then sleep on a
// condition variable, so an idle engine costs no CPU.
#include "engine/threadpool.h"

#include "engine/scratch.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

#if defined(__x86_64__)
#include <immintrin.h>
#define ENGINE_PAUSE() _mm_pause()
#else
#define ENGINE_PAUSE() ((void)0)
#endif

namespace engine {
namespace {

thread_local bool t_inside_task = false;
// Set on threads that must not use the pool (a server's model instances with one thread
// each): their kernels run inline, so instances compute in parallel instead of queueing
// for the one pool.
thread_local bool t_serial = false;

// How long a worker keeps polling for the next job before it sleeps. Long enough to bridge
// the gap between two kernels of one plan, short enough that a caller at one request a
// millisecond costs a few percent of a core.
constexpr auto kSpin = std::chrono::microseconds(50);

// Tasks [0, kMaxPinned) of a job are pinned: task i goes to thread i first (the caller is
// thread 0), so a kernel that splits the same weights the same way every call finds each
// share in the same core's L2. A thread that is late (asleep) has its pinned task stolen, so
// the caller never waits for a wake-up.
constexpr int kMaxPinned = 64;

// A job lives on the submitting caller's stack. Workers reach it through `job_`; the caller
// unpublishes it and waits until no worker holds it before returning.
struct Job {
  FunctionRef<void(std::int64_t)>* fn;
  std::int64_t ntasks;
  std::int64_t npinned;                   // tasks [0, npinned) are pinned
  std::atomic<std::int64_t> next;         // next unpinned task to hand out
  std::atomic<std::int64_t> done{0};
  std::atomic<bool> taken[kMaxPinned] = {};

  Job(FunctionRef<void(std::int64_t)>* f, std::int64_t n, int nthreads)
      : fn(f), ntasks(n), npinned(std::min<std::int64_t>({n, nthreads, kMaxPinned})), next(npinned) {}
};

class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int n) {
    std::lock_guard<std::mutex> serial(submit_mu_);
    if (n < 1) n = 1;
    stop();
    stopping_ = false;
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, i] { work(i); });
  }

  // Every worker frees its own kernel scratch, between jobs; returns when all have.
  void release_scratch() {
    std::lock_guard<std::mutex> serial(submit_mu_);
    release_done_.store(0, std::memory_order_seq_cst);
    {
      std::lock_guard<std::mutex> lk(mu_);
      release_requests_.fetch_add(1, std::memory_order_seq_cst);
    }
    cv_.notify_all();
    const int n = static_cast<int>(workers_.size());
    while (release_done_.load(std::memory_order_acquire) < n) std::this_thread::yield();
  }

  void run(std::int64_t ntasks, FunctionRef<void(std::int64_t)> fn) {
    std::lock_guard<std::mutex> serial(submit_mu_);  // one job at a time from any caller
    Job job(&fn, ntasks, size());
    job_.store(&job, std::memory_order_seq_cst);
    {
      std::lock_guard<std::mutex> lk(mu_);
      generation_.fetch_add(1, std::memory_order_seq_cst);
    }
    cv_.notify_all();
    execute(job, 0);
    while (job.done.load(std::memory_order_acquire) < ntasks) ENGINE_PAUSE();
    job_.store(nullptr, std::memory_order_seq_cst);
    while (busy_.load(std::memory_order_seq_cst) != 0) ENGINE_PAUSE();
  }

 private:
  // Thread `self` runs its pinned task, then unpinned ones, then steals pinned tasks that
  // no thread has started.
  static void execute(Job& job, int self) {
    const bool was_inside = t_inside_task;
    t_inside_task = true;
    auto run = [&](std::int64_t t) {
      (*job.fn)(t);
      job.done.fetch_add(1, std::memory_order_release);
    };
    if (self < job.npinned && !job.taken[self].exchange(true, std::memory_order_acq_rel)) run(self);
    for (;;) {
      std::int64_t t = job.next.fetch_add(1, std::memory_order_relaxed);
      if (t >= job.ntasks) break;
      run(t);
    }
    for (std::int64_t t = 0; t < job.npinned; ++t)
      if (!job.taken[t].load(std::memory_order_relaxed) &&
          !job.taken[t].exchange(true, std::memory_order_acq_rel))
        run(t);
    t_inside_task = was_inside;
  }

  void work(int self) {
    std::uint64_t seen = generation_.load(std::memory_order_acquire);
    std::uint64_t released = release_requests_.load(std::memory_order_acquire);
    auto idle = [&] {
      return generation_.load(std::memory_order_acquire) == seen && !stopping_.load() &&
             release_requests_.load(std::memory_order_acquire) == released;
    };
    for (;;) {
      // Spin a little, then sleep until a new job, a release request or stop.
      auto until = std::chrono::steady_clock::now() + kSpin;
      while (idle() && std::chrono::steady_clock::now() < until) ENGINE_PAUSE();
      if (idle()) {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return !idle(); });
      }
      if (stopping_.load()) return;
      if (release_requests_.load(std::memory_order_acquire) != released) {
        released = release_requests_.load(std::memory_order_acquire);
        release_thread_scratch();
        release_done_.fetch_add(1, std::memory_order_release);
      }
      if (generation_.load(std::memory_order_acquire) == seen) continue;
      seen = generation_.load(std::memory_order_acquire);
      busy_.fetch_add(1, std::memory_order_seq_cst);
      if (Job* job = job_.load(std::memory_order_seq_cst)) execute(*job, self);
      busy_.fetch_sub(1, std::memory_order_seq_cst);
      trim_thread_scratch();  // between jobs this worker's scratch is unused
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex submit_mu_, mu_;
  std::condition_variable cv_;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<Job*> job_{nullptr};
  std::atomic<int> busy_{0};
  std::atomic<std::uint64_t> release_requests_{0};
  std::atomic<int> release_done_{0};
};

// CPUs this process may run on (a container's cpuset, taskset), else the core count.
int available_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  unsigned hc = std::thread::hardware_concurrency();
  return hc ? static_cast<int>(hc) : 1;
}

// The pool is created on first use, with the size set before that (the Python package reads
// ENGINE_NUM_THREADS at import and sets it) or the CPU count, so configuring it before any
// kernel runs starts no threads twice.
std::mutex g_config_mu;
int g_requested = 0;  // 0: available_cpus()
std::unique_ptr<Pool> g_pool_holder;
std::atomic<Pool*> g_pool{nullptr};

Pool& pool() {
  if (Pool* p = g_pool.load(std::memory_order_acquire)) return *p;
  std::lock_guard<std::mutex> lk(g_config_mu);
  if (!g_pool_holder) {
    g_pool_holder = std::make_unique<Pool>(g_requested > 0 ? g_requested : available_cpus());
    g_pool.store(g_pool_holder.get(), std::memory_order_release);
  }
  return *g_pool_holder;
}

}  // namespace

int num_threads() {
  if (Pool* p = g_pool.load(std::memory_order_acquire)) return p->size();
  std::lock_guard<std::mutex> lk(g_config_mu);
  return g_requested > 0 ? g_requested : available_cpus();
}

int cpu_count() { return available_cpus(); }

void set_thread_serial(bool serial) { t_serial = serial; }
bool thread_serial() { return t_serial; }

void set_num_threads(int n) {
  if (n < 1) n = 1;
  std::lock_guard<std::mutex> lk(g_config_mu);
  if (g_pool_holder) g_pool_holder->resize(n);
  else g_requested = n;
}

void release_worker_scratch() {
  if (Pool* p = g_pool.load(std::memory_order_acquire)) p->release_scratch();
}

void parallel_tasks(std::int64_t ntasks, FunctionRef<void(std::int64_t)> fn) {
  if (ntasks <= 0) return;
  if (ntasks == 1 || t_inside_task || t_serial || pool().size() == 1) {
    for (std::int64_t t = 0; t < ntasks; ++t) fn(t);
    return;
  }
  pool().run(ntasks, fn);
}

void parallel_for(std::int64_t n, std::int64_t grain, FunctionRef<void(std::int64_t, std::int64_t)> fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  std::int64_t chunks = t_serial ? 1 : std::min<std::int64_t>(num_threads(), (n + grain - 1) / grain);
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  parallel_tasks(chunks, [&](std::int64_t c) {
    std::int64_t b = n * c / chunks, e = n * (c + 1) / chunks;
    if (b < e) fn(b, e);
  });
}

}  // namespace engine
