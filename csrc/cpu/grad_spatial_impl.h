// Backward loops over NHWC windows, compiled once per ISA (see grad_kernels.h): max / average
// pooling and depthwise convolution, one image and a range of channels at a time, vectorised
// over channels. Included inside a per-ISA namespace after grad_rows_impl.h (ldn / stn).
// W is the vector width; image widths are g.W.

// Taps k in [k0, k1) with 0 <= o·s − p + k·d < n (the forward's rule, pool_impl.h).
static inline void taps(index_t o, index_t s, index_t p, index_t d, index_t k, index_t n, index_t& k0, index_t& k1) {
  const index_t start = o * s - p;
  k0 = start >= 0 ? 0 : (-start + d - 1) / d;
  const index_t last = n - 1 - start;
  k1 = last < 0 ? 0 : std::min(k, last / d + 1);
  if (k1 < k0) k1 = k0;
}

static inline void zero_pixels(float* p, index_t pixels, index_t C, index_t c0, index_t c1) {
  if (c0 == 0 && c1 == C) {
    std::memset(p, 0, static_cast<std::size_t>(pixels * C) * sizeof(float));
    return;
  }
  for (index_t i = 0; i < pixels; ++i) std::memset(p + i * C + c0, 0, static_cast<std::size_t>(c1 - c0) * sizeof(float));
}

// Windows that never overlap (stride >= the dilated window) let the backward write each tap
// once (dy or 0) instead of scatter-adding into a zeroed dx: then only the positions no window
// reaches are zeroed. Position i of a dim is reached iff i + pad falls on a tap of window
// (i + pad) / stride (at most one window can reach it).
static inline bool disjoint(const gradk::PoolGeom& g) {
  return g.sh >= g.dh * (g.KH - 1) + 1 && g.sw >= g.dw * (g.KW - 1) + 1;
}
static inline bool reached(index_t i, index_t s, index_t p, index_t d, index_t k, index_t o) {
  const index_t r = i + p, w = r / s, off = r - w * s;
  return w < o && off % d == 0 && off / d < k;
}
static void zero_unreached(float* dx, const gradk::PoolGeom& g, index_t c0, index_t c1) {
  for (index_t ih = 0; ih < g.H; ++ih) {
    float* row = dx + ih * g.W * g.C;
    if (!reached(ih, g.sh, g.pt, g.dh, g.KH, g.OH)) {
      zero_pixels(row, g.W, g.C, c0, c1);
      continue;
    }
    for (index_t iw = 0; iw < g.W; ++iw)
      if (!reached(iw, g.sw, g.pl, g.dw, g.KW, g.OW)) zero_pixels(row + iw * g.C, 1, g.C, c0, c1);
  }
}

// Zeroes what the window pass will not write: returns whether windows are written directly
// (disjoint) rather than scatter-added into a zeroed dx.
static inline bool zero_first(float* dx, const gradk::PoolGeom& g, index_t c0, index_t c1) {
  if (!disjoint(g)) {
    zero_pixels(dx, g.H * g.W, g.C, c0, c1);
    return false;
  }
  zero_unreached(dx, g, c0, c1);
  return true;
}

// Calls f(oh, ow, pix0, kh0, kh1, kw0, kw1) for every window with a tap inside x: pix0 is the
// pixel of its tap (0, 0), [kh0, kh1) × [kw0, kw1) its taps inside x. G: PoolGeom or DwGeom.
template <class G, class F>
static inline void for_windows(const G& g, F f) {
  for (index_t oh = 0; oh < g.OH; ++oh) {
    index_t kh0, kh1;
    taps(oh, g.sh, g.pt, g.dh, g.KH, g.H, kh0, kh1);
    for (index_t ow = 0; ow < g.OW; ++ow) {
      index_t kw0, kw1;
      taps(ow, g.sw, g.pl, g.dw, g.KW, g.W, kw0, kw1);
      if (kh0 == kh1 || kw0 == kw1) continue;  // pooling: the forward wrote 0, nothing flows back
      f(oh, ow, (oh * g.sh - g.pt) * g.W + ow * g.sw - g.pl, kh0, kh1, kw0, kw1);
    }
  }
}

