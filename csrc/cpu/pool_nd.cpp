// N-d pooling over NCHW planes (the ONNX layout): max (with optional argmax indices), average
// and Lp, for 1..3 spatial dims, plus the global reductions. One output row (a run of OW
// outputs) is accumulated in place: for each valid (kd, kh) input row and each kw, the
// outputs whose tap falls inside the row are swept at a compile-time stride (1, 2 or any),
// so the common stride-1/2 windows vectorise. Rows split over the pool when big.
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>

#include "convnd_window.h"
#include "engine/threadpool.h"

namespace engine {
namespace {

constexpr double kParallelWork = 2e5;  // taps read below which pooling stays on the caller

template <class T>
constexpr T lowest() {
  return std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity()
                                              : std::numeric_limits<T>::lowest();
}

template <class T>
inline T max_nan(T acc, T v) {  // NaN wins (torch's rule), else the larger
  if constexpr (std::is_floating_point<T>::value) return (v > acc || v != v) ? v : acc;
  else return v > acc ? v : acc;
}

// acc[o] = op(acc[o], src[o·S + off]) for o in [lo, hi).
template <index_t S, class T, class Op>
inline void sweep(T* acc, const T* src, index_t lo, index_t hi, index_t s, index_t off, Op op) {
  const index_t st = S > 0 ? S : s;
  for (index_t o = lo; o < hi; ++o) acc[o] = op(acc[o], src[o * st + off]);
}

template <class T, class Op>
inline void sweep_any(T* acc, const T* src, index_t lo, index_t hi, index_t s, index_t off, Op op) {
  if (s == 1) sweep<1>(acc, src, lo, hi, s, off, op);
  else if (s == 2) sweep<2>(acc, src, lo, hi, s, off, op);
  else sweep<0>(acc, src, lo, hi, s, off, op);
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

template <class T>
void pool_row(T* y, std::int64_t* idx, const T* x, index_t plane, index_t od, index_t oh, const WindowND& g,
              const PoolParams& pp) {
  const index_t D = g.in[0], H = g.in[1], W = g.in[2], OW = g.out[2];
  const index_t bd = od * g.stride[0] - g.pad[0], bh = oh * g.stride[1] - g.pad[1];
  const bool is_max = pp.kind == PoolKind::Max;
  std::fill(y, y + OW, is_max ? lowest<T>() : T(0));
  if (idx) std::fill(idx, idx + OW, std::int64_t(-1));
  const index_t sw = g.stride[2];
  for (index_t kd = 0; kd < g.k[0]; ++kd) {
    const index_t id = bd + kd * g.dil[0];
    if (id < 0 || id >= D) continue;
    for (index_t kh = 0; kh < g.k[1]; ++kh) {
      const index_t ih = bh + kh * g.dil[1];
      if (ih < 0 || ih >= H) continue;
      const T* row = x + (id * H + ih) * W;
      for (index_t kw = 0; kw < g.k[2]; ++kw) {
        const index_t off = kw * g.dil[2] - g.pad[2];
        index_t lo, hi;
        nd::valid_range(OW, sw, off, W, lo, hi);
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
          sweep_any(y, row, lo, hi, sw, off, [](T a, T v) { return max_nan(a, v); });
        } else if constexpr (std::is_floating_point<T>::value) {
          if (pp.kind == PoolKind::Avg) sweep_any(y, row, lo, hi, sw, off, [](T a, T v) { return a + v; });
          else if (pp.p == 1) sweep_any(y, row, lo, hi, sw, off, [](T a, T v) { return a + std::fabs(v); });
          else if (pp.p == 2) sweep_any(y, row, lo, hi, sw, off, [](T a, T v) { return a + v * v; });
          else {
            const T p = static_cast<T>(pp.p);
            sweep_any(y, row, lo, hi, sw, off, [p](T a, T v) { return a + std::pow(std::fabs(v), p); });
          }
        }
      }
    }
  }
  if constexpr (std::is_floating_point<T>::value) {
    if (pp.kind == PoolKind::Avg) {
      // Divisor: taps inside the input, or (count_include_pad) inside the padded input.
      const bool cip = pp.count_include_pad;
      const index_t cdh = count_taps(bd, g.k[0], g.dil[0], cip ? -g.pad[0] : 0, cip ? D + pp.pad_end[0] : D) *
                          count_taps(bh, g.k[1], g.dil[1], cip ? -g.pad[1] : 0, cip ? H + pp.pad_end[1] : H);
      for (index_t o = 0; o < OW; ++o) {
        const index_t bw = o * sw - g.pad[2];
        const index_t n = cdh * count_taps(bw, g.k[2], g.dil[2], cip ? -g.pad[2] : 0, cip ? W + pp.pad_end[2] : W);
        y[o] = y[o] / static_cast<T>(n);
      }
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
void pool_nd(T* y, std::int64_t* indices, const T* x, index_t planes, const WindowND& g, const PoolParams& pp) {
  g.validate("pool");
  ENGINE_CHECK(planes >= 0, "pool: negative plane count");
  ENGINE_CHECK(pp.kind == PoolKind::Max || std::is_floating_point<T>::value,
               "pool: average and Lp pooling need a floating-point type");
  ENGINE_CHECK(pp.kind != PoolKind::Lp || pp.p >= 1, "pool: p must be >= 1");
  const index_t OD = g.out[0], OH = g.out[1], OW = g.out[2];
  const index_t rows = planes * OD * OH;
  if (rows == 0 || OW == 0) return;
  const double row_work = double(OW) * double(g.k_size()) + 1;
  const index_t grain = std::max<index_t>(1, static_cast<index_t>(kParallelWork / row_work));
  auto run = [&](std::int64_t r0, std::int64_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const index_t plane = r / (OD * OH), od = (r / OH) % OD, oh = r % OH;
      pool_row(y + r * OW, indices ? indices + r * OW : nullptr, x + plane * g.in_size(), plane, od, oh, g, pp);
    }
  };
  if (rows <= grain) return run(0, rows);
  parallel_for(rows, grain, run);
}

template <class T>
void global_pool(T* y, const T* x, index_t planes, index_t size, bool is_max) {
  ENGINE_CHECK(planes >= 0 && size >= 1, "global_pool: bad sizes");
  const index_t grain = std::max<index_t>(1, static_cast<index_t>(kParallelWork / double(size)));
  auto run = [&](std::int64_t p0, std::int64_t p1) {
    constexpr int L = 16;  // independent lanes, so the reduction vectorises
    for (index_t p = p0; p < p1; ++p) {
      const T* v = x + p * size;
      T acc[L];
      std::fill(acc, acc + L, is_max ? lowest<T>() : T(0));
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
  };
  if (planes <= grain) return run(0, planes);
  parallel_for(planes, grain, run);
}

template void pool_nd<float>(float*, std::int64_t*, const float*, index_t, const WindowND&, const PoolParams&);
template void pool_nd<double>(double*, std::int64_t*, const double*, index_t, const WindowND&, const PoolParams&);
template void pool_nd<std::int8_t>(std::int8_t*, std::int64_t*, const std::int8_t*, index_t, const WindowND&,
                                   const PoolParams&);
template void pool_nd<std::uint8_t>(std::uint8_t*, std::int64_t*, const std::uint8_t*, index_t, const WindowND&,
                                    const PoolParams&);
template void global_pool<float>(float*, const float*, index_t, index_t, bool);
template void global_pool<double>(double*, const double*, index_t, index_t, bool);

}  // namespace engine
