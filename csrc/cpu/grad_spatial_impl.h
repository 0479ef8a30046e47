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

void maxpool(float* dx, const float* dy, const float* x, const gradk::PoolGeom& g, index_t c0, index_t c1) {
  const index_t C = g.C;
  const vf ninf = splat(-kInf);
  for (index_t oh = 0; oh < g.OH; ++oh) {
    index_t kh0, kh1;
    taps(oh, g.sh, g.pt, g.dh, g.KH, g.H, kh0, kh1);
    for (index_t ow = 0; ow < g.OW; ++ow) {
      index_t kw0, kw1;
      taps(ow, g.sw, g.pl, g.dw, g.KW, g.W, kw0, kw1);
      if (kh0 == kh1 || kw0 == kw1) continue;
      const float* gy = dy + (oh * g.OW + ow) * C;
      const index_t ih0 = oh * g.sh - g.pt, iw0 = ow * g.sw - g.pl;
      for (index_t c = c0; c < c1; c += W) {
        const index_t cnt = c1 - c < W ? c1 - c : W;
        vf best = ninf;
        vi at = splati(static_cast<std::int32_t>((ih0 + kh0 * g.dh) * g.W + iw0 + kw0 * g.dw));
        for (index_t kh = kh0; kh < kh1; ++kh)
          for (index_t kw = kw0; kw < kw1; ++kw) {
            const index_t pix = (ih0 + kh * g.dh) * g.W + iw0 + kw * g.dw;
            const vf v = cnt == W ? load(x + pix * C + c) : load_partial(x + pix * C + c, cnt);
            const vi take = (v > best) | (v != v);  // the first maximum; a NaN wins (torch)
            best = take ? v : best;
            at = take ? splati(static_cast<std::int32_t>(pix)) : at;
          }
        for (index_t l = 0; l < cnt; ++l) dx[static_cast<index_t>(at[l]) * C + c + l] += gy[c + l];
      }
    }
  }
}

void avgpool(float* dx, const float* dy, const gradk::PoolGeom& g, index_t c0, index_t c1) {
  const index_t C = g.C;
  for (index_t oh = 0; oh < g.OH; ++oh) {
    index_t kh0, kh1, ph0, ph1;
    taps(oh, g.sh, g.pt, g.dh, g.KH, g.H, kh0, kh1);
    taps(oh, g.sh, 0, g.dh, g.KH, g.H + g.pt + g.pb, ph0, ph1);
    for (index_t ow = 0; ow < g.OW; ++ow) {
      index_t kw0, kw1, pw0, pw1;
      taps(ow, g.sw, g.pl, g.dw, g.KW, g.W, kw0, kw1);
      if (kh0 == kh1 || kw0 == kw1) continue;  // the forward wrote 0: nothing flows back
      index_t cnt_taps;
      if (g.count_include_pad) {
        taps(ow, g.sw, 0, g.dw, g.KW, g.W + g.pl + g.pr, pw0, pw1);
        cnt_taps = (ph1 - ph0) * (pw1 - pw0);
      } else {
        cnt_taps = (kh1 - kh0) * (kw1 - kw0);
      }
      const vf scale = splat(1.f / static_cast<float>(cnt_taps));
      const float* gy = dy + (oh * g.OW + ow) * C;
      const index_t ih0 = oh * g.sh - g.pt, iw0 = ow * g.sw - g.pl;
      for (index_t c = c0; c < c1; c += W) {
        const index_t cnt = c1 - c < W ? c1 - c : W;
        const vf d = (cnt == W ? load(gy + c) : load_partial(gy + c, cnt)) * scale;
        for (index_t kh = kh0; kh < kh1; ++kh)
          for (index_t kw = kw0; kw < kw1; ++kw) {
            float* p = dx + ((ih0 + kh * g.dh) * g.W + iw0 + kw * g.dw) * C + c;
            if (cnt == W) store(p, load(p) + d);
            else store_partial(p, load_partial(p, cnt) + d, cnt);
          }
      }
    }
  }
}

// Depthwise: output channel c·M + m reads input channel c through filter column c·M + m
// (HWIO with I = 1: w[(kh·KW + kw)·C·M + c·M + m]).
template <class Body>
static inline void dw_sweep(const gradk::DwGeom& g, Body body) {
  for (index_t oh = 0; oh < g.OH; ++oh) {
    index_t kh0, kh1;
    taps(oh, g.sh, g.pt, g.dh, g.KH, g.H, kh0, kh1);
    for (index_t ow = 0; ow < g.OW; ++ow) {
      index_t kw0, kw1;
      taps(ow, g.sw, g.pl, g.dw, g.KW, g.W, kw0, kw1);
      const index_t ih0 = oh * g.sh - g.pt, iw0 = ow * g.sw - g.pl;
      for (index_t kh = kh0; kh < kh1; ++kh)
        for (index_t kw = kw0; kw < kw1; ++kw)
          body(oh * g.OW + ow, (ih0 + kh * g.dh) * g.W + iw0 + kw * g.dw, kh * g.KW + kw);
    }
  }
}

void dw_data(float* dx, const float* dy, const float* w, const gradk::DwGeom& g, index_t c0, index_t c1) {
  const index_t C = g.C, M = g.M, OC = C * M;
  if (M == 1) {
    dw_sweep(g, [&](index_t opix, index_t ipix, index_t tap) {
      const float *gy = dy + opix * OC, *wt = w + tap * OC;
      float* d = dx + ipix * C;
      for (index_t c = c0; c < c1; c += W) {
        const index_t cnt = c1 - c < W ? c1 - c : W;
        stn(d + c, ldn(d + c, cnt) + ldn(gy + c, cnt) * ldn(wt + c, cnt), cnt);
      }
    });
    return;
  }
  dw_sweep(g, [&](index_t opix, index_t ipix, index_t tap) {
    const float *gy = dy + opix * OC, *wt = w + tap * OC;
    float* d = dx + ipix * C;
    for (index_t c = c0; c < c1; ++c) {
      float acc = 0.f;
      for (index_t m = 0; m < M; ++m) acc += gy[c * M + m] * wt[c * M + m];
      d[c] += acc;
    }
  });
}

void dw_filter(float* dw, const float* dy, const float* x, const gradk::DwGeom& g, index_t c0, index_t c1) {
  const index_t C = g.C, M = g.M, OC = C * M;
  if (M == 1) {
    dw_sweep(g, [&](index_t opix, index_t ipix, index_t tap) {
      const float *gy = dy + opix * OC, *xi = x + ipix * C;
      float* d = dw + tap * OC;
      for (index_t c = c0; c < c1; c += W) {
        const index_t cnt = c1 - c < W ? c1 - c : W;
        stn(d + c, ldn(d + c, cnt) + ldn(gy + c, cnt) * ldn(xi + c, cnt), cnt);
      }
    });
    return;
  }
  dw_sweep(g, [&](index_t opix, index_t ipix, index_t tap) {
    const float *gy = dy + opix * OC, *xi = x + ipix * C;
    float* d = dw + tap * OC;
    for (index_t c = c0; c < c1; ++c)
      for (index_t m = 0; m < M; ++m) d[c * M + m] += xi[c] * gy[c * M + m];
  });
}
