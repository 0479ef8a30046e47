// Einsum kernels: ISA dispatch (the kernels are einsum_impl.h, compiled per ISA).
#include "engine/einsum.h"

#include "engine/cpu_features.h"

namespace engine {

#define EINSUM_DECLARE(ns)                                                                                    \
  namespace ns {                                                                                              \
  void sum(void* y, const void* x, DType t, int nk, const index_t* kshape, const index_t* kstrides, int nr,   \
           const index_t* rshape, const index_t* rstrides);                                                   \
  void bmm(void* C, const void* A, const void* B, DType t, index_t batch, index_t M, index_t N, index_t K,    \
           index_t a_batch_stride, index_t b_batch_stride);                                                   \
  }
EINSUM_DECLARE(es_avx512)
EINSUM_DECLARE(es_avx2)
EINSUM_DECLARE(es_portable)
#undef EINSUM_DECLARE

bool einsum_sum_supports(DType t) {
  switch (t) {
    case DType::F32: case DType::F64: case DType::I8: case DType::U8: case DType::I16: case DType::U16:
    case DType::I32: case DType::U32: case DType::I64: case DType::U64:
      return true;
    default:
      return false;
  }
}

bool einsum_bmm_supports(DType t) { return t != DType::F32 && einsum_sum_supports(t); }

void einsum_sum(void* y, const void* x, DType t, int nk, const index_t* kshape, const index_t* kstrides, int nr,
                const index_t* rshape, const index_t* rstrides) {
  switch (cpu_isa()) {
    case Isa::Avx512: return es_avx512::sum(y, x, t, nk, kshape, kstrides, nr, rshape, rstrides);
    case Isa::Avx2: return es_avx2::sum(y, x, t, nk, kshape, kstrides, nr, rshape, rstrides);
    default: return es_portable::sum(y, x, t, nk, kshape, kstrides, nr, rshape, rstrides);
  }
}

void einsum_bmm(void* C, const void* A, const void* B, DType t, index_t batch, index_t M, index_t N, index_t K,
                index_t a_batch_stride, index_t b_batch_stride) {
  switch (cpu_isa()) {
    case Isa::Avx512: return es_avx512::bmm(C, A, B, t, batch, M, N, K, a_batch_stride, b_batch_stride);
    case Isa::Avx2: return es_avx2::bmm(C, A, B, t, batch, M, N, K, a_batch_stride, b_batch_stride);
    default: return es_portable::bmm(C, A, B, t, batch, M, N, K, a_batch_stride, b_batch_stride);
  }
}

}  // namespace engine
