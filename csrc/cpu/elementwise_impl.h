// Elementwise kernels, written once over a GCC/Clang vector-extension type of EW_W floats
// and compiled once per ISA: elementwise_{avx512,avx2,portable}.cpp each include this file
// inside their own namespace (engine::ew_<isa>) after defining EW_W and including the
// standard headers (<cstdint>, <cstring>, <cmath>, <algorithm>, <immintrin.h> on x86) and
// "engine/elementwise.h". No includes here on purpose: this file is included inside a
// namespace.
//
// Transcendentals are our own branch-free polynomial approximations (Cephes-style exp/log
// with range reduction, tanh/sigmoid from exp, a rational erf), so every op runs at full
// vector width. Accuracy (vs float64): exp/log/sigmoid/tanh ≲ 2 ulp in normal ranges, erf
// ≲ 1e-7 absolute; special values (±0, ±inf, NaN, overflow, underflow, denormals) are
// handled explicitly so that no NaN appears where the true result is finite.
//
// Exported per ISA (see elementwise.cpp for the dispatcher and threading):
//   activation(y, x, n, act, alpha, beta)          serial, any n, y may equal x
//   binary_row(out, a, sa, b, sb, n, op)           out[i] = a[i*sa] op b[i*sb]
//   softmax_rows(y, x, rows, len, log)             inner == 1: rows of `len` contiguous floats
//   softmax_cols(y, x, axis, inner, j0, j1, log)   one (axis, inner) slab, columns [j0, j1)

#ifndef EW_W
#error "define EW_W (vector width in floats) before including elementwise_impl.h"
#endif

#include "cpu/elementwise_vmath.h"

// ---------------------------------------------------------------------------------------
// Activations.

template <class F>
static inline void unary_loop(float* y, const float* x, index_t n, F f) {
  index_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    vf a = load(x + i), b = load(x + i + W);
    store(y + i, f(a));
    store(y + i + W, f(b));
  }
  for (; i + W <= n; i += W) store(y + i, f(load(x + i)));
  if (i < n) store_partial(y + i, f(load_partial(x + i, n - i)), n - i);
}

void activation(float* y, const float* x, index_t n, Act act, float alpha, float beta) {
  const vf zero = splat(0.f), one = splat(1.f);
  switch (act) {
    case Act::None:
    case Act::Identity:
      if (y != x) std::memmove(y, x, static_cast<std::size_t>(n) * sizeof(float));
      return;
    case Act::Relu:
      return unary_loop(y, x, n, [&](vf v) { return vmax(zero, v); });  // NaN stays NaN
    case Act::LeakyRelu: {
      const vf a = splat(alpha);
      return unary_loop(y, x, n, [&](vf v) { return v < zero ? v * a : v; });
    }
    case Act::Sigmoid:
      return unary_loop(y, x, n, [&](vf v) { return v_sigmoid(v); });
    case Act::Tanh:
      return unary_loop(y, x, n, [&](vf v) { return v_tanh(v); });
    case Act::Gelu:
      return unary_loop(y, x, n, [&](vf v) {
        return splat(0.5f) * v * (one + v_erf(v * splat(0.70710678118654752f)));
      });
    case Act::GeluTanh:
      // 0.5·x·(1 + tanh(u)) == x·sigmoid(2u), u = √(2/π)·(x + 0.044715·x³)
      return unary_loop(y, x, n, [&](vf v) {
        vf u = v * (splat(1.5957691216057308f) + splat(0.0713548162726f) * v * v);
        return v * v_sigmoid(u);
      });
    case Act::Elu: {
      const vf a = splat(alpha);
      return unary_loop(y, x, n, [&](vf v) { return v > zero ? v : a * v_expm1(v); });
    }
    case Act::Selu: {
      const vf sc = splat(1.0507009873554805f), sa = splat(1.0507009873554805f * 1.6732632423543772f);
      return unary_loop(y, x, n, [&](vf v) { return v > zero ? sc * v : sa * v_expm1(v); });
    }
    case Act::Silu:
      return unary_loop(y, x, n, [&](vf v) { return v * v_sigmoid(v); });
    case Act::Softplus:
      // max(x, 0) + log1p(exp(-|x|)): no overflow, accurate in both tails. Zero first, so a
      // NaN passes the max (not only through the log1p term's arithmetic).
      return unary_loop(y, x, n, [&](vf v) { return vmax(zero, v) + v_log1p_pos(v_exp(-vabs(v))); });
    case Act::HardSigmoid: {
      const vf a = splat(alpha), b = splat(beta);
      return unary_loop(y, x, n, [&](vf v) { return vmin(one, vmax(zero, a * v + b)); });
    }
    case Act::Clip: {
      const vf lo = splat(alpha), hi = splat(beta);
      return unary_loop(y, x, n, [&](vf v) { return vmin(hi, vmax(lo, v)); });
    }
    case Act::Exp:
      return unary_loop(y, x, n, [&](vf v) { return v_exp(v); });
    case Act::Log:
      return unary_loop(y, x, n, [&](vf v) { return v_log(v); });
    case Act::Sqrt:
      // Plain loop: the compiler vectorises sqrt (-fno-math-errno) to the exact instruction.
      for (index_t i = 0; i < n; ++i) y[i] = std::sqrt(x[i]);
      return;
    case Act::Neg:
      return unary_loop(y, x, n, [&](vf v) { return -v; });
    case Act::Abs:
      return unary_loop(y, x, n, [&](vf v) { return vabs(v); });
    case Act::Reciprocal:
      return unary_loop(y, x, n, [&](vf v) { return one / v; });
    case Act::Square:
      return unary_loop(y, x, n, [&](vf v) { return v * v; });
    case Act::Erf:
      return unary_loop(y, x, n, [&](vf v) { return v_erf(v); });
  }
  throw Error("activation: unknown Act " + std::to_string(static_cast<int>(act)));
}

