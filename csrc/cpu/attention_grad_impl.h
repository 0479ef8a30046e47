// The attention backward tile (see attention_grad.h), written once over the vector type of
// elementwise_vmath.h and compiled per ISA by attention_grad_{avx512,avx2,portable}.cpp, which
// include it inside their own namespace after EW_W, the standard headers and elementwise_vmath.h.
// The only include here is attention_tiles_impl.h (the micro-kernels shared with the forward),
// which needs the same context.
//
// Layout: as in the forward, the tile's rows run along the vector lanes. Qᵀ (scale folded in) and
// dOᵀ are packed once per tile; per key block the forward's score micro-kernel gives Sᵀ = K·Qᵀ and
// dPᵀ = V·dOᵀ, the probabilities and dS are vertical vector operations over W rows, then
// dV += Pᵀ·dO and dK += dSᵀ·Q broadcast elements of the transposed tiles against rows of dO and Q
// (key_rows), and dQ += dS·K is the row-major P·V micro-kernel (pv_rows).

#include "cpu/attention_tiles_impl.h"

constexpr index_t kKeys = 64;          // keys per block
constexpr int kKNV = W == 16 ? 4 : 2;  // key_rows: MK keys × KNV column vectors

// C[j][c ..] += Σ_{r < rows} Tᵀ[j][r] · A[r][c ..] for `cnt` (<= MK) keys from j (a short group
// repeats its last key and stores `cnt` rows) and NV column vectors, the last holding `last` (<= W).
template <int MK, int NV>
static inline void key_tile(float* C, index_t ldc, const float* Tt, index_t Rp, const float* A, index_t lda,
                            index_t rows, index_t last, index_t cnt) {
  const float* tr[MK];
  float* cr[MK];
#pragma GCC unroll 16
  for (int m = 0; m < MK; ++m) {
    const index_t j = std::min<index_t>(m, cnt - 1);
    tr[m] = Tt + j * Rp, cr[m] = C + j * ldc;
  }
  auto ld = [last](const float* p, int c) { return c == NV - 1 && last < W ? load_partial(p, last) : load(p); };
  vf acc[MK][NV];
#pragma GCC unroll 16
  for (int m = 0; m < MK; ++m)
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) acc[m][c] = ld(cr[m] + c * W, c);
  for (index_t r = 0; r < rows; ++r) {
    vf a[NV];
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) a[c] = ld(A + r * lda + c * W, c);
#pragma GCC unroll 16
    for (int m = 0; m < MK; ++m) {
      const vf t = bcast(tr[m][r]);
#pragma GCC unroll 4
      for (int c = 0; c < NV; ++c) acc[m][c] += t * a[c];
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < MK; ++m)
    if (m < cnt)
#pragma GCC unroll 4
      for (int c = 0; c < NV; ++c) {
        if (c == NV - 1 && last < W) store_partial(cr[m] + c * W, acc[m][c], last);
        else store(cr[m] + c * W, acc[m][c]);
      }
}

// C (n keys × cols, row stride ldc) += Tᵀ (n × Rp) · A (rows × cols, row stride lda).
static void key_rows(float* C, index_t ldc, const float* Tt, index_t Rp, const float* A, index_t lda, index_t rows,
                     index_t n, index_t cols) {
  const index_t nvec = (cols + W - 1) / W, tail = cols - (nvec - 1) * W;
  for (index_t j = 0; j < n; j += kMK) {
    const index_t cnt = std::min<index_t>(kMK, n - j);
    float* cj = C + j * ldc;
    const float* tj = Tt + j * Rp;
    index_t c = 0;
    for (; c + kKNV <= nvec; c += kKNV)
      key_tile<kMK, kKNV>(cj + c * W, ldc, tj, Rp, A + c * W, lda, rows, c + kKNV == nvec ? tail : W, cnt);
    for (; c < nvec; ++c)
      key_tile<kMK, 1>(cj + c * W, ldc, tj, Rp, A + c * W, lda, rows, c + 1 == nvec ? tail : W, cnt);
  }
}

// Tᵀ (n × Rp) = B (n keys, row stride ldb) · Xᵀ (inner × Rp), in the forward's register blocking.
static void scores_t(float* Tt, index_t Rp, const float* Xt, const float* B, index_t ldb, index_t inner, index_t n) {
  index_t r0 = 0;
  for (; r0 + kSNV * W <= Rp; r0 += kSNV * W) score_rows<kSNV>(Tt + r0, Rp, Xt + r0, B, ldb, inner, n);
  for (; r0 < Rp; r0 += W) score_rows<1>(Tt + r0, Rp, Xt + r0, B, ldb, inner, n);
}

// Xᵀ (cols × Rp) from rows of X (row stride ldx), times `mul`; padded lanes 0.
static void pack_t(float* Xt, index_t Rp, const float* X, index_t ldx, index_t rows, index_t cols, float mul) {
  for (index_t c = 0; c < cols; ++c) {
    float* xt = Xt + c * Rp;
    for (index_t r = 0; r < rows; ++r) xt[r] = X[r * ldx + c] * mul;
    for (index_t r = rows; r < Rp; ++r) xt[r] = 0.f;
  }
}

