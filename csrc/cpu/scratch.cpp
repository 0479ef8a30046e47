// Per-thread scratch accounting (see engine/scratch.h). Each thread links its buffers into a
// thread-local list, so trimming touches only the calling thread's memory and needs no lock;
// the process-wide total is one relaxed atomic.
#include "engine/scratch.h"

#include <atomic>
#include <cstdlib>
#include <new>

#include "engine/threadpool.h"

namespace engine {

namespace {
std::atomic<std::size_t> g_total{0};
std::atomic<std::size_t> g_keep{std::size_t(256) << 20};
}  // namespace

struct ThreadScratch {
  ScratchBuffer* head = nullptr;
  std::size_t bytes = 0;

  void free_all() {
    for (ScratchBuffer* b = head; b; b = b->next_) drop(b);
  }
  void drop(ScratchBuffer* b) {
    if (!b->p_) return;
    std::free(b->p_);
    b->p_ = nullptr;
    bytes -= b->bytes_;
    g_total.fetch_sub(b->bytes_, std::memory_order_relaxed);
    b->bytes_ = 0;
  }
  static ThreadScratch& mine() {
    thread_local ThreadScratch t;
    return t;
  }
};

ScratchBuffer::ScratchBuffer() {
  ThreadScratch& t = ThreadScratch::mine();
  next_ = t.head;
  t.head = this;
}

ScratchBuffer::~ScratchBuffer() {
  // Thread exit: buffers die in reverse order of construction, so this is the list's head
  // unless the ThreadScratch itself is already gone; either way only count and free.
  if (p_) {
    g_total.fetch_sub(bytes_, std::memory_order_relaxed);
    std::free(p_);
  }
}

void* ScratchBuffer::get(std::size_t bytes) {
  if (bytes <= bytes_ && p_) return p_;
  ThreadScratch& t = ThreadScratch::mine();
  t.drop(this);
  const std::size_t size = ((bytes < 64 ? 64 : bytes) + 63) / 64 * 64;
  p_ = std::aligned_alloc(64, size);
  if (!p_) throw std::bad_alloc();
  bytes_ = size;
  t.bytes += size;
  g_total.fetch_add(size, std::memory_order_relaxed);
  return p_;
}

void ScratchBuffer::release() { ThreadScratch::mine().drop(this); }

std::size_t scratch_bytes() { return g_total.load(std::memory_order_relaxed); }
std::size_t thread_scratch_bytes() { return ThreadScratch::mine().bytes; }
void set_scratch_keep(std::size_t bytes) { g_keep.store(bytes, std::memory_order_relaxed); }
std::size_t scratch_keep() { return g_keep.load(std::memory_order_relaxed); }

void trim_thread_scratch() {
  ThreadScratch& t = ThreadScratch::mine();
  if (t.bytes > g_keep.load(std::memory_order_relaxed)) t.free_all();
}

void release_thread_scratch() { ThreadScratch::mine().free_all(); }

void release_scratch() {
  release_thread_scratch();
  release_worker_scratch();
}

}  // namespace engine
