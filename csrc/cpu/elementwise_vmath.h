// Float vector math shared by the elementwise kernels (elementwise_impl.h) and the math
// family's float32 kernels (math_f32_impl.h): the vector types over EW_W floats, loads and
// stores (masked for tails), lane helpers, and branch-free exp/expm1/log/log1p/sigmoid/tanh/erf
// (accuracy notes in elementwise_impl.h). Included inside a per-ISA namespace after EW_W and
// the standard headers; no includes here on purpose.

#ifndef EW_W
#error "define EW_W (vector width in floats) before including elementwise_vmath.h"
#endif

typedef float vf __attribute__((vector_size(EW_W * 4)));
typedef std::int32_t vi __attribute__((vector_size(EW_W * 4)));
typedef std::uint32_t vu __attribute__((vector_size(EW_W * 4)));

constexpr int W = EW_W;

// ---------------------------------------------------------------------------------------
// Loads, stores, lane helpers.

static inline vf splat(float f) {
  vf v;
  for (int k = 0; k < W; ++k) v[k] = f;
  return v;
}
static inline vi splati(std::int32_t f) {
  vi v;
  for (int k = 0; k < W; ++k) v[k] = f;
  return v;
}
static inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
static inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

static inline vi iota() {
  vi v;
  for (int k = 0; k < W; ++k) v[k] = k;
  return v;
}
// Lanes [0, cnt) active (0 < cnt <= W).
static inline vi lane_mask(index_t cnt) { return iota() < splati(static_cast<std::int32_t>(cnt)); }

// Loads cnt (< W) floats; the other lanes read as 0 and are never touched in memory.
static inline vf load_partial(const float* p, index_t cnt) {
#if EW_W == 16 && defined(__AVX512F__)
  return (vf)_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << cnt) - 1u), p);
#elif EW_W == 8 && defined(__AVX2__)
  return (vf)_mm256_maskload_ps(p, (__m256i)lane_mask(cnt));
#else
  vf v = splat(0.f);
  for (index_t k = 0; k < cnt; ++k) v[k] = p[k];
  return v;
#endif
}
static inline void store_partial(float* p, vf v, index_t cnt) {
#if EW_W == 16 && defined(__AVX512F__)
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << cnt) - 1u), (__m512)v);
#elif EW_W == 8 && defined(__AVX2__)
  _mm256_maskstore_ps(p, (__m256i)lane_mask(cnt), (__m256)v);
#else
  for (index_t k = 0; k < cnt; ++k) p[k] = v[k];
#endif
}

// vmax(a, b) == (a > b ? a : b), vmin(a, b) == (a < b ? a : b): exactly the x86 MAXPS /
// MINPS semantics (a NaN in either operand returns b), which the compiler does not infer.
static inline vf vmax(vf a, vf b) {
#if EW_W == 16 && defined(__AVX512F__)
  return (vf)_mm512_max_ps((__m512)a, (__m512)b);
#elif EW_W == 8 && defined(__AVX__)
  return (vf)_mm256_max_ps((__m256)a, (__m256)b);
#elif EW_W == 4 && defined(__SSE__)
  return (vf)_mm_max_ps((__m128)a, (__m128)b);
#else
  return a > b ? a : b;
#endif
}
static inline vf vmin(vf a, vf b) {
#if EW_W == 16 && defined(__AVX512F__)
  return (vf)_mm512_min_ps((__m512)a, (__m512)b);
#elif EW_W == 8 && defined(__AVX__)
  return (vf)_mm256_min_ps((__m256)a, (__m256)b);
#elif EW_W == 4 && defined(__SSE__)
  return (vf)_mm_min_ps((__m128)a, (__m128)b);
#else
  return a < b ? a : b;
#endif
}
static inline vf vabs(vf x) { return (vf)((vu)x & 0x7fffffffu); }
static inline vf vsign(vf x) { return (vf)((vu)x & (vu)splat(-0.f)); }  // sign bit only
static inline vf copysign_bits(vf mag, vf sign) { return (vf)((vu)mag | (vu)sign); }

