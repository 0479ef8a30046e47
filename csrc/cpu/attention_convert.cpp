// Float-type conversions (see attention_convert.h): float16 through engine/half.h, float64
// through plain loops the compiler vectorises.
#include "cpu/attention_convert.h"

#include <cstring>

#include "engine/half.h"
#include "engine/threadpool.h"

namespace engine {
namespace seq {

namespace {

template <class D, class S>
void cast_n(D* d, const S* s, index_t n) {
  for (index_t i = 0; i < n; ++i) d[i] = static_cast<D>(s[i]);
}

}  // namespace

void convert(void* dst, DType dt, const void* src, DType st, index_t n) {
  ENGINE_CHECK(is_float_type(dt) && is_float_type(st), "convert: float16/float32/float64 only");
  if (n <= 0) return;
  if (dt == st) {
    if (dst != src) std::memmove(dst, src, static_cast<size_t>(n) * dtype_size(dt));
    return;
  }
  using u16 = std::uint16_t;
  if (st == DType::F16 && dt == DType::F32) return half_to_float(static_cast<float*>(dst), static_cast<const u16*>(src), n);
  if (st == DType::F32 && dt == DType::F16) return float_to_half(static_cast<u16*>(dst), static_cast<const float*>(src), n);
  if (st == DType::F32 && dt == DType::F64) return cast_n(static_cast<double*>(dst), static_cast<const float*>(src), n);
  if (st == DType::F64 && dt == DType::F32) return cast_n(static_cast<float*>(dst), static_cast<const double*>(src), n);
  // float16 <-> float64 through float32 in chunks (exact one way; the other rounds twice,
  // which differs from a direct rounding only in rare halfway cases).
  constexpr index_t kChunk = 256;
  float buf[kChunk];
  for (index_t i = 0; i < n; i += kChunk) {
    const index_t m = n - i < kChunk ? n - i : kChunk;
    if (st == DType::F16) {
      half_to_float(buf, static_cast<const u16*>(src) + i, m);
      cast_n(static_cast<double*>(dst) + i, buf, m);
    } else {
      cast_n(buf, static_cast<const double*>(src) + i, m);
      float_to_half(static_cast<u16*>(dst) + i, buf, m);
    }
  }
}

void convert_parallel(void* dst, DType dt, const void* src, DType st, index_t n) {
  constexpr index_t kGrain = 1 << 16, kBlock = 64;
  if (n <= kGrain) return convert(dst, dt, src, st, n);
  const size_t ds = dtype_size(dt), ss = dtype_size(st);
  parallel_for((n + kBlock - 1) / kBlock, kGrain / kBlock, [&](index_t b0, index_t b1) {
    const index_t i0 = b0 * kBlock, i1 = b1 * kBlock < n ? b1 * kBlock : n;
    convert(static_cast<char*>(dst) + i0 * ds, dt, static_cast<const char*>(src) + i0 * ss, st, i1 - i0);
  });
}

}  // namespace seq
}  // namespace engine
