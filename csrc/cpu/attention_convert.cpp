// Float-type conversions (see attention_convert.h): portable float16 bit conversion, the F16C
// path chosen with cpu_isa(), float64 through plain loops the compiler vectorises.
#include "cpu/attention_convert.h"

#include <cstring>

#include "engine/cpu_features.h"
#include "engine/threadpool.h"

namespace engine {
namespace seq {

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);  // inf / NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal half: normalise
    exp = 113;
    while ((man & 0x400u) == 0) {
      man <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

std::uint16_t float_to_half(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u)  // inf or NaN (NaN stays quiet NaN)
    return static_cast<std::uint16_t>(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0u));
  if (ax >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (ax < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    if (ax < 0x33000000u) return sign;  // < 2^-25: rounds to 0
    const std::uint32_t e = ax >> 23, man = (ax & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126 - e;  // 14..24
    std::uint32_t h = man >> shift;
    const std::uint32_t rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return static_cast<std::uint16_t>(sign | h);
  }
  // Normal: rebias the exponent, round the mantissa to 10 bits (nearest even).
  std::uint32_t h = ((ax >> 13) - (112u << 10));
  const std::uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // may carry into the exponent: right
  return static_cast<std::uint16_t>(sign | h);
}

namespace {

void half_to_float_n(float* d, const std::uint16_t* s, index_t n) {
  if (cpu_isa() != Isa::Portable) return half_to_float_f16c(d, s, n);
  for (index_t i = 0; i < n; ++i) d[i] = half_to_float(s[i]);
}

void float_to_half_n(std::uint16_t* d, const float* s, index_t n) {
  if (cpu_isa() != Isa::Portable) return float_to_half_f16c(d, s, n);
  for (index_t i = 0; i < n; ++i) d[i] = float_to_half(s[i]);
}

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
  if (st == DType::F16 && dt == DType::F32) return half_to_float_n(static_cast<float*>(dst), static_cast<const u16*>(src), n);
  if (st == DType::F32 && dt == DType::F16) return float_to_half_n(static_cast<u16*>(dst), static_cast<const float*>(src), n);
  if (st == DType::F32 && dt == DType::F64) return cast_n(static_cast<double*>(dst), static_cast<const float*>(src), n);
  if (st == DType::F64 && dt == DType::F32) return cast_n(static_cast<float*>(dst), static_cast<const double*>(src), n);
  // float16 <-> float64 through float32 in chunks (exact one way; the other rounds twice,
  // which differs from a direct rounding only in rare halfway cases).
  constexpr index_t kChunk = 256;
  float buf[kChunk];
  for (index_t i = 0; i < n; i += kChunk) {
    const index_t m = n - i < kChunk ? n - i : kChunk;
    if (st == DType::F16) {
      half_to_float_n(buf, static_cast<const u16*>(src) + i, m);
      cast_n(static_cast<double*>(dst) + i, buf, m);
    } else {
      cast_n(buf, static_cast<const double*>(src) + i, m);
      float_to_half_n(static_cast<u16*>(dst) + i, buf, m);
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
