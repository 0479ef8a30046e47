// Backward loops over rows × channels, compiled once per ISA (see grad_kernels.h): column
// accumulations (bias gradients, batch-norm statistics and parameter gradients), the
// per-channel affine passes of batch norm, and layer norm's row backward. Included inside a
// per-ISA namespace after EW_W, the standard headers and elementwise_vmath.h.

void add(float* dst, const float* src, index_t n) {
  index_t i = 0;
  for (; i + W <= n; i += W) store(dst + i, load(dst + i) + load(src + i));
  if (i < n) store_partial(dst + i, load_partial(dst + i, n - i) + load_partial(src + i, n - i), n - i);
}

// acc[j] += Σ_r x[r·ld + j]: four vectors of columns stay in registers over all rows.
void col_sum(float* acc, const float* x, index_t rows, index_t cols, index_t ld) {
  index_t c = 0;
  for (; c + 4 * W <= cols; c += 4 * W) {
    vf a0 = load(acc + c), a1 = load(acc + c + W), a2 = load(acc + c + 2 * W), a3 = load(acc + c + 3 * W);
    for (index_t r = 0; r < rows; ++r) {
      const float* p = x + r * ld + c;
      a0 += load(p), a1 += load(p + W), a2 += load(p + 2 * W), a3 += load(p + 3 * W);
    }
    store(acc + c, a0), store(acc + c + W, a1), store(acc + c + 2 * W, a2), store(acc + c + 3 * W, a3);
  }
  for (; c < cols; c += W) {
    const index_t cnt = cols - c < W ? cols - c : W;
    vf a = load_partial(acc + c, cnt);
    for (index_t r = 0; r < rows; ++r) a += load_partial(x + r * ld + c, cnt);
    store_partial(acc + c, a, cnt);
  }
}

// Visits every row and every column vector (tails masked): f(r, c, cnt).
template <class F>
static inline void for_row_vectors(index_t rows, index_t cols, F f) {
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; c += W) f(r, c, cols - c < W ? cols - c : W);
}

static inline vf ldn(const float* p, index_t cnt) { return cnt == W ? load(p) : load_partial(p, cnt); }
static inline void stn(float* p, vf v, index_t cnt) {
  if (cnt == W) store(p, v);
  else store_partial(p, v, cnt);
}

// acc[j] += Σ_r (x[r, j] − mean[j])²
void col_sqdev(float* acc, const float* x, const float* mean, index_t rows, index_t cols) {
  for (index_t c = 0; c < cols; c += W) {
    const index_t cnt = cols - c < W ? cols - c : W;
    const vf m = ldn(mean + c, cnt);
    vf a = ldn(acc + c, cnt), b = bcast(0.f);
    index_t r = 0;
    for (; r + 2 <= rows; r += 2) {  // two chains: the add latency, not the loads, is the limit
      const vf d0 = ldn(x + r * cols + c, cnt) - m, d1 = ldn(x + (r + 1) * cols + c, cnt) - m;
      a += d0 * d0;
      b += d1 * d1;
    }
    if (r < rows) {
      const vf d = ldn(x + r * cols + c, cnt) - m;
      a += d * d;
    }
    stn(acc + c, a + b, cnt);
  }
}

// s_dy[j] += Σ_r dy[r, j]; s_dyxc[j] += Σ_r dy[r, j]·(x[r, j] − mean[j])
void col_dy_xc(float* s_dy, float* s_dyxc, const float* dy, const float* x, const float* mean, index_t rows,
                      index_t cols) {
  for (index_t c = 0; c < cols; c += W) {
    const index_t cnt = cols - c < W ? cols - c : W;
    const vf m = ldn(mean + c, cnt);
    vf a = ldn(s_dy + c, cnt), b = ldn(s_dyxc + c, cnt);
    for (index_t r = 0; r < rows; ++r) {
      const vf g = ldn(dy + r * cols + c, cnt);
      a += g;
      b += g * (ldn(x + r * cols + c, cnt) - m);
    }
    stn(s_dy + c, a, cnt);
    stn(s_dyxc + c, b, cnt);
  }
}

void rows_affine(float* y, const float* x, const float* mean, const float* scale, const float* shift,
                        index_t rows, index_t cols) {
  for_row_vectors(rows, cols, [&](index_t r, index_t c, index_t cnt) {
    const index_t o = r * cols + c;
    stn(y + o, (ldn(x + o, cnt) - ldn(mean + c, cnt)) * ldn(scale + c, cnt) + ldn(shift + c, cnt), cnt);
  });
}

void rows_bn_dx(float* dx, const float* dy, const float* x, const float* mean, const float* a, const float* b,
                       const float* c3, index_t rows, index_t cols) {
  for_row_vectors(rows, cols, [&](index_t r, index_t c, index_t cnt) {
    const index_t o = r * cols + c;
    const vf xc = ldn(x + o, cnt) - ldn(mean + c, cnt);
    stn(dx + o, ldn(a + c, cnt) * ldn(dy + o, cnt) + ldn(b + c, cnt) * xc + ldn(c3 + c, cnt), cnt);
  });
}

// One row of layer norm backward: x̂ = (x − mean)·invstd (rms: x·invstd), ĝ = gamma·dy,
// dx = invstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) (rms: no mean(ĝ) term).
void ln_row(float* dx, const float* dy, const float* x, const float* gamma, float mean, float invstd, index_t D,
                   bool rms) {
  const vf mv = bcast(rms ? 0.f : mean), iv = bcast(invstd), one = bcast(1.f);
  vf s1 = bcast(0.f), s2 = bcast(0.f);
  for (index_t c = 0; c < D; c += W) {
    const index_t cnt = D - c < W ? D - c : W;
    const vf g = ldn(dy + c, cnt) * (gamma ? ldn(gamma + c, cnt) : one);
    s1 += g;
    s2 += g * ((ldn(x + c, cnt) - mv) * iv);
  }
  const float inv_d = 1.f / static_cast<float>(D);
  const vf m1 = bcast(rms ? 0.f : hsum(s1) * inv_d), m2 = bcast(hsum(s2) * inv_d);
  for (index_t c = 0; c < D; c += W) {
    const index_t cnt = D - c < W ? D - c : W;
    const vf g = ldn(dy + c, cnt) * (gamma ? ldn(gamma + c, cnt) : one);
    const vf xh = (ldn(x + c, cnt) - mv) * iv;
    stn(dx + c, iv * (g - m1 - xh * m2), cnt);
  }
}

void ln_params(float* acc_g, float* acc_b, const float* dy, const float* x, const float* mean,
                      const float* invstd, index_t rows, index_t D, bool rms) {
  for_row_vectors(rows, D, [&](index_t r, index_t c, index_t cnt) {
    const index_t o = r * D + c;
    const vf g = ldn(dy + o, cnt);
    if (acc_b) stn(acc_b + c, ldn(acc_b + c, cnt) + g, cnt);
    if (acc_g) {
      const vf xh = (ldn(x + o, cnt) - bcast(rms ? 0.f : mean[r])) * bcast(invstd[r]);
      stn(acc_g + c, ldn(acc_g + c, cnt) + g * xh, cnt);
    }
  });
}
