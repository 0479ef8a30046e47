// quant_matmul's small-M kernels and the dequantisation, written once over a few primitives and
// compiled per ISA: the including file defines QUANT_SIMD (0 scalar, 1 AVX2 vpmaddubsw,
// 2 AVX-512 VNNI vpdpbusd; both SIMD forms work on 256-bit vectors, one 32-value block per
// register, but for VNNI's one-row Q4_0/Q4_1 kernel, two) and includes this inside its namespace.
//
// A weight block's codes are unsigned bytes (Q4_0/Q4_1/Q4_K nibbles, Q6_K's 6-bit values) so
// the u8 x s8 instructions take them as they are; what the codes leave out (Q4_0's -8, Q6_K's
// -32, the minimums of Q4_1 and Q4_K) is a multiple of the x block's sum, added in a scalar.
// Q8_0's codes are signed: |w| times x carrying w's sign (llama.cpp's trick; under VNNI, x + 128
// against w, less 128 sum(w)).
// With 1-2 x rows each block's integer dot product (8 int32 lanes) is scaled by
// w_scale * x_scale into an f32 vector accumulator per row, its lanes summed once per output;
// from 3 rows (SIMD) the rows' dot products of a block are summed across into one vector,
// lane m = row m, and scaled together (wide_*).
//
// Dequantisation follows ggml's C reference operation for operation (the file is compiled
// with -ffp-contract=off so a*b+c is never fused), so it is bit-exact with quant_ref.py.

// ---- primitives -----------------------------------------------------------------------------
#if QUANT_SIMD
using Codes = __m256i;  // 32 unsigned codes
using IAcc = __m256i;   // 8 int32 partial dot products
using VAcc = __m256;    // 8 f32 partial sums

inline float load_f16(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}
inline VAcc vzero() { return _mm256_setzero_ps(); }
inline float hsum(VAcc v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline __m256i load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// Sums of u[i]*s[i] over each 4 consecutive bytes.
inline IAcc dot_u8s8(__m256i u, __m256i s) {
#if QUANT_SIMD == 2
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

// 16 bytes of nibbles -> values 0..15 (low nibbles) then 16..31 (high nibbles).
inline Codes codes_q4(const std::uint8_t* p) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i m = _mm_set1_epi8(0x0F);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m), _mm_and_si128(b, m));
}
// 32 bytes, the nibble at `shift` (0 or 4) of each.
inline Codes codes_q4k(const std::uint8_t* p, int shift) {
  return _mm256_and_si256(_mm256_srli_epi16(load32(p), shift), _mm256_set1_epi8(0x0F));
}
// Q6_K: low 4 bits from ql at ql_shift, high 2 bits from qh at qh_shift.
inline Codes codes_q6k(const std::uint8_t* ql, int ql_shift, const std::uint8_t* qh, int qh_shift) {
  const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(load32(ql), ql_shift), _mm256_set1_epi8(0x0F));
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(load32(qh), qh_shift), _mm256_set1_epi8(0x03));
  return _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
}