// ---------------------------------------------------------------------------------------
// Binary ops.

struct OpAdd { static vf v(vf a, vf b) { return a + b; } static float s(float a, float b) { return a + b; } };
struct OpSub { static vf v(vf a, vf b) { return a - b; } static float s(float a, float b) { return a - b; } };
struct OpMul { static vf v(vf a, vf b) { return a * b; } static float s(float a, float b) { return a * b; } };
struct OpDiv { static vf v(vf a, vf b) { return a / b; } static float s(float a, float b) { return a / b; } };
// numpy maximum/minimum: NaN in either input propagates.
struct OpMax {
  static vf v(vf a, vf b) { return a != a ? a : (a > b ? a : b); }
  static float s(float a, float b) { return a != a ? a : (a > b ? a : b); }
};
struct OpMin {
  static vf v(vf a, vf b) { return a != a ? a : (a < b ? a : b); }
  static float s(float a, float b) { return a != a ? a : (a < b ? a : b); }
};
struct OpPow {
  static vf v(vf a, vf b) {
    vf r;
    for (int k = 0; k < W; ++k) r[k] = std::pow(a[k], b[k]);
    return r;
  }
  static float s(float a, float b) { return std::pow(a, b); }
};

template <class Op>
static void binary_row_t(float* out, const float* a, index_t sa, const float* b, index_t sb, index_t n) {
  index_t i = 0;
  if (sa == 1 && sb == 1) {
    for (; i + W <= n; i += W) store(out + i, Op::v(load(a + i), load(b + i)));
    if (i < n) store_partial(out + i, Op::v(load_partial(a + i, n - i), load_partial(b + i, n - i)), n - i);
  } else if (sa == 1 && sb == 0) {
    const vf bv = splat(*b);
    for (; i + W <= n; i += W) store(out + i, Op::v(load(a + i), bv));
    if (i < n) store_partial(out + i, Op::v(load_partial(a + i, n - i), bv), n - i);
  } else if (sa == 0 && sb == 1) {
    const vf av = splat(*a);
    for (; i + W <= n; i += W) store(out + i, Op::v(av, load(b + i)));
    if (i < n) store_partial(out + i, Op::v(av, load_partial(b + i, n - i)), n - i);
  } else if (sa == 0 && sb == 0) {
    const float r = Op::s(*a, *b);
    for (; i < n; ++i) out[i] = r;
  } else {
    for (; i < n; ++i) out[i] = Op::s(a[i * sa], b[i * sb]);
  }
}

// x ** c for a scalar exponent c: the common cases without libm.
static bool pow_scalar_fast(float* out, const float* a, index_t n, float c) {
  if (c == 2.f) {
    unary_loop(out, a, n, [](vf v) { return v * v; });
    return true;
  }
  if (c == 1.f) {
    if (out != a) std::memmove(out, a, static_cast<std::size_t>(n) * sizeof(float));
    return true;
  }
  if (c == 3.f) {
    unary_loop(out, a, n, [](vf v) { return v * v * v; });
    return true;
  }
  if (c == -1.f) {
    unary_loop(out, a, n, [](vf v) { return splat(1.f) / v; });
    return true;
  }
  return false;
}

void binary_row(float* out, const float* a, index_t sa, const float* b, index_t sb, index_t n, BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return binary_row_t<OpAdd>(out, a, sa, b, sb, n);
    case BinaryOp::Sub: return binary_row_t<OpSub>(out, a, sa, b, sb, n);
    case BinaryOp::Mul: return binary_row_t<OpMul>(out, a, sa, b, sb, n);
    case BinaryOp::Div: return binary_row_t<OpDiv>(out, a, sa, b, sb, n);
    case BinaryOp::Max: return binary_row_t<OpMax>(out, a, sa, b, sb, n);
    case BinaryOp::Min: return binary_row_t<OpMin>(out, a, sa, b, sb, n);
    case BinaryOp::Pow:
      if (sa == 1 && sb == 0 && pow_scalar_fast(out, a, n, *b)) return;
      return binary_row_t<OpPow>(out, a, sa, b, sb, n);
  }
  throw Error("binary: unknown op " + std::to_string(static_cast<int>(op)));
}

