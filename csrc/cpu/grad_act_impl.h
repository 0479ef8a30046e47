// Backward loops over elements and rows, compiled once per ISA (see grad_kernels.h): the
// activation derivatives, softmax / log-softmax backward, one row of softmax cross-entropy,
// and dropout with its Philox4x32-10 draws. Included inside a per-ISA namespace after EW_W,
// the standard headers, elementwise_vmath.h and grad_kernels.h; the only include here is the
// shared broadcast helpers (vec_broadcast.h), which need the same context.
//
// Each derivative follows torch's backward formula for the op (aten/src/ATen/native/cpu/
// Activation.cpp, BinaryOpsKernel.cpp, FunctionsManual.cpp), including which side of a
// comparison a NaN or a boundary value takes, so a NaN propagates exactly where torch's does.

#include "cpu/vec_broadcast.h"

template <class F>
static inline void grad_loop(float* dx, const float* dy, const float* s, index_t n, F f) {
  index_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    const vf a = f(load(dy + i), load(s + i)), b = f(load(dy + i + W), load(s + i + W));
    store(dx + i, a);
    store(dx + i + W, b);
  }
  for (; i + W <= n; i += W) store(dx + i, f(load(dy + i), load(s + i)));
  if (i < n) store_partial(dx + i, f(load_partial(dy + i, n - i), load_partial(s + i, n - i)), n - i);
}

void act_backward(float* dx, const float* dy, const float* s, index_t n, int act, float alpha, float beta) {
  const vf zero = bcast(0.f), one = bcast(1.f), half = bcast(0.5f);
  switch (act) {
    case static_cast<int>(Act::None):
    case static_cast<int>(Act::Identity):
      if (dx != dy) std::memmove(dx, dy, static_cast<std::size_t>(n) * sizeof(float));
      return;
    case static_cast<int>(Act::Relu):  // threshold_backward on the output
      return grad_loop(dx, dy, s, n, [&](vf g, vf y) { return y <= zero ? zero : g; });
    case static_cast<int>(Act::LeakyRelu): {
      const vf a = bcast(alpha);
      return grad_loop(dx, dy, s, n, [&](vf g, vf x) { return x > zero ? g : g * a; });
    }
    case static_cast<int>(Act::Sigmoid):
      return grad_loop(dx, dy, s, n, [&](vf g, vf y) { return g * (one - y) * y; });
    case static_cast<int>(Act::Tanh):
      return grad_loop(dx, dy, s, n, [&](vf g, vf y) { return g * (one - y * y); });
    case static_cast<int>(Act::Gelu): {
      const vf r2 = bcast(0.70710678118654752f), k = bcast(0.39894228040143268f);  // 1/√2, 1/√(2π)
      return grad_loop(dx, dy, s, n, [&](vf g, vf x) {
        const vf cdf = half * (one + v_erf(x * r2)), pdf = k * v_exp(-half * x * x);
        return g * (cdf + x * pdf);
      });
    }
    case static_cast<int>(Act::GeluTanh): {
      const vf kb = bcast(0.79788456080286536f), kk = bcast(0.044715f), k3 = bcast(3.f * 0.044715f);
      return grad_loop(dx, dy, s, n, [&](vf g, vf x) {
        const vf x2 = x * x, t = v_tanh(kb * (x + kk * x2 * x));
        const vf left = half * x, dleft = half * (one + t);
        const vf dright = left * (one - t * t) * (kb * (one + k3 * x2));
        return g * (dleft + dright);
      });
    }
    case static_cast<int>(Act::Elu): {
      const vf a = bcast(alpha);
      return grad_loop(dx, dy, s, n, [&](vf g, vf x) { return x <= zero ? g * a * v_exp(x) : g; });
    }
    case static_cast<int>(Act::Selu): {  // the forward's constants
      const vf sc = bcast(1.0507009873554805f), sa = bcast(1.0507009873554805f * 1.6732632423543772f);
      return grad_loop(dx, dy, s, n, [&](vf g, vf x) { return x <= zero ? g * sa * v_exp(x) : g * sc; });
    }
    case static_cast<int>(Act::Silu):
      return grad_loop(dx, dy, s, n, [&](vf g, vf x) {
        const vf sg = v_sigmoid(x);
        return g * sg * (one + x * (one - sg));
      });
    case static_cast<int>(Act::Softplus): {  // torch's threshold 20 (beta 1)
      const vf th = bcast(20.f);
      return grad_loop(dx, dy, s, n, [&](vf g, vf x) { return x > th ? g : g * v_sigmoid(x); });
    }
    case static_cast<int>(Act::HardSigmoid): {
      const vf a = bcast(alpha), b = bcast(beta);
      return grad_loop(dx, dy, s, n, [&](vf g, vf x) {
        const vf t = a * x + b;
        return (t > zero) & (t < one) ? g * a : zero;
      });
    }
    case static_cast<int>(Act::Clip): {  // hardtanh_backward: strictly inside passes (NaN: 0)
      const vf lo = bcast(alpha), hi = bcast(beta);
      return grad_loop(dx, dy, s, n, [&](vf g, vf x) { return (x > lo) & (x < hi) ? g : zero; });
    }
    case static_cast<int>(Act::Exp):
      return grad_loop(dx, dy, s, n, [&](vf g, vf y) { return g * y; });
    case static_cast<int>(Act::Log):
      return grad_loop(dx, dy, s, n, [&](vf g, vf x) { return g / x; });
    case static_cast<int>(Act::Sqrt):
      return grad_loop(dx, dy, s, n, [&](vf g, vf y) { return g / (bcast(2.f) * y); });
    case static_cast<int>(Act::Neg):
      return grad_loop(dx, dy, s, n, [&](vf g, vf) { return -g; });
    case static_cast<int>(Act::Abs):  // sgn: 0 at 0 and at NaN (torch)
      return grad_loop(dx, dy, s, n, [&](vf g, vf x) { return g * (x > zero ? one : (x < zero ? -one : zero)); });
    case static_cast<int>(Act::Reciprocal):
      return grad_loop(dx, dy, s, n, [&](vf g, vf y) { return -g * (y * y); });
    case static_cast<int>(Act::Square):
      return grad_loop(dx, dy, s, n, [&](vf g, vf x) { return g * (bcast(2.f) * x); });
    case static_cast<int>(Act::Erf): {
      const vf k = bcast(1.12837916709551257f);  // 2/√π
      return grad_loop(dx, dy, s, n, [&](vf g, vf x) { return g * k * v_exp(-(x * x)); });
    }
    case grad_act::kSoftsign:  // 1/(1+|x|)² (TF's rule: 0 at ±inf, where torch's composite gives NaN)
      return grad_loop(dx, dy, s, n, [&](vf g, vf x) {
        const vf d = one + vabs(x);
        return g / (d * d);
      });
    case grad_act::kHardSwish: {  // torch: 0 up to -3 inclusive, the slope below 3, then dy
      const vf three = bcast(3.f), third = bcast(1.f / 3.f);
      return grad_loop(dx, dy, s, n, [&](vf g, vf x) {
        return x <= -three ? zero : (x < three ? g * (x * third + half) : g);
      });
    }
    case grad_act::kMish:
      return grad_loop(dx, dy, s, n, [&](vf g, vf x) {
        const vf sp = vmax(zero, x) + v_log1p_pos(v_exp(-vabs(x)));
        const vf t = v_tanh(sp), sg = v_sigmoid(x);
        return g * (t + x * sg * (one - t * t));
      });
  }
  throw Error("act_backward: unknown activation code " + std::to_string(act));
}