// 128 dot(u, q) + dot(u, lo) (XBlock's two parts).
inline IAcc dot(Codes u, const XBlock& x) {
#if QUANT_SIMD == 2
  return _mm256_dpbusd_epi32(_mm256_slli_epi32(dot_u8s8(u, load32(x.q)), kXLoShift), u, load32(x.lo));
#else
  return _mm256_add_epi32(_mm256_slli_epi32(dot_u8s8(u, load32(x.q)), kXLoShift), dot_u8s8(u, load32(x.lo)));
#endif
}
// One part's dot product with values 0..15 weighted by sa, 16..31 by sb.
inline IAcc dot_halves_part(Codes u, const std::int8_t* x, int sa, int sb) {
#if QUANT_SIMD == 2
  return _mm256_mullo_epi32(dot_u8s8(u, load32(x)), _mm256_set_epi32(sb, sb, sb, sb, sa, sa, sa, sa));
#else
  const __m256i scale = _mm256_set_m128i(_mm_set1_epi16(static_cast<short>(sb)), _mm_set1_epi16(static_cast<short>(sa)));
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, load32(x)), scale);
#endif
}
// Both parts (|lane| < 2^30; a sum of 8 lanes might not fit: wide_q6_k sums the parts apart).
inline IAcc dot_halves(Codes u, const XBlock& x, int sa, int sb) {
  return _mm256_add_epi32(_mm256_slli_epi32(dot_halves_part(u, x.q, sa, sb), kXLoShift),
                          dot_halves_part(u, x.lo, sa, sb));
}
// Q8_0: signed codes.
#if QUANT_SIMD == 2
// x + 128 (x ^ 0x80) is unsigned, so vpdpbusd takes w as it is: sum((x + 128) w) starting from
// -128 sum(w), computed once per block for every row (vpsignb has no EVEX form, and the 16
// registers it can reach spill with 8 rows).
struct SignedCodes {
  __m256i w, start;
};
inline SignedCodes codes_s8(const std::uint8_t* p) {
  const __m256i w = load32(p);
  const __m256i sum128 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(static_cast<char>(0x80)), w);
  return {w, _mm256_sub_epi32(_mm256_setzero_si256(), sum128)};
}
inline IAcc dot(const SignedCodes& c, const XBlock& x) {
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const __m256i hi = _mm256_dpbusd_epi32(c.start, _mm256_xor_si256(load32(x.q), flip), c.w);
  return _mm256_dpbusd_epi32(_mm256_add_epi32(_mm256_slli_epi32(hi, kXLoShift), c.start),
                             _mm256_xor_si256(load32(x.lo), flip), c.w);
}
#else
struct SignedCodes {  // |w| times x with w's sign
  __m256i w, abs_w;
};
inline SignedCodes codes_s8(const std::uint8_t* p) {
  const __m256i w = load32(p);
  return {w, _mm256_abs_epi8(w)};
}
inline IAcc dot(const SignedCodes& c, const XBlock& x) {
  const __m256i hi = dot_u8s8(c.abs_w, _mm256_sign_epi8(load32(x.q), c.w));
  return _mm256_add_epi32(_mm256_slli_epi32(hi, kXLoShift), dot_u8s8(c.abs_w, _mm256_sign_epi8(load32(x.lo), c.w)));
}
#endif
inline void fma_acc(VAcc& acc, float scale, IAcc lanes) {
  acc = _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(lanes), acc);
}

#else  // scalar
struct Codes {
  std::uint8_t v[32];
};
using IAcc = std::int64_t;
using VAcc = float;

inline float load_f16(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return half_bits_to_float(h);
}
inline VAcc vzero() { return 0.f; }
inline float hsum(VAcc v) { return v; }

inline Codes codes_q4(const std::uint8_t* p) {
  Codes c;
  for (int i = 0; i < 16; ++i) c.v[i] = p[i] & 0x0F, c.v[i + 16] = p[i] >> 4;
  return c;
}
inline Codes codes_q4k(const std::uint8_t* p, int shift) {
  Codes c;
  for (int i = 0; i < 32; ++i) c.v[i] = (p[i] >> shift) & 0x0F;
  return c;
}
inline Codes codes_q6k(const std::uint8_t* ql, int ql_shift, const std::uint8_t* qh, int qh_shift) {
  Codes c;
  for (int i = 0; i < 32; ++i)
    c.v[i] = static_cast<std::uint8_t>(((ql[i] >> ql_shift) & 0x0F) | (((qh[i] >> qh_shift) & 3) << 4));
  return c;
}
inline int xv(const XBlock& x, int i) { return x.q[i] * (1 << kXLoShift) + x.lo[i]; }
inline IAcc dot(const Codes& u, const XBlock& x) {
  std::int32_t s = 0;
  for (int i = 0; i < 32; ++i) s += u.v[i] * xv(x, i);
  return s;
}
inline IAcc dot_halves(const Codes& u, const XBlock& x, int sa, int sb) {
  std::int64_t a = 0, b = 0;  // 16 * 63 * 16320 * 128 twice: past int32
  for (int i = 0; i < 16; ++i) a += u.v[i] * xv(x, i), b += u.v[i + 16] * xv(x, i + 16);
  return static_cast<IAcc>(sa * a + sb * b);
}
struct SignedCodes {
  const std::int8_t* w;
};
inline SignedCodes codes_s8(const std::uint8_t* p) { return {reinterpret_cast<const std::int8_t*>(p)}; }
inline IAcc dot(const SignedCodes& c, const XBlock& x) {
  std::int32_t s = 0;
  for (int i = 0; i < 32; ++i) s += c.w[i] * xv(x, i);
  return s;
}
inline void fma_acc(VAcc& acc, float scale, IAcc lanes) { acc += scale * static_cast<float>(lanes); }
#endif

