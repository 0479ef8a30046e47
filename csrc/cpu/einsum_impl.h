// Einsum's strided sum and batched product, written once and compiled per ISA:
// einsum_{avx512,avx2,portable}.cpp include this file inside their own namespace
// (engine::es_<isa>) after <algorithm>, <cstdint>, "engine/einsum.h" and
// "engine/threadpool.h"; einsum.cpp dispatches on cpu_isa(). Loops are written for the
// auto-vectoriser (axpy over contiguous rows, interleaved partial sums); integer sums run in
// a wide unsigned accumulator, which wraps exactly like numpy's same-type integer einsum.

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

// Sum of n contiguous values in 16 interleaved partial sums, so the loop vectorises
// without reassociating a single float chain.
template <class A, class T>
A sum_row(const T* __restrict p, index_t n) {
  constexpr int L = 16;
  A part[L] = {};
  index_t i = 0;
  for (; i + L <= n; i += L)
    for (int k = 0; k < L; ++k) part[k] += static_cast<A>(p[i + k]);
  A s = 0;
  for (; i < n; ++i) s += static_cast<A>(p[i]);
  for (int k = 0; k < L; ++k) s += part[k];
  return s;
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
          each_offset(nr - 1, rshape, rstrides, [&](index_t off) { acc[q] += sum_row<A>(base + q * sl + off, rl); });
      } else if (sl == 1) {
        each_offset(nr, rshape, rstrides, [&](index_t off) {
          const T* __restrict p = base + off;
          for (index_t q = 0; q < n; ++q) acc[q] += static_cast<A>(p[q]);
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
  // Tasks are blocks of kRows rows of C (within one batch) by kChunk columns: every row of B
  // loaded feeds kRows accumulator rows.
  constexpr index_t kRows = 4;
  const index_t chunks = (N + kChunk - 1) / kChunk, row_blocks = (M + kRows - 1) / kRows;
  auto run = [&](index_t t0, index_t t1) {
    A acc[kRows][kChunk];
    for (index_t t = t0; t < t1; ++t) {
      const index_t blk = t / chunks, b = blk / row_blocks, m0 = blk % row_blocks * kRows;
      const index_t rows = std::min(kRows, M - m0);
      const index_t n0 = (t % chunks) * kChunk, n = std::min(kChunk, N - n0);
      const T* a = A_ + b * sa + m0 * K;
      const T* bk = B_ + b * sb + n0;
      for (index_t r = 0; r < kRows; ++r) std::fill(acc[r], acc[r] + n, A(0));
      for (index_t k = 0; k < K; ++k, bk += N) {
        A av[kRows];
        for (index_t r = 0; r < kRows; ++r) av[r] = r < rows ? static_cast<A>(a[r * K + k]) : A(0);
        for (index_t q = 0; q < n; ++q) {
          const A bv = static_cast<A>(bk[q]);
          for (index_t r = 0; r < kRows; ++r) acc[r][q] += av[r] * bv;
        }
      }
      for (index_t r = 0; r < rows; ++r) {
        T* dst = C + (b * M + m0 + r) * N + n0;
        for (index_t q = 0; q < n; ++q) dst[q] = static_cast<T>(acc[r][q]);
      }
    }
  };
  const index_t tasks = batch * row_blocks * chunks, per_task = kRows * std::min(N, kChunk) * std::max<index_t>(K, 1);
  if (tasks == 0) return;
  if (tasks * per_task <= kGrain) return run(0, tasks);
  parallel_for(tasks, std::max<index_t>(1, kGrain / per_task), run);
}

#define EINSUM_TYPES(X)                                                                           \
  X(DType::F32, float) X(DType::F64, double) X(DType::I8, std::int8_t) X(DType::U8, std::uint8_t) \
  X(DType::I16, std::int16_t) X(DType::U16, std::uint16_t) X(DType::I32, std::int32_t)            \
  X(DType::U32, std::uint32_t) X(DType::I64, std::int64_t) X(DType::U64, std::uint64_t)

void sum(void* y, const void* x, DType t, int nk, const index_t* kshape, const index_t* kstrides, int nr,
         const index_t* rshape, const index_t* rstrides) {
#define CASE(code, T) \
  case code: return sum_typed(static_cast<T*>(y), static_cast<const T*>(x), nk, kshape, kstrides, nr, rshape, rstrides);
  switch (t) {
    EINSUM_TYPES(CASE)
    default: return;
  }
#undef CASE
}

void bmm(void* C, const void* A, const void* B, DType t, index_t batch, index_t M, index_t N, index_t K,
         index_t a_batch_stride, index_t b_batch_stride) {
#define CASE(code, T)                                                                                         \
  case code:                                                                                                  \
    return bmm_typed(static_cast<T*>(C), static_cast<const T*>(A), static_cast<const T*>(B), batch, M, N, K, \
                     a_batch_stride, b_batch_stride);
  switch (t) {
    EINSUM_TYPES(CASE)
    default: return;
  }
#undef CASE
}

#undef EINSUM_TYPES
