// Optimizer loops, written once over the vector type of elementwise_vmath.h and compiled once
// per ISA (optim_{avx512,avx2,portable}.cpp include this file inside engine::optim_<isa>
// after defining EW_W and including the standard headers, <immintrin.h> and
// "cpu/optim_kernels.h"). No includes here on purpose: this file is included inside a
// namespace.
//
// Each loop reads p, g and the state once and writes p and the state once. The formulas keep
// each framework's order of operations (torch's single-tensor optimizers; Keras 3's, as its
// torch backend writes them), so results agree to a few float32 roundings, not just in
// exact arithmetic. Flags are loop-invariant branches: the loops are memory-bound, and a
// predictable branch costs nothing beside the 28 bytes/element Adam moves.

#ifndef EW_W
#error "define EW_W (vector width in floats) before including optim_impl.h"
#endif

#include "cpu/elementwise_vmath.h"

typedef double vd __attribute__((vector_size(EW_W * 8)));

static inline vf vsqrt(vf x) {
#if EW_W == 16 && defined(__AVX512F__)
  return (vf)_mm512_sqrt_ps((__m512)x);
#elif EW_W == 8 && defined(__AVX__)
  return (vf)_mm256_sqrt_ps((__m256)x);
#elif EW_W == 4 && defined(__SSE__)
  return (vf)_mm_sqrt_ps((__m128)x);
#else
  for (int k = 0; k < W; ++k) x[k] = std::sqrt(x[k]);
  return x;
#endif
}

// torch.maximum: NaN if either side is NaN (vmax alone would drop a NaN in `a`).
static inline vf max_nan(vf a, vf b) { return a != a ? a : vmax(a, b); }

// torch's lerp(a, b, w): a + w·(b − a) for |w| < 0.5, else b − (b − a)·(1 − w).
static inline vf lerp(vf a, vf b, float w) {
  return w < 0.5f && w > -0.5f ? a + splat(w) * (b - a) : b - (b - a) * splat(1.f - w);
}

static inline vf ld(const float* p, index_t cnt) { return cnt == W ? load(p) : load_partial(p, cnt); }
static inline void st(float* p, vf v, index_t cnt) {
  if (cnt == W)
    store(p, v);
  else
    store_partial(p, v, cnt);
}

// f(i, cnt) over whole vectors, then the tail (cnt < W) with masked loads and stores.
template <class F>
static inline void for_vectors(index_t n, F f) {
  index_t i = 0;
  for (; i + W <= n; i += W) f(i, index_t(W));
  if (i < n) f(i, n - i);
}

// The gradient as the update sees it: scaled (global / per-tensor clipnorm), clamped
// (clipvalue; NaN stays NaN), then decoupled decay applied to p and coupled decay to g.
struct Prep {
  vf gscale, lo, hi, wd, lr, decay_mul;
  bool torch, coupled, decoupled;
  explicit Prep(const OptimCoeffs& c)
      : gscale(splat(c.gscale)), lo(splat(-c.clip)), hi(splat(c.clip)), wd(splat(c.wd)), lr(splat(c.lr)),
        decay_mul(splat(c.decay_mul)), torch(c.torch), coupled(c.coupled), decoupled(c.decoupled) {}
  // Updates p (decoupled decay) and returns g.
  inline vf operator()(vf& p, vf g) const {
    g = vmin(hi, vmax(lo, g * gscale));
    if (decoupled) p = torch ? p * decay_mul : p - (p * wd) * lr;
    if (coupled) g = g + wd * p;
    return g;
  }
};

void sgd(const OptimCoeffs& c, float* p, const float* g, float* buf, index_t n) {
  const Prep prep(c);
  const vf neg_lr = splat(c.neg_lr), mom = splat(c.mom), damp1 = splat(c.damp1);
  for_vectors(n, [&](index_t i, index_t cnt) {
    vf pv = ld(p + i, cnt);
    vf gv = prep(pv, ld(g + i, cnt));
    if (!c.has_momentum) {
      pv = pv + neg_lr * gv;
    } else if (c.torch) {
      const vf b = c.first ? gv : ld(buf + i, cnt) * mom + damp1 * gv;
      st(buf + i, b, cnt);
      pv = pv + neg_lr * (c.nesterov ? gv + mom * b : b);
    } else {
      const vf b = ld(buf + i, cnt) * mom + neg_lr * gv;
      st(buf + i, b, cnt);
      pv = c.nesterov ? (pv + neg_lr * gv) + mom * b : pv + b;
    }
    st(p + i, pv, cnt);
  });
}