// ---- one weight row against MR quantised x rows ---------------------------------------------
// x[m] is x row m's blocks; out[m] = the row's dot product with it.
template <int MR>
struct Sums {
  VAcc v[MR];
  float s[MR];  // the scalar terms (offsets, minimums)
  Sums() {
    for (int m = 0; m < MR; ++m) v[m] = vzero(), s[m] = 0.f;
  }
};

// block(i, sums) adds 32-value chunk i of the row. With few rows, even and odd chunks go to two
// sets of sums, so consecutive chunks' FMAs do not wait on each other (latency, not throughput,
// bounds one row otherwise); with more rows there are enough independent sums already.
template <int MR, class Block>
void run_chunks(index_t count, float* out, Block&& block) {
  constexpr bool dual = MR <= 2;
  Sums<MR> a, b;
  index_t i = 0;
  if (dual)
    for (; i + 1 < count; i += 2) {
      block(i, a);
      block(i + 1, b);
    }
  for (; i < count; ++i) block(i, a);
  for (int m = 0; m < MR; ++m) out[m] = hsum(a.v[m]) + a.s[m] + (dual ? hsum(b.v[m]) + b.s[m] : 0.f);
}

template <int MR>
void row_q4_0(const std::uint8_t* w, index_t nb, const XBlock* const* x, const float*, float* out) {
  run_chunks<MR>(nb, out, [&](index_t b, Sums<MR>& acc) {
    const std::uint8_t* p = w + 18 * b;
    const float d = load_f16(p), off = -8.f * d;
    const Codes u = codes_q4(p + 2);
    for (int m = 0; m < MR; ++m) {
      const XBlock& xb = x[m][b];
      fma_acc(acc.v[m], d * xb.d, dot(u, xb));
      acc.s[m] += off * xb.s;
    }
  });
}

template <int MR>
void row_q4_1(const std::uint8_t* w, index_t nb, const XBlock* const* x, const float*, float* out) {
  run_chunks<MR>(nb, out, [&](index_t b, Sums<MR>& acc) {
    const std::uint8_t* p = w + 20 * b;
    const float d = load_f16(p), mn = load_f16(p + 2);
    const Codes u = codes_q4(p + 4);
    for (int m = 0; m < MR; ++m) {
      const XBlock& xb = x[m][b];
      fma_acc(acc.v[m], d * xb.d, dot(u, xb));
      acc.s[m] += mn * xb.s;
    }
  });
}

template <int MR>
void row_q8_0(const std::uint8_t* w, index_t nb, const XBlock* const* x, const float*, float* out) {
  run_chunks<MR>(nb, out, [&](index_t b, Sums<MR>& acc) {
    const std::uint8_t* p = w + 34 * b;
    const float d = load_f16(p);
    const SignedCodes c = codes_s8(p + 2);
    for (int m = 0; m < MR; ++m) fma_acc(acc.v[m], d * x[m][b].d, dot(c, x[m][b]));
  });
}

template <int MR>
void row_q4_k(const std::uint8_t* w, index_t nb, const XBlock* const* x, const float*, float* out) {
  run_chunks<MR>(nb, out, [&](index_t i, Sums<MR>& acc) {
    const std::uint8_t* p = w + 144 * (i / 8);
    const int c = static_cast<int>(i % 8);
    int sc, mn;
    k4_scale_min(p + 4, c, sc, mn);
    const float ws = load_f16(p) * static_cast<float>(sc), wm = -load_f16(p + 2) * static_cast<float>(mn);
    const Codes u = codes_q4k(p + 16 + 32 * (c / 2), 4 * (c & 1));
    for (int m = 0; m < MR; ++m) {
      const XBlock& xb = x[m][i];
      fma_acc(acc.v[m], ws * xb.d, dot(u, xb));
      acc.s[m] += wm * xb.s;
    }
  });
}

template <int MR>
void row_q6_k(const std::uint8_t* w, index_t nb, const XBlock* const* x, const float*, float* out) {
  run_chunks<MR>(nb, out, [&](index_t i, Sums<MR>& acc) {
    const std::uint8_t* p = w + 210 * (i / 8);
    const int h = static_cast<int>(i % 8) / 4, k = static_cast<int>(i % 4);
    const std::int8_t* scales = reinterpret_cast<const std::int8_t*>(p + 192);
    const int sa = scales[8 * h + 2 * k], sb = scales[8 * h + 2 * k + 1];
    const float d = load_f16(p + 208);
    const Codes u = codes_q6k(p + 64 * h + 32 * (k & 1), 4 * (k >> 1), p + 128 + 32 * h, 2 * k);
    for (int m = 0; m < MR; ++m) {
      const XBlock& xb = x[m][i];
      const float s = d * xb.d;
      fma_acc(acc.v[m], s, dot_halves(u, xb, sa, sb));
      acc.s[m] -= s * (32.f * (static_cast<float>(sa) * static_cast<float>(xb.sum16[0]) +
                                       static_cast<float>(sb) * static_cast<float>(xb.sum16[1])));
    }
  });
}