// ---------------------------------------------------------------------------------------
// Softmax.

// rows × len, contiguous (the last-axis case).
void softmax_rows(float* y, const float* x, index_t rows, index_t len, bool log) {
  const vf ninf = splat(-kInf);
  for (index_t r = 0; r < rows; ++r) {
    const float* xr = x + r * len;
    float* yr = y + r * len;
    const index_t tail = len % W, nfull = len - tail;
    // 1. max
    vf m0 = ninf, m1 = ninf;
    index_t i = 0;
    for (; i + 2 * W <= nfull; i += 2 * W) {
      m0 = vmax(m0, load(xr + i));
      m1 = vmax(m1, load(xr + i + W));
    }
    for (; i < nfull; i += W) m0 = vmax(m0, load(xr + i));
    float m = hmax(vmax(m0, m1));
    for (i = nfull; i < len; ++i) m = xr[i] > m ? xr[i] : m;
    // NaN anywhere -> propagate via the exp pass (x - m = NaN); an all -inf row gives NaN
    // like torch. A row holding +inf gives NaN as well.
    const vf mv = splat(m);
    // 2. exp and sum
    vf s0 = splat(0.f), s1 = splat(0.f);
    if (!log) {
      for (i = 0; i + 2 * W <= nfull; i += 2 * W) {
        vf e0 = v_exp(load(xr + i) - mv), e1 = v_exp(load(xr + i + W) - mv);
        store(yr + i, e0);
        store(yr + i + W, e1);
        s0 += e0;
        s1 += e1;
      }
      for (; i < nfull; i += W) {
        vf e = v_exp(load(xr + i) - mv);
        store(yr + i, e);
        s0 += e;
      }
      if (tail) {
        vf e = v_exp(load_partial(xr + nfull, tail) - mv);
        e = lane_mask(tail) ? e : splat(0.f);
        store_partial(yr + nfull, e, tail);
        s0 += e;
      }
      const vf inv = splat(1.f / hsum(s0 + s1));
      i = 0;
      for (; i < nfull; i += W) store(yr + i, load(yr + i) * inv);
      if (tail) store_partial(yr + nfull, load_partial(yr + nfull, tail) * inv, tail);
    } else {
      for (i = 0; i + 2 * W <= nfull; i += 2 * W) {
        s0 += v_exp(load(xr + i) - mv);
        s1 += v_exp(load(xr + i + W) - mv);
      }
      for (; i < nfull; i += W) s0 += v_exp(load(xr + i) - mv);
      if (tail) {
        vf e = v_exp(load_partial(xr + nfull, tail) - mv);
        s0 += lane_mask(tail) ? e : splat(0.f);
      }
      const vf sh = splat(m + std::log(hsum(s0 + s1)));
      for (i = 0; i < nfull; i += W) store(yr + i, load(xr + i) - sh);
      if (tail) store_partial(yr + nfull, load_partial(xr + nfull, tail) - sh, tail);
    }
  }
}

// One (axis, inner) slab, columns [j0, j1): vectorised across columns.
void softmax_cols(float* y, const float* x, index_t axis, index_t inner, index_t j0, index_t j1, bool log) {
  for (index_t j = j0; j < j1; j += W) {
    const index_t cnt = j1 - j < W ? j1 - j : W;
    const bool full = cnt == W;
    auto ld = [&](const float* p) { return full ? load(p) : load_partial(p, cnt); };
    auto st = [&](float* p, vf v) {
      if (full) store(p, v);
      else store_partial(p, v, cnt);
    };
    vf m = splat(-kInf);
    for (index_t k = 0; k < axis; ++k) m = vmax(m, ld(x + k * inner + j));
    // A NaN input reaches the sum through x - m even if vmax dropped it from m.
    vf s = splat(0.f);
    if (!log) {
      for (index_t k = 0; k < axis; ++k) {
        vf e = v_exp(ld(x + k * inner + j) - m);
        st(y + k * inner + j, e);
        s += e;
      }
      const vf inv = splat(1.f) / s;
      for (index_t k = 0; k < axis; ++k) st(y + k * inner + j, ld(y + k * inner + j) * inv);
    } else {
      for (index_t k = 0; k < axis; ++k) s += v_exp(ld(x + k * inner + j) - m);
      const vf sh = m + v_log(s);
      for (index_t k = 0; k < axis; ++k) st(y + k * inner + j, ld(x + k * inner + j) - sh);
    }
  }
}
