// Einsum's strided sum and batched product for the types the GEMM does not take. Loops
// are written for the auto-vectoriser (axpy over contiguous rows); integer sums run in a
// wide unsigned accumulator, which wraps exactly like numpy's same-type integer einsum.
#include "engine/einsum.h"

#include <algorithm>
#include <cstdint>

#include "engine/threadpool.h"

namespace engine {
namespace {

constexpr index_t kChunk = 256;      // output elements accumulated at once (on the stack)
constexpr index_t kGrain = 1 << 15;  // multiply-adds below which work stays on the caller
constexpr int kMaxDims = 16;

template <class T> struct Acc { using type = T; };
template <> struct Acc<float> { using type = double; };
template <> struct Acc<std::int8_t> { using type = std::uint32_t; };
template <> struct Acc<std::uint8_t> { using type = std::uint32_t; };
template <> struct Acc<std::int16_t> { using type = std::uint32_t; };
template <> struct Acc<std::uint16_t> { using type = std::uint32_t; };
template <> struct Acc<std::int32_t> { using type = std::uint32_t; };
template <> struct Acc<std::int64_t> { using type = std::uint64_t; };

// fn(offset) for every index of an nd-dim (shape, strides) space; once (offset 0) if nd == 0.
template <class F>
void each_offset(int nd, const index_t* shape, const index_t* strides, F&& fn) {
  for (int d = 0; d < nd; ++d)
    if (shape[d] == 0) return;
  index_t pos[kMaxDims] = {0};
  index_t off = 0;
  for (;;) {
    fn(off);
    int d = nd - 1;
    for (; d >= 0; --d) {
      off += strides[d];
      if (++pos[d] < shape[d]) break;
      off -= strides[d] * shape[d];
      pos[d] = 0;
    }
    if (d < 0) return;
  }
}

// Offset of row `r` of the kept dims [0, nk-1) (the last kept dim is the line).
index_t row_offset(index_t r, int nk, const index_t* kshape, const index_t* kstrides) {
  index_t off = 0;
  for (int d = nk - 2; d >= 0; --d) {
    off += (r % kshape[d]) * kstrides[d];
    r /= kshape[d];
  }
  return off;
}

template <class T>
void sum_typed(T* y, const T* x, int nk, const index_t* kshape, const index_t* kstrides, int nr, const index_t* rshape,
               const index_t* rstrides) {
  using A = typename Acc<T>::type;
  index_t rows = 1, reduce = 1;
  for (int d = 0; d + 1 < nk; ++d) rows *= kshape[d];
  for (int d = 0; d < nr; ++d) reduce *= rshape[d];
  const index_t len = nk ? kshape[nk - 1] : 1, sl = nk ? kstrides[nk - 1] : 0;
  if (rows == 0 || len == 0) return;
  const index_t chunks = (len + kChunk - 1) / kChunk;
  // A contiguous innermost reduced dim (and a strided line) sums along x's rows instead.
  const bool along_reduced = nr > 0 && rstrides[nr - 1] == 1 && sl != 1 && rshape[nr - 1] >= 8;
  auto run = [&](index_t t0, index_t t1) {
    A acc[kChunk];
    for (index_t t = t0; t < t1; ++t) {
      const index_t r = t / chunks, q0 = (t % chunks) * kChunk, n = std::min(kChunk, len - q0);
      const T* base = x + row_offset(r, nk, kshape, kstrides) + q0 * sl;
      std::fill(acc, acc + n, A(0));
      if (along_reduced) {
        const index_t rl = rshape[nr - 1];
        for (index_t q = 0; q < n; ++q)
          each_offset(nr - 1, rshape, rstrides, [&](index_t off) {
            const T* p = base + q * sl + off;
            A s = 0;
            for (index_t i = 0; i < rl; ++i) s += static_cast<A>(p[i]);
            acc[q] += s;
          });
      } else {
        each_offset(nr, rshape, rstrides, [&](index_t off) {
          const T* p = base + off;
          for (index_t q = 0; q < n; ++q) acc[q] += static_cast<A>(p[q * sl]);
        });
      }
      T* dst = y + r * len + q0;
      for (index_t q = 0; q < n; ++q) dst[q] = static_cast<T>(acc[q]);
    }
  };
  const index_t tasks = rows * chunks, per_task = std::min(len, kChunk) * std::max<index_t>(reduce, 1);
  if (tasks * per_task <= kGrain) return run(0, tasks);
  parallel_for(tasks, std::max<index_t>(1, kGrain / per_task), run);
}

template <class T>
void bmm_typed(T* C, const T* A_, const T* B_, index_t batch, index_t M, index_t N, index_t K, index_t sa, index_t sb) {
  using A = typename Acc<T>::type;
  const index_t chunks = (N + kChunk - 1) / kChunk;
  auto run = [&](index_t t0, index_t t1) {
    A acc[kChunk];
    for (index_t t = t0; t < t1; ++t) {
      const index_t row = t / chunks, b = row / M, m = row % M;
      const index_t n0 = (t % chunks) * kChunk, n = std::min(kChunk, N - n0);
      const T* a = A_ + b * sa + m * K;
      const T* bk = B_ + b * sb + n0;
      std::fill(acc, acc + n, A(0));
      for (index_t k = 0; k < K; ++k, bk += N) {
        const A av = static_cast<A>(a[k]);
        for (index_t q = 0; q < n; ++q) acc[q] += av * static_cast<A>(bk[q]);
      }
      T* dst = C + row * N + n0;
      for (index_t q = 0; q < n; ++q) dst[q] = static_cast<T>(acc[q]);
    }
  };
  const index_t tasks = batch * M * chunks, per_task = std::min(N, kChunk) * std::max<index_t>(K, 1);
  if (tasks == 0) return;
  if (tasks * per_task <= kGrain) return run(0, tasks);
  parallel_for(tasks, std::max<index_t>(1, kGrain / per_task), run);
}

#define EINSUM_TYPES(X)                                                                           \
  X(DType::F32, float) X(DType::F64, double) X(DType::I8, std::int8_t) X(DType::U8, std::uint8_t) \
  X(DType::I16, std::int16_t) X(DType::U16, std::uint16_t) X(DType::I32, std::int32_t)            \
  X(DType::U32, std::uint32_t) X(DType::I64, std::int64_t) X(DType::U64, std::uint64_t)

}  // namespace

bool einsum_sum_supports(DType t) {
#define CASE(code, T) case code:
  switch (t) {
    EINSUM_TYPES(CASE)
    return true;
    default:
      return false;
  }
#undef CASE
}

bool einsum_bmm_supports(DType t) { return t != DType::F32 && einsum_sum_supports(t); }

void einsum_sum(void* y, const void* x, DType t, int nk, const index_t* kshape, const index_t* kstrides, int nr,
                const index_t* rshape, const index_t* rstrides) {
#define CASE(code, T)                                                                                                  \
  case code:                                                                                                           \
    return sum_typed(static_cast<T*>(y), static_cast<const T*>(x), nk, kshape, kstrides, nr, rshape, rstrides);
  switch (t) {
    EINSUM_TYPES(CASE)
    default:
      return;
  }
#undef CASE
}

void einsum_bmm(void* C, const void* A, const void* B, DType t, index_t batch, index_t M, index_t N, index_t K,
                index_t a_batch_stride, index_t b_batch_stride) {
#define CASE(code, T)                                                                                                  \
  case code:                                                                                                           \
    return bmm_typed(static_cast<T*>(C), static_cast<const T*>(A), static_cast<const T*>(B), batch, M, N, K,           \
                     a_batch_stride, b_batch_stride);
  switch (t) {
    EINSUM_TYPES(CASE)
    default:
      return;
  }
#undef CASE
}

}  // namespace engine