void maxpool(float* dx, const float* dy, const float* x, const gradk::PoolGeom& g, index_t c0, index_t c1) {
  const index_t C = g.C;
  const bool direct = zero_first(dx, g, c0, c1);
  const vf ninf = bcast(-kInf), zero = bcast(0.f);
  alignas(64) std::int32_t lanes[W];
  for_windows(g, [&](index_t oh, index_t ow, index_t pix0, index_t kh0, index_t kh1, index_t kw0, index_t kw1) {
    const float* gy = dy + (oh * g.OW + ow) * C;
    for (index_t c = c0; c < c1; c += W) {
      const index_t cnt = c1 - c < W ? c1 - c : W;
      vf best = ninf;
      vi at = bcasti(static_cast<std::int32_t>(pix0 + kh0 * g.dh * g.W + kw0 * g.dw));
      for (index_t kh = kh0; kh < kh1; ++kh)
        for (index_t kw = kw0; kw < kw1; ++kw) {
          const index_t pix = pix0 + kh * g.dh * g.W + kw * g.dw;
          const vf v = ldn(x + pix * C + c, cnt);
          const vi take = (v > best) | (v != v);  // the first maximum; a NaN wins (torch)
          best = take ? v : best;
          at = take ? bcasti(static_cast<std::int32_t>(pix)) : at;
        }
      if (direct) {
        vf gv = ldn(gy + c, cnt);
        if (g.relu) gv = ((best > zero) | (best != best)) ? gv : zero;
        for (index_t kh = kh0; kh < kh1; ++kh)
          for (index_t kw = kw0; kw < kw1; ++kw) {
            const index_t pix = pix0 + kh * g.dh * g.W + kw * g.dw;
            stn(dx + pix * C + c, at == bcasti(static_cast<std::int32_t>(pix)) ? gv : zero, cnt);
          }
      } else {
        std::memcpy(lanes, &at, sizeof at);
        for (index_t l = 0; l < cnt; ++l) {
          const index_t i = static_cast<index_t>(lanes[l]) * C + c + l;
          if (!g.relu || !(x[i] <= 0.f)) dx[i] += gy[c + l];
        }
      }
    }
  });
}

void avgpool(float* dx, const float* dy, const gradk::PoolGeom& g, index_t c0, index_t c1) {
  const index_t C = g.C;
  const bool direct = zero_first(dx, g, c0, c1);
  for_windows(g, [&](index_t oh, index_t ow, index_t pix0, index_t kh0, index_t kh1, index_t kw0, index_t kw1) {
    const float* gy = dy + (oh * g.OW + ow) * C;
    index_t cnt_taps;
    if (g.count_include_pad) {
      index_t ph0, ph1, pw0, pw1;
      taps(oh, g.sh, 0, g.dh, g.KH, g.H + g.pt + g.pb, ph0, ph1);
      taps(ow, g.sw, 0, g.dw, g.KW, g.W + g.pl + g.pr, pw0, pw1);
      cnt_taps = (ph1 - ph0) * (pw1 - pw0);
    } else {
      cnt_taps = (kh1 - kh0) * (kw1 - kw0);
    }
    const vf scale = bcast(1.f / static_cast<float>(cnt_taps));
    for (index_t c = c0; c < c1; c += W) {
      const index_t cnt = c1 - c < W ? c1 - c : W;
      const vf d = ldn(gy + c, cnt) * scale;
      for (index_t kh = kh0; kh < kh1; ++kh)
        for (index_t kw = kw0; kw < kw1; ++kw) {
          float* p = dx + (pix0 + kh * g.dh * g.W + kw * g.dw) * C + c;
          stn(p, direct ? d : ldn(p, cnt) + d, cnt);
        }
    }
  });
}

// Depthwise: output channel c·M + m reads input channel c through filter column c·M + m
// (HWIO with I = 1: w[(kh·KW + kw)·C·M + c·M + m]). With M == 1 (Keras's default) both
// gradients accumulate in registers: dx gathers, for each input pixel, the taps that read it;
// dw sums, for each tap, over the output pixels. Other multipliers scatter (dw_sweep).
template <class Body>
static inline void dw_sweep(const gradk::DwGeom& g, Body body) {
  for_windows(g, [&](index_t oh, index_t ow, index_t pix0, index_t kh0, index_t kh1, index_t kw0, index_t kw1) {
    for (index_t kh = kh0; kh < kh1; ++kh)
      for (index_t kw = kw0; kw < kw1; ++kw) body(oh * g.OW + ow, pix0 + kh * g.dh * g.W + kw * g.dw, kh * g.KW + kw);
  });
}

