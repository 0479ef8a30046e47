// The flash attention block (see attention_flash.h), written once over the vector type of
// elementwise_vmath.h and compiled per ISA by attention_flash_{avx512,avx2,portable}.cpp, which
// include it inside their own namespace after EW_W, the standard headers and elementwise_vmath.h.
// The only include here is vec_broadcast.h, which needs the same context.
//
// Layout: the block's rows run along the vector lanes. Qᵀ (dk × Rp, Rp = rows rounded up to W,
// scale folded in) is packed once per block; a tile's scores are Sᵀ (n keys × Rp), so the score
// micro-kernel broadcasts K elements straight from K (no packing), and the running max, the
// exponentials and the sums are vertical vector operations over W rows at a time. P·V then
// broadcasts P (Sᵀ row j, consecutive rows) and reads V rows straight from V. Lanes past `rows`
// carry zeros and are never written out.

#include "cpu/vec_broadcast.h"

// Keys per tile, and the register blocking of the two micro-kernels: scores MK keys × SNV row
// vectors, P·V PR rows × PNV vectors of v columns (AVX-512: 32 registers; else 16). P·V runs over
// all Rp rows (a multiple of W, so of PR): padded lanes hold finite values nobody reads.
constexpr index_t kTile = 128;
constexpr int kMK = 6, kSNV = W == 16 ? 4 : 2;
constexpr int kPR = 4, kPNV = W == 16 ? 4 : 2;
static_assert(W % kPR == 0, "P·V row blocking must divide the vector width");

// Sᵀ[j][r0 .. r0 + NV·W) = Σ_d K[j][d] · Qᵀ[d][r0 ..] for `cnt` (<= MK) keys from j: a short group
// reads its last key again for the missing ones (full register blocking) and stores `cnt` rows.
template <int MK, int NV>
static inline void score_tile(float* St, index_t Rp, const float* Qt, const float* k, index_t ldk, index_t dk,
                              index_t cnt) {
  const float* kr[MK];
#pragma GCC unroll 16
  for (int m = 0; m < MK; ++m) kr[m] = k + std::min<index_t>(m, cnt - 1) * ldk;
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
      const vf kb = bcast(kr[m][d]);
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) acc[m][n] += kb * qv[n];
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < MK; ++m)
    if (m < cnt)
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) store(St + m * Rp + n * W, acc[m][n]);
}

template <int NV>
static void score_rows(float* St, index_t Rp, const float* Qt, const float* k, index_t ldk, index_t dk, index_t n) {
  for (index_t j = 0; j < n; j += kMK)
    score_tile<kMK, NV>(St + j * Rp, Rp, Qt, k + j * ldk, ldk, dk, std::min<index_t>(kMK, n - j));
}

// acc[r][c0 ..] = alpha[r]·acc[r][c0 ..] (or 0 when first) + Σ_j P[j][r] · V[j][c0 ..] for MR rows
// from r0 and NV column vectors; the last vector holds `last` (<= W) columns.
template <int MR, int NV>
static inline void pv_tile(float* acc, index_t lda, const float* alpha, const float* St, index_t Rp, const float* v,
                           index_t ldv, index_t n, index_t last, bool first) {
  vf a[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
    const vf s = bcast(first ? 0.f : alpha[m]);
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) a[m][c] = first ? bcast(0.f) : load(acc + m * lda + c * W) * s;
  }
  for (index_t j = 0; j < n; ++j) {
    vf vv[NV];
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c)
      vv[c] = c == NV - 1 && last < W ? load_partial(v + j * ldv + c * W, last) : load(v + j * ldv + c * W);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const vf p = bcast(St[j * Rp + m]);
#pragma GCC unroll 4
      for (int c = 0; c < NV; ++c) a[m][c] += p * vv[c];
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) store(acc + m * lda + c * W, a[m][c]);
}

template <int MR>
static void pv_rows(float* acc, index_t lda, const float* alpha, const float* St, index_t Rp, const float* v,
                    index_t ldv, index_t n, index_t dv, bool first) {
  const index_t nvec = (dv + W - 1) / W, tail = dv - (nvec - 1) * W;
  index_t c = 0;
  for (; c + kPNV <= nvec; c += kPNV)
    pv_tile<MR, kPNV>(acc + c * W, lda, alpha, St, Rp, v + c * W, ldv, n, c + kPNV == nvec ? tail : W, first);
  for (; c < nvec; ++c) pv_tile<MR, 1>(acc + c * W, lda, alpha, St, Rp, v + c * W, ldv, n, c + 1 == nvec ? tail : W, first);
}