// ---- softmax / log-softmax backward ------------------------------------------------------

void softmax_rows(float* dx, const float* dy, const float* y, index_t rows, index_t len, bool log) {
  const index_t tail = len % W, full = len - tail;
  for (index_t r = 0; r < rows; ++r) {
    const float *g = dy + r * len, *o = y + r * len;
    float* d = dx + r * len;
    vf acc = bcast(0.f);
    for (index_t i = 0; i < full; i += W) acc += log ? load(g + i) : load(g + i) * load(o + i);
    if (tail) acc += log ? load_partial(g + full, tail) : load_partial(g + full, tail) * load_partial(o + full, tail);
    const vf sv = bcast(hsum(acc));
    auto f = [&](vf gv, vf ov) { return log ? gv - v_exp(ov) * sv : ov * (gv - sv); };
    for (index_t i = 0; i < full; i += W) store(d + i, f(load(g + i), load(o + i)));
    if (tail) store_partial(d + full, f(load_partial(g + full, tail), load_partial(o + full, tail)), tail);
  }
}

// One (axis, inner) slab, vectorised over inner.
void softmax_cols(float* dx, const float* dy, const float* y, index_t axis, index_t inner, bool log) {
  for (index_t j = 0; j < inner; j += W) {
    const index_t cnt = inner - j < W ? inner - j : W;
    auto ld = [&](const float* p) { return cnt == W ? load(p) : load_partial(p, cnt); };
    vf acc = bcast(0.f);
    for (index_t a = 0; a < axis; ++a) {
      const index_t o = a * inner + j;
      acc += log ? ld(dy + o) : ld(dy + o) * ld(y + o);
    }
    for (index_t a = 0; a < axis; ++a) {
      const index_t o = a * inner + j;
      const vf gv = ld(dy + o), ov = ld(y + o);
      const vf r = log ? gv - v_exp(ov) * acc : ov * (gv - acc);
      if (cnt == W) store(dx + o, r);
      else store_partial(dx + o, r, cnt);
    }
  }
}

// ---- one row of softmax cross-entropy ----------------------------------------------------