// F16 / BF16 weights against f32 x rows (K values each).
#if QUANT_SIMD
inline __m256 load8_f16(const std::uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256 load8_bf16(const std::uint16_t* p) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
#endif
inline float scalar_f16(std::uint16_t h) { return half_bits_to_float(h); }
inline float scalar_bf16(std::uint16_t h) {
  const std::uint32_t b = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

template <int MR, bool BF16>
void row_half(const std::uint16_t* w, index_t K, const float* const* x, float* out) {
  index_t k = 0;
  float tail[MR];
  for (int m = 0; m < MR; ++m) tail[m] = 0.f;
#if QUANT_SIMD
  __m256 acc[MR];
  for (int m = 0; m < MR; ++m) acc[m] = _mm256_setzero_ps();
  for (; k + 8 <= K; k += 8) {
    const __m256 wv = BF16 ? load8_bf16(w + k) : load8_f16(w + k);
    for (int m = 0; m < MR; ++m) acc[m] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[m] + k), acc[m]);
  }
  for (int m = 0; m < MR; ++m) tail[m] = hsum(acc[m]);
#endif
  for (; k < K; ++k) {
    const float wk = BF16 ? scalar_bf16(w[k]) : scalar_f16(w[k]);
    for (int m = 0; m < MR; ++m) tail[m] += wk * x[m][k];
  }
  for (int m = 0; m < MR; ++m) out[m] = tail[m];
}


#if QUANT_SIMD
// ---- several rows at once: one vector holds all rows' dot products of a block --------------
// The rows' int32 lanes are summed across (hadd) into one vector, lane m = row m, and scaled
// by the block's weight scale times the rows' x scales (xs, gathered by quant.cpp) in one FMA:
// per block and row that is one dot product and a fraction of the reduction, against a scalar
// multiply, broadcast, conversion and FMA each when rows have their own accumulators.
inline __m256i sum_lanes8(const __m256i* p) {  // lane j = the sum of p[j]'s lanes
  const __m256i a = _mm256_hadd_epi32(p[0], p[1]), b = _mm256_hadd_epi32(p[2], p[3]);
  const __m256i c = _mm256_hadd_epi32(p[4], p[5]), d = _mm256_hadd_epi32(p[6], p[7]);
  const __m256i ab = _mm256_hadd_epi32(a, b), cd = _mm256_hadd_epi32(c, d);  // 128-bit halves apart
  return _mm256_add_epi32(_mm256_permute2x128_si256(ab, cd, 0x20), _mm256_permute2x128_si256(ab, cd, 0x31));
}

struct WideSums {
  __m256 v = _mm256_setzero_ps(), s = _mm256_setzero_ps();
  void store(int mr, float* out) const {
    alignas(32) float t[8];
    _mm256_store_ps(t, _mm256_add_ps(v, s));
    for (int m = 0; m < mr; ++m) out[m] = t[m];
  }
};

// acc.v += dot * (ws * d_x); acc.s += wm * s_x (the minimum / offset term).
template <int MR, class Dot>
inline void wide_block(WideSums& acc, const float* xs, float ws, float wm, Dot&& dot) {
  __m256i p[8];
  for (int m = 0; m < 8; ++m) p[m] = m < MR ? dot(m) : _mm256_setzero_si256();
  const __m256 f = _mm256_cvtepi32_ps(sum_lanes8(p));
  acc.v = _mm256_fmadd_ps(f, _mm256_mul_ps(_mm256_set1_ps(ws), _mm256_loadu_ps(xs)), acc.v);
  acc.s = _mm256_fmadd_ps(_mm256_set1_ps(wm), _mm256_loadu_ps(xs + 8), acc.s);
}

