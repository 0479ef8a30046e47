// Row normalisation (see normalize_rows in engine/norm.h) and inference batch norm, written
// once as loops the compiler vectorises and compiled per ISA: norm.cpp includes this inside
// engine::nm::portable, norm_{avx2,avx512}.cpp inside their own namespace. Include after
// <cmath> and "engine/norm.h"; no includes here because this file lands inside a namespace.
//
// Per row: the sum, then the sum of squared deviations from the mean (two passes over a row
// that is in cache; one pass of E[x²] - E[x]² would lose the variance of rows with a large
// mean), then the affine transform.

// Bytes of lanes per row sum: two AVX-512 registers.
constexpr int kNormLaneBytes = 128;

// sum over i of (x[i] - c)^2 when `square`, else of x[i], in independent lanes.
template <bool square, class T>
static T lane_sum(const T* __restrict x, index_t n, T c) {
  constexpr int L = kNormLaneBytes / sizeof(T);
  T a[L] = {};
  index_t i = 0;
  for (; i + L <= n; i += L)
    for (int k = 0; k < L; ++k) {
      const T d = x[i + k] - c;
      a[k] += square ? d * d : d;
    }
  for (int k = 0; i < n; ++i, ++k) {
    const T d = x[i] - c;
    a[k] += square ? d * d : d;
  }
  for (int h = L / 2; h >= 1; h /= 2)
    for (int k = 0; k < h; ++k) a[k] += a[k + h];
  return a[0];
}

// y[j] = (x[j] - mean) · inv · scale[j] + bias[j] (scale / bias optional).
template <class T>
static void affine_elems(T* __restrict y, const T* __restrict x, const T* __restrict scale, const T* __restrict bias,
                         index_t n, T mean, T inv) {
  if (scale && bias) {
    for (index_t j = 0; j < n; ++j) y[j] = (x[j] - mean) * inv * scale[j] + bias[j];
  } else if (scale) {
    for (index_t j = 0; j < n; ++j) y[j] = (x[j] - mean) * inv * scale[j];
  } else if (bias) {
    for (index_t j = 0; j < n; ++j) y[j] = (x[j] - mean) * inv + bias[j];
  } else {
    for (index_t j = 0; j < n; ++j) y[j] = (x[j] - mean) * inv;
  }
}

// y[j] = (x[j] - mean) · a + b
template <class T>
static void affine_scalar(T* __restrict y, const T* __restrict x, index_t n, T mean, T a, T b) {
  for (index_t j = 0; j < n; ++j) y[j] = (x[j] - mean) * a + b;
}

// Rows [r0, r1): x, y, mean_out, inv_out point at row r0 (r picks the scale / bias group).
template <class T>
static void norm_rows(T* y, float* mean_out, float* inv_out, const T* x, const T* scale, const T* bias, index_t r0,
                      index_t r1, index_t groups, index_t cps, index_t seg, double eps_d, NormMode mode) {
  const index_t len = cps * seg;
  const T eps = static_cast<T>(eps_d), n = static_cast<T>(len);
  for (index_t r = r0; r < r1; ++r) {
    const T* xr = x + (r - r0) * len;
    T* yr = y + (r - r0) * len;
    T mean = 0, inv;
    if (mode == NormMode::Rms) {
      inv = T(1) / std::sqrt(lane_sum<true>(xr, len, T(0)) / n + eps);
    } else {
      mean = lane_sum<false>(xr, len, T(0)) / n;
      const T var = lane_sum<true>(xr, len, mean) / n;
      inv = mode == NormMode::Mvn ? T(1) / (std::sqrt(var) + eps) : T(1) / std::sqrt(var + eps);
    }
    if (mean_out) mean_out[r - r0] = static_cast<float>(mean);
    if (inv_out) inv_out[r - r0] = static_cast<float>(inv);
    const index_t base = (r % groups) * cps;
    if (seg == 1) {
      affine_elems(yr, xr, scale ? scale + base : nullptr, bias ? bias + base : nullptr, len, mean, inv);
      continue;
    }
    for (index_t t = 0; t < cps; ++t) {
      const T a = scale ? inv * scale[base + t] : inv, b = bias ? bias[base + t] : T(0);
      affine_scalar(yr + t * seg, xr + t * seg, seg, mean, a, b);
    }
  }
}

// Inference batch norm of rows [r0, r1) of (N·C, S) (x, y point at row r0): one scale and
// shift per channel c = r % C.
template <class T>
static void batch_rows(T* y, const T* x, const T* scale, const T* bias, const T* mean, const T* var, index_t r0,
                       index_t r1, index_t C, index_t S, double eps) {
  const T e = static_cast<T>(eps);
  for (index_t r = r0; r < r1; ++r) {
    const index_t c = r % C;
    affine_scalar(y + (r - r0) * S, x + (r - r0) * S, S, mean[c], scale[c] / std::sqrt(var[c] + e), bias[c]);
  }
}
