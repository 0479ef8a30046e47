// Memory of the convolution family (conv.cpp, conv_indirect.cpp, conv_winograd.cpp): 64-byte
// aligned float buffers, so vector loads and the kernels' stores never split cache lines.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

namespace engine::convk {

// n floats, 64-byte aligned, released with std::free.
inline float* aligned_floats(size_t n) {
  void* p = std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
  if (!p) throw std::bad_alloc();
  return static_cast<float*>(p);
}

// Grow-only scratch for thread_local use: no heap traffic per call once it has grown to a
// call's size. Callers size it on the calling thread before splitting work, so a failed
// allocation throws there.
struct Scratch {
  float* p = nullptr;
  size_t cap = 0;  // floats
  ~Scratch() { std::free(p); }
  float* get(size_t n) {
    if (n > cap) {
      std::free(p);
      p = nullptr;
      cap = 0;
      p = aligned_floats(n);
      cap = n;
    }
    return p;
  }
};

}  // namespace engine::convk