template <int MR>
void wide_q4_0(const std::uint8_t* w, index_t nb, const XBlock* const* x, const float* xs, float* out) {
  WideSums acc;
  for (index_t b = 0; b < nb; ++b, w += 18, xs += 32) {
    const float d = load_f16(w);
    const Codes u = codes_q4(w + 2);
    wide_block<MR>(acc, xs, d, -8.f * d, [&](int m) { return dot(u, x[m][b]); });
  }
  acc.store(MR, out);
}

template <int MR>
void wide_q4_1(const std::uint8_t* w, index_t nb, const XBlock* const* x, const float* xs, float* out) {
  WideSums acc;
  for (index_t b = 0; b < nb; ++b, w += 20, xs += 32) {
    const Codes u = codes_q4(w + 4);
    wide_block<MR>(acc, xs, load_f16(w), load_f16(w + 2), [&](int m) { return dot(u, x[m][b]); });
  }
  acc.store(MR, out);
}

template <int MR>
void wide_q8_0(const std::uint8_t* w, index_t nb, const XBlock* const* x, const float* xs, float* out) {
  WideSums acc;
  for (index_t b = 0; b < nb; ++b, w += 34, xs += 32) {
    const SignedCodes c = codes_s8(w + 2);
    wide_block<MR>(acc, xs, load_f16(w), 0.f, [&](int m) { return dot(c, x[m][b]); });
  }
  acc.store(MR, out);
}

template <int MR>
void wide_q4_k(const std::uint8_t* w, index_t nb, const XBlock* const* x, const float* xs, float* out) {
  WideSums acc;
  for (index_t i = 0; i < nb; ++i, xs += 32) {
    const std::uint8_t* p = w + 144 * (i / 8);
    const int c = static_cast<int>(i % 8);
    int sc, mn;
    k4_scale_min(p + 4, c, sc, mn);
    const Codes u = codes_q4k(p + 16 + 32 * (c / 2), 4 * (c & 1));
    wide_block<MR>(acc, xs, load_f16(p) * static_cast<float>(sc), -load_f16(p + 2) * static_cast<float>(mn),
                   [&](int m) { return dot(u, x[m][i]); });
  }
  acc.store(MR, out);
}

template <int MR>
void wide_q6_k(const std::uint8_t* w, index_t nb, const XBlock* const* x, const float* xs, float* out) {
  WideSums acc;
  for (index_t i = 0; i < nb; ++i, xs += 32) {
    const std::uint8_t* p = w + 210 * (i / 8);
    const int h = static_cast<int>(i % 8) / 4, k = static_cast<int>(i % 4);
    const std::int8_t* scales = reinterpret_cast<const std::int8_t*>(p + 192);
    const int sa = scales[8 * h + 2 * k], sb = scales[8 * h + 2 * k + 1];
    const Codes u = codes_q6k(p + 64 * h + 32 * (k & 1), 4 * (k >> 1), p + 128 + 32 * h, 2 * k);
    __m256i q[8], lo[8];
    for (int m = 0; m < 8; ++m) {
      q[m] = m < MR ? dot_halves_part(u, x[m][i].q, sa, sb) : _mm256_setzero_si256();
      lo[m] = m < MR ? dot_halves_part(u, x[m][i].lo, sa, sb) : _mm256_setzero_si256();
    }
    const __m256 dots = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum_lanes8(q)), _mm256_set1_ps(1 << kXLoShift),
                                        _mm256_cvtepi32_ps(sum_lanes8(lo)));
    const __m256 scale = _mm256_mul_ps(_mm256_set1_ps(load_f16(p + 208)), _mm256_loadu_ps(xs));  // d * d_x
    // -32 * (sa * sum16[0] + sb * sum16[1]) per row
    const __m256 off = _mm256_fmadd_ps(_mm256_set1_ps(-32.f * static_cast<float>(sa)), _mm256_loadu_ps(xs + 16),
                                       _mm256_mul_ps(_mm256_set1_ps(-32.f * static_cast<float>(sb)), _mm256_loadu_ps(xs + 24)));
    acc.v = _mm256_fmadd_ps(_mm256_add_ps(dots, off), scale, acc.v);
  }
  acc.store(MR, out);
}
#endif

