// Per-thread kernel scratch (im2col columns, packed panels, row buffers): grow-only, 64-byte
// aligned, reused across calls so the steady state allocates nothing.
//
// Retention is bounded and releasable, because a service keeps its threads for a long time:
//  * every buffer is counted (scratch_bytes(): all threads together);
//  * after each job a pool worker, and after each Program::run the calling thread, frees all
//    its scratch if it holds more than the keep limit (set_scratch_keep(), default 256 MiB),
//    so one huge request does not pin its memory for the life of the thread;
//  * release_scratch() frees the calling thread's scratch and every pool worker's now (each
//    worker frees its own, between jobs); other threads' go at their next trim point or exit.
//
//   float* col = thread_scratch<float, kTagIm2col>(rows * K);   // contents unspecified
#pragma once

#include <cstddef>
#include <cstdint>

namespace engine {

class ScratchBuffer {
 public:
  ScratchBuffer();
  ~ScratchBuffer();
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;

  void* get(std::size_t bytes);  // at least `bytes`, 64-byte aligned
  void release();
  std::size_t capacity() const { return bytes_; }

 private:
  friend struct ThreadScratch;
  void* p_ = nullptr;
  std::size_t bytes_ = 0;
  ScratchBuffer* next_ = nullptr;  // this thread's buffers, a singly linked list
};

// Which buffer: kernels that hold buffers at the same time (a conv's columns while the GEMM it
// calls packs panels) need different tags.
enum ScratchTag : int {
  kScratchGemmPackA = 1, kScratchGemmPackB, kScratchGemmPartial,
  kScratchConvCols, kScratchConvBand, kScratchConvResidual, kScratchConvStrided, kScratchConvIndirect,
  kScratchConvWinograd, kScratchConvNdCols, kScratchConvNdCols2, kScratchConvNdPanel,
  kScratchAttentionScores, kScratchAttentionFlash, kScratchAttentionDecode, kScratchAttentionDecodePartial,
  kScratchAttentionGrad, kScratchAttentionGradPartial,
  kScratchNormIn, kScratchNormOut, kScratchRotary, kScratchTopK,
  kScratchQuantX, kScratchQuantXScales, kScratchQuantPanel,
};

// A per-thread buffer of n elements of T (contents unspecified).
template <class T, int Tag>
T* thread_scratch(std::size_t n) {
  thread_local ScratchBuffer buf;
  return static_cast<T*>(buf.get(n * sizeof(T)));
}

std::size_t scratch_bytes();                 // held by all threads
std::size_t thread_scratch_bytes();          // held by the calling thread
void set_scratch_keep(std::size_t bytes);    // per-thread retention limit
std::size_t scratch_keep();
void trim_thread_scratch();                  // frees this thread's scratch if over the limit
void release_thread_scratch();               // frees this thread's scratch
void release_scratch();                      // this thread's and every pool worker's

}  // namespace engine
