// Internal to the pooling family: per-ISA row kernels (pool_impl.h built by pool_rows.cpp,
// pool_rows_avx2.cpp, pool_rows_avx512.cpp). Not a public header.
#pragma once

#include "engine/common.h"

namespace engine::poolk {

struct PoolArgs {
  const float* x;  // one image, H×W×C
  index_t H, W, C;
  index_t KH, KW, sh, sw, dh, dw, pt, pl, pb, pr;
  index_t OW;
  bool count_include_pad;
};

#define ENGINE_POOL_DECL(isa)                                                          \
  void max_rows_##isa(float* y, const PoolArgs& a, index_t oh0, index_t oh1);          \
  void avg_rows_##isa(float* y, const PoolArgs& a, index_t oh0, index_t oh1);          \
  void gap_##isa(float* y, const float* x, index_t HW, index_t C, index_t c0, index_t c1);
ENGINE_POOL_DECL(portable)
ENGINE_POOL_DECL(avx2)
ENGINE_POOL_DECL(avx512)
#undef ENGINE_POOL_DECL

}  // namespace engine::poolk