#if QUANT_SIMD == 2
// ---- one x row, Q4_0 / Q4_1, two blocks per 512-bit vector ----------------------------------
// Decode's case: instruction-bound per block, so the pair shares every vector instruction
// (code unpacking, the dot product, conversion, FMA) and its four f16 scales convert in one.
template <bool Q41>
void pair_q4(const std::uint8_t* w, index_t nb, const XBlock* const* xr, const float*, float* out) {
  constexpr index_t kBytes = Q41 ? 20 : 18, kCodes = Q41 ? 4 : 2;
  const XBlock* x = xr[0];
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m512i lane_pairs = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  __m128 acc_s = _mm_setzero_ps();  // lanes 1 and 3: the minimum / offset terms
  index_t b = 0;
  auto pair = [&](index_t b, __m512& acc) {
    const std::uint8_t* p = w + kBytes * b;
    const __m256i nib = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + kCodes))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + kBytes + kCodes)), 1);
    const __m256i lo = _mm256_and_si256(nib, low4), hi = _mm256_and_si256(_mm256_srli_epi16(nib, 4), low4);
    // [lo b, lo b+1, hi b, hi b+1] -> [lo b, hi b, lo b+1, hi b+1]: each block's 32 codes in order
    const __m512i codes = _mm512_shuffle_i64x2(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1),
                                               _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1),
                                               _MM_SHUFFLE(3, 1, 2, 0));
    const __m512i xq = _mm512_inserti64x4(_mm512_castsi256_si512(load32(x[b].q)), load32(x[b + 1].q), 1);
    const __m512i xlo = _mm512_inserti64x4(_mm512_castsi256_si512(load32(x[b].lo)), load32(x[b + 1].lo), 1);
    const __m512i dots = _mm512_dpbusd_epi32(
        _mm512_slli_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), codes, xq), kXLoShift), codes, xlo);
    std::uint32_t s0, s1;  // (d, m) of each block, or (d, junk) for Q4_0
    std::memcpy(&s0, p, 4);
    std::memcpy(&s1, p + kBytes, 4);
    __m128 dm = _mm_cvtph_ps(_mm_set_epi32(0, 0, static_cast<int>(s1), static_cast<int>(s0)));
    if (!Q41) dm = _mm_mul_ps(_mm_moveldup_ps(dm), _mm_set_ps(-8.f, 1.f, -8.f, 1.f));  // (d, -8d)
    const __m128 xds = _mm_castpd_ps(_mm_loadh_pd(_mm_load_sd(reinterpret_cast<const double*>(&x[b].d)),
                                                  reinterpret_cast<const double*>(&x[b + 1].d)));  // (d, s) x2
    const __m128 prod = _mm_mul_ps(dm, xds);
    acc_s = _mm_add_ps(acc_s, prod);
    const __m512 scale = _mm512_permutexvar_ps(lane_pairs, _mm512_castps128_ps512(prod));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), scale, acc);
  };
  for (; b + 3 < nb; b += 4) {
    pair(b, acc0);
    pair(b + 2, acc1);
  }
  for (; b + 1 < nb; b += 2) pair(b, acc0);
  float tail = 0.f;
  if (b < nb) {  // an odd block out
    const XBlock* xt[1] = {x + b};
    (Q41 ? row_q4_1<1> : row_q4_0<1>)(w + kBytes * b, 1, xt, nullptr, &tail);
  }
  alignas(16) float s[4];
  _mm_store_ps(s, acc_s);
  out[0] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + s[1] + s[3] + tail;
}
#endif

// ---- the row loop ---------------------------------------------------------------------------
using QuantRowFn = void (*)(const std::uint8_t*, index_t, const XBlock* const*, const float*, float*);
using HalfRowFn = void (*)(const std::uint16_t*, index_t, const float* const*, float*);

// From this many rows on, the SIMD kernels sum rows across (wide_*).
constexpr int kWideRows = 3;

template <int MR>
QuantRowFn quant_row_fn(QuantType t) {
#if QUANT_SIMD == 2
  if (MR == 1 && t == QuantType::Q4_0) return pair_q4<false>;
  if (MR == 1 && t == QuantType::Q4_1) return pair_q4<true>;
#endif
#if QUANT_SIMD
  if (MR >= kWideRows) switch (t) {
      case QuantType::Q4_0: return wide_q4_0<MR>;
      case QuantType::Q4_1: return wide_q4_1<MR>;
      case QuantType::Q8_0: return wide_q8_0<MR>;
      case QuantType::Q4_K: return wide_q4_k<MR>;
      case QuantType::Q6_K: return wide_q6_k<MR>;
      default: return nullptr;
    }
#endif
  switch (t) {
    case QuantType::Q4_0: return row_q4_0<MR>;
    case QuantType::Q4_1: return row_q4_1<MR>;
    case QuantType::Q8_0: return row_q8_0<MR>;
    case QuantType::Q4_K: return row_q4_k<MR>;
    case QuantType::Q6_K: return row_q6_k<MR>;
    default: return nullptr;
  }
}
template <int MR>
HalfRowFn half_row_fn(QuantType t) {
  return t == QuantType::BF16 ? row_half<MR, true> : row_half<MR, false>;
}

