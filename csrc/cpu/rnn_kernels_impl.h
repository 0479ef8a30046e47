// Recurrent kernels (see rnn_kernels.h), written once over the vector type of
// elementwise_vmath.h and compiled per ISA: rnn_kernels_{avx512,avx2,portable}.cpp include this
// inside their own namespace after defining EW_W (floats per vector), RNN_MR (tile rows),
// RNN_NV (vectors per tile pass) and RNN_LANES (unit vectors the gate math interleaves), with
// <algorithm>, <array>, <cstdint>, <cstring>, <type_traits>, <utility>, <immintrin.h> and
// "cpu/rnn_kernels.h" included. No includes here on purpose.
//
// tile: a register block of RNN_MR rows × RNN_NV vectors, accumulated over both products
// (x·Wᵀ then h·Rᵀ) before one store; B (the packed weights) is read in place, its few KiB
// per tile group stay in L1 across the row tiles. Few rows (batch 1) split k over several
// accumulator sets so the FMA chains do not serialise on latency.
// cells: the gate math per row, per block, RNN_LANES vectors of units at a time: rational
// tanh, sigmoid from exp, no divides (see recip); other activations in the formulas (and NaN
// behaviour) of the elementwise ones.

#include "cpu/elementwise_vmath.h"

// acc += a·b over K, in S accumulator sets on k mod S (summed at the end) when one set has too
// few independent FMA chains to cover the FMA latency (a single row: 4 chains, 16 needed).
template <int MR, int NV>
static inline void accumulate(vf (&acc)[MR][NV], const float* const* a, index_t K, const float* b, index_t ldb) {
  constexpr int S = MR * NV >= 8 ? 1 : MR * NV >= 4 ? 2 : 4;
  const float* ap[MR];
  for (int m = 0; m < MR; ++m) ap[m] = a[m];
  index_t k = 0;
  if (S > 1) {
    vf part[S - 1][MR][NV];
    for (int q = 0; q < S - 1; ++q)
      for (int m = 0; m < MR; ++m)
        for (int v = 0; v < NV; ++v) part[q][m][v] = splat(0.f);
    for (; k + S <= K; k += S) {
      for (int m = 0; m < MR; ++m)
        for (int v = 0; v < NV; ++v) acc[m][v] += ap[m][k] * load(b + k * ldb + v * W);
      for (int q = 0; q < S - 1; ++q)
        for (int m = 0; m < MR; ++m)
          for (int v = 0; v < NV; ++v) part[q][m][v] += ap[m][k + 1 + q] * load(b + (k + 1 + q) * ldb + v * W);
    }
    for (int q = 0; q < S - 1; ++q)
      for (int m = 0; m < MR; ++m)
        for (int v = 0; v < NV; ++v) acc[m][v] += part[q][m][v];
  }
  for (; k < K; ++k) {
    const float* bk = b + k * ldb;
    vf bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = load(bk + v * W);
    for (int m = 0; m < MR; ++m) {
      const float am = ap[m][k];  // scalar · vector: one broadcast (splat() of a variable is not)
      for (int v = 0; v < NV; ++v) acc[m][v] += am * bv[v];
    }
  }
}

template <int MR, int NV>
static void tile_mn(const float* const* init, const float* const* a1, index_t k1, const float* b1,
                    const float* const* a2, index_t k2, const float* b2, index_t ldb, float* c, index_t ldc) {
  vf acc[MR][NV];
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) acc[m][v] = init ? load(init[m] + v * W) : splat(0.f);
  accumulate<MR, NV>(acc, a1, k1, b1, ldb);
  accumulate<MR, NV>(acc, a2, k2, b2, ldb);
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) store(c + m * ldc + v * W, acc[m][v]);
}

using TileFn = void (*)(const float* const*, const float* const*, index_t, const float*, const float* const*,
                        index_t, const float*, index_t, float*, index_t);

template <int MR, int... NV>
static constexpr auto tile_row_table(std::integer_sequence<int, NV...>) {
  return std::array<TileFn, sizeof...(NV)>{&tile_mn<MR, NV + 1>...};
}
template <int... MR>
static constexpr auto tile_table(std::integer_sequence<int, MR...>) {
  return std::array<std::array<TileFn, RNN_NV>, sizeof...(MR)>{
      tile_row_table<MR + 1>(std::make_integer_sequence<int, RNN_NV>{})...};
}
static constexpr auto kTiles = tile_table(std::make_integer_sequence<int, RNN_MR>{});