// The windows that read input position i of a dim: (tap k, output o) with o·s − p + k·d = i.
// Strides that are powers of two (all but rare ones) divide by shifting.
static inline int readers(index_t i, index_t s, index_t p, index_t d, index_t k_count, index_t o_count, index_t* ks,
                          index_t* os) {
  const bool pow2 = (s & (s - 1)) == 0;
  const int shift = pow2 ? __builtin_ctzll(static_cast<unsigned long long>(s)) : 0;
  int n = 0;
  for (index_t k = 0; k < k_count; ++k) {
    const index_t t = i + p - k * d;
    if (t < 0) break;
    const index_t q = pow2 ? t >> shift : t / s;
    if (t - q * s == 0 && q < o_count) ks[n] = k, os[n] = q, ++n;
  }
  return n;
}

constexpr index_t kMaxDwTaps = 64;  // register-gather path: KH, KW each up to this

// Calls f.template run<NV>(c, cnt) over [c0, c1) in blocks of NV <= 4 vectors (NV a constant,
// so the block's accumulators stay in registers; the last vector holds cnt lanes).
template <class F>
static inline void channel_blocks(index_t c0, index_t c1, F&& f) {
  index_t c = c0;
  for (; c + 4 * W <= c1; c += 4 * W) f.template run<4>(c, W);
  const index_t left = c1 - c;
  if (left <= 0) return;
  const index_t nv = (left + W - 1) / W, cnt = left - (nv - 1) * W;
  switch (nv) {
    case 1: return f.template run<1>(c, cnt);
    case 2: return f.template run<2>(c, cnt);
    case 3: return f.template run<3>(c, cnt);
    default: return f.template run<4>(c, cnt);
  }
}

// dx (one image, channels [c0, c1), M == 1): every input pixel written once.
struct DwGather {
  float* d;
  const float* dy;
  const float* w;
  const index_t *khs, *ohs, *kws, *ows;
  int nh, nw;
  index_t C, OW, KW;
  bool acc;
  template <int NV>
  void run(index_t c, index_t cnt) const {
    vf s[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) s[v] = bcast(0.f);
    for (int a = 0; a < nh; ++a)
      for (int b = 0; b < nw; ++b) {
        const float* gy = dy + (ohs[a] * OW + ows[b]) * C + c;
        const float* wt = w + (khs[a] * KW + kws[b]) * C + c;
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          const index_t n = v == NV - 1 ? cnt : W;
          s[v] += ldn(gy + v * W, n) * ldn(wt + v * W, n);
        }
      }
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const index_t n = v == NV - 1 ? cnt : W;
      float* p = d + c + v * W;
      stn(p, acc ? ldn(p, n) + s[v] : s[v], n);
    }
  }
};

static void dw_data_gather(float* dx, const float* dy, const float* w, const gradk::DwGeom& g, index_t c0, index_t c1,
                           bool acc) {
  index_t khs[kMaxDwTaps], ohs[kMaxDwTaps], kws[kMaxDwTaps], ows[kMaxDwTaps];
  DwGather f{nullptr, dy, w, khs, ohs, kws, ows, 0, 0, g.C, g.OW, g.KW, acc};
  for (index_t ih = 0; ih < g.H; ++ih) {
    f.nh = readers(ih, g.sh, g.pt, g.dh, g.KH, g.OH, khs, ohs);
    for (index_t iw = 0; iw < g.W; ++iw) {
      f.nw = readers(iw, g.sw, g.pl, g.dw, g.KW, g.OW, kws, ows);
      f.d = dx + (ih * g.W + iw) * g.C;
      channel_blocks(c0, c1, f);
    }
  }
}