template <class Fn>
Fn pick(QuantType t, int mr, Fn (*const* table)(QuantType)) {
  return table[mr - 1](t);
}

constexpr QuantRowFn (*kQuantRowFns[])(QuantType) = {quant_row_fn<1>, quant_row_fn<2>, quant_row_fn<3>, quant_row_fn<4>,
                                                    quant_row_fn<5>, quant_row_fn<6>, quant_row_fn<7>, quant_row_fn<8>};
constexpr HalfRowFn (*kHalfRowFns[])(QuantType) = {half_row_fn<1>, half_row_fn<2>, half_row_fn<3>, half_row_fn<4>,
                                                  half_row_fn<5>, half_row_fn<6>, half_row_fn<7>, half_row_fn<8>};
static_assert(sizeof(kQuantRowFns) / sizeof(kQuantRowFns[0]) == kMaxRowsPerPass, "one kernel per row count");

inline void store(const QuantRows& a, index_t m0, int mr, index_t n, const float* out) {
  for (int m = 0; m < mr; ++m) {
    float* y = a.y + (m0 + m) * a.ldy + n;
    *y = a.accumulate ? *y + out[m] : out[m];
  }
}

void matmul_rows(const QuantRows& a, index_t n0, index_t n1) {
  const bool half = a.type == QuantType::F16 || a.type == QuantType::BF16;
  const int full = static_cast<int>(std::min<index_t>(a.M, kMaxRowsPerPass));
  const int rest = static_cast<int>(a.M % kMaxRowsPerPass);
  const index_t nb = a.K / kXBlock;
  float out[kMaxRowsPerPass];
  if (half) {
    const HalfRowFn f_full = pick(a.type, full, kHalfRowFns), f_rest = rest ? pick(a.type, rest, kHalfRowFns) : nullptr;
    const float* xr[kMaxRowsPerPass];
    for (index_t n = n0; n < n1; ++n) {  // n outside: the weight row stays in L1 across passes
      const std::uint16_t* w = reinterpret_cast<const std::uint16_t*>(a.w + n * a.row_bytes);
      for (index_t m0 = 0; m0 < a.M; m0 += kMaxRowsPerPass) {
        const int mr = static_cast<int>(std::min<index_t>(kMaxRowsPerPass, a.M - m0));
        for (int m = 0; m < mr; ++m) xr[m] = a.x + (m0 + m) * a.ldx;
        (mr == full ? f_full : f_rest)(w, a.K, xr, out);
        store(a, m0, mr, n, out);
      }
    }
    return;
  }
  const QuantRowFn f_full = pick(a.type, full, kQuantRowFns), f_rest = rest ? pick(a.type, rest, kQuantRowFns) : nullptr;
  const XBlock* xr[kMaxRowsPerPass];
  for (index_t n = n0; n < n1; ++n) {
    const std::uint8_t* w = a.w + n * a.row_bytes;
    for (index_t m0 = 0; m0 < a.M; m0 += kMaxRowsPerPass) {
      const int mr = static_cast<int>(std::min<index_t>(kMaxRowsPerPass, a.M - m0));
      for (int m = 0; m < mr; ++m) xr[m] = a.xq + (m0 + m) * a.xq_ld;
      (mr == full ? f_full : f_rest)(w, nb, xr, a.xs + m0 / kMaxRowsPerPass * nb * 32, out);
      store(a, m0, mr, n, out);
    }
  }
}

// ---- dequantisation (ggml's reference arithmetic) -------------------------------------------
// 32 small integers (signed bytes) to floats: v * a (v * a2 for the last 16), then + b
// (kAdd) or - b (kSub) as its own rounding step, as the reference does. No "+ 0" for the
// types without an offset: it would turn a -0 into +0.
enum Offset { kNone, kAdd, kSub };