static void tile(int rows, index_t ncols, const float* const* init, const float* const* a1, index_t k1,
                 const float* b1, const float* const* a2, index_t k2, const float* b2, index_t ldb, float* c,
                 index_t ldc) {
  const index_t nvec = ncols / W;
  const float* in[kMaxRows];
  for (index_t v = 0; v < nvec; v += RNN_NV) {
    const int nv = static_cast<int>(std::min<index_t>(RNN_NV, nvec - v));
    if (init)
      for (int m = 0; m < rows; ++m) in[m] = init[m] + v * W;
    kTiles[rows - 1][nv - 1](init ? in : nullptr, a1, k1, b1 + v * W, a2, k2, b2 + v * W, ldb, c + v * W, ldc);
  }
}

// ---------------------------------------------------------------------------------------
// Gate math.

// A run-time scalar in every lane (splat() of a variable compiles to per-lane inserts);
// f - (+0) is exactly f, -0 included.
static inline vf bcast(float f) { return f - splat(0.f); }

// 1/d for d in [4.9e-3, 2.3] (tanh's denominator, sigmoid's 1 + e): the hardware estimate and one Newton step
// (relative error ~2^-28 from rcp14, ~2^-22 from rcp) rather than a divide, which would be
// the gate math's bottleneck (a vector divide issues every ~8 cycles or so).
__attribute__((always_inline)) static inline vf recip(vf d) {
#if EW_W == 16 && defined(__AVX512F__)
  const vf r = (vf)_mm512_rcp14_ps((__m512)d);
  return r * (splat(2.f) - d * r);
#elif EW_W == 8 && defined(__AVX__)
  const vf r = (vf)_mm256_rcp_ps((__m256)d);
  return r * (splat(2.f) - d * r);
#else
  return splat(1.f) / d;
#endif
}

// tanh as a rational function on [-7.9053, 7.9053] (clamped outside; Eigen's float tanh
// coefficients): ~4e-7 relative error, no exp, ~17 vector ops. The gate math is half of the
// time loop at large batch, so its two transcendentals per unit are what this is for.
// NaN passes (the clamp keeps it).
__attribute__((always_inline)) static inline vf tanh_(vf x) {
  const vf c = vmin(splat(7.90531110763549805f), vmax(splat(-7.90531110763549805f), x));
  const vf z = c * c;
  vf p = splat(-2.76076847742355e-16f);
  p = p * z + splat(2.00018790482477e-13f);
  p = p * z + splat(-8.60467152213735e-11f);
  p = p * z + splat(5.12229709037114e-08f);
  p = p * z + splat(1.48572235717979e-05f);
  p = p * z + splat(6.37261928875436e-04f);
  p = p * z + splat(4.89352455891786e-03f);
  vf q = splat(1.19825839466702e-06f);
  q = q * z + splat(1.18534705686654e-04f);
  q = q * z + splat(2.26843463243900e-03f);
  q = q * z + splat(4.89352518554385e-03f);
  return c * p * recip(q);
}

// v_sigmoid of elementwise_vmath.h (via e = exp(-|x|), accurate in both tails: sigmoid(-20)
// stays ~2e-9, relative) with recip() for the division.
__attribute__((always_inline)) static inline vf sigmoid(vf x) {
  const vf e = v_exp(-vabs(x));
  const vf s = recip(splat(1.f) + e);
  return x >= splat(0.f) ? s : e * s;
}

