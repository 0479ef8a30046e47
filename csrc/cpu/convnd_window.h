// Helpers shared by the NCHW window kernels (convnd.cpp, pool_nd.cpp).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <new>

#include "engine/nchw.h"

namespace engine {
namespace nd {

// [lo, hi): the o in [0, n) with 0 <= o·s + off < in (s >= 1).
inline void valid_range(index_t n, index_t s, index_t off, index_t in, index_t& lo, index_t& hi) {
  lo = off >= 0 ? 0 : (-off + s - 1) / s;
  hi = off >= in ? 0 : std::min(n, (in - 1 - off) / s + 1);
  lo = std::min(lo, n);
  hi = std::max(hi, lo);
}

// A grow-only, 64-byte-aligned per-thread buffer of T (one per type and tag), bounded by the
// largest tile a kernel asks for.
template <class T, int Tag>
T* thread_buffer(size_t n) {
  struct Buf {
    T* p = nullptr;
    size_t cap = 0;
    ~Buf() { std::free(p); }
  };
  thread_local Buf b;
  if (n > b.cap) {
    std::free(b.p);
    b.p = nullptr;
    b.cap = 0;
    const size_t bytes = (std::max<size_t>(n, 16) * sizeof(T) + 63) / 64 * 64;
    b.p = static_cast<T*>(std::aligned_alloc(64, bytes));
    if (!b.p) throw std::bad_alloc();
    b.cap = bytes / sizeof(T);
  }
  return b.p;
}

}  // namespace nd
}  // namespace engine