void grad_tile(const GradTile& t) {
  const index_t rows = t.rows, dim = t.dim, vdim = t.vdim;
  const index_t Rp = (rows + W - 1) / W * W, nrv = Rp / W;
  const index_t dimp = (dim + W - 1) / W * W;
  const index_t block = std::min<index_t>(kKeys, t.c1 - t.c0);
  // One scratch area: Qᵀ, dOᵀ, Sᵀ, dPᵀ, the dQ accumulator, then per-row lse, Δ and the frontiers.
  const size_t nq = static_cast<size_t>(dim) * Rp, ndo = static_cast<size_t>(vdim) * Rp;
  const size_t ns = static_cast<size_t>(block) * Rp, na = static_cast<size_t>(Rp) * dimp;
  float* Qt = thread_scratch<float, kScratchAttentionGrad>(nq + ndo + 2 * ns + na + 4 * static_cast<size_t>(Rp) + 64);
  float* dOt = Qt + nq;
  float* St = dOt + ndo;
  float* Pt = St + ns;
  float* acc = Pt + ns;
  float* lse = acc + na;
  float* delta = lse + Rp;
  std::int32_t* lo = reinterpret_cast<std::int32_t*>(delta + Rp);
  std::int32_t* hi = lo + Rp;

  pack_t(Qt, Rp, t.q, t.ldq, rows, dim, t.scale);
  pack_t(dOt, Rp, t.dout, t.lddo, rows, vdim, 1.f);
  index_t max_lo = 0, min_hi = t.c1;
  for (index_t r = 0; r < Rp; ++r) {  // padded rows: lse +inf, so their probabilities are 0
    const bool real = r < rows;
    float d = 0.f;
    for (index_t c = 0; real && c < vdim; ++c) d += t.dout[r * t.lddo + c] * t.o[r * t.ldo + c];
    lse[r] = real ? t.lse[r] : kInf, delta[r] = d;
    const index_t a = real ? t.lo[r] : t.c0, b = real ? t.hi[r] : t.c1;
    lo[r] = static_cast<std::int32_t>(a), hi[r] = static_cast<std::int32_t>(b);
    max_lo = std::max(max_lo, a), min_hi = std::min(min_hi, b);
  }
  std::fill(acc, acc + na, 0.f);
  const vf ninf = bcast(-kInf), zero = bcast(0.f), vscale = bcast(t.scale), dscale = bcast(t.drop_scale);
  const bool drop = t.drop_threshold > 0;
  const vu thresh = (vu)bcasti(static_cast<std::int32_t>(t.drop_threshold));

  for (index_t j0 = t.c0; j0 < t.c1; j0 += block) {
    const index_t n = std::min(block, t.c1 - j0);
    scores_t(St, Rp, Qt, t.k + j0 * t.ldk, t.ldk, dim, n);
    scores_t(Pt, Rp, dOt, t.v + j0 * t.ldv, t.ldv, vdim, n);
    const bool inside = j0 >= max_lo && j0 + n <= min_hi;  // every row attends every key of the block
    for (index_t rv = 0; rv < nrv; ++rv) {
      const index_t rb = rv * W, live = std::min<index_t>(W, rows - rb);
      float* s = St + rb;
      float* g = Pt + rb;
      bias_scores(s, Rp, n, j0, rb, live, t.mask, t.boolean, t.msq, lo, hi, inside);
      const vf l = load(lse + rb), d = load(delta + rb);
      // P → St (times the dropout multipliers: what multiplied V), dS·scale → Pt.
      const vu word = attdrop::row_word(t.drop_key, (vu)(iota() + bcasti(static_cast<std::int32_t>(t.row0 + rb))));
      for (index_t j = 0; j < n; ++j) {
        const vf x = load(s + j * Rp) - l;
        const vf p = x == ninf ? zero : v_exp(x);
        vf dp = load(g + j * Rp);
        if (drop) {
          const vi keep = (vi)((attdrop::bits(t.drop_key, word, j0 + j) >> 8) >= thresh);
          const vf z = keep ? dscale : zero;
          store(s + j * Rp, p * z);
          dp *= z;
        } else {
          store(s + j * Rp, p);
        }
        store(g + j * Rp, p * (dp - d) * vscale);
      }
    }
    key_rows(t.dv + j0 * t.lddv, t.lddv, St, Rp, t.dout, t.lddo, rows, n, vdim);
    key_rows(t.dk + j0 * t.lddk, t.lddk, Pt, Rp, t.q, t.ldq, rows, n, dim);
    for (index_t r = 0; r < Rp; r += kPR)
      pv_rows<kPR>(acc + r * dimp, dimp, nullptr, Pt + r, Rp, 1, t.k + j0 * t.ldk, t.ldk, n, dim, false);
  }
  if (dim == 0) return;
  const index_t nvec = dimp / W, tail = dim - (nvec - 1) * W;
  for (index_t r = 0; r < rows; ++r) {
    float* out = t.dq + r * t.lddq;
    const float* ar = acc + r * dimp;
    for (index_t c = 0; c + 1 < nvec; ++c) store(out + c * W, load(ar + c * W));
    store_partial(out + (nvec - 1) * W, load(ar + (nvec - 1) * W), tail);
  }
}