static inline float hmax(vf v) {
  float m = v[0];
  for (int k = 1; k < W; ++k) m = v[k] > m ? v[k] : m;
  return m;
}
static inline float hsum(vf v) {
  // Pairwise, so the result does not depend on the compiler unrolling order.
  for (int h = W / 2; h >= 1; h /= 2)
    for (int k = 0; k < h; ++k) v[k] += v[k + h];
  return v[0];
}

// ---------------------------------------------------------------------------------------
// Math.

constexpr float kInf = __builtin_huge_valf();

// 2^n for integer n in [-126, 127] (as float bits).
static inline vf pow2i(vi n) { return (vf)((vu)(n + splati(127)) << 23); }

// exp(x): Cephes range reduction x = n·ln2 + r, |r| <= ln2/2, degree-6 polynomial, then
// the scale 2^n applied in two halves so results down to the denormal range are right.
static inline vf v_exp(vf x) {
  const vf magic = splat(12582912.f);  // 1.5·2^23: adding it rounds to an integer
  // Clamp (vmax(lo, x) keeps a NaN x: MAXPS returns its second operand on NaN).
  vf xc = vmin(splat(88.8f), vmax(splat(-104.f), x));
  vf t = xc * splat(1.44269504088896341f) + magic;
  vf n = t - magic;
  vf r = xc - n * splat(0.693359375f);
  r = r - n * splat(-2.12194440e-4f);
  vf z = r * r;
  vf p = splat(1.9875691500E-4f);
  p = p * r + splat(1.3981999507E-3f);
  p = p * r + splat(8.3334519073E-3f);
  p = p * r + splat(4.1665795894E-2f);
  p = p * r + splat(1.6666665459E-1f);
  p = p * r + splat(5.0000001201E-1f);
  p = p * z + r + splat(1.f);
#if EW_W == 16 && defined(__AVX512F__)
  // p·2^n with IEEE overflow (inf), gradual underflow (denormals, 0) and NaN in one op.
  return (vf)_mm512_scalef_ps((__m512)p, (__m512)n);
#else
  // n in [-150, 128]: scale by 2^n1 · 2^n2 (both normal), so the last multiply overflows
  // to inf, rounds into the denormals or to 0 exactly as IEEE does. A NaN x stays NaN.
  vi ni = (vi)((vu)t - (vu)magic);
  vi n1 = ni >> 1;
  vi n2 = ni - n1;
  return p * pow2i(n1) * pow2i(n2);
#endif
}

// exp(x) - 1, accurate near 0 (Taylor for |x| < 0.5, exp(x) - 1 otherwise).
static inline vf v_expm1(vf x) {
  vf p = splat(1.f / 40320.f);
  p = p * x + splat(1.f / 5040.f);
  p = p * x + splat(1.f / 720.f);
  p = p * x + splat(1.f / 120.f);
  p = p * x + splat(1.f / 24.f);
  p = p * x + splat(1.f / 6.f);
  p = p * x + splat(0.5f);
  vf small = p * (x * x) + x;
  vf big = v_exp(x) - splat(1.f);
  return vabs(x) < splat(0.5f) ? small : big;
}

// log(x) for positive, normal, finite x: Cephes logf (mantissa in [√½, √2), degree-9
// polynomial, exponent added back in two parts).
static inline vf v_log_core(vf x, vf e_adjust) {
  vu bits = (vu)x;
  vf e = __builtin_convertvector((vi)((bits >> 23) & 0xffu), vf) - splat(126.f) + e_adjust;
  vf m = (vf)((bits & 0x807fffffu) | 0x3f000000u);  // [0.5, 1)
  vi lo = m < splat(0.707106781186547524f);
  e = lo ? e - splat(1.f) : e;
  vf f = (lo ? m + m : m) - splat(1.f);
  vf z = f * f;
  vf p = splat(7.0376836292E-2f);
  p = p * f + splat(-1.1514610310E-1f);
  p = p * f + splat(1.1676998740E-1f);
  p = p * f + splat(-1.2420140846E-1f);
  p = p * f + splat(1.4249322787E-1f);
  p = p * f + splat(-1.6668057665E-1f);
  p = p * f + splat(2.0000714765E-1f);
  p = p * f + splat(-2.4999993993E-1f);
  p = p * f + splat(3.3333331174E-1f);
  vf y = p * f * z;
  y = y + e * splat(-2.12194440e-4f);
  y = y - splat(0.5f) * z;
  return f + y + e * splat(0.693359375f);
}