static inline vf act(vf x, const RnnActivation& a) {
  const vf zero = splat(0.f);
  switch (a.act) {
    case RnnAct::Sigmoid: return sigmoid(x);
    case RnnAct::Tanh: return tanh_(x);
    case RnnAct::Relu: return vmax(zero, x);  // NaN stays NaN
    case RnnAct::HardSigmoid: return vmin(splat(1.f), vmax(zero, bcast(a.alpha) * x + bcast(a.beta)));
    case RnnAct::Affine: return bcast(a.alpha) * x + bcast(a.beta);
    case RnnAct::LeakyRelu: return x < zero ? x * bcast(a.alpha) : x;
    case RnnAct::ThresholdedRelu: return x >= bcast(a.alpha) ? x : zero;
    case RnnAct::ScaledTanh: return bcast(a.alpha) * tanh_(bcast(a.beta) * x);
    case RnnAct::Elu: return x > zero ? x : bcast(a.alpha) * v_expm1(x);
    case RnnAct::Softsign: return x / (splat(1.f) + vabs(x));
    case RnnAct::Softplus: return vmax(zero, x) + v_log1p_pos(v_exp(-vabs(x)));
  }
  return x;
}

// One vector of units [u, u + n) of one row: gate g's pre-activation (tile + bias) and state I/O.
struct Lane {
  const float* t;  // tile: group g at t + g·kRnnBlock
  const float* b;  // bias, same layout
  index_t u, n;
  vf gate(int g) const { return load(t + g * kRnnBlock) + load(b + g * kRnnBlock); }
  vf ld(const float* p) const { return n == W ? load(p + u) : load_partial(p + u, n); }
  void st(float* p, vf v) const {
    if (n == W) store(p + u, v);
    else store_partial(p + u, v, n);
  }
  // A store that bypasses the caches when it can (a whole aligned vector): for the training
  // tape, read back only by the backward pass (the writer fences, see rnn_loop.cpp).
  void st_stream(float* p, vf v) const {
#if EW_W == 16 && defined(__AVX512F__)
    if (n == W && (reinterpret_cast<std::uintptr_t>(p + u) & 63) == 0) return _mm512_stream_ps(p + u, (__m512)v);
#elif EW_W == 8 && defined(__AVX__)
    if (n == W && (reinterpret_cast<std::uintptr_t>(p + u) & 31) == 0) return _mm256_stream_ps(p + u, (__m256)v);
#endif
    st(p, v);
  }
};

// fn(n, rows, lanes) over every row and every vector of units of blocks [j0, j0 + nb),
// RNN_LANES (row, lane) pairs a call (n = std::integral_constant<int, RNN_LANES>), the
// remainder in pairs, then one by one: the gate math of one lane is a chain of ~100 dependent
// operations, several lanes written side by side overlap (out-of-order execution alone does not
// reach far enough ahead).
template <class F>
static inline void for_lanes(const CellParams& P, int rows, const CellRow* row, const float* tile, index_t ldt,
                             index_t j0, index_t nb, F fn) {
  const index_t H = P.hidden, gw = P.groups * kRnnBlock;
  const CellRow* r[RNN_LANES];
  Lane l[RNN_LANES];
  int k = 0;
  for (int m = 0; m < rows; ++m)
    for (index_t i = 0; i < nb; ++i) {
      const index_t j = j0 + i;
      for (index_t q = 0; q < kRnnBlock; q += W) {
        const index_t u = j * kRnnBlock + q;
        if (u >= H) break;
        r[k] = row + m;
        l[k] = Lane{tile + m * ldt + i * gw + q, P.bias + j * gw + q, u, std::min<index_t>(W, H - u)};
        if (++k == RNN_LANES) {
          fn(std::integral_constant<int, RNN_LANES>{}, r, l);
          k = 0;
        }
      }
    }
  int i = 0;
  if constexpr (RNN_LANES > 2)  // a remainder of 2 or 3 (6 rows of one vector: 4 + 2) still overlaps
    for (; i + 2 <= k; i += 2) fn(std::integral_constant<int, 2>{}, r + i, l + i);
  for (; i < k; ++i) fn(std::integral_constant<int, 1>{}, r + i, l + i);
}

// Activation policies: the cells' default activations inlined, or any (a switch per vector).
struct Sig {
  vf operator()(vf x) const { return sigmoid(x); }
};
struct Tanh {
  vf operator()(vf x) const { return tanh_(x); }
};
struct Any {
  RnnActivation a;
  vf operator()(vf x) const { return act(x, a); }
};
// Clipping: none, or to [lo, hi] (NaN passes: vmax/vmin return their second operand on NaN).
struct NoClip {
  vf operator()(vf x) const { return x; }
};
struct Clip {
  vf lo, hi;
  vf operator()(vf x) const { return vmin(hi, vmax(lo, x)); }
};