// dw += one image's contribution for tap (kh, kw), channels [c0, c1), M == 1: a register sum
// over the output pixels [oh0, oh1) × [ow0, ow1) whose tap lies inside x.
struct DwTapSum {
  float* d;
  const float* dy;
  const float* x;
  index_t x0;  // x's offset of output (0, 0)'s tap (may be negative; only valid taps are read)
  index_t oh0, oh1, ow0, ow1, OW, C, x_row, x_col;
  template <int NV>
  void run(index_t c, index_t cnt) const {
    vf s[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) s[v] = bcast(0.f);
    for (index_t oh = oh0; oh < oh1; ++oh) {
      const index_t xr = x0 + oh * x_row + c;
      const float* gr = dy + oh * OW * C + c;
      for (index_t ow = ow0; ow < ow1; ++ow) {
        const float* xp = x + (xr + ow * x_col);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          const index_t n = v == NV - 1 ? cnt : W;
          s[v] += ldn(xp + v * W, n) * ldn(gr + ow * C + v * W, n);
        }
      }
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const index_t n = v == NV - 1 ? cnt : W;
      stn(d + c + v * W, ldn(d + c + v * W, n) + s[v], n);
    }
  }
};

static void dw_filter_sum(float* dw, const float* dy, const float* x, const gradk::DwGeom& g, index_t c0, index_t c1) {
  for (index_t kh = 0; kh < g.KH; ++kh) {
    index_t oh0 = 0, oh1 = g.OH;  // outputs whose row tap kh is inside x
    while (oh0 < oh1 && oh0 * g.sh - g.pt + kh * g.dh < 0) ++oh0;
    while (oh1 > oh0 && (oh1 - 1) * g.sh - g.pt + kh * g.dh >= g.H) --oh1;
    for (index_t kw = 0; kw < g.KW; ++kw) {
      index_t ow0 = 0, ow1 = g.OW;
      while (ow0 < ow1 && ow0 * g.sw - g.pl + kw * g.dw < 0) ++ow0;
      while (ow1 > ow0 && (ow1 - 1) * g.sw - g.pl + kw * g.dw >= g.W) --ow1;
      if (oh0 == oh1 || ow0 == ow1) continue;
      const index_t tap0 = (-g.pt + kh * g.dh) * g.W - g.pl + kw * g.dw;  // pixel of output (0, 0)'s tap
      DwTapSum f{dw + (kh * g.KW + kw) * g.C, dy, x, tap0 * g.C, oh0, oh1, ow0, ow1, g.OW, g.C,
                 g.sh * g.W * g.C, g.sw * g.C};
      channel_blocks(c0, c1, f);
    }
  }
}

void dw_data(float* dx, const float* dy, const float* w, const gradk::DwGeom& g, index_t c0, index_t c1, bool acc) {
  const index_t C = g.C, M = g.M, OC = C * M;
  if (M == 1 && g.KH <= kMaxDwTaps && g.KW <= kMaxDwTaps) return dw_data_gather(dx, dy, w, g, c0, c1, acc);
  if (!acc)
    for (index_t p = 0; p < g.H * g.W; ++p) std::memset(dx + p * C + c0, 0, static_cast<std::size_t>(c1 - c0) * sizeof(float));
  dw_sweep(g, [&](index_t opix, index_t ipix, index_t tap) {
    const float *gy = dy + opix * OC, *wt = w + tap * OC;
    float* d = dx + ipix * C;
    for (index_t c = c0; c < c1; ++c) {
      float s = 0.f;
      for (index_t m = 0; m < M; ++m) s += gy[c * M + m] * wt[c * M + m];
      d[c] += s;
    }
  });
}

void dw_filter(float* dw, const float* dy, const float* x, const gradk::DwGeom& g, index_t c0, index_t c1) {
  const index_t C = g.C, M = g.M, OC = C * M;
  if (M == 1) return dw_filter_sum(dw, dy, x, g, c0, c1);
  dw_sweep(g, [&](index_t opix, index_t ipix, index_t tap) {
    const float *gy = dy + opix * OC, *xi = x + ipix * C;
    float* d = dw + tap * OC;
    for (index_t c = c0; c < c1; ++c)
      for (index_t m = 0; m < M; ++m) d[c * M + m] += xi[c] * gy[c * M + m];
  });
}