// log(x): denormals are scaled up first; x < 0 -> NaN, 0 -> -inf, inf -> inf, NaN -> NaN.
static inline vf v_log(vf x) {
  vi den = x < splat(1.17549435e-38f);
  vf xs = den ? x * splat(8388608.f) : x;  // 2^23
  vf r = v_log_core(xs, den ? splat(-23.f) : splat(0.f));
  r = x == splat(kInf) ? x : r;
  r = x == splat(0.f) ? splat(-kInf) : r;
  r = x < splat(0.f) ? splat(__builtin_nanf("")) : r;
  return x != x ? x : r;
}

// log(1 + u) for u in [0, 1] (Kahan's trick: exact-ish for tiny u).
static inline vf v_log1p_pos(vf u) {
  vf w = u + splat(1.f);
  vf d = w - splat(1.f);
  vi tiny = d == splat(0.f);
  vf l = v_log_core(w, splat(0.f)) * (u / (tiny ? splat(1.f) : d));  // w in [1, 2]
  return tiny ? u : l;
}

// sigmoid via e = exp(-|x|) in (0, 1]: never overflows, accurate in both tails.
static inline vf v_sigmoid(vf x) {
  vf e = v_exp(-vabs(x));
  vf s = splat(1.f) / (splat(1.f) + e);
  return x >= splat(0.f) ? s : e * s;
}

// tanh: odd polynomial (Cephes tanhf) for |x| < 0.625, else sign·(1 - 2/(exp(2|x|)+1)).
static inline vf v_tanh(vf x) {
  vf ax = vabs(x);
  vf z = x * x;
  vf p = splat(-5.70498872745E-3f);
  p = p * z + splat(2.06390887954E-2f);
  p = p * z + splat(-5.37397155531E-2f);
  p = p * z + splat(1.33314422036E-1f);
  p = p * z + splat(-3.33332819422E-1f);
  vf small = p * z * x + x;
  vf e = v_exp(vmin(ax, splat(10.f)) * splat(2.f));
  vf big = splat(1.f) - splat(2.f) / (e + splat(1.f));
  big = copysign_bits(big, vsign(x));
  vf r = ax < splat(0.625f) ? small : big;
  return x != x ? x : r;
}

// erf: odd/even rational approximation on [-4, 4] (|err| < 1e-7), ±1 outside.
static inline vf v_erf(vf x) {
  vf xc = vmin(vmax(x, splat(-4.f)), splat(4.f));
  vf z = xc * xc;
  vf p = splat(-2.72614225801306e-10f);
  p = p * z + splat(2.77068142495902e-08f);
  p = p * z + splat(-2.10102402082508e-06f);
  p = p * z + splat(-5.69250639462346e-05f);
  p = p * z + splat(-7.34990630326855e-04f);
  p = p * z + splat(-2.95459980854025e-03f);
  p = p * z + splat(-1.60960333262415e-02f);
  vf q = splat(-1.45660718464996e-05f);
  q = q * z + splat(-2.13374055278905e-04f);
  q = q * z + splat(-1.68282697438203e-03f);
  q = q * z + splat(-7.37332916720468e-03f);
  q = q * z + splat(-1.42647390514189e-02f);
  vf r = (xc * p) / q;
  return x != x ? x : r;
}