void adam(const OptimCoeffs& c, float* p, const float* g, float* m, float* v, float* vmax, index_t n) {
  const Prep prep(c);
  const vf b1 = splat(c.b1), omb1 = splat(c.omb1), b2 = splat(c.b2), omb2 = splat(c.omb2);
  const vf neg_step = splat(c.neg_step), bc2_sqrt = splat(c.bc2_sqrt), eps = splat(c.eps);
  for_vectors(n, [&](index_t i, index_t cnt) {
    vf pv = ld(p + i, cnt);
    const vf gv = prep(pv, ld(g + i, cnt));
    const vf mv = c.torch ? lerp(ld(m + i, cnt), gv, c.omb1) : ld(m + i, cnt) * b1 + omb1 * gv;
    const vf vv = c.torch ? ld(v + i, cnt) * b2 + omb2 * gv * gv : ld(v + i, cnt) * b2 + omb2 * (gv * gv);
    st(m + i, mv, cnt);
    st(v + i, vv, cnt);
    vf vu = vv;
    if (c.amsgrad) {
      vu = max_nan(ld(vmax + i, cnt), vv);
      st(vmax + i, vu, cnt);
    }
    if (c.torch)
      pv = pv + neg_step * (mv / (vsqrt(vu) / bc2_sqrt + eps));
    else
      pv = pv + (mv * neg_step) / (vsqrt(vu) + eps);
    st(p + i, pv, cnt);
  });
}

void rmsprop(const OptimCoeffs& c, float* p, const float* g, float* sq, float* buf, float* gavg, index_t n) {
  const Prep prep(c);
  const vf rho = splat(c.rho), omrho = splat(c.omrho), eps = splat(c.eps), mom = splat(c.mom);
  const vf lr = splat(c.lr), neg_lr = splat(c.neg_lr);
  for_vectors(n, [&](index_t i, index_t cnt) {
    vf pv = ld(p + i, cnt);
    const vf gv = prep(pv, ld(g + i, cnt));
    const vf s = ld(sq + i, cnt) * rho + omrho * (gv * gv);
    st(sq + i, s, cnt);
    vf a = c.torch ? s : s + eps;  // torch: eps outside the sqrt; Keras: inside
    if (c.centered) {
      const vf ga = c.torch ? lerp(ld(gavg + i, cnt), gv, c.omrho) : ld(gavg + i, cnt) * rho + omrho * gv;
      st(gavg + i, ga, cnt);
      a = a - ga * ga;
    }
    a = vsqrt(a);
    // torch: the step is lr·(g / (rms + eps)), the buffer holds g/(rms + eps);
    // Keras: the step is (lr·g) / sqrt(ms + eps), the buffer holds that whole increment.
    const vf inc = c.torch ? gv / (a + eps) : (gv * lr) / a;
    if (c.has_momentum) {
      const vf b = ld(buf + i, cnt) * mom + inc;
      st(buf + i, b, cnt);
      pv = c.torch ? pv + neg_lr * b : pv - b;
    } else {
      pv = c.torch ? pv + neg_lr * inc : pv - inc;
    }
    st(p + i, pv, cnt);
  });
}

void adagrad(const OptimCoeffs& c, float* p, const float* g, float* acc, index_t n) {
  const Prep prep(c);
  const vf eps = splat(c.eps), lr = splat(c.lr), neg_lr = splat(c.neg_lr);
  for_vectors(n, [&](index_t i, index_t cnt) {
    vf pv = ld(p + i, cnt);
    const vf gv = prep(pv, ld(g + i, cnt));
    const vf a = ld(acc + i, cnt) + gv * gv;
    st(acc + i, a, cnt);
    pv = c.torch ? pv + neg_lr * (gv / (vsqrt(a) + eps)) : pv - (gv * lr) / vsqrt(a + eps);
    st(p + i, pv, cnt);
  });
}

// Σ x² in float64 lanes: exact products, so the norm is as good as the float32 inputs.
double sumsq(const float* x, index_t n) {
  vd acc = {};
  for_vectors(n, [&](index_t i, index_t cnt) {
    const vd xd = __builtin_convertvector(ld(x + i, cnt), vd);
    acc += xd * xd;
  });
  for (int h = W / 2; h >= 1; h /= 2)
    for (int k = 0; k < h; ++k) acc[k] += acc[k + h];
  return acc[0];
}
