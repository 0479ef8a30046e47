// Register-blocked micro-kernels of the attention kernels: the flash forward
// (attention_flash_impl.h), the backward (attention_grad_impl.h) and the decode kernel
// (attention_decode_impl.h: the row-major P·V and the exponential only).
// Included inside a per-ISA namespace after EW_W, the standard headers and elementwise_vmath.h;
// the only include here is vec_broadcast.h, which needs the same context.
//
// A score-like tile is stored transposed, Tᵀ (keys × Rp, Rp = rows rounded up to W): row j of
// it holds key j's values for every query row, so per-row quantities (max, sum, log-sum-exp) are
// vertical vector operations over W rows at a time.

#include "cpu/vec_broadcast.h"

// The register blocking of the micro-kernels: scores MK keys × SNV row vectors, row-major P·V
// (the backward's dS·K, the decode kernel's P·V) PR rows × PNV vectors of v columns (AVX-512:
// 32 registers; else 16).
constexpr int kMK = 6, kSNV = W == 16 ? 4 : 2;
constexpr int kPR = 4, kPNV = W == 16 ? 4 : 2;
static_assert(W % kPR == 0, "the backward runs P·V over Rp rows (a multiple of W) in groups of PR");

// Sᵀ[j][r0 .. r0 + NV·W) = Σ_d K[j][d] · Qᵀ[d][r0 ..] for MK keys from j.
template <int MK, int NV>
static inline void score_tile(float* St, index_t Rp, const float* Qt, const float* k, index_t ldk, index_t dk) {
  vf acc[MK][NV];
#pragma GCC unroll 16
  for (int m = 0; m < MK; ++m)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) acc[m][n] = bcast(0.f);
  for (index_t d = 0; d < dk; ++d) {
    vf qv[NV];
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) qv[n] = load(Qt + d * Rp + n * W);
#pragma GCC unroll 16
    for (int m = 0; m < MK; ++m) {
      const vf kb = bcast(k[m * ldk + d]);
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) acc[m][n] += kb * qv[n];
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < MK; ++m)
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) store(St + m * Rp + n * W, acc[m][n]);
}

// Calls kernel(std::integral_constant<int, cnt>) for cnt in [1, Max]: a register-blocked
// kernel's short last group runs at its exact size rather than recomputing keys or columns.
template <int Max, class F>
static inline void with_count(index_t cnt, F&& kernel) {
  if constexpr (Max > 1) {
    if (cnt < Max) return with_count<Max - 1>(cnt, kernel);
  }
  kernel(std::integral_constant<int, Max>{});
}

template <int NV>
static void score_rows(float* St, index_t Rp, const float* Qt, const float* k, index_t ldk, index_t dk, index_t n) {
  for (index_t j = 0; j < n; j += kMK)
    with_count<kMK>(std::min<index_t>(kMK, n - j), [&](auto mk) {
      score_tile<decltype(mk)::value, NV>(St + j * Rp, Rp, Qt, k + j * ldk, ldk, dk);
    });
}

// acc[r][c0 ..] = alpha[r]·acc[r][c0 ..] (or 0 when first; alpha null: 1) + Σ_j P(r, j) · V[j][c0 ..]
// for MR rows and NV column vectors, P(r, j) at P[j·pj + r·pr]; the last vector holds `last` (<= W)
// columns. Fewer than 8 accumulators (a row or two) take U keys per step into U sets, so that
// enough independent multiply-adds are in flight.
template <int MR, int NV>
static inline void pv_tile(float* acc, index_t lda, const float* alpha, const float* P, index_t pj, index_t pr,
                           const float* v, index_t ldv, index_t n, index_t last, bool first) {
  constexpr int U = MR * NV >= 8 ? 1 : MR * NV >= 4 ? 2 : 4;
  auto ldv_row = [&](index_t j, int c) {
    return c == NV - 1 && last < W ? load_partial(v + j * ldv + c * W, last) : load(v + j * ldv + c * W);
  };
  vf a[U][MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
    const vf s = bcast(first ? 0.f : alpha ? alpha[m] : 1.f);
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) {
      a[0][m][c] = first ? bcast(0.f) : load(acc + m * lda + c * W) * s;
#pragma GCC unroll 4
      for (int u = 1; u < U; ++u) a[u][m][c] = bcast(0.f);
    }
  }
  index_t j = 0;
  for (; j + U <= n; j += U)
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      vf vv[NV];
#pragma GCC unroll 4
      for (int c = 0; c < NV; ++c) vv[c] = ldv_row(j + u, c);