void flash_block(const FlashBlock& f) {
  const index_t rows = f.rows, dk = f.dk, dv = f.dv;
  const index_t Rp = (rows + W - 1) / W * W, nrv = Rp / W;
  const index_t dvp = (dv + W - 1) / W * W;
  const index_t tile = std::min<index_t>(kTile, f.c1 - f.c0);
  // One scratch area: Qᵀ, Sᵀ, acc, then per-row max, sum, alpha and the frontiers (int32).
  const size_t nq = static_cast<size_t>(dk) * Rp, ns = static_cast<size_t>(tile) * Rp, na = static_cast<size_t>(Rp) * dvp;
  float* Qt = thread_scratch<float, kScratchAttentionFlash>(nq + ns + na + 5 * static_cast<size_t>(Rp) + 64);
  float* St = Qt + nq;
  float* acc = St + ns;
  float* M = acc + na;
  float* L = M + Rp;
  float* alpha = L + Rp;
  std::int32_t* lo = reinterpret_cast<std::int32_t*>(alpha + Rp);
  std::int32_t* hi = lo + Rp;

  const float scale = f.scale;
  for (index_t d = 0; d < dk; ++d) {
    float* qt = Qt + d * Rp;
    for (index_t r = 0; r < rows; ++r) qt[r] = f.q[r * f.ldq + d] * scale;
    for (index_t r = rows; r < Rp; ++r) qt[r] = 0.f;
  }
  index_t max_lo = 0, min_hi = f.c1;
  for (index_t r = 0; r < Rp; ++r) {  // padded rows: every key (their lanes stay finite)
    const index_t a = r < rows ? f.lo[r] : f.c0, b = r < rows ? f.hi[r] : f.c1;
    lo[r] = static_cast<std::int32_t>(a), hi[r] = static_cast<std::int32_t>(b);
    max_lo = std::max(max_lo, a), min_hi = std::min(min_hi, b);
    M[r] = -kInf, L[r] = 0.f;
  }
  const bool cap = f.softcap > 0;
  const vf vcap = bcast(f.softcap), vinv = bcast(cap ? 1.f / f.softcap : 1.f), ninf = bcast(-kInf), zero = bcast(0.f);
  const float* fmask = static_cast<const float*>(f.mask);
  const std::uint8_t* bmask = static_cast<const std::uint8_t*>(f.mask);

  bool first = true;
  for (index_t j0 = f.c0; j0 < f.c1; j0 += tile) {
    const index_t n = std::min(tile, f.c1 - j0);
    const float* kt = f.k + j0 * f.ldk;
    index_t r0 = 0;
    for (; r0 + kSNV * W <= Rp; r0 += kSNV * W) score_rows<kSNV>(St + r0, Rp, Qt + r0, kt, f.ldk, dk, n);
    for (; r0 < Rp; r0 += W) score_rows<1>(St + r0, Rp, Qt + r0, kt, f.ldk, dk, n);
    const bool inside = j0 >= max_lo && j0 + n <= min_hi;  // every row attends every key of the tile
    for (index_t rv = 0; rv < nrv; ++rv) {
      float* s = St + rv * W;
      const index_t rb = rv * W, live = std::min<index_t>(W, rows - rb);  // lanes of real rows
      if (cap)
        for (index_t j = 0; j < n; ++j) store(s + j * Rp, vcap * v_tanh(load(s + j * Rp) * vinv));
      if (f.mask) {
        if (f.msq == 0) {  // one mask row for the whole block
          if (f.boolean) {
            for (index_t j = 0; j < n; ++j)
              if (!bmask[j0 + j]) store(s + j * Rp, ninf);
          } else {
            for (index_t j = 0; j < n; ++j) store(s + j * Rp, load(s + j * Rp) + bcast(fmask[j0 + j]));
          }
        } else {
          for (index_t l = 0; l < live; ++l) {
            const index_t off = (rb + l) * f.msq + j0;
            if (f.boolean) {
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
      vf mt = ninf;
      for (index_t j = 0; j < n; ++j) mt = vmax(load(s + j * Rp), mt);
      const vf m_old = load(M + rb);
      const vf m_new = vmax(mt, m_old);
      const vf m_use = m_new == ninf ? zero : m_new;  // no key yet: exponentials of -inf are 0
      const vf al = m_old == ninf ? zero : v_exp(m_old - m_use);
      vf sum = zero;
      for (index_t j = 0; j < n; ++j) {
        const vf x = load(s + j * Rp);
        const vf p = x == ninf ? zero : v_exp(x - m_use);
        store(s + j * Rp, p);
        sum += p;
      }
      store(M + rb, m_new);
      store(L + rb, load(L + rb) * al + sum);
      store(alpha + rb, al);
    }
    const float* vt = f.v + j0 * f.ldv;
    for (index_t r = 0; r < Rp; r += kPR)
      pv_rows<kPR>(acc + r * dvp, dvp, alpha + r, St + r, Rp, vt, f.ldv, n, dv, first);
    first = false;
  }
  // y = acc / sum; a row that never saw a finite score gets zeros.
  const index_t nvec = dvp / W, tail = dv - (nvec - 1) * W;
  for (index_t r = 0; r < rows; ++r) {
    const bool none = M[r] == -kInf || !(L[r] > 0.f);
    const vf inv = bcast(none ? 0.f : 1.f / L[r]);
    float* yr = f.y + r * f.ldy;
    const float* ar = acc + r * dvp;
    for (index_t c = 0; c + 1 < nvec; ++c) store(yr + c * W, none ? zero : load(ar + c * W) * inv);
    store_partial(yr + (nvec - 1) * W, none ? zero : load(ar + (nvec - 1) * W) * inv, tail);
  }
}