// The cells below work on N lanes at once: each operation written for every lane in turn.
#define FOR_LANES for (int k = 0; k < N; ++k)

// The new state h: into the next step's buffer and this step's Y row.
static inline void put_h(const Lane& L, const CellRow& r, vf h) {
  L.st(r.h_next, h);
  if (r.y) L.st(r.y, h);
}
// Training: values into fields 0, 1, ... of the step's tape row (engine/rnn.h), field f at f·H.
static inline void tape_put(const Lane&, float*, index_t, int) {}
template <class... V>
static inline void tape_put(const Lane& L, float* tape, index_t H, int field, vf v, V... rest) {
  L.st_stream(tape + field * H, v);
  tape_put(L, tape, H, field + 1, rest...);
}
// GRU's state update from z, the h gate and the previous state.
static inline vf gru_update(const Lane& L, const CellRow& r, vf z, vf hh) {
  return (splat(1.f) - z) * hh + z * L.ld(r.h_prev);
}

// ONNX gate order i, o, f, c; peepholes i, o, f.
template <bool kTape, bool kGeneral, class F, class G, class Hf, class C>
static void lstm(const CellParams& P, F fa, G ga, Hf ha, C cl, int rows, const CellRow* row, const float* tile,
                 index_t ldt, index_t j0, index_t nb) {
  const index_t H = P.hidden;
  for_lanes(P, rows, row, tile, ldt, j0, nb, [&](auto n, const CellRow* const* r, const Lane* L) {
    constexpr int N = decltype(n)::value;
    vf gi[N], go[N], gf[N], gc[N], cp[N], c[N];
    FOR_LANES gi[k] = L[k].gate(0), go[k] = L[k].gate(1), gf[k] = L[k].gate(2), gc[k] = L[k].gate(3);
    FOR_LANES cp[k] = L[k].ld(r[k]->c);
    if (kGeneral && P.p) FOR_LANES {
        gi[k] += L[k].ld(P.p) * cp[k];
        if (!P.input_forget) gf[k] += L[k].ld(P.p + 2 * H) * cp[k];
      }
    FOR_LANES gi[k] = fa(cl(gi[k]));
    FOR_LANES gf[k] = kGeneral && P.input_forget ? splat(1.f) - gi[k] : fa(cl(gf[k]));
    FOR_LANES gc[k] = ga(cl(gc[k]));
    FOR_LANES c[k] = gf[k] * cp[k] + gi[k] * gc[k];
    if (kGeneral && P.p) FOR_LANES go[k] += L[k].ld(P.p + H) * c[k];
    FOR_LANES go[k] = fa(cl(go[k]));
    FOR_LANES L[k].st(r[k]->c, c[k]), put_h(L[k], *r[k], go[k] * ha(c[k]));
    if constexpr (kTape)
      FOR_LANES tape_put(L[k], r[k]->tape, H, 0, gi[k], go[k], gf[k], gc[k], cp[k], L[k].ld(r[k]->h_prev));
  });
}

// Groups z, r, x·Wₕᵀ + Wbₕ, h·Rₕᵀ + Rbₕ (linear_before_reset).
template <bool kTape, class F, class G, class C>
static void gru(const CellParams& P, F fa, G ga, C cl, int rows, const CellRow* row, const float* tile, index_t ldt,
                index_t j0, index_t nb) {
  for_lanes(P, rows, row, tile, ldt, j0, nb, [&](auto n, const CellRow* const* r, const Lane* L) {
    constexpr int N = decltype(n)::value;
    vf z[N], rg[N], hh[N];
    FOR_LANES z[k] = fa(cl(L[k].gate(0)));
    FOR_LANES rg[k] = fa(cl(L[k].gate(1)));
    FOR_LANES hh[k] = ga(cl(L[k].gate(2) + rg[k] * L[k].gate(3)));
    FOR_LANES put_h(L[k], *r[k], gru_update(L[k], *r[k], z[k], hh[k]));
    if constexpr (kTape) FOR_LANES tape_put(L[k], r[k]->tape, P.hidden, 0, z[k], rg[k], hh[k], L[k].gate(3),
                                                      L[k].ld(r[k]->h_prev));
  });
}