#pragma GCC unroll 8
      for (int m = 0; m < MR; ++m) {
        const vf p = bcast(P[(j + u) * pj + m * pr]);
#pragma GCC unroll 4
        for (int c = 0; c < NV; ++c) a[u][m][c] += p * vv[c];
      }
    }
  for (; j < n; ++j)
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const vf p = bcast(P[j * pj + m * pr]);
#pragma GCC unroll 4
      for (int c = 0; c < NV; ++c) a[0][m][c] += p * ldv_row(j, c);
    }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) {
      vf t = a[0][m][c];
#pragma GCC unroll 4
      for (int u = 1; u < U; ++u) t += a[u][m][c];
      if (c == NV - 1 && last < W) store_partial(acc + m * lda + c * W, t, last);
      else store(acc + m * lda + c * W, t);
    }
}

template <int MR>
static void pv_rows(float* acc, index_t lda, const float* alpha, const float* P, index_t pj, index_t pr,
                    const float* v, index_t ldv, index_t n, index_t dv, bool first) {
  const index_t nvec = (dv + W - 1) / W, tail = dv - (nvec - 1) * W;
  index_t c = 0;
  for (; c + kPNV <= nvec; c += kPNV)
    pv_tile<MR, kPNV>(acc + c * W, lda, alpha, P, pj, pr, v + c * W, ldv, n, c + kPNV == nvec ? tail : W, first);
  for (; c < nvec; ++c)
    pv_tile<MR, 1>(acc + c * W, lda, alpha, P, pj, pr, v + c * W, ldv, n, c + 1 == nvec ? tail : W, first);
}

// exp(x) for x <= 0 (a score minus its row's running max; -inf gives 0) in fewer operations
// than v_exp: x·log2(e) = n + f with n an integer and |f| <= 1/2, 2^f by a degree-5 polynomial
// (relative error under 2e-7), times 2^n. Below -160 (clamped there) 2^n underflows to 0.
static inline vf exp_nonpositive(vf x) {
  const vf t = vmax(bcast(-160.f), x * bcast(1.44269504088896341f));  // (a NaN x stays NaN)
#if EW_W == 16 && defined(__AVX512F__)
  const vf n = (vf)_mm512_roundscale_ps((__m512)t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  const vf magic = bcast(12582912.f);  // 1.5·2^23: adding it rounds to an integer
  const vf tm = t + magic;
  const vf n = tm - magic;
#endif
  const vf f = t - n;
  vf p = bcast(1.3266622554510832e-3f);
  p = p * f + bcast(9.671512059867382e-3f);
  p = p * f + bcast(5.5507272481918335e-2f);
  p = p * f + bcast(2.4022242426872253e-1f);
  p = p * f + bcast(6.931470036506653e-1f);
  p = p * f + bcast(1.f);
#if EW_W == 16 && defined(__AVX512F__)
  return (vf)_mm512_scalef_ps((__m512)p, (__m512)n);
#else
  const vi ni = (vi)((vu)tm - (vu)magic);  // n in [-160, 0]: two normal factors 2^(n/2)
  const vi n1 = ni >> 1;
  return p * pow2i(n1) * pow2i(ni - n1);
#endif
}

// The bias of the W query rows from rb (`live` of them real) on a score tile s (Sᵀ + rb: n keys
// from j0, row stride Rp): the attn_mask (null: none; bool: -inf where false, additive: added;
// msq 0: one mask row for every query row; else row r's value for key j at mask[r·msq + j]) and,
// unless `inside` (every row attends every key of the tile), -inf outside each row's [lo, hi).
static inline void bias_scores(float* s, index_t Rp, index_t n, index_t j0, index_t rb, index_t live,
                               const void* mask, bool boolean, index_t msq, const std::int32_t* lo,
                               const std::int32_t* hi, bool inside) {
  const vf ninf = bcast(-kInf);
  const float* fmask = static_cast<const float*>(mask);
  const std::uint8_t* bmask = static_cast<const std::uint8_t*>(mask);
  if (mask) {
    if (msq == 0) {
      if (boolean) {
        for (index_t j = 0; j < n; ++j)
          if (!bmask[j0 + j]) store(s + j * Rp, ninf);
      } else {
        for (index_t j = 0; j < n; ++j) store(s + j * Rp, load(s + j * Rp) + bcast(fmask[j0 + j]));
      }
    } else {
      for (index_t l = 0; l < live; ++l) {
        const index_t off = (rb + l) * msq + j0;
        if (boolean) {
          for (index_t j = 0; j < n; ++j)
            if (!bmask[off + j]) s[j * Rp + l] = -kInf;
        } else {
          for (index_t j = 0; j < n; ++j) s[j * Rp + l] += fmask[off + j];
        }
      }
    }
  }
  if (!inside) {
    vi vlo, vhi;
    std::memcpy(&vlo, lo + rb, sizeof vlo);
    std::memcpy(&vhi, hi + rb, sizeof vhi);
    for (index_t j = 0; j < n; ++j) {
      const vi jj = bcasti(static_cast<std::int32_t>(j0 + j));
      store(s + j * Rp, (jj >= vlo) & (jj < vhi) ? load(s + j * Rp) : ninf);
    }
  }
}