#if QUANT_SIMD
template <Offset O>
inline void store32(float* out, __m256i v, float a, float a2, float b) {
  const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
  const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
  for (int j = 0; j < 4; ++j) {
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[j])), _mm256_set1_ps(j < 2 ? a : a2));
    if (O == kAdd) f = _mm256_add_ps(f, _mm256_set1_ps(b));
    if (O == kSub) f = _mm256_sub_ps(f, _mm256_set1_ps(b));
    _mm256_storeu_ps(out + 8 * j, f);
  }
}
inline __m256i as_vector(Codes c) { return c; }
inline __m256i minus(Codes c, int k) { return _mm256_sub_epi8(c, _mm256_set1_epi8(static_cast<char>(k))); }
#else
template <Offset O>
inline void store32(float* out, const std::int8_t* v, float a, float a2, float b) {
  for (int l = 0; l < 32; ++l) {
    float f = static_cast<float>(v[l]) * (l < 16 ? a : a2);
    if (O == kAdd) f = f + b;
    if (O == kSub) f = f - b;
    out[l] = f;
  }
}
struct Bytes {
  std::int8_t v[32];
  operator const std::int8_t*() const { return v; }
};
inline Bytes as_vector(const Codes& c) {
  Bytes b;
  for (int l = 0; l < 32; ++l) b.v[l] = static_cast<std::int8_t>(c.v[l]);
  return b;
}
inline Bytes minus(const Codes& c, int k) {
  Bytes b;
  for (int l = 0; l < 32; ++l) b.v[l] = static_cast<std::int8_t>(c.v[l] - k);
  return b;
}
#endif

void dequantize_rows(const std::uint8_t* w, QuantType t, index_t K, index_t rows, float* out) {
  const index_t n = K * rows;  // rows are contiguous in w, so the blocks run straight through
  switch (t) {
    case QuantType::F32: std::memcpy(out, w, static_cast<size_t>(n) * 4); return;
    case QuantType::F16: half_to_float(out, reinterpret_cast<const std::uint16_t*>(w), n); return;
    case QuantType::BF16:
      for (index_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, w + 2 * i, 2);
        out[i] = scalar_bf16(h);
      }
      return;
    case QuantType::Q4_0:  // (q - 8) * d
      for (index_t b = 0; b < n / 32; ++b, w += 18, out += 32) {
        const float d = load_f16(w);
        store32<kNone>(out, minus(codes_q4(w + 2), 8), d, d, 0.f);
      }
      return;
    case QuantType::Q4_1:  // q * d + m
      for (index_t b = 0; b < n / 32; ++b, w += 20, out += 32) {
        const float d = load_f16(w);
        store32<kAdd>(out, as_vector(codes_q4(w + 4)), d, d, load_f16(w + 2));
      }
      return;
    case QuantType::Q8_0:  // q * d
      for (index_t b = 0; b < n / 32; ++b, w += 34, out += 32) {
        const float d = load_f16(w);
#if QUANT_SIMD
        store32<kNone>(out, load32(w + 2), d, d, 0.f);
#else
        store32<kNone>(out, reinterpret_cast<const std::int8_t*>(w + 2), d, d, 0.f);
#endif
      }
      return;
    case QuantType::Q4_K:  // (d * sc) * q - (dmin * m)
      for (index_t b = 0; b < n / 256; ++b, w += 144) {
        const float d = load_f16(w), dmin = load_f16(w + 2);
        for (int c = 0; c < 8; ++c, out += 32) {
          int sc, mn;
          k4_scale_min(w + 4, c, sc, mn);
          const float ds = d * static_cast<float>(sc), dm = dmin * static_cast<float>(mn);
          store32<kSub>(out, as_vector(codes_q4k(w + 16 + 32 * (c / 2), 4 * (c & 1))), ds, ds, dm);
        }
      }
      return;
    case QuantType::Q6_K:  // (d * scale) * (q - 32), one scale per 16 values
      for (index_t b = 0; b < n / 256; ++b, w += 210) {
        const std::int8_t* scales = reinterpret_cast<const std::int8_t*>(w + 192);
        const float d = load_f16(w + 208);
        for (int h = 0; h < 2; ++h)
          for (int k = 0; k < 4; ++k, out += 32) {
            const Codes u = codes_q6k(w + 64 * h + 32 * (k & 1), 4 * (k >> 1), w + 128 + 32 * h, 2 * k);
            store32<kNone>(out, minus(u, 32), d * static_cast<float>(scales[8 * h + 2 * k]),
                           d * static_cast<float>(scales[8 * h + 2 * k + 1]), 0.f);
          }
      }
      return;
  }
  throw Error(std::string("quant: no dequantisation for weight type ") + quant_type_name(t));
}
