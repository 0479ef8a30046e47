// float32 kernels of the math family's unary ops that the activation enum does not cover,
// written once over the vector type of elementwise_vmath.h and compiled per ISA by
// math_f32_{avx512,avx2,portable}.cpp (each includes this inside engine::mf_<isa> after
// defining EW_W and including the standard headers and "engine/math.h").
//
// Exported per ISA:
//   bool unary_vec(y, x, n, op, alpha, beta)   serial; false if `op` has no vector form here

#include "cpu/elementwise_vmath.h"

template <class F>
static inline void map(float* y, const float* x, index_t n, F f) {
  index_t i = 0;
  for (; i + W <= n; i += W) store(y + i, f(load(x + i)));
  if (i < n) store_partial(y + i, f(load_partial(x + i, n - i)), n - i);
}

// Round half to even for |x| < 2^23 (adding and removing 2^23 rounds in the default mode);
// larger magnitudes, inf and NaN are already integral and pass through. The sign is x's
// (round(-0.3) == -0, like numpy).
static inline vf v_round(vf x) {
  const vf big = splat(8388608.f);
  vf ax = vabs(x);
  vf r = (ax + big) - big;
  return ax < big ? copysign_bits(r, vsign(x)) : x;
}

static inline vf v_floor(vf x) {
  vf r = v_round(x);
  r = r > x ? r - splat(1.f) : r;
  return vabs(x) < splat(8388608.f) ? copysign_bits(vabs(r), vsign(x)) : x;
}

static inline vf v_ceil(vf x) {
  vf r = v_round(x);
  r = r < x ? r + splat(1.f) : r;
  return vabs(x) < splat(8388608.f) ? copysign_bits(vabs(r), vsign(x)) : x;
}

// sin / cos for |x| <= 8192 (Cephes sinf/cosf: x reduced by multiples of π/4 in three exact
// parts, then the sine or cosine polynomial by octant). Other lanes (large, inf, NaN) are
// recomputed with libm by the caller.
constexpr float kTrigMax = 8192.f;

template <bool COS>
static inline vf v_sin_cos(vf x) {
  vf ax = vabs(x);
  vi j = __builtin_convertvector(vmin(ax, splat(kTrigMax)) * splat(1.27323954473516f), vi);
  j = (j + 1) & splati(~1);
  vf q = __builtin_convertvector(j, vf);
  vf r = ((ax - q * splat(0.78515625f)) - q * splat(2.4187564849853515625e-4f)) - q * splat(3.77489497744594108e-8f);
  vf z = r * r;
  vf ps = ((splat(-1.9515295891e-4f) * z + splat(8.3321608736e-3f)) * z + splat(-1.6666654611e-1f)) * z * r + r;
  vf pc = ((splat(2.443315711809948e-5f) * z + splat(-1.388731625493765e-3f)) * z + splat(4.166664568298827e-2f)) *
              z * z - splat(0.5f) * z + splat(1.f);
  vi swap = (j & splati(2)) != splati(0);  // octants where the other polynomial applies
  vi flip = (j & splati(4)) != splati(0);
  vu sign;
  vf res;
  if constexpr (COS) {
    res = swap ? ps : pc;
    sign = (vu)(flip ^ swap) & 0x80000000u;
  } else {
    res = swap ? pc : ps;
    sign = ((vu)flip ^ (vu)x) & 0x80000000u;
  }
  return (vf)((vu)res ^ sign);
}

template <bool COS>
static void sin_cos(float* y, const float* x, index_t n) {
  for (index_t i = 0; i < n; i += W) {
    const index_t cnt = n - i < W ? n - i : W;
    vf v = cnt == W ? load(x + i) : load_partial(x + i, cnt);
    vf r = v_sin_cos<COS>(v);
    vi ok = vabs(v) <= splat(kTrigMax);  // false for NaN too
    for (int k = 0; k < cnt; ++k)
      if (!ok[k]) r[k] = COS ? std::cos(v[k]) : std::sin(v[k]);
    if (cnt == W) store(y + i, r);
    else store_partial(y + i, r, cnt);
  }
}

bool unary_vec(float* y, const float* x, index_t n, UnaryOp op, float alpha, float beta) {
  const vf zero = splat(0.f), one = splat(1.f), a = splat(alpha), b = splat(beta);
  switch (op) {
    case UnaryOp::Sign:  // NaN and ±0 pass through
      map(y, x, n, [&](vf v) { return v > zero ? one : (v < zero ? -one : v); });
      return true;
    case UnaryOp::Sin: sin_cos<false>(y, x, n); return true;
    case UnaryOp::Cos: sin_cos<true>(y, x, n); return true;
    case UnaryOp::Round: map(y, x, n, v_round); return true;
    case UnaryOp::Floor: map(y, x, n, v_floor); return true;
    case UnaryOp::Ceil: map(y, x, n, v_ceil); return true;
    case UnaryOp::Softsign:
      map(y, x, n, [&](vf v) { return v / (one + vabs(v)); });
      return true;
    case UnaryOp::Mish:
      // x·tanh(log1p(e^x)) == x·e(e+2) / (e(e+2) + 2), e = e^x: no cancellation for x < 0;
      // past x = 20 the factor is 1 in float.
      map(y, x, n, [&](vf v) {
        vf e = v_exp(vmin(v, splat(20.f)));
        vf p = e * (e + splat(2.f));
        vf r = v * (p / (p + splat(2.f)));
        return v > splat(20.f) ? v : r;
      });
      return true;
    case UnaryOp::HardSwish:
      map(y, x, n, [&](vf v) { return v * vmin(one, vmax(zero, v * splat(1.f / 6.f) + splat(0.5f))); });
      return true;
    case UnaryOp::Swish:
      map(y, x, n, [&](vf v) { return v * v_sigmoid(a * v); });
      return true;
    case UnaryOp::Selu:  // gamma·x for x > 0, gamma·alpha·(e^x - 1) otherwise
      map(y, x, n, [&](vf v) { return v > zero ? b * v : b * (a * v_expm1(v)); });
      return true;
    case UnaryOp::Celu:
      map(y, x, n, [&](vf v) { return vmax(zero, v) + vmin(zero, a * v_expm1(v / a)); });
      return true;
    case UnaryOp::ThresholdedRelu:
      map(y, x, n, [&](vf v) { return v > a ? v : zero; });
      return true;
    case UnaryOp::Shrink:  // bias = alpha, lambd = beta
      map(y, x, n, [&](vf v) { return v < -b ? v + a : (v > b ? v - a : zero); });
      return true;
    default:
      return false;
  }
}
