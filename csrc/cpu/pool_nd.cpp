// N-d pooling over NCHW planes (the ONNX layout): max (with optional argmax indices), average
// and Lp, for 1..3 spatial dims, plus the global reductions. The row kernels are compiled per
// ISA (pool_nd_impl.h) and chosen here; output rows (or planes) split over the pool when big.
#include <algorithm>
#include <type_traits>

#include "engine/cpu_features.h"
#include "engine/nchw.h"
#include "engine/threadpool.h"

namespace engine {

#define POOLND_DECLARE(NS)                                                                                   \
  namespace NS {                                                                                             \
  template <class T>                                                                                         \
  void rows(T* y, std::int64_t* idx, const T* x, index_t r0, index_t r1, const WindowND& g, const PoolParams& pp); \
  template <class T>                                                                                         \
  void global(T* y, const T* x, index_t p0, index_t p1, index_t size, bool is_max);                        \
  }
POOLND_DECLARE(pool_nd_avx512)
POOLND_DECLARE(pool_nd_avx2)
POOLND_DECLARE(pool_nd_portable)

namespace {

constexpr double kParallelWork = 2e5;  // taps read below which pooling stays on the caller

}  // namespace

template <class T>
void pool_nd(T* y, std::int64_t* indices, const T* x, index_t planes, const WindowND& g, const PoolParams& pp) {
  g.validate("pool");
  ENGINE_CHECK(planes >= 0, "pool: negative plane count");
  ENGINE_CHECK(pp.kind == PoolKind::Max || std::is_floating_point<T>::value,
               "pool: average and Lp pooling need a floating-point type");
  ENGINE_CHECK(pp.kind != PoolKind::Lp || pp.p >= 1, "pool: p must be >= 1");
  const index_t rows = planes * g.out[0] * g.out[1], OW = g.out[2];
  if (rows == 0 || OW == 0) return;
  const Isa isa = cpu_isa();
  auto fn = isa == Isa::Avx512 ? pool_nd_avx512::rows<T> : isa == Isa::Avx2 ? pool_nd_avx2::rows<T>
                                                                             : pool_nd_portable::rows<T>;
  const double row_work = double(OW) * double(g.k_size()) + 1;
  const index_t grain = std::max<index_t>(1, static_cast<index_t>(kParallelWork / row_work));
  if (rows <= grain) return fn(y, indices, x, 0, rows, g, pp);
  parallel_for(rows, grain, [&](std::int64_t r0, std::int64_t r1) { fn(y, indices, x, r0, r1, g, pp); });
}

template <class T>
void global_pool(T* y, const T* x, index_t planes, index_t size, bool is_max) {
  ENGINE_CHECK(planes >= 0 && size >= 1, "global_pool: bad sizes");
  const Isa isa = cpu_isa();
  auto fn = isa == Isa::Avx512 ? pool_nd_avx512::global<T> : isa == Isa::Avx2 ? pool_nd_avx2::global<T>
                                                                               : pool_nd_portable::global<T>;
  const index_t grain = std::max<index_t>(1, static_cast<index_t>(kParallelWork / double(size)));
  if (planes <= grain) return fn(y, x, 0, planes, size, is_max);
  parallel_for(planes, grain, [&](std::int64_t p0, std::int64_t p1) { fn(y, x, p0, p1, size, is_max); });
}

template void pool_nd<float>(float*, std::int64_t*, const float*, index_t, const WindowND&, const PoolParams&);
template void pool_nd<double>(double*, std::int64_t*, const double*, index_t, const WindowND&, const PoolParams&);
template void pool_nd<std::int8_t>(std::int8_t*, std::int64_t*, const std::int8_t*, index_t, const WindowND&,
                                   const PoolParams&);
template void pool_nd<std::uint8_t>(std::uint8_t*, std::int64_t*, const std::uint8_t*, index_t, const WindowND&,
                                    const PoolParams&);
template void global_pool<float>(float*, const float*, index_t, index_t, bool);
template void global_pool<double>(double*, const double*, index_t, index_t, bool);

}  // namespace engine