template <bool kTape, class F, class C>
static void rnn(const CellParams& P, F fa, C cl, int rows, const CellRow* row, const float* tile, index_t ldt,
                index_t j0, index_t nb) {
  for_lanes(P, rows, row, tile, ldt, j0, nb, [&](auto n, const CellRow* const* r, const Lane* L) {
    constexpr int N = decltype(n)::value;
    vf h[N];
    FOR_LANES h[k] = fa(cl(L[k].gate(0)));
    FOR_LANES put_h(L[k], *r[k], h[k]);
    if constexpr (kTape) FOR_LANES tape_put(L[k], r[k]->tape, P.hidden, 0, h[k], L[k].ld(r[k]->h_prev));
  });
}

// GRU without linear_before_reset, part 0: z and r ⊙ h_prev for part 1's product.
template <bool kTape, class F, class C>
static void gru_zr(const CellParams& P, F fa, C cl, int rows, const CellRow* row, const float* tile, index_t ldt,
                   index_t j0, index_t nb) {
  for_lanes(P, rows, row, tile, ldt, j0, nb, [&](auto n, const CellRow* const* r, const Lane* L) {
    constexpr int N = decltype(n)::value;
    vf z[N], rg[N];
    FOR_LANES z[k] = fa(cl(L[k].gate(0)));
    FOR_LANES rg[k] = fa(cl(L[k].gate(1)));
    FOR_LANES {
      const vf hp = L[k].ld(r[k]->h_prev), rh = rg[k] * hp;
      L[k].st(r[k]->z, z[k]);
      L[k].st(r[k]->rh, rh);
      if constexpr (kTape)
        tape_put(L[k], r[k]->tape, P.hidden, 0, z[k], rg[k]), tape_put(L[k], r[k]->tape, P.hidden, 3, rh, hp);
    }
  });
}

// Part 1: the h gate and the state update.
template <bool kTape, class G, class C>
static void gru_h(const CellParams& P, G ga, C cl, int rows, const CellRow* row, const float* tile, index_t ldt,
                  index_t j0, index_t nb) {
  for_lanes(P, rows, row, tile, ldt, j0, nb, [&](auto n, const CellRow* const* r, const Lane* L) {
    constexpr int N = decltype(n)::value;
    vf hh[N];
    FOR_LANES hh[k] = ga(cl(L[k].gate(0)));
    FOR_LANES put_h(L[k], *r[k], gru_update(L[k], *r[k], L[k].ld(r[k]->z), hh[k]));
    if constexpr (kTape) FOR_LANES L[k].st_stream(r[k]->tape + 2 * P.hidden, hh[k]);
  });
}

#undef FOR_LANES

// kTape: also the training tape (CellRow::tape, never null then).
template <bool kTape>
static void cells(const CellParams& P, int rows, const CellRow* row, const float* tile, index_t ldt, index_t j0,
                  index_t nb) {
  const float inf = __builtin_huge_valf();
  const Clip cl{bcast(P.clip > 0.f ? -P.clip : -inf), bcast(P.clip > 0.f ? P.clip : inf)};
  const Any fa{P.f}, ga{P.g}, ha{P.h};
  const bool plain = !(P.clip > 0.f) && P.f.act == RnnAct::Sigmoid && P.g.act == RnnAct::Tanh;
  switch (P.phase) {
    case Phase::Whole:
      if (P.cell == RnnCell::Lstm) {
        if (plain && P.h.act == RnnAct::Tanh && !P.p && !P.input_forget)
          return lstm<kTape, false>(P, Sig{}, Tanh{}, Tanh{}, NoClip{}, rows, row, tile, ldt, j0, nb);
        return lstm<kTape, true>(P, fa, ga, ha, cl, rows, row, tile, ldt, j0, nb);
      }
      if (P.cell == RnnCell::Gru) {
        if (plain) return gru<kTape>(P, Sig{}, Tanh{}, NoClip{}, rows, row, tile, ldt, j0, nb);
        return gru<kTape>(P, fa, ga, cl, rows, row, tile, ldt, j0, nb);
      }
      if (!(P.clip > 0.f) && P.f.act == RnnAct::Tanh)
        return rnn<kTape>(P, Tanh{}, NoClip{}, rows, row, tile, ldt, j0, nb);
      return rnn<kTape>(P, fa, cl, rows, row, tile, ldt, j0, nb);
    case Phase::GruZr:
      if (plain) return gru_zr<kTape>(P, Sig{}, NoClip{}, rows, row, tile, ldt, j0, nb);
      return gru_zr<kTape>(P, fa, cl, rows, row, tile, ldt, j0, nb);
    case Phase::GruH:
      if (plain) return gru_h<kTape>(P, Tanh{}, NoClip{}, rows, row, tile, ldt, j0, nb);
      return gru_h<kTape>(P, ga, cl, rows, row, tile, ldt, j0, nb);
  }
}

