// Optimizer loops, written once over the vector type of elementwise_vmath.h and compiled once
// per ISA (optim_{avx512,avx2,portable}.cpp include this file inside engine::optim_<isa>
// after defining EW_W and including the standard headers, <immintrin.h> and
// "cpu/optim_kernels.h"). No includes here on purpose: this file is included inside a
// namespace.
//
// Each loop reads p, g and the state once and writes p and the state once. The formulas keep
// each framework's operations, roundings included: torch's single-tensor optimizers, and
// Keras 3's as its torch backend runs them, where `t.add_(u, alpha=a)` is one fused
// multiply-add (ATen's vectorised add is fmadd(u, a, t)) and mul/addcmul/addcdiv round each
// product. So nothing is contracted here (the pragma) and fmadd() is written where they fuse;
// 20 steps then agree to float32 rounding rather than drift apart. Flags are loop-invariant
// branches: the loops are memory-bound (Adam moves 28 bytes per element).

#ifndef EW_W
#error "define EW_W (vector width in floats) before including optim_impl.h"
#endif

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
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

// a·b + c in one rounding, as ATen's Vectorized::fmadd on FMA hardware. The portable build
// has no FMA instruction and calls fmaf per lane (libm picks the hardware one where the CPU
// has it): slower, but every ISA path then gives the same bits.
static inline vf fmadd(vf a, vf b, vf c) {
#if EW_W == 16 && defined(__AVX512F__)
  return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif EW_W == 8 && defined(__FMA__)
  return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  for (int k = 0; k < W; ++k) c[k] = std::fma(a[k], b[k], c[k]);
  return c;
#endif
}

// torch.maximum: NaN if either side is NaN (vmax alone would drop a NaN in `a`).
static inline vf max_nan(vf a, vf b) { return a != a ? a : vmax(a, b); }

// torch's lerp(a, b, w) as ATen vectorises it: fmadd(w, b − a, a) for |w| < 0.5, else
// fmadd(w − 1, b − a, b).
static inline vf lerp(vf a, vf b, float w) {
  return w < 0.5f && w > -0.5f ? fmadd(splat(w), b - a, a) : fmadd(splat(w - 1.f), b - a, b);
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
  vf gscale, lo, hi, wd, decay_mul;
  bool coupled, decoupled;
  explicit Prep(const OptimCoeffs& c)
      : gscale(splat(c.gscale)), lo(splat(-c.clip)), hi(splat(c.clip)), wd(splat(c.wd)),
        decay_mul(splat(c.decay_mul)), coupled(c.coupled), decoupled(c.decoupled) {}
  // Updates p (decoupled decay) and returns g.
  inline vf operator()(vf& p, vf g) const {
    g = vmin(hi, vmax(lo, g * gscale));
    if (decoupled) p = p * decay_mul;  // p.mul_(1 − lr·wd), in both frameworks
    if (coupled) g = fmadd(p, wd, g);  // grad.add(param, alpha=wd)
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
      pv = fmadd(gv, neg_lr, pv);
    } else if (c.torch) {
      // buf.mul_(m).add_(g, alpha=1−d) (v₁ = g); nesterov g.add(buf, alpha=m); p.add_(g, alpha=−lr)
      const vf b = c.first ? gv : fmadd(gv, damp1, ld(buf + i, cnt) * mom);
      st(buf + i, b, cnt);
      pv = fmadd(c.nesterov ? fmadd(b, mom, gv) : b, neg_lr, pv);
    } else {
      // Keras: v = m·v − lr·g; p += v, or nesterov p += m·v − lr·g (two adds, as Keras does)
      const vf b = fmadd(gv, neg_lr, ld(buf + i, cnt) * mom);
      st(buf + i, b, cnt);
      pv = c.nesterov ? fmadd(b, mom, fmadd(gv, neg_lr, pv)) : pv + b;
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
    vf mv, vv;
    if (c.torch) {  // m.lerp_(g, 1−β1); v.mul_(β2).addcmul_(g, g, value=1−β2)
      mv = lerp(ld(m + i, cnt), gv, c.omb1);
      vv = ld(v + i, cnt) * b2 + omb2 * gv * gv;
    } else {        // m·β1 then add_(g, alpha=1−β1); v·β2 then add_(g², alpha=1−β2)
      mv = fmadd(gv, omb1, ld(m + i, cnt) * b1);
      vv = fmadd(gv * gv, omb2, ld(v + i, cnt) * b2);
    }
    st(m + i, mv, cnt);
    st(v + i, vv, cnt);
    vf vu = vv;
    if (c.amsgrad) {
      vu = max_nan(ld(vmax + i, cnt), vv);
      st(vmax + i, vu, cnt);
    }
    if (c.torch)  // p.addcdiv_(m, sqrt(v)/sqrt(1−β2^t) + ε, value=−step)
      pv = pv + neg_step * (mv / (vsqrt(vu) / bc2_sqrt + eps));
    else          // p −= (m·α) / (sqrt(v) + ε)
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
    if (c.torch) {
      // ms.mul_(α).addcmul_(g, g, value=1−α); avg = sqrt(ms [− ḡ²]) + ε
      const vf s = ld(sq + i, cnt) * rho + omrho * gv * gv;
      st(sq + i, s, cnt);
      vf a = s;
      if (c.centered) {
        const vf ga = lerp(ld(gavg + i, cnt), gv, c.omrho);
        st(gavg + i, ga, cnt);
        a = a - ga * ga;
      }
      a = vsqrt(a) + eps;
      if (c.has_momentum) {  // buf.mul_(μ).addcdiv_(g, avg); p.add_(buf, alpha=−lr)
        const vf b = ld(buf + i, cnt) * mom + gv / a;
        st(buf + i, b, cnt);
        pv = fmadd(b, neg_lr, pv);
      } else {               // p.addcdiv_(g, avg, value=−lr)
        pv = pv + neg_lr * (gv / a);
      }
    } else {
      // ms = ρ·ms + (1−ρ)·g²; Δ = lr·g / sqrt(ms + ε [− ḡ²]); b = μ·b + Δ; p −= b (or Δ)
      const vf s = fmadd(gv * gv, omrho, ld(sq + i, cnt) * rho);
      st(sq + i, s, cnt);
      vf a = s + eps;
      if (c.centered) {
        const vf ga = fmadd(gv, omrho, ld(gavg + i, cnt) * rho);
        st(gavg + i, ga, cnt);
        a = a - ga * ga;
      }
      const vf inc = (gv * lr) / vsqrt(a);
      if (c.has_momentum) {
        const vf b = ld(buf + i, cnt) * mom + inc;
        st(buf + i, b, cnt);
        pv = pv - b;
      } else {
        pv = pv - inc;
      }
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
    // torch: p.addcdiv_(g, sqrt(acc) + ε, value=−lr); Keras: p −= lr·g / sqrt(acc + ε)
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