float xent_row(float* g, const float* z, index_t C, index_t label, const float* t, float gscale) {
  const index_t tail = C % W, full = C - tail;
  const vf ninf = bcast(-kInf), zero = bcast(0.f);
  vf mv = ninf;
  for (index_t i = 0; i < full; i += W) mv = vmax(mv, load(z + i));
  if (tail) mv = vmax(mv, lane_mask(tail) ? load_partial(z + full, tail) : ninf);
  const float m = hmax(mv);
  const vf mm = bcast(m);
  const float zl = label >= 0 ? z[label] - m : 0.f;  // read before g (which may be z) is written
  vf sum = zero, st = zero, stz = zero;  // Σ exp(z − m), Σ t, Σ t·(z − m)
  auto step = [&](index_t i, index_t cnt) {
    const vf zv = cnt == W ? load(z + i) : load_partial(z + i, cnt);
    const vi live = lane_mask(cnt);
    const vf d = zv - mm;
    const vf e = live ? v_exp(d) : zero;
    sum += e;
    if (label < 0) {
      const vf tv = cnt == W ? load(t + i) : load_partial(t + i, cnt);
      st += tv;
      stz += live ? tv * d : zero;
    }
    if (g) {
      if (cnt == W) store(g + i, e);
      else store_partial(g + i, e, cnt);
    }
  };
  for (index_t i = 0; i < full; i += W) step(i, W);
  if (tail) step(full, tail);
  const float s = hsum(sum), ls = std::log(s);
  const float tsum = label >= 0 ? 1.f : hsum(st);
  const float loss = label >= 0 ? ls - zl : ls * tsum - hsum(stz);
  if (g) {
    const vf coef = bcast(gscale / s * tsum), gs = bcast(gscale);
    auto fin = [&](index_t i, index_t cnt) {
      const vf e = cnt == W ? load(g + i) : load_partial(g + i, cnt);
      vf r = e * coef;
      if (label < 0) r -= gs * (cnt == W ? load(t + i) : load_partial(t + i, cnt));
      if (cnt == W) store(g + i, r);
      else store_partial(g + i, r, cnt);
    };
    for (index_t i = 0; i < full; i += W) fin(i, W);
    if (tail) fin(full, tail);
    if (label >= 0) g[label] -= gscale;
  }
  return loss;
}

// ---- dropout -----------------------------------------------------------------------------
// y = x·(keep ? scale : 0), a product as in torch, so a NaN input stays NaN where dropped.

typedef std::uint64_t vu64 __attribute__((vector_size(EW_W * 8)));

static inline void mulhilo(std::uint32_t m, vu a, vu& hi, vu& lo) {
  const vu64 p = __builtin_convertvector(a, vu64) * static_cast<std::uint64_t>(m);
  lo = __builtin_convertvector(p, vu);
  hi = __builtin_convertvector(p >> 32, vu);
}

// W Philox4x32-10 blocks at once: counters (b0 + lane, step), key seed.
static inline void philox_blocks(vu r[4], std::uint64_t b0, std::uint64_t step, std::uint64_t seed) {
  vu64 b;
  for (int k = 0; k < W; ++k) b[k] = b0 + static_cast<std::uint64_t>(k);
  vu c0 = __builtin_convertvector(b, vu), c1 = __builtin_convertvector(b >> 32, vu);
  vu c2 = (vu)bcasti(0) + static_cast<std::uint32_t>(step), c3 = (vu)bcasti(0) + static_cast<std::uint32_t>(step >> 32);
  std::uint32_t k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    if (round) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    vu hi0, lo0, hi1, lo1;
    mulhilo(0xD2511F53u, c0, hi0, lo0);
    mulhilo(0xCD9E8D57u, c2, hi1, lo1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  r[0] = c0, r[1] = c1, r[2] = c2, r[3] = c3;
}

void dropout(float* y, std::uint8_t* mask_out, const float* x, const std::uint8_t* mask_in, index_t i0,
                    index_t i1, std::uint32_t thresh24, float scale, std::uint64_t seed, std::uint64_t step) {
  const vf sc = bcast(scale), zero = bcast(0.f);
  if (mask_in) {
    for (index_t i = i0; i < i1; ++i) y[i] = x[i] * (mask_in[i] ? scale : 0.f);
    return;
  }
  constexpr index_t kGroup = 4 * W;  // elements of W blocks
  alignas(64) std::uint32_t words[kGroup];
  for (index_t i = i0; i < i1; i += kGroup) {
    vu r[4];
    philox_blocks(r, static_cast<std::uint64_t>(i / 4), step, seed);
    for (int l = 0; l < W; ++l)
      for (int k = 0; k < 4; ++k) words[4 * l + k] = r[k][l];  // element 4·block + word
    const index_t cnt = i1 - i < kGroup ? i1 - i : kGroup;
    if (cnt == kGroup) {
      for (int v = 0; v < 4; ++v) {
        vu w;
        std::memcpy(&w, words + v * W, sizeof w);
        const vi keep = (vi)((w >> 8) >= thresh24);
        store(y + i + v * W, load(x + i + v * W) * (keep ? sc : zero));
        if (mask_out)
          for (int l = 0; l < W; ++l) mask_out[i + v * W + l] = keep[l] ? 1 : 0;
      }
    } else {
      for (index_t k = 0; k < cnt; ++k) {
        const bool keep = (words[k] >> 8) >= thresh24;
        y[i + k] = x[i + k] * (keep ? scale : 0.f);
        if (mask_out) mask_out[i + k] = keep ? 1 : 0;
      }
    }
  }
}