// ---------------------------------------------------------------------------------------
// Backward gate math (training; engine/rnn.h lists the tape's fields). Each activation's
// derivative comes from its output y (rnn_backward_supports says which can).

static inline vf dact(vf y, const RnnActivation& a) {
  const vf zero = splat(0.f), one = splat(1.f);
  switch (a.act) {
    case RnnAct::Sigmoid: return y * (one - y);
    case RnnAct::Tanh: return one - y * y;
    case RnnAct::Relu: return y > zero ? one : zero;
    case RnnAct::HardSigmoid: return y > zero && y < one ? bcast(a.alpha) : zero;
    case RnnAct::Affine: return bcast(a.alpha);
    case RnnAct::LeakyRelu: return y > zero ? one : bcast(a.alpha);
    case RnnAct::ScaledTanh: return bcast(a.beta) * (bcast(a.alpha) - y * y * bcast(1.f / a.alpha));
    case RnnAct::Elu: return y > zero ? one : y + bcast(a.alpha);
    case RnnAct::Softsign: {
      const vf d = one - vabs(y);
      return d * d;
    }
    case RnnAct::Softplus: return one - v_exp(-y);
    default: return zero;  // refused before (rnn_backward_supports)
  }
}
struct DSig {
  vf operator()(vf y) const { return y * (splat(1.f) - y); }
};
struct DTanh {
  vf operator()(vf y) const { return splat(1.f) - y * y; }
};
struct DAny {
  RnnActivation a;
  vf operator()(vf y) const { return dact(y, a); }
};

// fn(row, lane) for every row and every vector of its H units (a partial one last).
template <class F>
static inline void for_units(index_t H, int rows, const GradRow* row, F fn) {
  for (int m = 0; m < rows; ++m)
    for (index_t u = 0; u < H; u += W) fn(row[m], Lane{nullptr, nullptr, u, std::min<index_t>(W, H - u)});
}

// dh of the step's output: from the later steps plus the step's dY.
static inline vf dh_of(const Lane& L, const GradRow& r) {
  const vf dh = L.ld(r.dh);
  return r.dy ? dh + L.ld(r.dy) : dh;
}
static inline void add_to(const Lane& L, float* p, vf v) { L.st(p, L.ld(p) + v); }

// h(c) is recomputed from c = f ⊙ c_prev + i ⊙ c̃ (ha: the h activation, dha its derivative).
template <class F, class G, class Ha, class Hd>
static void lstm_backward(const GradParams& P, F df, G dg, Ha ha, Hd dh_act, int rows, const GradRow* row) {
  const index_t H = P.hidden;
  float* const dgi = P.db + P.col[0] * H;
  float* const dgo = P.db + P.col[1] * H;
  float* const dgf = P.db + P.col[2] * H;
  float* const dgc = P.db + P.col[3] * H;
  for_units(H, rows, row, [&](const GradRow& r, const Lane& L) {
    const float* tp = r.tape;
    const vf i = L.ld(tp), o = L.ld(tp + H), f = L.ld(tp + 2 * H), g = L.ld(tp + 3 * H);
    const vf cp = L.ld(tp + 4 * H), hc = ha(f * cp + i * g);
    const vf dh = dh_of(L, r);
    const vf dc = L.ld(r.dc) + dh * o * dh_act(hc);
    const vf dpo = dh * hc * df(o);
    const vf dpi = (P.input_forget ? dc * (g - cp) : dc * g) * df(i);
    const vf dpf = P.input_forget ? splat(0.f) : dc * cp * df(f);
    const vf dpg = dc * i * dg(g);
    L.st(r.dg + P.col[0] * H, dpi), L.st(r.dg + P.col[1] * H, dpo);
    L.st(r.dg + P.col[2] * H, dpf), L.st(r.dg + P.col[3] * H, dpg);
    L.st(r.dc, dc * f);
    L.st(r.dh, splat(0.f));
    add_to(L, dgi, dpi), add_to(L, dgo, dpo), add_to(L, dgf, dpf), add_to(L, dgc, dpg);
  });
}

