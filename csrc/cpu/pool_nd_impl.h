// The row kernels of N-d NCHW pooling (see pool_nd.cpp), compiled once per ISA:
// pool_nd_{avx512,avx2,portable}.cpp define POOLND_NS and include this file after the standard
// headers and "engine/nchw.h". Helpers sit in an anonymous namespace so no ISA-specific
// inline code is shared between translation units.
//
// One output row (OW outputs at fixed plane, od, oh) at a time, two ways: without indices at
// stride 1 or 2, each output's taps are reduced in registers over the window's valid input
// rows, a vector of outputs at once (accumulate_regs); otherwise tap-major, each (kd, kh, kw)
// swept over the row in place (indices, other strides, windows of more than 64 rows).

namespace engine {
namespace POOLND_NS {
namespace {

// [lo, hi): the o in [0, n) with 0 <= o·s + off < in (s >= 1).
inline void valid_range(index_t n, index_t s, index_t off, index_t in, index_t& lo, index_t& hi) {
  lo = off >= 0 ? 0 : (-off + s - 1) / s;
  hi = off >= in ? 0 : (in - 1 - off) / s + 1;
  if (hi > n) hi = n;
  if (lo > n) lo = n;
  if (hi < lo) hi = lo;
}

template <class T>
constexpr T lowest() {
  return std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity()
                                              : std::numeric_limits<T>::lowest();
}

// Vectors of POOLND_VB bytes (the ISA's width), GCC vector extensions.
template <class T>
struct Lanes {
  static constexpr index_t n = POOLND_VB / sizeof(T);
  typedef T vec __attribute__((vector_size(POOLND_VB)));
  using I = std::conditional_t<sizeof(T) == 1, std::int8_t, std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>>;
  typedef I ivec __attribute__((vector_size(POOLND_VB)));
  static vec load(const T* p) {
    vec v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(T* p, vec v) { std::memcpy(p, &v, sizeof v); }
  static vec load_even(const T* p) {  // p[0], p[2], ..., p[2n-2] (reads p[0, 2n))
    ivec even;
    for (index_t k = 0; k < n; ++k) even[k] = static_cast<I>(2 * k);
    return __builtin_shuffle(load(p), load(p + n), even);
  }
  static ivec iota() {
    ivec v;
    for (index_t k = 0; k < n; ++k) v[k] = static_cast<I>(k);
    return v;
  }
};

// The accumulations, each written once for scalars and vectors. Max: NaN wins (torch's
// rule), else the larger; ties keep the earlier tap.
struct MaxOp {
  template <class X>
  X operator()(X a, X v) const { return ((v > a) | (v != v)) ? v : a; }
};
struct SumOp {
  template <class X>
  X operator()(X a, X v) const { return a + v; }
};
struct AbsSumOp {
  template <class X>
  X operator()(X a, X v) const { return a + (v < 0 ? -v : v); }
};
struct SquareSumOp {
  template <class X>
  X operator()(X a, X v) const { return a + v * v; }
};
template <class T>
struct PowSumOp {
  T p;
  T operator()(T a, T v) const { return a + std::pow(std::fabs(v), p); }
};

template <class T>
inline T max_nan(T acc, T v) { return MaxOp()(acc, v); }

// acc[o] = op(acc[o], src[o·S + off]) for o in [lo, hi); src is a row of W elements. Stride 1
// and 2 run whole vectors, then one vector ending at hi whose lanes already done keep acc.
template <index_t S, class T, class Op>
inline void sweep(T* __restrict__ acc, const T* __restrict__ src, index_t lo, index_t hi, index_t s, index_t off,
                  index_t W, Op op) {
  index_t o = lo;
  if constexpr ((S == 1 || S == 2) && !std::is_same<Op, PowSumOp<T>>::value) {
    using L = Lanes<T>;
    constexpr index_t n = L::n;
    auto src_vec = [&](index_t at) { return S == 1 ? L::load(src + at + off) : L::load_even(src + 2 * at + off); };
    for (; o + n <= hi && (o + n) * S + off <= W; o += n) L::store(acc + o, op(L::load(acc + o), src_vec(o)));
    const index_t b = hi - n;
    if (o < hi && b >= lo && hi * S + off <= W) {
      const typename L::vec a = L::load(acc + b), r = op(a, src_vec(b));
      L::store(acc + b, L::iota() >= static_cast<typename L::I>(o - b) ? r : a);
      return;
    }
  }
  const index_t st = S > 0 ? S : s;
  for (; o < hi; ++o) acc[o] = op(acc[o], src[o * st + off]);
}

template <class T, class Op>
inline void sweep_any(T* acc, const T* src, index_t lo, index_t hi, index_t s, index_t off, index_t W, Op op) {
  if (s == 1) sweep<1>(acc, src, lo, hi, s, off, W, op);
  else if (s == 2) sweep<2>(acc, src, lo, hi, s, off, W, op);
  else sweep<0>(acc, src, lo, hi, s, off, W, op);
}

// Taps k in [0, K) with lo <= base + k·dil < hi.
inline index_t count_taps(index_t base, index_t K, index_t dil, index_t lo, index_t hi) {
  index_t n = 0;
  for (index_t k = 0; k < K; ++k) {
    const index_t q = base + k * dil;
    n += q >= lo && q < hi;
  }
  return n;
}

// Accumulates a whole output row with each output's taps summed in registers: `rows` are the
// window's valid input rows. Outputs whose every kw tap is inside the row run n at a time
// (the last chunk may overlap the one before it: outputs are computed from scratch, so
// writing one twice is harmless) and are divided by `div` when it is not 0 (average: the
// divisor of an output whose taps are all inside the row); border outputs clip their taps.
// Returns the outputs done with division, [first, second).
template <index_t S, class T, class Op>
std::pair<index_t, index_t> accumulate_regs(T* y, const T* const* rows, index_t nrows, index_t OW, index_t W,
                                            index_t KW, index_t dil, index_t pad, T init, Op op, T div) {
  using L = Lanes<T>;
  constexpr index_t n = L::n;
  const index_t offmax = (KW - 1) * dil - pad;
  const index_t A = std::min(OW, pad > 0 ? (pad + S - 1) / S : index_t(0));
  index_t B = W - 1 - offmax >= 0 ? std::min(OW, (W - 1 - offmax) / S + 1) : A;
  B = std::max(A, B);
  // A stride-2 load reads one element past its last tap: that one must be in the row too.
  const index_t vB = S == 2 ? std::max(A, std::min(B, (W - offmax) / 2)) : B;
  auto scalar = [&](index_t o) {
    const index_t base = o * S - pad;  // taps kw in [k0, k1) are inside the row
    const index_t k0 = base >= 0 ? 0 : (-base + dil - 1) / dil;
    const index_t k1 = base >= W ? 0 : std::min(KW, (W - 1 - base) / dil + 1);
    T acc = init;
    for (index_t r = 0; r < nrows; ++r)
      for (index_t kw = k0; kw < k1; ++kw) acc = op(acc, rows[r][base + kw * dil]);
    y[o] = acc;
  };
  auto chunk = [&](index_t o) {
    typename L::vec acc = typename L::vec{} + init;
    for (index_t r = 0; r < nrows; ++r) {
      const T* p = rows[r] + o * S - pad;
      for (index_t kw = 0; kw < KW; ++kw)
        acc = op(acc, S == 1 ? L::load(p + kw * dil) : L::load_even(p + kw * dil));
    }
    if (div != T(0)) acc = acc / div;
    L::store(y + o, acc);
  };
  if (vB - A < n) {
    for (index_t o = 0; o < OW; ++o) scalar(o);
    return {0, 0};
  }
  index_t o = 0;
  for (; o < A; ++o) scalar(o);
  for (; o + n <= vB; o += n) chunk(o);
  if (o < vB) chunk(vB - n), o = vB;
  for (; o < OW; ++o) scalar(o);
  return {A, vB};
}

template <class T>
void pool_row(T* y, std::int64_t* idx, const T* x, index_t plane, index_t od, index_t oh, const WindowND& g,
              const PoolParams& pp, const index_t* kw_ranges) {
  const index_t D = g.in[0], H = g.in[1], W = g.in[2], OW = g.out[2];
  const index_t bd = od * g.stride[0] - g.pad[0], bh = oh * g.stride[1] - g.pad[1];
  const bool is_max = pp.kind == PoolKind::Max;
  const T init = is_max ? lowest<T>() : T(0);
  const index_t sw = g.stride[2];
  // Average divisor: taps inside the input, or (count_include_pad) inside the padded input.
  const bool cip = pp.count_include_pad;
  const index_t cdh = count_taps(bd, g.k[0], g.dil[0], cip ? -g.pad[0] : 0, cip ? D + pp.pad_end[0] : D) *
                      count_taps(bh, g.k[1], g.dil[1], cip ? -g.pad[1] : 0, cip ? H + pp.pad_end[1] : H);
  std::pair<index_t, index_t> done{0, 0};  // outputs already divided
  constexpr index_t kMaxRows = 64;
  const bool regs = !idx && (sw == 1 || sw == 2) && g.k[0] * g.k[1] <= kMaxRows &&
                    !(pp.kind == PoolKind::Lp && pp.p > 2);
  if (regs) {
    const T* rows[kMaxRows];
    index_t nrows = 0;
    for (index_t kd = 0; kd < g.k[0]; ++kd) {
      const index_t id = bd + kd * g.dil[0];
      if (id < 0 || id >= D) continue;
      for (index_t kh = 0; kh < g.k[1]; ++kh) {
        const index_t ih = bh + kh * g.dil[1];
        if (ih >= 0 && ih < H) rows[nrows++] = x + (id * H + ih) * W;
      }
    }
    const T div = pp.kind == PoolKind::Avg ? static_cast<T>(cdh * g.k[2]) : T(0);  // 0: none
    auto acc = [&](auto op) {
      done = sw == 1 ? accumulate_regs<1>(y, rows, nrows, OW, W, g.k[2], g.dil[2], g.pad[2], init, op, div)
                     : accumulate_regs<2>(y, rows, nrows, OW, W, g.k[2], g.dil[2], g.pad[2], init, op, div);
    };
    if (is_max) acc(MaxOp());
    else if constexpr (std::is_floating_point<T>::value) {
      if (pp.kind == PoolKind::Avg) acc(SumOp());
      else if (pp.p == 1) acc(AbsSumOp());
      else acc(SquareSumOp());
    }
    if (div == T(0)) done = {0, 0};  // a window with no valid row: 0/0 below, as the reference
  }
  if (!regs) {  // tap-major: each (kd, kh, kw) swept over the row in place
    for (index_t o = 0; o < OW; ++o) y[o] = init;
    if (idx)
      for (index_t o = 0; o < OW; ++o) idx[o] = -1;
  }
  for (index_t kd = 0; kd < (regs ? 0 : g.k[0]); ++kd) {
    const index_t id = bd + kd * g.dil[0];
    if (id < 0 || id >= D) continue;
    for (index_t kh = 0; kh < g.k[1]; ++kh) {
      const index_t ih = bh + kh * g.dil[1];
      if (ih < 0 || ih >= H) continue;
      const T* row = x + (id * H + ih) * W;
      for (index_t kw = 0; kw < g.k[2]; ++kw) {
        const index_t off = kw * g.dil[2] - g.pad[2];
        index_t lo, hi;
        if (kw_ranges) lo = kw_ranges[2 * kw], hi = kw_ranges[2 * kw + 1];
        else valid_range(OW, sw, off, W, lo, hi);
        if (idx) {  // first max in window order wins; a NaN takes over (torch)
          const index_t base = plane * D * H * W;
          for (index_t o = lo; o < hi; ++o) {
            const index_t iw = o * sw + off;
            const T v = row[iw];
            bool take = idx[o] < 0 || v > y[o];
            if constexpr (std::is_floating_point<T>::value) take = take || v != v;
            if (take) {
              y[o] = v;
              idx[o] = base + (pp.col_major ? id + D * (ih + H * iw) : (id * H + ih) * W + iw);
            }
          }
        } else if (is_max) {
          sweep_any(y, row, lo, hi, sw, off, W, MaxOp());
        } else if constexpr (std::is_floating_point<T>::value) {
          if (pp.kind == PoolKind::Avg) sweep_any(y, row, lo, hi, sw, off, W, SumOp());
          else if (pp.p == 1) sweep_any(y, row, lo, hi, sw, off, W, AbsSumOp());
          else if (pp.p == 2) sweep_any(y, row, lo, hi, sw, off, W, SquareSumOp());
          else sweep_any(y, row, lo, hi, sw, off, W, PowSumOp<T>{static_cast<T>(pp.p)});
        }
      }
    }
  }
  if constexpr (std::is_floating_point<T>::value) {
    if (pp.kind == PoolKind::Avg) {
      const index_t wlo = cip ? -g.pad[2] : 0, whi = cip ? W + pp.pad_end[2] : W;
      // Outputs whose whole window row lies inside [wlo, whi) share one divisor.
      index_t a, b;
      valid_range(OW, sw, -g.pad[2] - wlo, whi - wlo - (g.k[2] - 1) * g.dil[2], a, b);
      const T full = static_cast<T>(cdh * g.k[2]);
      auto divide = [&](index_t o0, index_t o1) {
        for (index_t o = o0; o < o1; ++o) y[o] = y[o] / full;
      };
      divide(a, std::max(a, std::min(b, done.first)));
      divide(std::min(b, std::max(a, done.second)), b);
      auto edge = [&](index_t o) {
        y[o] = y[o] / static_cast<T>(cdh * count_taps(o * sw - g.pad[2], g.k[2], g.dil[2], wlo, whi));
      };
      for (index_t o = 0; o < a; ++o) edge(o);
      for (index_t o = b; o < OW; ++o) edge(o);
    } else if (pp.kind == PoolKind::Lp) {
      if (pp.p == 2) for (index_t o = 0; o < OW; ++o) y[o] = std::sqrt(y[o]);
      else if (pp.p != 1) {
        const T inv = T(1) / static_cast<T>(pp.p);
        for (index_t o = 0; o < OW; ++o) y[o] = std::pow(y[o], inv);
      }
    }
  }
}

}  // namespace

template <class T>
void rows(T* y, std::int64_t* idx, const T* x, index_t r0, index_t r1, const WindowND& g, const PoolParams& pp) {
  const index_t OD = g.out[0], OH = g.out[1], OW = g.out[2];
  // The outputs each kw reaches are the same on every row: found once (the divisions add up).
  constexpr index_t kMaxKw = 64;
  index_t ranges[2 * kMaxKw];
  const bool cached = g.k[2] <= kMaxKw;
  if (cached)
    for (index_t kw = 0; kw < g.k[2]; ++kw)
      valid_range(OW, g.stride[2], kw * g.dil[2] - g.pad[2], g.in[2], ranges[2 * kw], ranges[2 * kw + 1]);
  for (index_t r = r0; r < r1; ++r) {
    const index_t plane = r / (OD * OH), od = (r / OH) % OD, oh = r % OH;
    pool_row(y + r * OW, idx ? idx + r * OW : nullptr, x + plane * g.in_size(), plane, od, oh, g, pp,
             cached ? ranges : nullptr);
  }
}

// y[p] = max or mean of x[p·size : (p+1)·size] for p in [p0, p1) (NaN propagates).
template <class T>
void global(T* y, const T* x, index_t p0, index_t p1, index_t size, bool is_max) {
  constexpr int L = 16;  // independent lanes, so the reduction vectorises
  for (index_t p = p0; p < p1; ++p) {
    const T* v = x + p * size;
    T acc[L];
    for (int l = 0; l < L; ++l) acc[l] = is_max ? lowest<T>() : T(0);
    index_t i = 0;
    if (is_max) {
      for (; i + L <= size; i += L)
        for (int l = 0; l < L; ++l) acc[l] = max_nan(acc[l], v[i + l]);
      for (; i < size; ++i) acc[0] = max_nan(acc[0], v[i]);
      T m = acc[0];
      for (int l = 1; l < L; ++l) m = max_nan(m, acc[l]);
      y[p] = m;
    } else {
      for (; i + L <= size; i += L)
        for (int l = 0; l < L; ++l) acc[l] += v[i + l];
      for (; i < size; ++i) acc[0] += v[i];
      for (int h = L / 2; h >= 1; h /= 2)
        for (int l = 0; l < h; ++l) acc[l] += acc[l + h];
      y[p] = acc[0] / static_cast<T>(size);
    }
  }
}

#define POOLND_ROWS(T) \
  template void rows<T>(T*, std::int64_t*, const T*, index_t, index_t, const WindowND&, const PoolParams&);
POOLND_ROWS(float)
POOLND_ROWS(double)
POOLND_ROWS(std::int8_t)
POOLND_ROWS(std::uint8_t)
template void global<float>(float*, const float*, index_t, index_t, index_t, bool);
template void global<double>(double*, const double*, index_t, index_t, index_t, bool);

}  // namespace POOLND_NS
}  // namespace engine