// GRU: h = (1 - z) ⊙ h̃ + z ⊙ h_prev. Whole: linear_before_reset (h̃'s recurrent part is
// r ⊙ (h·Rₕᵀ + Rbₕ)).
template <class F, class G>
static void gru_backward(const GradParams& P, F df, G dg, int rows, const GradRow* row) {
  const index_t H = P.hidden;
  float* const dbz = P.db + P.col[0] * H;
  float* const dbr = P.db + P.col[1] * H;
  float* const dbh = P.db + P.col[2] * H;
  float* const dbrh = P.db + 3 * H;  // linear_before_reset's Rbₕ
  for_units(H, rows, row, [&](const GradRow& r, const Lane& L) {
    const float* tp = r.tape;
    if (P.phase == GradPhase::GruR) {  // r from t = d(r ⊙ h_prev)
      const vf t = L.ld(r.t), rg = L.ld(tp + H), hp = L.ld(tp + 4 * H);
      const vf dpr = t * hp * df(rg);
      L.st(r.dg + P.col[1] * H, dpr);
      add_to(L, r.dh, t * rg);
      add_to(L, dbr, dpr);
      return;
    }
    const vf z = L.ld(tp), n = L.ld(tp + 2 * H), hp = L.ld(tp + 4 * H);
    const vf dh = dh_of(L, r);
    const vf dpn = dh * (splat(1.f) - z) * dg(n);
    const vf dpz = dh * (hp - n) * df(z);
    L.st(r.dg + P.col[0] * H, dpz), L.st(r.dg + P.col[2] * H, dpn);
    L.st(r.dh, dh * z);
    add_to(L, dbz, dpz), add_to(L, dbh, dpn);
    if (P.phase == GradPhase::Whole) {
      const vf rg = L.ld(tp + H), hr = L.ld(tp + 3 * H);
      const vf dpr = dpn * hr * df(rg), dgr = dpn * rg;
      L.st(r.dg + P.col[1] * H, dpr);
      L.st(r.dgr, dgr);
      add_to(L, dbr, dpr), add_to(L, dbrh, dgr);
    }
  });
}

template <class F>
static void rnn_backward_cell(const GradParams& P, F df, int rows, const GradRow* row) {
  const index_t H = P.hidden;
  for_units(H, rows, row, [&](const GradRow& r, const Lane& L) {
    const vf dp = dh_of(L, r) * df(L.ld(r.tape));
    L.st(r.dg, dp);
    L.st(r.dh, splat(0.f));
    add_to(L, P.db, dp);
  });
}

static void cells_backward(const GradParams& P, int rows, const GradRow* row) {
  const DAny f{P.f}, g{P.g}, h{P.h};
  const bool sig = P.f.act == RnnAct::Sigmoid, tanh_g = P.g.act == RnnAct::Tanh;
  switch (P.cell) {
    case RnnCell::Lstm:
      if (sig && tanh_g && P.h.act == RnnAct::Tanh)
        return lstm_backward(P, DSig{}, DTanh{}, Tanh{}, DTanh{}, rows, row);
      return lstm_backward(P, f, g, Any{P.h}, h, rows, row);
    case RnnCell::Gru:
      if (sig && tanh_g) return gru_backward(P, DSig{}, DTanh{}, rows, row);
      return gru_backward(P, f, g, rows, row);
    case RnnCell::Rnn:
      if (P.f.act == RnnAct::Tanh) return rnn_backward_cell(P, DTanh{}, rows, row);
      return rnn_backward_cell(P, f, rows, row);
  }
}

static const Kernels kKernelSet = {RNN_MR, &tile, &cells<false>, &cells<true>, &cells_backward};
